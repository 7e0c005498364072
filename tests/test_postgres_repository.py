"""The PostgreSQL repository beyond the contract suite: its schema versions, its errors
and reconnection, its placeholders, text with NUL, and its password (#14).

Everything runs against the session's private PostgreSQL (``tests/servers/postgres.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import errors as pg_errors

from halomail.errors import DuplicateKeyError, RepositoryError, TransientRepositoryError
from halomail.tickets import _pg_schema
from halomail.tickets._postgres_base import redacted, to_psycopg, translate_error
from halomail.tickets._schema import MIGRATIONS as SQLITE_MIGRATIONS
from halomail.tickets._schema import Migration
from halomail.tickets._schema import migrate as sqlite_migrate
from halomail.tickets.models import DedupeRecord, NewOutgoing, NewTicket, TicketStatus
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import AttemptLedger, Browsing, OutboxAdmin, TicketRepository
from tests.servers.postgres import PostgresServer

#: A digest of each released PostgreSQL migration: a released step is never edited.
RELEASED_MIGRATION_DIGESTS = [
    "82f4b7eea6c570591ce187f854dadd7a4c6d83f071b346abb8d6e15cb1dac44a",
    "c0ec148e8d18b6343039fb52e53668039475c190e4a1b203bdc063f1c3086bf3",
    "68853cd7fbb35be49172d2b259f264a825c87f8f706d4292bd99b0fc8d4dffcc",
    "8f0ed2f31be5434ece1950c01c380cdbb0d8d2803f7c609d8a022df735c40bcf",
    "dc62332e17e2fa15578c2e192ac86e29c23f65c97d822ff0990db3b311c6b365",
]

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def new_ticket(summary: str = "Printer is jammed") -> NewTicket:
    """A minimal valid ticket."""
    return NewTicket(summary, "details", "Incident", "alice@customer.example")


@contextlib.contextmanager
def raw(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg connection to the database, in autocommit mode, closed at the end."""
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def dbname(url: str) -> str:
    """The database a test URL names."""
    return url.rsplit("/", 1)[1]


