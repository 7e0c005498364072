"""The SQL repositories' group commit: a batch's reads at once, its small writes at its end.

A batch of emails committed in one transaction (:mod:`halomail.pipeline.batch`) asks the
same questions for each email: is its dedupe key known, what do the state keys of its
content and sender hold, how much mail went to its sender lately, who is its sender.
:meth:`BatchPart.prepare_batch` asks them for the whole batch in three statements and
keeps the answers for the transaction; the small writes that follow (dedupe records,
state values, outbox recipients, finished attempts) are kept too and written just
before the commit, one statement per table, by :meth:`BatchPart._flush_batch`. The
transaction still commits or rolls back as a whole; only when a statement runs changes.

Everything a method of the repository reads answers from what the batch holds first,
so a batch sees its own writes as before. A dedupe key another runner recorded in the
meantime (PostgreSQL) is found at the flush: :class:`~halomail.errors.DuplicateKeyError`
then leaves the transaction, which is rolled back.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import operator
import threading
from collections.abc import Sequence

import attrs

from halomail.errors import DuplicateKeyError
from halomail.tickets._common import address_key, to_utc
from halomail.tickets._sql import Connection, SQLBase, _parse_time, _time
from halomail.tickets.models import BatchKeys, DedupeRecord

__all__ = ["BatchPart", "OpenBatch"]


def _marks(count: int, row: str = "?") -> str:
    """``count`` placeholder groups, comma-separated (only this is formatted into SQL)."""
    return ", ".join([row] * count)


@attrs.define
class OpenBatch:
    """What one transaction's batch has read, and the writes it keeps for its end."""

    transaction: int
    # The thread that holds the transaction: another thread's call waits for the
    # repository's lock as always, and never sees what the batch has not committed.
    thread: int = attrs.field(factory=threading.get_ident)
    dedupe: dict[str, DedupeRecord | None] = attrs.Factory(dict)
    state: dict[str, str | None] = attrs.Factory(dict)
    # Per address: the created_at stamps (ISO text, as stored) of its outbox recipients
    # rows since ``since``, so a count for any later start is exact.
    sent: dict[str, list[str]] = attrs.Factory(dict)
    since: str = ""
    new_dedupe: dict[str, DedupeRecord] = attrs.Factory(dict)
    new_state: dict[str, str] = attrs.Factory(dict)
    new_recipients: list[tuple[str, str, int, int | None]] = attrs.Factory(list)
    finished: dict[str, None] = attrs.Factory(dict)

    @property
    def pending(self) -> bool:
        """True while writes wait for the flush."""
        return bool(self.new_dedupe or self.new_state or self.new_recipients or self.finished)


