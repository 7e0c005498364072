"""The PostgreSQL repository's foundation: the connection, transactions, errors, and the
translation of the shared SQL's placeholders.

The role parts' statements are written once, with ``?`` and ``:name`` placeholders, for
SQLite; :func:`to_psycopg` rewrites each (once, cached) into psycopg's ``%s`` and
``%(name)s``. Only the claim and the retry of outgoing mail have PostgreSQL statements
of their own, here.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final, Self

try:
    import psycopg
    from psycopg.abc import Buffer
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import TransactionStatus
    from psycopg.types.string import StrDumperUnknown, TextLoader
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "halomail's PostgreSQL repository needs psycopg: pip install 'halomail[postgres]'"
    ) from exc

from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.tickets._common import to_utc
from halomail.tickets._pg_schema import migrate
from halomail.tickets._sql import OUTBOX_COLUMNS, Connection, SQLBase
from halomail.tickets.models import utcnow

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LOCK_TIMEOUT",
    "PostgresBase",
    "redacted",
    "to_psycopg",
    "translate_error",
]

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to wait for the server when connecting, before failing as transient."""

DEFAULT_LOCK_TIMEOUT: Final = 30.0
"""Seconds a statement waits for a lock another session holds, before failing as transient
(what SQLite's busy timeout is): a worker that hangs inside a transaction cannot stall
the others for longer."""

# -- statements ----------------------------------------------------------------

# Claims the due mail nobody else holds. FOR UPDATE SKIP LOCKED passes over the rows
# another claimer is claiming right now, and a row it locks is checked again against
# the conditions once locked, so two claimers never share an email and never wait for
# each other. RETURNING has no defined order, so the caller sorts.
_SQL_CLAIM_OUTBOX = (
    "UPDATE outbox SET claimed_by = :owner, claimed_until = :until WHERE id IN ("  # noqa: S608
    "SELECT id FROM outbox WHERE status = 'pending' "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= :now) "
    "AND (claimed_by IS NULL OR claimed_by = :owner OR claimed_until <= :now) "
    f"ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) RETURNING {OUTBOX_COLUMNS}"
)
# Failed and pending mail due again from scratch; sent mail is never touched. :ids is
# NULL (all of it) or a JSON array of ids; both uses cast it alike, so PostgreSQL
# deduces one type for the parameter.
_SQL_RETRY_OUTBOX = (
    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = :now, "  # noqa: S608
    "claimed_by = NULL, claimed_until = NULL WHERE status <> 'sent' AND "
    "(CAST(:ids AS JSON) IS NULL OR id IN (SELECT CAST(value AS BIGINT) "
    "FROM json_array_elements_text(CAST(:ids AS JSON)))) "
    f"RETURNING {OUTBOX_COLUMNS}"
)

# A quoted literal (kept, its % doubled), a ? or :name placeholder, or a lone %.
_TOKEN = re.compile(r"('(?:[^']|'')*')|(\?)|(?<![:\w]):([A-Za-z_]\w*)|(%)")


def _psycopg_token(match: re.Match[str]) -> str:
    literal, positional, name, _percent = match.groups()
    if literal is not None:
        return literal.replace("%", "%%")
    if positional is not None:
        return "%s"
    if name is not None:
        return f"%({name})s"
    return "%%"


@functools.cache
def to_psycopg(sql: str) -> str:
    """The statement with ``?`` as ``%s``, ``:name`` as ``%(name)s`` and ``%`` escaped.

    Cached: the role parts run a few dozen statements, each translated once.
    """
    return _TOKEN.sub(_psycopg_token, sql)


class _Translating:
    """A psycopg connection that takes the role parts' placeholders (a :class:`Connection`)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        # Always a parameter set (even empty), so psycopg reads the doubled %.
        return self._connection.execute(to_psycopg(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(to_psycopg(sql), parameters)


# -- text with NUL ---------------------------------------------------------------

# PostgreSQL's text cannot hold NUL, which an email's text may (SQLite's can). Text is
# stored with NUL as ESCAPE "0" and ESCAPE itself doubled, a private-use character
# real mail almost never holds: text without either is stored as it is, and equal text
# stays equal, so lookups by key or Message-ID are unchanged.
_ESCAPE: Final = "\ue000"
_ESCAPED: Final = re.compile(f"{_ESCAPE}(.)", re.DOTALL)


def _escape_nul(text: str) -> str:
    if "\x00" not in text and _ESCAPE not in text:
        return text
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("\x00", f"{_ESCAPE}0")


def _unescape_nul(text: str) -> str:
    if _ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda match: "\x00" if match[1] == "0" else match[1], text)


class _NulSafeStrDumper(StrDumperUnknown):
    """Sends a ``str`` with its NUL characters escaped."""

    def dump(self, obj: str) -> Buffer | None:
        """The text, escaped, encoded as the connection's."""
        return super().dump(_escape_nul(obj))


