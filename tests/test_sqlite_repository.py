"""What only the SQLite repository has: the file, WAL, migrations, locks, crashes, read-only."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.tickets import (
    _sqlite_directory,
    _sqlite_ledger,
    _sqlite_outbox,
    _sqlite_tickets,
)
from halomail.tickets._schema import MIGRATIONS, Migration, migrate
from halomail.tickets._sqlite_base import require_sqlite_version
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    NewOutgoing,
    NewServiceStatus,
    NewTicket,
    ServiceStatus,
    StoredAttachment,
    TicketStatus,
)
from halomail.tickets.sqlite import SQLiteTicketRepository, translate_error

# The digest of each released migration. A released migration must never change,
# because databases in the field were built by it: add a new migration instead.
RELEASED_MIGRATION_DIGESTS = [
    "a7a290e7437cc9d2f64d66452bab5a882a75d30927dc516f41698d58a1c1129b",
    "37ed8fb1af5b40f6696253c844cff436d262df8950a240546be1799da1c36b15",
    "68853cd7fbb35be49172d2b259f264a825c87f8f706d4292bd99b0fc8d4dffcc",
    "4a5619a3fc6311b51af577a5684e6830ed7ee71312fd2ee1cc5e3df66a141eeb",
]


def new_ticket(summary: str = "Printer is jammed") -> NewTicket:
    """A minimal valid ticket."""
    return NewTicket(summary, "details", "Incident", "alice@customer.example")


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a fresh interpreter that imports this halomail."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, in autocommit mode, closed at the end.

    (A ``sqlite3.Connection`` used as a context manager only ends a transaction; it does
    not close, and Python 3.13 reports the connection left open.)
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the test's database file goes."""
    return tmp_path / "halomail.db"


@pytest.fixture
def repo(db: Path) -> Iterator[SQLiteTicketRepository]:
    """A fresh repository on a file."""
    with SQLiteTicketRepository(db) as repository:
        yield repository


