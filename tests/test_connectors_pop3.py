"""The POP3 connector against a real Dovecot, with the processor, and against hostile servers."""

from __future__ import annotations

import contextlib
import json
import logging
import poplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import MicrosoftTokenProvider, StaticTokenProvider
from halomail.backends.base import Disposition
from halomail.backends.memory import MemoryTransport
from halomail.backends.pop3 import Pop3Connector
from halomail.config.loader import MailboxSettings
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    TransientConnectorError,
)
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from tests.conftest import HELPDESK, LOOP_TOKEN, make_email
from tests.servers.dovecot import Account, Dovecot
from tests.servers.token_endpoint import TokenEndpoint

# The Dovecot fixture, imported so that pytest finds it (until conftest loads it as a plugin).

# -- helpers ------------------------------------------------------------------------


def _email(n: int, **options: str) -> bytes:
    return make_email(
        subject=f"Problem number {n}",
        message_id=f"<pop3-{n}-{time.time_ns()}@customer.example>",
        **options,
    )


def _connector(dovecot: Dovecot, account: Account, **options: object) -> Pop3Connector:
    values: dict[str, object] = {
        "port": dovecot.pop3_port,
        "security": "none",
        "username": account.username,
        "password": account.password,
        "tls_ca_file": dovecot.ca_file,
        "timeout": 5.0,
    }
    values.update(options)
    if values.get("token_provider") is not None:
        values.pop("password", None)
    port = values.pop("port")
    return Pop3Connector("Support", dovecot.host, port, **values)  # type: ignore[arg-type]


def _processor(repository: InMemoryTicketRepository, *connectors: Pop3Connector) -> MailProcessor:
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
    )
    mailboxes = [Mailbox(c) for c in connectors]
    return MailProcessor(repository, mailboxes, settings, transport=MemoryTransport())


def _stat(dovecot: Dovecot, account: Account) -> tuple[int, int]:
    """(messages, octets) as a separate POP3S session sees them."""
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    session = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=context, timeout=5)
    try:
        session.user(account.username)
        session.pass_(account.password)
        return session.stat()
    finally:
        session.quit()


