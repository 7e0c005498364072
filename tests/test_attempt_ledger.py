"""The attempt ledger (issue 13, item 2): the contract on both shipped repositories, and a
host repository without it keeps working as before."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from halomail import Mailbox, MailProcessor, ProcessorSettings
from halomail.backends.base import FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.pipeline.attempts import begin_many, keys
from halomail.pipeline.results import Outcome, Reason
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import NewTicket, Ticket
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

# Detailed assertion messages from the shipped suite, as its docstring advises hosts.
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import AttemptLedgerContract  # noqa: E402


class TestInMemoryAttempts(AttemptLedgerContract):
    """The in-memory repository keeps the attempt ledger's contract."""

    @pytest.fixture
    def repository(self) -> InMemoryTicketRepository:
        """A fresh in-memory repository."""
        return InMemoryTicketRepository()


class TestSQLiteAttempts(AttemptLedgerContract):
    """The SQLite repository keeps the attempt ledger's contract."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[SQLiteTicketRepository]:
        """A fresh SQLite file."""
        with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
            yield repository


class WithoutAttempts(InMemoryTicketRepository):
    """A host repository from before attempts: it counts every call to the old methods."""

    begin_attempt = None  # type: ignore[assignment]  # the host never had these
    finish_attempt = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Count the transactions (one per email, as before attempts)."""
        self.transactions += 1
        with super().transaction():
            yield


def test_a_host_repository_without_attempts_processes_mail_as_before() -> None:
    """No begin_attempt/finish_attempt: tickets are made, one transaction per email without
    batches and one per batch with them, no error."""
    emails = [make_email(subject=f"Request {n}", message_id=f"<r{n}@x.example>") for n in (1, 2)]
    for batch_size, transactions in ((1, 2), (10, 1)):
        repository = WithoutAttempts()
        connector = MemoryConnector("Support", emails)
        settings = ProcessorSettings(loop_token="t", batch_size=batch_size)
        report = MailProcessor(repository, [Mailbox(connector)], settings).run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.CREATED, Outcome.CREATED]
        assert repository.transactions == transactions
        assert sorted(t.summary for t in repository.list_tickets()) == ["Request 1", "Request 2"]


def test_a_processed_email_leaves_no_attempt_behind(tmp_path: Path) -> None:
    """After an email's outcome commits, its attempt is gone: a re-run would count from zero."""
    raw = make_email()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        connector = MemoryConnector("Support", [raw])
        settings = ProcessorSettings(loop_token="t")
        MailProcessor(repository, [Mailbox(connector)], settings).run_once()
        key, _ = keys("Support", raw)
        assert repository.begin_attempt(key, now=dt.datetime.now(dt.UTC)) == 0


class FailingTickets(InMemoryTicketRepository):
    """A repository whose ticket writes fail with the error given, until told otherwise."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Fail with the error while there is one."""
        if self.error is not None:
            raise self.error
        return super().create_ticket(new)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TransientRepositoryError("database is locked"), Outcome.RETRY),
        (RepositoryError("the host's database refused it"), Outcome.QUARANTINED),
    ],
)
def test_a_failure_that_leaves_the_process_alive_is_not_counted_as_a_crash(
    error: Exception, outcome: Outcome
) -> None:
    """Failing three times without dying leaves no attempt: never a repeated-crash."""
    raw = make_email()
    repository = FailingTickets(error)
    settings = ProcessorSettings(loop_token="t")
    for _ in range(3):
        connector = MemoryConnector("Support", [raw])
        report = MailProcessor(repository, [Mailbox(connector)], settings).run_once()
        assert [o.outcome for o in report.outcomes] == [outcome]
        assert Reason.REPEATED_CRASH not in [o.reason for o in report.outcomes]
    key, _ = keys("Support", raw)
    assert repository.begin_attempt(key, now=dt.datetime.now(dt.UTC)) == 0


class GoesDown(InMemoryTicketRepository):
    """A host database that goes down while an email's ticket is being written.

    When armed, writing a ticket takes the database down: that write and every
    transaction after it fail as transient until :meth:`come_back`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.down = False

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Go down here when armed."""
        if self.armed:
            self.armed, self.down = False, True
            raise TransientRepositoryError("the connection to the database was lost")
        return super().create_ticket(new)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Fail while down, as every write would."""
        if self.down:
            raise TransientRepositoryError("the database is not reachable")
        with super().transaction():
            yield

    def come_back(self) -> None:
        """The database answers again."""
        self.down = False


def test_an_email_caught_by_two_database_outages_is_not_taken_for_a_crash() -> None:
    """Down twice while the same email was in flight (its attempt not cleared either time):
    the third pass makes its ticket; it is not quarantined as repeated-crash."""
    raw = make_email()
    repository = GoesDown()
    connector = MemoryConnector("Support", [raw])
    processor = MailProcessor(repository, [Mailbox(connector)], ProcessorSettings(loop_token="t"))
    for _ in range(2):
        repository.armed = True
        report = processor.run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.RETRY]
        repository.come_back()
    report = processor.run_once()
    assert [(o.outcome, o.reason) for o in report.outcomes] == [(Outcome.CREATED, None)]
    assert repository.list_quarantine() == []
    key, _ = keys("Support", raw)
    assert repository.begin_attempt(key, now=dt.datetime.now(dt.UTC)) == 0


class OneByOne(InMemoryTicketRepository):
    """A host repository with the ledger's two methods, but no ``begin_attempts``."""

    begin_attempts = None  # type: ignore[assignment]  # the host wrote only the basics


@pytest.mark.parametrize(
    "kind", [InMemoryTicketRepository, OneByOne], ids=["batched", "one-by-one"]
)
def test_a_batch_is_begun_up_to_a_copy_of_an_email_it_holds(
    kind: type[InMemoryTicketRepository],
) -> None:
    """Emails a, b, a again, c: only a and b are begun, each once, with no earlier
    attempt; the copy and what follows it are left for after the batch's commit."""
    repository = kind()
    a, b, c = (make_email(message_id=f"<{n}@customer.example>") for n in "abc")
    batch = [FetchedMessage(f"ref-{n}", raw, len(raw)) for n, raw in enumerate([a, b, a, c])]
    now = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    with repository.transaction():
        begun = begin_many(repository, "Support", batch, now)
    assert [(attempt.key, attempt.earlier) for attempt in begun if attempt] == [
        (keys("Support", a)[0], 0),
        (keys("Support", b)[0], 0),
    ]
    assert len(begun) == 2
    # Begun once: the next attempt at a finds exactly one unfinished before it.
    assert repository.begin_attempt(keys("Support", a)[0], now=now) == 1
