"""The :class:`~halomail.IngestLedger` role: dedupe keys, quarantine, state and leases;
and the optional :class:`~halomail.tickets.repository.AttemptLedger`."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pytest

from halomail.errors import DuplicateKeyError, RepositoryError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR, MICROSECOND, T0
from halomail.tickets.models import (
    DedupeRecord,
    NewQuarantine,
)
from halomail.tickets.repository import AttemptLedger, Transactional

__all__ = ["AttemptLedgerContract", "AttemptRepository", "IngestLedgerContract"]


class IngestLedgerContract(ContractBase):
    """The :class:`~halomail.IngestLedger` role: dedupe keys, quarantine, state and leases.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_get_dedupe_of_an_unknown_key_is_none(self, repository: CompleteRepository) -> None:
        """A key never recorded reads back None."""
        assert repository.get_dedupe("Support\x1fid:never@x.example") is None

    def test_record_dedupe_round_trips_every_field(self, repository: CompleteRepository) -> None:
        """A dedupe record reads back with key, fingerprint, outcome, ticket id and time equal."""
        ticket = repository.create_ticket(self.new_ticket())
        when = dt.datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
        record = DedupeRecord("Support\x1fid:a@x.example", "ab" * 32, "created", ticket.id, when)
        repository.record_dedupe(record)
        repository.record_dedupe(DedupeRecord("Support\x1fsha256:00ff", "", "ignored", None, when))
        assert repository.get_dedupe(record.key) == record
        other = repository.get_dedupe("Support\x1fsha256:00ff")
        assert other is not None
        assert (other.ticket_id, other.outcome, other.sha256) == (None, "ignored", "")
        assert repository.get_dedupe("support\x1fid:a@x.example") is None

    def test_record_dedupe_of_a_recorded_key_raises_and_keeps_the_first(
        self, repository: CompleteRepository
    ) -> None:
        """Recording a key twice raises DuplicateKeyError, and the first record stays as it was."""
        first = DedupeRecord("Support\x1fid:dup@x.example", "1" * 64, "created", None)
        repository.record_dedupe(first)
        with pytest.raises(DuplicateKeyError):
            repository.record_dedupe(DedupeRecord(first.key, "2" * 64, "updated", None))
        stored = repository.get_dedupe(first.key)
        assert stored is not None
        assert (stored.sha256, stored.outcome) == ("1" * 64, "created")

    def test_quarantine_keeps_the_bytes_exactly_and_every_field(
        self, repository: CompleteRepository
    ) -> None:
        """A quarantined email keeps its raw bytes (CRLF, NUL, 8-bit) exactly, with its reason."""
        raw = b"From: x@y\r\nSubject: \xff\xfe\r\n\r\nbody\x00\x80\r\n.\r\n" + bytes(range(256))
        entry = repository.quarantine(
            NewQuarantine(
                "Support",
                "mime-too-deep",
                raw,
                detail="33 levels of nesting (limit 32)",
                message_id="deep@x.example",
                dedupe_key="Support\x1fid:deep@x.example",
            )
        )
        assert entry.raw == raw
        assert entry.created_at.utcoffset() == dt.timedelta(0)
        (listed,) = repository.list_quarantine()
        assert listed == entry
        assert listed.raw == raw
        assert (listed.mailbox, listed.reason, listed.detail) == (
            "Support",
            "mime-too-deep",
            "33 levels of nesting (limit 32)",
        )
        assert (listed.message_id, listed.dedupe_key) == (
            "deep@x.example",
            "Support\x1fid:deep@x.example",
        )

    def test_get_state_of_an_unknown_key_is_none(self, repository: CompleteRepository) -> None:
        """A key never set reads back None."""
        assert repository.get_state("never-set") is None

    def test_set_state_keeps_and_overwrites_a_value(self, repository: CompleteRepository) -> None:
        """A value set reads back; setting it again replaces it; other keys are untouched."""
        repository.set_state("mailbox:Support:start", "2024-05-01T00:00:00+00:00")
        repository.set_state("other", "")
        assert repository.get_state("mailbox:Support:start") == "2024-05-01T00:00:00+00:00"
        repository.set_state("mailbox:Support:start", '{"uids": [1, 2, 3]}')
        assert repository.get_state("mailbox:Support:start") == '{"uids": [1, 2, 3]}'
        assert repository.get_state("other") == ""

    def test_a_duplicate_key_in_a_transaction_rolls_back_and_the_repository_goes_on(
        self, repository: CompleteRepository
    ) -> None:
        """DuplicateKeyError inside a transaction undoes its writes; the next one commits."""
        key = "Support\x1fid:raced@x.example"
        repository.record_dedupe(DedupeRecord(key, "1" * 64, "created", None))

        def second_runner() -> None:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(summary="the second runner's ticket"))
                repository.record_dedupe(DedupeRecord(key, "1" * 64, "created", None))

        with pytest.raises(DuplicateKeyError):
            second_runner()
        assert list(repository.list_tickets()) == []
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket())
            repository.record_dedupe(DedupeRecord("other", "2" * 64, "created", ticket.id))
        assert [t.id for t in repository.list_tickets()] == [ticket.id]
        assert isinstance(DuplicateKeyError("x"), RepositoryError)

    # -- leases ----------------------------------------------------------------------

    def test_a_free_lease_is_taken_and_then_refused_to_another_owner(
        self, repository: CompleteRepository
    ) -> None:
        """The first owner takes a free lease; another owner is refused until it expires."""
        assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR) is True
        assert repository.acquire_lease("mailbox:Support", "b", now=T0, ttl=HOUR) is False
        later = T0 + HOUR - MICROSECOND
        assert repository.acquire_lease("mailbox:Support", "b", now=later, ttl=HOUR) is False
        assert repository.acquire_lease("mailbox:Other", "b", now=T0, ttl=HOUR) is True

    def test_an_expired_lease_is_taken_over(self, repository: CompleteRepository) -> None:
        """A lease held until ``now`` or earlier (its runner died) goes to the next owner."""
        assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR)
        assert repository.acquire_lease("mailbox:Support", "b", now=T0 + HOUR, ttl=HOUR)
        assert not repository.acquire_lease("mailbox:Support", "a", now=T0 + HOUR, ttl=HOUR)

    def test_the_holder_renews_its_lease(self, repository: CompleteRepository) -> None:
        """Acquiring a lease one holds extends it to ``now + ttl``."""
        assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR)
        assert repository.acquire_lease("mailbox:Support", "a", now=T0 + HOUR / 2, ttl=HOUR)
        # Held until T0 + 1.5 h now, not T0 + 1 h.
        assert not repository.acquire_lease("mailbox:Support", "b", now=T0 + HOUR, ttl=HOUR)
        assert repository.acquire_lease("mailbox:Support", "b", now=T0 + HOUR * 1.5, ttl=HOUR)

    def test_only_the_holder_releases_a_lease(self, repository: CompleteRepository) -> None:
        """release_lease by another owner changes nothing; by the holder it frees the lease."""
        assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR)
        repository.release_lease("mailbox:Support", "b")
        assert not repository.acquire_lease("mailbox:Support", "b", now=T0, ttl=HOUR)
        repository.release_lease("mailbox:Support", "a")
        assert repository.acquire_lease("mailbox:Support", "b", now=T0, ttl=HOUR)
        repository.release_lease("mailbox:never-taken", "a")

    def test_leases_work_inside_a_transaction_and_roll_back_with_it(
        self, repository: CompleteRepository
    ) -> None:
        """A lease taken in a transaction that fails is not kept; one that commits is."""

        def failing_email() -> None:
            with repository.transaction():
                assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR)
                raise RuntimeError("the email failed")

        with pytest.raises(RuntimeError, match="the email failed"):
            failing_email()
        assert repository.acquire_lease("mailbox:Support", "b", now=T0, ttl=HOUR)
        with repository.transaction():
            repository.release_lease("mailbox:Support", "b")
        assert repository.acquire_lease("mailbox:Support", "a", now=T0, ttl=HOUR)


