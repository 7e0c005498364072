"""Mailbox health: last success and error, backoff after repeated failures, push waits."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.backends.base import Disposition, FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.errors import AuthenticationError, TransientConnectorError
from halomail.outbound.outbox import MAX_SERVER_WAIT
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email


class BrokenConnector:
    """A mailbox whose server refuses the login until it is repaired."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.broken = True
        self.fetches = 0
        self.inner = MemoryConnector(name)

    def fetch(self) -> Iterator[FetchedMessage]:
        """Refuse while broken, then read like a memory mailbox."""
        self.fetches += 1
        if self.broken:
            raise AuthenticationError("login refused: check the mailbox's password")
        return self.inner.fetch()

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Dispose through the memory mailbox."""
        self.inner.ack(ref, disposition)

    def close(self) -> None:
        """Nothing to close."""


T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def test_a_failing_mailbox_backs_off_and_recovers(settings: ProcessorSettings) -> None:
    """Repeated failures space out the attempts; the other mailbox is read every cycle."""
    clock = Clock()
    broken, healthy = BrokenConnector("Broken"), MemoryConnector("Healthy")
    processor = MailProcessor(
        InMemoryTicketRepository(), [Mailbox(broken), Mailbox(healthy)], settings, clock=clock
    )
    processor.run_once()
    processor.run_once()  # the second failure in a row starts the backoff
    assert broken.fetches == 2
    state = {h.name: h for h in processor.health()}["Broken"]
    assert state.consecutive_failures == 2
    assert state.last_error == "AuthenticationError: login refused: check the mailbox's password"
    assert state.next_attempt_at is not None
    # The second failure waits the 30 s base (±20% jitter); each further one doubles it.
    assert 24 <= (state.next_attempt_at - clock.now).total_seconds() <= 36

    healthy.add(make_email())
    report = processor.run_once()  # within the backoff: Broken is not touched, Healthy is read
    assert broken.fetches == 2
    by_name = {r.name: r for r in report.mailboxes}
    assert by_name["Broken"].skipped
    assert "2 failures in a row" in (by_name["Broken"].error or "")
    assert [o.outcome.value for o in by_name["Healthy"].outcomes] == ["created"]
    assert not report.ok

    broken.broken = False
    broken.inner.add(make_email(message_id="<after-repair@customer.example>"))
    clock.now += dt.timedelta(minutes=5)
    report = processor.run_once()
    assert broken.fetches == 3
    assert [o.outcome.value for o in report.mailboxes[0].outcomes] == ["created"]
    state = {h.name: h for h in processor.health()}["Broken"]
    assert (state.consecutive_failures, state.next_attempt_at) == (0, None)
    assert state.last_success == clock.now


def test_start_from_now_lists_refs_without_reading_the_emails(
    settings: ProcessorSettings,
) -> None:
    """Onboarding asks a connector that can list refs for them and never fetches old mail."""

    class Listing(MemoryConnector):
        """A memory mailbox that counts fetches and lists its refs."""

        fetches = 0

        def fetch(self) -> Iterator[FetchedMessage]:
            self.fetches += 1
            return super().fetch()

        def list_refs(self) -> list[str]:
            """The refs of the emails there now."""
            return [m.ref for m in super().fetch()]

    connector = Listing("Support")
    connector.add(make_email(message_id="<old-1@customer.example>"))
    connector.add(make_email(message_id="<old-2@customer.example>"))
    processor = MailProcessor(
        InMemoryTicketRepository(), [Mailbox(connector, start_from="now")], settings
    )
    report = processor.run_once()
    assert report.mailboxes[0].left_alone == 2
    assert connector.fetches == 1  # the run's own fetch; the baseline came from list_refs
    connector.add(make_email(message_id="<new-1@customer.example>"))
    report = processor.run_once()
    assert [o.message_id for o in report.outcomes] == ["new-1@customer.example"]


class Pushing(MemoryConnector):
    """A memory mailbox that can wait for new mail, like IMAP IDLE."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.arrived = threading.Event()

    def wait_for_mail(self, timeout: float) -> bool:
        """True as soon as mail arrives, False after ``timeout``."""
        return self.arrived.wait(timeout)


def test_wait_for_mail_returns_as_soon_as_a_mailbox_pushes(settings: ProcessorSettings) -> None:
    """A push from one mailbox ends the wait long before the poll interval."""
    pushing = Pushing("Support")
    processor = MailProcessor(
        InMemoryTicketRepository(), [Mailbox(MemoryConnector("Other")), Mailbox(pushing)], settings
    )
    threading.Timer(0.2, pushing.arrived.set).start()
    started = time.monotonic()
    assert processor.wait_for_mail(30.0) is True
    assert time.monotonic() - started < 10.0  # a generous bound: the interval is 30 s


@pytest.mark.parametrize("pushing", [True, False], ids=["can-push", "cannot-push"])
def test_wait_for_mail_without_news_waits_the_interval(
    settings: ProcessorSettings, pushing: bool
) -> None:
    """With nothing pushed the wait lasts the interval and reports no mail."""
    connector = Pushing("Support") if pushing else MemoryConnector("Support")
    processor = MailProcessor(InMemoryTicketRepository(), [Mailbox(connector)], settings)
    started = time.monotonic()
    assert processor.wait_for_mail(0.3) is False
    assert time.monotonic() - started >= 0.29