class TestTheFile:
    def test_the_database_runs_in_wal_mode(self, repo: SQLiteTicketRepository, db: Path) -> None:
        """A new database is in WAL journal mode, which other connections see too."""
        repo.create_ticket(new_ticket())
        with raw(db) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.with_name(db.name + "-wal").exists()

    def test_data_persists_across_reopening(self, db: Path) -> None:
        """A ticket, action, attachment, outbox mail, dedupe key and state survive a reopen."""
        payload = bytes(range(256)) * 100
        with SQLiteTicketRepository(db) as first:
            ticket = first.create_ticket(new_ticket())
            action = first.add_action(
                NewAction(
                    ticket.id,
                    ActionKind.EMAIL_IN,
                    "body",
                    message_id="in@x",
                    attachments=(
                        StoredAttachment(
                            "f.bin", "s.bin", "x/y", len(payload), None, False, payload
                        ),
                    ),
                )
            )
            mail = first.enqueue_outgoing(
                NewOutgoing("ack@h", ("alice@customer.example",), "s", "t", ticket_id=ticket.id)
            )
            first.record_dedupe(DedupeRecord("k", "s", "created", ticket.id))
            first.set_state("cursor", "42")
            first_ticket = first.get_ticket(ticket.id)
        assert first_ticket is not None
        assert first_ticket.updated_at == action.created_at
        with SQLiteTicketRepository(db) as second:
            assert second.get_ticket(ticket.id) == first_ticket
            assert list(second.list_actions(ticket.id)) == [action]
            assert list(second.due_outgoing(mail.created_at)) == [mail]
            assert second.get_dedupe("k") is not None
            assert second.get_state("cursor") == "42"

    def test_a_memory_database_works_and_is_private_to_its_repository(self) -> None:
        """':memory:' gives a working repository whose data no other repository sees."""
        with SQLiteTicketRepository(":memory:") as one, SQLiteTicketRepository(":memory:") as two:
            ticket = one.create_ticket(new_ticket())
            assert one.get_ticket(ticket.id) == ticket
            assert list(two.list_tickets()) == []

    def test_a_file_that_is_not_a_database_is_refused(self, db: Path) -> None:
        """Opening a file of something else raises RepositoryError and leaves the file alone."""
        db.write_bytes(b"this is a text file, not SQLite\n" * 200)
        with pytest.raises(RepositoryError, match="not a database"):
            SQLiteTicketRepository(db)
        assert db.read_bytes() == b"this is a text file, not SQLite\n" * 200

    def test_a_missing_folder_is_refused(self, tmp_path: Path) -> None:
        """A path in a folder that does not exist raises RepositoryError naming the path."""
        path = tmp_path / "no-such-folder" / "halomail.db"
        with pytest.raises(RepositoryError, match="no-such-folder"):
            SQLiteTicketRepository(path)

    def test_attachments_are_blobs_in_their_own_table(
        self, repo: SQLiteTicketRepository, db: Path
    ) -> None:
        """Attachment bytes are stored as BLOBs of their exact length, one row each, in order.

        The last one is large enough to be written in chunks; its bytes read back exactly.
        """
        ticket = repo.create_ticket(new_ticket())
        large = random.Random(5).randbytes((5 << 20) + 17)
        small = [
            StoredAttachment(
                f"f{n}", f"s{n}", "application/octet-stream", n * 10, payload=b"\x00" * (n * 10)
            )
            for n in range(3)
        ]
        big = StoredAttachment(
            "disk.img", "s3", "application/octet-stream", len(large), payload=large
        )
        files = (*small, big)
        repo.add_action(NewAction(ticket.id, ActionKind.EMAIL_IN, "x", attachments=files))
        with raw(db) as other:
            rows = other.execute(
                "SELECT position, typeof(payload), length(payload) FROM attachments "
                "ORDER BY position"
            ).fetchall()
            stored = other.execute("SELECT payload FROM attachments WHERE position = 3").fetchone()
        assert rows == [(0, "blob", 0), (1, "blob", 10), (2, "blob", 20), (3, "blob", len(large))]
        assert stored[0] == large

    def test_stored_files_are_blob_rows_of_their_own(
        self, repo: SQLiteTicketRepository, db: Path
    ) -> None:
        """Each file kept without a ticket is one stored_files row with its bytes as a BLOB."""
        asset, _ = repo.save_asset("NAS-01", {})
        files = tuple(
            StoredAttachment(
                f"f{n}.bin", f"s{n}", "application/octet-stream", n * 7, payload=b"\xff" * (n * 7)
            )
            for n in range(3)
        )
        repo.store_files(owner="asset", owner_id=asset.id, attachments=files, note="export")
        with raw(db) as other:
            rows = other.execute(
                "SELECT owner, owner_id, filename, typeof(payload), length(payload), note "
                "FROM stored_files ORDER BY id"
            ).fetchall()
        assert rows == [
            ("asset", asset.id, "f0.bin", "blob", 0, "export"),
            ("asset", asset.id, "f1.bin", "blob", 7, "export"),
            ("asset", asset.id, "f2.bin", "blob", 14, "export"),
        ]

    def test_rule_data_persists_across_reopening(self, db: Path) -> None:
        """Alert keys, assignments, saved assets, files and service history survive a reopen."""
        when = dt.datetime(2024, 5, 1, 2, 30, tzinfo=dt.UTC)
        with SQLiteTicketRepository(db) as first:
            ticket = first.create_ticket(
                NewTicket("Backup failed", "d", "Incident", "backup@x", alert_key="service:Backup")
            )
            assigned = first.assign(ticket.id, agent="eve@helpdesk.example", team="Ops")
            asset, _ = first.save_asset("NAS-01", {"Model": "DS920+"})
            files = first.store_files(
                owner="asset",
                owner_id=asset.id,
                attachments=(StoredAttachment("log.txt", "l", "text/plain", 2, payload=b"ok"),),
            )
            status = first.record_service_status(
                NewServiceStatus("Backup", "failed", when, "3 errors", ticket.id, "job@x")
            )
        with SQLiteTicketRepository(db) as second:
            assert second.find_open_ticket(alert_key="service:Backup") == assigned
            assert second.find_asset("Model", "ds920+") == asset
            assert list(second.list_files(owner="asset", owner_id=asset.id)) == list(files)
            assert list(second.service_history("Backup")) == [status]

    def test_times_are_stored_as_iso_utc_text_and_read_back_exactly(self, db: Path) -> None:
        """A time from a clock in another zone is stored as ISO-8601 UTC text, read back equal."""
        paris = dt.timezone(dt.timedelta(hours=2))
        moment = dt.datetime(2024, 5, 1, 14, 30, 15, 1, tzinfo=paris)
        with SQLiteTicketRepository(db, clock=lambda: moment) as repository:
            ticket = repository.create_ticket(new_ticket())
            fetched = repository.get_ticket(ticket.id)
        assert fetched is not None
        assert fetched.created_at == moment
        assert fetched.created_at.utcoffset() == dt.timedelta(0)
        assert fetched.created_at.microsecond == 1
        with raw(db) as other:
            stored = other.execute("SELECT created_at, updated_at FROM tickets").fetchone()
        assert stored == ("2024-05-01T12:30:15.000001+00:00", "2024-05-01T12:30:15.000001+00:00")

    def test_text_that_is_not_unicode_is_refused_whole(self, repo: SQLiteTicketRepository) -> None:
        """A summary with a lone surrogate raises RepositoryError and stores nothing."""
        with pytest.raises(RepositoryError, match="not valid Unicode"):
            repo.create_ticket(new_ticket(summary="broken \udcff header"))
        assert list(repo.list_tickets()) == []


