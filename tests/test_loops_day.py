"""Issue 13, item 3: a crude auto-responder stops within the long window.

The responder is the crudest kind: no ``Auto-Submitted``, no ``Precedence``, no list
headers, a fixed subject, and an answer to every acknowledgement it receives. The
10-per-10-minutes throttle bounds its rate; these tests simulate a whole day with a
clock that advances two minutes per cycle and check that the total is bounded too,
while a person who writes twenty different emails that day gets twenty tickets.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.pipeline.results import Reason
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

RESPONDER = "autoreply@crude.example"
HUMAN = "alice@customer.example"
CYCLE = dt.timedelta(minutes=2)
CYCLES_A_DAY = 720
# The documented defaults (docs/configuration.md, [processing]).
ACK_DAILY_COUNT = 30
LOOP_REPEAT_COUNT = 3


class Clock:
    """A clock the test moves by hand: the processor and the repository read it."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        """The current time."""
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock starting on a morning."""
    return Clock()


@pytest.fixture(params=["memory", "sqlite"])
def repo(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> Iterator[TicketRepository]:
    """A memory and a real SQLite repository, both on the test's clock."""
    if request.param == "memory":
        yield InMemoryTicketRepository(clock=clock)
        return
    sqlite = SQLiteTicketRepository(tmp_path / "halomail.db", clock=clock)
    yield sqlite
    sqlite.close()


class CrudeResponder:
    """Answers every mail sent to it with the same subject, and a body that is either
    always the same or numbered (a case number that changes every time)."""

    def __init__(self, connector: MemoryConnector, *, numbered: bool) -> None:
        self.connector = connector
        self.numbered = numbered
        self.sent = 0

    def write(self) -> None:
        """Send one answer."""
        self.sent += 1
        body = "Thank you for your message. We will answer within two days.\n"
        if self.numbered:
            body += f"Your case number is {1000 + self.sent}.\n"
        self.connector.add(
            make_email(
                sender=f"Crude Co <{RESPONDER}>",
                subject="Thank you for contacting Crude Co",
                body=body,
                message_id=f"<answer-{self.sent}@crude.example>",
            )
        )

    def answer(self, transport: MemoryTransport, seen: int) -> int:
        """Answer every mail sent to the responder since ``seen``; return the new count."""
        for outgoing in transport.sent[seen:]:
            if RESPONDER in outgoing.recipients:
                self.write()
        return len(transport.sent)


def _simulate_day(
    repo: TicketRepository, settings: ProcessorSettings, clock: Clock, *, numbered: bool
) -> tuple[MemoryTransport, list[int]]:
    """A day of the responder answering us and a person writing 20 different emails."""
    connector = MemoryConnector("Support")
    transport = MemoryTransport()
    processor = MailProcessor(
        repo, [Mailbox(connector)], settings, transport=transport, clock=clock
    )
    responder = CrudeResponder(connector, numbered=numbered)
    responder.write()  # it starts the exchange itself
    human_tickets: list[int] = []
    seen = 0
    for cycle in range(CYCLES_A_DAY):
        if cycle % 36 == 0:  # every 72 minutes, 20 times in the day
            connector.add(
                make_email(
                    sender=f"Alice Martin <{HUMAN}>",
                    subject=f"Question {cycle // 36 + 1} about my order",
                    body=f"This is question number {cycle // 36 + 1}, different each time.\n",
                    message_id=f"<question-{cycle}@customer.example>",
                )
            )
        report = processor.run_once()
        human_tickets += [
            o.ticket_id
            for o in report.outcomes
            if o.ticket_id is not None and o.subject.startswith("Question")
        ]
        seen = responder.answer(transport, seen)
        clock.now += CYCLE
    return transport, human_tickets


def _tickets_from(repo: TicketRepository, address: str) -> int:
    return sum(1 for t in repo.list_tickets(limit=10_000) if t.user_email == address)


def _mail_to(transport: MemoryTransport, address: str) -> int:
    return sum(1 for mail in transport.sent if address in mail.recipients)


def test_identical_answers_stop_after_the_repeat_count(
    repo: TicketRepository, settings: ProcessorSettings, clock: Clock
) -> None:
    """A responder repeating one email gets loop_repeat_count tickets and acks in a day."""
    transport, human_tickets = _simulate_day(repo, settings, clock, numbered=False)
    assert _tickets_from(repo, RESPONDER) == LOOP_REPEAT_COUNT
    assert _mail_to(transport, RESPONDER) == LOOP_REPEAT_COUNT
    assert len(set(human_tickets)) == 20
    assert _tickets_from(repo, HUMAN) == 20


def test_numbered_answers_stop_at_the_daily_acknowledgement_cap(
    repo: TicketRepository, settings: ProcessorSettings, clock: Clock
) -> None:
    """A responder varying its body gets ack_daily_count acks in a day, then stops."""
    transport, human_tickets = _simulate_day(repo, settings, clock, numbered=True)
    # Each acknowledgement brought one answer, each answer a ticket: the last answer's
    # ticket is the one not acknowledged, and with no acknowledgement there is no answer.
    assert _mail_to(transport, RESPONDER) == ACK_DAILY_COUNT
    assert _tickets_from(repo, RESPONDER) == ACK_DAILY_COUNT + 1
    assert len(set(human_tickets)) == 20
    assert _mail_to(transport, HUMAN) == 20


def test_repeats_are_ignored_with_loop_suspected_and_warned_once(
    repo: TicketRepository,
    settings: ProcessorSettings,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten copies at once: three tickets, seven loop-suspected, one WARNING."""
    connector = MemoryConnector("Support")
    processor = MailProcessor(
        repo, [Mailbox(connector)], settings, transport=MemoryTransport(), clock=clock
    )
    responder = CrudeResponder(connector, numbered=False)
    for _ in range(10):
        responder.write()
    with caplog.at_level(logging.WARNING):
        report = processor.run_once()
    reasons = [o.reason for o in report.outcomes]
    assert reasons.count(Reason.LOOP_SUSPECTED) == 10 - LOOP_REPEAT_COUNT
    assert _tickets_from(repo, RESPONDER) == LOOP_REPEAT_COUNT
    warnings = [r for r in caplog.records if "loop suspected" in r.getMessage()]
    assert len(warnings) == 1


def test_the_repeat_count_starts_again_when_the_window_has_passed(
    repo: TicketRepository, clock: Clock
) -> None:
    """After loop_window, the same email opens a ticket again (a smaller window here)."""
    settings = ProcessorSettings(
        loop_token="t", loop_repeat_count=1, loop_window=dt.timedelta(hours=1)
    )
    connector = MemoryConnector("Support")
    processor = MailProcessor(
        repo, [Mailbox(connector)], settings, transport=MemoryTransport(), clock=clock
    )
    responder = CrudeResponder(connector, numbered=False)
    outcomes = []
    for minutes in (0, 30, 61):
        clock.now += dt.timedelta(minutes=minutes)
        responder.write()
        report = processor.run_once()
        outcomes += [o.reason for o in report.outcomes]
    assert outcomes[1] == Reason.LOOP_SUSPECTED
    assert outcomes[0] != Reason.LOOP_SUSPECTED
    assert outcomes[2] != Reason.LOOP_SUSPECTED
    assert _tickets_from(repo, RESPONDER) == 2


def test_the_same_email_to_two_mailboxes_counts_in_each(
    repo: TicketRepository, settings: ProcessorSettings, clock: Clock
) -> None:
    """The cap is per mailbox: one email sent to Sales and Support is two contents,
    when each mailbox processes its copy (``copies = "process"``; by default the copy in
    the second mailbox is skipped, see tests/test_copies_across_mailboxes.py)."""
    mailboxes = [MemoryConnector("Support"), MemoryConnector("Sales")]
    each = attrs.evolve(settings, copies="process")
    processor = MailProcessor(
        repo, [Mailbox(c) for c in mailboxes], each, transport=MemoryTransport(), clock=clock
    )
    for connector in mailboxes:
        responder = CrudeResponder(connector, numbered=False)
        for _ in range(LOOP_REPEAT_COUNT + 1):
            responder.write()
    report = processor.run_once()
    reasons = [o.reason for o in report.outcomes]
    assert reasons.count(Reason.LOOP_SUSPECTED) == 2
    assert _tickets_from(repo, RESPONDER) == 2 * LOOP_REPEAT_COUNT
