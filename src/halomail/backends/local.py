"""Mailboxes on the local filesystem: a Maildir, an mbox file, a folder of ``.eml`` files.

Each satisfies :class:`~halomail.backends.base.MailboxConnector`: :meth:`fetch` reads
bytes and changes nothing, :meth:`ack` is safe to repeat, and refs are stable across
runs (the Maildir key, the file name, a content hash for mbox).

Only regular files are read; symbolic links inside a mailbox are ignored, so a link
planted in a mail folder cannot turn an arbitrary file into a ticket.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import logging
import mailbox
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from halomail._validate import under_key_path
from halomail.backends.base import Disposition, FetchedMessage, MailboxConnector, ProbeReport
from halomail.backends.settings import LocalMailboxSettings, SettingsTable, as_typed
from halomail.errors import ConfigError, ConnectorError, TransientConnectorError

__all__ = ["EmlDirConnector", "MaildirConnector", "MboxConnector", "open_local_connector"]

log = logging.getLogger(__name__)

# Maildir separates a message's unique key from its flags with ':' (RFC-less but
# universal: https://cr.yp.to/proto/maildir.html); Windows file names cannot hold ':',
# so mail software there uses '!' instead.
_COLON = "!" if os.name == "nt" else ":"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CHUNK = 64 * 1024


def _parse_processed(value: str, *, allow_keep: bool) -> tuple[str, str]:
    """``"delete"`` / ``"keep"`` / ``"move:<folder>"`` → (action, folder or ``""``)."""
    if value == "delete" or (value == "keep" and allow_keep):
        return value, ""
    action, sep, folder = value.partition(":")
    if action == "move" and sep and folder.strip():
        _check_folder(folder, "processed")
        return "move", folder
    allowed = "'move:<folder>', 'delete'" + (", 'keep'" if allow_keep else "")
    raise ConfigError("processed", f"expected one of {allowed}, got {value!r}")


def _check_folder(folder: str, key: str) -> None:
    # The folder becomes part of a file name: it must stay inside the mailbox.
    if not folder.strip() or folder.startswith(".") or "/" in folder or "\\" in folder:
        raise ConfigError(
            key, f"folder name {folder!r} must not contain '/' or '\\' or start with '.'"
        )


def _read_bounded(path: Path, ref: str, limit: int | None) -> FetchedMessage | None:
    """Read one message file, or only its size when it is over ``limit``.

    Returns ``None`` when the file vanished meanwhile (another client moved it, or it
    was acked while the fetch was running): it is picked up on the next run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        # Size from the open file, not an earlier stat: the check and the read agree.
        size = os.fstat(file.fileno()).st_size
        if limit is not None and size > limit:
            return FetchedMessage(ref=ref, raw=b"", size=size, too_large=True)
        raw = file.read() if limit is None else file.read(limit + 1)
    if limit is not None and len(raw) > limit:  # it grew between fstat and read
        return FetchedMessage(ref=ref, raw=b"", size=len(raw), too_large=True)
    return FetchedMessage(ref=ref, raw=raw, size=len(raw))


def _scan_error(exc: OSError, what: Path, name: str) -> ConnectorError:
    return ConnectorError(f"cannot read {what}: {exc.strerror or exc}", mailbox=name)


# -- Maildir ----------------------------------------------------------------------


