"""The Django repository's outbox: queueing, claiming and marking outgoing mail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError
from django.db.models import F, Q

from halomail.contrib.django import models as m
from halomail.contrib.django._base import DjangoBase, aware, opt_aware
from halomail.errors import RepositoryError
from halomail.tickets._common import address_key, check_page, to_utc
from halomail.tickets.models import NewOutgoing, OutboxMail, OutboxStatus

__all__ = ["OutboxPart", "outbox_mail"]


def outbox_mail(row: m.OutboxMail) -> OutboxMail:
    """The halomail outgoing email a row holds."""
    return OutboxMail(
        id=row.pk,
        message_id=row.message_id,
        to=tuple(row.recipients),
        subject=row.subject,
        text=row.text,
        status=OutboxStatus(row.status),
        created_at=aware(row.created_at),
        mailbox=row.mailbox,
        kind=row.kind,
        ticket_id=row.ticket_id,
        html=row.html,
        in_reply_to=row.in_reply_to,
        references=tuple(row.references),
        auto_submitted=row.auto_submitted,
        attempts=row.attempts,
        next_attempt_at=opt_aware(row.next_attempt_at),
        last_error=row.last_error,
        sent_at=opt_aware(row.sent_at),
    )


def _due(now: dt.datetime) -> Any:
    """Pending mail never tried, or whose next attempt is at ``now`` or before."""
    return Q(status=OutboxStatus.PENDING.value) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


class OutboxPart(DjangoBase):
    """Outgoing mail, its recipients (for the throttle), and claims."""

    def _outbox(self) -> Any:
        return m.OutboxMail.objects.using(self._using)

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email to send after the transaction commits (status ``pending``).

        Raises:
            RepositoryError: When an email with this Message-ID is already queued.
        """
        now = self._now()
        with self._writing():
            try:
                with self._savepoint():
                    row = self._outbox().create(
                        message_id=new.message_id,
                        recipients=list(new.to),
                        subject=new.subject,
                        text=new.text,
                        mailbox=new.mailbox,
                        kind=new.kind,
                        ticket_id=new.ticket_id,
                        html=new.html,
                        in_reply_to=new.in_reply_to,
                        references=list(new.references),
                        auto_submitted=new.auto_submitted,
                        status=OutboxStatus.PENDING.value,
                        created_at=now,
                    )
            except IntegrityError:
                raise RepositoryError(
                    f"outgoing Message-ID already queued: {new.message_id!r}"
                ) from None
            m.OutboxRecipient.objects.using(self._using).bulk_create(
                [
                    m.OutboxRecipient(
                        address=address, created_at=now, outbox=row, ticket_id=new.ticket_id
                    )
                    for address in dict.fromkeys(map(address_key, new.to))
                ]
            )
        return outbox_mail(row)

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        """Pending emails whose next attempt is due (or never tried), oldest first."""
        check_page(limit, 0)
        with self._reading():
            rows = list(self._outbox().filter(_due(to_utc(now))).order_by("id")[:limit])
        return [outbox_mail(row) for row in rows]

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        """Claim due pending emails for ``owner`` until ``now + lease``; return them, oldest first.

        Mail another owner claimed until after ``now`` is passed over, so two claimers never
        receive the same email: PostgreSQL locks the rows chosen and skips those another
        claimer has locked; SQLite runs the whole claim under its one write lock.
        """
        check_page(limit, 0)
        start = to_utc(now)
        until = start + lease
        free = Q(claimed_by__isnull=True) | Q(claimed_by=owner) | Q(claimed_until__lte=start)
        with self._writing():
            chosen = list(
                self._outbox()
                .select_for_update(skip_locked=True)
                .filter(_due(start) & free)
                .order_by("id")
                .values_list("id", flat=True)[:limit]
            )
            if not chosen:
                return []
            # The conditions again: a row claimed since the SELECT (SQLite has no row
            # locks to skip) is not taken from its new owner.
            self._outbox().filter(Q(pk__in=chosen) & _due(start) & free).update(
                claimed_by=owner, claimed_until=until
            )
            rows = list(
                self._outbox()
                .filter(pk__in=chosen, claimed_by=owner, claimed_until=until)
                .order_by("id")
            )
        return [outbox_mail(row) for row in rows]

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        """Record a delivery attempt: ``sent``, ``failed`` for good, or still ``pending``
        with the time of the next attempt. Each call counts one attempt and clears the claim.

        Raises:
            RepositoryError: When there is no outgoing email with this id.
        """
        changes: dict[str, Any] = {
            "status": status.value,
            "attempts": F("attempts") + 1,
            "last_error": error,
            "next_attempt_at": None if next_attempt_at is None else to_utc(next_attempt_at),
            "claimed_by": None,
            "claimed_until": None,
        }
        if status is OutboxStatus.SENT:
            changes["sent_at"] = self._now()
        with self._writing():
            if self._outbox().filter(pk=outbox_id).update(**changes) == 0:
                raise RepositoryError(f"outgoing email {outbox_id} does not exist")
            row = self._outbox().get(pk=outbox_id)
        return outbox_mail(row)

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
        rows = self._outbox()
        if status is not None:
            rows = rows.filter(status=status.value)
        if ticket_id is not None:
            rows = rows.filter(ticket_id=ticket_id)
        with self._reading():
            listed = list(rows.order_by("-id")[offset : offset + limit])
        return [outbox_mail(row) for row in listed]

    def retry_outgoing(
        self, now: dt.datetime, *, ids: Sequence[int] | None = None
    ) -> Sequence[OutboxMail]:
        """Make failed and pending emails due at ``now`` again (attempts 0, no claim);
        sent mail is never touched."""
        start = to_utc(now)
        rows = self._outbox().exclude(status=OutboxStatus.SENT.value)
        if ids is not None:
            rows = rows.filter(pk__in=[int(i) for i in ids])
        with self._writing():
            chosen = list(rows.select_for_update().values_list("id", flat=True))
            self._outbox().filter(pk__in=chosen).update(
                status=OutboxStatus.PENDING.value,
                attempts=0,
                next_attempt_at=start,
                claimed_by=None,
                claimed_until=None,
            )
            changed = list(self._outbox().filter(pk__in=chosen).order_by("id"))
        return [outbox_mail(row) for row in changed]

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """How many emails (any status) were queued to ``to`` (one of their recipients,
        compared case-insensitively) at or after ``since``, for one ticket when given."""
        rows = m.OutboxRecipient.objects.using(self._using).filter(
            address=address_key(to), created_at__gte=to_utc(since)
        )
        if ticket_id is not None:
            rows = rows.filter(ticket_id=ticket_id)
        with self._reading():
            return int(rows.count())
