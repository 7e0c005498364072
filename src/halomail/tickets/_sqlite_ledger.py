"""The SQL repositories' ledger (dedupe keys, quarantine, state, leases, attempts) and
service log.

The statements run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from halomail.errors import DuplicateKeyError
from halomail.tickets._common import (
    TIMED_STATE_PREFIXES,
    check_page,
    to_utc,
)
from halomail.tickets._sql import (
    _parse_time,
    _time,
)
from halomail.tickets._sql_batch import BatchPart
from halomail.tickets.models import (
    DedupeRecord,
    NewQuarantine,
    NewServiceStatus,
    QuarantineEntry,
    ServiceStatus,
    ServiceStatusEntry,
)

__all__ = ["LedgerPart"]

_QUARANTINE_COLUMNS = "id, mailbox, reason, raw, created_at, detail, message_id, dedupe_key"

_SERVICE_STATUS_COLUMNS = "id, service, status, at, detail, ticket_id, message_id"
_SQL_INSERT_SERVICE_STATUS = (
    "INSERT INTO service_status (service, status, at, detail, ticket_id, message_id) "
    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
_SQL_SERVICE_HISTORY = (
    f"SELECT {_SERVICE_STATUS_COLUMNS} FROM service_status "  # noqa: S608
    "WHERE service = ? ORDER BY at DESC, id DESC LIMIT ?"
)

_SQL_GET_DEDUPE = "SELECT key, sha256, outcome, ticket_id, created_at FROM dedupe WHERE key = ?"
# A key already recorded returns no row: a failed INSERT would abort a PostgreSQL
# transaction, and the caller must be the one to decide to roll it back.
_SQL_INSERT_DEDUPE = (
    "INSERT INTO dedupe (key, sha256, outcome, ticket_id, created_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)

# Seen again: the record's time moves on, so that retention keeps it (never back).
_SQL_TOUCH_DEDUPE = "UPDATE dedupe SET created_at = ? WHERE key = ? AND created_at < ?"
# Retention: at most ? old rows a table per statement, so no statement holds the write
# lock for long. Row values in IN: SQLite 3.15 and PostgreSQL both take them.
_SQL_PURGE_ATTEMPTS = (
    "DELETE FROM attempts WHERE key IN (SELECT key FROM attempts WHERE last_at < ? LIMIT ?)"
)
_SQL_PURGE_RECIPIENTS = (
    "DELETE FROM outbox_recipients WHERE (address, created_at, outbox_id) IN "
    "(SELECT address, created_at, outbox_id FROM outbox_recipients WHERE created_at < ? "
    "LIMIT ?)"
)


def _purge_state_sql(state_time: str) -> str:
    """The statement forgetting timed state rows (``TIMED_STATE_PREFIXES``) whose time
    has passed; each prefix is a range of the primary key, ``? <= key < ?``."""
    ranges = " OR ".join("(key >= ? AND key < ?)" for _ in TIMED_STATE_PREFIXES)
    return (
        "DELETE FROM state WHERE key IN (SELECT key FROM state "  # noqa: S608
        f"WHERE ({ranges}) AND {state_time} < ? LIMIT ?)"
    )


#: The key ranges of :data:`TIMED_STATE_PREFIXES`: each prefix, and the text just past it.
_TIMED_RANGES = tuple(
    bound
    for prefix in TIMED_STATE_PREFIXES
    for bound in (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
)


def _purge_dedupe_sql(kept: int) -> str:
    """The statement forgetting old dedupe records but those under ``kept`` prefixes."""
    spared = "".join(" AND substr(key, 1, ?) <> ?" for _ in range(kept))
    return (
        "DELETE FROM dedupe WHERE key IN (SELECT key FROM dedupe "  # noqa: S608
        f"WHERE created_at < ?{spared} LIMIT ?)"
    )


_SQL_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (mailbox, reason, raw, created_at, detail, message_id, dedupe_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_SQL_GET_QUARANTINE = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?"  # noqa: S608
_SQL_DELETE_QUARANTINE = "DELETE FROM quarantine WHERE id = ?"
_SQL_LIST_QUARANTINE = (
    f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine ORDER BY id DESC LIMIT ? OFFSET ?"  # noqa: S608
)

_SQL_GET_STATE = "SELECT value FROM state WHERE key = ?"
_SQL_SET_STATE = (
    "INSERT INTO state (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# Takes a lease that is free, expired, or already ours; RETURNING yields a row only
# when the INSERT or the conditional UPDATE happened.
_SQL_ACQUIRE_LEASE = (
    "INSERT INTO leases (name, owner, held_until) VALUES (:name, :owner, :until) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, held_until = excluded.held_until "
    "WHERE leases.owner = excluded.owner OR leases.held_until <= :now RETURNING owner"
)
_SQL_RELEASE_LEASE = "DELETE FROM leases WHERE name = ? AND owner = ?"

# Records one more attempt and returns how many there are now, in one statement.
_SQL_BEGIN_ATTEMPT = (
    "INSERT INTO attempts (key, count, first_at, last_at) VALUES (:key, 1, :now, :now) "
    "ON CONFLICT (key) DO UPDATE SET count = attempts.count + 1, last_at = excluded.last_at "
    "RETURNING count"
)
_SQL_FINISH_ATTEMPT = "DELETE FROM attempts WHERE key = ?"


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


class LedgerPart(BatchPart):
    """Dedupe keys, quarantine, state, leases, attempts and the service log."""

    # -- exactly once ----------------------------------------------------------

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record for a dedupe key, or ``None`` if the email was never handled."""
        known, record = self._batch_dedupe(key)
        if known:
            return record
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
        if self._keep_dedupe(record):
            return  # written with the batch's others when it commits
        values = (
            record.key,
            record.sha256,
            record.outcome,
            record.ticket_id,
            _time(record.created_at),
        )
        with self._writing() as connection:
            # fetchall, not fetchone: a RETURNING statement finishes only when read to the end.
            if not connection.execute(_SQL_INSERT_DEDUPE, values).fetchall():
                # Nothing was written: the transaction stays usable, and the caller
                # decides to roll it back.
                raise DuplicateKeyError(f"dedupe key already recorded: {record.key[:200]!r}")

    def touch_dedupe(self, key: str, *, now: dt.datetime) -> None:
        """Mark the dedupe record ``key`` seen at ``now`` (its email was fetched again)."""
        stamp = _time(now)
        with self._writing() as connection:
            connection.execute(_SQL_TOUCH_DEDUPE, (stamp, key, stamp))

    def purge_ledger(
        self, *, before: dt.datetime, keep: Sequence[str] = (), limit: int = 10_000
    ) -> int:
        """Forget at most ``limit`` rows a table older than ``before``: dedupe records
        neither written nor seen since (but those under a ``keep`` prefix), attempts,
        the sent-mail rows the sending limits count, and the timed state rows (loop
        counts, cloud send marks). Committed on its own."""
        cutoff = _time(before)
        prefixes = [value for prefix in keep for value in (len(prefix), prefix)]
        with self._writing() as connection:
            gone = connection.execute(
                _purge_dedupe_sql(len(keep)), (cutoff, *prefixes, limit)
            ).rowcount
            gone += connection.execute(_SQL_PURGE_ATTEMPTS, (cutoff, limit)).rowcount
            gone += connection.execute(_SQL_PURGE_RECIPIENTS, (cutoff, limit)).rowcount
            gone += connection.execute(
                _purge_state_sql(self._SQL_STATE_TIME), (*_TIMED_RANGES, cutoff, limit)
            ).rowcount
        return int(gone)

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, with its reason and bytes."""
        now = self._now()
        with self._writing() as connection:
            entry_id = self._inserted_id(
                connection,
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

    def get_quarantine(self, quarantine_id: int) -> QuarantineEntry | None:
        """The quarantined email with this id, its bytes included, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_QUARANTINE, (quarantine_id,)).fetchone()
        return None if row is None else _quarantine_entry(row)

    def delete_quarantine(self, quarantine_id: int) -> bool:
        """Forget a quarantined email and its bytes (its dedupe record stays)."""
        with self._writing() as connection:
            return connection.execute(_SQL_DELETE_QUARANTINE, (quarantine_id,)).rowcount > 0

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
            entry_id = self._inserted_id(connection, _SQL_INSERT_SERVICE_STATUS, values)
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
        known, value = self._batch_state(key)
        if known:
            return value
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_STATE, (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs; written inside or outside a transaction."""
        if self._keep_state(key, value):
            return
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
                _SQL_ACQUIRE_LEASE,
                {"name": name, "owner": owner, "until": _time(start + ttl), "now": _time(start)},
            ).fetchall()
        return bool(rows)

    def release_lease(self, name: str, owner: str) -> None:
        """Free the named lease if ``owner`` holds it; otherwise change nothing."""
        with self._writing() as connection:
            connection.execute(_SQL_RELEASE_LEASE, (name, owner))

    # -- attempts ----------------------------------------------------------------

    def begin_attempt(self, key: str, *, now: dt.datetime) -> int:
        """Record that processing the email ``key`` starts; return the unfinished earlier ones.

        Outside a transaction it is committed on its own, before the email is parsed.
        """
        self._flush_batch()  # a finished attempt the batch kept counts first
        with self._writing() as connection:
            # fetchall, not fetchone: a RETURNING statement finishes only when read to the end.
            stamp = _time(to_utc(now))
            rows = connection.execute(_SQL_BEGIN_ATTEMPT, {"key": key, "now": stamp}).fetchall()
        return int(rows[0][0]) - 1

    def finish_attempt(self, key: str) -> None:
        """Forget the attempts of ``key`` (inside the transaction that commits its outcome)."""
        if self._keep_finished(key):
            return
        with self._writing() as connection:
            connection.execute(_SQL_FINISH_ATTEMPT, (key,))
