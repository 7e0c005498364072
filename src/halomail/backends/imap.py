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
  Acks are collected and sent one command per batch (before the next batch is read,
  and in :meth:`close`); a crash in between only means those emails are fetched again
  and skipped as duplicates. Emails flagged ``\\Deleted`` are on their way out and are
  not fetched.
* **Push**: :meth:`wait_for_mail` waits with IDLE on a connection of its own (polling
  ``STATUS`` when the server has no IDLE); :meth:`list_refs` gives the UIDs present now
  without reading a body (``start_from = "now"``).
* **Bounded**: every socket call has ``timeout``; lines are capped by imaplib, and a
  literal larger than the message limit is refused before it is read (see
  :mod:`halomail.backends._imap_client`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import attrs

from halomail.backends._common import login_from_settings, tls_context
from halomail.backends._imap_client import (
    BoundedIMAP4,
    BoundedIMAP4_SSL,
    encode_mailbox_name,
    expand_uid_set,
    parse_fetch,
    parse_list,
    quote,
    uid_set,
)
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.base import Disposition, FetchedMessage
from halomail.backends.settings import ImapSettings, SettingsTable, as_typed
from halomail.errors import (
    AuthenticationError,
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
# RFC 2177: a client should re-issue IDLE at least every 29 minutes.
_IDLE_SLICE = 25 * 60.0
# Besides the UIDs the folder had when selected, this many may arrive meanwhile.
_UID_SLACK = 100_000
# RFC 5530 response codes that mean "not now" rather than "not you".
_TRANSIENT_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")
# The names that mean "the trash" in the processed setting; resolved by \Trash first.
_TRASH_NAMES = frozenset({"deleted items", "trash"})
_EXISTS = re.compile(rb"\* (\d+) EXISTS", re.IGNORECASE)
_STATUS_ITEM = re.compile(rb"\b(UIDNEXT|UIDVALIDITY) (\d+)", re.IGNORECASE)


@attrs.frozen
class _Selected:
    """What SELECT / EXAMINE told us about the folder."""

    uidvalidity: int
    uidnext: int
    exists: int


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
        self._password = password
        self._token_provider = token_provider
        self._tls_ca_file = tls_ca_file
        self._ssl_context = ssl_context
        self._max_literal = (
            max_message_bytes + _LITERAL_MARGIN
            if max_message_bytes is not None
            else _NO_LIMIT_LITERAL
        )
        # One command may bring in a batch of bodies plus one more maximal literal.
        self._command_budget = _BATCH_BYTES + 2 * self._max_literal + 1024 * 1024
        # Session state (from the first fetch/list_refs/ack to close).
        self._client: imaplib.IMAP4 | None = None
        self._caps: frozenset[str] = frozenset()
        self._selected: _Selected | None = None
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
        log.debug("mailbox %s: %d emails in %s", self.name, len(uids), self.folder)
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
        """Send the queued acks, then log out (never CLOSE: it would expunge others' mail).

        Raises:
            TransientConnectorError: The queued acks could not be sent; those emails
                are fetched again next time and skipped as duplicates.
        """
        try:
            if self._pending and not self._broken:
                self._flush()
        finally:
            self._pending = []
            client, broken = self._client, self._broken
            self._client, self._selected, self._broken = None, None, False
            self._folders, self._targets = None, {}
            if client is not None:
                _logout_quietly(client, polite=not broken)

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait until the folder has new mail, or ``timeout`` seconds pass.

        Uses a connection of its own (so a fetch may run meanwhile): IDLE when the
        server offers it, else ``STATUS`` every ``poll_interval`` seconds. Mail that
        arrived since the last :meth:`fetch` counts as new at once.

        Args:
            timeout: The longest wait, in seconds.

        Returns:
            True as soon as new mail is reported; False on timeout.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed.
            ConnectorError: TLS failed or the folder is missing.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while (remaining := deadline - time.monotonic()) > 0:
            client, caps = self._connect()
            try:
                with self._io("wait for mail", session=False):
                    idle = "IDLE" in caps
                    # IDLE needs the folder selected; polling must not select it, as
                    # STATUS of the selected folder may answer from the session's view.
                    selected = self._select(client, readonly=True) if idle else self._status(client)
                    mark = self._mark
                    if mark is not None and (
                        selected.uidvalidity != mark[0] or selected.uidnext > mark[1]
                    ):
                        return True
                    if idle:
                        found = self._idle(client, min(remaining, _IDLE_SLICE))
                        if found is not None:
                            if found:
                                return True
                            continue  # a slice ended: a fresh connection for the next
                    return self._poll(client, deadline, selected)
            finally:
                # After an IDLE read timed out the connection cannot be read again.
                _logout_quietly(client, polite=False)
        return False

    # -- session -----------------------------------------------------------------------

    def _session(self) -> imaplib.IMAP4:
        if self._client is None:
            client, caps = self._connect()
            self._client, self._caps, self._broken = client, caps, False
            try:
                with self._io("select"):
                    self._selected = self._select(client, readonly=False)
            except BaseException:
                self._broken = True  # nothing can be sent: close without flushing
                self.close()
                raise
            mark = (self._selected.uidvalidity, self._selected.uidnext)
            self._mark = mark
        elif self._broken:
            raise TransientConnectorError(
                "the connection broke earlier in this session", mailbox=self.name
            )
        return self._client

    def _require_selected(self) -> _Selected:
        if self._selected is None:  # pragma: no cover - _session always sets it
            raise ConnectorError("no folder selected", mailbox=self.name)
        return self._selected

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or tls_context(self._tls_ca_file)

    def _connect(self) -> tuple[imaplib.IMAP4, frozenset[str]]:
        """A logged-in connection and its capabilities (no folder selected yet)."""
        where = f"{self.host}:{self.port}"
        client: imaplib.IMAP4 | None = None
        try:
            if self.security == "tls":
                client = BoundedIMAP4_SSL(
                    self.host,
                    self.port,
                    ssl_context=self._context(),
                    timeout=self.timeout,
                    max_literal=self._max_literal,
                    command_budget=self._command_budget,
                )
            else:
                client = BoundedIMAP4(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    max_literal=self._max_literal,
                    command_budget=self._command_budget,
                )
                if self.security == "starttls":
                    if "STARTTLS" not in client.capabilities:
                        raise ConnectorError(
                            f"{where} does not offer STARTTLS; not continuing without TLS",
                            mailbox=self.name,
                        )
                    client.starttls(self._context())
        except ConnectorError:
            _logout_quietly(client, polite=False)
            raise
        except ssl.SSLError as exc:
            _logout_quietly(client, polite=False)
            raise ConnectorError(
                f"TLS with {where} failed ({_describe(exc)}); not continuing without it",
                mailbox=self.name,
            ) from exc
        except TimeoutError as exc:
            _logout_quietly(client, polite=False)
            raise TransientConnectorError(
                f"{where} did not answer within {self.timeout} s", mailbox=self.name
            ) from exc
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            _logout_quietly(client, polite=False)
            raise TransientConnectorError(
                f"cannot connect to {where}: {_describe(exc)}", mailbox=self.name
            ) from exc
        except imaplib.IMAP4.error as exc:
            _logout_quietly(client, polite=False)
            if self.security == "starttls" and client is not None:
                raise ConnectorError(
                    f"{where} refused STARTTLS ({_describe(exc)}); not continuing without TLS",
                    mailbox=self.name,
                ) from exc
            raise ConnectorError(
                f"{where} sent an invalid greeting ({_describe(exc)})", mailbox=self.name
            ) from exc
        try:
            self._login(client)
            with self._io("capability", session=False):
                typ, data = client.capability()
                line = data[-1] if typ == "OK" and isinstance(data[-1], bytes) else b""
                caps = frozenset(line.decode("ascii", "replace").upper().split())
                client.untagged_responses.clear()
        except BaseException:
            _logout_quietly(client, polite=False)
            raise
        log.debug("mailbox %s: logged in to %s (%s)", self.name, where, self.security)
        return client, caps or frozenset(c.upper() for c in client.capabilities)

    # -- login -------------------------------------------------------------------------

    def _login(self, client: imaplib.IMAP4) -> None:
        caps = frozenset(client.capabilities)
        if self._token_provider is not None:
            self._login_oauth(client, caps)
            return
        password = self._password or ""
        mechanism = self.auth_mechanism or ("PLAIN" if "AUTH=PLAIN" in caps else "LOGIN")
        if mechanism == "LOGIN" and "LOGINDISABLED" in caps:
            raise ConnectorError(
                f"{self.host} refuses LOGIN on this connection (LOGINDISABLED); "
                "use security = 'tls' or 'starttls'",
                mailbox=self.name,
            )
        try:
            with self._io("login", session=False):
                if mechanism == "PLAIN":
                    payload = f"\0{self.username}\0{password}".encode()
                    client.authenticate("PLAIN", _answers(payload))
                else:
                    client.login(quote(self.username), password)
        except UnicodeEncodeError:
            raise AuthenticationError(
                f"{self.host} offers no AUTH=PLAIN, and LOGIN cannot carry a non-ASCII "
                "username or password",
                mailbox=self.name,
            ) from None
        except _LoginRefused as exc:
            raise self._login_error(exc.text, f"the password of {self.username}", ()) from None

    def _login_oauth(self, client: imaplib.IMAP4, caps: frozenset[str]) -> None:
        mechanism = self.auth_mechanism or "XOAUTH2"
        if f"AUTH={mechanism}" not in caps:
            log.debug("mailbox %s: %s not advertised; trying it anyway", self.name, mechanism)
        token = self._token()
        try:
            self._authenticate(client, mechanism, token)
            return
        except _LoginRefused as exc:
            if exc.transient:
                raise self._login_error(exc.text, "", (token,)) from None
            first = exc
        # The server refused a token we believed valid (revoked early): ask for a new
        # one once. A provider that hands out the same token again is not retried.
        invalidate = getattr(self._token_provider, "invalidate", None)
        if callable(invalidate):
            invalidate()
            fresh = self._token()
            if fresh != token:
                try:
                    self._authenticate(client, mechanism, fresh)
                    return
                except _LoginRefused as exc:
                    first = exc
                    token = fresh
        raise self._login_error(
            first.text, f"the OAuth2 token ({mechanism}) for {self.username}", (token,)
        ) from None

    def _token(self) -> str:
        provider = self._token_provider
        getter = getattr(provider, "token", None)
        if callable(getter):
            token = str(getter())
        else:
            assert callable(provider)
            token = str(provider())
        if not token or any(c in token for c in "\r\n\0\x01"):
            raise AuthenticationError(
                "the token provider returned an empty or malformed token", mailbox=self.name
            )
        return token

    def _authenticate(self, client: imaplib.IMAP4, mechanism: str, token: str) -> None:
        if mechanism == "OAUTHBEARER":
            # RFC 7628 §3.1: GS2 header (with "," and "=" escaped), host, port, token.
            user = self.username.replace("=", "=3D").replace(",", "=2C")
            payload = (
                f"n,a={user},\x01host={self.host}\x01port={self.port}\x01"
                f"auth=Bearer {token}\x01\x01"
            )
        else:
            payload = f"user={self.username}\x01auth=Bearer {token}\x01\x01"
        with self._io("login", session=False):
            client.authenticate(mechanism, _answers(payload.encode()))

    def _login_error(self, text: str, what: str, tokens: tuple[str, ...]) -> ConnectorError:
        text = self._redact(text, tokens)
        if any(code.decode() in text.upper() for code in _TRANSIENT_CODES):
            return TransientConnectorError(
                f"{self.host} cannot log in now: {text}", mailbox=self.name
            )
        return AuthenticationError(f"{self.host} refused {what}: {text}", mailbox=self.name)

    def _redact(self, text: str, tokens: tuple[str, ...] = ()) -> str:
        # Servers do not echo credentials, but a message must never carry one even if
        # a broken server did.
        for secret in (self._password, *tokens):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- reading -----------------------------------------------------------------------

    def _select(self, client: imaplib.IMAP4, *, readonly: bool) -> _Selected:
        mailbox = quote(encode_mailbox_name(self.folder))
        typ, data = client.select(mailbox, readonly=readonly)
        responses = client.untagged_responses
        if typ != "OK":
            text = self._redact(_text(data[-1] if data else b""))
            responses.clear()
            if any(code.decode() in text.upper() for code in _TRANSIENT_CODES):
                raise TransientConnectorError(
                    f"cannot open folder {self.folder!r} now: {text}", mailbox=self.name
                )
            raise ConnectorError(f"cannot open folder {self.folder!r}: {text}", mailbox=self.name)
        try:
            uidvalidity = int(_text(responses["UIDVALIDITY"][-1]))
            uidnext = int(_text((responses.get("UIDNEXT") or [b"0"])[-1]))
            exists = int(data[-1] or 0)
        except (KeyError, ValueError, TypeError):
            raise ConnectorError(
                f"the server gave no valid UIDVALIDITY for {self.folder!r}", mailbox=self.name
            ) from None
        finally:
            responses.clear()
        return _Selected(uidvalidity, uidnext, exists)

    def _search(self, client: imaplib.IMAP4, selected: _Selected) -> list[int]:
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
            text = self._redact(_text(data[-1] if data else b""))
            error = f"{self.host} refused {command}: {text}"
            if any(code.decode() in text.upper() for code in _TRANSIENT_CODES):
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

    def _idle(self, client: imaplib.IMAP4, seconds: float) -> bool | None:
        """IDLE for up to ``seconds``: True on EXISTS, False on timeout, None if refused."""
        wire: Any = client
        tag: bytes = wire.new_tag()
        wire.send(tag + b" IDLE\r\n")
        while True:
            line: bytes = wire.next_line()
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                return None  # NO/BAD: the server does not IDLE after all; poll instead
            if _EXISTS.match(line):
                return True  # mail arrived just before the IDLE took effect
        client.sock.settimeout(max(0.01, seconds))
        try:
            while True:
                line = wire.next_line()
                if _EXISTS.match(line):
                    break
                if line.upper().startswith(b"* BYE"):
                    raise imaplib.IMAP4.abort(_text(line))
        except TimeoutError:
            return False  # nothing arrived; the caller drops this connection
        # End the IDLE politely: DONE, then the tagged completion.
        client.sock.settimeout(self.timeout)
        wire.send(b"DONE\r\n")
        while not wire.next_line().startswith(tag + b" "):
            pass
        log.debug("mailbox %s: new mail reported by IDLE", self.name)
        return True

    def _status(self, client: imaplib.IMAP4) -> _Selected:
        """The folder's UIDVALIDITY and UIDNEXT from ``STATUS`` (nothing selected)."""
        mailbox = quote(encode_mailbox_name(self.folder))
        typ, data = client.status(mailbox, "(UIDNEXT UIDVALIDITY)")
        client.untagged_responses.clear()
        self._check(typ, data, "STATUS")
        found = dict.fromkeys((b"UIDNEXT", b"UIDVALIDITY"), 0)
        for item in data:
            text = item[0] if isinstance(item, tuple) else item
            if isinstance(text, bytes):
                for name, value in _STATUS_ITEM.findall(text):
                    found[name.upper()] = int(value)
        return _Selected(found[b"UIDVALIDITY"], found[b"UIDNEXT"], 0)

    def _poll(self, client: imaplib.IMAP4, deadline: float, start: _Selected) -> bool:
        """Without IDLE: ask ``STATUS`` every ``poll_interval`` seconds until the deadline."""
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(self.poll_interval, remaining))
            now = self._status(client)
            if now.uidvalidity != start.uidvalidity or now.uidnext > start.uidnext:
                return True
        return False

    # -- errors ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self, action: str, *, session: bool = True) -> Iterator[None]:
        """Translate socket and protocol failures; a failure leaves the session unusable."""
        try:
            yield
        except TimeoutError as exc:
            self._broken = self._broken or session
            raise TransientConnectorError(
                f"{action}: {self.host} did not answer within {self.timeout} s", mailbox=self.name
            ) from exc
        except imaplib.IMAP4.abort as exc:
            self._broken = self._broken or session
            raise TransientConnectorError(
                f"{action}: connection to {self.host} lost ({self._redact(_describe(exc))})",
                mailbox=self.name,
            ) from exc
        except imaplib.IMAP4.error as exc:
            if action == "login":
                # imaplib raises this for a NO to LOGIN/AUTHENTICATE: a refusal, not a
                # protocol failure; the caller words it.
                raise _LoginRefused(_describe(exc)) from None
            self._broken = self._broken or session
            raise ConnectorError(
                f"{action}: {self.host} broke the protocol ({self._redact(_describe(exc))})",
                mailbox=self.name,
            ) from exc
        except (OSError, EOFError) as exc:
            self._broken = self._broken or session
            raise TransientConnectorError(
                f"{action}: connection to {self.host} lost ({_describe(exc)})", mailbox=self.name
            ) from exc
        except ValueError as exc:
            if isinstance(exc, UnicodeEncodeError):
                raise
            self._broken = self._broken or session
            raise ConnectorError(
                f"{action}: {self.host} sent a malformed answer ({_describe(exc)})",
                mailbox=self.name,
            ) from exc


class _LoginRefused(Exception):
    """A NO to LOGIN or AUTHENTICATE (internal: turned into the right public error)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        self.transient = any(code.decode() in text.upper() for code in _TRANSIENT_CODES)


def _answers(payload: bytes) -> Callable[[bytes], bytes | None]:
    """A SASL callback: ``payload`` first, then an empty answer, then abort.

    After a refused XOAUTH2/OAUTHBEARER token the server sends a JSON error as a
    challenge (RFC 7628 §3.2.2); the empty answer gets the final ``NO``.
    """
    calls = 0

    def answer(_challenge: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return payload
        return b"" if calls == 2 else None

    return answer


def _same_folder(a: str, b: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 §5.1); other names are compared as written.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:300]
    return str(value)[:300]


def _describe(exc: BaseException) -> str:
    if exc.args and isinstance(exc.args[0], bytes):
        return _text(exc.args[0])
    return str(exc)[:300] or type(exc).__name__


def _logout_quietly(client: imaplib.IMAP4 | None, *, polite: bool) -> None:
    """Log out (when the connection is sound) and always close the socket."""
    if client is None:
        return
    if polite:
        with contextlib.suppress(imaplib.IMAP4.error, OSError, ValueError):
            client.logout()
    for part in (getattr(client, "file", None), getattr(client, "sock", None)):
        if part is not None:
            with contextlib.suppress(OSError):
                part.close()
