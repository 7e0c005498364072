"""A real SMTP server on loopback for the transport tests: aiosmtpd in a thread.

Each :class:`SmtpServer` listens on ``127.0.0.1`` on a port the kernel picks and is
handed to a test only after a real round trip (connect, ``EHLO``, ``QUIT``) through
smtplib, with TLS when the server speaks it. Modes:

* ``plain``: no TLS; with ``auth=True`` AUTH is offered in clear (that is the server a
  ``security = "starttls"`` client must refuse: it offers no STARTTLS);
* ``starttls``: STARTTLS offered and required before anything else; AUTH only after it;
* ``tls``: implicit TLS from the first byte (SMTPS).

With ``auth=True`` the server offers ``AUTH LOGIN PLAIN XOAUTH2`` (minus ``exclude``),
accepts :data:`USER` / :data:`PASSWORD` and the bearer token :data:`TOKEN`, and answers
``MAIL`` with ``530`` until the client has authenticated. Every message is captured
whole (:class:`Captured`: envelope, the exact bytes, the authenticated user, whether TLS
was on), every ``MAIL FROM`` and every AUTH attempt is recorded even when refused, and
:meth:`SmtpServer.fail_next` makes the next replies to a command an error of the
test's choosing.

Gotchas from ``reference/mailservers.md`` §4 handled here: aiosmtpd only advertises
AUTH on an implicit-TLS listener with ``auth_require_tls=False``; its own
``auth_required=True`` would then warn (and pytest turns warnings into errors), so the
handler enforces authentication in ``handle_MAIL`` instead; ``session.ssl`` stays
``None`` on implicit TLS, so TLS is read from the transport's ``ssl_object``; and
aiosmtpd logs a deprecation line on every successful AUTH, so its ``mail.log`` logger
is muted while a server runs.

Run alone to see it work: ``python -m tests.servers.smtp``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509

from tests.servers.certs import LOOPBACK, write_test_pki

__all__ = [
    "PASSWORD",
    "TOKEN",
    "USER",
    "Captured",
    "SmtpServer",
    "SmtpTls",
    "make_smtp_tls",
    "silent_server",
    "smtp_server",
    "smtp_server_factory",
    "smtp_tls",
    "start_smtp_server",
]

USER = "agent@helpdesk.example"
PASSWORD = "s3cret-Passw0rd!"
TOKEN = "ya29.test-bearer-token-0123456789"

#: The name the server gives itself in its greeting and EHLO reply (no DNS lookup).
SERVER_NAME = "mx.test"
OK_250 = "250 2.0.0 OK"
DATA_250 = "250 2.0.0 Message accepted for delivery"
AUTH_REQUIRED_530 = "530 5.7.0 Authentication required"
STAGES = ("MAIL", "RCPT", "DATA")


@attrs.frozen
class SmtpTls:
    """A private CA and loopback server certificates signed by it.

    Args:
        ca_file: The CA to give the client as ``tls_ca_file``.
        cert_file: A server certificate for ``127.0.0.1`` and ``localhost``.
        key_file: Its key.
        other_cert_file: A certificate from the same CA for ``other.test`` only (for
            a host-name mismatch).
        other_key_file: Its key.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    other_cert_file: Path
    other_key_file: Path


def make_smtp_tls(folder: Path) -> SmtpTls:
    """Write a fresh CA and two server certificates (made with ``cryptography``) to ``folder``."""
    ca_file = write_test_pki(folder, {"server": LOOPBACK, "other": (x509.DNSName("other.test"),)})
    return SmtpTls(
        ca_file,
        folder / "server.pem",
        folder / "server.key",
        folder / "other.pem",
        folder / "other.key",
    )