class SlowPush(MemoryConnector):
    """A pushing mailbox whose wait outlasts the processor's (as a server's IDLE may)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.arrived = threading.Event()
        self.waits = 0

    def wait_for_mail(self, timeout: float) -> bool:
        """Count the waits (each would hold a server connection), then wait for mail."""
        self.waits += 1
        return self.arrived.wait(30)


def test_a_watcher_still_waiting_is_not_doubled_and_its_news_is_kept(
    settings: ProcessorSettings,
) -> None:
    """Short waits in a row start one watcher only; mail it reports later ends the next wait."""
    connector = SlowPush("Support")
    processor = MailProcessor(InMemoryTicketRepository(), [Mailbox(connector)], settings)
    assert processor.wait_for_mail(0.05) is False
    assert processor.wait_for_mail(0.05) is False
    assert processor.wait_for_mail(0.05) is False
    assert connector.waits == 1  # one watcher, still waiting, holds the one connection
    connector.arrived.set()  # it now reports mail, between two of the processor's waits
    started = time.monotonic()
    assert processor.wait_for_mail(30.0) is True
    assert time.monotonic() - started < 10.0
    assert connector.waits == 1


class BlockingIdle(MemoryConnector):
    """A pushing mailbox whose wait blocks until the connector is closed (from any thread)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.waiting = threading.Event()
        self.interrupted = threading.Event()

    def wait_for_mail(self, timeout: float) -> bool:
        """Block until :meth:`close` interrupts the wait; no mail ever arrives."""
        self.waiting.set()
        self.interrupted.wait()
        return False

    def close(self) -> None:
        """Interrupt a blocked wait, as an IMAP connection closed under its IDLE does."""
        super().close()
        self.interrupted.set()


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("halomail-idle-")]


def test_close_stops_the_watchers_and_ends_a_wait_in_progress(
    settings: ProcessorSettings,
) -> None:
    """A watcher blocked in wait_for_mail does not outlive close(); the waiting caller returns."""
    connector = BlockingIdle("Support")
    processor = MailProcessor(InMemoryTicketRepository(), [Mailbox(connector)], settings)
    answers: list[bool] = []
    caller = threading.Thread(target=lambda: answers.append(processor.wait_for_mail(600.0)))
    caller.start()
    assert connector.waiting.wait(10)
    assert [t.name for t in _watchers()] == ["halomail-idle-Support"]
    processor.close()
    assert _watchers() == []
    caller.join(10)
    assert not caller.is_alive()
    assert answers == [False]
    assert processor.wait_for_mail(600.0) is False  # closed: no watcher starts again
    assert _watchers() == []


def test_a_server_requested_wait_is_kept_across_processes_and_restarts(
    settings: ProcessorSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After 600 s on a mailbox: skipped by a new processor (a restart) until then."""
    caplog.set_level(logging.INFO, logger="halomail.runner")
    clock = Clock()
    path = tmp_path / "halomail.db"
    throttled = MemoryConnector(
        "Cloud", fail_fetch=TransientConnectorError("429 Too Many Requests", retry_after=600)
    )
    throttled.add(make_email(subject="Waiting", message_id="<waiting@customer.example>"))
    with SQLiteTicketRepository(path) as repository:
        first = MailProcessor(repository, [Mailbox(throttled)], settings, clock=clock)
        (report,) = first.run_once().mailboxes
        assert report.error is not None
        (health,) = first.health()
        first.close()
    assert health.next_attempt_at == clock.now + dt.timedelta(seconds=600)
    assert "asked us to wait" in (health.last_error or "")

    throttled.fail_fetch = None  # the server would answer now, but asked us to wait
    clock.now += dt.timedelta(minutes=5)
    with SQLiteTicketRepository(path) as repository:
        restarted = MailProcessor(repository, [Mailbox(throttled)], settings, clock=clock)
        (skipped,) = restarted.run_once().mailboxes
        assert skipped.skipped
        assert any(
            "Cloud not read" in r.getMessage() and "asked us to wait" in r.getMessage()
            for r in caplog.records
        )
        assert "asked us to wait" in (skipped.error or "")
        assert skipped.outcomes == ()
        assert restarted.health()[0].as_dict()["next_attempt_at"] == (
            (T0 + dt.timedelta(seconds=600)).isoformat()
        )
        restarted.close()

    clock.now = T0 + dt.timedelta(seconds=600)
    with SQLiteTicketRepository(path) as repository:
        later = MailProcessor(repository, [Mailbox(throttled)], settings, clock=clock)
        (read,) = later.run_once().mailboxes
        later.close()
    assert [o.outcome.value for o in read.outcomes] == ["created"]


def test_an_absurd_mailbox_wait_is_cut_to_an_hour(settings: ProcessorSettings) -> None:
    """Retry-After of a billion seconds keeps the mailbox away one hour, no longer."""
    clock = Clock()
    connector = MemoryConnector("Cloud", fail_fetch=TransientConnectorError("503", retry_after=1e9))
    processor = MailProcessor(
        InMemoryTicketRepository(), [Mailbox(connector)], settings, clock=clock
    )
    processor.run_once()
    (health,) = processor.health()
    processor.close()
    assert health.next_attempt_at == T0 + MAX_SERVER_WAIT
