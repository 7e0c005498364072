"""An IMAP mailbox: TLS, UIDs checked against UIDVALIDITY, size before body, IDLE.

:class:`ImapConnector` satisfies :class:`~halomail.backends.base.MailboxConnector`
over imaplib, with the habits a helpdesk needs:

* **Security is explicit.** ``security="tls"`` (implicit TLS, port 993),
  ``"starttls"`` (a server without STARTTLS, or a failed handshake, raises: the
  password is never sent in clear by surprise) or ``"none"``. Certificates and host
  names are always verified (``tls_ca_file`` adds a private CA).
* **Logins**: LOGIN or AUTHENTICATE PLAIN with a password (PLAIN when the server
  offers it: it carries UTF-8), XOAUTH2 or OAUTHBEARER with a token provider. Refused
  credentials raise :class:`~halomail.errors.AuthenticationError`, a dropped
  connection or a timeout :class:`~halomail.errors.TransientConnectorError`. No message
  and no log line carries the password or token.
* **UIDs only.** A ref is ``"<UIDVALIDITY>:<UID>"``; an ack whose UIDVALIDITY is not the
  folder's current one does nothing (the email is fetched again and its dedupe key
  makes that a no-op).
* **Size first.** ``UID FETCH … RFC822.SIZE`` runs before any body is read, in batches;
  an email over ``max_message_bytes`` is yielded as ``too_large`` without its body ever
  being fetched. Bodies come with ``BODY.PEEK[]`` (nothing is marked read), in batches of
  ``batch_size`` emails and at most 16 MiB.
* **Disposal** is ``UID MOVE`` to the processed folder (``"Deleted Items"`` is the
  folder with SPECIAL-USE ``\\Trash`` when there is one, else the folder by that name,
  created when missing), or without MOVE ``UID COPY``, ``+FLAGS (\\Deleted)`` and
  ``UID EXPUNGE`` of only our UIDs (UIDPLUS): a message someone else flagged
  ``\\Deleted`` is never expunged by us. ``processed="delete"`` flags and expunges.
  Acks are collected and sent one command per batch (before the next batch is read, and
  in :meth:`close`); a crash in between only means those emails are fetched again and
  skipped as duplicates. Emails flagged ``\\Deleted`` are on their way out: not fetched.
* **Push**: :meth:`wait_for_mail` waits with IDLE (or polls ``STATUS``) on a connection
  of its own, held across waits (:mod:`halomail.backends._imap_idle`); :meth:`end_session`
  keeps both connections between cycles, :meth:`close` logs out of both and ends a wait
  blocking in another thread. :meth:`list_refs` gives the UIDs present now without
  reading a body (``start_from = "now"``); :meth:`probe` examines the folder read-only.
* **Bounded**: every socket call has ``timeout``; lines are capped by imaplib, and a literal
  over the message limit is refused before it is read (:mod:`~halomail.backends._imap_client`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from halomail.backends._common import login_from_settings
from halomail.backends._imap_client import (
    Selected,
    encode_mailbox_name,
    expand_uid_set,
    parse_fetch,
    parse_list,
    parse_status,
    quote,
    uid_set,
)
from halomail.backends._imap_idle import IdleWatcher
from halomail.backends._imap_session import (
    TRANSIENT_CODES,
    ImapLogin,
    logout_quietly,
    text_of,
)
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.base import Disposition, FetchedMessage, ProbeReport
from halomail.backends.settings import ImapSettings, SettingsTable, as_typed
from halomail.errors import (
    ConfigError,
    ConnectorError,
    TransientConnectorError,
)

__all__ = ["SECURITIES", "ImapConnector"]

log = logging.getLogger(__name__)

SECURITIES = ("tls", "starttls", "none")
_MECHANISMS = ("LOGIN", "PLAIN", "XOAUTH2", "OAUTHBEARER")
_TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# A literal may exceed the message limit by this much (a server's RFC822.SIZE and
# BODY[] can differ by line-ending conversions); beyond it the literal is refused.
_LITERAL_MARGIN = 64 * 1024
_NO_LIMIT_LITERAL = 256 * 1024 * 1024  # when no max_message_bytes is configured
_BATCH_BYTES = 16 * 1024 * 1024
# Besides the UIDs the folder had when selected, this many may arrive meanwhile.
_UID_SLACK = 100_000
# The names that mean "the trash" in the processed setting; resolved by \Trash first.
_TRASH_NAMES = frozenset({"deleted items", "trash"})


class ImapConnector:
    """An IMAP folder read as a helpdesk mailbox (see the module docstring).

    Args:
        name: The mailbox's name.
        host: The server.
        port: The port (default 993 for ``tls``, else 143).
        security: ``tls``, ``starttls`` or ``none``.
        username: The login.
        password: The password (LOGIN or AUTHENTICATE PLAIN); never shown.
        token_provider: For OAuth2: a :class:`~halomail.backends.auth.oauth.TokenProvider`
            or any callable returning a bearer token; asked before every login.
        auth_mechanism: ``LOGIN`` or ``PLAIN`` with a password (default: PLAIN when the
            server offers it, else LOGIN); ``XOAUTH2`` (default) or ``OAUTHBEARER`` with
            a token provider.
        folder: The folder read.
        processed: ``"move:<folder>"`` (default ``"move:Deleted Items"``) or ``"delete"``.
        quarantine_folder: Where quarantined emails move (created when missing).
        max_message_bytes: Larger emails are fetched as ``too_large``, never read.
        batch_size: Emails per ``UID FETCH`` (and per batch of acks).
        timeout: Seconds allowed for connecting and for every read and write.
        tls_ca_file: A CA bundle to trust besides the system's.
        ssl_context: A ready TLS context instead (overrides ``tls_ca_file``).
        poll_interval: Seconds between checks in :meth:`wait_for_mail` when the server
            has no IDLE.

    Raises:
        ValueError: An invalid ``security``, mechanism, ``batch_size`` or ``timeout``,
            neither or both of ``password`` and ``token_provider``, or a line break in
            the username, password or a folder name.
        ConfigError: ``processed`` is invalid, or names the folder being read.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int | None = None,
        *,
        security: str = "tls",
        username: str,
        password: str | None = None,
        token_provider: TokenProvider | Callable[[], str] | None = None,
        auth_mechanism: str | None = None,
        folder: str = "INBOX",
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
        batch_size: int = 50,
        timeout: float = 30.0,
        tls_ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        poll_interval: float = 60.0,
    ) -> None:
        if security not in SECURITIES:
            raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
        if (password is None) == (token_provider is None):
            raise ValueError("give either a password or a token_provider")
        mechanism = auth_mechanism.upper() if auth_mechanism else None
        if mechanism is not None and mechanism not in _MECHANISMS:
            raise ValueError(f"auth_mechanism must be one of {_MECHANISMS}: {auth_mechanism!r}")
        if mechanism is not None and (mechanism in _TOKEN_MECHANISMS) != (password is None):
            raise ValueError(
                f"auth_mechanism {mechanism} needs "
                + ("a token_provider" if mechanism in _TOKEN_MECHANISMS else "a password")
            )
        if batch_size < 1 or timeout <= 0 or poll_interval <= 0:
            raise ValueError("batch_size, timeout and poll_interval must be positive")
        for value in (username, password or "", folder, quarantine_folder, processed):
            if any(c in value for c in "\r\n\0\x01"):
                # A line break would end our command early and start another one.
                raise ValueError("names and credentials must not contain line breaks")
        action, _, target = processed.partition(":")
        if processed == "delete":
            self._delete = True
            self.processed_folder: str | None = None
        elif action == "move" and target.strip():
            self._delete = False
            self.processed_folder = target
        else:
            raise ConfigError(
                "processed", f"expected 'move:<folder>' or 'delete', got {processed!r}"
            )
        if self.processed_folder is not None and _same_folder(self.processed_folder, folder):
            raise ConfigError("processed", f"cannot move processed email into {folder!r} itself")
        if not quarantine_folder.strip() or _same_folder(quarantine_folder, folder):
            raise ConfigError("quarantine_folder", f"invalid folder {quarantine_folder!r}")
        self.name = name
        self.host = host
        self.port = port or (993 if security == "tls" else 143)
        self.security = security
        self.username = username
        self.auth_mechanism = mechanism or ("XOAUTH2" if token_provider is not None else None)
        self.folder = folder
        self.quarantine_folder = quarantine_folder
        self.max_message_bytes = max_message_bytes
        self.batch_size = batch_size
        self.timeout = timeout
        self.poll_interval = poll_interval
        max_literal = (
            max_message_bytes + _LITERAL_MARGIN
            if max_message_bytes is not None
            else _NO_LIMIT_LITERAL
        )
        self._login = ImapLogin(
            name=name,
            host=host,
            port=self.port,
            security=security,
            username=username,
            password=password,
            token_provider=token_provider,
            mechanism=self.auth_mechanism,
            timeout=timeout,
            tls_ca_file=tls_ca_file,
            ssl_context=ssl_context,
            max_literal=max_literal,
            # One command may bring in a batch of bodies plus one more maximal literal.
            command_budget=_BATCH_BYTES + 2 * max_literal + 1024 * 1024,
        )
        self._watcher: IdleWatcher | None = None  # wait_for_mail's held connection
        self._watcher_lock = threading.Lock()
        # Session state (from the first fetch/list_refs/ack to close).
        self._client: imaplib.IMAP4 | None = None
        self._caps: frozenset[str] = frozenset()
        self._selected: Selected | None = None
        self._broken = False
        self._folders: list[tuple[frozenset[str], str]] | None = None
        self._targets: dict[str, str] = {}
        self._pending: list[tuple[int, Disposition, int]] = []
        # (UIDVALIDITY, UIDNEXT) after the last read: wait_for_mail compares with it.
        self._mark: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"ImapConnector({self.name!r}, {self.host!r}, {self.port}, {self.security!r}, "
            f"username={self.username!r}, folder={self.folder!r})"
        )

    def __enter__(self) -> ImapConnector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @classmethod
    def from_settings(
        cls,
        settings: ImapSettings | SettingsTable,
        *,
        max_message_bytes: int | None,
        token_provider: TokenProvider | Callable[[], str] | None = None,
    ) -> ImapConnector:
        """The connector a ``connection = "imap"`` mailbox describes.

        The login is OAuth2 when ``settings.oauth`` names it (``auth = "oauthbearer"``
        picks that mechanism, any other OAuth2 value XOAUTH2), else the password.

        Args:
            settings: The mailbox's typed settings, or anything with ``as_table()``
                (a :class:`halomail.MailboxSettings`), read through
                :meth:`ImapSettings.from_table`.
            max_message_bytes: Larger emails are fetched as ``too_large``.
            token_provider: Overrides the provider the settings would build.

        Returns:
            The connector; nothing is connected until :meth:`fetch`.

        Raises:
            ConfigError: Not an IMAP mailbox, or ``host``, ``username``, the password,
                an OAuth2 key or ``processed`` is missing or invalid.
        """
        typed = as_typed(ImapSettings, settings, getattr(settings, "key_path", "mailboxes"))
        kp = typed.key_path
        login = login_from_settings(typed, "imap", token_provider, what="an IMAP login")
        try:
            return cls(
                typed.name,
                login.host,
                typed.port,
                security=typed.security,
                username=login.username,
                password=login.password,
                token_provider=login.token_provider,
                auth_mechanism=login.mechanism,
                folder=typed.folder,
                processed=typed.processed,
                quarantine_folder=typed.quarantine_folder,
                max_message_bytes=max_message_bytes,
                batch_size=typed.batch_size,
                timeout=typed.timeout,
                tls_ca_file=typed.tls_ca_file,
                poll_interval=typed.poll_interval,
            )
        except ConfigError as exc:
            raise ConfigError(f"{kp}.{exc.key_path}", exc.message) from exc
        except ValueError as exc:
            raise ConfigError(kp, str(exc)) from exc

    # -- the contract ----------------------------------------------------------------

    def list_refs(self) -> list[str]:
        """The refs of the folder's emails now, without reading one (``start_from="now"``).

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed; try again later.
            ConnectorError: The folder is missing, TLS failed, or the server broke the protocol.
        """
        client = self._session()
        selected = self._require_selected()
        with self._io("search"):
            uids = self._search(client, selected)
        return [f"{selected.uidvalidity}:{uid}" for uid in uids]

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the folder's emails in UID order (oldest first), changing nothing.

        Sizes are read first, a batch at a time; an email over ``max_message_bytes``
        is yielded as ``too_large`` with empty ``raw`` and its body is never fetched.
        Queued acks are sent before each batch is read.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed or timed out; try again later.
            ConnectorError: The folder is missing, TLS failed, or the server broke the
                protocol (e.g. announced a literal over the limit).
        """
        client = self._session()
        selected = self._require_selected()
        with self._io("search"):
            uids = self._search(client, selected)
        self.fetch_total = len(uids)  # what `halomail run` shows as its progress total
        limit = self.max_message_bytes
        for start in range(0, len(uids), self.batch_size):
            self._flush()
            batch = uids[start : start + self.batch_size]
            with self._io("fetch sizes"):
                sizes = self._fetch_sizes(client, batch)
            small = [u for u in batch if u in sizes and (limit is None or sizes[u] <= limit)]
            groups = list(self._body_groups(small, sizes))
            group_of = {uid: i for i, group in enumerate(groups) for uid in group}
            current, bodies = -1, dict[int, bytes]()
            for uid in batch:
                if uid not in sizes:  # gone meanwhile (another client moved it)
                    continue
                self._note_seen(uid)
                ref = f"{selected.uidvalidity}:{uid}"
                if uid not in group_of:
                    log.info(
                        "mailbox %s: UID %d is %d bytes, over the %s-byte limit; not read",
                        self.name,
                        uid,
                        sizes[uid],
                        limit,
                    )
                    yield FetchedMessage(ref=ref, raw=b"", size=sizes[uid], too_large=True)
                    continue
                if group_of[uid] != current:
                    # Bodies are read a group at a time, as the UIDs come in order.
                    current = group_of[uid]
                    with self._io("fetch"):
                        bodies = self._fetch_bodies(client, groups[current])
                raw = bodies.pop(uid, None)
                if raw is None:  # gone between the two FETCHes
                    continue
                if limit is not None and len(raw) > limit:
                    # The server's RFC822.SIZE was smaller than the body it sent.
                    yield FetchedMessage(ref=ref, raw=b"", size=len(raw), too_large=True)
                else:
                    yield FetchedMessage(ref=ref, raw=raw, size=sizes[uid])
        self._flush()

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Dispose of one email per ``disposition``; safe for an email already gone.

        ``PROCESSED`` and ``QUARANTINED`` are queued and sent a batch at a time (at the
        latest by :meth:`close`). A ref from another UIDVALIDITY is ignored.

        Raises:
            TransientConnectorError: Sending a full batch failed on the connection.
        """
        if disposition is Disposition.RETRY:
            return
        validity, sep, uid_text = ref.partition(":")
        if not (sep and validity.isdigit() and uid_text.isdigit()):
            log.warning("mailbox %s: %r is not an IMAP ref; ignored", self.name, ref)
            return
        self._pending.append((int(validity), disposition, int(uid_text)))
        if len(self._pending) >= self.batch_size:
            self._flush()

    def close(self) -> None:
        """Send the queued acks, log out, and stop waiting for mail.

        Safe from another thread while :meth:`wait_for_mail` blocks: the wait returns
        ``False`` at once and its held connection is closed. The connector stays usable:
        the next :meth:`fetch` or :meth:`wait_for_mail` connects again.

        Raises:
            TransientConnectorError: The queued acks could not be sent; those emails
                are fetched again next time and skipped as duplicates.
        """
        with self._watcher_lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        try:
            self.end_session()
        finally:
            self._logout()

    def end_session(self) -> None:
        """Send the queued acks and keep both connections for the next cycle.

        What a runner calls at the end of each cycle instead of :meth:`close`: the
        reading connection is kept logged in (the next :meth:`fetch` selects the folder
        afresh on it, or logs in again if the server dropped it meanwhile), and so is the
        one held by :meth:`wait_for_mail`. An idle mailbox then costs two logins in all,
        not two per cycle. Never CLOSE: it would expunge others' mail.

        Raises:
            TransientConnectorError: The queued acks could not be sent; those emails
                are fetched again next time and skipped as duplicates.
        """
        try:
            if self._pending and not self._broken:
                self._flush()
        finally:
            self._pending = []
            if self._broken:
                self._logout()
            else:
                self._selected = None  # selected again, for a fresh view, at next use

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait until the folder has new mail, or ``timeout`` seconds pass.

        Uses a connection of its own, held across calls (so a fetch may run meanwhile,
        and an idle mailbox logs in once): IDLE when the server offers it, else
        ``STATUS`` every ``poll_interval`` seconds. On a fresh connection, mail that
        arrived since the last :meth:`fetch` counts as new at once. A broken connection
        is replaced on the next call; :meth:`close` from another thread ends the wait.

        Args:
            timeout: The longest wait, in seconds.

        Returns:
            True as soon as new mail is reported; False on timeout or after :meth:`close`.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed.
            ConnectorError: TLS failed or the folder is missing.
        """
        with self._watcher_lock:
            if self._watcher is None:
                self._watcher = IdleWatcher(
                    self._login,
                    examine=lambda client: self._select(client, readonly=True),
                    status=self._status,
                    poll_interval=self.poll_interval,
                )
            watcher = self._watcher
        return watcher.wait(timeout, self._mark)

    def probe(self) -> ProbeReport:
        """Log in, examine the folder read-only and say how many emails it holds.

        Reads no body and changes nothing (``EXAMINE``, never ``SELECT``).

        Returns:
            What was found, e.g. ``starttls, IDLE, 12 messages in INBOX``.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The server cannot be reached.
            ConnectorError: TLS failed or the folder is missing.
        """
        client, caps = self._login.connect()
        try:
            with self._io("examine", session=False):
                selected = self._select(client, readonly=True)
        finally:
            logout_quietly(client, polite=True)
        how = "IDLE" if "IDLE" in caps else "no IDLE"
        noun = "message" if selected.exists == 1 else "messages"
        return ProbeReport(
            f"{self.security}, {how}, {selected.exists} {noun} in {self.folder}",
            messages=selected.exists,
        )

    # -- session -----------------------------------------------------------------------

    def _session(self) -> imaplib.IMAP4:
        """The reading connection with the folder selected: kept, reused, or new."""
        client = self._client
        if client is not None and self._broken:
            raise TransientConnectorError(
                "the connection broke earlier in this session", mailbox=self.name
            )
        if client is not None and self._selected is not None:
            return client
        if client is not None:
            try:
                self._open_folder(client)
                return client
            except ConnectorError as exc:
                # Kept from an earlier cycle, and dropped by the server since.
                log.debug("mailbox %s: kept connection unusable (%s); reconnecting", self.name, exc)
                self._logout()
        client, caps = self._login.connect()
        self._client, self._caps, self._broken = client, caps, False
        try:
            self._open_folder(client)
        except BaseException:
            self._broken = True  # nothing can be sent: close without flushing
            self._logout()
            raise
        return client

    def _open_folder(self, client: imaplib.IMAP4) -> None:
        with self._io("select"):
            self._selected = self._select(client, readonly=False)
        self._mark = (self._selected.uidvalidity, self._selected.uidnext)
        self._folders, self._targets = None, {}

    def _logout(self) -> None:
        """Forget the reading session and log out (politely when it is sound)."""
        client, broken = self._client, self._broken
        self._client, self._selected, self._broken = None, None, False
        self._folders, self._targets, self._pending = None, {}, []
        logout_quietly(client, polite=not broken)

    def _require_selected(self) -> Selected:
        if self._selected is None:  # pragma: no cover - _session always sets it
            raise ConnectorError("no folder selected", mailbox=self.name)
        return self._selected

    def _redact(self, text: str) -> str:
        return self._login.redact(text)

    # -- reading -----------------------------------------------------------------------

    def _select(self, client: imaplib.IMAP4, *, readonly: bool) -> Selected:
        mailbox = quote(encode_mailbox_name(self.folder))
        typ, data = client.select(mailbox, readonly=readonly)
        responses = client.untagged_responses
        if typ != "OK":
            text = self._redact(text_of(data[-1] if data else b""))
            responses.clear()
            if any(code.decode() in text.upper() for code in TRANSIENT_CODES):
                raise TransientConnectorError(
                    f"cannot open folder {self.folder!r} now: {text}", mailbox=self.name
                )
            raise ConnectorError(f"cannot open folder {self.folder!r}: {text}", mailbox=self.name)
        try:
            uidvalidity = int(text_of(responses["UIDVALIDITY"][-1]))
            uidnext = int(text_of((responses.get("UIDNEXT") or [b"0"])[-1]))
            exists = int(data[-1] or 0)
        except (KeyError, ValueError, TypeError):
            raise ConnectorError(
                f"the server gave no valid UIDVALIDITY for {self.folder!r}", mailbox=self.name
            ) from None
        finally:
            responses.clear()
        return Selected(uidvalidity, uidnext, exists)

    def _search(self, client: imaplib.IMAP4, selected: Selected) -> list[int]:
        """The UIDs of the folder's emails not flagged \\Deleted, ascending."""
        limit = selected.exists + _UID_SLACK
        if "ESEARCH" in self._caps:
            # One compact answer ("1:500,502") instead of a line with every UID.
            typ, data = client.uid("SEARCH", "RETURN", "(ALL)", "UNDELETED")
            lines = client.untagged_responses.pop("ESEARCH", [])
            client.untagged_responses.clear()
            self._check(typ, data, "UID SEARCH")
            uids: list[int] = []
            for line in lines:
                match = re.search(rb"\bALL ([0-9:,]+)", line if isinstance(line, bytes) else b"")
                if match:
                    uids.extend(expand_uid_set(match.group(1).decode(), limit - len(uids)))
        else:
            typ, data = client.uid("SEARCH", "UNDELETED")
            client.untagged_responses.clear()
            self._check(typ, data, "UID SEARCH")
            words = b" ".join(d for d in data if isinstance(d, bytes)).split()
            if len(words) > limit:
                raise ValueError(f"the server listed {len(words)} UIDs for {selected.exists}")
            uids = [int(w) for w in words]
        return sorted(set(uids))

    def _fetch_sizes(self, client: imaplib.IMAP4, uids: list[int]) -> dict[int, int]:
        typ, data = client.uid("FETCH", uid_set(uids), "(UID RFC822.SIZE)")
        client.untagged_responses.clear()
        self._check(typ, data, "UID FETCH RFC822.SIZE")
        wanted = set(uids)
        return {
            r.uid: r.size
            for r in parse_fetch(data)
            if r.uid in wanted and r.uid is not None and r.size is not None
        }

    def _fetch_bodies(self, client: imaplib.IMAP4, uids: list[int]) -> dict[int, bytes]:
        typ, data = client.uid("FETCH", uid_set(uids), "(UID BODY.PEEK[])")
        client.untagged_responses.clear()
        self._check(typ, data, "UID FETCH BODY.PEEK[]")
        wanted = set(uids)
        return {
            r.uid: r.body
            for r in parse_fetch(data)
            if r.uid in wanted and r.uid is not None and r.body is not None
        }

    def _body_groups(self, uids: list[int], sizes: dict[int, int]) -> Iterator[list[int]]:
        """Split ``uids`` so each FETCH brings at most 16 MiB (one large email alone)."""
        group: list[int] = []
        total = 0
        for uid in uids:
            if group and total + sizes[uid] > _BATCH_BYTES:
                yield group
                group, total = [], 0
            group.append(uid)
            total += sizes[uid]
        if group:
            yield group

    def _note_seen(self, uid: int) -> None:
        if self._selected is not None and self._mark is not None:
            self._mark = (self._mark[0], max(self._mark[1], uid + 1))

    def _check(self, typ: str, data: list[Any], command: str) -> None:
        if typ != "OK":
            text = self._redact(text_of(data[-1] if data else b""))
            error = f"{self.host} refused {command}: {text}"
            if any(code.decode() in text.upper() for code in TRANSIENT_CODES):
                raise TransientConnectorError(error, mailbox=self.name)
            raise ConnectorError(error, mailbox=self.name)

    # -- disposal ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the queued acks: one command per disposition and batch."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        client = self._session()
        current = self._require_selected().uidvalidity
        groups: dict[Disposition, list[int]] = {}
        for validity, disposition, uid in pending:
            if validity != current:
                # The folder was recreated: that UID now names another email, or none.
                log.info(
                    "mailbox %s: ref %d:%d is from an older UIDVALIDITY (now %d); left alone",
                    self.name,
                    validity,
                    uid,
                    current,
                )
                continue
            groups.setdefault(disposition, []).append(uid)
        for disposition, uids in groups.items():
            ordered = sorted(set(uids))
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                try:
                    with self._io(f"dispose ({disposition.value})"):
                        self._dispose(client, disposition, chunk)
                except TransientConnectorError:
                    raise
                except ConnectorError as exc:
                    # Committed already: the emails stay and are skipped as duplicates
                    # on the next run, so one refused command must not stop the others.
                    log.error("mailbox %s: %s", self.name, exc)

    def _dispose(self, client: imaplib.IMAP4, disposition: Disposition, uids: list[int]) -> None:
        if disposition is Disposition.PROCESSED and self._delete:
            self._delete_uids(client, uids)
            log.info("mailbox %s: deleted %d emails", self.name, len(uids))
            return
        folder = self._target(client, disposition)
        mailbox = quote(encode_mailbox_name(folder))
        command = "MOVE" if "MOVE" in self._caps else "COPY"
        typ, data = client.uid(command, uid_set(uids), mailbox)
        client.untagged_responses.clear()
        if typ == "NO" and b"[TRYCREATE]" in (data[-1] or b"").upper():
            # Deleted by someone since we looked: create it again and retry once.
            self._create(client, folder)
            typ, data = client.uid(command, uid_set(uids), mailbox)
            client.untagged_responses.clear()
        self._check(typ, data, f"UID {command} to {folder!r}")
        if command == "COPY":
            # Only once the copy is safe; a crash before the expunge leaves the email
            # in both folders, never in neither.
            self._delete_uids(client, uids)
        log.info("mailbox %s: moved %d emails to %s", self.name, len(uids), folder)

    def _delete_uids(self, client: imaplib.IMAP4, uids: list[int]) -> None:
        wanted = uid_set(uids)
        typ, data = client.uid("STORE", wanted, "+FLAGS.SILENT", r"(\Deleted)")
        client.untagged_responses.clear()
        self._check(typ, data, "UID STORE +FLAGS (\\Deleted)")
        if "UIDPLUS" in self._caps:
            # UID EXPUNGE removes only these UIDs, never a message another client has
            # flagged \Deleted and not expunged yet.
            typ, data = client.uid("EXPUNGE", wanted)
            client.untagged_responses.clear()
            self._check(typ, data, "UID EXPUNGE")
            return
        typ, data = client.uid("SEARCH", "DELETED")
        client.untagged_responses.clear()
        self._check(typ, data, "UID SEARCH DELETED")
        flagged = {int(w) for w in b" ".join(d for d in data if isinstance(d, bytes)).split()}
        if flagged <= set(uids):
            # Without UIDPLUS, EXPUNGE removes every \Deleted message: only when all
            # of them are ours.
            typ, data = client.expunge()
            client.untagged_responses.clear()
            self._check(typ, data, "EXPUNGE")
        else:
            log.warning(
                "mailbox %s: no UIDPLUS and other emails are flagged \\Deleted; "
                "%d emails left flagged for the mailbox owner to expunge",
                self.name,
                len(uids),
            )

    def _target(self, client: imaplib.IMAP4, disposition: Disposition) -> str:
        """The folder ``disposition`` moves to: \\Trash, else by name, else created."""
        key = disposition.value
        if key in self._targets:
            return self._targets[key]
        wanted = (
            self.processed_folder or "Deleted Items"
            if disposition is Disposition.PROCESSED
            else self.quarantine_folder
        )
        folders = self._list(client)
        found: str | None = None
        if disposition is Disposition.PROCESSED and wanted.casefold() in _TRASH_NAMES:
            found = next((name for flags, name in folders if "\\trash" in flags), None)
        if found is None:
            found = next((name for _, name in folders if _same_folder(name, wanted)), None)
        if found is None:
            self._create(client, wanted)
            found = wanted
        self._targets[key] = found
        return found

    def _list(self, client: imaplib.IMAP4) -> list[tuple[frozenset[str], str]]:
        if self._folders is None:
            typ, data = client.list('""', "*")
            client.untagged_responses.clear()
            self._check(typ, data, "LIST")
            self._folders = parse_list(data)
        return self._folders

    def _create(self, client: imaplib.IMAP4, folder: str) -> None:
        mailbox = quote(encode_mailbox_name(folder))
        typ, data = client.create(mailbox)
        client.untagged_responses.clear()
        if typ != "OK" and b"[ALREADYEXISTS]" not in (data[-1] or b"").upper():
            self._check(typ, data, f"CREATE {folder!r}")
        # Subscribed, so that mail clients show it (a failure only hides it there).
        try:
            client.subscribe(mailbox)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            log.debug("mailbox %s: SUBSCRIBE %s refused: %s", self.name, folder, exc)
        client.untagged_responses.clear()
        self._folders = None
        log.info("mailbox %s: created folder %s", self.name, folder)

    # -- waiting -----------------------------------------------------------------------

    def _status(self, client: imaplib.IMAP4) -> Selected:
        """The folder's UIDVALIDITY and UIDNEXT from ``STATUS`` (nothing selected)."""
        mailbox = quote(encode_mailbox_name(self.folder))
        typ, data = client.status(mailbox, "(UIDNEXT UIDVALIDITY)")
        client.untagged_responses.clear()
        self._check(typ, data, "STATUS")
        return parse_status(data)

    # -- errors ------------------------------------------------------------------------

    def _io(self, action: str, *, session: bool = True) -> contextlib.AbstractContextManager[None]:
        """Translate socket and protocol failures; a failure leaves the session unusable."""
        return self._login.io(action, self._break if session else None)

    def _break(self) -> None:
        self._broken = True


def _same_folder(a: str, b: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 §5.1); other names are compared as written.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")
