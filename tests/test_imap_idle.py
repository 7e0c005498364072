"""IMAP IDLE against the real Dovecot: one held connection, reconnects, close() from a thread."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from halomail.backends.imap import ImapConnector
from halomail.backends.memory import MemoryTransport
from halomail.errors import ConnectorError
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from tests.conftest import HELPDESK, LOOP_TOKEN, make_email
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fault_proxy import FaultProxy

Proxy = Callable[[str, int], FaultProxy]


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A fresh, empty mailbox on the session's Dovecot."""
    return dovecot.new_account()


@pytest.fixture
def proxy(dovecot: Dovecot, fault_proxy_factory: Proxy) -> FaultProxy:
    """A counting proxy in front of Dovecot's plain IMAP port."""
    return fault_proxy_factory(dovecot.host, dovecot.imap_port)


@pytest.fixture
def connector(dovecot: Dovecot, account: Account, proxy: FaultProxy) -> Iterator[ImapConnector]:
    """A connector to the test's account through the proxy; closed afterwards."""
    made = ImapConnector(
        "Support",
        proxy.host,
        proxy.port,
        security="none",
        username=account.username,
        password=account.password,
        timeout=5.0,
    )
    yield made
    with contextlib.suppress(ConnectorError):
        made.close()


def _email(n: int) -> bytes:
    return make_email(subject=f"Problem {n}", message_id=f"<idle{n}@customer.example>")


def _processor(connector: ImapConnector) -> tuple[MailProcessor, InMemoryTicketRepository]:
    repository = InMemoryTicketRepository()
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
    )
    processor = MailProcessor(
        repository, [Mailbox(connector)], settings, transport=MemoryTransport()
    )
    return processor, repository


def _append_soon(dovecot: Dovecot, account: Account, raw: bytes) -> threading.Timer:
    timer = threading.Timer(0.3, dovecot.append, (account, raw))
    timer.start()
    return timer


class TestHeldConnection:
    @pytest.mark.timeout(60)
    def test_three_idle_cycles_of_the_processor_log_in_twice_and_new_mail_still_wakes_it(
        self, dovecot: Dovecot, account: Account, connector: ImapConnector, proxy: FaultProxy
    ) -> None:
        """Three idle run+wait cycles: 2 logins (read, IDLE); new mail then wakes the wait."""
        processor, repository = _processor(connector)
        with processor:
            for _ in range(3):
                assert processor.run_once().outcomes == ()
                assert processor.wait_for_mail(0.5) is False
            assert proxy.imap_logins() == 2
            # Every cycle was watched: one IDLE per wait, none skipped.
            assert [c.upper() for c in proxy.commands()].count("IDLE") == 3
            timer = _append_soon(dovecot, account, _email(1))
            try:
                assert processor.wait_for_mail(30) is True
            finally:
                timer.join()
            report = processor.run_once()
            assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
            assert [t.summary for t in repository.list_tickets()] == ["Problem 1"]
            assert proxy.imap_logins() == 2

    @pytest.mark.timeout(60)
    def test_idle_is_reissued_on_the_same_connection_for_each_wait(
        self, connector: ImapConnector, proxy: FaultProxy
    ) -> None:
        """Three waits on one connection: three IDLE commands, one login, one connection."""
        connector.list_refs()
        connector.end_session()
        for _ in range(3):
            assert connector.wait_for_mail(0.3) is False
        ops = [c.upper() for c in proxy.commands()]
        assert ops.count("IDLE") == 3
        assert proxy.imap_logins() == 2  # the reading session, kept, and the IDLE one
        assert proxy.connections == 2

    @pytest.mark.timeout(60)
    def test_a_dropped_idle_connection_is_reestablished_and_still_reports_mail(
        self, dovecot: Dovecot, account: Account, connector: ImapConnector, proxy: FaultProxy
    ) -> None:
        """After the network cuts the held connection, the next wait logs in again and wakes."""
        connector.list_refs()
        connector.close()
        assert connector.wait_for_mail(0.3) is False
        before = proxy.imap_logins()
        proxy.drop_connections()
        timer = _append_soon(dovecot, account, _email(2))
        try:
            assert connector.wait_for_mail(30) is True
        finally:
            timer.join()
        assert proxy.imap_logins() == before + 1
        assert proxy.faults >= 1


class TestClose:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("security", ["none", "tls"])
    def test_close_from_another_thread_ends_a_blocking_wait(
        self,
        dovecot: Dovecot,
        account: Account,
        proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture,
        security: str,
    ) -> None:
        """close() from the main thread makes a wait_for_mail(600) in a thread return False."""
        port = proxy.port if security == "none" else dovecot.imaps_port
        host = proxy.host if security == "none" else dovecot.host
        connector = ImapConnector(
            "Support",
            host,
            port,
            security=security,
            username=account.username,
            password=account.password,
            tls_ca_file=dovecot.ca_file,
            timeout=5.0,
        )
        caplog.set_level(logging.DEBUG, logger="halomail.backends.imap")
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(connector.wait_for_mail(600)))
        waiter.start()
        watching = threading.Event()
        while not watching.wait(0.05):  # until the watcher holds its IDLE connection
            if any("watching with IDLE" in r.getMessage() for r in caplog.records):
                watching.set()
        connector.close()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        assert results == [False]


class TestBetweenWaits:
    @pytest.mark.timeout(60)
    def test_mail_that_arrived_between_two_waits_ends_the_second_at_once(
        self, dovecot: Dovecot, account: Account, connector: ImapConnector, proxy: FaultProxy
    ) -> None:
        """An email appended while nobody waits is reported by the next wait, on the same login."""
        connector.list_refs()
        connector.end_session()
        assert connector.wait_for_mail(0.3) is False
        dovecot.append(account, _email(3))
        assert connector.wait_for_mail(30) is True
        assert proxy.imap_logins() == 2
