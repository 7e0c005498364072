"""``[processing] ledger_retention_days``: the ledger stops growing, and no email that is
still in its mailbox is processed twice because its record was forgotten.

The repositories' two methods are checked on memory, SQLite and the session's private
PostgreSQL; the processor runs against real SQLite with its clock moved on by weeks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail import build_processor, load_config
from halomail.backends.base import Disposition
from halomail.backends.local import MboxConnector
from halomail.backends.memory import MemoryConnector
from halomail.errors import ConfigError, TransientConnectorError
from halomail.inbound.parse import parse_email
from halomail.outbound.outbox import SendIntents
from halomail.pipeline import attempts
from halomail.pipeline.loops import LOOP_STATE, repeat_key
from halomail.pipeline.results import Outcome, Reason
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets._common import TIMED_STATE_PREFIXES
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import NewOutgoing, NewTicket, OutboxMail, OutboxStatus, utcnow
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import LedgerRetention
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email

# Detailed assertion messages from the shipped suite, as its docstring advises hosts.
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import LedgerRetentionContract  # noqa: E402

DAY = dt.timedelta(days=1)
ALICE = "alice@customer.example"
START = utcnow()


class TestInMemory(LedgerRetentionContract):
    """The in-memory repository keeps the contract."""

    @pytest.fixture
    def repository(self) -> InMemoryTicketRepository:
        """Fresh and empty."""
        return InMemoryTicketRepository()


class TestSQLite(LedgerRetentionContract):
    """SQLite keeps the contract."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[SQLiteTicketRepository]:
        """A new database file."""
        with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
            yield repo


class TestPostgreSQL(LedgerRetentionContract):
    """PostgreSQL keeps the contract."""

    @pytest.fixture
    def repository(self, postgres_url: str) -> Iterator[PostgreSQLTicketRepository]:
        """A fresh database of its own on the session's server."""
        with PostgreSQLTicketRepository(postgres_url) as repo:
            yield repo


@pytest.mark.parametrize(
    "repository",
    [InMemoryTicketRepository, SQLiteTicketRepository, PostgreSQLTicketRepository],
)
def test_every_shipped_repository_offers_retention(repository: type) -> None:
    """Memory, SQLite and PostgreSQL implement the optional role."""
    assert issubclass(repository, LedgerRetention)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sql_repositories_forget_old_attempts_and_sent_mail_rows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An attempt begun forty days ago (its email gone) and the sending limits' row of an
    acknowledgement queued forty days ago go; today's stay, and the limits still count
    today's mail."""
    repo: SQLiteTicketRepository | PostgreSQLTicketRepository
    if kind == "sqlite":
        repo = SQLiteTicketRepository(tmp_path / "halomail.db", clock=lambda: START - 40 * DAY)
    else:
        url = request.getfixturevalue("postgres_url")
        repo = PostgreSQLTicketRepository(url, clock=lambda: START - 40 * DAY)
    with repo:
        repo.begin_attempt("Support\x1fattempt:old", now=START - 40 * DAY)
        repo.begin_attempt("Support\x1fattempt:new", now=START)
        with repo.transaction():
            ticket = repo.create_ticket(NewTicket("Printer", "jams", "Incident", ALICE))
            repo.enqueue_outgoing(
                NewOutgoing("<ack-1@h.example>", (ALICE,), "Re", "Logged.", ticket_id=ticket.id)
            )
        repo._clock = lambda: START
        with repo.transaction():
            repo.enqueue_outgoing(
                NewOutgoing("<ack-2@h.example>", (ALICE,), "Re", "Again.", ticket_id=ticket.id)
            )
        assert repo.count_outgoing(to=ALICE, since=START - 50 * DAY) == 2
        assert repo.purge_ledger(before=START - 30 * DAY) == 2
        assert repo.count_outgoing(to=ALICE, since=START - 50 * DAY) == 1
        assert repo.begin_attempt("Support\x1fattempt:new", now=START) == 1  # kept: 1 earlier
        assert repo.begin_attempt("Support\x1fattempt:old", now=START) == 0  # forgotten


# -- through the processor, on real SQLite ---------------------------------------------


