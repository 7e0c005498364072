"""The SQLite ticket repository: the embedded default, one file, safe against crashes.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import attrs

from halomail.errors import DuplicateKeyError, RepositoryError, TransientRepositoryError
from halomail.tickets._common import (
    address_key,
    check_page,
    domain_key,
    domain_of,
    file_owner,
    fold,
    to_utc,
)
from halomail.tickets._schema import MIGRATIONS, migrate, refuse_newer, schema_version
from halomail.tickets.models import (
    Action,
    ActionKind,
    Asset,
    Customer,
    DedupeRecord,
    FileOwner,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxMail,
    OutboxStatus,
    QuarantineEntry,
    RecordKind,
    ServiceStatus,
    ServiceStatusEntry,
    StoredAttachment,
    StoredFile,
    Ticket,
    TicketStatus,
    User,
    utcnow,
)

if TYPE_CHECKING:
    from halomail.tickets.repository import TicketRepository

__all__ = ["SQLiteTicketRepository"]

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT: Final = 5.0
"""Seconds a write waits for another connection's lock before failing as transient."""

# -- SQL -----------------------------------------------------------------------
# Every value is a bound parameter; the statements are constants, so the sqlite3
# module's statement cache prepares each one once per connection.

# Column lists in the order the row readers below expect. Only these constants are
# formatted into statements (hence the S608 waivers), never a value.
_TICKET_COLUMNS = (
    "id, summary, details, ticket_type, user_email, status, created_at, updated_at, user_name, "
    "mailbox, record, customer, cc, priority, category, team, agent, asset_id, custom_fields, "
    "closed_at, alert_key"
)
_QUARANTINE_COLUMNS = "id, mailbox, reason, raw, created_at, detail, message_id, dedupe_key"
_OUTBOX_COLUMNS = (
    "id, message_id, recipients, subject, text, status, created_at, mailbox, kind, ticket_id, "
    "html, in_reply_to, thread_references, auto_submitted, attempts, next_attempt_at, "
    "last_error, sent_at"
)
_SQL_GET_TICKET = f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?"  # noqa: S608
# One Message-ID: an action's first, else the outbox's; both through an index.
_SQL_TICKET_BY_MESSAGE_ID = (
    f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = COALESCE("  # noqa: S608
    "(SELECT ticket_id FROM actions WHERE message_id = ?1 ORDER BY id LIMIT 1), "
    "(SELECT ticket_id FROM outbox WHERE message_id = ?1))"
)
_SQL_INSERT_TICKET = (
    "INSERT INTO tickets (summary, details, ticket_type, user_email, status, created_at, "
    "updated_at, user_name, mailbox, record, customer, cc, priority, category, team, agent, "
    "asset_id, custom_fields, alert_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The literal 'closed' (not a parameter) lets SQLite use the partial index of open
# tickets with a key.
_SQL_OPEN_TICKET_BY_ALERT_KEY = (
    f"SELECT {_TICKET_COLUMNS} FROM tickets "  # noqa: S608
    "WHERE alert_key = ? AND status <> 'closed' ORDER BY id DESC LIMIT 1"
)
_SQL_ASSIGN = "UPDATE tickets SET agent = ?, team = ?, updated_at = ? WHERE id = ?"
_SQL_TOUCH_TICKET = "UPDATE tickets SET updated_at = ? WHERE id = ?"
_SQL_SET_STATUS = (
    "UPDATE tickets SET status = ?1, updated_at = ?2, "
    "closed_at = CASE WHEN ?1 = 'closed' THEN COALESCE(closed_at, ?2) ELSE NULL END "
    "WHERE id = ?3"
)
_SQL_LIST_TICKETS = (
    f"SELECT {_TICKET_COLUMNS} FROM tickets "  # noqa: S608
    "ORDER BY id DESC LIMIT ? OFFSET ?"
)

_SQL_INSERT_ACTION = (
    "INSERT INTO actions (ticket_id, kind, body, from_address, public, message_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_ATTACHMENT = (
    "INSERT INTO attachments (action_id, position, filename, storage_name, content_type, size, "
    "content_id, inline, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LIST_ACTIONS = (
    "SELECT id, ticket_id, kind, body, created_at, from_address, public, message_id "
    "FROM actions WHERE ticket_id = ? ORDER BY id"
)
_SQL_LIST_ATTACHMENTS = (
    "SELECT t.action_id, t.filename, t.storage_name, t.content_type, t.size, t.content_id, "
    "t.inline, t.payload FROM actions a JOIN attachments t ON t.action_id = a.id "
    # Ordered by a.id (the index's order), not t.action_id: the same order, but
    # this way SQLite streams the rows instead of copying every BLOB into a sort.
    "WHERE a.ticket_id = ? ORDER BY a.id, t.position"
)

_SQL_CUSTOMER_EXISTS = "SELECT 1 FROM customers WHERE id = ?"
_SQL_INSERT_CUSTOMER = (
    "INSERT INTO customers (name, domains, from_address, reply_address) VALUES (?, ?, ?, ?)"
)
_SQL_INSERT_CUSTOMER_DOMAIN = "INSERT INTO customer_domains (domain, customer_id) VALUES (?, ?)"
_SQL_INSERT_USER = (
    "INSERT INTO users (email, name, customer_id, phone, mobile) VALUES (?, ?, ?, ?, ?)"
)
_SQL_FIND_USER = "SELECT id, email, name, customer_id, phone, mobile FROM users WHERE email = ?"
# The customer of the user with this address, else the first customer owning its
# domain: one statement, each lookup through its index.
_SQL_FIND_CUSTOMER = (
    "SELECT id, name, domains, from_address, reply_address FROM customers WHERE id = COALESCE("
    "(SELECT customer_id FROM users WHERE email = ?), "
    "(SELECT customer_id FROM customer_domains WHERE domain = ? ORDER BY customer_id LIMIT 1))"
)
_SQL_INSERT_ASSET = "INSERT INTO assets (tag, tag_key, fields, customer_id) VALUES (?, ?, ?, ?)"
_SQL_INSERT_ASSET_FIELD = (
    "INSERT OR IGNORE INTO asset_fields (name, value_key, asset_id) VALUES (?, ?, ?)"
)
_SQL_ASSET_BY_TAG = (
    "SELECT id, tag, fields, customer_id FROM assets WHERE tag_key = ? ORDER BY id LIMIT 1"
)
_SQL_ASSET_EXISTS = "SELECT 1 FROM assets WHERE id = ?"
_SQL_UPDATE_ASSET = "UPDATE assets SET fields = ?, customer_id = ? WHERE id = ?"
_SQL_DELETE_ASSET_FIELD = (
    "DELETE FROM asset_fields WHERE name = ? AND value_key = ? AND asset_id = ?"
)
_SQL_ASSET_BY_FIELD = (
    "SELECT a.id, a.tag, a.fields, a.customer_id FROM asset_fields f "
    "JOIN assets a ON a.id = f.asset_id WHERE f.name = ? AND f.value_key = ? "
    "ORDER BY f.asset_id LIMIT 1"
)

_FILE_COLUMNS = (
    "id, owner, owner_id, filename, storage_name, content_type, size, content_id, inline, "
    "note, created_at, payload"
)
_SQL_INSERT_FILE = (
    "INSERT INTO stored_files (owner, owner_id, filename, storage_name, content_type, size, "
    "content_id, inline, note, created_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LIST_FILES = (
    f"SELECT {_FILE_COLUMNS} FROM stored_files "  # noqa: S608
    "WHERE owner = ? AND owner_id = ? ORDER BY id"
)

_SERVICE_STATUS_COLUMNS = "id, service, status, at, detail, ticket_id, message_id"
_SQL_INSERT_SERVICE_STATUS = (
    "INSERT INTO service_status (service, status, at, detail, ticket_id, message_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_SERVICE_HISTORY = (
    f"SELECT {_SERVICE_STATUS_COLUMNS} FROM service_status "  # noqa: S608
    "WHERE service = ? ORDER BY at DESC, id DESC LIMIT ?"
)

_SQL_GET_DEDUPE = "SELECT key, sha256, outcome, ticket_id, created_at FROM dedupe WHERE key = ?"
_SQL_INSERT_DEDUPE = (
    "INSERT INTO dedupe (key, sha256, outcome, ticket_id, created_at) VALUES (?, ?, ?, ?, ?)"
)

_SQL_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (mailbox, reason, raw, created_at, detail, message_id, dedupe_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_LIST_QUARANTINE = (
    f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine ORDER BY id DESC LIMIT ? OFFSET ?"  # noqa: S608
)

_SQL_INSERT_OUTBOX = (
    "INSERT INTO outbox (message_id, recipients, subject, text, status, created_at, mailbox, "
    "kind, ticket_id, html, in_reply_to, thread_references, auto_submitted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_RECIPIENT = (
    "INSERT INTO outbox_recipients (address, created_at, outbox_id, ticket_id) VALUES (?, ?, ?, ?)"
)
# The literal 'pending' (not a parameter) lets SQLite use the partial index.
_SQL_DUE_OUTBOX = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' "  # noqa: S608
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id LIMIT ?"
)
# Claims the due mail nobody else holds, in one statement run under the write lock
# (BEGIN IMMEDIATE), so two claimers, in two processes too, never share an email. The
# subquery walks the partial index of pending mail in id order; RETURNING has no
# defined order, so the caller sorts.
_SQL_CLAIM_OUTBOX = (
    "UPDATE outbox SET claimed_by = ?1, claimed_until = ?2 WHERE id IN ("  # noqa: S608
    "SELECT id FROM outbox WHERE status = 'pending' "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?3) "
    "AND (claimed_by IS NULL OR claimed_by = ?1 OR claimed_until <= ?3) "
    f"ORDER BY id LIMIT ?4) RETURNING {_OUTBOX_COLUMNS}"
)
_SQL_GET_OUTBOX = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?"  # noqa: S608
_SQL_MARK_OUTBOX = (
    "UPDATE outbox SET status = ?1, attempts = attempts + 1, last_error = ?2, "
    "next_attempt_at = ?3, sent_at = CASE WHEN ?1 = 'sent' THEN ?4 ELSE sent_at END, "
    "claimed_by = NULL, claimed_until = NULL "
    "WHERE id = ?5"
)
_SQL_COUNT_OUTGOING = "SELECT COUNT(*) FROM outbox_recipients WHERE address = ? AND created_at >= ?"
_SQL_COUNT_OUTGOING_FOR_TICKET = (
    "SELECT COUNT(*) FROM outbox_recipients WHERE address = ? AND created_at >= ? AND ticket_id = ?"
)

_SQL_GET_STATE = "SELECT value FROM state WHERE key = ?"
_SQL_SET_STATE = (
    "INSERT INTO state (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# Takes a lease that is free, expired, or already ours; RETURNING yields a row only
# when the INSERT or the conditional UPDATE happened.
_SQL_ACQUIRE_LEASE = (
    "INSERT INTO leases (name, owner, held_until) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, held_until = excluded.held_until "
    "WHERE leases.owner = excluded.owner OR leases.held_until <= ?4 RETURNING owner"
)
_SQL_RELEASE_LEASE = "DELETE FROM leases WHERE name = ? AND owner = ?"

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


# -- values --------------------------------------------------------------------


def _time(value: dt.datetime) -> str:
    # Fixed width (microseconds, "+00:00") so that text order is time order.
    return to_utc(value).isoformat(timespec="microseconds")


def _opt_time(value: dt.datetime | None) -> str | None:
    return None if value is None else _time(value)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _parse_opt_time(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def _json_map(values: Mapping[str, str]) -> str:
    return json.dumps(dict(values))


def _tuple(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _mapping(text: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(text)
    return loaded


def _row_id(cursor: sqlite3.Cursor) -> int:
    if cursor.lastrowid is None:  # pragma: no cover - an INSERT always sets it
        raise RepositoryError("the database did not report the new row's id")
    return cursor.lastrowid


# A payload larger than this is streamed in through incremental BLOB I/O, a chunk at a
# time: bound as a parameter, SQLite would copy it twice (the bound value, then the row
# record), tripling a 40 MB attachment's memory.
_STREAMED_PAYLOAD_BYTES = 1 << 20


def _insert_with_payload(
    connection: sqlite3.Connection,
    sql: str,
    table: str,
    values: tuple[object, ...],
    payload: bytes,
) -> int:
    """INSERT a row whose last column is ``payload``; return its rowid.

    A large payload is inserted as a ``zeroblob`` of its size (the payload column is the
    table's last, so SQLite does not materialize the zeros) and then written into the
    row in place, inside the same transaction.
    """
    if len(payload) <= _STREAMED_PAYLOAD_BYTES:
        return _row_id(connection.execute(sql, (*values, payload)))
    # Every insert statement ends with the payload's "?)": it becomes "zeroblob(?))".
    row_id = _row_id(connection.execute(sql[:-2] + "zeroblob(?))", (*values, len(payload))))
    view = memoryview(payload)
    with connection.blobopen(table, "payload", row_id) as blob:
        for start in range(0, len(view), _STREAMED_PAYLOAD_BYTES):
            blob.write(view[start : start + _STREAMED_PAYLOAD_BYTES])
    return row_id


def _ticket(row: Sequence[Any]) -> Ticket:
    return Ticket(
        id=row[0],
        summary=row[1],
        details=row[2],
        ticket_type=row[3],
        user_email=row[4],
        status=TicketStatus(row[5]),
        created_at=_parse_time(row[6]),
        updated_at=_parse_time(row[7]),
        user_name=row[8],
        mailbox=row[9],
        record=RecordKind(row[10]),
        customer=row[11],
        cc=_tuple(row[12]),
        priority=row[13],
        category=row[14],
        team=row[15],
        agent=row[16],
        asset_id=row[17],
        custom_fields=_mapping(row[18]),
        closed_at=_parse_opt_time(row[19]),
        alert_key=row[20],
    )


def _customer(row: Sequence[Any]) -> Customer:
    return Customer(
        id=row[0], name=row[1], domains=_tuple(row[2]), from_address=row[3], reply_address=row[4]
    )


def _asset(row: Sequence[Any]) -> Asset:
    return Asset(id=row[0], tag=row[1], fields=_mapping(row[2]), customer_id=row[3])


def _stored_file(row: Sequence[Any]) -> StoredFile:
    return StoredFile(
        id=row[0],
        owner=row[1],
        owner_id=row[2],
        filename=row[3],
        storage_name=row[4],
        content_type=row[5],
        size=row[6],
        content_id=row[7],
        inline=bool(row[8]),
        payload=row[11],
        note=row[9],
        created_at=_parse_time(row[10]),
    )


def _service_status_entry(row: Sequence[Any]) -> ServiceStatusEntry:
    return ServiceStatusEntry(
        id=row[0],
        service=row[1],
        status=ServiceStatus(row[2]),
        at=_parse_time(row[3]),
        detail=row[4],
        ticket_id=row[5],
        message_id=row[6],
    )


def _quarantine_entry(row: Sequence[Any]) -> QuarantineEntry:
    return QuarantineEntry(
        id=row[0],
        mailbox=row[1],
        reason=row[2],
        raw=row[3],
        created_at=_parse_time(row[4]),
        detail=row[5],
        message_id=row[6],
        dedupe_key=row[7],
    )


def _outbox_mail(row: Sequence[Any]) -> OutboxMail:
    return OutboxMail(
        id=row[0],
        message_id=row[1],
        to=_tuple(row[2]),
        subject=row[3],
        text=row[4],
        status=OutboxStatus(row[5]),
        created_at=_parse_time(row[6]),
        mailbox=row[7],
        kind=row[8],
        ticket_id=row[9],
        html=row[10],
        in_reply_to=row[11],
        references=_tuple(row[12]),
        auto_submitted=bool(row[13]),
        attempts=row[14],
        next_attempt_at=_parse_opt_time(row[15]),
        last_error=row[16],
        sent_at=_parse_opt_time(row[17]),
    )


class SQLiteTicketRepository:
    """A :class:`~halomail.TicketRepository` in one SQLite file: the embedded default.

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

    thread_safe: bool = True
    """Concurrent calls from several threads are safe: one lock guards the connection,
    and a transaction holds it until it ends."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
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
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal" and not memory:
                    log.warning("%s: WAL mode unavailable, journal mode is %s", self._path, mode)
                connection.execute("PRAGMA synchronous = NORMAL")
                migrate(connection)
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
            try:
                yield
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
        except sqlite3.Error as exc:
            connection = self._connection
            # Some errors (a full disk, an I/O error) make SQLite roll back the
            # whole transaction; later writes must not run in autocommit mode.
            if self._in_transaction and connection is not None and not connection.in_transaction:
                self._aborted = True
            raise translate_error(exc, self._path) from exc
        except UnicodeEncodeError as exc:
            raise RepositoryError(
                f"{self._path}: text that is not valid Unicode cannot be stored ({exc.reason})"
            ) from exc

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the lock for a read; ``snapshot`` makes several statements see one state."""
        with self._lock:
            connection = self._open()
            self._check_not_aborted()
            with self._translated():
                if not snapshot or self._in_transaction:
                    yield connection
                    return
                connection.execute("BEGIN")
                try:
                    yield connection
                finally:
                    # A read transaction has nothing to keep; ending it frees the snapshot.
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock for a write; outside a transaction, run it in one of its own."""
        with self._lock:
            connection = self._open()
            if self._in_transaction:
                self._check_not_aborted()
                with self._translated():
                    yield connection
                return
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
        return to_utc(self._clock())

    # -- tickets ---------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return None if row is None else _ticket(row)

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket that one of these Message-IDs belongs to (through an action or
        an outgoing email), or ``None``; the first id that matches wins."""
        with self._reading(snapshot=True) as connection:
            # One indexed query per id keeps "first id wins" exact; References
            # headers are short, and a repeated id is asked once.
            for message_id in dict.fromkeys(message_ids):
                row = connection.execute(_SQL_TICKET_BY_MESSAGE_ID, (message_id,)).fetchone()
                if row is not None:
                    return _ticket(row)
        return None

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket with status ``new`` and return it with its id."""
        now = self._now()
        stamp = _time(now)
        custom_fields = dict(new.custom_fields)
        with self._writing() as connection:
            cursor = connection.execute(
                _SQL_INSERT_TICKET,
                (
                    new.summary,
                    new.details,
                    new.ticket_type,
                    new.user_email,
                    TicketStatus.NEW.value,
                    stamp,
                    stamp,
                    new.user_name,
                    new.mailbox,
                    new.record.value,
                    new.customer,
                    _json_list(new.cc),
                    new.priority,
                    new.category,
                    new.team,
                    new.agent,
                    new.asset_id,
                    _json_map(custom_fields),
                    new.alert_key,
                ),
            )
            ticket_id = _row_id(cursor)
        return Ticket(
            id=ticket_id,
            summary=new.summary,
            details=new.details,
            ticket_type=new.ticket_type,
            user_email=new.user_email,
            status=TicketStatus.NEW,
            created_at=now,
            updated_at=now,
            user_name=new.user_name,
            mailbox=new.mailbox,
            record=new.record,
            customer=new.customer,
            cc=tuple(new.cc),
            priority=new.priority,
            category=new.category,
            team=new.team,
            agent=new.agent,
            asset_id=new.asset_id,
            custom_fields=custom_fields,
            alert_key=new.alert_key,
        )

    def add_action(self, new: NewAction) -> Action:
        """Add an action to a ticket, and touch the ticket's ``updated_at``.

        Attachments are written as BLOBs in the same transaction.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        now = self._now()
        stamp = _time(now)
        with self._writing() as connection:
            # The UPDATE both touches the ticket and proves it exists.
            if connection.execute(_SQL_TOUCH_TICKET, (stamp, new.ticket_id)).rowcount == 0:
                raise RepositoryError(f"ticket {new.ticket_id} does not exist")
            cursor = connection.execute(
                _SQL_INSERT_ACTION,
                (
                    new.ticket_id,
                    new.kind.value,
                    new.body,
                    new.from_address,
                    int(new.public),
                    new.message_id,
                    stamp,
                ),
            )
            action_id = _row_id(cursor)
            for position, item in enumerate(new.attachments):
                _insert_with_payload(
                    connection,
                    _SQL_INSERT_ATTACHMENT,
                    "attachments",
                    (
                        action_id,
                        position,
                        item.filename,
                        item.storage_name,
                        item.content_type,
                        item.size,
                        item.content_id,
                        int(item.inline),
                    ),
                    item.payload,
                )
        return Action(
            id=action_id,
            ticket_id=new.ticket_id,
            kind=new.kind,
            body=new.body,
            created_at=now,
            from_address=new.from_address,
            public=new.public,
            message_id=new.message_id,
            attachments=tuple(new.attachments),
        )

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        """Change a ticket's status (``closed`` sets ``closed_at``; reopening clears it).

        Closing a ticket that is already closed keeps its first ``closed_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        stamp = _time(self._now())
        with self._writing() as connection:
            changed = connection.execute(_SQL_SET_STATUS, (status.value, stamp, ticket_id))
            if changed.rowcount == 0:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return _ticket(row)

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""
        check_page(limit, offset)
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_TICKETS, (limit, offset)).fetchall()
        return [_ticket(row) for row in rows]

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first (empty for an unknown ticket)."""
        with self._reading(snapshot=True) as connection:
            rows = connection.execute(_SQL_LIST_ACTIONS, (ticket_id,)).fetchall()
            files: dict[int, list[StoredAttachment]] = {}
            if rows:
                for row in connection.execute(_SQL_LIST_ATTACHMENTS, (ticket_id,)):
                    files.setdefault(row[0], []).append(
                        StoredAttachment(
                            filename=row[1],
                            storage_name=row[2],
                            content_type=row[3],
                            size=row[4],
                            content_id=row[5],
                            inline=bool(row[6]),
                            payload=row[7],
                        )
                    )
        return [
            Action(
                id=row[0],
                ticket_id=row[1],
                kind=ActionKind(row[2]),
                body=row[3],
                created_at=_parse_time(row[4]),
                from_address=row[5],
                public=bool(row[6]),
                message_id=row[7],
                attachments=tuple(files.get(row[0], ())),
            )
            for row in rows
        ]

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_OPEN_TICKET_BY_ALERT_KEY, (alert_key,)).fetchone()
        return None if row is None else _ticket(row)

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket: both values are written (``None`` clears one).

        Touches ``updated_at``; the status is left as it is.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        stamp = _time(self._now())
        with self._writing() as connection:
            if connection.execute(_SQL_ASSIGN, (agent, team, stamp, ticket_id)).rowcount == 0:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return _ticket(row)

    # -- people and things -----------------------------------------------------

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer.

        Args:
            name: The customer's name.
            domains: Email domains that belong to the customer (stored lower-cased).
                When two customers claim a domain, the first one added owns it.
            from_address: Overrides the outgoing From address for this customer.
            reply_address: Overrides the Reply-To address for this customer.

        Returns:
            The customer with its id.
        """
        keys = tuple(dict.fromkeys(key for key in map(domain_key, domains) if key))
        with self._writing() as connection:
            cursor = connection.execute(
                _SQL_INSERT_CUSTOMER, (name, _json_list(keys), from_address, reply_address)
            )
            customer_id = _row_id(cursor)
            connection.executemany(_SQL_INSERT_CUSTOMER_DOMAIN, ((k, customer_id) for k in keys))
        return Customer(customer_id, name, keys, from_address, reply_address)

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user.

        Args:
            email: The user's address (stored lower-cased; unique).
            name: The user's name.
            customer_id: The customer the user belongs to.
            phone: Phone number.
            mobile: Mobile number.

        Returns:
            The user with its id.

        Raises:
            RepositoryError: When a user with this address exists, or the customer does not.
        """
        key = address_key(email)
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            try:
                cursor = connection.execute(
                    _SQL_INSERT_USER, (key, name, customer_id, phone, mobile)
                )
            except sqlite3.IntegrityError as exc:
                raise RepositoryError(f"a user with the address {key!r} already exists") from exc
            user_id = _row_id(cursor)
        return User(user_id, key, name, customer_id, phone, mobile)

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset.

        Args:
            tag: The asset tag.
            fields: Other field values by name (serial number, host name, …).
            customer_id: The owning customer.

        Returns:
            The asset with its id.

        Raises:
            RepositoryError: When the customer does not exist.
        """
        values = dict(fields or {})
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            return self._insert_asset(connection, tag, values, customer_id)

    @staticmethod
    def _insert_asset(
        connection: sqlite3.Connection, tag: str, values: dict[str, str], customer_id: int | None
    ) -> Asset:
        cursor = connection.execute(
            _SQL_INSERT_ASSET, (tag, fold(tag), _json_map(values), customer_id)
        )
        asset_id = _row_id(cursor)
        connection.executemany(
            _SQL_INSERT_ASSET_FIELD,
            ((name, fold(value), asset_id) for name, value in values.items()),
        )
        return Asset(asset_id, tag, values, customer_id)

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        """Create the asset with this tag, or update the one that has it.

        The existing asset is the first one added with this tag (compared
        case-insensitively); it keeps its id and its tag's spelling, and ``fields``
        are merged over its own. ``customer_id`` ``None`` keeps its owner.

        Returns:
            The asset as stored now, and True when it was created.

        Raises:
            RepositoryError: When ``customer_id`` names no customer.
        """
        values = dict(fields)
        with self._writing() as connection:
            self._require_customer(connection, customer_id)
            row = connection.execute(_SQL_ASSET_BY_TAG, (fold(tag),)).fetchone()
            if row is None:
                return self._insert_asset(connection, tag, values, customer_id), True
            old = _asset(row)
            merged = {**old.fields, **values}
            owner = old.customer_id if customer_id is None else customer_id
            connection.execute(_SQL_UPDATE_ASSET, (_json_map(merged), owner, old.id))
            for name, value in values.items():
                before = old.fields.get(name)
                if before is not None and fold(before) == fold(value):
                    continue
                if before is not None:
                    connection.execute(_SQL_DELETE_ASSET_FIELD, (name, fold(before), old.id))
                connection.execute(_SQL_INSERT_ASSET_FIELD, (name, fold(value), old.id))
        return Asset(old.id, old.tag, merged, owner), False

    @staticmethod
    def _require_customer(connection: sqlite3.Connection, customer_id: int | None) -> None:
        if customer_id is None:
            return
        if connection.execute(_SQL_CUSTOMER_EXISTS, (customer_id,)).fetchone() is None:
            raise RepositoryError(f"customer {customer_id} does not exist")

    @staticmethod
    def _require_owner(connection: sqlite3.Connection, owner: str, owner_id: int) -> None:
        if owner == "customer":
            SQLiteTicketRepository._require_customer(connection, owner_id)
        elif connection.execute(_SQL_ASSET_EXISTS, (owner_id,)).fetchone() is None:
            raise RepositoryError(f"asset {owner_id} does not exist")

    def find_user(self, email: str) -> User | None:
        """The user with this address (compared case-insensitively), or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_FIND_USER, (address_key(email),)).fetchone()
        return None if row is None else User(*row)

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the customer owning its domain."""
        with self._reading() as connection:
            row = connection.execute(
                _SQL_FIND_CUSTOMER, (address_key(email), domain_of(email))
            ).fetchone()
        return None if row is None else _customer(row)

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The asset whose ``field`` (``"tag"`` or a field name) equals ``value``
        (case-insensitively), or ``None``; the first one added wins."""
        with self._reading() as connection:
            if field == "tag":
                row = connection.execute(_SQL_ASSET_BY_TAG, (fold(value),)).fetchone()
            else:
                row = connection.execute(_SQL_ASSET_BY_FIELD, (field, fold(value))).fetchone()
        return None if row is None else _asset(row)

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket.

        Each file is a row of its own with its bytes as a BLOB, written in one
        transaction.

        Returns:
            The files as stored, one per attachment, in order.

        Raises:
            RepositoryError: When the customer or asset does not exist.
            ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.
        """
        kind = file_owner(owner)
        now = self._now()
        stamp = _time(now)
        stored: list[StoredFile] = []
        with self._writing() as connection:
            self._require_owner(connection, kind, owner_id)
            for item in attachments:
                file_id = _insert_with_payload(
                    connection,
                    _SQL_INSERT_FILE,
                    "stored_files",
                    (
                        kind,
                        owner_id,
                        item.filename,
                        item.storage_name,
                        item.content_type,
                        item.size,
                        item.content_id,
                        int(item.inline),
                        note,
                        stamp,
                    ),
                    item.payload,
                )
                stored.append(
                    StoredFile(
                        id=file_id,
                        owner=kind,
                        owner_id=owner_id,
                        note=note,
                        created_at=now,
                        **attrs.asdict(item, recurse=False),
                    )
                )
        return tuple(stored)

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        """The files kept against a customer or an asset, oldest first (empty for none)."""
        kind = file_owner(owner)
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_FILES, (kind, owner_id)).fetchall()
        return [_stored_file(row) for row in rows]

    # -- exactly once ----------------------------------------------------------

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record for a dedupe key, or ``None`` if the email was never handled."""
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_DEDUPE, (key,)).fetchone()
        if row is None:
            return None
        return DedupeRecord(row[0], row[1], row[2], row[3], _parse_time(row[4]))

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record that an email was handled.

        Raises:
            DuplicateKeyError: When the key is already recorded.
        """
        values = (
            record.key,
            record.sha256,
            record.outcome,
            record.ticket_id,
            _time(record.created_at),
        )
        with self._writing() as connection:
            try:
                connection.execute(_SQL_INSERT_DEDUPE, values)
            except sqlite3.IntegrityError as exc:
                # A constraint failure undoes the statement only: the transaction stays
                # usable, and the caller decides to roll it back.
                raise DuplicateKeyError(
                    f"dedupe key already recorded: {record.key[:200]!r}"
                ) from exc

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, with its reason and bytes."""
        now = self._now()
        with self._writing() as connection:
            cursor = connection.execute(
                _SQL_INSERT_QUARANTINE,
                (
                    new.mailbox,
                    new.reason,
                    new.raw,
                    _time(now),
                    new.detail,
                    new.message_id,
                    new.dedupe_key,
                ),
            )
            entry_id = _row_id(cursor)
        return QuarantineEntry(
            id=entry_id,
            mailbox=new.mailbox,
            reason=new.reason,
            raw=new.raw,
            created_at=now,
            detail=new.detail,
            message_id=new.message_id,
            dedupe_key=new.dedupe_key,
        )

    def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> Sequence[QuarantineEntry]:
        """Quarantined emails, newest first."""
        check_page(limit, offset)
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_QUARANTINE, (limit, offset)).fetchall()
        return [_quarantine_entry(row) for row in rows]

    # -- the outbox ------------------------------------------------------------

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email to send after the transaction commits (status ``pending``).

        Raises:
            RepositoryError: When an email with this Message-ID is already queued.
        """
        now = self._now()
        stamp = _time(now)
        with self._writing() as connection:
            try:
                cursor = connection.execute(
                    _SQL_INSERT_OUTBOX,
                    (
                        new.message_id,
                        _json_list(new.to),
                        new.subject,
                        new.text,
                        OutboxStatus.PENDING.value,
                        stamp,
                        new.mailbox,
                        new.kind,
                        new.ticket_id,
                        new.html,
                        new.in_reply_to,
                        _json_list(new.references),
                        int(new.auto_submitted),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise RepositoryError(
                    f"outgoing Message-ID already queued: {new.message_id!r}"
                ) from exc
            outbox_id = _row_id(cursor)
            connection.executemany(
                _SQL_INSERT_RECIPIENT,
                (
                    (address, stamp, outbox_id, new.ticket_id)
                    for address in dict.fromkeys(map(address_key, new.to))
                ),
            )
        return OutboxMail(
            id=outbox_id,
            message_id=new.message_id,
            to=tuple(new.to),
            subject=new.subject,
            text=new.text,
            status=OutboxStatus.PENDING,
            created_at=now,
            mailbox=new.mailbox,
            kind=new.kind,
            ticket_id=new.ticket_id,
            html=new.html,
            in_reply_to=new.in_reply_to,
            references=tuple(new.references),
            auto_submitted=new.auto_submitted,
        )

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        """Pending emails whose next attempt is due (or never tried), oldest first."""
        check_page(limit, 0)
        with self._reading() as connection:
            rows = connection.execute(_SQL_DUE_OUTBOX, (_time(now), limit)).fetchall()
        return [_outbox_mail(row) for row in rows]

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        """Claim due pending emails for ``owner`` until ``now + lease``; return them, oldest first.

        One conditional UPDATE under the write lock: mail another owner claimed until
        after ``now`` is passed over, so two claimers never receive the same email.
        """
        check_page(limit, 0)
        start = to_utc(now)
        with self._writing() as connection:
            rows = connection.execute(
                _SQL_CLAIM_OUTBOX, (owner, _time(start + lease), _time(start), limit)
            ).fetchall()
        return sorted((_outbox_mail(row) for row in rows), key=lambda mail: mail.id)

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        """Record a delivery attempt: ``sent``, ``failed`` for good, or still ``pending``
        with the time of the next attempt. Each call counts one attempt.

        Raises:
            RepositoryError: When there is no outgoing email with this id.
        """
        values = (status.value, error, _opt_time(next_attempt_at), _time(self._now()), outbox_id)
        with self._writing() as connection:
            if connection.execute(_SQL_MARK_OUTBOX, values).rowcount == 0:
                raise RepositoryError(f"outgoing email {outbox_id} does not exist")
            row = connection.execute(_SQL_GET_OUTBOX, (outbox_id,)).fetchone()
        return _outbox_mail(row)

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """How many emails (any status) were queued to ``to`` (one of their recipients,
        compared case-insensitively) at or after ``since``, for one ticket when given."""
        address, start = address_key(to), _time(since)
        with self._reading() as connection:
            if ticket_id is None:
                row = connection.execute(_SQL_COUNT_OUTGOING, (address, start)).fetchone()
            else:
                row = connection.execute(
                    _SQL_COUNT_OUTGOING_FOR_TICKET, (address, start, ticket_id)
                ).fetchone()
        return int(row[0])

    # -- monitored services ------------------------------------------------------

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        """Add a status to a monitored service's history.

        Raises:
            ValueError: When ``new.at`` is naive.
        """
        at = to_utc(new.at)
        values = (
            new.service,
            new.status.value,
            _time(at),
            new.detail,
            new.ticket_id,
            new.message_id,
        )
        with self._writing() as connection:
            entry_id = _row_id(connection.execute(_SQL_INSERT_SERVICE_STATUS, values))
        return ServiceStatusEntry(
            id=entry_id,
            service=new.service,
            status=new.status,
            at=at,
            detail=new.detail,
            ticket_id=new.ticket_id,
            message_id=new.message_id,
        )

    def service_history(self, service: str, *, limit: int = 100) -> Sequence[ServiceStatusEntry]:
        """A service's statuses, newest first (by ``at``, then the order recorded)."""
        check_page(limit, 0)
        with self._reading() as connection:
            rows = connection.execute(_SQL_SERVICE_HISTORY, (service, limit)).fetchall()
        return [_service_status_entry(row) for row in rows]

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        """The newest status of a service, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_SERVICE_HISTORY, (service, 1)).fetchone()
        return None if row is None else _service_status_entry(row)

    # -- small persistent state --------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A value the processor keeps between runs, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_STATE, (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs; written inside or outside a transaction."""
        with self._writing() as connection:
            connection.execute(_SQL_SET_STATE, (key, value))

    # -- leases ------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take (or renew) the named lease for ``owner`` until ``now + ttl``.

        Returns:
            True when ``owner`` holds it now; False when another owner holds it until
            after ``now``.
        """
        start = to_utc(now)
        with self._writing() as connection:
            # fetchall, not fetchone: a RETURNING statement finishes only when read to the end.
            rows = connection.execute(
                _SQL_ACQUIRE_LEASE, (name, owner, _time(start + ttl), _time(start))
            ).fetchall()
        return bool(rows)

    def release_lease(self, name: str, owner: str) -> None:
        """Free the named lease if ``owner`` holds it; otherwise change nothing."""
        with self._writing() as connection:
            connection.execute(_SQL_RELEASE_LEASE, (name, owner))


if TYPE_CHECKING:
    # mypy proves the class satisfies the Protocol, signature by signature.
    _: type[TicketRepository] = SQLiteTicketRepository
