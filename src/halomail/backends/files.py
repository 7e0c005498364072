"""The ``maildir`` outgoing transport: each email written as an ``.eml`` file.

Used by the quick start, for development, and wherever another program picks outgoing
mail up from a folder. The file holds the message exactly as composed (``data``, CRLF
line endings), so any mail client opens it and any MTA can send it as is.

No envelope sidecar is written: the envelope recipients of the mail halomail composes
are the addresses of its ``To`` header, and the outbox row in the repository keeps
the envelope anyway. A file that is the message, byte for byte, matters more than a
second file that could disagree with it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from halomail.backends.base import OutgoingEmail, ProbeReport
from halomail.backends.settings import EmlFileSettings
from halomail.errors import TransientTransportError

__all__ = ["EmlFileTransport"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")


def _file_key(message_id: str) -> str:
    """A file-name-safe, collision-free form of a Message-ID.

    The readable part is sanitized and shortened; the hash of the exact Message-ID
    keeps two ids that sanitize alike apart.
    """
    readable = _UNSAFE.sub("_", message_id).strip("._")[:80] or "message"
    fingerprint = hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{readable}~{fingerprint}"


class EmlFileTransport:
    """Writes each email to ``<path>/<UTC timestamp>-<safe Message-ID>.eml``.

    Satisfies :class:`~halomail.backends.base.MailTransport`. Each file appears
    whole or not at all: the email is written to a temporary file in the same folder,
    flushed to disk (``fsync``), then renamed into place. Sending the same
    ``message_id`` again (the outbox retries after a crash between writing and
    recording the send) leaves the existing file as the only one. File names sort in
    the order the emails were written.

    Args:
        path: The folder; created, with its parents, on the first send.

    Example::

        transport = EmlFileTransport("outbox")
        transport.send(email)  # outbox/20260101T120000.000000Z-<id>~<hash>.eml
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def from_settings(cls, settings: EmlFileSettings) -> EmlFileTransport:
        """The transport of ``transport = "maildir"`` settings."""
        return cls(settings.path)

    def __repr__(self) -> str:
        return f"EmlFileTransport({str(self.path)!r})"

    def probe(self) -> ProbeReport:
        """Check that the folder (or, before the first send, its nearest parent) is writable.

        Writes nothing.

        Raises:
            TransientTransportError: Nothing could be written there.
        """
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), self.path)
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise TransientTransportError(f"cannot write to {existing}")
        return ProbeReport(f"writes .eml files to {self.path}")

    def file_for(self, message_id: str) -> Path | None:
        """The file already written for ``message_id``, or ``None``.

        Args:
            message_id: The Message-ID, without angle brackets.
        """
        suffix = f"-{_file_key(message_id)}.eml"
        try:
            with os.scandir(self.path) as listing:
                for entry in listing:
                    if entry.name.endswith(suffix) and not entry.name.startswith("."):
                        return Path(entry.path)
        except FileNotFoundError:
            return None
        return None

    def send(self, email: OutgoingEmail) -> None:
        """Write ``email.data`` to its file, unless a file for its Message-ID exists.

        Raises:
            TransientTransportError: The folder or file could not be written (disk
                full, permissions); nothing partial is left behind, and the outbox
                retries with backoff.
        """
        try:
            existing = self.file_for(email.message_id)
            if existing is not None:
                log.debug("%s already written as %s", email.message_id, existing.name)
                return
            self.path.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            target = self.path / f"{stamp}-{_file_key(email.message_id)}.eml"
            self._write_atomically(target, email.data)
        except OSError as exc:
            raise TransientTransportError(
                f"cannot write {email.message_id} to {self.path}: {exc.strerror or exc}"
            ) from exc
        log.debug("wrote %s to %s", email.message_id, target)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        # A dot name and a .part suffix: readers globbing *.eml never see a partial file.
        fd, temporary = tempfile.mkstemp(prefix=".", suffix=".eml.part", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path)


def _fsync_directory(path: Path) -> None:
    """Make the rename itself durable (POSIX); not possible, nor needed, on Windows."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
