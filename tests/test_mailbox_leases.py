"""Mailbox leases: a mailbox is read by one runner at a time, when the repository has leases."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator

import attrs

from halomail import Outcome
from halomail.backends.base import FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.runner import LEASE_TTL, Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import NewTicket, Ticket
from tests.conftest import make_email

START = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


class LeasingRepository(InMemoryTicketRepository):
    """A memory repository with the ledger's leases, kept in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[str, tuple[str, dt.datetime]] = {}  # name → (owner, expiry)
        self.acquired: list[tuple[str, str, dt.datetime]] = []  # name, owner, at

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take or renew ``name`` for ``owner`` unless another owner holds it unexpired."""
        held = self.leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.leases[name] = (owner, now + ttl)
        self.acquired.append((name, owner, now))
        return True

    def release_lease(self, name: str, owner: str) -> None:
        """Drop ``name`` if ``owner`` holds it."""
        if self.leases.get(name, ("",))[0] == owner:
            del self.leases[name]


def ticking(step: dt.timedelta) -> Callable[[], dt.datetime]:
    """A clock that moves ``step`` forward each time it is read (a slow mailbox)."""
    now = [START]

    def clock() -> dt.datetime:
        now[0] += step
        return now[0]

    return clock


def test_a_mailbox_another_runner_holds_is_skipped_with_a_note(
    settings: ProcessorSettings,
) -> None:
    """Support is leased elsewhere: not read, its mail untouched; Sales is read; the run is ok."""
    repository = LeasingRepository()
    repository.leases["mailbox:Support"] = ("other-host:42", START + dt.timedelta(hours=1))
    support = MemoryConnector("Support", [make_email()])
    sales = MemoryConnector("Sales", [make_email(message_id="<sales-1@customer.example>")])
    processor = MailProcessor(
        repository, [Mailbox(support), Mailbox(sales)], settings, clock=lambda: START
    )
    report = processor.run_once()
    skipped, read = report.mailboxes
    assert skipped.skipped
    assert skipped.outcomes == ()
    assert skipped.note is not None
    assert "another runner holds its lease" in skipped.note
    assert skipped.error is None
    assert [o.outcome for o in read.outcomes] == [Outcome.CREATED]
    assert report.ok
    assert len(support.remaining) == 1
    assert repository.leases == {
        "mailbox:Support": ("other-host:42", START + dt.timedelta(hours=1))
    }


def test_a_lease_is_taken_while_reading_and_released_after(settings: ProcessorSettings) -> None:
    """The processor holds mailbox:Support while reading it and gives it back at the end."""
    repository = LeasingRepository()
    connector = MemoryConnector("Support", [make_email()])
    processor = MailProcessor(repository, [Mailbox(connector)], settings, clock=lambda: START)
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert [name for name, _, _ in repository.acquired] == ["mailbox:Support"]
    assert repository.leases == {}
    # Released, so a second processor (another runner) may read it next.
    other = MailProcessor(repository, [Mailbox(connector)], settings, clock=lambda: START)
    other.run_once()
    owners = {owner for _, owner, _ in repository.acquired}
    assert len(owners) == 2


def test_an_expired_lease_of_a_dead_runner_is_taken_over(settings: ProcessorSettings) -> None:
    """A lease whose runner died (expired) does not keep the mailbox unread."""
    repository = LeasingRepository()
    repository.leases["mailbox:Support"] = ("dead-host:1", START - dt.timedelta(seconds=1))
    connector = MemoryConnector("Support", [make_email()])
    processor = MailProcessor(repository, [Mailbox(connector)], settings, clock=lambda: START)
    assert [o.outcome for o in processor.run_once().outcomes] == [Outcome.CREATED]


def test_a_long_mailbox_renews_its_lease_while_it_is_read(settings: ProcessorSettings) -> None:
    """One email at a time, 12 emails over more than a lease's lifetime: renewed; none lost."""
    repository = LeasingRepository()
    # Twelve different emails: twelve copies of one would meet the loop cap (loop-suspected).
    emails = [
        make_email(subject=f"Problem {i}", message_id=f"<m{i}@customer.example>") for i in range(12)
    ]
    connector = MemoryConnector("Support", emails)
    clock = ticking(LEASE_TTL / 10)
    one_at_a_time = attrs.evolve(settings, batch_size=1)
    processor = MailProcessor(repository, [Mailbox(connector)], one_at_a_time, clock=clock)
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 12
    times = [at for _, _, at in repository.acquired]
    assert len(times) >= 3  # taken, then renewed as the reading went on
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap < LEASE_TTL for gap in gaps)  # never left to expire in between
    assert repository.leases == {}


