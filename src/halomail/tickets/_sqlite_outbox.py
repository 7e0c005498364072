"""The SQL repositories' outbox: queueing, claiming and marking outgoing mail.

The statements run on SQLite and PostgreSQL alike, but for the claim and the retry,
which each dialect's base supplies (``_SQL_CLAIM_OUTBOX``, ``_SQL_RETRY_OUTBOX``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from halomail.errors import RepositoryError
from halomail.tickets._common import (
    address_key,
    check_page,
    to_utc,
)
from halomail.tickets._sql import (
    OUTBOX_COLUMNS,
    _json_list,
    _opt_time,
    _parse_opt_time,
    _parse_time,
    _time,
    _tuple,
)
from halomail.tickets._sql_batch import BatchPart
from halomail.tickets.models import (
    NewOutgoing,
    OutboxMail,
    OutboxStatus,
)

__all__ = ["OutboxPart"]

_OUTBOX_COLUMNS = OUTBOX_COLUMNS
_SQL_INSERT_OUTBOX = (
    "INSERT INTO outbox (message_id, recipients, subject, text, status, created_at, mailbox, "
    "kind, ticket_id, html, in_reply_to, thread_references, auto_submitted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    # A Message-ID already queued returns no row (a failed INSERT would abort a
    # PostgreSQL transaction).
    "ON CONFLICT (message_id) DO NOTHING RETURNING id"
)
_SQL_INSERT_RECIPIENT = (
    "INSERT INTO outbox_recipients (address, created_at, outbox_id, ticket_id) VALUES (?, ?, ?, ?)"
)
# The literal 'pending' (not a parameter) lets SQLite use the partial index.
_SQL_DUE_OUTBOX = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' "  # noqa: S608
    "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id LIMIT ?"
)
# SQLite's claim and retry (PostgreSQL's are in ``_postgres_base``); the repository
# class names the pair its database runs.
#
# Claims the due mail nobody else holds, in one statement run under the write lock
# (BEGIN IMMEDIATE), so two claimers, in two processes too, never share an email. The
# subquery walks the partial index of pending mail in id order; RETURNING has no
# defined order, so the caller sorts.
_SQL_CLAIM_OUTBOX = (
    "UPDATE outbox SET claimed_by = :owner, claimed_until = :until WHERE id IN ("  # noqa: S608
    "SELECT id FROM outbox WHERE status = 'pending' "
    "AND (next_attempt_at IS NULL OR next_attempt_at <= :now) "
    "AND (claimed_by IS NULL OR claimed_by = :owner OR claimed_until <= :now) "
    f"ORDER BY id LIMIT :limit) RETURNING {_OUTBOX_COLUMNS}"
)
# Failed and pending mail due again from scratch; sent mail is never touched. :ids is
# NULL (all of it) or a JSON array of ids.
_SQL_RETRY_OUTBOX = (
    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = :now, "  # noqa: S608
    "claimed_by = NULL, claimed_until = NULL WHERE status != 'sent' AND (:ids IS NULL OR id IN "
    f"(SELECT value FROM json_each(:ids))) RETURNING {_OUTBOX_COLUMNS}"
)
_SQL_GET_OUTBOX = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?"  # noqa: S608
_SQL_MARK_OUTBOX = (
    "UPDATE outbox SET status = :status, attempts = attempts + 1, last_error = :error, "
    "next_attempt_at = :next, sent_at = CASE WHEN :status = 'sent' THEN :now ELSE sent_at END, "
    "claimed_by = NULL, claimed_until = NULL "
    "WHERE id = :id"
)
_SQL_LIST_OUTBOX = (
    f"SELECT {_OUTBOX_COLUMNS} FROM outbox "  # noqa: S608
    "WHERE (CAST(:status AS TEXT) IS NULL OR status = :status) "
    "AND (CAST(:ticket_id AS INTEGER) IS NULL OR ticket_id = :ticket_id) "
    "ORDER BY id DESC LIMIT :limit OFFSET :offset"
)
_SQL_COUNT_OUTGOING = "SELECT COUNT(*) FROM outbox_recipients WHERE address = ? AND created_at >= ?"
_SQL_COUNT_OUTGOING_FOR_TICKET = (
    "SELECT COUNT(*) FROM outbox_recipients WHERE address = ? AND created_at >= ? AND ticket_id = ?"
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


class OutboxPart(BatchPart):
    """Outgoing mail, its recipients (for the throttle), and claims."""

    # -- the outbox ------------------------------------------------------------

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email to send after the transaction commits (status ``pending``).

        Raises:
            RepositoryError: When an email with this Message-ID is already queued.
        """
        now = self._now()
        stamp = _time(now)
        with self._writing() as connection:
            outbox_id = self._insert(
                connection,
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
            if outbox_id is None:
                raise RepositoryError(f"outgoing Message-ID already queued: {new.message_id!r}")
            recipients = [
                (address, stamp, outbox_id, new.ticket_id)
                for address in dict.fromkeys(map(address_key, new.to))
            ]
            if not self._keep_recipients(recipients):
                connection.executemany(_SQL_INSERT_RECIPIENT, recipients)
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

        One conditional UPDATE: mail another owner claimed until after ``now`` is passed
        over, so two claimers never receive the same email (SQLite runs it under the
        write lock; PostgreSQL skips the rows another claimer has locked).
        """
        check_page(limit, 0)
        start = to_utc(now)
        with self._writing() as connection:
            rows = connection.execute(
                self._SQL_CLAIM_OUTBOX,
                {
                    "owner": owner,
                    "until": _time(start + lease),
                    "now": _time(start),
                    "limit": limit,
                },
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
        values = {
            "status": status.value,
            "error": error,
            "next": _opt_time(next_attempt_at),
            "now": _time(self._now()),
            "id": outbox_id,
        }
        with self._writing() as connection:
            if connection.execute(_SQL_MARK_OUTBOX, values).rowcount == 0:
                raise RepositoryError(f"outgoing email {outbox_id} does not exist")
            row = connection.execute(_SQL_GET_OUTBOX, (outbox_id,)).fetchone()
        return _outbox_mail(row)

    def list_outgoing(
        self,
        *,
        status: OutboxStatus | None = None,
        limit: int = 100,
        offset: int = 0,
        ticket_id: int | None = None,
    ) -> Sequence[OutboxMail]:
        """Outgoing emails (of one status, of one ticket, when given), newest first."""
        check_page(limit, offset)
        wanted = status.value if status is not None else None
        values = {"status": wanted, "ticket_id": ticket_id, "limit": limit, "offset": offset}
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_OUTBOX, values).fetchall()
        return [_outbox_mail(row) for row in rows]

    def retry_outgoing(
        self, now: dt.datetime, *, ids: Sequence[int] | None = None
    ) -> Sequence[OutboxMail]:
        """Make failed and pending emails due at ``now`` again (attempts 0, no claim)."""
        chosen = None if ids is None else json.dumps([int(i) for i in ids])
        with self._writing() as connection:
            rows = connection.execute(
                self._SQL_RETRY_OUTBOX, {"now": _time(to_utc(now)), "ids": chosen}
            ).fetchall()
        return sorted((_outbox_mail(row) for row in rows), key=lambda mail: mail.id)

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """How many emails (any status) were queued to ``to`` (one of their recipients,
        compared case-insensitively) at or after ``since``, for one ticket when given."""
        address, start = address_key(to), _time(since)
        if ticket_id is None and (known := self._batch_count(address, start)) is not None:
            return known
        self._flush_batch()  # recipients the batch kept are counted too
        with self._reading() as connection:
            if ticket_id is None:
                row = connection.execute(_SQL_COUNT_OUTGOING, (address, start)).fetchone()
            else:
                row = connection.execute(
                    _SQL_COUNT_OUTGOING_FOR_TICKET, (address, start, ticket_id)
                ).fetchone()
        return int(row[0])
