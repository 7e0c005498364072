"""Sending through an SMTP server: implicit TLS, STARTTLS or plain; AUTH PLAIN/LOGIN or XOAUTH2.

Transport security is explicit and never negotiated down. ``security = "tls"`` speaks TLS
from the first byte (SMTPS, port 465). ``security = "starttls"`` requires STARTTLS: a
server that does not offer it, or a handshake that fails (an untrusted certificate, a
host-name mismatch, no common protocol), raises
:class:`~halomail.errors.TransportConfigError` before any credential or message is
sent, because that is a misconfiguration (or someone stripping STARTTLS on the way),
not a passing fault. Only a server's own ``454`` ("TLS not available due to temporary
reason", RFC 3207) or a connection dropped mid-handshake is transient; either way
nothing is sent in clear. ``security = "none"`` is plain SMTP, for a relay on a trusted
network. Certificates and host names are always verified, against the system's CAs
plus ``tls_ca_file``.

Failures are sorted the way the outbox needs them, by the server's reply code (RFC 5321
§4.2.1): a ``4xx`` reply, a refused or dropped connection and a timeout raise
:class:`~halomail.errors.TransientTransportError` (the outbox retries with backoff under
the same Message-ID); a ``5xx`` reply raises :class:`~halomail.errors.PermanentTransportError`,
and a refused login (``530``, ``534``, ``535``), a TLS failure or a missing extension its
subclass :class:`~halomail.errors.TransportConfigError` (the outbox stops sending). The message
names the server, the command and the server's own code and text; a password or token
never appears in it, nor in a log line.

One connection serves one :meth:`SmtpTransport.send` unless the caller opens a pass with
``with transport:``; inside it the connection is reused (checked with ``NOOP`` first)
and closed when the block ends.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import attrs

from halomail.backends._common import shared_tls_context
from halomail.backends.auth.oauth import TokenProvider, token_provider_from_settings
from halomail.backends.auth.sasl import (
    MalformedTokenError,
    login_with_token,
    read_token,
    xoauth2_payload,
)
from halomail.backends.base import OutgoingEmail, ProbeReport
from halomail.backends.settings import SettingsTable, SmtpSettings, as_typed
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
    TransportConfigError,
    TransportError,
)

__all__ = [
    "SECURITIES",
    "RecipientsRefusedError",
    "SmtpCheckResult",
    "SmtpTransport",
]

log = logging.getLogger(__name__)

SECURITIES = ("tls", "starttls", "none")
_MECHANISMS = ("PLAIN", "LOGIN")  # in order of preference, for a password
# 530 authentication required, 534 mechanism too weak, 535 credentials refused (RFC 4954).
_CONFIG_CODES = frozenset({530, 534, 535})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Characters that would end or split an SMTP command line: never in an address we send.
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


class RecipientsRefusedError(PermanentTransportError):
    """The server took the message for some recipients and refused the others.

    It is permanent on purpose: the accepted recipients already have the message, so
    sending it again would give them a second copy.

    Args:
        message: What happened, with each refusal's code and text.
        accepted: The recipients the server accepted.
        refused: Each refused recipient's reply code and text.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, message: str, *, accepted: tuple[str, ...], refused: Mapping[str, tuple[int, str]]
    ) -> None:
        self.accepted = accepted
        self.refused = dict(refused)
        super().__init__(message)


@attrs.frozen
class SmtpCheckResult:
    """What :meth:`SmtpTransport.check` found out about the server.

    Args:
        host: The server.
        port: The port.
        security: ``tls``, ``starttls`` or ``none``.
        tls_version: The TLS version in use (``TLSv1.3``), or ``None`` in clear.
        authenticated_as: The login that was accepted, or ``None`` without AUTH.
        mechanism: The SASL mechanism used (``PLAIN``, ``LOGIN``, ``XOAUTH2``), or ``None``.
        extensions: The ESMTP extensions the server offered (after TLS), upper-case.
        max_size: The largest message the server accepts (``SIZE``), or ``None``.
    """

    host: str
    port: int
    security: str
    tls_version: str | None
    authenticated_as: str | None
    mechanism: str | None
    extensions: tuple[str, ...]
    max_size: int | None


