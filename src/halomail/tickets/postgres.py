"""The PostgreSQL ticket repository: one database shared by many workers on many machines.

Needs the ``postgres`` extra: ``pip install 'halomail[postgres]'`` (psycopg 3).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halomail.tickets._postgres_base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    PostgresBase,
    redacted,
    translate_error,
)
from halomail.tickets._sqlite_directory import DirectoryPart
from halomail.tickets._sqlite_ledger import LedgerPart
from halomail.tickets._sqlite_outbox import OutboxPart
from halomail.tickets._sqlite_tickets import TicketsPart

if TYPE_CHECKING:
    from halomail.tickets.repository import (
        AttemptLedger,
        Browsing,
        LedgerRetention,
        OutboxAdmin,
        QuarantineAdmin,
        TicketRepository,
    )

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LOCK_TIMEOUT",
    "PostgreSQLTicketRepository",
    "redacted",
    "translate_error",
]


class PostgreSQLTicketRepository(TicketsPart, DirectoryPart, LedgerPart, OutboxPart, PostgresBase):
    """A :class:`~halomail.TicketRepository` in a PostgreSQL database, shared by workers.

    It runs the same SQL as :class:`~halomail.tickets.sqlite.SQLiteTicketRepository`
    (the role parts), with PostgreSQL's own claim of outgoing mail
    (``SELECT … FOR UPDATE SKIP LOCKED``); leases are a conditional upsert, atomic in
    PostgreSQL. The schema has the same versions as SQLite's, kept in the table
    ``halomail_schema`` and migrated forward when the repository opens (under an
    advisory lock, so workers starting together migrate once); a database written by a
    newer halomail is refused.

    :meth:`transaction` is ``BEGIN`` … ``COMMIT`` at READ COMMITTED. A write method
    called outside a transaction runs in a transaction of its own. PostgreSQL aborts a
    transaction at its first error, so every later call in it raises, and the block
    ends rolled back.

    A lost connection (the server restarted, or an administrator ended the session),
    a server shutting down, a serialization failure, a deadlock, a lock or statement
    timeout and a server out of connections raise
    :class:`~halomail.errors.TransientRepositoryError`; any other failure raises
    :class:`~halomail.errors.RepositoryError`. After a lost connection the next call
    opens a new one; the transaction that was open is gone, which is what the
    pipeline's retry is for. A connection lost during ``COMMIT`` leaves its outcome
    unknown; that is safe, because an email's dedupe key commits in the same
    transaction as its ticket: when the email is processed again, either the key is
    there (the first commit happened) or nothing of it is.

    One connection serves the repository object, guarded by a lock, as in SQLite, so
    the object may be shared with worker threads; run one repository per process.
    The password never appears in a log line, an error or the ``repr``.

    Args:
        conninfo: ``postgresql://user@host:port/dbname`` (``postgres://`` too) or a
            libpq ``key=value`` string.
        password: The password, when it is not in ``conninfo`` (``[storage]
            password_env`` hands it over from the environment).
        clock: Returns the current time (aware); tests pass a fixed clock.
        connect_timeout: Seconds to wait for the server when connecting.
        lock_timeout: Seconds a statement waits for a lock another session holds
            (PostgreSQL's ``lock_timeout``) before raising
            :class:`~halomail.errors.TransientRepositoryError`.

    Raises:
        TransientRepositoryError: When the server cannot be reached or refuses the
            connection for now.
        RepositoryError: When the login is refused, ``conninfo`` is invalid, or the
            database was written by a newer version of halomail.

    .. versionadded:: 0.1.0
    """

    thread_safe: bool = True
    """Concurrent calls from several threads are safe: one lock guards the connection,
    and a transaction holds it until it ends."""


if TYPE_CHECKING:
    # mypy proves the class satisfies the Protocol, signature by signature.
    _: type[TicketRepository] = PostgreSQLTicketRepository
    _browsing: type[Browsing] = PostgreSQLTicketRepository
    _outbox_admin: type[OutboxAdmin] = PostgreSQLTicketRepository
    _quarantine_admin: type[QuarantineAdmin] = PostgreSQLTicketRepository
    _attempts: type[AttemptLedger] = PostgreSQLTicketRepository
    _retention: type[LedgerRetention] = PostgreSQLTicketRepository
