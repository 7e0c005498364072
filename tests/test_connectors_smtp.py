"""SmtpTransport against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from halomail.backends.base import MailTransport, OutgoingEmail
from halomail.backends.smtp import RecipientsRefusedError, SmtpTransport
from halomail.config.loader import OutgoingSettings
from halomail.errors import ConfigError, PermanentTransportError, TransientTransportError
from halomail.outbound.outbox import SenderIdentity, compose
from halomail.tickets.models import OutboxMail, OutboxStatus
from tests.servers.smtp import (
    PASSWORD,
    TOKEN,
    USER,
    SmtpServer,
    SmtpTls,
    silent_server,
)

Factory = Callable[..., SmtpServer]
SENDER = SenderIdentity("support@helpdesk.example", "Support Desk")
WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def _email(
    to: tuple[str, ...] = ("alice@customer.example",),
    *,
    subject: str = "[ID:42] Printer is jammed",
    text: str = "We have logged your request.\n\n.A line that starts with a dot.\n",
) -> OutgoingEmail:
    mail = OutboxMail(
        id=1,
        message_id="halomail.42.0011223344556677.abcdefabcdef@helpdesk.example",
        to=to,
        subject=subject,
        text=text,
        status=OutboxStatus.PENDING,
        created_at=WHEN,
        ticket_id=42,
        in_reply_to="msg-1@customer.example",
        references=("msg-1@customer.example",),
    )
    return compose(mail, SENDER, loop_token="loop-token", now=WHEN)


def _transport(server: SmtpServer, **kwargs: object) -> SmtpTransport:
    options: dict[str, object] = {
        "security": server.mode if server.mode != "plain" else "none",
        "tls_ca_file": server.ca_file,
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    if server.auth and "token_provider" not in kwargs:
        options.update(username=USER, password=PASSWORD)
    options.update(kwargs)
    return SmtpTransport(server.host, server.port, **options)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _RotatingTokens:
    """A token provider whose first token was revoked early."""

    def __init__(self) -> None:
        self.tokens = ["revoked-token-value", TOKEN]
        self.invalidated = 0

    def token(self) -> str:
        return self.tokens[0]

    def invalidate(self) -> None:
        self.invalidated += 1
        self.tokens.pop(0)


class TestDelivery:
    def test_starttls_and_auth_deliver_the_exact_bytes(self, smtp_server_factory: Factory) -> None:
        """Over STARTTLS with AUTH PLAIN the server gets exactly the composed bytes and envelope."""
        server = smtp_server_factory("starttls", auth=True)
        email = _email(("alice@customer.example", "bob@customer.example"))

        _transport(server).send(email)

        assert len(server.messages) == 1
        got = server.messages[0]
        assert got.raw == email.data
        assert got.mail_from == "support@helpdesk.example"
        assert got.rcpt_tos == ("alice@customer.example", "bob@customer.example")
        assert got.tls is True
        assert got.auth_user == USER
        assert got.mail_options == (f"SIZE={len(email.data)}",)
        assert server.auth_attempts == [("PLAIN", USER)]
        parsed = message_from_bytes(got.raw, policy=policy.default)
        assert parsed["Subject"] == "[ID:42] Printer is jammed"
        assert parsed["Message-ID"] == f"<{email.message_id}>"
        assert parsed["In-Reply-To"] == "<msg-1@customer.example>"
        assert parsed["Auto-Submitted"] == "auto-replied"
        assert b"\r\n.A line that starts with a dot." in got.raw

    def test_implicit_tls_and_auth_deliver(self, smtp_server_factory: Factory) -> None:
        """Over implicit TLS (SMTPS) with AUTH the message arrives whole and encrypted."""
        server = smtp_server_factory("tls", auth=True)
        email = _email()

        _transport(server).send(email)

        assert [(m.raw, m.tls, m.auth_user) for m in server.messages] == [(email.data, True, USER)]

    def test_auth_login_is_used_when_plain_is_not_offered(
        self, smtp_server_factory: Factory
    ) -> None:
        """A server offering only AUTH LOGIN (and XOAUTH2) gets a LOGIN exchange that succeeds."""
        server = smtp_server_factory("starttls", auth=True, exclude=("PLAIN",))

        _transport(server).send(_email())

        assert server.auth_attempts == [("LOGIN", USER)]
        assert [m.auth_user for m in server.messages] == [USER]

    def test_a_non_ascii_password_logs_in(self, smtp_server_factory: Factory) -> None:
        """A password with non-ASCII characters is sent as UTF-8 (RFC 4616) and accepted."""
        server = smtp_server_factory("tls", auth=True)
        server.password = "pässwörd-ü€"

        _transport(server, password="pässwörd-ü€").send(_email())

        assert [m.auth_user for m in server.messages] == [USER]

    def test_xoauth2_with_a_callable_token(self, smtp_server_factory: Factory) -> None:
        """XOAUTH2 with a bearer token from a callable authenticates and delivers."""
        server = smtp_server_factory("starttls", auth=True)

        _transport(server, username=USER, token_provider=lambda: TOKEN).send(_email())

        assert server.auth_attempts == [("XOAUTH2", USER)]
        assert [(m.auth_user, m.tls) for m in server.messages] == [(USER, True)]

    def test_xoauth2_asks_once_for_a_fresh_token_when_refused(
        self, smtp_server_factory: Factory
    ) -> None:
        """A refused token is invalidated and the fresh one is tried on the same connection."""
        server = smtp_server_factory("tls", auth=True)
        provider = _RotatingTokens()

        _transport(server, username=USER, token_provider=provider).send(_email())

        assert provider.invalidated == 1
        assert server.auth_attempts == [("XOAUTH2", USER), ("XOAUTH2", USER)]
        assert len(server.messages) == 1

    def test_plain_smtp_without_auth(self, smtp_server_factory: Factory) -> None:
        """With security 'none' and no login the message goes out in clear, unauthenticated."""
        server = smtp_server_factory("plain")
        email = _email()

        _transport(server).send(email)

        assert [(m.raw, m.tls, m.auth_user) for m in server.messages] == [(email.data, False, None)]
        assert server.auth_attempts == []

    def test_an_8bit_message_is_declared_8bitmime(self, smtp_server_factory: Factory) -> None:
        """Raw 8-bit bytes are sent unchanged with BODY=8BITMIME when the server offers it."""
        server = smtp_server_factory("plain")
        data = "Subject: Grüße\r\n\r\nDas Gerät läuft wieder.\r\n".encode()
        email = OutgoingEmail(
            "m-8bit@helpdesk.example", "a@helpdesk.example", ("b@x.example",), data
        )

        _transport(server).send(email)

        assert [(m.raw, m.mail_options) for m in server.messages] == [
            (data, (f"SIZE={len(data)}", "BODY=8BITMIME"))
        ]

    def test_one_connection_serves_a_pass(self, smtp_server_factory: Factory) -> None:
        """Inside ``with transport:`` sends share one connection; outside, each has its own."""
        server = smtp_server_factory("starttls", auth=True)
        transport = _transport(server)

        with transport:
            transport.send(_email())
            transport.send(_email())
        transport.send(_email())
        transport.send(_email())

        sessions = [m.session for m in server.messages]
        assert sessions[0] == sessions[1]
        assert len({sessions[1], sessions[2], sessions[3]}) == 3
        assert server.auth_attempts == [("PLAIN", USER)] * 3

    def test_the_transport_satisfies_the_protocol(self, smtp_server_factory: Factory) -> None:
        """SmtpTransport is a MailTransport, and its repr shows no password."""
        transport = _transport(smtp_server_factory("plain"), username=USER, password=PASSWORD)

        assert isinstance(transport, MailTransport)
        assert PASSWORD not in repr(transport)


class TestFailures:
    def test_wrong_password_is_permanent_and_never_shown(
        self, smtp_server_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 535 is permanent; neither the message nor any log line holds the password."""
        caplog.set_level(logging.DEBUG)
        server = smtp_server_factory("starttls", auth=True)
        wrong = "Wr0ng-Secret-Passw0rd"

        with pytest.raises(PermanentTransportError) as caught:
            _transport(server, password=wrong).send(_email())

        text = str(caught.value)
        assert "535 5.7.8 Authentication credentials invalid" in text
        assert "AUTH PLAIN as 'agent@helpdesk.example'" in text
        encoded = base64.b64encode(f"\0{USER}\0{wrong}".encode()).decode()
        for secret in (wrong, encoded):
            assert secret not in text
            assert secret not in caplog.text
        assert server.messages == []
        assert server.mail_from_seen == []

    def test_wrong_token_is_permanent_and_never_shown(
        self, smtp_server_factory: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A refused XOAUTH2 token is permanent and appears in neither the error nor the logs."""
        caplog.set_level(logging.DEBUG)
        server = smtp_server_factory("tls", auth=True)
        token = "ya29.revoked-bearer-token"

        with pytest.raises(PermanentTransportError, match=r"AUTH XOAUTH2 .* 535 5\.7\.8") as caught:
            _transport(server, username=USER, token_provider=lambda: token).send(_email())

        assert token not in str(caught.value)
        assert token not in caplog.text
        assert server.messages == []

    def test_a_server_echoing_the_password_does_not_leak_it(
        self, smtp_server_factory: Factory
    ) -> None:
        """A reply that quotes our password is scrubbed before it becomes the error message."""
        server = smtp_server_factory("tls", auth=True)
        server.fail_next(f"554 5.7.1 rejected for {USER} with password {PASSWORD}", at="MAIL")

        with pytest.raises(PermanentTransportError) as caught:
            _transport(server).send(_email())

        assert str(caught.value).endswith(f"554 5.7.1 rejected for {USER} with password [secret]")
        assert PASSWORD not in str(caught.value)

    def test_451_is_transient_and_a_retry_sends_once(self, smtp_server_factory: Factory) -> None:
        """A 451 after DATA raises a transient error; the retry delivers exactly one copy."""
        server = smtp_server_factory("starttls", auth=True)
        server.fail_next("451 4.3.0 try later", at="DATA")
        transport = _transport(server)
        email = _email()

        with pytest.raises(TransientTransportError, match=r"DATA failed: 451 4\.3\.0 try later"):
            transport.send(email)
        assert server.messages == []
        transport.send(email)

        assert [m.raw for m in server.messages] == [email.data]

    def test_451_on_every_recipient_is_transient(self, smtp_server_factory: Factory) -> None:
        """When every recipient is refused with a 4xx, nobody got the mail and retrying is safe."""
        server = smtp_server_factory("plain")
        server.fail_next("451 4.7.1 greylisted, come back later", at="RCPT")

        with pytest.raises(TransientTransportError, match=r"451 4\.7\.1 greylisted"):
            _transport(server).send(_email())
        assert server.messages == []

    def test_550_is_permanent_with_the_code(self, smtp_server_factory: Factory) -> None:
        """A 550 for the only recipient is permanent and the message names the code and text."""
        server = smtp_server_factory("starttls", auth=True)
        server.refuse["nobody@customer.example"] = "550 5.1.1 no such user"

        with pytest.raises(PermanentTransportError) as caught:
            _transport(server).send(_email(("nobody@customer.example",)))

        assert "nobody@customer.example: 550 5.1.1 no such user" in str(caught.value)
        assert not isinstance(caught.value, TransientTransportError)
        assert server.messages == []

    def test_a_partly_refused_mail_is_permanent(self, smtp_server_factory: Factory) -> None:
        """One refused recipient among accepted ones raises permanently, naming both sides."""
        server = smtp_server_factory("plain")
        server.refuse["nobody@customer.example"] = "550 5.1.1 no such user"

        with pytest.raises(RecipientsRefusedError) as caught:
            _transport(server).send(_email(("alice@customer.example", "nobody@customer.example")))

        assert caught.value.accepted == ("alice@customer.example",)
        assert caught.value.refused == {"nobody@customer.example": (550, "5.1.1 no such user")}
        assert [m.rcpt_tos for m in server.messages] == [("alice@customer.example",)]

    def test_a_rejected_sender_is_permanent(self, smtp_server_factory: Factory) -> None:
        """A 553 to MAIL FROM raises permanently with the sender named."""
        server = smtp_server_factory("plain")
        server.fail_next("553 5.7.1 sender not allowed", at="MAIL")

        with pytest.raises(PermanentTransportError, match=r"MAIL FROM:<support@helpdesk\.example>"):
            _transport(server).send(_email())
        assert server.messages == []

    def test_no_downgrade_when_starttls_is_not_offered(self, smtp_server_factory: Factory) -> None:
        """A server without STARTTLS gets no AUTH and no MAIL FROM: the transport refuses first."""
        server = smtp_server_factory("plain", auth=True)  # offers AUTH in clear: the trap
        transport = SmtpTransport(
            server.host,
            server.port,
            security="starttls",
            username=USER,
            password=PASSWORD,
            timeout=5.0,
        )

        with pytest.raises(PermanentTransportError, match="does not offer STARTTLS"):
            transport.send(_email())

        assert server.auth_attempts == []
        assert server.mail_from_seen == []
        assert server.messages == []

    def test_an_untrusted_certificate_stops_starttls(self, smtp_server_factory: Factory) -> None:
        """Without our CA the STARTTLS handshake fails and nothing, not even AUTH, is sent."""
        server = smtp_server_factory("starttls", auth=True)

        with pytest.raises(PermanentTransportError, match="certificate is not trusted"):
            _transport(server, tls_ca_file=None).send(_email())

        assert server.auth_attempts == []
        assert server.mail_from_seen == []

    def test_an_untrusted_certificate_stops_implicit_tls(
        self, smtp_server_factory: Factory
    ) -> None:
        """Without our CA the SMTPS handshake fails permanently."""
        server = smtp_server_factory("tls", auth=True)

        with pytest.raises(PermanentTransportError, match="certificate is not trusted"):
            _transport(server, tls_ca_file=None).send(_email())
        assert server.auth_attempts == []

    def test_a_certificate_for_another_host_is_refused(self, smtp_server_factory: Factory) -> None:
        """A trusted certificate issued for another host name fails the host-name check."""
        server = smtp_server_factory("starttls", auth=True, cert="other")

        with pytest.raises(PermanentTransportError, match="IP address mismatch"):
            _transport(server).send(_email())
        assert server.auth_attempts == []

    def test_a_silent_server_times_out_as_transient(self) -> None:
        """A server that accepts and never answers raises a transient error within the timeout."""
        with silent_server() as (host, port):
            transport = SmtpTransport(host, port, security="none", timeout=0.3)
            start = time.monotonic()
            with pytest.raises(TransientTransportError, match="timed out"):
                transport.send(_email())
            elapsed = time.monotonic() - start

        assert 0.25 < elapsed < 1.5

    def test_a_refused_connection_is_transient(self) -> None:
        """Nobody listening on the port is a transient failure naming the server."""
        port = _free_port()

        with pytest.raises(TransientTransportError, match=f"127.0.0.1:{port}: connect: .*refused"):
            SmtpTransport("127.0.0.1", port, security="none", timeout=2).send(_email())

    def test_a_line_break_in_an_address_is_refused_before_connecting(self) -> None:
        """A recipient holding CR/LF (SMTP command injection) is refused without a connection."""
        email = OutgoingEmail(
            "m@x", "a@helpdesk.example", ("b@x.example>\r\nRCPT TO:<c@evil.example",), b"x\r\n"
        )

        with pytest.raises(PermanentTransportError, match="invalid envelope address"):
            SmtpTransport("127.0.0.1", _free_port(), security="none").send(email)

    def test_a_message_over_the_server_size_limit_is_permanent(
        self, smtp_server_factory: Factory
    ) -> None:
        """A message larger than the server's SIZE is refused before MAIL FROM."""
        server = smtp_server_factory("plain")
        big = OutgoingEmail("m@x", "a@helpdesk.example", ("b@x.example",), b"x" * (33554432 + 1))

        with pytest.raises(PermanentTransportError, match="the server accepts at most 33554432"):
            _transport(server).send(big)
        assert server.mail_from_seen == []


class TestCheckAndSettings:
    def test_check_negotiates_everything_and_sends_nothing(
        self, smtp_server_factory: Factory
    ) -> None:
        """check() reports TLS, the login and the server's extensions without sending mail."""
        server = smtp_server_factory("starttls", auth=True)

        result = _transport(server).check()

        assert result.host == "127.0.0.1"
        assert result.port == server.port
        assert result.tls_version in ("TLSv1.2", "TLSv1.3")
        assert result.authenticated_as == USER
        assert result.mechanism == "PLAIN"
        assert "AUTH" in result.extensions
        assert "STARTTLS" not in result.extensions  # asked again after TLS (RFC 3207)
        assert result.max_size == 33554432
        assert server.auth_attempts == [("PLAIN", USER)]
        assert server.messages == []

    def test_from_settings_with_a_password(self, smtp_server_factory: Factory) -> None:
        """An [outgoing] table with host, port, security, CA and password sends over STARTTLS."""
        server = smtp_server_factory("starttls", auth=True)
        assert server.ca_file is not None
        settings = OutgoingSettings(
            host=server.host,
            port=server.port,
            security="starttls",
            tls_ca_file=server.ca_file,
            username=USER,
            password=PASSWORD,
            timeout=5.0,
            extra={"local_hostname": "client.test"},
        )

        SmtpTransport.from_settings(settings).send(_email())

        assert [(m.auth_user, m.tls) for m in server.messages] == [(USER, True)]

    def test_from_settings_with_an_xoauth2_token(self, smtp_server_factory: Factory) -> None:
        """``auth = "xoauth2"`` with a static token logs in with XOAUTH2, not the password."""
        server = smtp_server_factory("tls", auth=True)
        settings = OutgoingSettings(
            host=server.host,
            port=server.port,
            security="tls",
            tls_ca_file=server.ca_file,
            username=USER,
            password="not-used",
            extra={"auth": "xoauth2", "token": TOKEN},
        )

        SmtpTransport.from_settings(settings).send(_email())

        assert server.auth_attempts == [("XOAUTH2", USER)]
        assert len(server.messages) == 1

    def test_from_settings_defaults_the_port(self) -> None:
        """A blank port is 25, or 465 with implicit TLS."""
        plain = SmtpTransport.from_settings(OutgoingSettings(host="smtp.example", security="none"))
        tls = SmtpTransport.from_settings(OutgoingSettings(host="smtp.example", security="tls"))

        assert (plain.port, tls.port) == (25, 465)
        assert SmtpTransport("smtp.example", security="starttls").port == 25

    @pytest.mark.parametrize(
        ("settings", "key"),
        [
            (OutgoingSettings(host=None), "mailboxes[1].outgoing.host"),
            (OutgoingSettings(transport="maildir", host="h"), "mailboxes[1].outgoing.transport"),
            (OutgoingSettings(host="h", password="pw"), "mailboxes[1].outgoing.username"),
            (OutgoingSettings(host="h", username="u"), "mailboxes[1].outgoing.password"),
            (OutgoingSettings(host="h", security="ssl"), "mailboxes[1].outgoing.security"),
        ],
    )
    def test_from_settings_refuses_incomplete_settings(
        self, settings: OutgoingSettings, key: str
    ) -> None:
        """Missing or contradictory keys raise ConfigError with the key path."""
        with pytest.raises(ConfigError) as caught:
            SmtpTransport.from_settings(settings, key_path="mailboxes[1].outgoing")
        assert caught.value.key_path == key

    def test_an_unreadable_ca_file_is_permanent(self, tmp_path: Path) -> None:
        """A tls_ca_file that cannot be read is a permanent, named failure."""
        missing = tmp_path / "no-such-ca.pem"
        transport = SmtpTransport("127.0.0.1", _free_port(), tls_ca_file=missing)

        with pytest.raises(PermanentTransportError, match="cannot read tls_ca_file"):
            transport.send(_email())

    def test_the_constructor_refuses_contradictions(self) -> None:
        """Both a password and a token, or an unknown security, are refused at once."""
        with pytest.raises(ValueError, match="either a password or a token_provider"):
            SmtpTransport("h", username="u", password="p", token_provider=lambda: "t")
        with pytest.raises(ValueError, match="security must be one of"):
            SmtpTransport("h", security="ssl")
        with pytest.raises(ValueError, match="line breaks"):
            SmtpTransport("h", username="u\r\nMAIL FROM:<x>", password="p")


def test_fixtures_are_importable(smtp_tls: SmtpTls) -> None:
    """The session CA exists on disk for clients to trust."""
    assert smtp_tls.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