class TestLifeCycle:
    def test_a_closed_repository_refuses_to_work(self, db: Path) -> None:
        """After close() every call raises RepositoryError, and closing again is harmless."""
        repository = SQLiteTicketRepository(db)
        repository.close()
        repository.close()
        with pytest.raises(RepositoryError, match="closed"):
            repository.get_ticket(1)
        with pytest.raises(RepositoryError, match="closed"):
            repository.create_ticket(new_ticket())

    def test_closing_inside_a_transaction_rolls_it_back(self, db: Path) -> None:
        """Closing the repository in the middle of a transaction keeps none of its writes."""
        repository = SQLiteTicketRepository(db)
        transaction = repository.transaction()
        transaction.__enter__()
        repository.create_ticket(new_ticket())
        repository.close()
        with SQLiteTicketRepository(db) as reopened:
            assert list(reopened.list_tickets()) == []

    def test_the_context_manager_closes_the_repository(self, db: Path) -> None:
        """Leaving the with block closes the connection."""
        with SQLiteTicketRepository(db) as repository:
            repository.create_ticket(new_ticket())
        with pytest.raises(RepositoryError, match="closed"):
            repository.list_tickets()

    def test_negative_paging_is_refused(self, repo: SQLiteTicketRepository) -> None:
        """A negative limit or offset raises ValueError instead of meaning "everything"."""
        with pytest.raises(ValueError, match="negative"):
            repo.list_tickets(limit=-1)
        with pytest.raises(ValueError, match="negative"):
            repo.list_quarantine(offset=-1)