def test_it_offers_every_optional_role_and_declares_itself_thread_safe(postgres_url: str) -> None:
    """Browsing, OutboxAdmin and AttemptLedger, as SQLite offers them; thread_safe is True."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        for role in (TicketRepository, Browsing, OutboxAdmin, AttemptLedger):
            assert isinstance(repo, role), role.__name__
        assert PostgreSQLTicketRepository.thread_safe is True


# -- the schema ----------------------------------------------------------------


class TestSchema:
    """The same versions as SQLite's, migrated forward at open, a newer one refused."""

    def test_released_migrations_are_never_edited(self) -> None:
        """Each released step's statements hash to the digest pinned when it was released."""
        digests = [m.digest for m in _pg_schema.MIGRATIONS[: len(RELEASED_MIGRATION_DIGESTS)]]
        assert digests == RELEASED_MIGRATION_DIGESTS

    def test_there_are_as_many_versions_as_sqlite_has(self) -> None:
        """A version number means the same step on both databases."""
        assert len(_pg_schema.MIGRATIONS) == len(SQLITE_MIGRATIONS)

    @pytest.mark.parametrize("version", range(1, len(SQLITE_MIGRATIONS) + 1))
    def test_each_version_has_the_tables_and_columns_of_sqlites(
        self, version: int, postgres_url: str, tmp_path: Path
    ) -> None:
        """At version n, PostgreSQL's tables and columns are exactly SQLite's at version n."""
        with raw(postgres_url) as connection:
            assert _pg_schema.migrate(connection, _pg_schema.MIGRATIONS[:version]) == version
            rows = connection.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name <> 'halomail_schema'"
            ).fetchall()
        postgres_columns = {(table, column) for table, column in rows}
        lite = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
        try:
            sqlite_migrate(lite, SQLITE_MIGRATIONS[:version])
            tables = [
                row[0]
                for row in lite.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            ]
            sqlite_columns = {
                (table, row[1])
                for table in tables
                for row in lite.execute("SELECT * FROM pragma_table_info(?)", (table,))
            }
        finally:
            lite.close()
        assert postgres_columns == sqlite_columns

    def test_a_new_database_is_at_the_latest_schema_version(self, postgres_url: str) -> None:
        """Opening an empty database creates every table and records the newest version."""
        with PostgreSQLTicketRepository(postgres_url):
            pass
        with raw(postgres_url) as connection:
            assert _pg_schema.schema_version(connection) == len(_pg_schema.MIGRATIONS)

    def test_an_old_database_is_migrated_forward_with_its_data(self, postgres_url: str) -> None:
        """A version 3 database with a ticket and a pending email gains claims and attempts."""
        with raw(postgres_url) as connection:
            assert _pg_schema.migrate(connection, _pg_schema.MIGRATIONS[:3]) == 3
            connection.execute(
                "INSERT INTO tickets (summary, details, ticket_type, user_email, record, "
                "status, created_at, updated_at) VALUES ('Old ticket', 'kept', 'Incident', "
                "'a@b.example', 'ticket', 'new', %s, %s)",
                ("2025-01-01T00:00:00.000000+00:00",) * 2,
            )
            connection.execute(
                "INSERT INTO outbox (message_id, recipients, subject, text, kind, "
                "auto_submitted, status, created_at) VALUES ('old@x', '[\"a@b.example\"]', "
                "'Re: old', 'text', 'acknowledgement', 1, 'pending', %s)",
                ("2025-01-01T00:00:00.000000+00:00",),
            )
        with PostgreSQLTicketRepository(postgres_url) as repo:
            (ticket,) = repo.list_tickets()
            assert (ticket.summary, ticket.details) == ("Old ticket", "kept")
            claimed = repo.claim_outgoing(NOW, owner="w1", lease=dt.timedelta(minutes=5))
            assert [mail.message_id for mail in claimed] == ["old@x"]
            assert repo.begin_attempt("k", now=NOW) == 0
        with raw(postgres_url) as connection:
            assert _pg_schema.schema_version(connection) == len(_pg_schema.MIGRATIONS)

    def test_a_database_from_a_newer_halomail_is_refused_untouched(self, postgres_url: str) -> None:
        """A version above ours is refused with a clear message, and nothing is changed."""
        with PostgreSQLTicketRepository(postgres_url) as repo:
            repo.create_ticket(new_ticket())
        newer = len(_pg_schema.MIGRATIONS) + 1
        with raw(postgres_url) as connection:
            connection.execute("UPDATE halomail_schema SET version = %s", (newer,))
        with pytest.raises(RepositoryError, match=f"schema version {newer}, newer than"):
            PostgreSQLTicketRepository(postgres_url)
        with raw(postgres_url) as connection:
            assert _pg_schema.schema_version(connection) == newer
            assert connection.execute("SELECT count(*) FROM tickets").fetchone() == (1,)

    def test_a_failing_migration_leaves_the_previous_version_whole(self, postgres_url: str) -> None:
        """A step that fails half-way is rolled back with its version bump."""
        broken = Migration("broken", ("CREATE TABLE half (x INTEGER)", "SELECT no_such_thing"))
        with raw(postgres_url) as connection:
            with pytest.raises(psycopg.errors.UndefinedColumn):
                _pg_schema.migrate(connection, (*_pg_schema.MIGRATIONS, broken))
            assert _pg_schema.schema_version(connection) == len(_pg_schema.MIGRATIONS)
            assert connection.execute("SELECT to_regclass('half')").fetchone() == (None,)


# -- placeholders and text -------------------------------------------------------


@pytest.mark.parametrize(
    ("shared", "psycopg_form"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
        ("UPDATE t SET a = :now WHERE b <= :now", "UPDATE t SET a = %(now)s WHERE b <= %(now)s"),
        ("SELECT '50% ?:x' || ? FROM t", "SELECT '50%% ?:x' || %s FROM t"),
        (
            "SELECT CAST(a AS TEXT), b::text, 5 % 2 FROM t",
            "SELECT CAST(a AS TEXT), b::text, 5 %% 2 FROM t",
        ),
        ("SELECT 'it''s :x' WHERE a = :a", "SELECT 'it''s :x' WHERE a = %(a)s"),
    ],
)
def test_placeholders_become_psycopgs_outside_quoted_text(shared: str, psycopg_form: str) -> None:
    """? and :name become %s and %(name)s; literals and :: casts stay; % is doubled."""
    assert to_psycopg(shared) == psycopg_form


def test_text_with_nul_and_the_escape_character_round_trips(postgres_url: str) -> None:
    """NUL, which PostgreSQL's text cannot hold, and the escape character come back as written."""
    tricky = ["a\x00b", "\ue000", "\ue0000", "\x00\x00\ue000\ue000x", "plain"]
    with PostgreSQLTicketRepository(postgres_url) as repo:
        for n, text in enumerate(tricky):
            repo.set_state(f"k{n}", text)
            repo.set_state(text, f"keyed {n}")
        assert [repo.get_state(f"k{n}") for n in range(len(tricky))] == tricky
        assert [repo.get_state(text) for text in tricky] == [f"keyed {n}" for n in range(5)]
    with raw(postgres_url) as connection:
        stored = connection.execute("SELECT value FROM state WHERE key = 'k0'").fetchone()
    assert stored is not None
    assert "\x00" not in stored[0]


