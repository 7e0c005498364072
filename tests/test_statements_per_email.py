"""Issue 18, point 2: what one ordinary new email costs the database, counted.

An ordinary new email is a plain email from a sender the helpdesk has not met before
(no user or customer in the directory), with a Message-ID, that opens a ticket with
its acknowledgement queued. Its statements are counted through the real repository:
SQLite's own trace callback, and PostgreSQL's server log (``log_statement = all`` on
the test's database only). ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` are counted apart.

Before issue 18 such an email cost 18 statements and 2 commits. Alone (``batch_size =
1``) it costs the bound below. In a batch (group commit, ``batch_size = 10``) the issue's
goal holds: at most 4 statements per email, *amortized over the batch* (the batch's
reads are one statement per table, its small writes one per table at the commit; each
email still inserts its ticket, first action and acknowledgement), and the commits,
counted apart, are 2 per batch (its attempts, its outcomes).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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

STATEMENTS_PER_NEW_EMAIL = 16
"""Statements (not counting BEGIN/COMMIT) one ordinary new email costs today (18 before
issue 18, 14 after it; the 2 since are the read and the write of its copy key, which
makes an email sent to two of our mailboxes one ticket)."""

COMMITS_PER_NEW_EMAIL = 2
"""Its attempt record, committed before parsing, and its outcome."""

BATCH = 10
"""Emails of the batch test, committed together (``batch_size``)."""

STATEMENTS_PER_EMAIL_IN_A_BATCH = 4
"""The issue's goal: statements per ordinary new email, amortized over a batch."""

COMMITS_PER_BATCH = 2
"""The batch's attempts, committed before parsing, and its outcomes."""

_TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


def _processor(
    repository: TicketRepository, emails: list[bytes], batch_size: int = 1
) -> MailProcessor:
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity("support@helpdesk.example", "Support"),
        batch_size=batch_size,
    )
    connector = MemoryConnector("Support", emails)
    return MailProcessor(repository, [Mailbox(connector)], settings, transport=MemoryTransport())


def _process_one_new_email(
    repository: TicketRepository, trace: Callable[[], AbstractContextManager[list[str]]]
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


def _process_a_batch_of_new_emails(
    repository: TicketRepository, trace: Callable[[], AbstractContextManager[list[str]]]
) -> list[str]:
    """Warm the repository with one email, then process :data:`BATCH` ordinary new emails
    in one batch under ``trace`` (half from strangers, half from a user the directory
    knows, one of whom writes twice); return the statements they ran."""
    warm = make_email(message_id="<warm@customer.example>", subject="Warm up")
    senders = [f"Stranger {n} <stranger{n}@newcomer.example>" for n in range(BATCH // 2)]
    senders += ["Carol Known <carol@known.example>"] * (BATCH - len(senders))
    emails = [
        make_email(sender=sender, message_id=f"<batch-{n}@example.org>", subject=f"Issue {n}")
        for n, sender in enumerate(senders)
    ]
    processor = _processor(repository, [warm], batch_size=BATCH)
    mailbox = processor.mailboxes[0]
    add_user = getattr(repository, "add_user")  # noqa: B009 - both SQL repositories seed people
    add_user("carol@known.example", "Carol Known")
    assert [o.outcome.value for o in processor.process_mailbox(mailbox).outcomes] == ["created"]
    connector = mailbox.connector
    assert isinstance(connector, MemoryConnector)
    for raw in emails:
        connector.add(raw)
    with trace() as seen:
        outcomes = processor.process_mailbox(mailbox).outcomes
    assert [(o.outcome.value, o.acknowledged) for o in outcomes] == [("created", True)] * BATCH
    assert len(repository.list_tickets(limit=100)) == BATCH + 1
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


def _logging_repository(postgres: PostgresServer, url: str) -> PostgreSQLTicketRepository:
    """A repository on ``url`` whose every statement the server logs."""
    name = url.rsplit("/", 1)[1]
    with postgres.admin() as admin:  # before the repository connects: its session logs all
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(name))
        )
    return PostgreSQLTicketRepository(url)


def _log_trace(postgres: PostgresServer) -> Callable[[], AbstractContextManager[list[str]]]:
    """A trace of the statements the server logs while it is open."""

    @contextmanager
    def trace() -> Iterator[list[str]]:
        start = postgres.log_file.stat().st_size
        seen: list[str] = []
        yield seen
        with postgres.log_file.open("rb") as log:
            log.seek(start)
            lines = log.read().decode("utf-8", "replace").splitlines()
        seen.extend(m.group(1) for line in lines if (m := _LOGGED.search(line)))

    return trace


def test_an_ordinary_new_email_on_postgresql_costs_at_most_its_counted_statements(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """On PostgreSQL the same email runs no more statements and commits than counted, as
    the server itself logs them."""
    repository = _logging_repository(postgres, postgres_url)
    trace = _log_trace(postgres)
    try:
        work, commits = _split(_process_one_new_email(repository, trace))
    finally:
        repository.close()
    assert work, "the server logged no statement: log_statement did not take"
    assert len(work) <= STATEMENTS_PER_NEW_EMAIL, "\n".join(work)
    assert commits == COMMITS_PER_NEW_EMAIL
    assert not any(s.startswith("UPDATE tickets") for s in work), "a new ticket needs no touch"


# The mailbox pass's own statements (its lease, its health and sync state), run once
# per pass whatever the number of emails: counted apart from the batch's.
_PASS_STATEMENT = re.compile(r"\bleases\b|'mailbox:")
PASS_STATEMENTS = 4
"""At most: its health read, its lease taken and released, its sync state saved."""


def _check_batch(work: list[str], commits: int) -> None:
    """The batch's statements per email, amortized, and its commits, counted apart."""
    per_pass = [s for s in work if _PASS_STATEMENT.search(s)]
    batch = [s for s in work if not _PASS_STATEMENT.search(s)]
    assert len(per_pass) <= PASS_STATEMENTS, "\n".join(per_pass)
    assert len(batch) <= STATEMENTS_PER_EMAIL_IN_A_BATCH * BATCH, "\n".join(batch)
    # Each write of the pass (its lease) runs outside any transaction: a commit of its own.
    pass_commits = sum(1 for s in per_pass if not s.lstrip().upper().startswith("SELECT"))
    assert commits == COMMITS_PER_BATCH + pass_commits
    assert not any(s.startswith("UPDATE tickets") for s in work), "a new ticket needs no touch"


def test_a_batch_of_ordinary_new_emails_on_sqlite_costs_at_most_4_statements_each(
    tmp_path: Path,
) -> None:
    """On SQLite, ten new emails from strangers and a known user, committed as one batch,
    run at most 4 statements per email (amortized over the batch) and 2 commits."""
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
        _check_batch(*_split(_process_a_batch_of_new_emails(repository, trace)))
    finally:
        repository.close()


def test_a_batch_of_ordinary_new_emails_on_postgresql_costs_at_most_4_statements_each(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """On PostgreSQL the same batch runs at most 4 statements per email and 2 commits, as
    the server itself logs them."""
    repository = _logging_repository(postgres, postgres_url)
    try:
        work, commits = _split(_process_a_batch_of_new_emails(repository, _log_trace(postgres)))
    finally:
        repository.close()
    assert work, "the server logged no statement: log_statement did not take"
    _check_batch(work, commits)
