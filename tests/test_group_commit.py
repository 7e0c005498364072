"""Issue 18, point 2: group commit, with exactly-once proved by killing a real worker.

With ``[processing] batch_size`` above 1, a mailbox's emails are committed several to a
transaction (:mod:`halomail.pipeline.batch`) and disposed of only after it commits.
Everything here runs on real SQLite files; the crash test runs the real ``halomail
run`` in a child process that kills itself (SIGKILL) before the k-th SQL statement
(``HALOMAIL_TEST_KILL_AFTER_STATEMENTS``), at many points of a batch, then runs it
again and counts what a user sees: one ticket and one acknowledgement per email.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.backends.base import FetchedMessage
from halomail.backends.local import MaildirConnector
from halomail.backends.memory import MemoryConnector
from halomail.errors import ConnectorError, RepositoryError
from halomail.runner import Mailbox, MailProcessor
from halomail.tickets._sql import _time
from halomail.tickets._sqlite_base import KILL_SWITCH_ENV
from halomail.tickets.models import NewTicket, Ticket
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import batch_settings, make_email

pytestmark = pytest.mark.slow

HALOMAIL = (sys.executable, "-m", "halomail.cli")
HELPDESK = "support@helpdesk.example"


def _mail(n: int) -> bytes:
    """The n-th request, from its own customer (no throttle in the way)."""
    return make_email(
        sender=f"Customer {n} <customer{n}@example.org>",
        subject=f"Request {n}",
        message_id=f"<request-{n}@example.org>",
    )


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SQLiteTicketRepository]:
    """A real SQLite file."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    yield repository
    repository.close()


def _commits(repository: SQLiteTicketRepository, processor: MailProcessor) -> int:
    """How many COMMITs one pass over the processor's mailboxes runs."""
    seen: list[str] = []
    connection: sqlite3.Connection = repository._open()  # read, never changed
    connection.set_trace_callback(seen.append)
    try:
        for mailbox in processor.mailboxes:
            processor.process_mailbox(mailbox)
    finally:
        connection.set_trace_callback(None)
    return sum(1 for statement in seen if statement == "COMMIT")


def test_five_emails_in_one_batch_cost_two_commits_and_each_is_one_acknowledged_ticket(
    repository: SQLiteTicketRepository,
) -> None:
    """A batch of five commits its attempts once and its outcomes once (plus the lease's
    two), and every email is one ticket with its acknowledgement queued."""
    emails = [_mail(n) for n in range(5)]  # built once: each carries the time as its Date
    connector = MemoryConnector("Support", emails)
    processor = MailProcessor(repository, [Mailbox(connector)], batch_settings(5))
    assert _commits(repository, processor) == 2 + 2  # attempts, outcomes; lease taken, freed
    assert sorted(t.summary for t in repository.list_tickets()) == [
        f"Request {n}" for n in range(5)
    ]
    assert len(repository.list_outgoing()) == 5
    assert connector.processed == emails


def test_one_commit_per_email_without_batches(repository: SQLiteTicketRepository) -> None:
    """With batch_size 1 each email commits its attempt and its outcome on its own."""
    connector = MemoryConnector("Support", [_mail(n) for n in range(5)])
    processor = MailProcessor(repository, [Mailbox(connector)], batch_settings(1))
    assert _commits(repository, processor) == 2 * 5 + 2


def test_the_same_email_twice_in_one_batch_is_one_ticket(
    repository: SQLiteTicketRepository,
) -> None:
    """The second copy in the same transaction sees the first: a duplicate, disposed of."""
    connector = MemoryConnector("Support", [_mail(1), _mail(2), _mail(1)])
    report = MailProcessor(repository, [Mailbox(connector)], batch_settings(5)).run_once()
    outcomes = [(o.outcome.value, o.reason.value if o.reason else None) for o in report.outcomes]
    assert outcomes == [("created", None), ("created", None), ("skipped", "duplicate")]
    assert len(repository.list_tickets()) == 2