class TestMigrations:
    def test_a_new_database_is_at_the_latest_schema_version(
        self, repo: SQLiteTicketRepository, db: Path
    ) -> None:
        """Opening a new file applies every migration and records the version in user_version."""
        with raw(db) as other:
            assert other.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            tables = {
                r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        assert {
            "tickets",
            "actions",
            "attachments",
            "dedupe",
            "outbox",
            "quarantine",
            "state",
        } <= tables

    def test_released_migrations_are_never_edited(self) -> None:
        """Each released migration still has the digest it was released with."""
        digests = [m.digest for m in MIGRATIONS[: len(RELEASED_MIGRATION_DIGESTS)]]
        assert digests == RELEASED_MIGRATION_DIGESTS

    def test_a_version_1_database_opens_with_its_data(self, db: Path) -> None:
        """A database built by migration 1 and filled by plain SQL opens with its ticket."""
        with raw(db) as old:
            assert migrate(old, MIGRATIONS[:1]) == 1
            old.execute(
                "INSERT INTO tickets (summary, details, ticket_type, user_email, record, cc, "
                "custom_fields, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "Old ticket",
                    "kept since version 1",
                    "Incident",
                    "alice@customer.example",
                    "ticket",
                    '["bob@customer.example"]',
                    '{"Order": "A-1"}',
                    "open",
                    "2023-01-02T03:04:05.000006+00:00",
                    "2023-01-02T03:04:05.000006+00:00",
                ),
            )
        with SQLiteTicketRepository(db) as repository:
            (ticket,) = repository.list_tickets()
        assert (ticket.summary, ticket.status, ticket.cc) == (
            "Old ticket",
            TicketStatus.OPEN,
            ("bob@customer.example",),
        )
        assert dict(ticket.custom_fields) == {"Order": "A-1"}
        assert ticket.created_at == dt.datetime(2023, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)

    def test_a_version_1_database_with_data_upgrades_and_stays_usable(self, db: Path) -> None:
        """A v1 file with a ticket and an asset migrates on open; both work in the new API."""
        with raw(db) as old:
            assert migrate(old, MIGRATIONS[:1]) == 1
            old.execute(
                "INSERT INTO tickets (summary, details, ticket_type, user_email, record, "
                "status, created_at, updated_at, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "Old ticket",
                    "from version 1",
                    "Incident",
                    "alice@customer.example",
                    "ticket",
                    "open",
                    "2023-01-02T03:04:05.000006+00:00",
                    "2023-01-02T03:04:05.000006+00:00",
                    "eve@helpdesk.example",
                ),
            )
            old.execute(
                "INSERT INTO assets (tag, tag_key, fields) VALUES (?, ?, ?)",
                ("SRV-01", "srv-01", '{"Role": "File server"}'),
            )
            old.execute(
                "INSERT INTO asset_fields (name, value_key, asset_id) VALUES (?, ?, ?)",
                ("Role", "file server", 1),
            )
        with SQLiteTicketRepository(db) as repository:
            (ticket,) = repository.list_tickets()
            assert (ticket.summary, ticket.agent, ticket.alert_key) == (
                "Old ticket",
                "eve@helpdesk.example",
                None,
            )
            assert ticket.created_at == dt.datetime(2023, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
            assigned = repository.assign(ticket.id, agent=None, team="Ops")
            assert (assigned.agent, assigned.team, assigned.summary) == (None, "Ops", "Old ticket")
            asset, created = repository.save_asset("srv-01", {"Role": "Print server"})
            assert (asset.id, asset.tag, created) == (1, "SRV-01", False)
            assert repository.find_asset("Role", "file server") is None
            assert repository.find_asset("Role", "print server") == asset
            repository.store_files(
                owner="asset",
                owner_id=asset.id,
                attachments=(StoredAttachment("a.txt", "a", "text/plain", 1, payload=b"a"),),
            )
            assert len(repository.list_files(owner="asset", owner_id=asset.id)) == 1
            keyed = repository.create_ticket(
                NewTicket("New alert", "d", "Alert", "nagios@x", alert_key="alert:n:disk")
            )
            assert repository.find_open_ticket(alert_key="alert:n:disk") == keyed
            when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
            repository.record_service_status(NewServiceStatus("Backup", "ok", when))
            last = repository.last_service_status("Backup")
            assert last is not None
            assert last.status is ServiceStatus.OK
        with raw(db) as connection:
            assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            columns = [r[1] for r in connection.execute("PRAGMA table_info(tickets)")]
            assert {"alert_key", "impact", "urgency", "site", "asset_ids"} <= set(columns)
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    def test_a_later_migration_upgrades_an_existing_database_and_keeps_its_data(
        self, db: Path
    ) -> None:
        """A version-2 migration added to the list runs once on a version-1 database, data kept."""
        with SQLiteTicketRepository(db) as repository:
            ticket = repository.create_ticket(new_ticket())
        v2 = Migration("add an SLA column", ("ALTER TABLE tickets ADD COLUMN sla TEXT",))
        with raw(db) as connection:
            assert migrate(connection, (*MIGRATIONS, v2)) == len(MIGRATIONS) + 1
            assert migrate(connection, (*MIGRATIONS, v2)) == len(MIGRATIONS) + 1  # a no-op now
            columns = [r[1] for r in connection.execute("PRAGMA table_info(tickets)")]
            assert columns.count("sla") == 1
            assert connection.execute("SELECT summary FROM tickets").fetchall() == [
                (ticket.summary,)
            ]
            assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) + 1,)

    def test_a_failing_migration_leaves_the_previous_version_whole(self, db: Path) -> None:
        """A migration that fails half-way is rolled back: no new table, version unchanged."""
        SQLiteTicketRepository(db).close()
        broken = Migration(
            "half-way failure", ("CREATE TABLE sla (id INTEGER)", "ALTER TABLE nowhere ADD x")
        )
        with raw(db) as connection:
            with pytest.raises(sqlite3.OperationalError, match="nowhere"):
                migrate(connection, (*MIGRATIONS, broken))
            assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
            assert (
                connection.execute("SELECT name FROM sqlite_master WHERE name = 'sla'").fetchall()
                == []
            )
            assert not connection.in_transaction

    def test_a_version_3_database_gains_claims_and_leases_and_keeps_its_mail(
        self, db: Path
    ) -> None:
        """A v3 file with pending mail and a dedupe key migrates to v4: kept, claimable once."""
        with raw(db) as old:
            assert migrate(old, MIGRATIONS[:3]) == 3
            old.execute(
                "INSERT INTO outbox (message_id, recipients, subject, text, kind, status, "
                "auto_submitted, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "ack-1@helpdesk.example",
                    '["alice@customer.example"]',
                    "We received your request",
                    "Thank you.",
                    "acknowledgement",
                    "pending",
                    1,
                    "2024-05-01T02:00:00.000000+00:00",
                ),
            )
            old.execute(
                "INSERT INTO dedupe (key, sha256, outcome, created_at) VALUES (?, ?, ?, ?)",
                ("Support\x1fid:a@x", "ab", "created", "2024-05-01T02:00:00.000000+00:00"),
            )
        now = dt.datetime(2024, 5, 1, 3, tzinfo=dt.UTC)
        with SQLiteTicketRepository(db) as repository:
            assert repository.get_dedupe("Support\x1fid:a@x") is not None
            (mail,) = repository.claim_outgoing(now, owner="a", lease=dt.timedelta(minutes=5))
            assert (
                list(repository.claim_outgoing(now, owner="b", lease=dt.timedelta(hours=1))) == []
            )
            assert repository.acquire_lease("mailbox:Support", "a", now=now, ttl=dt.timedelta(1))
        assert (mail.message_id, mail.to, mail.auto_submitted) == (
            "ack-1@helpdesk.example",
            ("alice@customer.example",),
            True,
        )
        with raw(db) as connection:
            assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)

    def test_a_version_4_database_gains_attempts_and_keeps_its_data(self, db: Path) -> None:
        """A v4 file with a dedupe key and a lease migrates to v5: kept, and attempts count."""
        with raw(db) as old:
            assert migrate(old, MIGRATIONS[:4]) == 4
            old.execute(
                "INSERT INTO dedupe (key, sha256, outcome, created_at) VALUES (?, ?, ?, ?)",
                ("Support\x1fid:a@x", "ab", "created", "2024-05-01T02:00:00.000000+00:00"),
            )
            old.execute(
                "INSERT INTO leases (name, owner, held_until) VALUES (?, ?, ?)",
                ("mailbox:Support", "a", "2024-05-01T04:00:00.000000+00:00"),
            )
        now = dt.datetime(2024, 5, 1, 3, tzinfo=dt.UTC)
        with SQLiteTicketRepository(db) as repository:
            assert repository.get_dedupe("Support\x1fid:a@x") is not None
            day = dt.timedelta(1)
            assert not repository.acquire_lease("mailbox:Support", "b", now=now, ttl=day)
            assert repository.begin_attempt("Support\x1fattempt:00", now=now) == 0
        with SQLiteTicketRepository(db) as reopened:
            # The attempt was committed on its own: it survives the process.
            assert reopened.begin_attempt("Support\x1fattempt:00", now=now) == 1
        with raw(db) as connection:
            assert connection.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)

    def test_a_database_from_a_newer_halomail_is_refused_untouched(self, db: Path) -> None:
        """A file at an unknown newer version is refused with a clear RepositoryError, untouched."""
        SQLiteTicketRepository(db).close()
        with raw(db) as connection:
            connection.execute("PRAGMA user_version = 99")
        latest = len(MIGRATIONS)
        expected = rf"schema version 99, newer than this version of halomail supports \({latest}\)"
        with pytest.raises(RepositoryError, match=expected):
            SQLiteTicketRepository(db)
        with pytest.raises(RepositoryError, match="upgrade halomail"):
            SQLiteTicketRepository(db, read_only=True)
        with raw(db) as connection:
            assert connection.execute("PRAGMA user_version").fetchone() == (99,)


