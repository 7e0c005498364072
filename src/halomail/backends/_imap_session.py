"""Opening a logged-in IMAP connection: TLS, LOGIN/PLAIN/XOAUTH2/OAUTHBEARER, errors.

:class:`ImapLogin` is everything :class:`~halomail.backends.imap.ImapConnector` needs to
open a connection; the connector's reading session and its IDLE watcher
(:mod:`halomail.backends._imap_idle`) each open their own through it. Refused
credentials raise :class:`~halomail.errors.AuthenticationError`, a dropped connection
or a timeout :class:`~halomail.errors.TransientConnectorError`; no message and no log
line carries the password or token.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import ssl
from collections.abc import Callable, Iterator

import attrs

from halomail.backends._common import shared_tls_context
from halomail.backends._imap_client import BoundedIMAP4, BoundedIMAP4_SSL, quote
from halomail.backends.auth.sasl import (
    MalformedTokenError,
    TokenSource,
    login_with_token,
    read_token,
    sasl_payload,
)
from halomail.errors import AuthenticationError, ConnectorError, TransientConnectorError

__all__ = ["TRANSIENT_CODES", "ImapLogin", "describe", "logout_quietly", "text_of"]

log = logging.getLogger("halomail.backends.imap")

# RFC 5530 response codes that mean "not now" rather than "not you".
TRANSIENT_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")


@attrs.frozen
class ImapLogin:
    """How to reach and log in to one IMAP account (see ``ImapConnector``'s arguments).

    Args:
        name: The mailbox's name, for errors and logs.
        host: The server.
        port: Its port.
        security: ``tls``, ``starttls`` or ``none``.
        username: The login.
        password: The password, or ``None`` with a token provider.
        token_provider: The OAuth2 token source, or ``None`` with a password.
        mechanism: ``LOGIN``, ``PLAIN``, ``XOAUTH2``, ``OAUTHBEARER``, or ``None`` for
            PLAIN when the server offers it, else LOGIN.
        timeout: Seconds for connecting and for every read and write.
        tls_ca_file: A CA bundle to trust besides the system's.
        ssl_context: A ready TLS context instead.
        max_literal: The largest literal accepted (bytes).
        command_budget: The most bytes one command's response may bring in.
    """

    name: str
    host: str
    port: int
    security: str
    username: str
    password: str | None = attrs.field(repr=False)
    token_provider: TokenSource | None = attrs.field(repr=False)
    mechanism: str | None
    timeout: float
    tls_ca_file: str | os.PathLike[str] | None
    ssl_context: ssl.SSLContext | None = attrs.field(repr=False)
    max_literal: int
    command_budget: int

    @property
    def where(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def connect(self) -> tuple[imaplib.IMAP4, frozenset[str]]:
        """A logged-in connection and its capabilities (no folder selected yet).

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The server cannot be reached, or cannot log in now.
            ConnectorError: TLS failed or is missing, or the greeting is invalid.
        """
        client = self._open()
        try:
            self._login(client)
            with self.io("capability"):
                typ, data = client.capability()
                line = data[-1] if typ == "OK" and isinstance(data[-1], bytes) else b""
                caps = frozenset(line.decode("ascii", "replace").upper().split())
                client.untagged_responses.clear()
        except BaseException:
            logout_quietly(client, polite=False)
            raise
        log.debug("mailbox %s: logged in to %s (%s)", self.name, self.where, self.security)
        return client, caps or frozenset(c.upper() for c in client.capabilities)

    def redact(self, text: str, tokens: tuple[str, ...] = ()) -> str:
        """``text`` with the password and ``tokens`` replaced by ``***``."""
        # Servers do not echo credentials, but a message must never carry one even if
        # a broken server did.
        for secret in (self.password, *tokens):
            if secret:
                text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def io(self, action: str, on_break: Callable[[], None] | None = None) -> Iterator[None]:
        """Translate socket and protocol failures of ``action`` into connector errors.

        Args:
            action: What was being done, for the message (``"fetch"``).
            on_break: Called when the failure leaves the connection unusable.
        """
        broken = on_break or (lambda: None)
        try:
            yield
        except TimeoutError as exc:
            broken()
            raise TransientConnectorError(
                f"{action}: {self.host} did not answer within {self.timeout} s", mailbox=self.name
            ) from exc
        except imaplib.IMAP4.abort as exc:
            broken()
            raise TransientConnectorError(
                f"{action}: connection to {self.host} lost ({self.redact(describe(exc))})",
                mailbox=self.name,
            ) from exc
        except imaplib.IMAP4.error as exc:
            if action == "login":
                # imaplib raises this for a NO to LOGIN/AUTHENTICATE: a refusal, not a
                # protocol failure; the caller words it.
                raise _LoginRefused(describe(exc)) from None
            broken()
            raise ConnectorError(
                f"{action}: {self.host} broke the protocol ({self.redact(describe(exc))})",
                mailbox=self.name,
            ) from exc
        except (OSError, EOFError) as exc:
            broken()
            raise TransientConnectorError(
                f"{action}: connection to {self.host} lost ({describe(exc)})", mailbox=self.name
            ) from exc
        except ValueError as exc:
            if isinstance(exc, UnicodeEncodeError):
                raise
            broken()
            raise ConnectorError(
                f"{action}: {self.host} sent a malformed answer ({describe(exc)})",
                mailbox=self.name,
            ) from exc

    # -- connecting --------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or shared_tls_context(self.tls_ca_file)

    def _open(self) -> imaplib.IMAP4:
        """A connection with TLS as configured, not logged in yet."""
        where = self.where
        client: imaplib.IMAP4 | None = None
        try:
            if self.security == "tls":
                client = BoundedIMAP4_SSL(
                    self.host,
                    self.port,
                    ssl_context=self._context(),
                    timeout=self.timeout,
                    max_literal=self.max_literal,
                    command_budget=self.command_budget,
                )
            else:
                client = BoundedIMAP4(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    max_literal=self.max_literal,
                    command_budget=self.command_budget,
                )
                if self.security == "starttls":
                    if "STARTTLS" not in client.capabilities:
                        raise ConnectorError(
                            f"{where} does not offer STARTTLS; not continuing without TLS",
                            mailbox=self.name,
                        )
                    client.starttls(self._context())
        except ConnectorError:
            logout_quietly(client, polite=False)
            raise
        except ssl.SSLError as exc:
            logout_quietly(client, polite=False)
            raise ConnectorError(
                f"TLS with {where} failed ({describe(exc)}); not continuing without it",
                mailbox=self.name,
            ) from exc
        except TimeoutError as exc:
            logout_quietly(client, polite=False)
            raise TransientConnectorError(
                f"{where} did not answer within {self.timeout} s", mailbox=self.name
            ) from exc
        except (OSError, EOFError, imaplib.IMAP4.abort) as exc:
            logout_quietly(client, polite=False)
            raise TransientConnectorError(
                f"cannot connect to {where}: {describe(exc)}", mailbox=self.name
            ) from exc
        except imaplib.IMAP4.error as exc:
            logout_quietly(client, polite=False)
            if self.security == "starttls" and client is not None:
                raise ConnectorError(
                    f"{where} refused STARTTLS ({describe(exc)}); not continuing without TLS",
                    mailbox=self.name,
                ) from exc
            raise ConnectorError(
                f"{where} sent an invalid greeting ({describe(exc)})", mailbox=self.name
            ) from exc
        return client

    # -- logging in --------------------------------------------------------------------

    def _login(self, client: imaplib.IMAP4) -> None:
        caps = frozenset(client.capabilities)
        if self.token_provider is not None:
            self._login_oauth(client, caps, self.token_provider)
            return
        password = self.password or ""
        mechanism = self.mechanism or ("PLAIN" if "AUTH=PLAIN" in caps else "LOGIN")
        if mechanism == "LOGIN" and "LOGINDISABLED" in caps:
            raise ConnectorError(
                f"{self.host} refuses LOGIN on this connection (LOGINDISABLED); "
                "use security = 'tls' or 'starttls'",
                mailbox=self.name,
            )
        try:
            with self.io("login"):
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

    def _login_oauth(
        self, client: imaplib.IMAP4, caps: frozenset[str], provider: TokenSource
    ) -> None:
        mechanism = self.mechanism or "XOAUTH2"
        if f"AUTH={mechanism}" not in caps:
            log.debug("mailbox %s: %s not advertised; trying it anyway", self.name, mechanism)

        def attempt(token: str) -> _LoginRefused | None:
            payload = sasl_payload(mechanism, self.username, token, self.host, self.port)
            try:
                with self.io("login"):
                    client.authenticate(mechanism, _answers(payload))
            except _LoginRefused as exc:
                return exc
            return None

        refused, token = login_with_token(
            provider,
            attempt,
            lambda answer: answer is not None and not answer.transient,
            get_token=self._token,
        )
        if refused is not None:
            what = f"the OAuth2 token ({mechanism}) for {self.username}"
            raise self._login_error(refused.text, what, (token,)) from None

    def _token(self) -> str:
        assert self.token_provider is not None
        try:
            return read_token(self.token_provider)
        except MalformedTokenError as exc:
            raise AuthenticationError(str(exc), mailbox=self.name) from None

    def _login_error(self, text: str, what: str, tokens: tuple[str, ...]) -> ConnectorError:
        text = self.redact(text, tokens)
        if any(code.decode() in text.upper() for code in TRANSIENT_CODES):
            return TransientConnectorError(
                f"{self.host} cannot log in now: {text}", mailbox=self.name
            )
        return AuthenticationError(f"{self.host} refused {what}: {text}", mailbox=self.name)


class _LoginRefused(Exception):
    """A NO to LOGIN or AUTHENTICATE (internal: turned into the right public error)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        self.transient = any(code.decode() in text.upper() for code in TRANSIENT_CODES)


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


def text_of(value: object) -> str:
    """A server's answer as text, at most 300 characters."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")[:300]
    return str(value)[:300]


def describe(exc: BaseException) -> str:
    """An exception as a short message (imaplib puts bytes in ``args``)."""
    if exc.args and isinstance(exc.args[0], bytes):
        return text_of(exc.args[0])
    return str(exc)[:300] or type(exc).__name__


def logout_quietly(client: imaplib.IMAP4 | None, *, polite: bool) -> None:
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
