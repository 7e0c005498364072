"""Contract tests for the optional :class:`~halomail.tickets.repository.GroupCommit`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pytest

from halomail.errors import DuplicateKeyError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR, T0
from halomail.tickets.models import BatchKeys, DedupeRecord
from halomail.tickets.repository import AttemptLedger, GroupCommit

__all__ = ["GroupCommitContract", "GroupCommitRepository"]

_STRANGER = "dave@nowhere.example"


class GroupCommitRepository(CompleteRepository, AttemptLedger, GroupCommit, Protocol):
    """**Protocol:** what :class:`GroupCommitContract` reads: a complete repository that
    keeps attempts and answers batches.

    .. versionadded:: 0.1.0
    """


def _keys(repository: GroupCommitRepository) -> BatchKeys:
    """The questions of a batch from alice, bob and a stranger, counted from a day ago."""
    del repository
    return BatchKeys(
        dedupe=("Support\x1fid:known", "Support\x1fid:new"),
        state=("loop:known", "loop:new"),
        senders=("Alice@Customer.example", "bob@partner.example", _STRANGER),
        since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
    )


class GroupCommitContract(ContractBase):
    """The optional :class:`~halomail.tickets.repository.GroupCommit`: a batch's answers
    are the answers without it, its writes are the transaction's.

    Not part of :class:`~halomail.testing.TicketRepositoryContract` (the role is
    optional): subclass it too, with the same ``repository`` fixture, when your
    repository answers batches. It needs the attempt ledger and the ``seed`` hook.

    .. versionadded:: 0.1.0
    """

    def _answers(self, repository: GroupCommitRepository) -> tuple[object, ...]:
        day = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        return (
            repository.get_dedupe("Support\x1fid:known"),
            repository.get_dedupe("Support\x1fid:new"),
            repository.get_state("loop:known"),
            repository.get_state("loop:new"),
            repository.count_outgoing(to="ALICE@customer.example", since=day),
            repository.count_outgoing(to=_STRANGER, since=day),
            repository.find_user("alice@customer.example"),
            repository.find_customer("bob@partner.example"),
            repository.find_user(_STRANGER),
            repository.find_customer(_STRANGER),
        )

    def _seeded(self, repository: GroupCommitRepository) -> None:
        self._people(repository)
        with repository.transaction():
            repository.record_dedupe(DedupeRecord("Support\x1fid:known", "f" * 64, "created", 1))
            repository.set_state("loop:known", "1 2024-05-01T02:00:00+00:00")
            repository.enqueue_outgoing(self.new_outgoing("ack-1@helpdesk.example"))

    def test_a_prepared_batch_answers_as_the_repository_does_without_it(
        self, repository: GroupCommitRepository
    ) -> None:
        """Dedupe records, state, counts of outgoing mail and people: the same answers."""
        self._seeded(repository)
        with repository.transaction():
            plain = self._answers(repository)
        with repository.transaction():
            repository.prepare_batch(_keys(repository))
            prepared = self._answers(repository)
        assert prepared == plain
        assert plain[0] is not None
        assert (plain[1], plain[4]) == (None, 1)

    def test_a_batch_sees_its_own_writes_and_commits_them(
        self, repository: GroupCommitRepository
    ) -> None:
        """What a prepared transaction writes it reads back, and its commit keeps it all."""
        self._seeded(repository)
        day = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        with repository.transaction():
            repository.prepare_batch(_keys(repository))
            repository.record_dedupe(DedupeRecord("Support\x1fid:new", "e" * 64, "created", 2))
            repository.set_state("loop:new", "1 now")
            repository.enqueue_outgoing(
                self.new_outgoing("ack-2@helpdesk.example", to=(_STRANGER,))
            )
            repository.finish_attempt("Support\x1fattempt:none")
            inside = (
                repository.get_dedupe("Support\x1fid:new"),
                repository.get_state("loop:new"),
                repository.count_outgoing(to=_STRANGER, since=day),
            )
        record = repository.get_dedupe("Support\x1fid:new")
        assert record is not None
        assert record.ticket_id == 2
        assert inside[0] == record
        assert inside[1:] == ("1 now", 1)
        assert repository.get_state("loop:new") == "1 now"
        assert repository.count_outgoing(to=_STRANGER, since=day) == 1

    def test_a_failed_batch_leaves_nothing(self, repository: GroupCommitRepository) -> None:
        """A prepared transaction that fails writes none of what it kept for its commit."""
        self._seeded(repository)

        def failing_batch() -> None:
            with repository.transaction():
                repository.prepare_batch(_keys(repository))
                repository.record_dedupe(DedupeRecord("Support\x1fid:new", "e" * 64, "created"))
                repository.set_state("loop:new", "1 now")
                raise RuntimeError("the batch failed")

        with pytest.raises(RuntimeError, match="the batch failed"):
            failing_batch()
        assert repository.get_dedupe("Support\x1fid:new") is None
        assert repository.get_state("loop:new") is None
        with repository.transaction():  # the next transaction starts clean
            repository.prepare_batch(_keys(repository))
            assert repository.get_dedupe("Support\x1fid:new") is None

    def test_a_key_recorded_twice_in_a_batch_is_refused(
        self, repository: GroupCommitRepository
    ) -> None:
        """A key recorded before, or earlier in the batch, raises DuplicateKeyError; nothing
        of that batch is kept when the error leaves it."""
        self._seeded(repository)

        def record(*keys: str) -> None:
            with repository.transaction():
                repository.prepare_batch(_keys(repository))
                for key in keys:
                    repository.record_dedupe(DedupeRecord(key, "e" * 64, "created"))

        with pytest.raises(DuplicateKeyError):
            record("Support\x1fid:known")
        with pytest.raises(DuplicateKeyError):
            record("Support\x1fid:new", "Support\x1fid:new")
        assert repository.get_dedupe("Support\x1fid:new") is None

    def test_begin_attempts_counts_as_begin_attempt_and_stops_after_the_first_earlier(
        self, repository: GroupCommitRepository
    ) -> None:
        """Fresh emails find 0; one with an unfinished attempt ends the list, and the
        emails behind it are not begun; an email twice finds its first attempt."""
        keys = [(f"Support\x1fattempt:{n}", f"Support\x1fcrash:{n}") for n in range(4)]
        repository.begin_attempt(keys[2][0], now=T0)
        with repository.transaction():
            assert repository.begin_attempts(keys, now=T0 + HOUR) == [0, 0, 1]
        assert repository.begin_attempt(keys[3][0], now=T0) == 0  # never begun
        assert repository.begin_attempt(keys[2][0], now=T0) == 2
        twice = [keys[0], (f"Support\x1fattempt:{9}", "c"), (f"Support\x1fattempt:{9}", "c")]
        with repository.transaction():
            repository.finish_attempt(keys[0][0])
        with repository.transaction():
            assert repository.begin_attempts(twice, now=T0) == [0, 0, 1]
        assert repository.begin_attempt(twice[1][0], now=T0) == 2

    def test_begin_attempts_answers_none_for_an_email_quarantined_as_crashed(
        self, repository: GroupCommitRepository
    ) -> None:
        """An email whose repeated-crash key is recorded gets no attempt and ends the list."""
        keys = [(f"Support\x1fattempt:{n}", f"Support\x1fcrash:{n}") for n in range(3)]
        with repository.transaction():
            repository.record_dedupe(DedupeRecord(keys[1][1], "", "quarantined"))
        with repository.transaction():
            assert repository.begin_attempts(keys, now=T0) == [0, None]
        assert repository.begin_attempt(keys[1][0], now=T0) == 0
        assert repository.begin_attempt(keys[2][0], now=T0) == 0

    def test_a_naive_time_is_refused(self, repository: GroupCommitRepository) -> None:
        """begin_attempts raises ValueError for a naive datetime."""
        with repository.transaction(), pytest.raises(ValueError, match="naive"):
            repository.begin_attempts([("a", "b")], now=dt.datetime(2024, 5, 1, 2))
