"""The :class:`~halomail.OutboxStore` role: queueing, claiming and marking outgoing mail."""

from __future__ import annotations

import datetime as dt

import pytest

from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR, MICROSECOND, T0
from halomail.tickets.models import (
    NewOutgoing,
    OutboxStatus,
    utcnow,
)

__all__ = ["OutboxStoreContract"]


class OutboxStoreContract(ContractBase):
    """The :class:`~halomail.OutboxStore` role: queueing, claiming and marking outgoing mail.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_enqueue_outgoing_round_trips_every_field_as_pending(
        self, repository: CompleteRepository
    ) -> None:
        """A queued email reads back with every field, pending, with no attempt and no sent time."""
        ticket = repository.create_ticket(self.new_ticket())
        mail = repository.enqueue_outgoing(
            NewOutgoing(
                message_id="upd-1@helpdesk.example",
                to=("alice@customer.example", "bob@customer.example"),
                subject="[ID:1] Re: Printer — fixed",
                text="Fixed.\r\n-- \r\nSupport",
                mailbox="Support",
                kind="update",
                ticket_id=ticket.id,
                html="<p>Fixed.</p>",
                in_reply_to="in-1@customer.example",
                references=("in-0@customer.example", "in-1@customer.example"),
                auto_submitted=False,
            )
        )
        assert mail.status is OutboxStatus.PENDING
        assert (mail.attempts, mail.next_attempt_at, mail.last_error, mail.sent_at) == (
            0,
            None,
            None,
            None,
        )
        assert mail.created_at.utcoffset() == dt.timedelta(0)
        (due,) = repository.due_outgoing(utcnow() + HOUR)
        assert due == mail
        assert due.to == ("alice@customer.example", "bob@customer.example")
        assert due.references == ("in-0@customer.example", "in-1@customer.example")
        assert (due.html, due.in_reply_to, due.auto_submitted) == (
            "<p>Fixed.</p>",
            "in-1@customer.example",
            False,
        )
        assert (due.kind, due.mailbox, due.ticket_id) == ("update", "Support", ticket.id)

    def test_enqueue_outgoing_keeps_the_defaults(self, repository: CompleteRepository) -> None:
        """A queued email with only the required fields reads back with the model's defaults."""
        mail = repository.enqueue_outgoing(self.new_outgoing("min@helpdesk.example"))
        (due,) = repository.due_outgoing(utcnow() + HOUR)
        assert due == mail
        assert (due.html, due.in_reply_to, due.references, due.ticket_id) == (None, None, (), None)
        assert (due.kind, due.mailbox, due.auto_submitted) == ("acknowledgement", "", True)

    def test_due_outgoing_lists_never_tried_mail_oldest_first_up_to_the_limit(
        self, repository: CompleteRepository
    ) -> None:
        """Never-tried pending mail is due at once, listed oldest first, cut at the limit."""
        ids = [
            repository.enqueue_outgoing(self.new_outgoing(f"m{n}@h.example")).id for n in range(4)
        ]
        now = utcnow() + HOUR
        assert [m.id for m in repository.due_outgoing(now)] == ids
        assert [m.id for m in repository.due_outgoing(now, limit=2)] == ids[:2]
        assert list(repository.due_outgoing(now, limit=0)) == []

    def test_pending_mail_with_a_later_attempt_is_due_only_from_then(
        self, repository: CompleteRepository
    ) -> None:
        """Mail to retry later is not due before its next attempt time, and due from then on."""
        mail = repository.enqueue_outgoing(self.new_outgoing("retry@helpdesk.example"))
        retry_at = (utcnow() + HOUR).replace(microsecond=0)
        marked = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="421 try later", next_attempt_at=retry_at
        )
        assert marked.status is OutboxStatus.PENDING
        assert marked.next_attempt_at == retry_at
        assert marked.last_error == "421 try later"
        assert marked.attempts == 1
        assert list(repository.due_outgoing(utcnow())) == []
        assert list(repository.due_outgoing(retry_at - MICROSECOND)) == []
        assert [m.id for m in repository.due_outgoing(retry_at)] == [mail.id]
        (due,) = repository.due_outgoing(retry_at + HOUR)
        assert due == marked

    def test_due_outgoing_orders_retries_among_new_mail_by_age(
        self, repository: CompleteRepository
    ) -> None:
        """A retry that has come due is listed before newer mail, because it was queued first."""
        old = repository.enqueue_outgoing(self.new_outgoing("old@helpdesk.example"))
        new = repository.enqueue_outgoing(self.new_outgoing("new@helpdesk.example"))
        soon = utcnow() + dt.timedelta(minutes=5)
        repository.mark_outgoing(old.id, OutboxStatus.PENDING, error="busy", next_attempt_at=soon)
        assert [m.id for m in repository.due_outgoing(utcnow())] == [new.id]
        assert [m.id for m in repository.due_outgoing(soon + HOUR)] == [old.id, new.id]

    def test_sent_mail_is_not_due_and_records_when_it_was_sent(
        self, repository: CompleteRepository
    ) -> None:
        """Marking mail sent sets sent_at, counts the attempt and takes it out of the due list."""
        mail = repository.enqueue_outgoing(self.new_outgoing("sent@helpdesk.example"))
        before = mail.created_at
        sent = repository.mark_outgoing(mail.id, OutboxStatus.SENT)
        assert sent.status is OutboxStatus.SENT
        assert sent.attempts == 1
        assert sent.sent_at is not None
        assert sent.sent_at >= before
        assert sent.sent_at.utcoffset() == dt.timedelta(0)
        assert list(repository.due_outgoing(utcnow() + HOUR)) == []

    def test_failed_mail_is_not_due_and_keeps_its_error(
        self, repository: CompleteRepository
    ) -> None:
        """Mail marked failed keeps its error, has no sent_at and is never due again."""
        mail = repository.enqueue_outgoing(self.new_outgoing("failed@helpdesk.example"))
        failed = repository.mark_outgoing(mail.id, OutboxStatus.FAILED, error="550 no such user")
        assert failed.status is OutboxStatus.FAILED
        assert failed.last_error == "550 no such user"
        assert failed.sent_at is None
        assert failed.attempts == 1
        assert list(repository.due_outgoing(utcnow() + HOUR * 24 * 365)) == []

    def test_mark_outgoing_counts_each_attempt(self, repository: CompleteRepository) -> None:
        """Two transient failures and a success make three attempts, and the mail ends sent."""
        mail = repository.enqueue_outgoing(self.new_outgoing("flaky@helpdesk.example"))
        past = utcnow() - HOUR
        first = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="e1", next_attempt_at=past
        )
        second = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="e2", next_attempt_at=past
        )
        assert (first.attempts, second.attempts, second.last_error) == (1, 2, "e2")
        (due,) = repository.due_outgoing(utcnow())
        assert due.attempts == 2
        final = repository.mark_outgoing(mail.id, OutboxStatus.SENT)
        assert (final.attempts, final.status) == (3, OutboxStatus.SENT)
        assert final.message_id == "flaky@helpdesk.example"

    def test_count_outgoing_counts_mail_queued_since_a_time(
        self, repository: CompleteRepository
    ) -> None:
        """The count includes mail queued at or after `since`, not mail queued before it."""
        first = repository.enqueue_outgoing(self.new_outgoing("c1@helpdesk.example"))
        self.wait_for_the_clock()
        second = repository.enqueue_outgoing(self.new_outgoing("c2@helpdesk.example"))
        assert second.created_at > first.created_at
        to = "alice@customer.example"
        assert repository.count_outgoing(to=to, since=first.created_at - HOUR) == 2
        assert repository.count_outgoing(to=to, since=first.created_at) == 2
        assert repository.count_outgoing(to=to, since=first.created_at + MICROSECOND) == 1
        assert repository.count_outgoing(to=to, since=second.created_at) == 1
        assert repository.count_outgoing(to=to, since=second.created_at + MICROSECOND) == 0

    def test_count_outgoing_ignores_case_and_finds_any_recipient(
        self, repository: CompleteRepository
    ) -> None:
        """An address counts in any case and among several recipients; other addresses do not."""
        repository.enqueue_outgoing(
            self.new_outgoing("c1@h.example", to=("Alice@Customer.Example", "bob@customer.example"))
        )
        repository.enqueue_outgoing(
            self.new_outgoing("c2@h.example", to=("carol@customer.example",))
        )
        since = utcnow() - HOUR
        assert repository.count_outgoing(to="alice@customer.example", since=since) == 1
        assert repository.count_outgoing(to="ALICE@CUSTOMER.EXAMPLE", since=since) == 1
        assert repository.count_outgoing(to="bob@customer.example", since=since) == 1
        assert repository.count_outgoing(to="carol@customer.example", since=since) == 1
        assert repository.count_outgoing(to="dave@customer.example", since=since) == 0

    def test_count_outgoing_matches_whole_addresses_only(
        self, repository: CompleteRepository
    ) -> None:
        """An address that is part of another (ob@ in bob@) is not counted for it."""
        repository.enqueue_outgoing(self.new_outgoing("c1@h.example", to=("bob@customer.example",)))
        since = utcnow() - HOUR
        assert repository.count_outgoing(to="ob@customer.example", since=since) == 0
        assert repository.count_outgoing(to="bob@customer.exampl", since=since) == 0

    def test_count_outgoing_counts_mail_in_every_status(
        self, repository: CompleteRepository
    ) -> None:
        """Sent, failed and pending mail all count: the throttle limits what was queued."""
        ids = [
            repository.enqueue_outgoing(self.new_outgoing(f"s{n}@h.example")).id for n in range(3)
        ]
        repository.mark_outgoing(ids[0], OutboxStatus.SENT)
        repository.mark_outgoing(ids[1], OutboxStatus.FAILED, error="550")
        assert repository.count_outgoing(to="alice@customer.example", since=utcnow() - HOUR) == 3

    def test_count_outgoing_for_one_ticket(self, repository: CompleteRepository) -> None:
        """With a ticket id, only that ticket's mail to the address counts."""
        one = repository.create_ticket(self.new_ticket())
        two = repository.create_ticket(self.new_ticket())
        repository.enqueue_outgoing(self.new_outgoing("t1@h.example", ticket_id=one.id))
        repository.enqueue_outgoing(self.new_outgoing("t2@h.example", ticket_id=one.id))
        repository.enqueue_outgoing(self.new_outgoing("t3@h.example", ticket_id=two.id))
        repository.enqueue_outgoing(self.new_outgoing("t4@h.example"))
        since = utcnow() - HOUR
        to = "alice@customer.example"
        assert repository.count_outgoing(to=to, since=since) == 4
        assert repository.count_outgoing(to=to, since=since, ticket_id=one.id) == 2
        assert repository.count_outgoing(to=to, since=since, ticket_id=two.id) == 1
        assert repository.count_outgoing(to=to, since=since, ticket_id=two.id + 1000) == 0

    # -- claims ----------------------------------------------------------------------

    def _queue(self, repository: CompleteRepository, count: int) -> list[int]:
        return [repository.enqueue_outgoing(self.new_outgoing(f"c{n}@x")).id for n in range(count)]

    def test_claim_outgoing_returns_due_mail_oldest_first_up_to_the_limit(
        self, repository: CompleteRepository
    ) -> None:
        """A claim returns never-tried pending mail, oldest first, at most ``limit``."""
        ids = self._queue(repository, 3)
        now = utcnow() + HOUR
        claimed = repository.claim_outgoing(now, owner="a", lease=HOUR, limit=2)
        assert [m.id for m in claimed] == ids[:2]
        assert all(m.status is OutboxStatus.PENDING for m in claimed)
        assert [m.message_id for m in claimed] == ["c0@x", "c1@x"]

    def test_two_claimers_never_receive_the_same_mail(self, repository: CompleteRepository) -> None:
        """A second owner receives only what the first did not claim, until the lease ends."""
        ids = self._queue(repository, 3)
        now = utcnow() + HOUR
        first = repository.claim_outgoing(now, owner="a", lease=HOUR, limit=2)
        second = repository.claim_outgoing(now, owner="b", lease=HOUR)
        assert [m.id for m in first] == ids[:2]
        assert [m.id for m in second] == ids[2:]
        assert list(repository.claim_outgoing(now + HOUR / 2, owner="c", lease=HOUR)) == []

    def test_an_expired_claim_is_taken_over(self, repository: CompleteRepository) -> None:
        """Mail claimed by a runner that died is claimed by another once the lease ran out."""
        ids = self._queue(repository, 2)
        now = utcnow() + HOUR
        repository.claim_outgoing(now, owner="dead", lease=HOUR)
        assert (
            list(repository.claim_outgoing(now + HOUR - MICROSECOND, owner="b", lease=HOUR)) == []
        )
        taken = repository.claim_outgoing(now + HOUR, owner="b", lease=HOUR)
        assert [m.id for m in taken] == ids

    def test_the_owner_claims_its_own_mail_again(self, repository: CompleteRepository) -> None:
        """An owner's next claim returns the mail it holds but did not mark yet."""
        ids = self._queue(repository, 2)
        now = utcnow() + HOUR
        repository.claim_outgoing(now, owner="a", lease=HOUR)
        assert [m.id for m in repository.claim_outgoing(now, owner="a", lease=HOUR)] == ids

    def test_marking_clears_the_claim(self, repository: CompleteRepository) -> None:
        """Sent or failed mail is never claimed again; a retry is claimable by anyone when due."""
        sent, failed, retry = self._queue(repository, 3)
        now = utcnow() + HOUR
        repository.claim_outgoing(now, owner="a", lease=HOUR * 24)
        repository.mark_outgoing(sent, OutboxStatus.SENT)
        repository.mark_outgoing(failed, OutboxStatus.FAILED, error="550 no such user")
        retry_at = now + HOUR
        repository.mark_outgoing(retry, OutboxStatus.PENDING, error="421", next_attempt_at=retry_at)
        assert list(repository.claim_outgoing(retry_at - MICROSECOND, owner="b", lease=HOUR)) == []
        (again,) = repository.claim_outgoing(retry_at, owner="b", lease=HOUR)
        assert (again.id, again.attempts, again.last_error) == (retry, 1, "421")

    def test_a_claim_in_a_rolled_back_transaction_is_not_kept(
        self, repository: CompleteRepository
    ) -> None:
        """A claim made inside a transaction that fails leaves the mail claimable."""
        ids = self._queue(repository, 1)
        now = T0 + HOUR * 24 * 365 * 100  # after anything utcnow() could have queued

        def failing_pass() -> None:
            with repository.transaction():
                assert [m.id for m in repository.claim_outgoing(now, owner="a", lease=HOUR)] == ids
                raise RuntimeError("the pass failed")

        with pytest.raises(RuntimeError, match="the pass failed"):
            failing_pass()
        assert [m.id for m in repository.claim_outgoing(now, owner="b", lease=HOUR)] == ids
