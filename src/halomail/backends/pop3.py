"""A POP3 mailbox: POP3S, STLS or plain; USER/PASS or XOAUTH2/OAUTHBEARER.

POP3 has no folders, so the connector's whole job is to read, and to delete only what
is safely committed. Messages are addressed by their UIDL, the only id that survives
between sessions (message numbers are renumbered every session).

Deletion follows RFC 1939 to the letter: ``DELE`` only marks a message, and the marks
take effect when the server answers ``QUIT``. :meth:`Pop3Connector.ack` sends ``DELE``
only for an email whose outcome the processor has committed, and
:meth:`Pop3Connector.close` sends ``QUIT`` in a ``finally``. A connection that drops
between the two deletes nothing: the next run fetches the same emails again and the
processor's dedupe keys turn them into no-ops, so nothing is lost and nothing doubled.

Reads are bounded: every status and listing line is limited to poplib's ``_MAXLINE``
(2,048 bytes), listings to :data:`MAX_LISTING`, and a message body to
``max_message_bytes`` (or twice its announced size when there is no limit). A message
over the limit is reported as ``too_large`` from its ``LIST`` size without a ``RETR``;
one whose body turns out longer than announced is drained without being kept.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import poplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

from halomail.backends._common import login_from_settings, shared_tls_context
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.auth.sasl import (
    MalformedTokenError,
    login_with_token,
    read_token,
    sasl_payload,
)
from halomail.backends.base import Disposition, FetchedMessage, ProbeReport
from halomail.backends.settings import Pop3Settings, SettingsTable, as_typed
from halomail.errors import (
    AuthenticationError,
    ConnectorError,
    TransientConnectorError,
)

__all__ = ["MAX_LISTING", "SECURITIES", "Pop3Connector"]

log = logging.getLogger(__name__)

SECURITIES = ("tls", "starttls", "none")
#: The most messages a UIDL or LIST answer may name before the server is deemed hostile.
MAX_LISTING = 1_000_000
_MAXLINE = 2048  # poplib's own limit for a response line
_CHUNK = 64 * 1024
_CRLF = b"\r\n"
# RFC 2449 / RFC 3206 response codes that mean "try again later", not "wrong password".
_TRANSIENT_CODES = ("[SYS/TEMP]", "[IN-USE]", "[LOGIN-DELAY]", "[UNAVAILABLE]")
# RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_UIDL = re.compile(rb"[\x21-\x7e]{1,70}")


class Pop3Connector:
    """A POP3 mailbox, satisfying :class:`~halomail.backends.base.MailboxConnector`.

    One session lasts from the first :meth:`fetch` (or :meth:`list_refs`) to
    :meth:`close`; the processor calls them in that order once per run.

    Dispositions: ``PROCESSED`` sends ``DELE`` (applied at ``QUIT``). ``QUARANTINED``
    sends ``DELE`` too, because the processor has kept the email's bytes in its
    quarantine, except for an email fetched as ``too_large``: its bytes were never
    read, so it stays on the server (its dedupe key keeps it from being quarantined
    twice). ``RETRY`` leaves the email untouched.

    With ``leave_on_server=True`` nothing is ever deleted; instead each acked UIDL is
    remembered (in ``seen_file`` between runs, otherwise for the life of this object)
    and skipped without a ``RETR`` on later runs. UIDLs that vanished from the server
    are forgotten, so the file stays as small as the mailbox.

    Args:
        name: The mailbox's name.
        host: The server.
        port: The port (default 995 for ``tls``, else 110).
        security: ``tls`` (POP3S), ``starttls`` (``STLS``, required: a server without it,
            or a failed handshake, raises instead of continuing in clear) or ``none``.
        username: The login.
        password: The password, for ``USER``/``PASS``; never shown.
        token_provider: For OAuth2: a :class:`~halomail.backends.auth.oauth.TokenProvider`,
            or any callable returning a bearer token.
        sasl_mechanism: ``XOAUTH2`` (default) or ``OAUTHBEARER``, with a token provider.
        tls_ca_file: A CA bundle to trust besides the system's. Certificates and host
            names are always verified.
        ssl_context: A ready TLS context instead (overrides ``tls_ca_file``).
        max_message_bytes: Larger emails are fetched as ``too_large``, never read.
        leave_on_server: Never delete; remember what was handled instead.
        seen_file: A JSON file keeping the handled UIDLs between runs (leave-on-server).
        timeout: Seconds allowed for connecting and for each read.

    Raises:
        ValueError: An invalid ``security`` or mechanism, or neither or both of
            ``password`` and ``token_provider``.
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
        sasl_mechanism: str = "XOAUTH2",
        tls_ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int | None = None,
        leave_on_server: bool = False,
        seen_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if security not in SECURITIES:
            raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
        if (password is None) == (token_provider is None):
            raise ValueError("give either a password or a token_provider")
        if sasl_mechanism.upper() not in ("XOAUTH2", "OAUTHBEARER"):
            raise ValueError(f"sasl_mechanism must be XOAUTH2 or OAUTHBEARER: {sasl_mechanism!r}")
        for value in (username, password or ""):
            if any(c in value for c in "\r\n\0"):
                # A line break would end our command early and start another one.
                raise ValueError("the username and password must not contain line breaks")
        self.name = name
        self.host = host
        self.port = port or (995 if security == "tls" else 110)
        self.security = security
        self.username = username
        self.sasl_mechanism = sasl_mechanism.upper()
        self.max_message_bytes = max_message_bytes
        self.leave_on_server = leave_on_server
        self.seen_file = Path(seen_file) if seen_file is not None else None
        self.timeout = timeout
        self._password = password
        self._token_provider = token_provider
        self._tls_ca_file = tls_ca_file
        self._ssl_context = ssl_context
        self._tokens: list[str] = []  # tokens sent in this login, to redact from errors
        self._session: poplib.POP3 | None = None
        self._broken = False
        self._listing: dict[str, tuple[int, int]] | None = None
        self._pending: set[str] = set()
        self._too_large: set[str] = set()
        self._seen: set[str] | None = None
        self._seen_dirty = False

    def __repr__(self) -> str:
        return f"Pop3Connector({self.name!r}, {self.host!r}, {self.port}, {self.security!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Pop3Settings | SettingsTable,
        *,
        max_message_bytes: int | None,
        token_provider: TokenProvider | Callable[[], str] | None = None,
    ) -> Pop3Connector:
        """The connector a ``connection = "pop3"`` mailbox describes.

        The login is OAuth2 when ``settings.oauth`` names it (``oauthbearer`` picks that
        mechanism, anything else XOAUTH2), else USER/PASS.

        Args:
            settings: The mailbox's typed settings, or anything with ``as_table()``
                (a :class:`halomail.MailboxSettings`), read through
                :meth:`Pop3Settings.from_table`.
            max_message_bytes: Larger emails are fetched as ``too_large``.
            token_provider: Overrides the provider the settings would build.

        Returns:
            The connector; nothing is connected until :meth:`fetch`.

        Raises:
            ConfigError: Not a POP3 mailbox, or ``host``, ``username``, the password or
                an OAuth2 key is missing.
        """
        typed = as_typed(Pop3Settings, settings, getattr(settings, "key_path", "mailboxes"))
        login = login_from_settings(typed, "pop3", token_provider, what="POP3 USER/PASS")
        return cls(
            typed.name,
            login.host,
            typed.port,
            security=typed.security,
            username=login.username,
            password=login.password,
            token_provider=login.token_provider,
            sasl_mechanism=login.mechanism or "XOAUTH2",
            tls_ca_file=typed.tls_ca_file,
            max_message_bytes=max_message_bytes,
            leave_on_server=typed.leave_on_server,
            seen_file=typed.seen_file,
            timeout=typed.timeout,
        )

    # -- the contract ----------------------------------------------------------

    def list_refs(self) -> list[str]:
        """The UIDLs on the server now, without reading any message (``start_from = "now"``).

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed; try again later.
            ConnectorError: The server broke the protocol or TLS could not be set up.
        """
        return list(self._list())

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield every message not yet handled, oldest first, deleting nothing.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed; try again later.
            ConnectorError: The server broke the protocol or TLS could not be set up.
        """
        listing = self._list()
        seen = self._seen_set() if self.leave_on_server else set()
        skipped = sum(1 for uid in listing if uid in seen)
        log.info(
            "mailbox %s: %d messages on the server, %d already handled",
            self.name,
            len(listing),
            skipped,
        )
        limit = self.max_message_bytes
        for uid, (number, size) in list(listing.items()):
            if uid in seen or uid in self._pending:
                continue
            if limit is not None and size > limit:
                # Quarantined from its LIST size: the body is never transferred.
                self._too_large.add(uid)
                log.info(
                    "mailbox %s: %s is %d bytes, over the limit; not read", self.name, uid, size
                )
                yield FetchedMessage(ref=uid, raw=b"", size=size, too_large=True)
                continue
            raw = self._retr(number, size)
            if raw is None:  # gone meanwhile (another client deleted it)
                continue
            if isinstance(raw, int):  # longer than announced: drained, not kept
                self._too_large.add(uid)
                # The announced size, not the length seen: it keys the quarantine record,
                # which must be the same on every run for the same message.
                yield FetchedMessage(ref=uid, raw=b"", size=size, too_large=True)
                continue
            yield FetchedMessage(ref=uid, raw=raw, size=size)

    @property
    def keeps_processed_mail(self) -> bool:
        """True with ``leave_on_server``: the server keeps every email, so their dedupe
        records must outlive any ledger retention (see :mod:`halomail.pipeline.retention`)."""
        return self.leave_on_server

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Mark the message for deletion (or remember it), per ``disposition``.

        Safe to repeat, and a no-op for a UIDL this session never listed.

        Raises:
            TransientConnectorError: The connection failed while sending ``DELE``.
        """
        if disposition is Disposition.RETRY:
            return
        if self._listing is None or ref not in self._listing:
            log.debug("mailbox %s: %s not in this session; nothing to do", self.name, ref)
            return
        unread = disposition is Disposition.QUARANTINED and ref in self._too_large
        if self.leave_on_server:
            self._seen_set().add(ref)
            self._seen_dirty = True
            return
        if unread:
            # Its bytes were never read, so the server's copy is the only one: keep it.
            log.debug("mailbox %s: %s quarantined unread; left on the server", self.name, ref)
            return
        if ref in self._pending:
            return
        number = self._listing[ref][0]
        session = self._require_session()
        with self._io(f"DELE {ref}"):
            self._send(session, f"DELE {number}".encode())
            line = self._read_status(session)
        if line.startswith(b"+OK"):
            self._pending.add(ref)
            log.debug("mailbox %s: %s marked for deletion", self.name, ref)
        else:
            # Already marked, or removed by another client: nothing left to do.
            log.debug("mailbox %s: DELE %s refused: %s", self.name, ref, _text(line))

    def close(self) -> None:
        """End the session with ``QUIT``, which applies the deletions, and save the seen UIDLs.

        Raises:
            TransientConnectorError: ``QUIT`` failed while deletions were pending: none
                of them happened, and the emails will be fetched (and skipped as
                duplicates) next time.
        """
        session, pending = self._session, len(self._pending)
        failure: Exception | None = None
        try:
            if session is not None and not self._broken:
                try:
                    self._send(session, b"QUIT")
                    line = self._read_status(session)
                    if not line.startswith(b"+OK"):
                        raise poplib.error_proto(line)
                except (OSError, EOFError, poplib.error_proto) as exc:
                    if pending:
                        failure = TransientConnectorError(
                            f"QUIT failed ({_describe(exc)}): the server kept the {pending} "
                            "emails marked for deletion; they are fetched again next run and "
                            "skipped as duplicates",
                            mailbox=self.name,
                        )
                    else:
                        log.debug("mailbox %s: QUIT failed: %s", self.name, _describe(exc))
                else:
                    if pending:
                        log.info(
                            "mailbox %s: %d emails deleted from the server", self.name, pending
                        )
            elif pending:
                failure = TransientConnectorError(
                    f"the connection broke before QUIT: the server kept the {pending} emails "
                    "marked for deletion; they are fetched again next run and skipped as "
                    "duplicates",
                    mailbox=self.name,
                )
        finally:
            if session is not None:
                with contextlib.suppress(OSError):
                    session.close()
            self._save_seen()
            self._session = None
            self._broken = False
            self._listing = None
            self._pending = set()
            self._too_large = set()
        if failure is not None:
            raise failure

    def probe(self) -> ProbeReport:
        """Log in on a session of its own, ``STAT``, and ``QUIT``: no email read or deleted.

        Returns:
            What was found, e.g. ``tls, 3 messages``.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The server cannot be reached.
            ConnectorError: TLS failed, or the server refused ``STAT``.
        """
        session = self._connect()
        try:
            with self._io("STAT"):
                self._send(session, b"STAT")
                line = self._read_status(session)
                if line.startswith(b"+OK"):
                    self._send(session, b"QUIT")  # nothing was marked: nothing changes
                    self._read_status(session)
        finally:
            _close_quietly(session)
            self._broken = False  # the probe's session only; the reading one is untouched
        parts = line.split()
        if not line.startswith(b"+OK") or len(parts) < 2 or not parts[1].isdigit():
            raise self._refused("STAT", line)
        count = int(parts[1])
        noun = "message" if count == 1 else "messages"
        return ProbeReport(f"{self.security}, {count} {noun}", messages=count)

    # -- session ---------------------------------------------------------------

    def _require_session(self) -> poplib.POP3:
        if self._session is None:
            self._session = self._connect()
        elif self._broken:
            raise TransientConnectorError(
                "the connection broke earlier in this session", mailbox=self.name
            )
        return self._session

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or shared_tls_context(self._tls_ca_file)

    def _connect(self) -> poplib.POP3:
        where = f"{self.host}:{self.port}"
        session: poplib.POP3 | None = None
        try:
            if self.security == "tls":
                session = _Pop3(self.host, self.port, self.timeout, self._context())
            else:
                session = _Pop3(self.host, self.port, self.timeout, None)
                if self.security == "starttls":
                    # poplib checks CAPA for STLS and raises when it is missing; either
                    # way we stop here: the password must never go out in clear.
                    session.stls(self._context())
        except ssl.SSLError as exc:
            _close_quietly(session)
            raise ConnectorError(
                f"TLS with {where} failed ({_describe(exc)}); not continuing without it",
                mailbox=self.name,
            ) from exc
        except poplib.error_proto as exc:
            _close_quietly(session)
            if self.security == "starttls" and session is not None:
                raise ConnectorError(
                    f"{where} refused STLS ({_describe(exc)}); not continuing without TLS",
                    mailbox=self.name,
                ) from exc
            raise ConnectorError(
                f"{where} sent an invalid greeting ({_describe(exc)})", mailbox=self.name
            ) from exc
        except OSError as exc:
            _close_quietly(session)
            raise TransientConnectorError(
                f"cannot connect to {where}: {_describe(exc)}", mailbox=self.name
            ) from exc
        try:
            self._login(session)
        except BaseException:
            _close_quietly(session)
            raise
        log.debug("mailbox %s: logged in to %s (%s)", self.name, where, self.security)
        return session

    def _login(self, session: poplib.POP3) -> None:
        if self._token_provider is None:
            assert self._password is not None
            with self._io("login"):
                self._send(session, f"USER {self.username}".encode())
                line = self._read_status(session)
                if line.startswith(b"+OK"):
                    self._send(session, f"PASS {self._password}".encode())
                    line = self._read_status(session)
            if not line.startswith(b"+OK"):
                raise self._login_error(line, "the username or password")
            return
        self._tokens = []
        try:
            self._login_oauth(session)
        finally:
            self._tokens = []

    def _login_oauth(self, session: poplib.POP3) -> None:
        assert self._token_provider is not None
        line, _ = login_with_token(
            self._token_provider,
            lambda token: self._authenticate(session, token),
            lambda line: not line.startswith(b"+OK") and not _transient(line),
            get_token=self._token,
        )
        if not line.startswith(b"+OK"):
            raise self._login_error(line, f"the OAuth2 token ({self.sasl_mechanism})")

    def _token(self) -> str:
        assert self._token_provider is not None
        try:
            token = read_token(self._token_provider)
        except MalformedTokenError as exc:
            raise AuthenticationError(str(exc), mailbox=self.name) from None
        self._tokens.append(token)
        return token

    def _authenticate(self, session: poplib.POP3, token: str) -> bytes:
        payload = sasl_payload(self.sasl_mechanism, self.username, token, self.host, self.port)
        encoded = base64.b64encode(payload)
        with self._io("login"):
            # Two steps (AUTH, then the response after "+"), as Microsoft and Google
            # document for POP3; servers that accept an initial response accept this too.
            self._send(session, f"AUTH {self.sasl_mechanism}".encode())
            line = self._read_status(session)
            if not line.startswith(b"+") or line.startswith(b"+OK"):
                return line
            self._send(session, encoded)
            line = self._read_status(session)
            if line.startswith(b"+") and not line.startswith(b"+OK"):
                # A failure challenge (RFC 7628 §3.2.2): answer it empty to get the -ERR.
                self._send(session, b"")
                line = self._read_status(session)
        return line

    def _login_error(self, line: bytes, what: str) -> ConnectorError:
        text = self._redact(_text(line))
        if _transient(line):
            return TransientConnectorError(
                f"{self.host} cannot log in now: {text}", mailbox=self.name
            )
        return AuthenticationError(
            f"{self.host} refused {what} for {self.username}: {text}", mailbox=self.name
        )

    def _list(self) -> dict[str, tuple[int, int]]:
        if self._listing is not None:
            return self._listing
        session = self._require_session()
        with self._io("UIDL"):
            uidl = self._long_response(session, b"UIDL")
        if isinstance(uidl, bytes):
            raise self._refused(
                "UIDL", uidl, "(halomail needs UIDL for ids that are stable between sessions)"
            )
        with self._io("LIST"):
            sizes_lines = self._long_response(session, b"LIST")
        if isinstance(sizes_lines, bytes):
            raise self._refused("LIST", sizes_lines)
        sizes: dict[int, int] = {}
        for line in sizes_lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                sizes[int(parts[0])] = int(parts[1])
        listing: dict[str, tuple[int, int]] = {}
        for line in uidl:
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or not _UIDL.fullmatch(parts[1]):
                log.warning("mailbox %s: ignoring a malformed UIDL line", self.name)
                continue
            number, uid = int(parts[0]), parts[1].decode("ascii")
            if uid in listing or number not in sizes:
                # Two messages with one id (a broken server) cannot be acked safely.
                log.warning("mailbox %s: ignoring message %d (UIDL %s)", self.name, number, uid)
                continue
            listing[uid] = (number, sizes[number])
        self._listing = dict(sorted(listing.items(), key=lambda item: item[1][0]))
        return self._listing

    def _retr(self, number: int, announced: int) -> bytes | int | None:
        """The message's bytes; its length when longer than allowed; None when gone."""
        session = self._require_session()
        bound = 2 * announced + 4096
        if self.max_message_bytes is not None:
            bound = min(bound, self.max_message_bytes)
        # A server that streams far past the bound is hostile or broken; stop draining.
        drain_limit = 4 * max(bound, 1 << 20)
        with self._io(f"RETR {number}"):
            self._send(session, f"RETR {number}".encode())
            status = self._read_status(session)
            if not status.startswith(b"+OK"):
                log.info("mailbox %s: RETR %d refused: %s", self.name, number, _text(status))
                return None
            chunks: list[bytes] = []
            total = 0
            at_line_start = True
            overflow = False
            while True:
                piece = session.file.readline(_CHUNK)
                if not piece:
                    raise EOFError("the server closed the connection during RETR")
                if at_line_start:
                    if piece in (b".\r\n", b".\n"):
                        break
                    if piece.startswith(b"."):
                        piece = piece[1:]  # RFC 1939 §3 byte-stuffing
                at_line_start = piece.endswith(b"\n")
                total += len(piece)
                if overflow:
                    if total > drain_limit:
                        self._broken = True
                        raise ConnectorError(
                            f"{self.host} sent over {drain_limit} bytes for a message it "
                            f"announced as {announced}; giving up on this session",
                            mailbox=self.name,
                        )
                    continue
                if total > bound:
                    overflow = True
                    chunks = []  # free what was kept; the rest is read and dropped
                    continue
                chunks.append(piece)
        if overflow:
            log.warning(
                "mailbox %s: message %d is %d bytes, more than the %d announced or allowed",
                self.name,
                number,
                total,
                bound,
            )
            return total
        return b"".join(chunks)

    # -- wire helpers ------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self, action: str) -> Iterator[None]:
        """Translate socket and protocol failures; a failure leaves the session unusable."""
        try:
            yield
        except TimeoutError as exc:
            self._broken = True
            raise TransientConnectorError(
                f"{action}: {self.host} did not answer within {self.timeout} s", mailbox=self.name
            ) from exc
        except (OSError, EOFError) as exc:
            self._broken = True
            raise TransientConnectorError(
                f"{action}: connection to {self.host} lost ({_describe(exc)})", mailbox=self.name
            ) from exc
        except poplib.error_proto as exc:
            self._broken = True
            raise ConnectorError(
                f"{action}: {self.host} broke the protocol ({self._redact(_describe(exc))})",
                mailbox=self.name,
            ) from exc

    @staticmethod
    def _send(session: poplib.POP3, line: bytes) -> None:
        session.sock.sendall(line + _CRLF)

    @staticmethod
    def _read_status(session: poplib.POP3) -> bytes:
        line = session.file.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise poplib.error_proto("response line too long")
        if not line:
            raise EOFError("the server closed the connection")
        return line.rstrip(b"\r\n")

    def _long_response(self, session: poplib.POP3, command: bytes) -> list[bytes] | bytes:
        """A multi-line answer's lines, or the ``-ERR`` line; bounded in length and count."""
        self._send(session, command)
        status = self._read_status(session)
        if not status.startswith(b"+OK"):
            return status
        lines: list[bytes] = []
        while True:
            line = self._read_status(session)
            if line == b".":
                return lines
            if len(lines) >= MAX_LISTING:
                raise poplib.error_proto(f"more than {MAX_LISTING} lines")
            lines.append(line[1:] if line.startswith(b"..") else line)

    def _refused(self, command: str, line: bytes, hint: str = "") -> ConnectorError:
        text = f"{self.host} refused {command}: {_text(line)}"
        if _transient(line):
            # e.g. [SYS/TEMP] when the server cannot open the mailbox right now.
            return TransientConnectorError(text, mailbox=self.name)
        return ConnectorError(f"{text} {hint}".rstrip(), mailbox=self.name)

    def _redact(self, text: str) -> str:
        # Servers do not echo credentials, but a message must never carry one even if
        # a broken server did.
        for secret in (self._password, *self._tokens):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- leave-on-server memory ------------------------------------------------

    def _account(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    def _seen_set(self) -> set[str]:
        if self._seen is None:
            self._seen = self._load_seen()
        return self._seen

    def _load_seen(self) -> set[str]:
        path = self.seen_file
        if path is None or not path.exists():
            return set()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("account") != self._account():
                # Another server or login: its UIDLs mean nothing here.
                log.warning("mailbox %s: %s belongs to another account; ignored", self.name, path)
                return set()
            return {str(uid) for uid in data["uidls"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Losing the memory costs re-reading; the dedupe keys still prevent doubles.
            log.warning(
                "mailbox %s: cannot read %s (%s); starting afresh",
                self.name,
                path,
                type(exc).__name__,
            )
            return set()

    def _save_seen(self) -> None:
        if not self.leave_on_server or self._seen is None:
            return
        if self._listing is not None:
            # Forget what the server no longer has, so the memory stays mailbox-sized.
            before = len(self._seen)
            self._seen &= set(self._listing)
            self._seen_dirty = self._seen_dirty or len(self._seen) != before
        path = self.seen_file
        if path is None or not self._seen_dirty:
            return
        text = json.dumps({"account": self._account(), "uidls": sorted(self._seen)})
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            self._seen_dirty = False
        except OSError as exc:
            log.warning("mailbox %s: cannot write %s: %s", self.name, path, exc.strerror or exc)


class _Pop3(poplib.POP3):
    """poplib's client, with implicit TLS, closing its socket when the greeting fails.

    ``poplib.POP3.__init__`` opens the socket and then reads the greeting; when that
    read fails (a timeout, a closed connection) the socket is left open with nobody to
    close it. This subclass closes it before the error propagates.
    """

    def __init__(
        self, host: str, port: int, timeout: float, context: ssl.SSLContext | None
    ) -> None:
        self._tls_context = context
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            _close_quietly(self)
            raise

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        if self._tls_context is None:
            return sock
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")[:300]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, poplib.error_proto) and exc.args:
        first = exc.args[0]
        return _text(first) if isinstance(first, bytes) else str(first)[:300]
    return str(exc)[:300] or type(exc).__name__


def _transient(line: bytes) -> bool:
    upper = line.upper()
    return any(code.encode() in upper for code in _TRANSIENT_CODES)


def _close_quietly(session: poplib.POP3 | None) -> None:
    if session is None:
        return
    # After a failed constructor, poplib's close() may find no ``file`` or ``sock``.
    for part in (getattr(session, "file", None), getattr(session, "sock", None)):
        if part is not None:
            with contextlib.suppress(OSError):
                part.close()
