"""The optional :class:`~halomail.tickets.repository.OutboxAdmin` role: listing and retrying."""

from __future__ import annotations

import datetime as dt

from halomail.testing._base import CompleteRepository, ContractBase
from halomail.tickets.models import OutboxStatus
from halomail.tickets.repository import OutboxAdmin

__all__ = ["OutboxAdminContract"]

_LEASE = dt.timedelta(minutes=5)


class OutboxAdminContract(ContractBase):
    """The optional :class:`~halomail.tickets.repository.OutboxAdmin` role.

    Not part of :class:`~halomail.testing.TicketRepositoryContract`: subclass it too
    when your repository implements the role (``halomail outbox`` needs it), with the
    same ``repository`` fixture.

    .. versionadded:: 0.1.0
    """

    def _queue(self, repository: CompleteRepository, count: int) -> list[int]:
        return [
            repository.enqueue_outgoing(self.new_outgoing(f"admin-{n}@helpdesk.example")).id
            for n in range(count)
        ]

    def test_list_outgoing_is_newest_first_and_filters_by_status(
        self, repository: CompleteRepository
    ) -> None:
        """Every status is listed newest first; a status narrows it; limit/offset page."""
        assert isinstance(repository, OutboxAdmin)
        first, second, third = self._queue(repository, 3)
        repository.mark_outgoing(first, OutboxStatus.FAILED, error="535 refused")
        repository.mark_outgoing(second, OutboxStatus.SENT)
        assert [m.id for m in repository.list_outgoing()] == [third, second, first]
        assert [m.id for m in repository.list_outgoing(limit=1, offset=1)] == [second]
        failed = repository.list_outgoing(status=OutboxStatus.FAILED)
        assert [(m.id, m.last_error) for m in failed] == [(first, "535 refused")]
        assert [m.id for m in repository.list_outgoing(status=OutboxStatus.PENDING)] == [third]

    def test_list_outgoing_filters_by_ticket(self, repository: CompleteRepository) -> None:
        """``ticket_id`` narrows the listing to one ticket's mail, with status and paging."""
        assert isinstance(repository, OutboxAdmin)
        ticket = repository.create_ticket(self.new_ticket())
        other = repository.create_ticket(self.new_ticket(summary="Another"))
        ours = [
            repository.enqueue_outgoing(self.new_outgoing(f"t-{n}@h", ticket_id=ticket.id)).id
            for n in range(2)
        ]
        repository.enqueue_outgoing(self.new_outgoing("o@h", ticket_id=other.id))
        repository.enqueue_outgoing(self.new_outgoing("none@h"))
        repository.mark_outgoing(ours[0], OutboxStatus.SENT)
        listed = repository.list_outgoing(ticket_id=ticket.id)
        assert [m.id for m in listed] == list(reversed(ours))
        sent = repository.list_outgoing(ticket_id=ticket.id, status=OutboxStatus.SENT)
        assert [m.id for m in sent] == [ours[0]]
        assert [m.id for m in repository.list_outgoing(ticket_id=ticket.id, offset=1)] == [ours[0]]
        assert list(repository.list_outgoing(ticket_id=ticket.id + other.id + 1000)) == []

    def test_retry_outgoing_makes_failed_mail_due_with_no_attempts(
        self, repository: CompleteRepository
    ) -> None:
        """A failed email named by id is pending again, due at the time given, attempts 0."""
        assert isinstance(repository, OutboxAdmin)
        failed, other = self._queue(repository, 2)
        repository.mark_outgoing(failed, OutboxStatus.FAILED, error="535 refused")
        repository.mark_outgoing(other, OutboxStatus.FAILED, error="550 no such user")
        now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
        (retried,) = repository.retry_outgoing(now, ids=[failed, 9999])
        assert (retried.id, retried.status, retried.attempts) == (failed, OutboxStatus.PENDING, 0)
        assert retried.next_attempt_at == now
        assert [m.id for m in repository.due_outgoing(now)] == [failed]
        assert [m.id for m in repository.list_outgoing(status=OutboxStatus.FAILED)] == [other]

    def test_retry_outgoing_of_everything_leaves_sent_mail_alone(
        self, repository: CompleteRepository
    ) -> None:
        """Without ids every failed and pending email is retried, never a sent one."""
        assert isinstance(repository, OutboxAdmin)
        failed, sent, waiting = self._queue(repository, 3)
        repository.mark_outgoing(failed, OutboxStatus.FAILED)
        repository.mark_outgoing(sent, OutboxStatus.SENT)
        now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
        later = now + dt.timedelta(hours=1)
        repository.mark_outgoing(waiting, OutboxStatus.PENDING, next_attempt_at=later)
        assert [m.id for m in repository.retry_outgoing(now)] == [failed, waiting]
        assert [m.id for m in repository.due_outgoing(now)] == [failed, waiting]
        (still_sent,) = repository.list_outgoing(status=OutboxStatus.SENT)
        assert (still_sent.id, still_sent.attempts) == (sent, 1)

    def test_retry_outgoing_clears_a_claim(self, repository: CompleteRepository) -> None:
        """Mail another runner claimed (and left) can be claimed at once after a retry."""
        assert isinstance(repository, OutboxAdmin)
        (mail,) = self._queue(repository, 1)
        now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
        assert [m.id for m in repository.claim_outgoing(now, owner="dead", lease=_LEASE)] == [mail]
        assert list(repository.claim_outgoing(now, owner="next", lease=_LEASE)) == []
        repository.retry_outgoing(now, ids=[mail])
        claimed = repository.claim_outgoing(now, owner="next", lease=_LEASE)
        assert [m.id for m in claimed] == [mail]
