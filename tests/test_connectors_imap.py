"""The IMAP connector against a real Dovecot: TLS, logins, UIDs, sizes, disposal, IDLE, faults."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import Disposition
from halomail.backends.imap import ImapConnector
from halomail.backends.memory import MemoryTransport
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
from halomail.tickets.repository import TicketRepository
from tests.conftest import HELPDESK, LOOP_TOKEN, make_email
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fault_proxy import FaultProxy, strip_capabilities

Proxy = Callable[[str, int], FaultProxy]


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A fresh, empty mailbox on the session's Dovecot."""
    return dovecot.new_account()


@pytest.fixture
def connectors() -> Iterator[list[ImapConnector]]:
    """Connectors a test makes; each is closed afterwards."""
    made: list[ImapConnector] = []
    yield made
    for connector in made:
        with contextlib.suppress(ConnectorError):
            connector.close()


@pytest.fixture
def connect(
    dovecot: Dovecot, account: Account, connectors: list[ImapConnector]
) -> Callable[..., ImapConnector]:
    """Build a connector to the test's account (STARTTLS on the IMAP port by default)."""

    def build(**options: object) -> ImapConnector:
        values: dict[str, object] = {
            "port": dovecot.imap_port,
            "security": "starttls",
            "username": account.username,
            "password": account.password,
            "tls_ca_file": dovecot.ca_file,
            "timeout": 5.0,
        }
        values.update(options)
        port = values.pop("port")
        connector = ImapConnector("Support", dovecot.host, port, **values)  # type: ignore[arg-type]
        connectors.append(connector)
        return connector

    return build


@functools.cache
def _email(n: int, *, size: int = 0) -> bytes:
    """The same bytes for the same ``n`` all session (its Date header is fixed once)."""
    body = f"Message number {n}.\n" + ("x" * 76 + "\n") * (size // 77)
    return make_email(subject=f"Problem {n}", message_id=f"<m{n}@customer.example>", body=body)


def _processor(
    connector: ImapConnector,
    repository: TicketRepository | None = None,
    *,
    before: tuple[ImapConnector, ...] = (),
    **mailbox: object,
) -> tuple[MailProcessor, TicketRepository]:
    """A processor over ``connector`` (after the mailboxes of ``before``)."""
    repo = repository if repository is not None else InMemoryTicketRepository()
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
    )
    boxes = [Mailbox(c) for c in before] + [Mailbox(connector, **mailbox)]  # type: ignore[arg-type]
    return MailProcessor(repo, boxes, settings, transport=MemoryTransport()), repo


def _uidvalidity(dovecot: Dovecot, account: Account, folder: str = "INBOX") -> int:
    with dovecot.imap(account) as client:
        _, data = client.status(f'"{folder}"', "(UIDVALIDITY)")
    match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
    assert match is not None
    return int(match.group(1))


def _undeleted(dovecot: Dovecot, account: Account, folder: str = "INBOX") -> list[int]:
    with dovecot.imap(account) as client:
        client.select(f'"{folder}"', readonly=True)
        _, data = client.uid("SEARCH", "UNDELETED")
    return [int(u) for u in (data[0] or b"").split()]


def _ops(proxy: FaultProxy) -> list[str]:
    """The commands the connector sent through ``proxy``, e.g. ``"UID MOVE 1:3 ..."``."""
    return [c.upper() for c in proxy.commands() if c]


# -- security and login ----------------------------------------------------------------