def test_a_batch_on_postgresql_is_one_ticket_and_one_acknowledgement_per_email(
    postgres_url: str,
) -> None:
    """On PostgreSQL too a batch of five, one of them twice, commits four tickets with four
    acknowledgements, and the copy is a duplicate."""
    repository = PostgreSQLTicketRepository(postgres_url)
    try:
        emails = [_mail(n) for n in range(4)] + [_mail(2)]
        connector = MemoryConnector("Support", emails)
        report = MailProcessor(repository, [Mailbox(connector)], batch_settings(5)).run_once()
        outcomes = [o.outcome.value for o in report.outcomes]
        assert outcomes == ["created"] * 4 + ["skipped"]
        assert sorted(t.summary for t in repository.list_tickets()) == [
            f"Request {n}" for n in range(4)
        ]
        assert len(repository.list_outgoing()) == 4
        assert len(connector.processed) == 5
    finally:
        repository.close()


class Dropping(MemoryConnector):
    """A mailbox whose connection is lost after three emails."""

    def fetch(self) -> Iterator[FetchedMessage]:
        """The first three emails, then a lost connection."""
        for index, message in enumerate(super().fetch()):
            if index == 3:
                raise ConnectorError("connection reset")
            yield message


def test_a_fetch_that_breaks_midway_commits_the_emails_of_the_open_batch(
    repository: SQLiteTicketRepository,
) -> None:
    """The three emails fetched before the connection broke are committed and disposed of
    (their batch was not full yet); the mailbox's error is reported, the rest left."""
    emails = [_mail(n) for n in range(5)]  # built once: each carries the time as its Date
    connector = Dropping("Support", emails)
    report = MailProcessor(repository, [Mailbox(connector)], batch_settings(10)).run_once()
    assert [o.outcome.value for o in report.outcomes] == ["created"] * 3
    assert report.mailboxes[0].error == "ConnectorError: connection reset"
    assert connector.processed == emails[:3]
    assert len(repository.list_tickets()) == 3


class RefusesOneTicket(SQLiteTicketRepository):
    """A host repository that cannot store one particular ticket (a poison email)."""

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Refuse the ticket of "Request 2", as a broken host repository might."""
        if new.summary == "Request 2":
            raise RepositoryError("the host refused this ticket")
        return super().create_ticket(new)


def test_a_poison_email_is_isolated_and_its_batch_is_committed_without_it(
    tmp_path: Path,
) -> None:
    """An email that fails inside the batch rolls it back; alone, it is quarantined and
    the four others are one ticket and one acknowledgement each; a second pass changes
    nothing."""
    repository = RefusesOneTicket(tmp_path / "halomail.db")
    try:
        connector = MemoryConnector("Support", [_mail(n) for n in range(5)])
        processor = MailProcessor(repository, [Mailbox(connector)], batch_settings(5))
        report = processor.run_once()
        outcomes = [o.outcome.value for o in report.outcomes]
        assert outcomes == ["created", "created", "quarantined", "created", "created"]
        assert sorted(t.summary for t in repository.list_tickets()) == [
            f"Request {n}" for n in (0, 1, 3, 4)
        ]
        assert len(repository.list_outgoing()) == 4
        assert [q.reason for q in repository.list_quarantine()] == ["processing-error"]
        assert processor.run_once().outcomes == ()  # every email was disposed of
    finally:
        repository.close()


CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[processing]
batch_size = {batch_size}
mailbox_lease_seconds = 2

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"
send_acknowledgement = true
"""

EMAILS = 6
BATCH = 4


def _setup(root: Path) -> Path:
    """A halomail.toml and a Maildir inbox of EMAILS requests."""
    root.mkdir(parents=True)
    (root / "halomail.toml").write_text(CONFIG.format(batch_size=BATCH))
    inbox = MaildirConnector("Support", root / "inbox", create=True)
    inbox.close()
    for n in range(EMAILS):
        (root / "inbox" / "new" / f"{1_700_000_000 + n}.M{n}P1.mx").write_bytes(_mail(n))
    return root / "halomail.toml"


