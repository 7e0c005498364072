"""The optional :class:`~halomail.tickets.repository.LedgerRetention`: old dedupe records
forgotten, and a record seen again kept."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pytest

from halomail.testing._constants import HOUR, T0
from halomail.tickets.models import DedupeRecord
from halomail.tickets.repository import IngestLedger, LedgerRetention, Transactional

__all__ = ["LedgerRetentionContract", "RetentionRepository"]

DAY = 24 * HOUR


class RetentionRepository(LedgerRetention, IngestLedger, Transactional, Protocol):
    """**Protocol:** what :class:`LedgerRetentionContract` reads: dedupe records, their
    retention, in transactions.

    .. versionadded:: 0.3.0
    """


class LedgerRetentionContract:
    """The optional :class:`~halomail.tickets.repository.LedgerRetention` role.

    Not part of :class:`~halomail.testing.TicketRepositoryContract` (the role is
    optional): subclass it too, with the same ``repository`` fixture, when your
    repository forgets old ledger rows. Every case writes dedupe records and state only,
    so the counts ``purge_ledger`` returns are theirs.

    .. versionadded:: 0.3.0
    """

    NEW = "Support\x1fid:new@customer.example"
    OLD = "Support\x1fid:old@customer.example"
    COPY = "\x1fcopy\x1f" + "ab" * 32
    IMPORTED = "Archive\x1fid:old@archive.example"

    @staticmethod
    def record(repository: RetentionRepository, key: str, at: dt.datetime) -> None:
        """Record ``key`` as handled at ``at``, in a transaction of its own."""
        with repository.transaction():
            repository.record_dedupe(DedupeRecord(key, "f" * 64, "created", 1, at))

    def test_records_older_than_before_go_and_the_others_stay(
        self, repository: RetentionRepository
    ) -> None:
        """A record 40 days old goes (a copy key too), one 10 days old stays, and one
        under a ``keep`` prefix stays at any age; the count returned is what went."""
        self.record(repository, self.OLD, T0 - 40 * DAY)
        self.record(repository, self.COPY, T0 - 40 * DAY)
        self.record(repository, self.NEW, T0 - 10 * DAY)
        self.record(repository, self.IMPORTED, T0 - 400 * DAY)
        assert repository.purge_ledger(before=T0 - 30 * DAY, keep=("Archive\x1f",)) == 2
        assert repository.get_dedupe(self.OLD) is None
        assert repository.get_dedupe(self.COPY) is None
        assert repository.get_dedupe(self.NEW) is not None
        assert repository.get_dedupe(self.IMPORTED) is not None
        assert repository.purge_ledger(before=T0 - 30 * DAY, keep=("Archive\x1f",)) == 0

    def test_a_record_seen_again_counts_from_then_and_never_back(
        self, repository: RetentionRepository
    ) -> None:
        """Touched five days ago, a 40-day-old record survives a 30-day purge; a touch
        earlier than its time changes nothing; a key with no record stays unrecorded."""
        self.record(repository, self.OLD, T0 - 40 * DAY)
        with repository.transaction():
            repository.touch_dedupe(self.OLD, now=T0 - 5 * DAY)
            repository.touch_dedupe(self.OLD, now=T0 - 20 * DAY)
            repository.touch_dedupe(self.NEW, now=T0)
        assert repository.purge_ledger(before=T0 - 30 * DAY) == 0
        seen = repository.get_dedupe(self.OLD)
        assert seen is not None
        assert seen.created_at == T0 - 5 * DAY
        assert (seen.outcome, seen.ticket_id) == ("created", 1)
        assert repository.get_dedupe(self.NEW) is None

    def test_a_touch_takes_part_in_the_transaction(self, repository: RetentionRepository) -> None:
        """A touch in a transaction that fails is undone: the record is as old as before."""
        self.record(repository, self.OLD, T0 - 40 * DAY)

        def failing_email() -> None:
            with repository.transaction():
                repository.touch_dedupe(self.OLD, now=T0)
                raise RuntimeError("the email failed")

        with pytest.raises(RuntimeError, match="the email failed"):
            failing_email()
        assert repository.purge_ledger(before=T0 - 30 * DAY) == 1

    def test_a_purge_takes_at_most_its_limit(self, repository: RetentionRepository) -> None:
        """Seven old records and a limit of five: five go, then the other two."""
        for n in range(7):
            self.record(repository, f"Support\x1fid:{n}@customer.example", T0 - 40 * DAY)
        assert repository.purge_ledger(before=T0 - 30 * DAY, limit=5) == 5
        assert repository.purge_ledger(before=T0 - 30 * DAY, limit=5) == 2

    def test_a_naive_time_is_refused(self, repository: RetentionRepository) -> None:
        """Both methods raise ValueError for a naive datetime, as every method with a time."""
        with pytest.raises(ValueError, match="naive"):
            repository.purge_ledger(before=dt.datetime(2024, 5, 1, 2))
        with pytest.raises(ValueError, match="naive"):
            repository.touch_dedupe(self.OLD, now=dt.datetime(2024, 5, 1, 2))

    def test_expired_loop_counts_and_send_marks_go_and_other_state_stays(
        self, repository: RetentionRepository
    ) -> None:
        """A loop count whose window began 40 days ago and a cloud send begun 40 days ago
        go; yesterday's stay, and so do state rows of other kinds (a mailbox's start, an
        undeliverable mark) and a timed row whose value holds no time."""
        old, recent = (T0 - 40 * DAY).isoformat(), (T0 - DAY).isoformat()
        rows = {
            "loop:" + "ab" * 32: f"3 {old}",
            "loop:" + "cd" * 32: f"1 {recent}",
            "loop:" + "ef" * 32: "unreadable",
            "outbox-sending:<ack-1@helpdesk.example>": old,
            "outbox-sending:<ack-2@helpdesk.example>": recent,
            "mailbox:Support:start": old,
            "undeliverable:alice@customer.example": f"{old} permanent",
        }
        with repository.transaction():
            for key, value in rows.items():
                repository.set_state(key, value)
        assert repository.purge_ledger(before=T0 - 30 * DAY) == 2
        left = {key for key in rows if repository.get_state(key) is not None}
        assert left == set(rows) - {"loop:" + "ab" * 32, "outbox-sending:<ack-1@helpdesk.example>"}