class TestSecurityAndLogin:
    @pytest.mark.parametrize("security", ["tls", "starttls", "none"])
    def test_each_security_mode_reads_the_exact_bytes(
        self,
        security: str,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
    ) -> None:
        """Implicit TLS, STARTTLS and plain IMAP each yield every email byte for byte."""
        sent = [_email(n) for n in range(3)]
        for raw in sent:
            dovecot.append(account, raw)
        port = dovecot.imaps_port if security == "tls" else dovecot.imap_port
        connector = connect(security=security, port=port)
        fetched = list(connector.fetch())
        assert [m.raw for m in fetched] == sent
        assert [m.size for m in fetched] == [len(raw) for raw in sent]
        assert not any(m.too_large for m in fetched)

    def test_starttls_missing_from_the_server_raises_before_any_login(
        self, dovecot: Dovecot, connect: Callable[..., ImapConnector], fault_proxy_factory: Proxy
    ) -> None:
        """A server that does not offer STARTTLS is refused; no credential is ever sent."""
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        proxy.rewrite = strip_capabilities("STARTTLS")
        connector = connect(port=proxy.port, security="starttls")
        with pytest.raises(ConnectorError, match="does not offer STARTTLS") as caught:
            list(connector.fetch())
        assert not isinstance(caught.value, TransientConnectorError)
        assert not any(c.startswith(("LOGIN", "AUTHENTICATE")) for c in _ops(proxy))

    @pytest.mark.parametrize("security", ["tls", "starttls"])
    def test_an_untrusted_certificate_fails_and_never_continues_in_clear(
        self,
        security: str,
        dovecot: Dovecot,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """Without the server's CA the handshake fails with a ConnectorError; no login follows."""
        upstream = dovecot.imaps_port if security == "tls" else dovecot.imap_port
        proxy = fault_proxy_factory(dovecot.host, upstream)
        connector = connect(port=proxy.port, security=security, tls_ca_file=None)
        with pytest.raises(ConnectorError, match=r"TLS with .* failed") as caught:
            connector.list_refs()
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert not isinstance(caught.value, TransientConnectorError)
        assert not any(c.startswith(("LOGIN", "AUTHENTICATE")) for c in _ops(proxy))

    @pytest.mark.parametrize(
        ("mechanism", "command"),
        [("LOGIN", "LOGIN"), ("PLAIN", "AUTHENTICATE PLAIN"), (None, "AUTHENTICATE PLAIN")],
    )
    def test_password_logins_use_the_chosen_mechanism(
        self,
        mechanism: str | None,
        command: str,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """LOGIN and AUTHENTICATE PLAIN both log in; by default PLAIN is used when offered."""
        dovecot.append(account, _email(1))
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        connector = connect(port=proxy.port, security="none", auth_mechanism=mechanism)
        assert len(connector.list_refs()) == 1
        logins = [c for c in _ops(proxy) if c.startswith(("LOGIN", "AUTHENTICATE"))]
        assert len(logins) == 1
        assert logins[0].startswith(command)

    def test_a_wrong_password_raises_authentication_error_without_the_secret(
        self,
        account: Account,
        connect: Callable[..., ImapConnector],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Refused credentials raise AuthenticationError; the password is in no message or log."""
        caplog.set_level(logging.DEBUG)
        secret = "Wr0ng-Secret-Passw0rd"
        connector = connect(password=secret)
        with pytest.raises(AuthenticationError) as caught:
            list(connector.fetch())
        assert "AUTHENTICATIONFAILED" in str(caught.value)
        assert account.username in str(caught.value)
        assert secret not in str(caught.value)
        assert secret not in caplog.text
        assert secret not in repr(connector)

    @pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
    def test_oauth_logins_work_through_the_introspection_endpoint(
        self,
        mechanism: str,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """XOAUTH2 and OAUTHBEARER log in with a granted token, which Dovecot introspects."""
        caplog.set_level(logging.DEBUG)
        token = f"tok-{mechanism.lower()}-{account.username}-0123456789"
        dovecot.introspection.grant(token, account.username)
        dovecot.append(account, _email(1))
        calls = dovecot.introspection.calls
        connector = connect(
            password=None, token_provider=StaticTokenProvider(token), auth_mechanism=mechanism
        )
        assert [m.raw for m in connector.fetch()] == [_email(1)]
        assert dovecot.introspection.calls == calls + 1
        assert token not in caplog.text

    def test_a_revoked_token_fails_with_a_secret_free_authentication_error(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A token the endpoint calls inactive raises AuthenticationError naming no token."""
        caplog.set_level(logging.DEBUG)
        token = f"tok-revoked-{account.username}-abcdef"
        dovecot.introspection.grant(token, account.username)
        dovecot.introspection.revoke(token)
        connector = connect(password=None, token_provider=StaticTokenProvider(token))
        with pytest.raises(AuthenticationError, match="OAuth2 token") as caught:
            connector.list_refs()
        assert token not in str(caught.value)
        assert token not in caplog.text

    def test_a_revoked_token_fails_only_its_own_mailbox(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A revoked token fails its own mailbox, secret-free, while the next makes tickets."""
        caplog.set_level(logging.DEBUG)
        other = dovecot.new_account()
        token = f"tok-revoked-{other.username}-98765"
        dovecot.append(other, _email(1))
        dovecot.append(account, _email(2))
        revoked = connect(
            username=other.username, password=None, token_provider=StaticTokenProvider(token)
        )
        revoked.name = "Revoked"
        processor, repo = _processor(connect(), before=(revoked,))
        report = processor.run_once()
        errors = {m.name: m.error for m in report.mailboxes}
        assert errors["Support"] is None
        assert "AuthenticationError" in (errors["Revoked"] or "")
        assert [t.summary for t in repo.list_tickets()] == ["Problem 2"]
        assert dovecot.messages(other) == [_email(1)]
        assert token not in caplog.text

    def test_a_refused_token_is_invalidated_and_a_fresh_one_tried_once(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """A refused cached token is invalidated once and the fresh token logs in."""

        class Rotating:
            def __init__(self) -> None:
                self.tokens = ["tok-stale-1", f"tok-fresh-{account.username}"]
                self.invalidated = 0

            def token(self) -> str:
                return self.tokens[0]

            def invalidate(self) -> None:
                self.invalidated += 1
                self.tokens.pop(0)

        provider = Rotating()
        dovecot.introspection.grant(provider.tokens[1], account.username)
        connector = connect(password=None, token_provider=provider)
        assert connector.list_refs() == []
        assert provider.invalidated == 1

    def test_an_unreachable_server_is_a_transient_error(
        self, connect: Callable[..., ImapConnector]
    ) -> None:
        """Nothing listening on the port raises TransientConnectorError (try again later)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(TransientConnectorError, match="cannot connect"):
            connect(port=port, security="tls").list_refs()

    @pytest.mark.timeout(20)
    @pytest.mark.parametrize("stall_after", [0, 1500])
    def test_a_stalled_server_times_out_as_a_transient_error(
        self,
        stall_after: int,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """F3: a server that accepts, then stalls, raises a transient error within the timeout."""
        dovecot.append(account, _email(1, size=4000))
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        proxy.stall_after = stall_after  # 0: no greeting; 1500: stalls mid-session
        connector = connect(port=proxy.port, security="none", timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransientConnectorError, match=r"did not answer within 1\.0 s"):
            list(connector.fetch())
        assert time.monotonic() - started < 4


# -- refs, UIDVALIDITY -----------------------------------------------------------------


class TestRefs:
    def test_refs_are_uidvalidity_and_uid(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """Each ref is "<UIDVALIDITY>:<UID>", the UID being the one APPEND was given."""
        uids = [dovecot.append(account, _email(n)) for n in range(2)]
        validity = _uidvalidity(dovecot, account)
        connector = connect()
        assert [m.ref for m in connector.fetch()] == [f"{validity}:{uid}" for uid in uids]

    def test_an_ack_from_an_older_uidvalidity_touches_nothing(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """After a folder's recreation, acking an old ref leaves the new email of that UID alone."""
        dovecot.append(account, _email(1), folder="Support")
        connector = connect(folder="Support")
        (old,) = list(connector.fetch())
        connector.close()
        with dovecot.imap(account) as client:
            assert client.delete('"Support"')[0] == "OK"
        new_uid = dovecot.append(account, _email(2), folder="Support")
        assert old.ref.endswith(f":{new_uid}")  # the same UID, another email
        assert not old.ref.startswith(f"{_uidvalidity(dovecot, account, 'Support')}:")
        connector.ack(old.ref, Disposition.PROCESSED)
        connector.close()
        assert dovecot.messages(account, "Support") == [_email(2)]
        assert "Deleted Items" not in dovecot.folders(account)

    def test_f8_a_uidvalidity_change_between_runs_creates_no_second_ticket(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """F8: the same emails under a new UIDVALIDITY are skipped as duplicates and disposed of."""
        sent = [_email(n) for n in range(2)]
        for raw in sent:
            dovecot.append(account, raw, folder="Support")
        processor, repo = _processor(connect(folder="Support"))
        first = processor.run_once()
        assert [o.outcome for o in first.outcomes] == [Outcome.CREATED] * 2
        before = _uidvalidity(dovecot, account, "Support")
        with dovecot.imap(account) as client:
            client.delete('"Support"')
        for raw in sent:
            dovecot.append(account, raw, folder="Support")
        assert _uidvalidity(dovecot, account, "Support") != before
        second = processor.run_once()
        assert [o.outcome for o in second.outcomes] == [Outcome.SKIPPED] * 2
        assert len(repo.list_tickets()) == 2
        assert dovecot.messages(account, "Support") == []
        assert dovecot.messages(account, "Deleted Items") == sent + sent


# -- sizes and batches -----------------------------------------------------------------


class TestSizesAndBatches:
    def test_sizes_come_first_in_batches_and_an_oversized_body_is_never_fetched(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """Per batch RFC822.SIZE comes before BODY.PEEK[], which skips the email over the limit."""
        sent = [_email(n, size=20_000 if n == 3 else 0) for n in range(1, 6)]
        uids = [dovecot.append(account, raw) for raw in sent]
        assert uids == [1, 2, 3, 4, 5]
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        connector = connect(
            port=proxy.port, security="none", max_message_bytes=10_000, batch_size=2
        )
        fetched = list(connector.fetch())
        assert [(m.ref.split(":")[1], m.too_large) for m in fetched] == [
            ("1", False),
            ("2", False),
            ("3", True),
            ("4", False),
            ("5", False),
        ]
        big = fetched[2]
        assert big.raw == b""
        assert big.size == len(sent[2])
        fetches = [c for c in _ops(proxy) if c.startswith("UID FETCH")]
        assert fetches == [
            "UID FETCH 1:2 (UID RFC822.SIZE)",
            "UID FETCH 1:2 (UID BODY.PEEK[])",
            "UID FETCH 3:4 (UID RFC822.SIZE)",
            "UID FETCH 4 (UID BODY.PEEK[])",
            "UID FETCH 5 (UID RFC822.SIZE)",
            "UID FETCH 5 (UID BODY.PEEK[])",
        ]

    def test_an_oversized_email_is_quarantined_from_its_metadata_into_the_quarantine_folder(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """The processor quarantines a too-large email, which moves whole to "Quarantine"."""
        big = _email(1, size=30_000)
        dovecot.append(account, big)
        dovecot.append(account, _email(2))
        processor, _ = _processor(connect(max_message_bytes=10_000))
        report = processor.run_once()
        outcomes = sorted(o.outcome.value for o in report.outcomes)
        assert outcomes == ["created", "quarantined"]
        assert dovecot.messages(account, "Quarantine") == [big]
        assert dovecot.messages(account, "Deleted Items") == [_email(2)]
        assert dovecot.messages(account) == []

    def test_fetch_marks_nothing_as_read(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """BODY.PEEK[] leaves the email unseen for people reading the same mailbox."""
        dovecot.append(account, _email(1))
        list(connect().fetch())
        with dovecot.imap(account) as client:
            client.select("INBOX", readonly=True)
            _, data = client.uid("SEARCH", "UNSEEN")
        assert data == [b"1"]


# -- disposal --------------------------------------------------------------------------


class TestDisposal:
    def test_end_to_end_three_emails_become_three_tickets_moved_to_deleted_items(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        repository: TicketRepository,
    ) -> None:
        """Three emails make three tickets and move to "Deleted Items"; a rerun adds nothing."""
        sent = [_email(n) for n in range(3)]
        for raw in sent:
            dovecot.append(account, raw)
        processor, repo = _processor(connect(security="tls", port=dovecot.imaps_port), repository)
        first = processor.run_once()
        assert [o.outcome for o in first.outcomes] == [Outcome.CREATED] * 3
        assert sorted(t.summary for t in repo.list_tickets()) == [
            "Problem 0",
            "Problem 1",
            "Problem 2",
        ]
        assert dovecot.messages(account) == []
        assert dovecot.messages(account, "Deleted Items") == sent
        second = processor.run_once()
        assert second.outcomes == ()
        assert second.mailboxes[0].error is None
        assert len(repo.list_tickets()) == 3

    def test_acks_go_out_as_one_uid_move_per_batch(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """With MOVE, the processed emails of a batch leave in a single UID MOVE command."""
        for n in range(5):
            dovecot.append(account, _email(n))
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        processor, _ = _processor(connect(port=proxy.port, security="none", batch_size=3))
        assert len(processor.run_once().outcomes) == 5
        moves = [op for op in _ops(proxy) if op.startswith(("UID MOVE", "UID COPY"))]
        assert moves == ['UID MOVE 1:3 "DELETED ITEMS"', 'UID MOVE 4:5 "DELETED ITEMS"']
        assert not any("EXPUNGE" in op for op in _ops(proxy))

    def test_deleted_items_resolves_to_the_special_use_trash_folder(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """With a \\Trash folder present, "Deleted Items" means it, and no folder is created."""
        with dovecot.imap(account) as client:
            client.create("Trash")
        dovecot.append(account, _email(1))
        folders = dovecot.folders(account)
        _processor(connect())[0].run_once()
        assert dovecot.messages(account, "Trash") == [_email(1)]
        assert dovecot.folders(account) == folders

    def test_an_existing_folder_is_found_by_name(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """Without \\Trash, an existing "Deleted Items" is used as it is."""
        with dovecot.imap(account) as client:
            client.create('"Deleted Items"')
        dovecot.append(account, _email(1))
        folders = dovecot.folders(account)
        _processor(connect())[0].run_once()
        assert dovecot.messages(account, "Deleted Items") == [_email(1)]
        assert dovecot.folders(account) == folders

    def test_a_missing_custom_folder_is_created_and_subscribed(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """processed = "move:Handled/Tickets" creates that folder (and its parent) when missing."""
        dovecot.append(account, _email(1))
        _processor(connect(processed="move:Handled/Tickets"))[0].run_once()
        assert dovecot.messages(account, "Handled/Tickets") == [_email(1)]
        with dovecot.imap(account) as client:
            _, data = client.lsub('""', "*")
        assert any(b"Handled/Tickets" in line for line in data if isinstance(line, bytes))

    def test_a_non_ascii_folder_is_created_once_and_found_again_by_name(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """ "move:Éléments traités" is sent in modified UTF-7, created once, then found by name."""
        for n in (1, 2):
            dovecot.append(account, _email(n))
            _processor(connect(processed="move:Éléments traités"))[0].run_once()
        encoded = "&AMk-l&AOk-ments trait&AOk-s"
        assert dovecot.folders(account).count(encoded) == 1
        assert dovecot.messages(account, encoded) == [_email(1), _email(2)]

    def test_delete_expunges_only_our_email_not_a_foreign_deleted_one(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """processed = "delete" UID EXPUNGEs our UID; another client's \\Deleted email stays."""
        foreign = _email(9)
        dovecot.append(account, foreign, flags="\\Deleted")
        dovecot.append(account, _email(1))
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        processor, _ = _processor(connect(port=proxy.port, security="none", processed="delete"))
        report = processor.run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
        assert dovecot.messages(account) == [foreign]
        assert "UID EXPUNGE 2" in _ops(proxy)
        assert "EXPUNGE" not in _ops(proxy)

    def test_without_move_it_copies_flags_and_uid_expunges_only_its_own_uids(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """Without MOVE: UID COPY, +FLAGS (\\Deleted) and UID EXPUNGE of only our UIDs."""
        foreign = _email(9)
        dovecot.append(account, foreign, flags="\\Deleted")
        mine = [_email(1), _email(2)]
        for raw in mine:
            dovecot.append(account, raw)
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        proxy.rewrite = strip_capabilities("MOVE")
        processor, _ = _processor(connect(port=proxy.port, security="none"))
        assert len(processor.run_once().outcomes) == 2
        ops = _ops(proxy)
        assert not any(op.startswith("UID MOVE") for op in ops)
        assert 'UID COPY 2:3 "DELETED ITEMS"' in ops
        assert "UID STORE 2:3 +FLAGS.SILENT (\\DELETED)" in ops
        assert "UID EXPUNGE 2:3" in ops
        assert dovecot.messages(account) == [foreign]
        assert dovecot.messages(account, "Deleted Items") == mine

    @pytest.mark.parametrize("crash_before", [b"UID STORE", b"UID EXPUNGE"])
    def test_f7_a_crash_between_copy_and_expunge_keeps_the_foreign_email_and_one_ticket(
        self,
        crash_before: bytes,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """F7: without MOVE, a drop after COPY: one ticket; a foreign email is never expunged."""
        foreign = _email(9)
        dovecot.append(account, foreign, flags="\\Deleted")
        dovecot.append(account, _email(1))
        repo = InMemoryTicketRepository()
        crashing = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        crashing.rewrite = strip_capabilities("MOVE")
        crashing.cut_on_client = crash_before
        processor, _ = _processor(connect(port=crashing.port, security="none"), repo)
        first = processor.run_once()
        assert [o.outcome for o in first.outcomes] == [Outcome.CREATED]
        assert first.mailboxes[0].error is not None  # the disposal never completed
        assert crashing.faults == 1
        healthy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        healthy.rewrite = strip_capabilities("MOVE")
        processor, _ = _processor(connect(port=healthy.port, security="none"), repo)
        second = processor.run_once()
        assert second.mailboxes[0].error is None
        assert len(repo.list_tickets()) == 1
        inbox = dovecot.messages(account)
        assert inbox[0] == foreign  # never expunged
        assert _undeleted(dovecot, account) == []  # ours is not waiting to be read again
        assert _email(1) in dovecot.messages(account, "Deleted Items")

    def test_each_disposition_does_its_own_thing_and_a_gone_email_is_fine(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """PROCESSED and QUARANTINED move, RETRY stays; acking a gone UID is harmless."""
        sent = [_email(n) for n in range(3)]
        for raw in sent:
            dovecot.append(account, raw)
        connector = connect()
        processed, quarantined, retried = list(connector.fetch())
        connector.ack(processed.ref, Disposition.PROCESSED)
        connector.ack(quarantined.ref, Disposition.QUARANTINED)
        connector.ack(retried.ref, Disposition.RETRY)
        validity = processed.ref.split(":")[0]
        connector.ack(f"{validity}:999", Disposition.PROCESSED)  # no such UID
        connector.ack("not-a-ref", Disposition.PROCESSED)
        connector.close()
        connector.ack(processed.ref, Disposition.PROCESSED)  # already moved
        connector.close()
        assert dovecot.messages(account) == [sent[2]]
        assert dovecot.messages(account, "Deleted Items") == [sent[0]]
        assert dovecot.messages(account, "Quarantine") == [sent[1]]

    @pytest.mark.parametrize("cut", ["mid-fetch", "before-move"])
    def test_f1_a_dropped_connection_loses_nothing_and_doubles_nothing(
        self,
        cut: str,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """F1: a drop mid-FETCH or before the MOVE disposes of nothing; rerun ends at 3 tickets."""
        sent = [_email(n, size=20_000) for n in range(3)]
        for raw in sent:
            dovecot.append(account, raw)
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        if cut == "mid-fetch":
            proxy.cut_after = 30_000  # inside the bodies' response
        else:
            proxy.cut_on_client = b"UID MOVE"
        repo = InMemoryTicketRepository()
        processor, _ = _processor(connect(port=proxy.port, security="none"), repo)
        first = processor.run_once()
        error = first.mailboxes[0].error
        assert error is not None
        assert "TransientConnectorError" in error
        assert proxy.faults == 1
        assert dovecot.messages(account) == sent  # nothing disposed
        expected = [] if cut == "mid-fetch" else [Outcome.CREATED] * 3
        assert [o.outcome for o in first.outcomes] == expected
        processor, _ = _processor(connect(), repo)
        second = processor.run_once()
        assert second.mailboxes[0].error is None
        assert len(repo.list_tickets()) == 3
        assert dovecot.messages(account) == []
        assert dovecot.messages(account, "Deleted Items") == sent


# -- start_from = "now" and IDLE -------------------------------------------------------


class TestOnboardingAndPush:
    def test_list_refs_reads_no_body_and_start_from_now_leaves_old_mail_alone(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """list_refs() is one UID SEARCH; with start_from="now" only later mail becomes tickets."""
        old = [_email(n) for n in range(2)]
        for raw in old:
            dovecot.append(account, raw)
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        connector = connect(port=proxy.port, security="none")
        assert len(connector.list_refs()) == 2
        assert not any(op.startswith("UID FETCH") for op in _ops(proxy))
        assert [op for op in _ops(proxy) if op.startswith("UID SEARCH")] == [
            "UID SEARCH RETURN (ALL) UNDELETED"
        ]
        connector.close()
        processor, repo = _processor(connector, start_from="now")
        first = processor.run_once()
        assert first.outcomes == ()
        assert first.mailboxes[0].left_alone == 2
        dovecot.append(account, _email(7))
        second = processor.run_once()
        assert [o.outcome for o in second.outcomes] == [Outcome.CREATED]
        assert [t.summary for t in repo.list_tickets()] == ["Problem 7"]
        assert dovecot.messages(account) == old

    @pytest.mark.timeout(20)
    def test_idle_reports_a_new_email_within_seconds(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """wait_for_mail(10) returns True well under 5 s after another client appends an email."""
        connector = connect()
        assert list(connector.fetch()) == []
        connector.close()
        timer = threading.Timer(0.3, dovecot.append, (account, _email(1)))
        started = time.monotonic()
        timer.start()
        try:
            assert connector.wait_for_mail(10) is True
        finally:
            timer.join()
        assert time.monotonic() - started < 3

    @pytest.mark.timeout(20)
    def test_wait_for_mail_returns_false_on_timeout(
        self, connect: Callable[..., ImapConnector]
    ) -> None:
        """With no new mail, wait_for_mail returns False once its timeout has passed."""
        connector = connect()
        connector.list_refs()
        connector.close()
        started = time.monotonic()
        assert connector.wait_for_mail(1.0) is False
        assert 0.9 <= time.monotonic() - started < 3

    @pytest.mark.timeout(20)
    def test_without_idle_it_polls_status_instead(
        self,
        dovecot: Dovecot,
        account: Account,
        connect: Callable[..., ImapConnector],
        fault_proxy_factory: Proxy,
    ) -> None:
        """A server without IDLE is polled with STATUS; a new email is still reported."""
        proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
        proxy.rewrite = strip_capabilities("IDLE")
        connector = connect(port=proxy.port, security="none", poll_interval=0.2)
        connector.list_refs()
        connector.close()
        timer = threading.Timer(0.3, dovecot.append, (account, _email(1)))
        timer.start()
        try:
            assert connector.wait_for_mail(10) is True
        finally:
            timer.join()
        ops = _ops(proxy)
        assert "IDLE" not in ops
        assert any(op.startswith("STATUS") for op in ops)

    @pytest.mark.timeout(20)
    def test_the_processor_turns_a_pushed_email_into_a_ticket_within_five_seconds(
        self, dovecot: Dovecot, account: Account, connect: Callable[..., ImapConnector]
    ) -> None:
        """MailProcessor.wait_for_mail wakes on IDLE and the next cycle creates the ticket."""
        processor, repo = _processor(connect())
        assert processor.run_once().outcomes == ()
        timer = threading.Timer(0.3, dovecot.append, (account, _email(1)))
        started = time.monotonic()
        timer.start()
        try:
            assert processor.wait_for_mail(30) is True
        finally:
            timer.join()
        report = processor.run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
        assert time.monotonic() - started < 5
        assert len(repo.list_tickets()) == 1


# -- hostile servers (F10) -------------------------------------------------------------


class _HostileImap:
    """A fake IMAP server on loopback that behaves until the body FETCH, then attacks.

    With ``at="search"`` it advertises ESEARCH and attacks in its UID SEARCH answer.
    """

    def __init__(self, attack: bytes, at: str = "body") -> None:
        self.attack = attack
        self.at = at
        self.sent = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.close()
        self._thread.join(10)

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
            while line := reader.readline(65536):
                tag, _, command = line.rstrip(b"\r\n").partition(b" ")
                verb = command.upper()
                if verb.startswith(b"CAPABILITY"):
                    caps = b"IMAP4rev1 AUTH=PLAIN" + (b" ESEARCH" if self.at == "search" else b"")
                    conn.sendall(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
                elif verb.startswith(b"AUTHENTICATE"):
                    conn.sendall(b"+ \r\n")
                    reader.readline(65536)
                    conn.sendall(tag + b" OK logged in\r\n")
                elif verb.startswith(b"SELECT"):
                    conn.sendall(
                        b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n"
                        + tag
                        + b" OK [READ-WRITE] selected\r\n"
                    )
                elif verb.startswith(b"UID SEARCH") and self.at == "search":
                    conn.sendall(self.attack + tag + b" OK done\r\n")
                elif verb.startswith(b"UID SEARCH"):
                    conn.sendall(b"* SEARCH 1\r\n" + tag + b" OK done\r\n")
                elif b"RFC822.SIZE" in verb:
                    conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 100)\r\n" + tag + b" OK done\r\n")
                elif b"BODY.PEEK" in verb:
                    self._attack(conn)
                    return
                else:
                    conn.sendall(tag + b" OK done\r\n")

    def _attack(self, conn: socket.socket) -> None:
        chunk = b"a" * 65536
        try:
            conn.sendall(self.attack)
            # Then keep streaming (at most 64 MB) until the client hangs up.
            while self.sent < 64 * 1024 * 1024:
                conn.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            return


class TestHostileServer:
    @pytest.mark.timeout(30)
    @pytest.mark.parametrize(
        "attack",
        [b"* 1 FETCH (UID 1 BODY[] {2000000000}\r\n", b"* 1 FETCH (UID 1 BODY[] "],
        ids=["huge-literal", "endless-line"],
    )
    def test_f10_a_huge_literal_or_endless_line_is_refused_with_memory_bounded(
        self, attack: bytes, connectors: list[ImapConnector]
    ) -> None:
        """F10: a {2000000000} literal or an endless line: ConnectorError, in bounded memory."""
        server = _HostileImap(attack)
        connector = ImapConnector(
            "Hostile",
            "127.0.0.1",
            server.port,
            security="none",
            username="u",
            password="p",
            max_message_bytes=1_000_000,
            timeout=5,
        )
        connectors.append(connector)
        tracemalloc.start()
        try:
            with pytest.raises(ConnectorError) as caught:
                list(connector.fetch())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            connector.close()
            server.close()
        assert not isinstance(caught.value, TransientConnectorError)
        assert peak < 8 * 1024 * 1024
        if attack.endswith(b"}\r\n"):
            assert "literal of 2000000000 bytes" in str(caught.value)
        else:
            assert "got more than 1000000 bytes" in str(caught.value)

    def test_a_uid_set_naming_billions_of_uids_is_refused(
        self, connectors: list[ImapConnector]
    ) -> None:
        """An ESEARCH answer "ALL 1:4294967295" for a one-email folder is a ConnectorError."""
        server = _HostileImap(b'* ESEARCH (TAG "x") UID ALL 1:4294967295\r\n', at="search")
        connector = ImapConnector(
            "Hostile", "127.0.0.1", server.port, security="none", username="u", password="p"
        )
        connectors.append(connector)
        try:
            with pytest.raises(ConnectorError, match="malformed answer") as caught:
                connector.list_refs()
        finally:
            connector.close()
            server.close()
        assert not isinstance(caught.value, TransientConnectorError)


# -- configuration ---------------------------------------------------------------------


class TestFromSettings:
    def test_settings_map_onto_the_connector(self, tmp_path: Path) -> None:
        """A [[mailboxes]] entry with connection = "imap" becomes a connector with its keys."""
        settings = MailboxSettings(
            name="Support",
            connection="imap",
            host="imap.example.com",
            security="starttls",
            username="support@example.com",
            password="s3cret-pw",
            folder="Help",
            processed="move:Done",
            quarantine_folder="Held",
            tls_ca_file=tmp_path / "ca.pem",
            extra={"batch_size": 7, "timeout": 3, "poll_interval": 2},
        )
        connector = ImapConnector.from_settings(settings, max_message_bytes=1000)
        assert (connector.host, connector.port, connector.security) == (
            "imap.example.com",
            143,
            "starttls",
        )
        assert (connector.folder, connector.processed_folder, connector.quarantine_folder) == (
            "Help",
            "Done",
            "Held",
        )
        assert (connector.batch_size, connector.timeout, connector.poll_interval) == (7, 3.0, 2.0)
        assert connector.max_message_bytes == 1000
        assert connector.auth_mechanism is None
        assert "s3cret-pw" not in repr(connector)

    def test_an_oauthbearer_mailbox_gets_that_mechanism(self) -> None:
        """auth = "oauthbearer" with a token picks OAUTHBEARER and a static token provider."""
        settings = MailboxSettings(
            name="Support",
            connection="imap",
            host="imap.example.com",
            username="support@example.com",
            extra={"auth": "oauthbearer", "token": "tok"},
        )
        connector = ImapConnector.from_settings(settings, max_message_bytes=None)
        assert connector.auth_mechanism == "OAUTHBEARER"
        assert connector.port == 993

    @pytest.mark.parametrize(
        ("fields", "key"),
        [
            ({"connection": "pop3", "host": "h", "username": "u", "password": "p"}, "connection"),
            ({"connection": "imap", "username": "u", "password": "p"}, "host"),
            ({"connection": "imap", "host": "h", "password": "p"}, "username"),
            ({"connection": "imap", "host": "h", "username": "u"}, "password"),
            (
                {
                    "connection": "imap",
                    "host": "h",
                    "username": "u",
                    "password": "p",
                    "processed": "keep",
                },
                "processed",
            ),
        ],
    )
    def test_missing_or_invalid_keys_raise_config_error_with_their_path(
        self, fields: dict[str, str], key: str
    ) -> None:
        """Each missing or invalid key is reported with its key path."""
        settings = MailboxSettings(name="Support", key_path="mailboxes[1]", **fields)  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as caught:
            ImapConnector.from_settings(settings, max_message_bytes=None)
        assert caught.value.key_path == f"mailboxes[1].{key}"
