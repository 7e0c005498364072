"""Issue 18, point 2: what one ordinary new email costs the database, counted.

An ordinary new email is a plain email from a sender the helpdesk has not met before
(no user or customer in the directory), with a Message-ID, that opens a ticket with
its acknowledgement queued. Its statements are counted through the real repository:
SQLite's own trace callback, and PostgreSQL's server log (``log_statement = all`` on
the test's database only). ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` are counted apart.

Before issue 18 such an email cost 18 statements and 2 commits; the bounds below are
today's counts, so that a statement added by accident fails here. The issue's goal is
4 statements (see ``docs/performance.md`` for what is left).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg import sql

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.postgres import PostgresServer

STATEMENTS_PER_NEW_EMAIL = 14
"""Statements (not counting BEGIN/COMMIT) one ordinary new email costs today (18 before)."""

COMMITS_PER_NEW_EMAIL = 2
"""Its attempt record, committed before parsing, and its outcome."""

_TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


def _processor(repository: TicketRepository, emails: list[bytes]) -> MailProcessor:
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity("support@helpdesk.example", "Support"),
    )
    connector = MemoryConnector("Support", emails)
    return MailProcessor(repository, [Mailbox(connector)], settings, transport=MemoryTransport())


def _process_one_new_email(
    repository: TicketRepository, trace: Callable[[], Iterator[list[str]]]
) -> list[str]:
    """Warm the repository with one email, then process an ordinary new one under
    ``trace``; return the statements it ran."""
    warm = make_email(message_id="<warm@customer.example>", subject="Warm up")
    new = make_email(
        sender="Bob Stranger <bob@newcomer.example>",
        message_id="<ordinary@newcomer.example>",
        subject="The printer jams",
    )
    processor = _processor(repository, [warm, new])
    mailbox = processor.mailboxes[0]
    fetched = list(mailbox.connector.fetch())
    assert processor.process_message(mailbox, fetched[0]).outcome.value == "created"
    with trace() as seen:
        outcome = processor.process_message(mailbox, fetched[1])
    assert (outcome.outcome.value, outcome.acknowledged) == ("created", True)
    assert len(repository.list_tickets()) == 2
    return seen


def _split(statements: list[str]) -> tuple[list[str], int]:
    """The statements other than transaction control, and how many COMMITs ran."""
    work = [s for s in statements if not _TRANSACTION_CONTROL.match(s)]
    commits = sum(1 for s in statements if s.strip().upper().startswith("COMMIT"))
    return work, commits


def test_an_ordinary_new_email_on_sqlite_costs_at_most_its_counted_statements(
    tmp_path: Path,
) -> None:
    """On SQLite a new email opening an acknowledged ticket runs no more statements and
    commits than counted (the trace callback sees every statement the connection runs)."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")

    @contextmanager
    def trace() -> Iterator[list[str]]:
        seen: list[str] = []
        connection: sqlite3.Connection = repository._open()  # read, never changed
        connection.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            connection.set_trace_callback(None)

    try:
        work, commits = _split(_process_one_new_email(repository, trace))
    finally:
        repository.close()
    assert len(work) <= STATEMENTS_PER_NEW_EMAIL, "\n".join(work)
    assert commits == COMMITS_PER_NEW_EMAIL
    assert not any(s.startswith("UPDATE tickets") for s in work), "a new ticket needs no touch"


_LOGGED = re.compile(r"LOG:\s+(?:statement|execute [^:]*):\s*(.*)")


def test_an_ordinary_new_email_on_postgresql_costs_at_most_its_counted_statements(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """On PostgreSQL the same email runs no more statements and commits than counted, as
    the server itself logs them."""
    name = postgres_url.rsplit("/", 1)[1]
    with postgres.admin() as admin:  # before the repository connects: its session logs all
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(name))
        )
    repository = PostgreSQLTicketRepository(postgres_url)

    @contextmanager
    def trace() -> Iterator[list[str]]:
        start = postgres.log_file.stat().st_size
        seen: list[str] = []
        yield seen
        with postgres.log_file.open("rb") as log:
            log.seek(start)
            lines = log.read().decode("utf-8", "replace").splitlines()
        seen.extend(m.group(1) for line in lines if (m := _LOGGED.search(line)))

    try:
        work, commits = _split(_process_one_new_email(repository, trace))
    finally:
        repository.close()
    assert work, "the server logged no statement: log_statement did not take"
    assert len(work) <= STATEMENTS_PER_NEW_EMAIL, "\n".join(work)
    assert commits == COMMITS_PER_NEW_EMAIL
    assert not any(s.startswith("UPDATE tickets") for s in work), "a new ticket needs no touch"
