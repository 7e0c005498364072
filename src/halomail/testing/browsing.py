"""The optional :class:`~halomail.Browsing` role: listings and assignment."""

from __future__ import annotations

import pytest

from halomail.errors import RepositoryError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.tickets.models import (
    NewQuarantine,
    TicketStatus,
)

__all__ = ["BrowsingContract"]


class BrowsingContract(ContractBase):
    """The optional :class:`~halomail.Browsing` role: listings and assignment.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_list_tickets_is_newest_first_with_limit_and_offset(
        self, repository: CompleteRepository
    ) -> None:
        """Tickets list newest first, and limit/offset page through that order."""
        ids = [repository.create_ticket(self.new_ticket(summary=f"#{n}")).id for n in range(5)]
        newest_first = list(reversed(ids))
        assert [t.id for t in repository.list_tickets()] == newest_first
        assert [t.id for t in repository.list_tickets(limit=2)] == newest_first[:2]
        assert [t.id for t in repository.list_tickets(limit=2, offset=2)] == newest_first[2:4]
        assert [t.id for t in repository.list_tickets(limit=10, offset=4)] == newest_first[4:]
        assert list(repository.list_tickets(offset=5)) == []
        assert list(repository.list_tickets(limit=0)) == []
        assert [t.summary for t in repository.list_tickets(limit=1)] == ["#4"]

    def test_list_tickets_of_an_empty_repository_is_empty(
        self, repository: CompleteRepository
    ) -> None:
        """A fresh repository lists no tickets."""
        assert list(repository.list_tickets()) == []

    def test_list_quarantine_is_newest_first_with_limit_and_offset(
        self, repository: CompleteRepository
    ) -> None:
        """Quarantined emails list newest first, and limit/offset page through them."""
        ids = [repository.quarantine(NewQuarantine("Support", f"r{n}", b"")).id for n in range(4)]
        newest_first = list(reversed(ids))
        assert [q.id for q in repository.list_quarantine()] == newest_first
        assert [q.id for q in repository.list_quarantine(limit=2, offset=1)] == newest_first[1:3]
        assert [q.reason for q in repository.list_quarantine(limit=1)] == ["r3"]
        assert repository.list_quarantine()[-1].raw == b""

    def test_assign_sets_agent_and_team_and_touches_updated_at(
        self, repository: CompleteRepository
    ) -> None:
        """Assigning writes agent and team, moves updated_at on, and keeps status and created_at."""
        ticket = repository.create_ticket(self.new_ticket(alert_key="alert:x:y"))
        self.wait_for_the_clock()
        assigned = repository.assign(ticket.id, agent="eve@helpdesk.example", team="Second line")
        assert (assigned.agent, assigned.team) == ("eve@helpdesk.example", "Second line")
        assert assigned.status is TicketStatus.NEW
        assert assigned.created_at == ticket.created_at
        assert assigned.updated_at > ticket.updated_at
        assert assigned.alert_key == "alert:x:y"
        assert repository.get_ticket(ticket.id) == assigned

    def test_assign_with_none_clears_a_value(self, repository: CompleteRepository) -> None:
        """None for the agent removes the agent while the team given is set."""
        ticket = repository.create_ticket(
            self.new_ticket(agent="eve@helpdesk.example", team="First line")
        )
        assigned = repository.assign(ticket.id, agent=None, team="Second line")
        assert (assigned.agent, assigned.team) == (None, "Second line")
        cleared = repository.assign(ticket.id, agent=None, team=None)
        assert (cleared.agent, cleared.team) == (None, None)
        assert repository.get_ticket(ticket.id) == cleared

    def test_assign_a_missing_ticket_raises(self, repository: CompleteRepository) -> None:
        """Assigning a ticket that does not exist raises RepositoryError."""
        ticket = repository.create_ticket(self.new_ticket())
        with pytest.raises(RepositoryError):
            repository.assign(ticket.id + 1000, agent="eve@helpdesk.example", team=None)
        assert repository.get_ticket(ticket.id) == ticket