class AttemptRepository(AttemptLedger, Transactional, Protocol):
    """**Protocol:** what :class:`AttemptLedgerContract` reads: attempts, in transactions.

    .. versionadded:: 0.1.0
    """


class AttemptLedgerContract:
    """The optional :class:`~halomail.tickets.repository.AttemptLedger`: unfinished attempts.

    Not part of :class:`~halomail.testing.TicketRepositoryContract` (the role is
    optional): subclass it too, with the same ``repository`` fixture, when your
    repository keeps attempts.

    .. versionadded:: 0.1.0
    """

    KEY = "Support\x1fattempt:" + "ab" * 32

    def test_begin_counts_the_attempts_never_finished(self, repository: AttemptRepository) -> None:
        """The first attempt finds none before it; each further one finds one more."""
        assert repository.begin_attempt(self.KEY, now=T0) == 0
        assert repository.begin_attempt(self.KEY, now=T0 + HOUR) == 1
        assert repository.begin_attempt(self.KEY, now=T0 + 2 * HOUR) == 2

    def test_finish_forgets_every_attempt_and_only_of_its_key(
        self, repository: AttemptRepository
    ) -> None:
        """After finish_attempt a key counts from zero again; other keys keep their count."""
        other = "Support\x1fattempt:" + "cd" * 32
        repository.begin_attempt(self.KEY, now=T0)
        repository.begin_attempt(self.KEY, now=T0)
        repository.begin_attempt(other, now=T0)
        repository.finish_attempt(self.KEY)
        repository.finish_attempt("Support\x1fattempt:never-begun")
        assert repository.begin_attempt(self.KEY, now=T0) == 0
        assert repository.begin_attempt(other, now=T0) == 1
        assert repository.begin_attempt(self.KEY.upper(), now=T0) == 0

    def test_an_attempt_begun_outside_a_transaction_is_kept_when_a_later_one_fails(
        self, repository: AttemptRepository
    ) -> None:
        """begin_attempt commits on its own: the email's failed transaction does not undo it."""
        repository.begin_attempt(self.KEY, now=T0)

        def failing_email() -> None:
            with repository.transaction():
                raise RuntimeError("the email failed")

        with pytest.raises(RuntimeError, match="the email failed"):
            failing_email()
        assert repository.begin_attempt(self.KEY, now=T0) == 1

    def test_finish_takes_part_in_the_transaction(self, repository: AttemptRepository) -> None:
        """finish_attempt in a transaction that fails is undone; in one that commits, kept."""
        repository.begin_attempt(self.KEY, now=T0)

        def failing_commit() -> None:
            with repository.transaction():
                repository.finish_attempt(self.KEY)
                raise RuntimeError("the commit failed")

        with pytest.raises(RuntimeError, match="the commit failed"):
            failing_commit()
        assert repository.begin_attempt(self.KEY, now=T0) == 1
        with repository.transaction():
            repository.finish_attempt(self.KEY)
        assert repository.begin_attempt(self.KEY, now=T0) == 0

    def test_a_naive_time_is_refused(self, repository: AttemptRepository) -> None:
        """begin_attempt raises ValueError for a naive datetime, as every method with a time."""
        with pytest.raises(ValueError, match="naive"):
            repository.begin_attempt(self.KEY, now=dt.datetime(2024, 5, 1, 2))