class BatchPart(SQLBase):
    """:meth:`prepare_batch`, the batch's answers, and its writes at the commit."""

    _batch: OpenBatch | None = None

    def _open_batch(self) -> OpenBatch | None:
        """The batch of the open transaction, or ``None`` (none was prepared)."""
        batch = self._batch
        if batch is None or not self._in_transaction or batch.transaction != self._transactions:
            return None
        return batch if batch.thread == threading.get_ident() else None

    def prepare_batch(self, keys: BatchKeys) -> None:
        """Read what a batch of emails will ask, in three statements, for the open
        transaction; from now until it ends, small writes wait for its commit.

        Outside a transaction nothing is read or kept.
        """
        if not self._in_transaction:
            return
        batch = self._open_batch() or OpenBatch(self._transactions)
        self._batch = batch
        self._read_ledger(batch, keys)
        self._read_sent(batch, keys)
        people = tuple(dict.fromkeys(address_key(a) for a in keys.senders))
        if people:
            self._read_people(people)

    def _read_ledger(self, batch: OpenBatch, keys: BatchKeys) -> None:
        dedupe = tuple(dict.fromkeys(k for k in keys.dedupe if k not in batch.dedupe))
        state = tuple(dict.fromkeys(k for k in keys.state if k not in batch.state))
        if not dedupe and not state:
            return
        # One statement for both tables; the second's columns borrow the first's types.
        sql = (
            "SELECT 'd', key, sha256, outcome, ticket_id, created_at FROM dedupe "  # noqa: S608
            f"WHERE key IN ({_marks(len(dedupe) or 1)}) UNION ALL "
            "SELECT 's', key, value, NULL, NULL, NULL FROM state "
            f"WHERE key IN ({_marks(len(state) or 1)})"
        )
        batch.dedupe.update(dict.fromkeys(dedupe))
        batch.state.update(dict.fromkeys(state))
        with self._reading() as connection:
            rows = connection.execute(sql, (*(dedupe or ("",)), *(state or ("",)))).fetchall()
        for table, key, first, outcome, ticket_id, created_at in rows:
            if table == "d" and key in batch.dedupe:
                batch.dedupe[key] = DedupeRecord(
                    key, first, outcome, ticket_id, _parse_time(created_at)
                )
            elif table == "s" and key in batch.state:
                batch.state[key] = str(first)

    def _read_sent(self, batch: OpenBatch, keys: BatchKeys) -> None:
        addresses = tuple(dict.fromkeys(address_key(a) for a in keys.senders))
        if not addresses or batch.sent:
            return  # a batch is prepared once for its counts
        batch.since = _time(keys.since)
        sql = (
            "SELECT address, created_at FROM outbox_recipients "  # noqa: S608
            f"WHERE address IN ({_marks(len(addresses))}) AND created_at >= ?"
        )
        with self._reading() as connection:
            rows = connection.execute(sql, (*addresses, batch.since)).fetchall()
        batch.sent = {address: [] for address in addresses}
        for address, created_at in rows:
            batch.sent[address].append(_time(_parse_time(created_at)))

    def _read_people(self, addresses: tuple[str, ...]) -> None:
        """Who the senders are, for the directory's answers (see ``DirectoryPart``)."""
        raise NotImplementedError

    def begin_attempts(
        self, keys: Sequence[tuple[str, str]], *, now: dt.datetime
    ) -> list[int | None]:
        """:meth:`begin_attempt` for a batch, in mailbox order, in two statements.

        Args:
            keys: Per email, its attempt key and its ``repeated-crash`` dedupe key.
            now: When the attempts start.

        Returns:
            Per email begun, how many earlier attempts never finished, or ``None`` when
            its crash key is recorded (quarantined before: no attempt is recorded). The
            list stops after the first email that is not 0: those behind it are not begun.
        """
        stamp = _time(to_utc(now))  # a naive time is refused before anything is read
        if not keys:
            return []
        attempt_keys = tuple(dict.fromkeys(a for a, _ in keys))
        crash_keys = tuple(dict.fromkeys(c for _, c in keys))
        sql = (
            "SELECT 'c', key, 0 FROM dedupe "  # noqa: S608
            f"WHERE key IN ({_marks(len(crash_keys))}) UNION ALL "
            f"SELECT 'a', key, count FROM attempts WHERE key IN ({_marks(len(attempt_keys))})"
        )
        with self._reading() as connection:
            rows = connection.execute(sql, (*crash_keys, *attempt_keys)).fetchall()
        crashed = {key for table, key, _ in rows if table == "c"}
        counts = {key: int(count) for table, key, count in rows if table == "a"}
        answers: list[int | None] = []
        begun: list[str] = []
        for attempt_key, crash_key in keys:
            if crash_key in crashed:
                answers.append(None)
                break
            earlier = counts.get(attempt_key, 0)
            counts[attempt_key] = earlier + 1  # the same email twice: the second has one
            answers.append(earlier)
            begun.append(attempt_key)
            if earlier:
                break
        self._record_attempts(begun, stamp)
        return answers

    def _record_attempts(self, begun: list[str], stamp: str) -> None:
        """One more attempt for each of ``begun`` (a key twice counts twice)."""
        # One multi-row statement may not change a row twice (PostgreSQL): a repeated
        # key, always the last, goes in a second one.
        distinct = list(dict.fromkeys(begun))
        again = begun[len(distinct) :]
        with self._writing() as connection:
            for chunk in (distinct, again):
                if chunk:
                    connection.execute(
                        "INSERT INTO attempts (key, count, first_at, last_at) "  # noqa: S608
                        f"VALUES {_marks(len(chunk), '(?, 1, ?, ?)')} ON CONFLICT (key) "
                        "DO UPDATE SET count = attempts.count + 1, last_at = excluded.last_at",
                        [value for key in chunk for value in (key, stamp, stamp)],
                    )

    # -- the answers -------------------------------------------------------------

    def _batch_dedupe(self, key: str) -> tuple[bool, DedupeRecord | None]:
        """(known, record): whether the batch knows ``key``, and its record."""
        batch = self._open_batch()
        if batch is None or key not in batch.dedupe:
            return False, None
        return True, batch.dedupe[key]

    def _batch_state(self, key: str) -> tuple[bool, str | None]:
        """(known, value): whether the batch knows ``key``, and its value."""
        batch = self._open_batch()
        if batch is None or key not in batch.state:
            return False, None
        return True, batch.state[key]

    def _batch_count(self, address: str, since: str) -> int | None:
        """Mail to ``address`` since ``since`` as the batch knows it, else ``None``."""
        batch = self._open_batch()
        if batch is None or address not in batch.sent or since < batch.since:
            return None
        return sum(1 for stamp in batch.sent[address] if stamp >= since)

    # -- the writes kept for the commit --------------------------------------------

    def _keep_dedupe(self, record: DedupeRecord) -> bool:
        """Keep ``record`` for the flush; False when no batch is open (write it now).

        Raises:
            DuplicateKeyError: When the batch knows the key is recorded already.
        """
        batch = self._open_batch()
        if batch is None:
            return False
        if batch.dedupe.get(record.key) is not None:
            raise DuplicateKeyError(f"dedupe key already recorded: {record.key[:200]!r}")
        if record.key not in batch.dedupe:
            return False  # never read: let the database say whether it is new
        batch.dedupe[record.key] = batch.new_dedupe[record.key] = record
        return True

    def _keep_state(self, key: str, value: str) -> bool:
        """Keep a state value for the flush; False when no batch is open."""
        batch = self._open_batch()
        if batch is None:
            return False
        batch.state[key] = batch.new_state[key] = value
        return True

    def _keep_recipients(self, rows: list[tuple[str, str, int, int | None]]) -> bool:
        """Keep outbox recipient rows for the flush; False when no batch is open."""
        batch = self._open_batch()
        if batch is None:
            return False
        batch.new_recipients.extend(rows)
        for address, stamp, _, _ in rows:
            if address in batch.sent:
                batch.sent[address].append(stamp)
        return True

    def _keep_finished(self, key: str) -> bool:
        """Keep a finished attempt for the flush; False when no batch is open."""
        batch = self._open_batch()
        if batch is None:
            return False
        batch.finished[key] = None
        return True

    def _flush_batch(self) -> None:
        """Write what the batch kept, one statement per table; the transaction is open.

        Raises:
            DuplicateKeyError: When a dedupe key was recorded by another runner meanwhile.
        """
        batch = self._open_batch()
        if batch is None or not batch.pending:
            return
        # In key order: two batches writing some of the same keys (the copy key of an
        # email two runners read from two mailboxes in opposite orders) then take their
        # row locks in one order, so one waits for the other instead of deadlocking.
        new_dedupe = sorted(batch.new_dedupe.values(), key=operator.attrgetter("key"))
        new_state = sorted(batch.new_state.items())
        batch.new_dedupe, batch.new_state = {}, {}
        recipients, batch.new_recipients = batch.new_recipients, []
        finished, batch.finished = list(batch.finished), {}
        with self._writing() as connection:
            if recipients:
                connection.execute(
                    "INSERT INTO outbox_recipients (address, created_at, outbox_id, "  # noqa: S608
                    f"ticket_id) VALUES {_marks(len(recipients), '(?, ?, ?, ?)')}",
                    [value for row in recipients for value in row],
                )
            if new_state:
                connection.execute(
                    f"INSERT INTO state (key, value) VALUES {_marks(len(new_state), '(?, ?)')} "  # noqa: S608
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [value for row in new_state for value in row],
                )
            if finished:
                connection.execute(
                    f"DELETE FROM attempts WHERE key IN ({_marks(len(finished))})",  # noqa: S608
                    finished,
                )
            if new_dedupe:
                self._flush_dedupe(connection, new_dedupe)

    @staticmethod
    def _flush_dedupe(connection: Connection, records: list[DedupeRecord]) -> None:
        values = [
            value
            for r in records
            for value in (r.key, r.sha256, r.outcome, r.ticket_id, _time(r.created_at))
        ]
        rows = connection.execute(
            "INSERT INTO dedupe (key, sha256, outcome, ticket_id, created_at) "  # noqa: S608
            f"VALUES {_marks(len(records), '(?, ?, ?, ?, ?)')} "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
            values,
        ).fetchall()
        if len(rows) < len(records):
            written = {row[0] for row in rows}
            lost = next(r.key for r in records if r.key not in written)
            raise DuplicateKeyError(f"dedupe key already recorded: {lost[:200]!r}")