class _Client(smtplib.SMTP):
    """smtplib's client, wrapped in TLS from the start when given a context.

    smtplib takes the TLS server name from the host given to its constructor, and its
    ``SMTP_SSL`` leaves the socket open when the handshake fails; connecting explicitly
    (after construction, so a failure can be cleaned up) needs both fixed here.
    """

    def __init__(
        self, *, implicit_tls: ssl.SSLContext | None, local_hostname: str | None, timeout: float
    ) -> None:
        self._implicit_tls = implicit_tls
        super().__init__(local_hostname=local_hostname, timeout=timeout)

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        # The name STARTTLS and implicit TLS verify the certificate against.
        self._host = host
        return super().connect(host, port, source_address)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # What smtplib.SMTP._get_socket does, without relying on a private method.
        sock = socket.create_connection((host, port), timeout, self.source_address)
        if self._implicit_tls is None:
            return sock
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


class SmtpTransport:
    """Sends mail through an SMTP server (a :class:`~halomail.backends.base.MailTransport`).

    Args:
        host: The SMTP server.
        port: The port; 465 for ``tls``, otherwise 25.
        security: ``tls`` (implicit TLS), ``starttls`` (required, never downgraded) or
            ``none`` (plain SMTP).
        username: The login, for AUTH; without it no AUTH is attempted.
        password: The password, for AUTH PLAIN (preferred) or LOGIN; never shown.
        token_provider: For XOAUTH2 instead of a password: a
            :class:`~halomail.backends.auth.oauth.TokenProvider` or any callable returning
            a bearer token.
        tls_ca_file: A CA bundle to trust besides the system's.
        ssl_context: A ready TLS context instead (overrides ``tls_ca_file``).
        timeout: Seconds allowed for connecting and for each command's reply.
        local_hostname: The name we give in ``EHLO`` (default: this machine's FQDN).

    Raises:
        ValueError: An unknown ``security``, both a password and a token provider, a
            secret without a username, or a line break in the username or password.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        token_provider: TokenProvider | Callable[[], str] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        if security not in SECURITIES:
            raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
        if not host or _CONTROL.search(host):
            raise ValueError(f"invalid SMTP host {host!r}")
        if password is not None and token_provider is not None:
            raise ValueError("give either a password or a token_provider, not both")
        if (password is not None or token_provider is not None) and not username:
            raise ValueError("a password or token_provider needs a username")
        if username is not None and password is None and token_provider is None:
            raise ValueError("a username needs a password or a token_provider")
        for value in (username or "", password or ""):
            if any(c in value for c in "\r\n\0"):
                # A line break would end our AUTH command early and start another one.
                raise ValueError("the username and password must not contain line breaks")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.host = host
        self.port = port or (465 if security == "tls" else 25)
        self.security = security
        self.username = username
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._password = password
        self._token_provider = token_provider
        self._tls_ca_file = tls_ca_file
        self._ssl_context = ssl_context
        self._tokens: list[str] = []  # tokens in use during a login, scrubbed from messages
        self._lock = threading.RLock()
        self._session: smtplib.SMTP | None = None
        self._depth = 0
        if security == "none" and username is not None:
            log.warning(
                "smtp %s: credentials for %s will be sent without TLS (security = 'none')",
                self._where,
                username,
            )

    def __repr__(self) -> str:
        return (
            f"SmtpTransport({self.host!r}, {self.port}, security={self.security!r}, "
            f"username={self.username!r})"
        )

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(
        cls,
        settings: SmtpSettings | SettingsTable,
        token_provider: TokenProvider | Callable[[], str] | None = None,
        *,
        key_path: str | None = None,
    ) -> SmtpTransport:
        """The transport an ``[outgoing]`` table with ``transport = "smtp"`` describes.

        OAuth2 (XOAUTH2) is used when ``settings.oauth`` names it (``auth = "xoauth2"``
        and the keys of :func:`~halomail.backends.auth.oauth.token_provider_from_settings`),
        or when ``token_provider`` is given; otherwise the password, when there is one.

        Args:
            settings: The typed settings, or anything with ``as_table()`` (an
                :class:`halomail.OutgoingSettings`, already merged for a mailbox), read
                through :meth:`SmtpSettings.from_table`.
            token_provider: Overrides the provider the settings would build.
            key_path: Where the settings are in ``halomail.toml``, for errors
                (``outgoing`` or ``mailboxes[2].outgoing``); typed settings know it.

        Returns:
            The transport; nothing is connected until :meth:`send` or :meth:`check`.

        Raises:
            ConfigError: Not an SMTP transport, no host, an invalid ``security``, a
                password or token without a username, or an OAuth2 key missing.
        """
        typed = as_typed(SmtpSettings, settings, key_path or "outgoing")
        key_path = typed.key_path
        if token_provider is None:
            token_provider = token_provider_from_settings(typed.oauth, key_path)
        password = None if token_provider is not None else typed.password
        if (password is not None or token_provider is not None) and not typed.username:
            raise ConfigError(f"{key_path}.username", "required to log in to the SMTP server")
        if typed.username and password is None and token_provider is None:
            raise ConfigError(
                f"{key_path}.password", "required (or password_env) when a username is given"
            )
        try:
            return cls(
                typed.host,
                typed.port,
                security=typed.security,
                username=typed.username or None,
                password=password,
                token_provider=token_provider,
                tls_ca_file=typed.tls_ca_file,
                timeout=typed.timeout,
                local_hostname=typed.local_hostname,
            )
        except ValueError as exc:
            raise ConfigError(key_path, str(exc)) from exc

    # -- the MailTransport contract -------------------------------------------------

    def send(self, email: OutgoingEmail) -> None:
        """Send one email: ``MAIL FROM``, ``RCPT TO`` for each recipient, ``DATA``.

        The bytes go out exactly as composed (smtplib only dot-stuffs them and ends
        them with CRLF when they do not already end so).

        Args:
            email: The composed email.

        Raises:
            TransientTransportError: A ``4xx`` reply, a refused or dropped connection,
                a timeout: try again later.
            PermanentTransportError: A ``5xx`` reply, a refused login, STARTTLS not
                offered or failed, an untrusted certificate: do not retry.
            RecipientsRefusedError: Some recipients were refused after others had
                accepted the message (permanent: a retry would duplicate it).
        """
        self._check_envelope(email)
        with self._lock:
            session = self._session
            self._session = None
            if session is not None and not self._alive(session):
                session = None
            if session is None:
                session = self._connect()
            try:
                self._transmit(session, email)
            except BaseException:
                # The session's state is unknown after a failure: start afresh next time.
                _close_quietly(session)
                raise
            if self._depth > 0:
                self._session = session
            else:
                _quit_quietly(session)

    def check(self) -> SmtpCheckResult:
        """Connect, ``EHLO``, STARTTLS and AUTH as configured, then ``QUIT``; send nothing.

        Returns:
            What the server offered and what was negotiated.

        Raises:
            TransientTransportError: The server could not be reached, or answered ``4xx``.
            PermanentTransportError: TLS, STARTTLS or the login failed, or a ``5xx`` reply.
        """
        with self._lock:
            session = self._connect()
            try:
                features = session.esmtp_features
                size = features.get("size", "").strip()
                result = SmtpCheckResult(
                    host=self.host,
                    port=self.port,
                    security=self.security,
                    tls_version=_tls_version(session),
                    authenticated_as=self.username,
                    mechanism=self._mechanism(session) if self.username else None,
                    extensions=tuple(sorted(name.upper() for name in features)),
                    max_size=int(size) if size.isdigit() and int(size) > 0 else None,
                )
            finally:
                _quit_quietly(session)
        log.info(
            "smtp %s: check passed (%s, %s, %s)",
            self._where,
            self.security,
            result.tls_version or "no TLS",
            f"logged in as {self.username}" if self.username else "no login",
        )
        return result

    def probe(self) -> ProbeReport:
        """:meth:`check`, said in one line: security and login, e.g. ``STARTTLS, AUTH PLAIN``.

        Sends nothing. Raises what :meth:`check` raises.
        """
        result = self.check()
        security = {"tls": "TLS", "starttls": "STARTTLS", "none": "no TLS"}[self.security]
        if result.tls_version:
            security += f" ({result.tls_version})"
        login = f"AUTH {result.mechanism}" if result.mechanism else "no login"
        return ProbeReport(f"{security}, {login}")

    # -- connection reuse -----------------------------------------------------------

    def __enter__(self) -> SmtpTransport:
        with self._lock:
            self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._depth = max(0, self._depth - 1)
            if self._depth == 0:
                self.close()

    def close(self) -> None:
        """Say ``QUIT`` on a connection kept open by a ``with`` block, if any."""
        with self._lock:
            session, self._session = self._session, None
            if session is not None:
                _quit_quietly(session)

    # -- internals ------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is not None:
            return self._ssl_context
        try:
            context = shared_tls_context(self._tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TransportConfigError(
                f"smtp {self._where}: cannot read tls_ca_file "
                f"{os.fspath(self._tls_ca_file or '')!r} ({_describe(exc)})"
            ) from exc
        return context

    def _connect(self) -> smtplib.SMTP:
        context = self._context() if self.security != "none" else None
        session = _Client(
            implicit_tls=context if self.security == "tls" else None,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
        )
        try:
            self._open(session, context)
        except BaseException:
            _close_quietly(session)
            raise
        return session

    def _open(self, session: smtplib.SMTP, context: ssl.SSLContext | None) -> None:
        try:
            code, text = session.connect(self.host, self.port)
        except ssl.SSLError as exc:
            raise self._tls_error(exc, "TLS") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, "connect") from exc
        if code != 220:
            raise self._reply_error(code, text, "greeting")
        self._ehlo(session)
        if self.security == "starttls":
            assert context is not None
            self._starttls(session, context)
        if self.username is not None:
            self._login(session)
        log.debug(
            "smtp %s: connected (%s, %s)",
            self._where,
            self.security,
            _tls_version(session) or "no TLS",
        )

    def _ehlo(self, session: smtplib.SMTP) -> None:
        try:
            code, text = session.ehlo()
            if code == 250:
                return
            if self.security == "starttls" or self.username is not None:
                # STARTTLS and AUTH are ESMTP extensions: without EHLO there is neither.
                raise self._reply_error(code, text, "EHLO")
            code, text = session.helo()
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, "EHLO") from exc
        if code != 250:
            raise self._reply_error(code, text, "HELO")

    def _starttls(self, session: smtplib.SMTP, context: ssl.SSLContext) -> None:
        if not session.has_extn("starttls"):
            # Never fall back to clear text: that is exactly what a man in the middle
            # stripping STARTTLS from the EHLO reply would want.
            raise TransportConfigError(
                f"smtp {self._where}: the server does not offer STARTTLS; refusing to send "
                "without TLS (security = 'starttls'; use 'tls' for port 465)"
            )
        try:
            session.starttls(context=context)
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc.smtp_code, exc.smtp_error, "STARTTLS") from exc
        except ssl.SSLError as exc:
            raise self._tls_error(exc, "STARTTLS") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, "STARTTLS") from exc
        # RFC 3207 §4.2: forget what the server said before TLS and ask again.
        self._ehlo(session)

    def _mechanism(self, session: smtplib.SMTP) -> str:
        offered = session.esmtp_features.get("auth", "").upper().split()
        if not session.has_extn("auth"):
            hint = "" if self.security != "none" else " (many servers offer AUTH only over TLS)"
            raise TransportConfigError(f"smtp {self._where}: the server does not offer AUTH{hint}")
        if self._token_provider is not None:
            if "XOAUTH2" not in offered:
                raise TransportConfigError(
                    f"smtp {self._where}: the server does not offer AUTH XOAUTH2 "
                    f"(it offers {' '.join(offered) or 'nothing'})"
                )
            return "XOAUTH2"
        for mechanism in _MECHANISMS:
            if mechanism in offered:
                return mechanism
        raise TransportConfigError(
            f"smtp {self._where}: the server offers AUTH {' '.join(offered)}; "
            f"halomail logs in with {', '.join(_MECHANISMS)} or XOAUTH2"
        )

    def _login(self, session: smtplib.SMTP) -> None:
        mechanism = self._mechanism(session)
        self._tokens = []
        try:
            if mechanism == "XOAUTH2":
                code, text = self._login_oauth(session)
            else:
                code, text = self._authenticate(session, mechanism)
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, f"AUTH {mechanism}") from exc
        finally:
            tokens, self._tokens = self._tokens, []
        if code != 235:
            what = f"AUTH {mechanism} as {self.username!r}"
            raise self._reply_error(code, text, what, secrets=tokens)
        log.debug("smtp %s: logged in as %s (%s)", self._where, self.username, mechanism)

    def _authenticate(self, session: smtplib.SMTP, mechanism: str) -> tuple[int, bytes]:
        assert self.username is not None
        assert self._password is not None
        # Our own exchange rather than smtplib.login(): RFC 4616 PLAIN is UTF-8, while
        # smtplib encodes credentials as ASCII and fails on any other character.
        if mechanism == "PLAIN":
            blob = _b64(f"\0{self.username}\0{self._password}")
            code, text = session.docmd("AUTH", f"PLAIN {blob}")
            if code == 334:  # a server that takes no initial response asks for it
                code, text = session.docmd(blob)
            return code, text
        code, text = session.docmd("AUTH", "LOGIN")
        if code == 334:
            code, text = session.docmd(_b64(self.username))
        if code == 334:
            code, text = session.docmd(_b64(self._password))
        return code, text

    def _login_oauth(self, session: smtplib.SMTP) -> tuple[int, bytes]:
        assert self._token_provider is not None
        answer, _ = login_with_token(
            self._token_provider,
            lambda token: self._xoauth2(session, token),
            # 4xx is "try later": a fresh token would not help.
            lambda answer: answer[0] != 235 and not 400 <= answer[0] < 500,
            get_token=self._token,
        )
        return answer

    def _xoauth2(self, session: smtplib.SMTP, token: str) -> tuple[int, bytes]:
        blob = base64.b64encode(xoauth2_payload(self.username or "", token)).decode("ascii")
        code, text = session.docmd("AUTH", f"XOAUTH2 {blob}")
        if code == 334:
            # The error arrives as a base64 JSON challenge; an empty line ends the
            # exchange and brings the final reply.
            code, text = session.docmd("")
        return code, text

    def _token(self) -> str:
        assert self._token_provider is not None
        try:
            token = read_token(self._token_provider)
        except MalformedTokenError:
            raise PermanentTransportError(
                f"smtp {self._where}: the token provider returned an empty or malformed token"
            ) from None
        except AuthenticationError as exc:
            raise TransportConfigError(
                f"smtp {self._where}: no OAuth2 token for {self.username!r}: {exc}"
            ) from exc
        except TransientConnectorError as exc:
            raise TransientTransportError(
                f"smtp {self._where}: the OAuth2 token could not be had yet: {exc}"
            ) from exc
        except ConnectorError as exc:
            raise PermanentTransportError(
                f"smtp {self._where}: no OAuth2 token for {self.username!r}: {exc}"
            ) from exc
        self._tokens.append(token)
        return token

    def _check_envelope(self, email: OutgoingEmail) -> None:
        if not email.recipients:
            raise PermanentTransportError(f"{email.message_id}: the email has no recipients")
        for address in (email.envelope_from, *email.recipients):
            if _BAD_ADDRESS.search(address):
                # Would break out of MAIL FROM / RCPT TO into a command of its own.
                raise PermanentTransportError(
                    f"{email.message_id}: invalid envelope address {address!r}"
                )

    def _transmit(self, session: smtplib.SMTP, email: OutgoingEmail) -> None:
        options: list[str] = []
        size = session.esmtp_features.get("size", "").strip()
        if size.isdigit() and 0 < int(size) < len(email.data):
            raise PermanentTransportError(
                f"smtp {self._where}: {email.message_id} is {len(email.data)} bytes; "
                f"the server accepts at most {size}"
            )
        if not email.data.isascii() and session.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (email.envelope_from, *email.recipients)):
            if not session.has_extn("smtputf8"):
                raise PermanentTransportError(
                    f"smtp {self._where}: {email.message_id} has a non-ASCII address and "
                    "the server does not offer SMTPUTF8"
                )
            options.append("SMTPUTF8")
        recipients = list(email.recipients)
        try:
            # smtplib adds SIZE=<n> itself when the server offers SIZE.
            refused = session.sendmail(email.envelope_from, recipients, email.data, options)
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused_error(email, exc.recipients, accepted=()) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise self._reply_error(
                exc.smtp_code, exc.smtp_error, f"MAIL FROM:<{email.envelope_from}>"
            ) from exc
        except smtplib.SMTPDataError as exc:
            raise self._reply_error(exc.smtp_code, exc.smtp_error, "DATA") from exc
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc.smtp_code, exc.smtp_error, "MAIL") from exc
        except (OSError, smtplib.SMTPException) as exc:
            # A connection lost after DATA but before the reply may have delivered the
            # message; retrying then sends it twice under the same Message-ID, which
            # RFC 5321 §4.1.1.4 accepts as the lesser evil (RFC 1047).
            raise self._error(exc, "sending") from exc
        if refused:
            accepted = tuple(r for r in recipients if r not in refused)
            raise self._refused_error(email, refused, accepted=accepted)
        log.debug(
            "smtp %s: %s accepted for %d recipient(s)",
            self._where,
            email.message_id,
            len(recipients),
        )

    def _alive(self, session: smtplib.SMTP) -> bool:
        try:
            code, _ = session.noop()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code == 250:
            return True
        _close_quietly(session)
        return False

    # -- errors ---------------------------------------------------------------------

    def _secrets(self, extra: list[str] | None = None) -> list[str]:
        values = [self._password or "", *self._tokens, *(extra or [])]
        found: list[str] = []
        for value in values:
            if len(value) >= 4:
                found += [value, _b64(value)]
        # The base64 of a whole PLAIN or XOAUTH2 blob holds the secret too.
        if self._password and self.username:
            found.append(_b64(f"\0{self.username}\0{self._password}"))
        return found

    def _scrub(self, text: str, secrets: list[str] | None = None) -> str:
        for secret in self._secrets(secrets):
            text = text.replace(secret, "[secret]")
        return text

    def _reply_error(
        self,
        code: int,
        text: bytes | str,
        command: str,
        *,
        secrets: list[str] | None = None,
    ) -> TransportError:
        reply = self._scrub(f"{code} {_text(text)}".strip(), secrets)
        message = f"smtp {self._where}: {command} failed: {reply}"
        if 400 <= code < 500:
            # RFC 5321 §4.2.1: 4yz is a transient negative reply; the server asks us
            # to come back later (greylisting, a full queue, a local error).
            return TransientTransportError(message)
        if code in _CONFIG_CODES or command.startswith(("AUTH", "STARTTLS")):
            return TransportConfigError(message)  # our login, not this mail: stop the pass
        return PermanentTransportError(message)

    def _refused_error(
        self,
        email: OutgoingEmail,
        refused: Mapping[str, tuple[int, bytes | str]],
        *,
        accepted: tuple[str, ...],
    ) -> TransportError:
        replies = {address: (code, _text(text)) for address, (code, text) in refused.items()}
        listed = "; ".join(
            f"{address}: {code} {text}".strip() for address, (code, text) in replies.items()
        )
        if accepted:
            return RecipientsRefusedError(
                self._scrub(
                    f"smtp {self._where}: {email.message_id} was accepted for "
                    f"{', '.join(accepted)} but refused for {listed}"
                ),
                accepted=accepted,
                refused=replies,
            )
        message = self._scrub(f"smtp {self._where}: RCPT TO refused: {listed}")
        if all(400 <= code < 500 for code, _ in replies.values()):
            # Every refusal is temporary and nobody got the message: safe to retry.
            return TransientTransportError(message)
        return PermanentTransportError(message)

    def _tls_error(self, exc: ssl.SSLError, step: str) -> TransportError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            # An untrusted or mismatched certificate will not fix itself: either the
            # configuration (host, tls_ca_file) is wrong or someone is in the middle.
            return TransportConfigError(
                f"smtp {self._where}: {step}: the server's certificate is not trusted "
                f"({exc.verify_message or _describe(exc)}); not continuing without TLS"
            )
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return TransientTransportError(
                f"smtp {self._where}: {step}: the connection closed during the TLS "
                f"handshake ({_describe(exc)})"
            )
        hint = " (is the port right for security = 'tls'?)" if step == "TLS" else ""
        return TransportConfigError(
            f"smtp {self._where}: {step} failed ({_describe(exc)}){hint}; "
            "not continuing without TLS"
        )

    def _error(self, exc: BaseException, step: str) -> TransportError:
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_error(exc.smtp_code, exc.smtp_error, step)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._tls_error(exc, step)
        if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
            # Refused, reset, timed out or dropped: the network or the server is
            # having a bad moment; the same mail may well go through later.
            return TransientTransportError(
                self._scrub(f"smtp {self._where}: {step}: {_describe(exc)}")
            )
        return PermanentTransportError(self._scrub(f"smtp {self._where}: {step}: {_describe(exc)}"))


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return _CONTROL.sub(" ", text).strip()[:300]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = _text(str(exc)) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def _tls_version(session: smtplib.SMTP) -> str | None:
    sock = session.sock
    return sock.version() if isinstance(sock, ssl.SSLSocket) else None


def _quit_quietly(session: smtplib.SMTP) -> None:
    # After the server's 250 the mail is sent: a failing QUIT must not turn that into
    # an error (and a retry, and a duplicate).
    try:
        session.quit()
    except (OSError, smtplib.SMTPException):
        _close_quietly(session)


def _close_quietly(session: smtplib.SMTP) -> None:
    try:
        session.close()
    except OSError:
        log.debug("smtp: closing the connection failed", exc_info=True)
