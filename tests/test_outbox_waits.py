"""Issue 16, item 6: a server's requested wait holds the transport, in this run and the next.

A transport that raises :class:`~halomail.errors.TransientTransportError` with a
``retry_after`` (Graph's ``Retry-After`` on a 429) postpones that mail at least that
long, and stops the pass's other mail through the transport; another outbox on the
same SQLite file (another process) honours the wait too. Absurd waits are cut to
:data:`~halomail.outbound.outbox.MAX_SERVER_WAIT`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from halomail.backends.base import OutgoingEmail
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import TransientTransportError
from halomail.outbound.outbox import Outbox, SenderIdentity, server_wait
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import NewOutgoing, OutboxMail, OutboxStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import HELPDESK, make_email

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        """The current time."""
        return self.now


def _sender(_mail: OutboxMail) -> SenderIdentity:
    return SenderIdentity(HELPDESK)


def _outbox(repository: SQLiteTicketRepository, transport: MemoryTransport, clock: Clock) -> Outbox:
    return Outbox(repository, transport, _sender, loop_token="t" * 32, clock=clock)


def _queue(repository: SQLiteTicketRepository, count: int) -> None:
    for n in range(count):
        repository.enqueue_outgoing(
            NewOutgoing(
                message_id=f"m{n}@helpdesk.example",
                to=("c@customer.example",),
                subject="s",
                text="t",
            )
        )


def _throttled(seconds: float) -> MemoryTransport:
    def throttle(_email: OutgoingEmail) -> None:
        raise TransientTransportError("429 Too Many Requests", retry_after=seconds)

    return MemoryTransport(throttle)


def test_a_throttle_holds_every_mail_of_the_transport_here_and_in_another_process(
    tmp_path: Path,
) -> None:
    """Retry-After 900 s: one try in the pass; nothing before 900 s, anywhere; then all sent."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        _queue(repository, 3)
        transport = _throttled(900)
        report = _outbox(repository, transport, clock).send_due()
        assert len(transport.attempts) == 1
        assert report.sent == 0
        assert report.halted == ()  # not a configuration error: the run stays ok
        assert any("asked us to wait" in line for line in report.throttled)
        first = next(m for m in repository.list_outgoing() if m.attempts == 1)
        assert first.next_attempt_at is not None
        assert first.next_attempt_at >= T0 + dt.timedelta(seconds=900)

        # Another process, ten minutes later (the claims have run out): still waiting.
        transport.handler = None
        clock.now = T0 + dt.timedelta(minutes=10)
        other = _outbox(repository, transport, clock).send_due()
        assert other.sent == 0
        assert any("as its server asked" in line for line in other.throttled)
        assert len(transport.attempts) == 1

        clock.now = T0 + dt.timedelta(seconds=901)
        assert _outbox(repository, transport, clock).send_due().sent == 3
        assert {m.status for m in repository.list_outgoing()} == {OutboxStatus.SENT}


def test_an_absurd_wait_is_cut_to_an_hour(tmp_path: Path) -> None:
    """Retry-After of a billion seconds: the mail is due again after MAX_SERVER_WAIT (1 hour)."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        _queue(repository, 1)
        transport = _throttled(1e9)
        _outbox(repository, transport, clock).send_due()
        (mail,) = repository.list_outgoing()
        assert mail.next_attempt_at == T0 + dt.timedelta(hours=1)

        transport.handler = None
        clock.now = T0 + dt.timedelta(hours=1)
        assert _outbox(repository, transport, clock).send_due().sent == 1


def test_a_wait_shorter_than_the_backoff_keeps_the_backoff(tmp_path: Path) -> None:
    """Retry-After 1 s does not make the retry sooner than the outbox's own backoff."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        _queue(repository, 1)
        _outbox(repository, _throttled(1), clock).send_due()
        (mail,) = repository.list_outgoing()
    assert mail.next_attempt_at is not None
    # The first backoff is 60 s with up to 20% jitter.
    assert mail.next_attempt_at >= T0 + dt.timedelta(seconds=48)


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (None, None),
        (0, None),
        (-5, None),
        (float("nan"), None),
        (float("inf"), None),
        ("soon", None),
        (30, dt.timedelta(seconds=30)),
        (2.5, dt.timedelta(seconds=2.5)),
        (7200, dt.timedelta(hours=1)),
    ],
)
def test_server_wait_keeps_sane_waits_and_bounds_the_rest(
    asked: object, expected: dt.timedelta | None
) -> None:
    """Missing, non-positive or non-numeric waits are ignored; long ones are cut to one hour."""
    assert server_wait(asked) == expected  # type: ignore[arg-type]


def test_a_throttled_transport_leaves_the_run_ok(
    tmp_path: Path, settings: ProcessorSettings
) -> None:
    """Through MailProcessor: a 429 with Retry-After is reported as throttled, not as a failure."""
    clock = Clock()
    connector = MemoryConnector("Support")
    connector.add(make_email(subject="Printer", message_id="<printer@customer.example>"))
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        processor = MailProcessor(
            repository, [Mailbox(connector)], settings, transport=_throttled(120), clock=clock
        )
        report = processor.run_once()
        processor.close()
    assert report.ok
    assert report.sent.halted == ()
    assert len(report.sent.throttled) == 1
    assert report.sent.retrying == 1
