"""The SQLite ticket repository: the embedded default, one file, safe against crashes.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halomail.tickets._sqlite_base import DEFAULT_BUSY_TIMEOUT, SQLiteBase, translate_error
from halomail.tickets._sqlite_directory import DirectoryPart
from halomail.tickets._sqlite_ledger import LedgerPart
from halomail.tickets._sqlite_outbox import _SQL_CLAIM_OUTBOX, _SQL_RETRY_OUTBOX, OutboxPart
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

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SQLiteTicketRepository", "translate_error"]


class SQLiteTicketRepository(TicketsPart, DirectoryPart, LedgerPart, OutboxPart, SQLiteBase):
    """A :class:`~halomail.TicketRepository` in one SQLite file: the embedded default.

    The code is split by role: the connection and transactions in ``_sqlite_base``,
    and one part per role (``_sqlite_tickets``, ``_sqlite_directory``,
    ``_sqlite_ledger``, ``_sqlite_outbox``), each with its own SQL, which
    :class:`~halomail.tickets.postgres.PostgreSQLTicketRepository` shares.

    The database runs in WAL mode with ``synchronous=NORMAL``: a committed transaction
    survives a crash of the process (a power cut may lose the last few, never
    corrupt the file), and readers in other processes never block the writer.
    Foreign keys are enforced. The schema is versioned (``PRAGMA user_version``) and
    migrated forward when the file is opened; a file written by a newer halomail is
    refused rather than misread.

    :meth:`transaction` starts with ``BEGIN IMMEDIATE``, taking the write lock up
    front, so two processes on one file queue for it instead of failing half-way.
    A write method called outside a transaction runs in a transaction of its own
    and is committed when it returns. A lock held elsewhere for longer than
    ``busy_timeout``, a disk I/O error or a full disk raises
    :class:`~halomail.errors.TransientRepositoryError`; any other database failure
    raises :class:`~halomail.errors.RepositoryError`.

    One connection serves the repository object, guarded by a lock, so the object
    may be shared with worker threads; a transaction holds the lock until it ends,
    so other threads wait for it rather than write into it.

    Beyond the Protocol it offers :meth:`add_customer`, :meth:`add_user` and
    :meth:`add_asset` to seed the people and things a stand-alone install knows,
    and :meth:`close` (it is also a context manager).

    Args:
        path: The database file (created when missing), or ``":memory:"``.
        busy_timeout: Seconds to wait for another connection's write lock.
        read_only: Open an existing database for reading only; every write raises
            :class:`~halomail.errors.RepositoryError` and the file is never changed.
        clock: Returns the current time (aware); tests pass a fixed clock.

    Raises:
        RepositoryError: When the file cannot be opened, is not a database, or was
            written by a newer version of halomail.
        TransientRepositoryError: When the database stays locked while it is opened.

    .. versionadded:: 0.1.0
    """

    _SQL_CLAIM_OUTBOX = _SQL_CLAIM_OUTBOX
    _SQL_RETRY_OUTBOX = _SQL_RETRY_OUTBOX
    _SQL_STATE_TIME = "substr(value, instr(value, ' ') + 1)"

    thread_safe: bool = True
    """Concurrent calls from several threads are safe: one lock guards the connection,
    and a transaction holds it until it ends."""


if TYPE_CHECKING:
    # mypy proves the class satisfies the Protocol, signature by signature.
    _: type[TicketRepository] = SQLiteTicketRepository
    _browsing: type[Browsing] = SQLiteTicketRepository
    _outbox_admin: type[OutboxAdmin] = SQLiteTicketRepository
    _quarantine_admin: type[QuarantineAdmin] = SQLiteTicketRepository
    _attempts: type[AttemptLedger] = SQLiteTicketRepository
    _retention: type[LedgerRetention] = SQLiteTicketRepository