def test_a_duplicate_dedupe_key_keeps_the_transaction_usable(postgres_url: str) -> None:
    """A second record of one key raises DuplicateKeyError without aborting the transaction."""
    record = DedupeRecord("key-1", "0" * 64, "ticket", None, NOW)
    with PostgreSQLTicketRepository(postgres_url) as repo:
        repo.record_dedupe(record)
        with repo.transaction():
            with pytest.raises(DuplicateKeyError):
                repo.record_dedupe(record)
            ticket = repo.create_ticket(new_ticket("after the duplicate"))
        assert repo.get_ticket(ticket.id) == ticket


def test_an_error_inside_a_transaction_rolls_all_of_it_back(postgres_url: str) -> None:
    """PostgreSQL aborts a transaction at its first error: later calls raise, nothing commits."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        with (  # noqa: PT012 - the whole transaction is what fails
            pytest.raises(RepositoryError, match="rolled the transaction back"),
            repo.transaction(),
        ):
            repo.create_ticket(new_ticket("lost"))
            with pytest.raises(RepositoryError, match="out of range"):
                # An asset id past BIGINT: the server refuses the INSERT.
                repo.create_ticket(attrs.evolve(new_ticket("too big"), asset_id=2**63))
            with pytest.raises(RepositoryError, match="rolled back by the database"):
                repo.create_ticket(new_ticket("also lost"))
        assert repo.list_tickets() == []
        assert repo.create_ticket(new_ticket("later")).summary == "later"


# -- errors and reconnection -------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "transient"),
    [
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("55P03", True),  # lock not available (lock_timeout)
        ("57014", True),  # statement timeout
        ("57P01", True),  # admin shutdown
        ("53300", True),  # too many connections
        ("08006", True),  # connection failure
        ("23505", False),  # unique violation
        ("42P01", False),  # undefined table
        ("28P01", False),  # wrong password
    ],
)
def test_which_errors_are_transient(state: str, transient: bool) -> None:
    """Errors a retry can cure are transient; the others are plain repository errors."""
    error = translate_error(pg_errors.lookup(state)("boom"), "postgresql://u@h/db")
    assert isinstance(error, TransientRepositoryError) is transient
    assert isinstance(error, RepositoryError)
    assert str(error) == "postgresql://u@h/db: boom"


def test_an_ended_session_is_transient_and_the_next_call_reconnects(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """pg_terminate_backend from another connection: one transient error, then it works."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        first = repo.create_ticket(new_ticket("before"))
        assert postgres.terminate_backends(dbname(postgres_url)) == 1
        with pytest.raises(TransientRepositoryError):
            repo.get_ticket(first.id)
        assert repo.get_ticket(first.id) == first
        assert repo.create_ticket(new_ticket("after")).id > first.id


