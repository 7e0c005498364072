"""The Django repository's ledger (dedupe keys, quarantine, state, leases, attempts) and
service log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import StrIndex, Substr

from halomail.contrib.django import models as m
from halomail.contrib.django._base import DjangoBase, aware, payload
from halomail.errors import DuplicateKeyError
from halomail.tickets._common import TIMED_STATE_PREFIXES, check_page, to_utc
from halomail.tickets.models import (
    DedupeRecord,
    NewQuarantine,
    NewServiceStatus,
    QuarantineEntry,
    ServiceStatus,
    ServiceStatusEntry,
)

__all__ = ["LedgerPart", "quarantine_entry"]


def quarantine_entry(row: m.QuarantineEntry) -> QuarantineEntry:
    """The halomail quarantine entry a row holds, bytes included."""
    return QuarantineEntry(
        id=row.pk,
        mailbox=row.mailbox,
        reason=row.reason,
        raw=payload(row.raw),
        created_at=aware(row.created_at),
        detail=row.detail,
        message_id=row.message_id,
        dedupe_key=row.dedupe_key,
    )


def _service_status(row: m.ServiceStatus) -> ServiceStatusEntry:
    return ServiceStatusEntry(
        id=row.pk,
        service=row.service,
        status=ServiceStatus(row.status),
        at=aware(row.at),
        detail=row.detail,
        ticket_id=row.ticket_id,
        message_id=row.message_id,
    )


def _timed_state(using: str, cutoff: dt.datetime) -> QuerySet[m.State]:
    """The timed state rows (``TIMED_STATE_PREFIXES``) whose time is before ``cutoff``:
    the text after the value's first space (or the whole value), compared as stored."""
    prefixes = Q()
    for prefix in TIMED_STATE_PREFIXES:
        prefixes |= Q(key__startswith=prefix)
    stamp = Substr("value", StrIndex("value", Value(" ")) + 1)
    return (
        m.State.objects.using(using)
        .filter(prefixes)
        .annotate(stamp=stamp)
        .filter(stamp__lt=cutoff.isoformat(timespec="microseconds"))
    )


def _delete_first(rows: QuerySet[Any], limit: int) -> int:
    """Delete at most ``limit`` of ``rows`` (in no order); returns how many went."""
    ids = list(rows.order_by().values_list("pk", flat=True)[:limit])
    return int(rows.model.objects.using(rows.db).filter(pk__in=ids).delete()[0])