class _Proxy:
    """A TCP relay to a POP3 server that records the client's lines and injects faults.

    ``drop_on``: when a client line starts with it, both sides are cut without
    forwarding it. ``strip``: removed from everything the server sends.
    """

    def __init__(self, port: int, *, drop_on: bytes | None = None, strip: bytes | None = None):
        self.upstream = port
        self.drop_on = drop_on
        self.strip = strip
        self.lines: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def commands(self) -> list[str]:
        """The client's command verbs with their first argument, e.g. ``RETR 2``."""
        return [" ".join(line.decode("latin-1").split()[:2]) for line in self.lines]

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, server]
            threading.Thread(target=self._from_client, args=(client, server), daemon=True).start()
            threading.Thread(target=self._from_server, args=(server, client), daemon=True).start()

    def _from_client(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                *lines, pending = pending.split(b"\r\n")
                for line in lines:
                    self.lines.append(line)
                    if self.drop_on is not None and line.upper().startswith(self.drop_on):
                        _cut(client, server)
                        return
                server.sendall(data)
        except OSError:
            pass
        _cut(client, server)

    def _from_server(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                if self.strip is not None:
                    data = data.replace(self.strip, b"")
                client.sendall(data)
        except OSError:
            pass
        _cut(client, server)


def _cut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A fresh, empty mailbox on the shared Dovecot."""
    return dovecot.new_account()


@pytest.fixture
def repository() -> InMemoryTicketRepository:
    """An empty ticket repository."""
    return InMemoryTicketRepository()


@pytest.fixture
def proxies(dovecot: Dovecot) -> Iterator[Callable[..., _Proxy]]:
    """Build relays to Dovecot's plain POP3 port; all closed at the end."""
    made: list[_Proxy] = []

    def make(**options: bytes | None) -> _Proxy:
        proxy = _Proxy(dovecot.pop3_port, **options)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, to look for leaked secrets."""
    caplog.set_level(logging.DEBUG)
    return caplog


# -- end to end -----------------------------------------------------------------------


class TestEndToEnd:
    def test_three_messages_become_three_tickets_and_are_deleted_over_pop3s(
        self, dovecot: Dovecot, account: Account, repository: InMemoryTicketRepository
    ) -> None:
        """Over POP3S, 3 emails give 3 tickets, the server is emptied, and a rerun adds nothing."""
        for n in range(3):
            dovecot.append(account, _email(n))
        connector = _connector(dovecot, account, security="tls", port=dovecot.pop3s_port)
        processor = _processor(repository, connector)
        report = processor.run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
        assert report.mailboxes[0].error is None
        assert sorted(t.summary for t in repository.list_tickets()) == [
            "Problem number 0",
            "Problem number 1",
            "Problem number 2",
        ]
        assert _stat(dovecot, account) == (0, 0)
        again = processor.run_once()
        assert again.outcomes == ()
        assert again.mailboxes[0].error is None
        assert len(repository.list_tickets()) == 3

    def test_stls_upgrades_before_the_password_is_sent(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        proxies: Callable[..., _Proxy],
    ) -> None:
        """With STLS, nothing but CAPA and STLS crosses the wire in clear; the mail is read."""
        dovecot.append(account, _email(1))
        proxy = proxies()
        connector = _connector(dovecot, account, security="starttls", port=proxy.port)
        report = _processor(repository, connector).run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
        assert proxy.lines[:2] == [b"CAPA", b"STLS"]
        assert not any(account.password.encode() in line for line in proxy.lines)
        assert _stat(dovecot, account) == (0, 0)

    def test_bytes_arrive_exactly_with_long_lines_and_leading_dots(
        self, dovecot: Dovecot, account: Account
    ) -> None:
        """RETR returns the stored bytes: lines over 2,048 bytes and dot-stuffed lines intact."""
        raw = make_email(body="." + "x" * 5000 + "\n..two dots\n.\nend\n")
        dovecot.append(account, raw)
        connector = _connector(dovecot, account)
        try:
            (fetched,) = list(connector.fetch())
        finally:
            connector.close()
        assert fetched.raw == raw
        assert fetched.too_large is False
        assert fetched.size == len(raw)
        assert len(fetched.ref) == 16  # Dovecot's %08Xu%08Xv UIDL

    def test_a_quarantined_email_is_deleted_because_its_bytes_are_kept(
        self, dovecot: Dovecot, account: Account, repository: InMemoryTicketRepository
    ) -> None:
        """A quarantined email's bytes are in the quarantine, so the server copy is deleted."""
        raw = make_email(sender="not an address at all", message_id="<q-1@customer.example>")
        dovecot.append(account, raw)
        report = _processor(repository, _connector(dovecot, account)).run_once()
        (outcome,) = report.outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.QUARANTINED, "unparseable-sender")
        (entry,) = repository.list_quarantine()
        assert entry.raw == raw
        assert _stat(dovecot, account) == (0, 0)


# -- security and authentication --------------------------------------------------------


class TestSecurity:
    def test_a_stripped_stls_capability_stops_before_the_password(
        self, dovecot: Dovecot, account: Account, proxies: Callable[..., _Proxy]
    ) -> None:
        """A relay that hides STLS (a downgrade attack) gets an error and never the password."""
        proxy = proxies(strip=b"STLS\r\n")
        connector = _connector(dovecot, account, security="starttls", port=proxy.port)
        with pytest.raises(ConnectorError, match=r"refused STLS.*not continuing without TLS"):
            list(connector.fetch())
        connector.close()
        assert proxy.commands() == ["CAPA"]

    def test_an_untrusted_certificate_fails_the_handshake_and_nothing_is_sent(
        self, dovecot: Dovecot, account: Account, proxies: Callable[..., _Proxy]
    ) -> None:
        """Without the server's CA, STLS fails verification; USER/PASS are never sent."""
        proxy = proxies()
        connector = _connector(
            dovecot,
            account,
            security="starttls",
            port=proxy.port,
            ssl_context=ssl.create_default_context(),  # system CAs only
        )
        with pytest.raises(ConnectorError, match=r"TLS with .* failed .*CERTIFICATE_VERIFY_FAILED"):
            list(connector.fetch())
        connector.close()
        assert proxy.commands()[:2] == ["CAPA", "STLS"]
        assert not any(line.startswith((b"USER", b"PASS")) for line in proxy.lines)

    def test_a_wrong_password_is_an_authentication_error_without_the_secret(
        self, dovecot: Dovecot, account: Account, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        """A refused password raises AuthenticationError naming the user, not the password."""
        wrong = "Wrong-Password-42!"
        connector = _connector(dovecot, account, password=wrong)
        with pytest.raises(AuthenticationError) as caught:
            list(connector.fetch())
        connector.close()
        message = str(caught.value)
        assert message.startswith(f"Support: {dovecot.host} refused the username or password")
        assert account.username in message
        assert "[AUTH]" in message
        assert wrong not in message + debug_logs.text
        assert account.password not in message + debug_logs.text

    def test_a_closed_port_is_transient(self, dovecot: Dovecot, account: Account) -> None:
        """A refused connection is TransientConnectorError: the mailbox is retried later."""
        with socket.create_server(("127.0.0.1", 0)) as placeholder:
            port = placeholder.getsockname()[1]
        connector = _connector(dovecot, account, port=port)
        with pytest.raises(TransientConnectorError, match=r"cannot connect to 127\.0\.0\.1"):
            list(connector.fetch())


class TestOAuth:
    @pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
    def test_a_granted_token_logs_in(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        mechanism: str,
    ) -> None:
        """A token the introspection endpoint grants logs in with the SASL mechanism chosen."""
        token = f"tok-{mechanism}-{account.username}"
        dovecot.introspection.grant(token, account.username)
        dovecot.append(account, _email(1))
        connector = _connector(
            dovecot,
            account,
            token_provider=StaticTokenProvider(token),
            sasl_mechanism=mechanism,
        )
        calls = dovecot.introspection.calls
        report = _processor(repository, connector).run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
        assert dovecot.introspection.calls == calls + 1
        assert _stat(dovecot, account) == (0, 0)

    def test_a_token_from_msal_logs_in_and_is_reused_next_run(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        token_endpoint: TokenEndpoint,
    ) -> None:
        """The Microsoft provider's token logs in over XOAUTH2; the next run reuses it."""
        token_endpoint.register_client("app-id", secret="app-secret")
        provider = MicrosoftTokenProvider(
            tenant_id=token_endpoint.tenant,
            client_id="app-id",
            client_secret="app-secret",
            authority=token_endpoint.authority,
            verify=str(token_endpoint.ca_file),
        )
        token = provider.token()
        dovecot.introspection.grant(token, account.username)
        dovecot.append(account, _email(1))
        processor = _processor(repository, _connector(dovecot, account, token_provider=provider))
        assert [o.outcome for o in processor.run_once().outcomes] == [Outcome.CREATED]
        dovecot.append(account, _email(2))
        assert [o.outcome for o in processor.run_once().outcomes] == [Outcome.CREATED]
        assert len(token_endpoint.token_requests()) == 1
        assert _stat(dovecot, account) == (0, 0)

    def test_a_revoked_token_fails_only_its_mailbox(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        debug_logs: pytest.LogCaptureFixture,
    ) -> None:
        """F2: one mailbox's revoked token fails it alone; the other mailbox's mail is ticketed."""
        token = f"tok-revoked-{account.username}"
        dovecot.introspection.grant(token, account.username)
        dovecot.introspection.revoke(token)
        dovecot.append(account, _email(1))
        other = dovecot.new_account()
        dovecot.append(other, _email(2))
        revoked = _connector(dovecot, account, token_provider=StaticTokenProvider(token))
        working = Pop3Connector(
            "Sales",
            dovecot.host,
            dovecot.pop3_port,
            security="none",
            username=other.username,
            password=other.password,
        )
        report = _processor(repository, revoked, working).run_once()
        failed, succeeded = report.mailboxes
        assert failed.name == "Support"
        assert failed.outcomes == ()
        assert failed.error is not None
        assert failed.error.startswith("AuthenticationError: Support: ")
        assert "refused the OAuth2 token (XOAUTH2)" in failed.error
        assert [o.outcome for o in succeeded.outcomes] == [Outcome.CREATED]
        assert _stat(dovecot, account)[0] == 1
        assert _stat(dovecot, other) == (0, 0)
        assert token not in failed.error
        for secret in (token, account.password, other.password):
            assert secret not in debug_logs.text

    def test_a_token_provider_is_asked_again_after_a_rejection(
        self, dovecot: Dovecot, account: Account
    ) -> None:
        """A token refused at login is invalidated and a fresh one is tried once."""
        dovecot.introspection.grant("tok-fresh", account.username)

        class Rotating:
            def __init__(self) -> None:
                self.tokens = ["tok-stale", "tok-fresh"]
                self.invalidated = 0

            def token(self) -> str:
                return self.tokens[0]

            def invalidate(self) -> None:
                self.invalidated += 1
                self.tokens.pop(0)

        provider = Rotating()
        connector = _connector(dovecot, account, token_provider=provider)
        try:
            assert connector.list_refs() == []
        finally:
            connector.close()
        assert provider.invalidated == 1


# -- size limits and hostile servers ---------------------------------------------------


class TestLimits:
    def test_a_too_large_email_is_quarantined_without_retr_and_stays(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        proxies: Callable[..., _Proxy],
    ) -> None:
        """An email over the limit is quarantined from its LIST size, never read nor deleted."""
        dovecot.append(account, _email(1))
        dovecot.append(account, _email(2, body="y" * 20_000))
        proxy = proxies()
        connector = _connector(dovecot, account, port=proxy.port, max_message_bytes=5_000)
        processor = _processor(repository, connector)
        report = processor.run_once()
        assert [(o.outcome, o.reason) for o in report.outcomes] == [
            (Outcome.CREATED, None),
            (Outcome.QUARANTINED, "too-large"),
        ]
        assert "RETR 1" in proxy.commands()
        assert "RETR 2" not in proxy.commands()
        assert proxy.commands().count("DELE 1") == 1
        assert "DELE 2" not in proxy.commands()
        remaining, octets = _stat(dovecot, account)
        assert remaining == 1
        assert octets > 20_000
        proxy.lines.clear()
        again = processor.run_once()
        assert [(o.outcome, o.reason) for o in again.outcomes] == [
            (Outcome.QUARANTINED, "too-large")
        ]
        assert len(repository.list_quarantine()) == 1
        assert not any(c.startswith(("RETR", "DELE")) for c in proxy.commands())


class TestDeletionSafety:
    def test_a_connection_lost_before_quit_keeps_the_mail_and_makes_no_duplicate(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        proxies: Callable[..., _Proxy],
    ) -> None:
        """F6: cut after DELE and before QUIT, the server keeps the mail; the rerun skips it."""
        dovecot.append(account, _email(1))
        dovecot.append(account, _email(2))
        cutting = proxies(drop_on=b"QUIT")
        processor = _processor(repository, _connector(dovecot, account, port=cutting.port))
        first = processor.run_once()
        assert [o.outcome for o in first.outcomes] == [Outcome.CREATED, Outcome.CREATED]
        assert "DELE 1" in cutting.commands()
        assert "DELE 2" in cutting.commands()
        error = first.mailboxes[0].error
        assert error is not None
        assert "QUIT failed" in error
        assert "kept the 2 emails" in error
        assert _stat(dovecot, account)[0] == 2
        cutting.drop_on = None
        second = processor.run_once()
        assert [(o.outcome, o.reason) for o in second.outcomes] == [
            (Outcome.SKIPPED, "duplicate"),
            (Outcome.SKIPPED, "duplicate"),
        ]
        assert second.mailboxes[0].error is None
        assert len(repository.list_tickets()) == 2
        assert _stat(dovecot, account) == (0, 0)

    def test_retry_leaves_the_mail_and_ack_of_an_unknown_ref_is_a_no_op(
        self, dovecot: Dovecot, account: Account
    ) -> None:
        """RETRY sends no DELE; acking a UIDL this session never listed does nothing."""
        dovecot.append(account, _email(1))
        connector = _connector(dovecot, account)
        (fetched,) = list(connector.fetch())
        connector.ack(fetched.ref, Disposition.RETRY)
        connector.ack("no-such-uidl", Disposition.PROCESSED)
        connector.close()
        assert _stat(dovecot, account)[0] == 1


class TestLeaveOnServer:
    def test_handled_uidls_are_remembered_across_runs_and_never_read_again(
        self,
        dovecot: Dovecot,
        account: Account,
        repository: InMemoryTicketRepository,
        proxies: Callable[..., _Proxy],
        tmp_path: Path,
    ) -> None:
        """Leave-on-server deletes nothing and, from the seen file, skips handled mail unread."""
        seen_file = tmp_path / "seen.json"
        dovecot.append(account, _email(1))
        dovecot.append(account, _email(2))
        proxy = proxies()
        first = _connector(
            dovecot, account, port=proxy.port, leave_on_server=True, seen_file=seen_file
        )
        report = _processor(repository, first).run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 2
        assert not any(c.startswith("DELE") for c in proxy.commands())
        assert _stat(dovecot, account)[0] == 2
        stored = json.loads(seen_file.read_text())
        assert len(stored["uidls"]) == 2
        # The next process: a new connector and processor on the same seen file.
        dovecot.append(account, _email(3))
        proxy.lines.clear()
        second = _connector(
            dovecot, account, port=proxy.port, leave_on_server=True, seen_file=seen_file
        )
        report = _processor(repository, second).run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
        assert [c for c in proxy.commands() if c.startswith("RETR")] == ["RETR 3"]
        assert len(repository.list_tickets()) == 3
        assert len(json.loads(seen_file.read_text())["uidls"]) == 3

    def test_uidls_gone_from_the_server_are_forgotten(
        self, dovecot: Dovecot, account: Account, tmp_path: Path
    ) -> None:
        """A UIDL deleted by another client drops out of the seen file on the next session."""
        seen_file = tmp_path / "seen.json"
        dovecot.append(account, _email(1))
        dovecot.append(account, _email(2))
        connector = _connector(dovecot, account, leave_on_server=True, seen_file=seen_file)
        refs = [m.ref for m in connector.fetch()]
        for ref in refs:
            connector.ack(ref, Disposition.PROCESSED)
        connector.close()
        other = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=5)
        other.user(account.username)
        other.pass_(account.password)
        other.dele(1)
        other.quit()
        assert list(connector.fetch()) == []
        connector.close()
        assert json.loads(seen_file.read_text())["uidls"] == [refs[1]]


# -- hostile servers --------------------------------------------------------------------


class _ScriptedPop3:
    """A minimal POP3 server on loopback whose answers a test controls."""

    def __init__(self, messages: list[tuple[int, bytes]], *, endless: bool = False) -> None:
        self.messages = messages  # (announced size, body sent)
        self.endless = endless
        self.commands: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"+OK ready\r\n")
            for line in lines:
                command = line.strip()
                self.commands.append(command)
                verb, _, arg = command.partition(b" ")
                try:
                    if verb in (b"USER", b"PASS", b"DELE"):
                        conn.sendall(b"+OK\r\n")
                    elif verb == b"UIDL":
                        body = b"".join(
                            b"%d uid-%d\r\n" % (i, i) for i in range(1, len(self.messages) + 1)
                        )
                        conn.sendall(b"+OK\r\n" + body + b".\r\n")
                    elif verb == b"LIST":
                        body = b"".join(
                            b"%d %d\r\n" % (i, size) for i, (size, _) in enumerate(self.messages, 1)
                        )
                        conn.sendall(b"+OK\r\n" + body + b".\r\n")
                    elif verb == b"RETR":
                        conn.sendall(b"+OK\r\n")
                        if self.endless:
                            while True:
                                conn.sendall(b"z" * 65536 + b"\r\n")
                        conn.sendall(self.messages[int(arg) - 1][1] + b".\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"+OK bye\r\n")
                        return
                    else:
                        conn.sendall(b"-ERR unknown\r\n")
                except OSError:
                    return


class TestHostileServers:
    def test_a_message_longer_than_announced_is_not_kept_and_the_session_goes_on(self) -> None:
        """A RETR far beyond its LIST size is drained, reported too large, and the next is read."""
        small = make_email()
        server = _ScriptedPop3([(100, b"A" * 300_000 + b"\r\n"), (len(small), small)])
        connector = Pop3Connector(
            "Hostile",
            "127.0.0.1",
            server.port,
            security="none",
            username="u",
            password="p",
            timeout=5,
        )
        try:
            first, second = list(connector.fetch())
        finally:
            connector.close()
            server.close()
        assert (first.ref, first.too_large, first.raw) == ("uid-1", True, b"")
        assert first.size == 100  # as announced: the quarantine key stays stable
        assert (second.ref, second.raw) == ("uid-2", small)

    def test_an_endless_retr_is_abandoned_with_bounded_memory(self) -> None:
        """A server streaming a message forever is cut off after a bounded read, as an error."""
        server = _ScriptedPop3([(1000, b"")], endless=True)
        connector = Pop3Connector(
            "Hostile",
            "127.0.0.1",
            server.port,
            security="none",
            username="u",
            password="p",
            timeout=5,
            max_message_bytes=10_000,
        )
        started = time.monotonic()
        try:
            with pytest.raises(
                ConnectorError, match=r"sent over 4194304 bytes .* announced as 1000"
            ):
                list(connector.fetch())
        finally:
            connector.close()
            server.close()
        assert time.monotonic() - started < 5

    def test_a_server_that_stalls_times_out(self) -> None:
        """F3: a server that accepts and never greets fails within the timeout, no hang."""
        with socket.create_server(("127.0.0.1", 0)) as silent:
            connector = Pop3Connector(
                "Stalled",
                "127.0.0.1",
                silent.getsockname()[1],
                security="none",
                username="u",
                password="p",
                timeout=0.5,
            )
            started = time.monotonic()
            with pytest.raises(TransientConnectorError):
                list(connector.fetch())
        assert time.monotonic() - started < 3


class TestFromSettings:
    def test_settings_build_a_password_connector(self, tmp_path: Path) -> None:
        """A pop3 mailbox's settings map onto the connector, password hidden in repr."""
        settings = MailboxSettings(
            name="Support",
            connection="pop3",
            host="pop.example.com",
            security="starttls",
            username="support@example.com",
            password="s3cret-pw",
            extra={"leave_on_server": True, "seen_file": str(tmp_path / "s.json"), "timeout": 7},
        )
        connector = Pop3Connector.from_settings(settings, max_message_bytes=1000)
        assert (connector.host, connector.port, connector.security) == (
            "pop.example.com",
            110,
            "starttls",
        )
        assert connector.leave_on_server is True
        assert connector.seen_file == tmp_path / "s.json"
        assert connector.timeout == 7.0
        assert connector.max_message_bytes == 1000
        assert "s3cret-pw" not in repr(connector)

    def test_settings_with_oauth_build_a_token_provider(self) -> None:
        """auth = "oauthbearer" with a token gives a static provider and that mechanism."""
        settings = MailboxSettings(
            name="Support",
            connection="pop3",
            host="pop.example.com",
            username="support@example.com",
            extra={"auth": "oauthbearer", "token": "tok"},
        )
        connector = Pop3Connector.from_settings(settings, max_message_bytes=None)
        assert connector.sasl_mechanism == "OAUTHBEARER"
        assert connector.port == 995

    @pytest.mark.parametrize(
        ("fields", "key"),
        [
            ({"connection": "imap", "host": "h", "username": "u", "password": "p"}, "connection"),
            ({"connection": "pop3", "username": "u", "password": "p"}, "host"),
            ({"connection": "pop3", "host": "h", "password": "p"}, "username"),
            ({"connection": "pop3", "host": "h", "username": "u"}, "password"),
        ],
    )
    def test_incomplete_settings_name_the_missing_key(
        self, fields: dict[str, str], key: str
    ) -> None:
        """A POP3 mailbox missing its host, login or password is a ConfigError on that key."""
        settings = MailboxSettings(name="Support", key_path="mailboxes[1]", **fields)  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as caught:
            Pop3Connector.from_settings(settings, max_message_bytes=None)
        assert caught.value.key_path == f"mailboxes[1].{key}"