class SlowServer(MemoryConnector):
    """A mailbox whose server takes ``per_email`` to hand over each email, and
    ``at_end`` to say there are no more; the time passes on ``clock``."""

    def __init__(
        self,
        emails: list[bytes],
        clock: SteppedClock,
        per_email: dt.timedelta,
        at_end: dt.timedelta,
    ) -> None:
        super().__init__("Support", emails)
        self._clock = clock
        self._per_email = per_email
        self._at_end = at_end

    def fetch(self) -> Iterator[FetchedMessage]:
        """Each email after ``per_email``; the end of the listing after ``at_end``."""
        for fetched in super().fetch():
            self._clock.now += self._per_email
            yield fetched
        self._clock.now += self._at_end


class SteppedClock:
    """A clock that moves only when the mailbox's server makes us wait."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


class CreatingUnderLease(LeasingRepository):
    """Records, as each ticket is created, how long the lease on Support has left."""

    def __init__(self, clock: SteppedClock) -> None:
        super().__init__()
        self._clock = clock
        self.lease_left: list[dt.timedelta] = []

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Note the lease's remaining life, then create the ticket."""
        _, expiry = self.leases["mailbox:Support"]
        self.lease_left.append(expiry - self._clock())
        return super().create_ticket(new)


def test_a_long_mailbox_in_batches_is_committed_only_under_a_fresh_lease(
    settings: ProcessorSettings,
) -> None:
    """Batches of 10, 25 emails over 2.5 leases and a slow end: renewed between batches,
    every batch committed with two thirds of a lease ahead; none lost."""
    assert settings.batch_size == 10  # the default
    clock = SteppedClock()
    repository = CreatingUnderLease(clock)
    emails = [
        make_email(subject=f"Problem {i}", message_id=f"<m{i}@customer.example>") for i in range(25)
    ]
    # The last batch (5 emails) waits half a lease for the listing's end before its commit.
    connector = SlowServer(emails, clock, per_email=LEASE_TTL / 10, at_end=LEASE_TTL / 2)
    processor = MailProcessor(repository, [Mailbox(connector)], settings, clock=clock)
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 25
    times = [at for _, _, at in repository.acquired]
    assert len(times) >= 4  # taken, then renewed as the reading went on
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap < LEASE_TTL for gap in gaps)  # never left to expire in between
    assert len(repository.lease_left) == 25
    assert all(left > LEASE_TTL * 2 / 3 for left in repository.lease_left)
    assert repository.leases == {}
    assert connector.remaining == []


def test_a_mailbox_whose_lease_is_taken_over_stops_being_read(
    settings: ProcessorSettings,
) -> None:
    """One email at a time, the lease taken mid-read: the mailbox stops, the rest waits."""
    repository = LeasingRepository()
    connector = MemoryConnector(
        "Support", [make_email(message_id=f"<m{i}@customer.example>") for i in range(12)]
    )
    clock = ticking(LEASE_TTL / 10)
    original = repository.acquire_lease

    def stolen_after_first(name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        if repository.acquired:  # the renewal: someone else holds it by now
            repository.leases[name] = ("thief:7", now + ttl)
        return original(name, owner, now=now, ttl=ttl)

    repository.acquire_lease = stolen_after_first  # type: ignore[method-assign]
    one_at_a_time = attrs.evolve(settings, batch_size=1)
    processor = MailProcessor(repository, [Mailbox(connector)], one_at_a_time, clock=clock)
    (report,) = processor.run_once().mailboxes
    assert report.error is not None
    assert "taken over" in report.error
    assert 0 < len(report.outcomes) < 12
    assert len(connector.remaining) == 12 - len(report.outcomes)
    assert repository.leases["mailbox:Support"][0] == "thief:7"  # not released from under it


def test_a_mailbox_read_in_batches_stops_at_a_batch_boundary_when_its_lease_is_taken(
    settings: ProcessorSettings,
) -> None:
    """Batches of 10, the lease taken after the first batch committed: the mailbox stops;
    the first batch is disposed of, the emails gathered since and the rest wait, untouched."""
    clock = SteppedClock()
    repository = LeasingRepository()
    emails = [
        make_email(subject=f"Problem {i}", message_id=f"<m{i}@customer.example>") for i in range(25)
    ]
    connector = SlowServer(emails, clock, per_email=LEASE_TTL / 10, at_end=dt.timedelta(0))
    original = repository.acquire_lease

    def stolen_once_a_batch_is_in(
        name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta
    ) -> bool:
        if repository.list_tickets():  # a renewal after the first commit: someone else has it
            repository.leases[name] = ("thief:7", now + ttl)
        return original(name, owner, now=now, ttl=ttl)

    repository.acquire_lease = stolen_once_a_batch_is_in  # type: ignore[method-assign]
    processor = MailProcessor(repository, [Mailbox(connector)], settings, clock=clock)
    (report,) = processor.run_once().mailboxes
    assert report.error is not None
    assert "taken over" in report.error
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 10  # the first batch
    assert len(repository.list_tickets()) == 10
    assert [ref for ref, _ in connector.acks] == [o.ref for o in report.outcomes]
    assert len(connector.remaining) == 15
    assert repository.leases["mailbox:Support"][0] == "thief:7"  # not released from under it