class RefusingMoves(MemoryConnector):
    """A mailbox whose server refuses to move processed mail (a folder without rights):
    every email stays in it, and is fetched again at every poll."""

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Refuse, as a server answering ``NO [NOPERM]`` would."""
        self.acks.append((ref, disposition))
        raise TransientConnectorError("NO [NOPERM] no right to move mail to Deleted Items")


class Clock:
    """The processor's time, moved on by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


def _settings(retention_days: int | None) -> ProcessorSettings:
    return ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        ledger_retention=dt.timedelta(days=retention_days) if retention_days else None,
    )


def _dedupe_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM dedupe").fetchone()[0])


def _tickets(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return [row[0] for row in connection.execute("SELECT summary FROM tickets ORDER BY id")]


def test_an_email_its_mailbox_cannot_let_go_is_never_a_second_ticket(tmp_path: Path) -> None:
    """Retention of 30 days, a poll every 3 days for 90 days: the email the server will
    not move is fetched at every poll and stays one ticket, while the disposed email's
    record is forgotten after 30 days and the purge ran once a day at most."""
    path = tmp_path / "halomail.db"
    stuck = RefusingMoves("Stuck", [make_email(subject="Stuck", message_id="<stuck@c.example>")])
    moving = MemoryConnector("Support", [make_email(subject="Moved", message_id="<ok@c.example>")])
    clock = Clock()
    with SQLiteTicketRepository(path) as repo:
        processor = MailProcessor(
            repo, [Mailbox(stuck), Mailbox(moving)], _settings(30), clock=clock
        )
        processor.run_once()
        assert _dedupe_rows(path) == 4  # two emails, each its own key and its copy key
        for _ in range(30):
            clock.now += 3 * DAY
            processor.run_once()
        assert sorted(_tickets(path)) == ["Moved", "Stuck"]  # mailboxes are read at once
        assert len(stuck.remaining) == 1, "the server still holds the stuck email"
        # Left: the stuck email's own record, seen at every poll. Its copy key (nobody
        # fetches it) and both records of the moved email were forgotten.
        assert _dedupe_rows(path) == 1
        assert repo.get_dedupe("Stuck\x1fid:stuck@c.example") is not None
        # The loop guard's counts of both emails began 90 days ago: forgotten too.
        assert repo.get_state(repeat_key("Stuck", parse_email(stuck.remaining[0]))) is None
        with contextlib.closing(sqlite3.connect(path)) as connection:
            loops = connection.execute("SELECT COUNT(*) FROM state WHERE key LIKE 'loop:%'")
            assert loops.fetchone()[0] == 0
        # The purge ran on the day's first cycle only: a second today finds it done.
        assert processor.purge_ledger() == 0


def test_without_retention_every_record_stays(tmp_path: Path) -> None:
    """The default: no ``ledger_retention``, nothing is ever forgotten."""
    path = tmp_path / "halomail.db"
    moving = MemoryConnector("Support", [make_email(message_id="<ok@c.example>")])
    clock = Clock()
    with SQLiteTicketRepository(path) as repo:
        processor = MailProcessor(repo, [Mailbox(moving)], _settings(None), clock=clock)
        processor.run_once()
        clock.now += 400 * DAY
        processor.run_once()
        assert processor.purge_ledger(force=True) == 0
        assert _dedupe_rows(path) == 2


def test_an_mbox_import_kept_in_place_keeps_its_records(tmp_path: Path) -> None:
    """``processed = "keep"``: the file still holds every email a year later, so their
    records stay, and reading the file again makes no second ticket."""
    mbox = tmp_path / "archive.mbox"
    mbox.write_bytes(
        b"From alice@c.example Mon Dec  7 09:00:00 2026\n" + make_email().replace(b"\r\n", b"\n")
    )
    path = tmp_path / "halomail.db"
    clock = Clock()
    with SQLiteTicketRepository(path) as repo:
        connector = MboxConnector("Archive", mbox)
        assert connector.keeps_processed_mail
        processor = MailProcessor(repo, [Mailbox(connector)], _settings(30), clock=clock)
        processor.run_once()
        clock.now += 365 * DAY
        assert _dedupe_rows(path) == 2
        # The copy key goes (no mailbox keeps it), the acknowledgement's row that the
        # sending limits count, and the loop guard's count; the import's own record stays.
        assert processor.purge_ledger() == 3
        assert _dedupe_rows(path) == 1
        assert repo.get_dedupe("Archive\x1fid:msg-1@customer.example") is not None
        processor.run_once()
        assert _tickets(path) == ["Printer is jammed"]


def test_the_setting_refuses_a_retention_shorter_than_the_windows_it_counts() -> None:
    """The sending limits and the loop guard count rows back over their windows."""
    with pytest.raises(ValueError, match="at least a day"):
        ProcessorSettings(loop_token=LOOP_TOKEN, ledger_retention=dt.timedelta(hours=5))
    with pytest.raises(ValueError, match="loop_window"):
        ProcessorSettings(
            loop_token=LOOP_TOKEN,
            loop_window=dt.timedelta(days=10),
            ledger_retention=dt.timedelta(days=7),
        )


def _config(tmp_path: Path, processing: str) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "halomail.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite:///{tmp_path / "h.db"}"\n'
        '[outgoing]\ntransport = "memory"\nfrom_address = "support@helpdesk.example"\n'
        f'[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "{tmp_path / "inbox"}"\n'
        f"[processing]\n{processing}\n"
    )
    return path


