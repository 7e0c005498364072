"""The SQLite repository's foundation: the connection, transactions, errors and value codecs.

The role parts (:mod:`._sqlite_tickets`, :mod:`._sqlite_directory`,
:mod:`._sqlite_ledger`, :mod:`._sqlite_outbox`) hold SQL shared with PostgreSQL and
build on :class:`~halomail.tickets._sql.SQLBase`;
:class:`~halomail.tickets.sqlite.SQLiteTicketRepository` combines them with
:class:`SQLiteBase`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.tickets._common import (
    to_utc,
)
from halomail.tickets._schema import MIGRATIONS, migrate, refuse_newer, schema_version
from halomail.tickets._sql import Connection, SQLBase
from halomail.tickets.models import (
    utcnow,
)

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "KILL_SWITCH_ENV",
    "MINIMUM_SQLITE",
    "SQLiteBase",
    "require_sqlite_version",
    "translate_error",
]

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT: Final = 5.0
"""Seconds a write waits for another connection's lock before failing as transient."""

# -- errors --------------------------------------------------------------------

# Primary result codes worth a retry: another connection holds a lock, or the
# disk failed or filled up (an administrator can free space and the mail waits).
_TRANSIENT_CODES: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)
_TRANSIENT_MESSAGES: Final = (
    "database is locked",
    "database table is locked",
    "database schema is locked",
    "database is busy",
    "disk i/o error",
    "database or disk is full",
)


def translate_error(exc: sqlite3.Error, where: str) -> RepositoryError:
    """The halomail error for an sqlite3 error: transient when a retry may succeed.

    Args:
        exc: The error sqlite3 raised.
        where: Which database, for the message.

    Returns:
        A :class:`~halomail.errors.TransientRepositoryError` for a locked or busy
        database, a disk I/O error or a full disk; a
        :class:`~halomail.errors.RepositoryError` otherwise. The caller raises it
        ``from exc``.
    """
    message = f"{where}: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT, …) keep the
        # primary code in their low byte.
        if isinstance(code, int) and code & 0xFF in _TRANSIENT_CODES:
            return TransientRepositoryError(message)
        if any(text in str(exc).lower() for text in _TRANSIENT_MESSAGES):
            return TransientRepositoryError(message)
    return RepositoryError(message)


# A payload larger than this is streamed in through incremental BLOB I/O, a chunk at a
# time: bound as a parameter, SQLite would copy it twice (the bound value, then the row
# record), tripling a 40 MB attachment's memory.
_STREAMED_PAYLOAD_BYTES = 1 << 20
# How the statements whose new id :meth:`SQLiteBase._insert` reads from the cursor end.
_RETURNING_ID: Final = " RETURNING id"

MINIMUM_SQLITE: Final = (3, 35, 0)
"""The oldest SQLite library that runs our statements (claims and leases use RETURNING)."""


def require_sqlite_version(version: tuple[int, int, int]) -> None:
    """Refuse an SQLite library older than :data:`MINIMUM_SQLITE`, saying which it is.

    Raises:
        RepositoryError: When ``version`` is older.
    """
    if version < MINIMUM_SQLITE:
        found, needed = ".".join(map(str, version)), ".".join(map(str, MINIMUM_SQLITE))
        raise RepositoryError(
            f"the SQLite library is version {found}; halomail needs {needed} or newer "
            "(a Python built against a newer SQLite)"
        )


KILL_SWITCH_ENV: Final = "HALOMAIL_TEST_KILL_AFTER_STATEMENTS"
"""For the crash tests only: when this environment variable holds a number *k*, the
process kills itself (SIGKILL, as an out-of-memory kill or a power cut would end it)
just before the *k*-th SQL statement a writable SQLite repository runs after it opens.
Unset, nothing is installed and nothing is counted."""


# How long one attempt to switch a new database to WAL waits before looking again.
_WAL_POLL_MS: Final = 50


def _enter_wal(connection: sqlite3.Connection, busy_timeout: float) -> str:
    """Put the database in WAL mode, or find it there; return the journal mode.

    Two processes opening a new database at once both see it in rollback mode. The
    first converts it and keeps it open, and every connection to a WAL database holds
    a shared lock on its file for as long as it is open, so the second's conversion
    would wait for an exclusive lock it can never get until ``busy_timeout`` ran out
    ("database is locked"), although the database is by then in the mode it asked for.
    So each attempt waits only briefly and the mode is read again between attempts,
    until ``busy_timeout`` has passed.
    """
    deadline = time.monotonic() + busy_timeout
    connection.execute(f"PRAGMA busy_timeout = {_WAL_POLL_MS}")
    try:
        while True:
            try:
                mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0])
                if mode == "wal":
                    return mode
                return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) & 0xFF
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if time.monotonic() >= deadline:
                    raise
    finally:
        connection.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")


def _arm_kill_switch(connection: sqlite3.Connection) -> None:
    """Install :data:`KILL_SWITCH_ENV`'s counter when the variable is set."""
    value = os.environ.get(KILL_SWITCH_ENV, "")
    if not value:
        return
    left = int(value)
    log.warning("%s=%d: this process kills itself at that statement", KILL_SWITCH_ENV, left)

    def count(statement: str) -> None:
        nonlocal left
        left -= 1
        if left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

    connection.set_trace_callback(count)


