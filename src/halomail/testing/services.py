"""The :class:`~halomail.ServiceLog` role: monitored services' history."""

from __future__ import annotations

import datetime as dt

from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR
from halomail.tickets.models import (
    NewServiceStatus,
    ServiceStatus,
)

__all__ = ["ServiceLogContract"]


class ServiceLogContract(ContractBase):
    """The :class:`~halomail.ServiceLog` role: monitored services' history.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_record_service_status_round_trips_every_field(
        self, repository: CompleteRepository
    ) -> None:
        """A status reads back with service, status, UTC time, detail, ticket and Message-ID."""
        ticket = repository.create_ticket(self.new_ticket(alert_key="service:Nightly backup"))
        sydney = dt.timezone(dt.timedelta(hours=10))
        at = dt.datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=sydney)
        entry = repository.record_service_status(
            NewServiceStatus(
                service="Nightly backup",
                status=ServiceStatus.FAILED,
                at=at,
                detail="Backup job FAILED: 3 errors",
                ticket_id=ticket.id,
                message_id="job-17@backup.example",
            )
        )
        assert entry.status is ServiceStatus.FAILED
        assert entry.at == at
        assert entry.at.utcoffset() == dt.timedelta(0)
        assert (entry.service, entry.detail, entry.ticket_id, entry.message_id) == (
            "Nightly backup",
            "Backup job FAILED: 3 errors",
            ticket.id,
            "job-17@backup.example",
        )
        assert list(repository.service_history("Nightly backup")) == [entry]
        assert repository.last_service_status("Nightly backup") == entry
        plain = repository.record_service_status(
            NewServiceStatus("Nightly backup", "ok", at + HOUR)
        )
        assert (plain.status, plain.detail, plain.ticket_id, plain.message_id) == (
            ServiceStatus.OK,
            "",
            None,
            None,
        )
        assert repository.last_service_status("Nightly backup") == plain

    def test_service_history_is_newest_first_by_time_with_a_limit(
        self, repository: CompleteRepository
    ) -> None:
        """History lists by time, newest first, whatever the order of recording, up to the limit."""
        statuses = ["ok", "failed", "ok", "unknown", "ok"]
        for hour in (2, 0, 4, 1, 3):
            repository.record_service_status(
                NewServiceStatus("Replication", statuses[hour], self._T0 + hour * HOUR, f"h{hour}")
            )
        history = list(repository.service_history("Replication"))
        assert [e.detail for e in history] == ["h4", "h3", "h2", "h1", "h0"]
        assert [e.status for e in history] == [
            ServiceStatus.OK,
            ServiceStatus.UNKNOWN,
            ServiceStatus.OK,
            ServiceStatus.FAILED,
            ServiceStatus.OK,
        ]
        assert [e.detail for e in repository.service_history("Replication", limit=2)] == [
            "h4",
            "h3",
        ]
        assert list(repository.service_history("Replication", limit=0)) == []
        last = repository.last_service_status("Replication")
        assert last is not None
        assert (last.detail, last.at) == ("h4", self._T0 + 4 * HOUR)

    def test_statuses_at_the_same_time_list_the_last_recorded_first(
        self, repository: CompleteRepository
    ) -> None:
        """Two statuses with one time list in reverse order of recording."""
        first = repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0, "first"))
        second = repository.record_service_status(
            NewServiceStatus("UPS", "failed", self._T0, "second")
        )
        assert list(repository.service_history("UPS")) == [second, first]
        assert repository.last_service_status("UPS") == second

    def test_service_history_is_per_service_with_exact_names(
        self, repository: CompleteRepository
    ) -> None:
        """Each service sees only its own statuses; a name in another case is another service."""
        backup = repository.record_service_status(
            NewServiceStatus("Nightly backup", "ok", self._T0)
        )
        repository.record_service_status(NewServiceStatus("Replication", "failed", self._T0 + HOUR))
        assert list(repository.service_history("Nightly backup")) == [backup]
        assert list(repository.service_history("nightly backup")) == []
        assert repository.last_service_status("nightly backup") is None
        assert list(repository.service_history("Mail relay")) == []
        assert repository.last_service_status("Mail relay") is None