def test_the_configuration_key_reaches_the_processor(tmp_path: Path) -> None:
    """``ledger_retention_days = 90`` is 90 days; 0 and no key keep everything."""

    def retention(text: str) -> dt.timedelta | None:
        config = load_config(_config(tmp_path, text))
        with build_processor(config, repository=InMemoryTicketRepository()) as processor:
            return processor.settings.ledger_retention

    assert retention("ledger_retention_days = 90") == dt.timedelta(days=90)
    assert retention("ledger_retention_days = 0") is None
    assert retention("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ledger_retention_days = -1", "processing.ledger_retention_days"),
        ('ledger_retention_days = "90"', "processing.ledger_retention_days"),
        ("ledger_retention_days = 2\nloop_window_hours = 72", "at least 3 days"),
    ],
)
def test_the_configuration_key_refuses_what_would_lose_counts(
    tmp_path: Path, text: str, message: str
) -> None:
    """A negative or non-integer value, or one shorter than the loop window, is an error
    naming the key."""
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, text))


def test_a_repeated_crash_its_mailbox_cannot_let_go_stays_one_quarantine_entry(
    tmp_path: Path,
) -> None:
    """An email that ended the process twice is quarantined as ``repeated-crash``; its
    server refuses to move it, so every poll fetches it again and marks its record seen:
    90 days on, with a 30-day retention, it is still that one entry, never parsed again."""
    raw = make_email(subject="Poison", message_id="<poison@c.example>")
    stuck = RefusingMoves("Stuck", [raw])
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        attempt_key, _ = attempts.keys("Stuck", raw)
        for _ in range(attempts.CRASHES_BEFORE_QUARANTINE):  # two deaths, as a kill leaves them
            repo.begin_attempt(attempt_key, now=START)
        processor = MailProcessor(repo, [Mailbox(stuck)], _settings(30), clock=clock)
        (first,) = processor.run_once().mailboxes[0].outcomes
        assert first.reason is Reason.REPEATED_CRASH
        for _ in range(30):
            clock.now += 3 * DAY
            (again,) = processor.run_once().mailboxes[0].outcomes
            assert (again.outcome, again.recorded) == (Outcome.SKIPPED, Outcome.QUARANTINED)
        assert [entry.reason for entry in repo.list_quarantine()] == ["repeated-crash"]
        assert _tickets(tmp_path / "halomail.db") == []


def test_the_timed_state_prefixes_are_the_ones_halomail_writes() -> None:
    """The loop guard's counts and the cloud send marks are written under the prefixes
    retention forgets by their time."""
    assert LOOP_STATE in TIMED_STATE_PREFIXES
    pending = OutboxStatus.PENDING
    mail = OutboxMail(1, "<ack-1@h.example>", (ALICE,), "Re", "Logged.", pending, START)
    assert SendIntents.key(mail).startswith(TIMED_STATE_PREFIXES)