def test_an_sqlite_library_without_returning_is_refused_by_name() -> None:
    """SQLite before 3.35 (no RETURNING) is refused naming both versions; 3.35 and this pass."""
    with pytest.raises(RepositoryError, match=r"version 3\.34\.1; halomail needs 3\.35\.0"):
        require_sqlite_version((3, 34, 1))
    require_sqlite_version((3, 35, 0))
    require_sqlite_version(sqlite3.sqlite_version_info)


class TestConcurrency:
    def test_another_connection_sees_writes_only_after_commit(self, db: Path) -> None:
        """A second repository sees nothing of an open transaction, and all of it after commit."""
        with SQLiteTicketRepository(db) as writer, SQLiteTicketRepository(db) as reader:
            with writer.transaction():
                ticket = writer.create_ticket(new_ticket())
                writer.set_state("k", "v")
                assert reader.get_ticket(ticket.id) is None
                assert reader.get_state("k") is None
                assert list(reader.list_tickets()) == []
            assert reader.get_ticket(ticket.id) == ticket
            assert reader.get_state("k") == "v"

    def test_a_lock_held_elsewhere_raises_transient_after_the_busy_timeout(self, db: Path) -> None:
        """While another connection holds the write lock, a write waits, then raises transient."""
        with SQLiteTicketRepository(db, busy_timeout=0.1) as repository:
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                started = time.monotonic()
                with pytest.raises(TransientRepositoryError, match="locked") as raised:
                    repository.create_ticket(new_ticket())
                waited = time.monotonic() - started
                assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
                assert 0.09 <= waited < 3
                with pytest.raises(TransientRepositoryError):
                    repository.transaction().__enter__()
                assert repository.list_tickets() == []  # reading still works meanwhile
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            ticket = repository.create_ticket(new_ticket())
            assert [t.id for t in repository.list_tickets()] == [ticket.id]

    def test_a_repository_can_be_used_from_a_worker_thread(
        self, repo: SQLiteTicketRepository
    ) -> None:
        """A repository opened in one thread works in another (one connection, one lock)."""
        results: list[object] = []

        def work() -> None:
            try:
                results.append(repo.create_ticket(new_ticket("from a worker")).summary)
            except Exception as exc:  # noqa: BLE001 - reported below, in the test's thread
                results.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(10)
        assert results == ["from a worker"]
        assert [t.summary for t in repo.list_tickets()] == ["from a worker"]


CRASH_CHILD = """
    import os, signal, sys
    from halomail.tickets.models import NewTicket, NewAction, ActionKind
    from halomail.tickets.sqlite import SQLiteTicketRepository

    repository = SQLiteTicketRepository(sys.argv[1])
    repository.create_ticket(NewTicket("committed", "d", "Incident", "a@x.example"))
    with repository.transaction():
        ticket = repository.create_ticket(NewTicket("in flight", "d", "Incident", "a@x.example"))
        repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "x" * 100_000))
        repository.set_state("cursor", "in flight")
        print("written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""

DISK_FULL_CHILD = """
    import json, os, resource, signal, sys
    from halomail.errors import RepositoryError
    from halomail.tickets.models import NewTicket, NewAction, ActionKind, StoredAttachment
    from halomail.tickets.sqlite import SQLiteTicketRepository

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG, not death, past the limit
    repository = SQLiteTicketRepository(sys.argv[1])
    repository.create_ticket(NewTicket("kept", "d", "Incident", "a@x.example"))
    limit = 256 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    big = os.urandom(2 << 20)
    seen = {}
    try:
        with repository.transaction():
            ticket = repository.create_ticket(NewTicket("lost", "d", "Incident", "a@x.example"))
            try:
                repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "big", attachments=(
                    StoredAttachment("big.bin", "big.bin", "x/y", len(big), payload=big),)))
            except RepositoryError as exc:
                seen["first"] = type(exc).__name__
            try:
                repository.set_state("after", "written in autocommit?")
            except RepositoryError as exc:
                seen["second"] = type(exc).__name__
    except RepositoryError as exc:
        seen["commit"] = type(exc).__name__
    seen["tickets"] = [t.summary for t in repository.list_tickets()]
    print(json.dumps(seen))
