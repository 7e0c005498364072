"""Mailboxes are read concurrently, within a configured bound, without doubling anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import attrs

from halomail.backends.base import FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.runner import Mailbox, MailProcessor, ProcessingOutcome, ProcessorSettings
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email


class Gauge:
    """Counts how many mailboxes are being read at the same moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        """One more mailbox is being read."""
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        """One mailbox is done."""
        with self.lock:
            self.now -= 1


class Slow(MemoryConnector):
    """A memory mailbox whose server takes a moment to answer, and that reports to a gauge."""

    def __init__(self, name: str, gauge: Gauge, barrier: threading.Barrier | None = None) -> None:
        super().__init__(name)
        self.gauge = gauge
        self.barrier = barrier

    def fetch(self) -> Iterator[FetchedMessage]:
        self.gauge.enter()
        try:
            if self.barrier is not None:
                # Only passes when the other mailbox is being read at the same time.
                self.barrier.wait()
            time.sleep(0.05)
            return iter(list(super().fetch()))
        finally:
            self.gauge.leave()


def test_two_mailboxes_are_read_at_the_same_time(
    repository: TicketRepository, settings: ProcessorSettings
) -> None:
    """Both mailboxes are inside fetch together (a barrier of two passes), and all mail lands."""
    gauge = Gauge()
    barrier = threading.Barrier(2, timeout=10)
    first, second = Slow("First", gauge, barrier), Slow("Second", gauge, barrier)
    for index in range(5):
        first.add(make_email(subject=f"First {index}", message_id=f"<f{index}@c.example>"))
        second.add(make_email(subject=f"Second {index}", message_id=f"<s{index}@c.example>"))
    processor = MailProcessor(repository, [Mailbox(first), Mailbox(second)], settings)
    seen: list[ProcessingOutcome] = []
    report = processor.run_once(on_outcome=seen.append)
    assert [m.error for m in report.mailboxes] == [None, None]
    assert [m.name for m in report.mailboxes] == ["First", "Second"]  # the mailboxes' order
    assert gauge.most == 2
    assert len(seen) == 10
    assert sorted(o.outcome.value for o in seen) == ["created"] * 10
    assert len({o.ticket_id for o in seen}) == 10
    assert len(repository.list_tickets(limit=100)) == 10


def test_no_more_mailboxes_than_the_bound_are_read_at_once(
    repository: TicketRepository, settings: ProcessorSettings
) -> None:
    """With concurrent_mailboxes = 2, six mailboxes are never read more than two at a time."""
    gauge = Gauge()
    connectors = [Slow(f"Box {i}", gauge) for i in range(6)]
    for index, connector in enumerate(connectors):
        connector.add(make_email(message_id=f"<m{index}@c.example>"))
    processor = MailProcessor(
        repository,
        [Mailbox(c) for c in connectors],
        attrs.evolve(settings, concurrent_mailboxes=2),
    )
    report = processor.run_once()
    assert gauge.most == 2
    assert [len(m.outcomes) for m in report.mailboxes] == [1] * 6
    assert len(repository.list_tickets(limit=100)) == 6


def test_one_at_a_time_reads_in_order(
    repository: TicketRepository, settings: ProcessorSettings
) -> None:
    """concurrent_mailboxes = 1 reads the mailboxes one after the other, in order."""
    gauge = Gauge()
    connectors = [Slow(f"Box {i}", gauge) for i in range(3)]
    processor = MailProcessor(
        repository,
        [Mailbox(c) for c in connectors],
        attrs.evolve(settings, concurrent_mailboxes=1),
    )
    processor.run_once()
    assert gauge.most == 1