class LedgerPart(DjangoBase):
    """Dedupe keys, quarantine, state, leases, attempts and the service log."""

    # -- exactly once ----------------------------------------------------------

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record for a dedupe key, or ``None`` if the email was never handled."""
        with self._reading():
            row = m.DedupeRecord.objects.using(self._using).filter(key=key).first()
        if row is None:
            return None
        return DedupeRecord(row.key, row.sha256, row.outcome, row.ticket_id, aware(row.created_at))

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record that an email was handled.

        Raises:
            DuplicateKeyError: When the key is already recorded (the record there is kept,
                and the transaction stays usable: the caller decides to roll it back).
        """
        with self._writing():
            try:
                # A savepoint: on PostgreSQL a failed INSERT would abort the transaction.
                with self._savepoint():
                    m.DedupeRecord.objects.using(self._using).create(
                        key=record.key,
                        sha256=record.sha256,
                        outcome=record.outcome,
                        ticket_id=record.ticket_id,
                        created_at=to_utc(record.created_at),
                    )
            except IntegrityError:
                raise DuplicateKeyError(
                    f"dedupe key already recorded: {record.key[:200]!r}"
                ) from None

    def touch_dedupe(self, key: str, *, now: dt.datetime) -> None:
        """Mark the dedupe record ``key`` seen at ``now`` (its email was fetched again)."""
        seen = to_utc(now)
        with self._writing():
            m.DedupeRecord.objects.using(self._using).filter(key=key, created_at__lt=seen).update(
                created_at=seen
            )

    def purge_ledger(
        self, *, before: dt.datetime, keep: Sequence[str] = (), limit: int = 10_000
    ) -> int:
        """Forget at most ``limit`` rows a table older than ``before``: dedupe records
        neither written nor seen since (but those under a ``keep`` prefix), attempts,
        the sent-mail rows the sending limits count, and the timed state rows (loop
        counts, cloud send marks). Committed on its own."""
        cutoff = to_utc(before)
        using = self._using
        dedupe = m.DedupeRecord.objects.using(using).filter(created_at__lt=cutoff)
        for prefix in keep:
            dedupe = dedupe.exclude(key__startswith=prefix)
        old: tuple[QuerySet[Any], ...] = (
            dedupe,
            m.Attempt.objects.using(using).filter(last_at__lt=cutoff),
            m.OutboxRecipient.objects.using(using).filter(created_at__lt=cutoff),
            _timed_state(using, cutoff),
        )
        with self._writing():
            return sum(_delete_first(rows, limit) for rows in old)

    # -- the quarantine ------------------------------------------------------------

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, with its reason and bytes."""
        now = self._now()
        with self._writing():
            row = m.QuarantineEntry.objects.using(self._using).create(
                mailbox=new.mailbox,
                reason=new.reason,
                raw=new.raw,
                created_at=now,
                detail=new.detail,
                message_id=new.message_id,
                dedupe_key=new.dedupe_key,
            )
        return QuarantineEntry(
            id=row.pk,
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
        with self._reading():
            rows = list(
                m.QuarantineEntry.objects.using(self._using).order_by("-id")[
                    offset : offset + limit
                ]
            )
        return [quarantine_entry(row) for row in rows]

    def get_quarantine(self, quarantine_id: int) -> QuarantineEntry | None:
        """The quarantined email with this id, its bytes included, or ``None``."""
        with self._reading():
            row = m.QuarantineEntry.objects.using(self._using).filter(pk=quarantine_id).first()
        return None if row is None else quarantine_entry(row)

    def delete_quarantine(self, quarantine_id: int) -> bool:
        """Forget a quarantined email and its bytes (its dedupe record stays)."""
        with self._writing():
            deleted, _ = (
                m.QuarantineEntry.objects.using(self._using).filter(pk=quarantine_id).delete()
            )
        return bool(deleted)

    # -- monitored services ------------------------------------------------------

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        """Add a status to a monitored service's history.

        Raises:
            ValueError: When ``new.at`` is naive.
        """
        at = to_utc(new.at)
        with self._writing():
            row = m.ServiceStatus.objects.using(self._using).create(
                service=new.service,
                status=new.status.value,
                at=at,
                detail=new.detail,
                ticket_id=new.ticket_id,
                message_id=new.message_id,
            )
        return ServiceStatusEntry(
            id=row.pk,
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
        with self._reading():
            rows = list(
                m.ServiceStatus.objects.using(self._using)
                .filter(service=service)
                .order_by("-at", "-id")[:limit]
            )
        return [_service_status(row) for row in rows]

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        """The newest status of a service, or ``None``."""
        history = self.service_history(service, limit=1)
        return history[0] if history else None

    # -- small persistent state --------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A value the processor keeps between runs, or ``None``."""
        with self._reading():
            value = (
                m.State.objects.using(self._using)
                .filter(key=key)
                .values_list("value", flat=True)
                .first()
            )
        return None if value is None else str(value)

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs; written inside or outside a transaction."""
        states = m.State.objects.using(self._using)
        with self._writing():
            if states.filter(key=key).update(value=value):
                return
            try:
                with self._savepoint():
                    states.create(key=key, value=value)
            except IntegrityError:
                # Another process wrote the key between the two statements: ours is later.
                states.filter(key=key).update(value=value)

    # -- leases ------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take (or renew) the named lease for ``owner`` until ``now + ttl``.

        Returns:
            True when ``owner`` holds it now; False when another owner holds it until
            after ``now``.
        """
        start = to_utc(now)
        leases = m.Lease.objects.using(self._using)
        with self._writing():
            # The conditional UPDATE takes a lease that is ours or expired; PostgreSQL
            # checks the condition again on the newest row when another writer held it.
            taken = leases.filter(Q(owner=owner) | Q(held_until__lte=start), name=name).update(
                owner=owner, held_until=start + ttl
            )
            if taken:
                return True
            try:
                with self._savepoint():
                    leases.create(name=name, owner=owner, held_until=start + ttl)
            except IntegrityError:
                return False  # someone else holds it (or took it a moment ago)
        return True

    def release_lease(self, name: str, owner: str) -> None:
        """Free the named lease if ``owner`` holds it; otherwise change nothing."""
        with self._writing():
            m.Lease.objects.using(self._using).filter(name=name, owner=owner).delete()

    # -- attempts ----------------------------------------------------------------

    def begin_attempt(self, key: str, *, now: dt.datetime) -> int:
        """Record that processing the email ``key`` starts; return the unfinished earlier ones.

        Outside a transaction it is committed on its own, before the email is parsed.
        """
        stamp = to_utc(now)
        attempts = m.Attempt.objects.using(self._using)
        with self._writing():
            if not attempts.filter(key=key).update(count=F("count") + 1, last_at=stamp):
                try:
                    with self._savepoint():
                        attempts.create(key=key, count=1, first_at=stamp, last_at=stamp)
                    return 0
                except IntegrityError:
                    attempts.filter(key=key).update(count=F("count") + 1, last_at=stamp)
            count = attempts.filter(key=key).values_list("count", flat=True).get()
        return int(count) - 1

    def finish_attempt(self, key: str) -> None:
        """Forget the attempts of ``key`` (inside the transaction that commits its outcome)."""
        with self._writing():
            m.Attempt.objects.using(self._using).filter(key=key).delete()