def _run(config: Path, kill_at: int | None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != KILL_SWITCH_ENV}
    if kill_at is not None:
        environment[KILL_SWITCH_ENV] = str(kill_at)
    return subprocess.run(
        [*HALOMAIL, "-c", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )


def _expire_leases(database: Path) -> None:
    """Make every lease in ``database`` one that ran out a minute ago.

    This is the clock moving on past the killed worker's lease (2 seconds), without the
    wait: the next run takes the lease over through the same expired-lease path.
    """
    if not database.exists():
        return
    ran_out = _time(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    # No leases table when the worker was killed before it made the schema.
    with (
        contextlib.closing(sqlite3.connect(database)) as connection,
        connection,
        contextlib.suppress(sqlite3.OperationalError),
    ):
        connection.execute("UPDATE leases SET held_until = ?", (ran_out,))


def _assert_a_clean_run_makes_each_request_once(config: Path) -> None:
    """Run `halomail run --once` without the kill switch: every request is then exactly
    one ticket with its acknowledgement, nothing is quarantined, the inbox is empty."""
    again = _run(config, None)
    assert again.returncode == 0, again.stderr
    desk = config.parent
    with SQLiteTicketRepository(desk / "halomail.db") as repository:
        summaries = sorted(t.summary for t in repository.list_tickets())
        acknowledged = sorted(m.ticket_id for m in repository.list_outgoing())
        tickets = sorted(t.id for t in repository.list_tickets())
        quarantined = [(q.reason, q.message_id) for q in repository.list_quarantine()]
    assert summaries == [f"Request {n}" for n in range(EMAILS)]
    assert acknowledged == tickets
    assert quarantined == []
    inbox = desk / "inbox"
    assert [p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir()] == []


# An uninterrupted run costs about 110 statements: the loop token and the lease (1-11),
# the first batch's attempts (12-15) and outcomes (16-36: its reads, three inserts per
# email, then the writes it kept and its COMMIT), the second batch's (37-55), then the
# outbox sent (59-101). Every third statement, each step of a batch's end, and every
# sixth of the sending.
_BATCH_ENDS = {13, 14, 15, 32, 33, 34, 35, 36, 40, 51, 52, 53, 54, 55}
KILL_POINTS = sorted({*range(2, 60, 3), *_BATCH_ENDS, *range(61, 102, 6)})


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_worker_killed_anywhere_in_a_batch_leaves_each_email_one_ticket_and_one_ack(
    tmp_path: Path, kill_at: int
) -> None:
    """SIGKILL before the k-th statement of `halomail run` (batches of 4 over 6 emails),
    then a clean run: every email is exactly one ticket with one acknowledgement, and
    the inbox is empty."""
    config = _setup(tmp_path / "desk")
    killed = _run(config, kill_at)
    if kill_at < 100:  # past that, the run may have ended before the switch
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    _expire_leases(tmp_path / "desk" / "halomail.db")
    _assert_a_clean_run_makes_each_request_once(config)
    sent = list((tmp_path / "desk" / "outbox").rglob("*"))
    assert len([p for p in sent if p.is_file()]) <= EMAILS  # never one ack twice


@pytest.mark.parametrize("kill_at", [18, 22, 26])
def test_a_copy_of_an_email_in_its_batch_does_not_count_as_a_crash(
    tmp_path: Path, kill_at: int
) -> None:
    """A mailbox holding the same email twice (the very same bytes) in one batch, and a
    worker killed once inside that batch's transaction: the next run is the email's
    first retry, not its second crash, so nothing is quarantined; every request is one
    ticket with one acknowledgement, and the copy a duplicate."""
    config = _setup(tmp_path / "desk")
    new = tmp_path / "desk" / "inbox" / "new"
    # Delivered at the same instant, the copy sorts right behind its original: the
    # first batch of four holds both.
    original = new / "1700000001.M1P1.mx"
    copy = new / "1700000001.M1P1.mx-copy"
    copy.write_bytes(original.read_bytes())
    os.utime(copy, ns=(original.stat().st_atime_ns, original.stat().st_mtime_ns))
    killed = _run(config, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _expire_leases(tmp_path / "desk" / "halomail.db")
    _assert_a_clean_run_makes_each_request_once(config)