"""


class TestFailures:
    def test_a_process_killed_mid_transaction_leaves_no_trace(self, db: Path) -> None:
        """SIGKILL inside a transaction after its writes: reopened, only earlier commits remain."""
        result = run_child(CRASH_CHILD, str(db))
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert result.stdout == "written\n"
        with SQLiteTicketRepository(db) as reopened:
            assert [t.summary for t in reopened.list_tickets()] == ["committed"]
            assert reopened.get_state("cursor") is None
        with raw(db) as other:
            assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert other.execute("SELECT COUNT(*) FROM actions").fetchone() == (0,)

    def test_a_full_disk_mid_transaction_is_transient_and_keeps_nothing(self, db: Path) -> None:
        """A write failing for want of space is transient, and its transaction keeps nothing."""
        result = run_child(DISK_FULL_CHILD, str(db))
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert seen == {
            "first": "TransientRepositoryError",
            # SQLite rolled the transaction back itself: later writes must not
            # slip through in autocommit mode, and the commit must say so.
            "second": "RepositoryError",
            "commit": "RepositoryError",
            "tickets": ["kept"],
        }
        with SQLiteTicketRepository(db) as reopened:
            assert [t.summary for t in reopened.list_tickets()] == ["kept"]
            assert reopened.get_state("after") is None

    def test_a_read_only_database_refuses_writes_and_stays_intact(self, db: Path) -> None:
        """Read-only, reads work, every write raises RepositoryError, and the file is unharmed."""
        with SQLiteTicketRepository(db) as writer:
            ticket = writer.create_ticket(new_ticket())
        with SQLiteTicketRepository(db, read_only=True) as reader:
            assert reader.get_ticket(ticket.id) == ticket
            with pytest.raises(RepositoryError, match="readonly") as raised:
                reader.create_ticket(new_ticket("refused"))
            assert not isinstance(raised.value, TransientRepositoryError)
            with pytest.raises(RepositoryError, match="readonly"):
                reader.set_status(ticket.id, TicketStatus.CLOSED)
            with pytest.raises(RepositoryError, match="readonly"):
                reader.transaction().__enter__()
            assert [t.id for t in reader.list_tickets()] == [ticket.id]
        with SQLiteTicketRepository(db) as reopened:
            assert reopened.get_ticket(ticket.id) == ticket
            assert len(reopened.list_tickets()) == 1
        with raw(db) as other:
            assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    def test_a_memory_database_cannot_be_read_only(self) -> None:
        """Asking for a read-only ':memory:' database is a ValueError: there is nothing to read."""
        with pytest.raises(ValueError, match="memory"):
            SQLiteTicketRepository(":memory:", read_only=True)


class TestErrorTranslation:
    """Real sqlite3 errors, raised by a real connection, map to our two error classes."""

    def test_a_locked_database_is_transient(self, db: Path) -> None:
        """SQLITE_BUSY ("database is locked") becomes TransientRepositoryError."""
        SQLiteTicketRepository(db).close()
        holder = sqlite3.connect(db, isolation_level=None)
        waiter = sqlite3.connect(db, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError) as raised:
                waiter.execute("BEGIN IMMEDIATE")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            waiter.close()
        error = translate_error(raised.value, "x.db")
        assert type(error) is TransientRepositoryError
        assert str(error) == "x.db: database is locked"

    def test_a_full_database_is_transient(self) -> None:
        """SQLITE_FULL ("database or disk is full") becomes TransientRepositoryError."""
        connection = sqlite3.connect(":memory:", isolation_level=None)
        connection.execute("CREATE TABLE t (x BLOB)")
        connection.execute("PRAGMA max_page_count = 3")
        with pytest.raises(sqlite3.OperationalError) as raised:
            connection.execute("INSERT INTO t VALUES (?)", (b"\x00" * 100_000,))
        connection.close()
        error = translate_error(raised.value, "x.db")
        assert type(error) is TransientRepositoryError
        assert "database or disk is full" in str(error)

    def test_a_disk_io_error_is_transient_by_its_message(self) -> None:
        """An OperationalError reading "disk I/O error" is transient even without an error code."""
        error = translate_error(sqlite3.OperationalError("disk I/O error"), "x.db")
        assert type(error) is TransientRepositoryError

    def test_other_errors_are_permanent(self, db: Path) -> None:
        """A read-only write, a constraint and a syntax error become plain RepositoryError."""
        connection = sqlite3.connect(":memory:", isolation_level=None)
        connection.execute("CREATE TABLE t (x UNIQUE)")
        connection.execute("INSERT INTO t VALUES (1)")
        errors: list[sqlite3.Error] = []
        for statement in ("INSERT INTO t VALUES (1)", "SELEKT 1"):
            with pytest.raises(sqlite3.Error) as raised:
                connection.execute(statement)
            errors.append(raised.value)
        connection.execute("PRAGMA query_only = ON")
        with pytest.raises(sqlite3.OperationalError) as readonly:
            connection.execute("INSERT INTO t VALUES (2)")
        errors.append(readonly.value)
        connection.close()
        kinds = [type(translate_error(error, "x.db")) for error in errors]
        assert kinds == [RepositoryError, RepositoryError, RepositoryError]


class TestNewIds:
    """A new row's id comes from the cursor (no RETURNING): it must be the row's own, and
    a conflict that inserts nothing must be told apart from an insert."""

    def test_each_returned_id_reads_back_its_own_row(self, repo: SQLiteTicketRepository) -> None:
        """Tickets, actions and outgoing mail made one after another, interleaved, each
        come back by the id they were given (the three tables' ids run apart: an id read
        from the wrong statement would not match)."""
        for n in range(5):
            repo.enqueue_outgoing(NewOutgoing(f"early{n}@h", ("a@customer.example",), "", "t"))
        made = []
        for n in range(3):
            ticket = repo.create_ticket(new_ticket(f"Ticket {n}"))
            repo.add_action(NewAction(ticket_id=ticket.id, kind=ActionKind.NOTE, body="Opened"))
            action = repo.add_action(
                NewAction(ticket_id=ticket.id, kind=ActionKind.NOTE, body=f"Note {n}")
            )
            mail = repo.enqueue_outgoing(
                NewOutgoing(
                    f"m{n}@h", ("a@customer.example",), f"Mail {n}", "t", ticket_id=ticket.id
                )
            )
            made.append((ticket.id, action.id, mail.id))
        assert made == [(1, 2, 6), (2, 4, 7), (3, 6, 8)]
        subjects = {mail.id: mail.subject for mail in repo.list_outgoing()}
        for n, (ticket_id, action_id, mail_id) in enumerate(made):
            ticket = repo.get_ticket(ticket_id)
            assert ticket is not None
            assert ticket.summary == f"Ticket {n}"
            assert [(a.id, a.body) for a in repo.list_actions(ticket_id)][1] == (
                action_id,
                f"Note {n}",
            )
            assert subjects[mail_id] == f"Mail {n}"

    def test_a_message_id_queued_twice_is_refused_and_nothing_is_added(
        self, repo: SQLiteTicketRepository
    ) -> None:
        """The second enqueue of one Message-ID raises, inside a transaction that stays
        usable, and the outbox holds the first mail only."""
        with repo.transaction():
            first = repo.enqueue_outgoing(NewOutgoing("same@h", ("a@customer.example",), "s", "t"))
            with pytest.raises(RepositoryError, match="already queued"):
                repo.enqueue_outgoing(NewOutgoing("same@h", ("b@customer.example",), "s2", "t"))
            other = repo.enqueue_outgoing(NewOutgoing("other@h", ("c@customer.example",), "s", "t"))
        assert [m.id for m in repo.list_outgoing()] == [other.id, first.id]
        assert other.id != first.id

    def test_a_user_added_twice_is_refused(self, repo: SQLiteTicketRepository) -> None:
        """The second user with one address raises; the first keeps its id and name."""
        first = repo.add_user("alice@customer.example", "Alice")
        with pytest.raises(RepositoryError, match="already exists"):
            repo.add_user("Alice@Customer.example", "Someone else")
        found = repo.find_user("alice@customer.example")
        assert found is not None
        assert (found.id, found.name) == (first.id, "Alice")


def test_no_statement_binds_numbered_placeholders_to_a_sequence() -> None:
    """Statements that repeat a value name it (`:now`): `?1` with a sequence fails on 3.14."""
    statements = {
        f"{part.__name__}.{name}": value
        for part in (_sqlite_tickets, _sqlite_directory, _sqlite_ledger, _sqlite_outbox)
        for name, value in vars(part).items()
        if name.startswith("_SQL_") and isinstance(value, str)
    }
    assert len(statements) > 30
    assert [name for name, sql in statements.items() if re.search(r"\?\d", sql)] == []


class TestQueryPlans:
    """Every lookup the processor makes for each email goes through an index."""

    EXPECTED: ClassVar[dict[str, list[str]]] = {
        "_SQL_GET_TICKET": ["SEARCH tickets USING INTEGER PRIMARY KEY (rowid=?)"],
        "_SQL_GET_DEDUPE": ["SEARCH dedupe USING INDEX sqlite_autoindex_dedupe_1 (key=?)"],
        "_SQL_DUE_OUTBOX": ["SCAN outbox USING INDEX outbox_pending"],
        "_SQL_COUNT_OUTGOING": [
            "SEARCH outbox_recipients USING PRIMARY KEY (address=? AND created_at>?)"
        ],
        "_SQL_COUNT_OUTGOING_FOR_TICKET": [
            "SEARCH outbox_recipients USING PRIMARY KEY (address=? AND created_at>?)"
        ],
        # Its only scans read the one row of the address and domain it was given.
        "_SQL_FIND_PERSON": [
            "SCAN CONSTANT ROW",
            "SCAN q",
            "SEARCH u USING INDEX sqlite_autoindex_users_1 (email=?) LEFT-JOIN",
            "SEARCH c USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN",
            "SEARCH customer_domains USING PRIMARY KEY (domain=?)",
        ],
        "_SQL_ASSET_BY_TAG": ["SEARCH assets USING INDEX assets_by_tag (tag_key=?)"],
        "_SQL_ASSET_BY_FIELD": [
            "SEARCH f USING PRIMARY KEY (name=? AND value_key=?)",
            "SEARCH a USING INTEGER PRIMARY KEY (rowid=?)",
        ],
        "_SQL_LIST_ACTIONS": ["SEARCH actions USING INDEX actions_by_ticket (ticket_id=?)"],
        "_SQL_LIST_ATTACHMENTS": [
            "SEARCH a USING COVERING INDEX actions_by_ticket (ticket_id=?)",
            "SEARCH t USING INDEX sqlite_autoindex_attachments_1 (action_id=?)",
        ],
        "_SQL_GET_STATE": ["SEARCH state USING INDEX sqlite_autoindex_state_1 (key=?)"],
        "_SQL_OPEN_TICKET_BY_ALERT_KEY": [
            "SEARCH tickets USING INDEX tickets_open_by_alert_key (alert_key=?)"
        ],
        "_SQL_ASSIGN": ["SEARCH tickets USING INTEGER PRIMARY KEY (rowid=?)"],
        "_SQL_ASSET_EXISTS": ["SEARCH assets USING INTEGER PRIMARY KEY (rowid=?)"],
        "_SQL_UPDATE_ASSET": ["SEARCH assets USING INTEGER PRIMARY KEY (rowid=?)"],
        "_SQL_DELETE_ASSET_FIELD": [
            "SEARCH asset_fields USING PRIMARY KEY (name=? AND value_key=? AND asset_id=?)"
        ],
        "_SQL_LIST_FILES": [
            "SEARCH stored_files USING INDEX stored_files_by_owner (owner=? AND owner_id=?)"
        ],
        "_SQL_SERVICE_HISTORY": [
            "SEARCH service_status USING INDEX service_status_by_service (service=?)"
        ],
        "_SQL_CLAIM_OUTBOX": [
            "SCAN outbox USING INDEX outbox_pending",
            "SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)",
        ],
        "_SQL_RELEASE_LEASE": ["SEARCH leases USING INDEX sqlite_autoindex_leases_1 (name=?)"],
        "_SQL_LIST_TICKETS": ["SCAN tickets"],
        "_SQL_LIST_QUARANTINE": ["SCAN quarantine"],
    }

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_the_query_uses_its_index(
        self, name: str, repo: SQLiteTicketRepository, db: Path
    ) -> None:
        """The statement's plan searches the expected indexes and never sorts in a temp b-tree."""
        (sql,) = {
            getattr(part, name)
            for part in (_sqlite_tickets, _sqlite_directory, _sqlite_ledger, _sqlite_outbox)
            if hasattr(part, name)
        }
        names = set(re.findall(r":(\w+)", sql))
        params: dict[str, str] | tuple[str, ...] = (
            dict.fromkeys(names, "x") if names else ("x",) * sql.count("?")
        )
        with raw(db) as connection:
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        for step in self.EXPECTED[name]:
            assert step in plan, plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
        scans = [step for step in plan if step.startswith("SCAN")]
        assert scans == [s for s in self.EXPECTED[name] if s.startswith("SCAN")], plan

    def test_the_message_id_lookup_reads_only_the_ids_given_through_indexes(
        self, db: Path, repo: SQLiteTicketRepository
    ) -> None:
        """One statement for a References header's ids: each id through the actions' and
        the outbox's index, the ticket by its key; the only scans are of the ids given,
        and the only sort is of the tickets they found (at most one per id, LIMIT 1)."""
        sql = _sqlite_tickets._sql_ticket_by_message_ids(3)
        with raw(db) as connection:
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", ("x",) * 3)]
        for step in (
            "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH a USING INDEX actions_by_message_id (message_id=?)",
            "SEARCH o USING INDEX sqlite_autoindex_outbox_1 (message_id=?)",
        ):
            assert step in plan, plan
        assert [step for step in plan if step.startswith("SCAN")] == [
            "SCAN 3 CONSTANT ROWS",
            "SCAN w",
        ], plan