@attrs.frozen
class Captured:
    """One message the server accepted, exactly as it arrived.

    Args:
        mail_from: The envelope sender (``MAIL FROM``).
        rcpt_tos: The envelope recipients (``RCPT TO``) the server accepted.
        raw: The message bytes as received after ``DATA`` (dot-unstuffed).
        auth_user: Who authenticated on the session, or ``None``.
        tls: True when the session was encrypted (STARTTLS or implicit TLS).
        mail_options: The ``MAIL FROM`` parameters (``SIZE=…``, ``BODY=8BITMIME`` …).
        session: Which connection it came on (equal for messages sent on one connection).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes = attrs.field(repr=False)
    auth_user: str | None
    tls: bool
    mail_options: tuple[str, ...] = ()
    session: int = 0


def _is_tls(server: SMTP) -> bool:
    # session.ssl is only set by STARTTLS; the transport knows about both kinds.
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    """aiosmtpd hooks: capture, authentication, error injection."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        owner = self._owner
        with owner.lock:
            owner.mail_from_seen.append(address)
        if owner.auth and not session.authenticated:
            return AUTH_REQUIRED_530
        failure = owner.take_failure("MAIL")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return OK_250

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refused = self._owner.refuse.get(address)
        if refused is not None:
            return refused
        failure = self._owner.take_failure("RCPT")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return OK_250

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self._owner
        failure = owner.take_failure("DATA")
        if failure is not None:
            return failure
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        auth = session.auth_data
        user = auth.login.decode() if isinstance(auth, LoginPassword) else auth
        message = Captured(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
            auth_user=user if isinstance(user, str) else None,
            tls=_is_tls(server),
            mail_options=tuple(envelope.mail_options),
            session=owner.serial(session),
        )
        with owner.lock:
            owner.messages.append(message)
        return DATA_250

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """The XOAUTH2 SASL mechanism, which aiosmtpd does not ship."""
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 bad base64")
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return _aborted()
            blob = answer
        fields = dict(
            part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if part
        )
        user = fields.get("user", "")
        bearer = fields.get("auth", "")
        self._owner.record_auth("XOAUTH2", user)
        if user == self._owner.username and bearer == f"Bearer {self._owner.token}":
            return AuthResult(success=True, auth_data=user)
        # Google's and Microsoft's behaviour: a JSON challenge, which the client answers
        # with an empty line, then the final 535.
        challenge = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"})
        await server.challenge_auth(challenge)
        return AuthResult(success=False, handled=False)


def _aborted() -> AuthResult:
    return AuthResult(success=False, handled=False, message="501 5.7.0 Auth aborted")


class _LoopbackController(Controller):
    """aiosmtpd's Controller bound to port 0: the real port is read before the first probe."""

    def _trigger_server(self) -> None:
        server = self.server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpServer:
    """A running aiosmtpd server and everything it saw.

    Args:
        mode: ``plain``, ``starttls`` or ``tls``.
        tls: The certificates (needed by ``starttls`` and ``tls``).
        auth: Offer AUTH and require it before ``MAIL``.
        exclude: AUTH mechanisms not to offer (e.g. ``("PLAIN",)``).
        cert: ``"server"`` (valid for 127.0.0.1) or ``"other"`` (for ``other.test``).
    """

    def __init__(
        self,
        mode: str,
        tls: SmtpTls | None = None,
        *,
        auth: bool = False,
        exclude: tuple[str, ...] = (),
        cert: str = "server",
    ) -> None:
        if mode not in ("plain", "starttls", "tls"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode != "plain" and tls is None:
            raise ValueError(f"mode {mode!r} needs certificates")
        self.mode = mode
        self.auth = auth
        self.username = USER
        self.password = PASSWORD
        self.token = TOKEN
        self.ca_file = tls.ca_file if tls is not None else None
        self.lock = threading.Lock()
        self.messages: list[Captured] = []
        self.mail_from_seen: list[str] = []
        self.auth_attempts: list[tuple[str, str]] = []
        #: Recipients always refused, with the reply to give.
        self.refuse: dict[str, str] = {}
        self._failures: collections.deque[tuple[str, str]] = collections.deque()
        self._sessions = 0
        self.host = "127.0.0.1"

        server_context: ssl.SSLContext | None = None
        if tls is not None:
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            if cert == "other":
                server_context.load_cert_chain(tls.other_cert_file, tls.other_key_file)
            else:
                server_context.load_cert_chain(tls.cert_file, tls.key_file)
        kwargs: dict[str, Any] = {
            "server_hostname": SERVER_NAME,
            "authenticator": self._authenticate,
            "auth_exclude_mechanism": list(exclude),
            # A probe or a silent test client must not hold the server for 5 minutes.
            "timeout": 10,
        }
        if mode == "starttls":
            assert server_context is not None
            kwargs.update(tls_context=server_context, require_starttls=True)
        elif mode == "tls":
            # Gotcha (1): on implicit TLS aiosmtpd advertises AUTH only with this.
            kwargs.update(ssl_context=server_context, auth_require_tls=False)
        elif auth:
            # A plain server offering AUTH in clear: the trap for a downgrading client.
            kwargs.update(auth_require_tls=False)
        self._controller = _LoopbackController(
            self._handler(), hostname=self.host, port=0, **kwargs
        )

    def _handler(self) -> _Handler:
        return _Handler(self)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._controller.port)

    def start(self) -> None:
        """Start the server and return only once an EHLO round trip succeeded."""
        self._controller.start()
        self.probe()

    def probe(self) -> None:
        """Connect, ``EHLO`` and ``QUIT`` with smtplib (the readiness check)."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        # Connecting in the constructor: smtplib takes the TLS server name from there.
        client: smtplib.SMTP
        if self.mode == "tls":
            client = smtplib.SMTP_SSL(
                self.host, self.port, local_hostname="probe.test", timeout=5, context=context
            )
        else:
            client = smtplib.SMTP(self.host, self.port, local_hostname="probe.test", timeout=5)
        with ExitStack() as stack:
            stack.callback(client.close)
            code, _ = client.ehlo()
            if code != 250:
                raise RuntimeError(f"SMTP test server answered EHLO with {code}")
            client.quit()

    def stop(self) -> None:
        """Stop the server and its thread."""
        self._controller.stop()

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        self.record_auth(mechanism, login)
        if login == self.username and password == self.password:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def serial(self, session: Session) -> int:
        """A number for ``session``'s connection, counted from 1 (ids of freed objects repeat)."""
        number = getattr(session, "test_serial", None)
        if number is None:
            with self.lock:
                self._sessions += 1
                number = self._sessions
            session.test_serial = number  # type: ignore[attr-defined]
        return int(number)

    def record_auth(self, mechanism: str, login: str) -> None:
        """Remember an AUTH attempt (mechanism, login), successful or not."""
        with self.lock:
            self.auth_attempts.append((mechanism, login))

    def fail_next(self, reply: str, *, at: str = "RCPT", count: int = 1) -> None:
        """Answer the next ``count`` ``at`` commands (MAIL, RCPT, DATA) with ``reply``."""
        if at not in STAGES:
            raise ValueError(f"at must be one of {STAGES}")
        with self.lock:
            self._failures.extend([(at, reply)] * count)

    def take_failure(self, stage: str) -> str | None:
        """The injected reply for this ``stage`` command, if one is armed (used once)."""
        with self.lock:
            for index, (at, reply) in enumerate(self._failures):
                if at == stage:
                    del self._failures[index]
                    return reply
        return None