class SQLiteBase(SQLBase):
    """One SQLite connection behind a lock, its transactions, and the error translation.

    See :class:`~halomail.tickets.sqlite.SQLiteTicketRepository` for the arguments.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        require_sqlite_version(sqlite3.sqlite_version_info)
        self._path = os.fspath(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._in_transaction = False
        self._aborted = False
        self._connection: sqlite3.Connection | None = None
        memory = self._path == ":memory:"
        if read_only and memory:
            raise ValueError("a read-only repository needs a database file, not ':memory:'")
        target, uri = self._path, False
        if read_only:
            # mode=ro is enforced by SQLite itself, so it holds for root too,
            # where file permissions would not.
            target, uri = Path(self._path).absolute().as_uri() + "?mode=ro", True
        try:
            connection = sqlite3.connect(
                target,
                timeout=busy_timeout,
                # Autocommit mode: we issue BEGIN IMMEDIATE / COMMIT ourselves
                # instead of the sqlite3 module's implicit, deferred BEGIN.
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise translate_error(exc, self._path) from exc
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            if read_only:
                connection.execute("PRAGMA query_only = ON")
                self._check_version(connection)
            else:
                mode = _enter_wal(connection, busy_timeout)
                if mode != "wal" and not memory:
                    log.warning("%s: WAL mode unavailable, journal mode is %s", self._path, mode)
                connection.execute("PRAGMA synchronous = NORMAL")
                migrate(connection)
                _arm_kill_switch(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise translate_error(exc, self._path) from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _check_version(self, connection: sqlite3.Connection) -> None:
        version = schema_version(connection)
        refuse_newer(version)
        if version < len(MIGRATIONS):
            raise RepositoryError(
                f"{self._path}: the database is at schema version {version}, older than "
                f"{len(MIGRATIONS)}; open it once for writing to migrate it"
            )

    # -- life cycle ------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file, as given."""
        return self._path

    def close(self) -> None:
        """Close the connection (rolling back an unfinished transaction); safe to call twice."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            self._in_transaction = False
            self._rollback_quietly(connection)
            try:
                # Keeps the query planner's statistics fresh; cheap when nothing changed.
                connection.execute("PRAGMA optimize")
            except sqlite3.Error:
                log.debug("%s: PRAGMA optimize failed", self._path, exc_info=True)
            connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SQLiteTicketRepository {self._path!r}>"

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: committed when the block exits normally, rolled back on an exception.

        Raises:
            RepositoryError: When a transaction is already open on this repository
                (transactions do not nest), or the commit failed.
            TransientRepositoryError: When the write lock could not be had within
                ``busy_timeout``, or the disk failed or is full.
        """
        with self._lock:
            connection = self._open()
            if self._in_transaction:
                raise RepositoryError("transactions do not nest: one is already open")
            with self._translated():
                connection.execute("BEGIN IMMEDIATE")
            self._in_transaction, self._aborted = True, False
            self._began_transaction()
            try:
                yield
                self._flush_batch()
            except BaseException:
                self._in_transaction = False
                self._rollback_quietly(connection)
                raise
            self._in_transaction = False
            if self._aborted:
                self._rollback_quietly(connection)
                raise RepositoryError(
                    f"{self._path}: the database rolled the transaction back after an "
                    "error inside it; nothing was committed"
                )
            self._commit(connection)

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RepositoryError(f"{self._path}: the repository is closed")
        return self._connection

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn sqlite3's errors into ours, noting when SQLite aborted our transaction."""
        try:
            yield
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise self._translation(exc) from exc

    def _translation(self, exc: sqlite3.Error | UnicodeEncodeError) -> RepositoryError:
        """Our error for ``exc``, raised inside a statement (see :meth:`_translated`)."""
        if isinstance(exc, UnicodeEncodeError):
            return RepositoryError(
                f"{self._path}: text that is not valid Unicode cannot be stored ({exc.reason})"
            )
        connection = self._connection
        # Some errors (a full disk, an I/O error) make SQLite roll back the
        # whole transaction; later writes must not run in autocommit mode.
        if self._in_transaction and connection is not None and not connection.in_transaction:
            self._aborted = True
        return translate_error(exc, self._path)

    def _reading(self, *, snapshot: bool = False) -> _Held:
        """Hold the lock for a read; ``snapshot`` makes several statements see one state."""
        return _Held(self, self._reading_alone if snapshot else None)

    @contextmanager
    def _reading_alone(self) -> Iterator[sqlite3.Connection]:
        """A snapshot read outside a transaction: its own read transaction."""
        connection = self._open()
        with self._translated():
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                # A read transaction has nothing to keep; ending it frees the snapshot.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")

    def _writing(self) -> _Held:
        """Hold the lock for a write; outside a transaction, run it in one of its own."""
        return _Held(self, self._writing_alone)

    @contextmanager
    def _writing_alone(self) -> Iterator[sqlite3.Connection]:
        """A write outside a transaction: in one of its own."""
        connection = self._open()
        with self._translated():
            connection.execute("BEGIN IMMEDIATE")
        try:
            with self._translated():
                yield connection
        except BaseException:
            self._rollback_quietly(connection)
            raise
        self._commit(connection)

    def _check_not_aborted(self) -> None:
        if self._in_transaction and self._aborted:
            raise RepositoryError(
                f"{self._path}: the transaction was rolled back by the database after an "
                "error; end it and start again"
            )

    def _commit(self, connection: sqlite3.Connection) -> None:
        try:
            with self._translated():
                connection.execute("COMMIT")
        except BaseException:
            self._rollback_quietly(connection)
            raise

    def _rollback_quietly(self, connection: sqlite3.Connection) -> None:
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        except sqlite3.ProgrammingError:
            # Closed already (close() inside the transaction): SQLite discarded the
            # uncommitted changes when the connection closed.
            return
        except sqlite3.Error:
            # The original error is the one worth reporting; SQLite discards the
            # uncommitted changes in any case when the connection closes.
            log.warning("%s: rollback failed", self._path, exc_info=True)

    def _now(self) -> dt.datetime:
        """The clock's time, in UTC."""
        return to_utc(self._clock())

    def _insert(self, connection: Connection, sql: str, parameters: Any) -> int | None:
        """Run ``sql``, an ``INSERT … RETURNING id``, without its RETURNING clause: the
        cursor's ``lastrowid`` is the new id (every such table's ``id`` is its rowid).

        RETURNING makes SQLite gather the returned rows in a table of their own before
        the first is read: about 27,000 instructions a row, a quarter of a ticket's
        INSERT (callgrind, 1,000 inserts each way). A conflict clause that inserted
        nothing changed no row: ``None``.
        """
        if not sql.endswith(_RETURNING_ID):
            return super()._insert(connection, sql, parameters)
        # The connection is SQLite's own (or a wrapper that hands its cursors on).
        cursor = cast(sqlite3.Cursor, connection.execute(sql[: -len(_RETURNING_ID)], parameters))
        return cursor.lastrowid if cursor.rowcount > 0 else None

    def _insert_with_payload(
        self,
        connection: Connection,
        sql: str,
        table: str,
        values: tuple[object, ...],
        payload: bytes,
    ) -> int:
        """INSERT a row whose last column is ``payload``; return the value it RETURNs.

        A large payload is inserted as a ``zeroblob`` of its size (the payload column is
        the table's last, so SQLite does not materialize the zeros) and then written into
        the row in place, inside the same transaction.
        """
        if len(payload) <= _STREAMED_PAYLOAD_BYTES:
            return self._inserted_id(connection, sql, (*values, payload))
        # Every such statement ends with the payload's "?) RETURNING column".
        head, _, tail = sql.rpartition("?)")
        sqlite = self._open()  # the connection behind ``connection``, for its rowid and blobs
        cursor = sqlite.execute(f"{head}zeroblob(?)){tail}", (*values, len(payload)))
        # fetchall, not fetchone: a RETURNING statement finishes only when read to the end.
        returned = int(cursor.fetchall()[0][0])
        row_id = cursor.lastrowid
        if row_id is None:  # pragma: no cover - an INSERT always sets it
            raise RepositoryError("the database did not report the new row's id")
        view = memoryview(payload)
        with sqlite.blobopen(table, "payload", row_id) as blob:
            for start in range(0, len(view), _STREAMED_PAYLOAD_BYTES):
                blob.write(view[start : start + _STREAMED_PAYLOAD_BYTES])
        return returned