class _NulSafeTextLoader(TextLoader):
    """Reads ``text`` back with its NUL characters restored."""

    def load(self, data: Any) -> Any:
        """The text, unescaped."""
        value = super().load(data)
        return _unescape_nul(value) if isinstance(value, str) else value


def _nul_safe(connection: psycopg.Connection[Any]) -> None:
    connection.adapters.register_dumper(str, _NulSafeStrDumper)
    connection.adapters.register_loader("text", _NulSafeTextLoader)


# -- errors --------------------------------------------------------------------

# SQLSTATEs worth a retry: the server shutting down or not ready yet, a serialization
# failure or deadlock (the other transaction won), a lock or statement timeout, and
# the server out of connections, memory or disk (class 53) for now.
_TRANSIENT_STATES: Final = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "58030"}
)
_TRANSIENT_CLASSES: Final = ("08", "53")
# A refused login carries no SQLSTATE in psycopg (the server answers before any
# query): these messages mean that retrying cannot help until someone changes the
# settings, unlike a server that is down, starting or full.
_REFUSED_LOGINS: Final = (
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "invalid",
)


def translate_error(exc: psycopg.Error, where: str, secret: str | None = None) -> RepositoryError:
    """The halomail error for a psycopg error: transient when a retry may succeed.

    Args:
        exc: The error psycopg raised.
        where: Which database (its address without the password), for the message.
        secret: The password, removed from the message should the server repeat it.

    Returns:
        A :class:`~halomail.errors.TransientRepositoryError` for a lost or refused
        connection, a server shutting down, a serialization failure, a deadlock, a
        lock or statement timeout, or a server out of connections or resources; a
        :class:`~halomail.errors.RepositoryError` otherwise. The caller raises it
        ``from exc``.
    """
    text = str(exc).strip()
    if secret:
        text = text.replace(secret, "***")
    message = f"{where}: {text}"
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the connection failed or was lost, or the login was refused.
        transient = isinstance(exc, psycopg.OperationalError) and not any(
            refused in text.lower() for refused in _REFUSED_LOGINS
        )
    else:
        transient = state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_CLASSES)
    return TransientRepositoryError(message) if transient else RepositoryError(message)


def redacted(conninfo: str) -> str:
    """Where a database is, as ``postgresql://user@host:port/dbname``: never the password.

    Raises:
        RepositoryError: When ``conninfo`` is neither a URL nor ``key=value`` pairs.
    """
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise RepositoryError("the PostgreSQL address is not a valid URL or conninfo") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _password(conninfo: str, password: str | None) -> str | None:
    if password:
        return password
    value = conninfo_to_dict(conninfo).get("password")
    return None if value is None else str(value)