def start_smtp_server(
    mode: str,
    tls: SmtpTls | None = None,
    *,
    auth: bool = False,
    exclude: tuple[str, ...] = (),
    cert: str = "server",
) -> SmtpServer:
    """Start an :class:`SmtpServer` (see its arguments); the caller must ``stop()`` it."""
    server = SmtpServer(mode, tls, auth=auth, exclude=exclude, cert=cert)
    server.start()
    return server


@contextmanager
def _quiet_aiosmtpd() -> Iterator[None]:
    # Gotcha (2): aiosmtpd logs "Session.login_data is deprecated" on every AUTH, and
    # its INFO lines would crowd the log output of the tests.
    logger = logging.getLogger("mail.log")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


@contextmanager
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections (the kernel does) and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()
        yield str(host), int(port)


@pytest.fixture(scope="session")
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> SmtpTls:
    """A private CA and loopback server certificates, made once per test session."""
    return make_smtp_tls(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server_factory(smtp_tls: SmtpTls) -> Iterator[Callable[..., SmtpServer]]:
    """Start SMTP servers (``factory(mode, auth=…, exclude=…, cert=…)``), stopped after the test."""
    servers: list[SmtpServer] = []

    def factory(
        mode: str, *, auth: bool = False, exclude: tuple[str, ...] = (), cert: str = "server"
    ) -> SmtpServer:
        server = start_smtp_server(
            mode, smtp_tls if mode != "plain" else None, auth=auth, exclude=exclude, cert=cert
        )
        servers.append(server)
        return server

    with _quiet_aiosmtpd():
        try:
            yield factory
        finally:
            for server in servers:
                server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A STARTTLS-required server with AUTH (the usual submission server)."""
    return smtp_server_factory("starttls", auth=True)


if __name__ == "__main__":  # pragma: no cover - a manual check
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        files = make_smtp_tls(Path(folder))
        for kind in ("plain", "starttls", "tls"):
            running = start_smtp_server(kind, files, auth=kind != "plain")
            print(kind, running.host, running.port, "ready")
            running.stop()