class _Held:
    """The lock held for one read or write (:meth:`SQLiteBase._reading`, ``_writing``).

    A class rather than a generator: processing enters one several times per email,
    and inside a transaction (where every email's statements run) it only takes the
    lock, checks the transaction is usable and translates errors. Outside one, it runs
    ``alone`` (a snapshot read's or a write's own transaction) under the lock, or
    nothing more for a plain read. Whether a transaction is open is read under the
    lock: another thread's transaction holds it until it ends.
    """

    __slots__ = ("_alone", "_base", "_inner")

    def __init__(
        self,
        base: SQLiteBase,
        alone: Callable[[], AbstractContextManager[sqlite3.Connection]] | None,
    ) -> None:
        self._base = base
        self._alone = alone
        self._inner: AbstractContextManager[sqlite3.Connection] | None = None

    def __enter__(self) -> sqlite3.Connection:
        base = self._base
        base._lock.acquire()
        try:
            connection = base._open()
            base._check_not_aborted()
            if base._in_transaction or self._alone is None:
                return connection
            self._inner = inner = self._alone()
            return inner.__enter__()
        except BaseException:
            base._lock.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        base = self._base
        try:
            if self._inner is not None:
                self._inner.__exit__(exc_type, exc, tb)
            elif isinstance(exc, (sqlite3.Error, UnicodeEncodeError)):
                raise base._translation(exc) from exc
        finally:
            base._lock.release()