def test_a_session_ended_inside_a_transaction_commits_nothing(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """The transaction open when the connection dies is gone; the error is transient."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        with pytest.raises(TransientRepositoryError), repo.transaction():  # noqa: PT012
            repo.create_ticket(new_ticket("lost with the connection"))
            postgres.terminate_backends(dbname(postgres_url))
            repo.create_ticket(new_ticket("never reaches the server"))
        assert repo.list_tickets() == []
        with repo.transaction():
            repo.create_ticket(new_ticket("on the new connection"))
        assert [t.summary for t in repo.list_tickets()] == ["on the new connection"]


def test_a_server_restart_is_transient_and_the_next_call_reconnects(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """PostgreSQL crashes mid-transaction and comes back: that transaction fails as
    transient, the next call reconnects, and what was committed before is there."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        ticket = repo.create_ticket(new_ticket("survives the restart"))
        with pytest.raises(TransientRepositoryError), repo.transaction():  # noqa: PT012
            repo.create_ticket(new_ticket("lost in the crash"))
            postgres.restart(mode="immediate")
            repo.set_status(ticket.id, TicketStatus.OPEN)
        assert repo.set_status(ticket.id, TicketStatus.OPEN).status is TicketStatus.OPEN
        assert [t.summary for t in repo.list_tickets()] == ["survives the restart"]


def test_a_lock_held_elsewhere_past_the_lock_timeout_is_transient(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """Another session holds the tickets table: the write gives up as transient, not forever."""
    with PostgreSQLTicketRepository(postgres_url, lock_timeout=0.2) as repo:
        with raw(postgres_url) as other, other.transaction():
            other.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(TransientRepositoryError, match="lock timeout"):
                repo.create_ticket(new_ticket("waits for the lock"))
        assert repo.create_ticket(new_ticket("after the lock")).summary == "after the lock"


def test_a_server_that_is_down_is_transient_at_open(postgres: PostgresServer) -> None:
    """Nobody listening on the port: opening raises TransientRepositoryError, not a crash."""
    url = postgres.url("postgres").replace(f":{postgres.port}/", ":1/")
    with pytest.raises(TransientRepositoryError, match=r"127\.0\.0\.1"):
        PostgreSQLTicketRepository(url, connect_timeout=5)


def test_a_closed_repository_refuses_calls(postgres_url: str) -> None:
    """After close(), calls raise RepositoryError rather than reconnecting."""
    repo = PostgreSQLTicketRepository(postgres_url)
    repo.close()
    repo.close()
    with pytest.raises(RepositoryError, match="closed"):
        repo.list_tickets()


# -- the password ------------------------------------------------------------------

SECRET = "s3cret-Pa55word"


def test_the_password_is_sent_and_never_shown(
    postgres: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A password login works; the password is in no repr, error message or log line."""
    caplog.set_level(logging.DEBUG)
    postgres.create_user("agent007", SECRET)
    with_password = postgres_url.replace("halomail@", f"agent007:{SECRET}@")
    with PostgreSQLTicketRepository(with_password) as repo:
        assert SECRET not in repr(repo)
        assert repo.where == postgres_url.replace("halomail@", "agent007@")
        with pytest.raises(RepositoryError) as missing:
            repo.set_status(999, TicketStatus.OPEN)
        assert SECRET not in str(missing.value)
        postgres.terminate_backends(dbname(postgres_url))
        with pytest.raises(TransientRepositoryError) as lost:
            repo.list_tickets()
        assert SECRET not in str(lost.value)
        repo.list_tickets()
    without = postgres_url.replace("halomail@", "agent007@")
    with PostgreSQLTicketRepository(without, password=SECRET) as repo:
        assert repo.list_tickets() == []
    with pytest.raises(RepositoryError) as refused:
        PostgreSQLTicketRepository(without, password="wrong-" + SECRET)
    assert not isinstance(refused.value, TransientRepositoryError)
    assert "password authentication failed" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        ("postgresql://u:pw@db.example:5433/helpdesk", "postgresql://u@db.example:5433/helpdesk"),
        ("postgres://db.example/helpdesk?password=pw", "postgresql://db.example/helpdesk"),
        (
            "host=db.example user=u password=pw dbname=helpdesk",
            "postgresql://u@db.example/helpdesk",
        ),
    ],
)
def test_where_a_database_is_never_shows_its_password(conninfo: str, shown: str) -> None:
    """URLs and key=value strings are shown as postgresql://user@host:port/dbname."""
    assert redacted(conninfo) == shown


def test_an_outgoing_message_id_queued_twice_is_refused_inside_a_usable_transaction(
    postgres_url: str,
) -> None:
    """A repeated Message-ID raises RepositoryError and does not abort the transaction."""
    mail = NewOutgoing(message_id="m1@x", to=("a@b.example",), subject="s", text="t")
    with PostgreSQLTicketRepository(postgres_url) as repo, repo.transaction():
        repo.enqueue_outgoing(mail)
        with pytest.raises(RepositoryError, match="already queued"):
            repo.enqueue_outgoing(mail)
        repo.create_ticket(new_ticket())
    with PostgreSQLTicketRepository(postgres_url) as repo:
        assert len(repo.list_tickets()) == 1
        assert [m.message_id for m in repo.list_outgoing()] == ["m1@x"]


def test_a_command_left_waiting_for_its_answer_does_not_block_the_next_call(
    postgres_url: str,
) -> None:
    """A statement that failed on its way out leaves libpq waiting for an answer that will
    never come, and the next statement would be refused ("another command is already in
    progress": seen once in CI, on the call after the server ended the session). The
    repository starts that call on a new connection instead."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        connection = repo._connection
        assert connection is not None
        connection.pgconn.send_query(b"SELECT 1")  # sent; its answer is never read
        assert repo.list_tickets() == []
        assert repo._connection is not connection
        assert connection.closed


def test_a_command_left_waiting_inside_a_transaction_loses_the_transaction_only(
    postgres_url: str,
) -> None:
    """Inside a transaction the same state is a lost session: the transaction raises a
    transient error and commits nothing, and the next call works on a new connection."""
    with PostgreSQLTicketRepository(postgres_url) as repo:

        def lose_the_session_inside_a_transaction() -> None:
            with repo.transaction():
                repo.create_ticket(
                    NewTicket(
                        summary="Lost", details="d", ticket_type="Incident", user_email="a@b.c"
                    )
                )
                connection = repo._connection
                assert connection is not None
                connection.pgconn.send_query(b"SELECT 1")
                repo.list_tickets()

        with pytest.raises(TransientRepositoryError):
            lose_the_session_inside_a_transaction()
        assert repo.list_tickets() == []