class MaildirConnector:
    """A Maildir (``cur/``, ``new/``, ``tmp/``), with Maildir++ folders for disposal.

    Reads ``new/`` and ``cur/``, oldest first (by modification time, then key). The ref
    is the Maildir key: the file name up to the ``:2,`` flags, stable while another
    client moves the file from ``new/`` to ``cur/``.

    ``PROCESSED`` moves the file into the Maildir++ subfolder ``.<folder>/cur/`` with
    the seen flag (``:2,S``), creating the subfolder and its ``maildirfolder`` marker
    when missing, or deletes it for ``processed="delete"``. ``QUARANTINED`` moves it,
    flags unchanged (it stays unread for whoever reviews it), to ``.<quarantine_folder>``.
    ``RETRY`` does nothing. Dovecot and Courier show these subfolders as IMAP folders.

    Args:
        name: The mailbox's name.
        path: The Maildir's root.
        processed: ``"move:<folder>"`` or ``"delete"``.
        quarantine_folder: The Maildir++ folder quarantined email moves to.
        max_message_bytes: Larger files are fetched as ``too_large`` with an empty
            ``raw``, without being read.
        create: Create the Maildir when it does not exist (otherwise :meth:`fetch`
            raises :class:`~halomail.errors.ConnectorError`).

    Raises:
        ConfigError: ``processed`` or ``quarantine_folder`` is invalid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
        create: bool = False,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self._action, self._folder = _parse_processed(processed, allow_keep=False)
        _check_folder(quarantine_folder, "quarantine_folder")
        self.quarantine_folder = quarantine_folder
        self.max_message_bytes = max_message_bytes
        self._paths: dict[str, Path] = {}
        #: How many emails the current fetch listed (``None`` before one): a progress total.
        self.fetch_total: int | None = None
        if create:
            self._make_maildir(self.path)

    def __repr__(self) -> str:
        return f"MaildirConnector({self.name!r}, {str(self.path)!r})"

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the messages of ``new/`` and ``cur/``, oldest first, changing nothing.

        Raises:
            ConnectorError: The folder is missing, is not a Maildir, or cannot be listed.
        """
        entries = self._scan()
        self._paths = {key: path for _, key, path in entries}
        self.fetch_total = len(entries)
        for _, key, path in entries:
            if key not in self._paths:  # acked while this iteration was running
                continue
            try:
                message = _read_bounded(path, key, self.max_message_bytes)
            except OSError as exc:
                # One unreadable file must not stop the mailbox: it stays where it is
                # and is reported each run until someone fixes its permissions.
                log.error("mailbox %s: cannot read %s: %s", self.name, path, exc.strerror or exc)
                continue
            if message is not None:
                yield message

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Move or delete the message per ``disposition``; a no-op when it is gone.

        Raises:
            ConnectorError: The message exists but could not be moved or deleted.
        """
        if disposition is Disposition.RETRY:
            return
        source = self._locate(ref)
        if source is None:
            log.debug("mailbox %s: %s already gone; nothing to do", self.name, ref)
            return
        try:
            if disposition is Disposition.PROCESSED and self._action == "delete":
                source.unlink(missing_ok=True)
                log.debug("mailbox %s: deleted %s", self.name, ref)
            else:
                quarantine = disposition is Disposition.QUARANTINED
                folder = self.quarantine_folder if quarantine else self._folder
                self._move(ref, source, folder, seen=not quarantine)
        except FileNotFoundError:
            pass  # moved or deleted by someone else meanwhile: already disposed of
        except OSError as exc:
            raise ConnectorError(
                f"cannot dispose of {ref} ({disposition.value}): {exc.strerror or exc}",
                mailbox=self.name,
            ) from exc
        self._paths.pop(ref, None)

    def close(self) -> None:
        """Forget the paths of the last fetch; nothing is held open."""
        self._paths = {}

    def probe(self) -> ProbeReport:
        """Count the emails in ``new/`` and ``cur/`` without reading one.

        Raises:
            ConnectorError: The folder is not a Maildir or cannot be listed.
        """
        count = len(self._scan())
        return ProbeReport(f"{count} message{'' if count == 1 else 's'}", messages=count)

    def _scan(self) -> list[tuple[int, str, Path]]:
        for sub in ("new", "cur"):
            if not (self.path / sub).is_dir():
                raise ConnectorError(
                    f"{self.path} is not a Maildir (it has no {sub}/ folder)", mailbox=self.name
                )
        entries: list[tuple[int, str, Path]] = []
        seen: set[str] = set()
        for sub in ("new", "cur"):
            folder = self.path / sub
            try:
                with os.scandir(folder) as listing:
                    for entry in listing:
                        if entry.name.startswith("."):
                            continue  # Maildir readers skip dot files (editors, NFS)
                        try:
                            if not entry.is_file(follow_symlinks=False):
                                continue
                            mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                        except FileNotFoundError:
                            continue
                        key = entry.name.split(_COLON, 1)[0]
                        if key in seen:
                            continue
                        seen.add(key)
                        entries.append((mtime, key, Path(entry.path)))
            except OSError as exc:
                raise _scan_error(exc, folder, self.name) from exc
        entries.sort()
        return entries

    def _locate(self, key: str) -> Path | None:
        """Where the message with this key is now, found by listing (never by joining ``key``)."""
        known = self._paths.get(key)
        if known is not None and known.exists():
            return known
        for sub in ("new", "cur"):
            try:
                with os.scandir(self.path / sub) as listing:
                    for entry in listing:
                        if entry.name.split(_COLON, 1)[0] == key and not entry.name.startswith("."):
                            return Path(entry.path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # no such folder: nothing of ours can be in it
            except OSError as exc:
                raise _scan_error(exc, self.path / sub, self.name) from exc
        return None

    def _move(self, key: str, source: Path, folder: str, *, seen: bool) -> None:
        target = self.path / f".{folder}"
        self._make_maildir(target, subfolder=True)
        _, _, info = source.name.partition(_COLON)
        flags = set(info[2:]) if info.startswith("2,") else set()
        if seen:
            flags.add("S")
        destination = target / "cur" / f"{key}{_COLON}2,{''.join(sorted(flags))}"
        # rename(2) within one filesystem is atomic: the message is in exactly one place.
        os.replace(source, destination)
        log.debug("mailbox %s: moved %s to %s", self.name, key, folder)

    def _make_maildir(self, root: Path, *, subfolder: bool = False) -> None:
        try:
            for sub in ("cur", "new", "tmp"):
                (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            if subfolder:
                # Maildir++: the marker tells IMAP servers this is a folder, not a root.
                (root / "maildirfolder").touch(mode=0o600, exist_ok=True)
        except OSError as exc:
            raise ConnectorError(
                f"cannot create Maildir {root}: {exc.strerror or exc}", mailbox=self.name
            ) from exc


# -- a folder of .eml files ---------------------------------------------------------


class EmlDirConnector:
    """Every ``*.eml`` file directly in a folder, in file-name order.

    The ref is the file name. ``PROCESSED`` moves the file into the subfolder
    ``<path>/<folder>/`` (created when missing), or deletes it for
    ``processed="delete"``; ``QUARANTINED`` moves it into ``<path>/<quarantine_folder>/``.
    A file whose name is already taken there is renamed ``name-1.eml``, ``name-2.eml``
    …, so nothing is overwritten. Files starting with ``.`` are skipped, so a program
    writing ``.name.eml.part`` and renaming it when complete is never read half-written.

    Args:
        name: The mailbox's name.
        path: The folder.
        processed: ``"move:<folder>"`` or ``"delete"``.
        quarantine_folder: The subfolder quarantined files move to.
        max_message_bytes: Larger files are fetched as ``too_large`` without being read.
        create: Create the folder when it does not exist.

    Raises:
        ConfigError: ``processed`` or ``quarantine_folder`` is invalid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
        create: bool = False,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self._action, self._folder = _parse_processed(processed, allow_keep=False)
        _check_folder(quarantine_folder, "quarantine_folder")
        self.quarantine_folder = quarantine_folder
        self.max_message_bytes = max_message_bytes
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _scan_error(exc, self.path, name) from exc

    def __repr__(self) -> str:
        return f"EmlDirConnector({self.name!r}, {str(self.path)!r})"

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield each ``.eml`` file, sorted by name, changing nothing.

        Raises:
            ConnectorError: The folder is missing or cannot be listed.
        """
        if not self.path.is_dir():
            raise ConnectorError(f"{self.path} is not a folder", mailbox=self.name)
        try:
            with os.scandir(self.path) as listing:
                names = sorted(
                    entry.name
                    for entry in listing
                    if _is_eml_name(entry.name) and entry.is_file(follow_symlinks=False)
                )
        except OSError as exc:
            raise _scan_error(exc, self.path, self.name) from exc
        for name in names:
            try:
                message = _read_bounded(self.path / name, name, self.max_message_bytes)
            except OSError as exc:
                log.error("mailbox %s: cannot read %s: %s", self.name, name, exc.strerror or exc)
                continue
            if message is not None:
                yield message

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Move or delete the file per ``disposition``; a no-op when it is gone.

        Raises:
            ConnectorError: The file exists but could not be moved or deleted.
        """
        if disposition is Disposition.RETRY or not _is_eml_name(ref):
            return  # a ref we never handed out: refuse to turn it into a path
        source = self.path / ref
        try:
            if not source.is_file() or source.is_symlink():
                return
            if disposition is Disposition.PROCESSED and self._action == "delete":
                source.unlink(missing_ok=True)
                return
            quarantine = disposition is Disposition.QUARANTINED
            folder = self.quarantine_folder if quarantine else self._folder
            target = self.path / folder
            target.mkdir(exist_ok=True)
            destination = target / ref
            counter = 0
            while destination.exists():
                counter += 1
                destination = target / f"{source.stem}-{counter}{source.suffix}"
            os.rename(source, destination)
            log.debug(
                "mailbox %s: moved %s to %s", self.name, ref, destination.relative_to(self.path)
            )
        except FileNotFoundError:
            pass  # gone meanwhile: already disposed of
        except OSError as exc:
            raise ConnectorError(
                f"cannot dispose of {ref} ({disposition.value}): {exc.strerror or exc}",
                mailbox=self.name,
            ) from exc

    def close(self) -> None:
        """Nothing is held open."""


