"""What the SQL repositories share: value codecs, the connection they are written against,
and the base class whose dialect (SQLite or PostgreSQL) supplies connections and
transactions.

The role parts (:mod:`._sqlite_tickets`, :mod:`._sqlite_directory`,
:mod:`._sqlite_ledger`, :mod:`._sqlite_outbox`) hold one set of SQL for both
databases, written with ``?`` and ``:name`` placeholders. Only a statement that must
differ is a class attribute that a dialect overrides (``_SQL_CLAIM_OUTBOX``,
``_SQL_RETRY_OUTBOX``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any, ClassVar, Protocol

from halomail.errors import RepositoryError
from halomail.tickets._common import to_utc

__all__ = ["OUTBOX_COLUMNS", "Connection", "Cursor", "SQLBase"]

# The outbox's columns in the order the row reader of ``_sqlite_outbox`` expects.
OUTBOX_COLUMNS = (
    "id, message_id, recipients, subject, text, status, created_at, mailbox, kind, ticket_id, "
    "html, in_reply_to, thread_references, auto_submitted, attempts, next_attempt_at, "
    "last_error, sent_at"
)


class Cursor(Protocol):
    """The part of a DB-API cursor the role parts use."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        ...

    def fetchone(self) -> Any:
        """The next row, or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The rows, one at a time."""
        ...


class Connection(Protocol):
    """The part of a connection the role parts use: ``sqlite3.Connection`` as it is,
    or the PostgreSQL adapter that translates the placeholders."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor:
        """Run one statement; return its cursor."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        """Run one statement once per set of parameters."""
        ...


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
    """``json.dumps(list(values))``; strings are quoted by json's own C quoting, without
    the encoder ``json.dumps`` builds on each call (processing stores a few per email)."""
    items = list(values)
    if all(type(item) is str for item in items):
        return "[" + ", ".join(map(_quoted, items)) + "]"
    return json.dumps(items)


def _json_map(values: Mapping[str, str]) -> str:
    """``json.dumps(dict(values))``, quicker when every key and value is a string."""
    items = dict(values)
    if all(type(key) is str and type(value) is str for key, value in items.items()):
        return (
            "{"
            + ", ".join(f"{_quoted(key)}: {_quoted(value)}" for key, value in items.items())
            + "}"
        )
    return json.dumps(items)


def _json_ints(values: Iterable[int]) -> str:
    """``json.dumps(list(values))`` of ids: ``[]`` for none without the encoder."""
    items = list(values)
    return json.dumps(items) if items else "[]"


def _tuple(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _mapping(text: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(text)
    return loaded


class SQLBase:
    """The dialect's seam: connections, transactions, payload inserts and the clock.

    :class:`~halomail.tickets._sqlite_base.SQLiteBase` and
    :class:`~halomail.tickets._postgres_base.PostgresBase` implement it; the role parts
    call only these.
    """

    # Claims the due mail nobody else holds and returns it (see the SQLite and
    # PostgreSQL bases for how each makes two claimers never share an email).
    _SQL_CLAIM_OUTBOX: ClassVar[str]
    # Makes failed and pending mail due again, all of it or the ids in :ids.
    _SQL_RETRY_OUTBOX: ClassVar[str]
    # The text after a state value's first space, or the whole value (the time of a
    # timed state row, _common.TIMED_STATE_PREFIXES): SQLite says instr, PostgreSQL strpos.
    _SQL_STATE_TIME: ClassVar[str]

    # Set by the dialect: whether a transaction() block is open, and how many have begun
    # (a number that tells one transaction from the next).
    _in_transaction: bool = False
    _transactions: int = 0
    # The ticket created last inside a transaction: (id, its updated_at, which
    # transaction). Its actions in the same transaction need not prove it exists, nor
    # touch it: one statement fewer per new email.
    _fresh_ticket: tuple[int, str, int] | None = None

    def _flush_batch(self) -> None:
        """Write what a batch kept for the commit (``_sql_batch``); the dialect calls it
        inside the transaction, just before COMMIT."""

    def _began_transaction(self) -> None:
        """Count a transaction that has just begun (the dialect calls it after BEGIN)."""
        self._transactions += 1

    def _note_fresh_ticket(self, ticket_id: int, stamp: str) -> None:
        """Remember a ticket created inside the open transaction at ``stamp``."""
        if self._in_transaction:
            self._fresh_ticket = (ticket_id, stamp, self._transactions)

    def _fresh_stamp(self, ticket_id: int) -> str | None:
        """When ``ticket_id`` was created, if the open transaction has just created it and
        this is its first action: the ticket exists, and an action stamped then leaves its
        ``updated_at`` as it is. Asked once per ticket (the answer is forgotten)."""
        fresh, self._fresh_ticket = self._fresh_ticket, None
        if not self._in_transaction or fresh is None:
            return None
        created_id, stamp, transaction = fresh
        return stamp if (created_id, transaction) == (ticket_id, self._transactions) else None

    def _reading(self, *, snapshot: bool = False) -> AbstractContextManager[Connection]:
        """Hold the connection for a read; ``snapshot`` makes several statements see one state."""
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[Connection]:
        """Hold the connection for a write; outside a transaction, run it in one of its own."""
        raise NotImplementedError

    def _insert(self, connection: Connection, sql: str, parameters: Any) -> int | None:
        """Run ``sql``, an ``INSERT … RETURNING id``: the new row's id, or ``None`` when
        its conflict clause inserted nothing. A dialect may run it another way."""
        # fetchall, not fetchone: a RETURNING statement finishes only when read to the end.
        rows = connection.execute(sql, parameters).fetchall()
        return int(rows[0][0]) if rows else None

    def _inserted_id(self, connection: Connection, sql: str, parameters: Any) -> int:
        """Run ``sql``, an ``INSERT … RETURNING id`` without a conflict clause, and return
        the new row's id."""
        inserted = self._insert(connection, sql, parameters)
        if inserted is None:  # pragma: no cover - an INSERT without a conflict clause inserts
            raise RepositoryError("the database did not report the new row's id")
        return inserted

    def _insert_with_payload(
        self,
        connection: Connection,
        sql: str,
        table: str,
        values: tuple[object, ...],
        payload: bytes,
    ) -> int:
        """Run ``sql`` (an ``INSERT … RETURNING id`` whose last value is ``payload``)."""
        raise NotImplementedError

    def _now(self) -> dt.datetime:
        """The clock's time, in UTC."""
        raise NotImplementedError