class PostgresBase(SQLBase):
    """One psycopg connection behind a lock, its transactions, reconnection and errors.

    See :class:`~halomail.tickets.postgres.PostgreSQLTicketRepository` for the arguments.
    """

    _SQL_CLAIM_OUTBOX = _SQL_CLAIM_OUTBOX
    _SQL_RETRY_OUTBOX = _SQL_RETRY_OUTBOX
    _SQL_STATE_TIME = "substr(value, strpos(value, ' ') + 1)"

    def __init__(
        self,
        conninfo: str,
        *,
        password: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self._where = redacted(conninfo)
        self._lock_timeout_ms = str(max(1, round(lock_timeout * 1000)))
        self._conninfo = conninfo
        self._secret = _password(conninfo, password)
        self._password = password
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._lock = threading.RLock()
        self._in_transaction = False
        # Why the open transaction can no longer commit: None while it can.
        self._aborted: RepositoryError | None = None
        self._closed = False
        self._connection: psycopg.Connection[Any] | None = None
        connection = self._connect()
        try:
            migrate(connection)
        except psycopg.Error as exc:
            connection.close()
            raise self._error(exc) from exc
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"connect_timeout": max(1, round(self._connect_timeout))}
        if self._password:
            extra["password"] = self._password
        try:
            connection = psycopg.connect(
                self._conninfo,
                # Autocommit mode: we issue BEGIN / COMMIT ourselves.
                autocommit=True,
                application_name="halomail",
                **extra,
            )
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        try:
            # For the connection's life; set_config takes the value as a parameter.
            connection.execute(
                "SELECT set_config('lock_timeout', %s, false)", (self._lock_timeout_ms,)
            )
        except psycopg.Error as exc:
            connection.close()
            raise self._error(exc) from exc
        _nul_safe(connection)
        log.debug("%s: connected", self._where)
        return connection

    def _error(self, exc: psycopg.Error) -> RepositoryError:
        return translate_error(exc, self._where, self._secret)

    # -- life cycle ------------------------------------------------------------

    @property
    def where(self) -> str:
        """The database's address without the password."""
        return self._where

    def close(self) -> None:
        """Close the connection (rolling back an unfinished transaction); safe to call twice."""
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
            if connection is None:
                return
            self._in_transaction = False
            self._rollback_quietly(connection)
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
        return f"<PostgreSQLTicketRepository {self._where!r}>"

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: committed when the block exits normally, rolled back on an exception.

        Raises:
            RepositoryError: When a transaction is already open on this repository
                (transactions do not nest), or a statement inside it failed (PostgreSQL
                then rolls the whole transaction back).
            TransientRepositoryError: When the connection was lost (also at the commit,
                whose outcome is then unknown: see the repository's docstring).
        """
        with self._lock:
            connection = self._open()
            if self._in_transaction:
                raise RepositoryError("transactions do not nest: one is already open")
            with self._translated():
                connection.execute("BEGIN")
            self._in_transaction, self._aborted = True, None
            self._began_transaction()
            try:
                yield
                self._flush_batch()
            except BaseException:
                self._in_transaction = False
                self._rollback_quietly(connection)
                raise
            self._in_transaction = False
            aborted = self._take_aborted()
            if aborted is not None:
                self._rollback_quietly(connection)
                raise type(aborted)(
                    f"{self._where}: the database rolled the transaction back after an "
                    f"error inside it; nothing was committed ({aborted})"
                )
            self._commit(connection)

    def _open(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise RepositoryError(f"{self._where}: the repository is closed")
        connection = self._connection
        if (
            connection is not None
            and not connection.closed
            and connection.info.transaction_status == TransactionStatus.ACTIVE
        ):
            # A command still waits for its answer, though none runs (the lock is ours):
            # one failed on its way out as the server went away, and libpq would refuse
            # the next ("another command is already in progress"). The session is lost.
            log.warning("%s: the connection was left mid-command; starting anew", self._where)
            connection.close()
        if connection is None or connection.closed:
            if self._in_transaction:
                raise self._aborted or TransientRepositoryError(
                    f"{self._where}: the connection was lost inside the transaction"
                )
            # The server restarted or dropped us: this call starts on a new connection.
            self._connection = connection = self._connect()
        return connection

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn psycopg's errors into ours, noting that PostgreSQL aborted our transaction."""
        try:
            yield
        except psycopg.Error as exc:
            error = self._error(exc)
            # Any error inside a transaction aborts it in PostgreSQL: later statements
            # would fail with "current transaction is aborted".
            if self._in_transaction and self._aborted is None:
                self._aborted = error
            if self._connection is not None and self._connection.closed:
                log.warning("%s: the connection was lost: %s", self._where, error)
            raise error from exc
        except UnicodeEncodeError as exc:
            raise RepositoryError(
                f"{self._where}: text that is not valid Unicode cannot be stored ({exc.reason})"
            ) from exc

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """Hold the lock for a read; ``snapshot`` makes several statements see one state."""
        with self._lock:
            connection = self._open()
            self._check_not_aborted()
            with self._translated():
                if not snapshot or self._in_transaction:
                    yield _Translating(connection)
                    return
                connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    yield _Translating(connection)
                finally:
                    self._rollback_quietly(connection)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """Hold the lock for a write; outside a transaction, run it in one of its own."""
        with self._lock:
            connection = self._open()
            if self._in_transaction:
                self._check_not_aborted()
                with self._translated():
                    yield _Translating(connection)
                return
            with self._translated():
                connection.execute("BEGIN")
            try:
                with self._translated():
                    yield _Translating(connection)
            except BaseException:
                self._rollback_quietly(connection)
                raise
            self._commit(connection)

    def _take_aborted(self) -> RepositoryError | None:
        """Why the transaction that just ended cannot commit (None when it can); reset."""
        aborted, self._aborted = self._aborted, None
        return aborted

    def _check_not_aborted(self) -> None:
        if self._in_transaction and self._aborted is not None:
            raise type(self._aborted)(
                f"{self._where}: the transaction was rolled back by the database after an "
                f"error; end it and start again ({self._aborted})"
            )

    def _commit(self, connection: psycopg.Connection[Any]) -> None:
        try:
            with self._translated():
                connection.execute("COMMIT")
        except BaseException:
            self._rollback_quietly(connection)
            raise

    def _rollback_quietly(self, connection: psycopg.Connection[Any]) -> None:
        if connection.closed:
            # Lost or closed: the server discarded the uncommitted changes.
            return
        try:
            if connection.info.transaction_status != TransactionStatus.IDLE:
                connection.execute("ROLLBACK")
        except psycopg.Error:
            # The original error is the one worth reporting; the server discards the
            # uncommitted changes in any case when the connection ends.
            log.warning("%s: rollback failed", self._where, exc_info=True)

    def _now(self) -> dt.datetime:
        """The clock's time, in UTC."""
        return to_utc(self._clock())

    def _insert_with_payload(
        self,
        connection: Connection,
        sql: str,
        table: str,
        values: tuple[object, ...],
        payload: bytes,
    ) -> int:
        """INSERT a row whose last column is ``payload`` (bound as ``bytea``)."""
        return self._inserted_id(connection, sql, (*values, payload))