def _is_eml_name(name: str) -> bool:
    return (
        name.lower().endswith(".eml")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


# -- mbox ------------------------------------------------------------------------------


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _digest(file: _Readable, limit: int | None, *, keep: bool) -> tuple[str, bytes | None, int]:
    """Hash one mbox message in chunks: (hex digest, bytes or None when not kept, size).

    Trailing line breaks are left out of the hash: an mbox writer adds one after a
    last message that lacked it, and the same message copied to another mbox must
    keep its ref.
    """
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    held = b""
    while chunk := file.read(_CHUNK):
        size += len(chunk)
        if keep:
            if limit is not None and size > limit:
                keep = False
                chunks.clear()
            else:
                chunks.append(chunk)
        data = held + chunk
        body = data.rstrip(b"\r\n")
        digest.update(body)
        held = data[len(body) :]
        if len(held) > _CHUNK:  # a run of blank lines this long is content, not an ending
            digest.update(held)
            held = b""
    return digest.hexdigest(), b"".join(chunks) if keep else None, size


def _messages(
    box: mailbox.mbox, limit: int | None, *, keep: bool
) -> Iterator[tuple[str, str, bytes | None, int]]:
    """(ref, key, bytes or None, size) for each message of ``box``, in file order."""
    occurrences: dict[str, int] = {}
    for key in box.iterkeys():
        digest_hex, raw, size = _digest(box.get_file(key), limit, keep=keep)
        n = occurrences.get(digest_hex, 0)
        occurrences[digest_hex] = n + 1
        yield f"{digest_hex[:32]}-{n}", key, raw, size


class MboxConnector:
    """Import from an mbox file.

    The ref is ``<sha256 prefix>-<n>``: a hash of the message's bytes and how many
    identical messages precede it, stable across runs even after earlier messages are
    removed. The bytes are yielded as stored (the ``From `` separator line excluded,
    ``>From`` quoting kept).

    ``processed="keep"`` (the default) never changes the file: re-running is safe
    because every email's dedupe key is already recorded, and quarantined email is
    left too. With ``"delete"`` processed messages are removed, and with
    ``"move:<name>"`` they are appended to the sibling mbox file ``<name>`` and
    removed; quarantined ones then go to the sibling ``<quarantine_folder>``. Changes
    are applied in :meth:`close`, with the mbox locked (``fcntl`` and dot-lock), the
    destination written and flushed before the source is rewritten. A message already
    in the destination (same hash) is not appended twice, so a crash between the two
    steps leaves one copy.

    Args:
        name: The mailbox's name.
        path: The mbox file.
        processed: ``"keep"``, ``"delete"`` or ``"move:<file name>"``.
        quarantine_folder: The sibling mbox quarantined messages move to (unless keep).
        max_message_bytes: Larger messages are fetched as ``too_large`` with empty
            ``raw``; they are hashed in chunks, never held in memory whole.

    Raises:
        ConfigError: ``processed`` or ``quarantine_folder`` is invalid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        processed: str = "keep",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self._action, self._folder = _parse_processed(processed, allow_keep=True)
        _check_folder(quarantine_folder, "quarantine_folder")
        self.quarantine_folder = quarantine_folder
        self.max_message_bytes = max_message_bytes
        # ref → destination file name ("": delete), applied in close().
        self._pending: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MboxConnector({self.name!r}, {str(self.path)!r})"

    @property
    def keeps_processed_mail(self) -> bool:
        """True with ``processed="keep"``: the file keeps every email, so their dedupe
        records must outlive any ledger retention (see :mod:`halomail.pipeline.retention`)."""
        return self._action == "keep"

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the file's messages in order, changing nothing.

        Messages acked earlier in this session but not yet removed (that happens in
        :meth:`close`) are not yielded again.

        Raises:
            ConnectorError: The file is missing or unreadable.
        """
        box = self._open(self.path)
        try:
            for ref, _, raw, size in _messages(box, self.max_message_bytes, keep=True):
                if ref in self._pending:
                    continue
                if raw is None:
                    yield FetchedMessage(ref=ref, raw=b"", size=size, too_large=True)
                else:
                    yield FetchedMessage(ref=ref, raw=raw, size=size)
        except OSError as exc:
            raise _scan_error(exc, self.path, self.name) from exc
        finally:
            box.close()

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Record what to do with the message; :meth:`close` applies it."""
        if disposition is Disposition.RETRY or self._action == "keep":
            return
        if disposition is Disposition.QUARANTINED:
            self._pending[ref] = self.quarantine_folder
        else:
            self._pending[ref] = self._folder

    def close(self) -> None:
        """Apply the pending deletions and moves, under the mbox lock.

        Raises:
            TransientConnectorError: Another program holds the lock; retried next run.
            ConnectorError: The files could not be rewritten.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            self._apply(pending)
        except mailbox.ExternalClashError as exc:
            raise TransientConnectorError(
                f"{self.path} is locked by another program; changes wait for the next run",
                mailbox=self.name,
            ) from exc
        except OSError as exc:
            raise ConnectorError(
                f"cannot update {self.path}: {exc.strerror or exc}", mailbox=self.name
            ) from exc

    def _apply(self, pending: dict[str, str]) -> None:
        box = self._open(self.path)
        try:
            box.lock()
            remove: list[str] = []
            moves: dict[str, list[tuple[str, bytes]]] = {}
            # Refs are recomputed under the lock: mail appended since the fetch shifts
            # nothing, because a ref names content, not a position.
            for ref, key, _, _ in _messages(box, None, keep=False):
                if ref not in pending:
                    continue
                remove.append(key)
                folder = pending[ref]
                if folder:
                    moves.setdefault(folder, []).append((ref, box.get_bytes(key, from_=True)))
            for folder, messages in moves.items():
                self._append(self.path.parent / folder, messages)
            for key in remove:
                box.discard(key)
            box.flush()
            log.info(
                "mailbox %s: removed %d messages from %s (%d moved)",
                self.name,
                len(remove),
                self.path,
                sum(len(m) for m in moves.values()),
            )
        finally:
            box.unlock()
            box.close()

    def _append(self, destination: Path, messages: list[tuple[str, bytes]]) -> None:
        box = mailbox.mbox(destination, create=True)
        try:
            box.lock()
            present = {ref for ref, _, _, _ in _messages(box, None, keep=False)}
            for ref, data in messages:
                if ref not in present:
                    box.add(data)
            box.flush()
        finally:
            box.unlock()
            box.close()

    def _open(self, path: Path) -> mailbox.mbox:
        if not path.is_file():
            raise ConnectorError(f"{path} is not an mbox file", mailbox=self.name)
        try:
            return mailbox.mbox(path, create=False)
        except (OSError, mailbox.Error) as exc:
            raise ConnectorError(f"cannot open {path}: {exc}", mailbox=self.name) from exc


# -- factory --------------------------------------------------------------------------


def open_local_connector(
    settings: LocalMailboxSettings | SettingsTable, *, max_message_bytes: int | None = None
) -> MailboxConnector:
    """The connector for a ``maildir``, ``mbox`` or ``eml-dir`` mailbox.

    Args:
        settings: The mailbox's typed settings, or anything with ``as_table()`` (a
            :class:`halomail.MailboxSettings`), read through
            :meth:`~halomail.backends.settings.LocalMailboxSettings.from_table`.
        max_message_bytes: Larger emails are fetched as ``too_large`` (usually
            ``Config.limits.max_message_bytes``).

    Returns:
        A :class:`MaildirConnector`, :class:`MboxConnector` or :class:`EmlDirConnector`.

    Raises:
        ConfigError: The connection type is not a local one, ``path`` is missing or is
            not there, or ``processed`` is invalid.
    """
    typed = as_typed(LocalMailboxSettings, settings, getattr(settings, "key_path", "mailboxes"))
    kinds = {"maildir": MaildirConnector, "mbox": MboxConnector, "eml-dir": EmlDirConnector}
    with under_key_path(typed.key_path):
        connector: MailboxConnector = kinds[typed.connection](
            typed.name,
            typed.path,
            processed=typed.processed,
            quarantine_folder=typed.quarantine_folder,
            max_message_bytes=max_message_bytes,
        )
        return connector
