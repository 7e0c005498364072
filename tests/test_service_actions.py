"""What each monitored service's failure, success and Unknown do to its ticket (#17).

Real status emails go through the whole pipeline into a real SQLite file; silence is
judged by :meth:`MailProcessor.check_services` on a hand-moved clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import ConfigError
from halomail.rules import rules_from_config
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessingOutcome, ProcessorSettings
from halomail.services import (
    ServiceAction,
    ServiceDefinition,
    ServiceStatus,
    services_from_config,
)
from halomail.tickets.models import ActionKind, Ticket, TicketStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

SERVICE = {
    "name": "Nightly backup",
    "check_interval_minutes": 60,
    "success": {"subject": "[Success]"},
    "failure": {"subject": "[Failed]"},
}
RULE = {
    "name": "Backups",
    "type": "service_status",
    "sequence": 10,
    "from": "backup@example.com",
    "service": "Nightly backup",
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Desk:
    """A processor over one mailbox, its SQLite file, and its clock."""

    def __init__(self, tmp_path: Path, settings: ProcessorSettings, service: Mapping[str, Any]):
        self.repository = SQLiteTicketRepository(tmp_path / "halomail.db")
        self.connector = MemoryConnector("Support")
        self.clock = Clock()
        services = services_from_config([service])
        self.processor = MailProcessor(
            self.repository,
            [Mailbox(self.connector)],
            settings,
            transport=MemoryTransport(),
            rules=rules_from_config([RULE], services=[s.name for s in services]),
            services=services,
            clock=self.clock,
        )
        self._sent = 0

    def report(self, result: str) -> ProcessingOutcome:
        """Process one backup report saying ``result`` (Success, Failed, Warning)."""
        self._sent += 1
        self.connector.add(
            make_email(
                sender="Veeam Backup <backup@example.com>",
                subject=f"[{result}] Nightly backup job {self._sent}",
                message_id=f"<backup-{self._sent}@example.com>",
                body=f"Backup job: Nightly backup\nResult: {result}\n",
            )
        )
        (outcome,) = self.processor.run_once().outcomes
        return outcome

    def ticket(self, ticket_id: int | None) -> Ticket:
        """The stored ticket, which must exist."""
        assert ticket_id is not None
        ticket = self.repository.get_ticket(ticket_id)
        assert ticket is not None
        return ticket

    def tickets(self) -> list[Ticket]:
        """Every ticket, oldest first."""
        return sorted(self.repository.list_tickets(), key=lambda t: t.id)

    def notes(self, ticket_id: int) -> list[str]:
        """The private notes and emails added to a ticket (its first email is public)."""
        actions = self.repository.list_actions(ticket_id)
        return [
            a.body
            for a in actions
            if not a.public and a.kind in (ActionKind.NOTE, ActionKind.EMAIL_IN)
        ]


@pytest.fixture
def desk(tmp_path: Path, settings: ProcessorSettings) -> Iterator[Callable[..., Desk]]:
    """Make a :class:`Desk` whose service has the given extra keys; closed afterwards."""
    made: list[Desk] = []

    def make(**keys: Any) -> Desk:
        made.append(Desk(tmp_path / str(len(made)), settings, {**SERVICE, **keys}))
        return made[-1]

    for n in range(4):
        (tmp_path / str(n)).mkdir()
    yield make
    for one in made:
        one.processor.close()
        one.repository.close()


def test_without_action_keys_a_service_behaves_as_before() -> None:
    """No on_* keys: failure opens, success closes, Unknown records; old switches still map."""
    (default,) = services_from_config([SERVICE])
    assert (default.on_failure, default.on_success, default.on_unknown) == (
        "open",
        "close",
        "nothing",
    )
    (older,) = services_from_config(
        [{**SERVICE, "close_on_success": False, "unknown_ticket": True}]
    )
    assert (older.on_success, older.on_unknown) == (ServiceAction.NOTHING, ServiceAction.OPEN)
    (record_only,) = services_from_config([{**SERVICE, "failure_ticket_type": False}])
    assert record_only.on_failure is ServiceAction.NOTHING
    heartbeat = ServiceDefinition("Heartbeat")
    assert heartbeat.action_for(ServiceStatus.FAILED) is ServiceAction.OPEN
    assert heartbeat.action_for(ServiceStatus.OK) is ServiceAction.CLOSE
    assert heartbeat.action_for(ServiceStatus.UNKNOWN) is ServiceAction.NOTHING


def test_a_failure_opens_a_ticket_with_the_services_priority_team_and_agent(
    desk: Callable[..., Desk],
) -> None:
    """on_failure = open: the ticket carries priority, team and agent; a repeat updates it."""
    d = desk(priority="P1", team="Infrastructure", agent="Amy@Helpdesk.example")
    first = d.report("Failed")
    assert (first.outcome, first.reason) == (Outcome.CREATED, "service-failed")
    ticket = d.ticket(first.ticket_id)
    assert (ticket.priority, ticket.team, ticket.agent) == (
        "P1",
        "Infrastructure",
        "amy@helpdesk.example",
    )
    assert ticket.alert_key == "service:nightly backup"
    again = d.report("Failed")
    assert (again.outcome, again.ticket_id) == (Outcome.UPDATED, first.ticket_id)
    assert len(d.tickets()) == 1


def test_note_only_never_opens_a_ticket_but_notes_the_open_one(
    desk: Callable[..., Desk],
) -> None:
    """on_failure = note: no ticket of its own; once silence opened one, failures are noted."""
    d = desk(on_failure="note", on_unknown="open")
    alone = d.report("Failed")
    assert (alone.outcome, alone.ticket_id) == (Outcome.STATUS, None)
    assert d.tickets() == []
    d.clock.now += dt.timedelta(minutes=61)
    (check,) = d.processor.check_services()
    assert check.turned_unknown
    assert check.ticket_id is not None
    noted = d.report("Failed")
    assert (noted.outcome, noted.ticket_id) == (Outcome.UPDATED, check.ticket_id)
    assert "Result: Failed" in d.notes(check.ticket_id)[-1]
    assert d.ticket(check.ticket_id).status is not TicketStatus.CLOSED


def test_success_may_only_note_and_leave_the_ticket_open(desk: Callable[..., Desk]) -> None:
    """on_success = note: the success is added to the failure ticket, which stays open."""
    d = desk(on_success="note")
    failed = d.report("Failed")
    ok = d.report("Success")
    assert (ok.outcome, ok.reason, ok.ticket_id) == (
        Outcome.UPDATED,
        "service-ok",
        failed.ticket_id,
    )
    assert d.ticket(failed.ticket_id).status is not TicketStatus.CLOSED
    assert "Result: Success" in d.notes(d.ticket(failed.ticket_id).id)[-1]


def test_by_default_a_closed_ticket_stays_closed_and_a_new_failure_opens_another(
    desk: Callable[..., Desk],
) -> None:
    """reopen = false (default): failure, success (closed), failure: a second ticket."""
    d = desk()
    first = d.report("Failed")
    assert d.report("Success").outcome is Outcome.CLOSED
    second = d.report("Failed")
    assert second.outcome is Outcome.CREATED
    assert second.ticket_id != first.ticket_id
    assert d.ticket(first.ticket_id).status is TicketStatus.CLOSED


def test_reopen_brings_back_the_services_last_ticket(desk: Callable[..., Desk]) -> None:
    """reopen = true: the failure after a recovery reopens the same ticket, with the email."""
    d = desk(reopen=True)
    first = d.report("Failed")
    d.report("Success")
    again = d.report("Failed")
    assert (again.outcome, again.ticket_id) == (Outcome.UPDATED, first.ticket_id)
    assert d.ticket(first.ticket_id).status is TicketStatus.OPEN
    assert len(d.tickets()) == 1
    assert "Result: Failed" in d.notes(d.ticket(first.ticket_id).id)[-1]


def test_an_email_that_says_neither_does_the_unknown_action(desk: Callable[..., Desk]) -> None:
    """on_unknown = open: a Warning report (neither criteria) opens a ticket of its own."""
    d = desk(on_unknown="open", failure_ticket_type="Backup")
    warning = d.report("Warning")
    assert (warning.outcome, warning.reason) == (Outcome.CREATED, "service-unknown")
    assert d.ticket(warning.ticket_id).ticket_type == "Backup"


def test_silence_closes_or_notes_the_open_ticket_as_configured(
    desk: Callable[..., Desk],
) -> None:
    """Silence past the interval: on_unknown = close closes, note notes, nothing leaves it."""
    results: dict[str, tuple[TicketStatus, list[str]]] = {}
    for action in ("close", "note", "nothing"):
        d = desk(on_unknown=action)
        failed = d.report("Failed")
        d.clock.now += dt.timedelta(minutes=61)
        (check,) = d.processor.check_services()
        assert check.turned_unknown
        ticket = d.ticket(failed.ticket_id)
        results[action] = (ticket.status, d.notes(ticket.id))
    assert results["close"][0] is TicketStatus.CLOSED
    assert results["close"][1] == ["no email within 1:00:00"]
    assert results["note"][0] is not TicketStatus.CLOSED
    assert results["note"][1] == ["no email within 1:00:00"]
    assert results["nothing"][1] == []
    assert results["nothing"][0] is not TicketStatus.CLOSED


def test_silence_opens_a_ticket_with_the_services_assignment(desk: Callable[..., Desk]) -> None:
    """on_unknown = open: silence opens a ticket with the team; the next silence adds nothing."""
    d = desk(on_unknown="open", team="Infrastructure")
    d.report("Success")
    d.clock.now += dt.timedelta(minutes=61)
    (check,) = d.processor.check_services()
    ticket = d.ticket(check.ticket_id)
    assert (ticket.team, ticket.alert_key) == ("Infrastructure", "service:nightly backup")
    assert ticket.summary == "Nightly backup: no status email within 1:00:00"
    recovered = d.report("Success")
    assert (recovered.outcome, recovered.ticket_id) == (Outcome.CLOSED, ticket.id)


@pytest.mark.parametrize(
    ("keys", "where", "says"),
    [
        (
            {"on_failure": "escalate"},
            "services[0].on_failure",
            "'open', 'note', 'close', 'nothing'",
        ),
        ({"on_success": True}, "services[0].on_success", "expected one of"),
        (
            {"on_success": "note", "close_on_success": False},
            "services[0].on_success",
            "not both",
        ),
        (
            {"on_unknown": "open", "unknown_ticket": True},
            "services[0].on_unknown",
            "not both",
        ),
        (
            {"on_failure": "open", "failure_ticket_type": False},
            "services[0].on_failure",
            "contradicts",
        ),
        ({"agent": "Amy Pond"}, "services[0].agent", "email address"),
        ({"team": ""}, "services[0].team", "must not be empty"),
        ({"reopen": "yes"}, "services[0].reopen", "true or false"),
        ({"on_falure": "note"}, "services[0]", "on_failure"),
    ],
)
def test_a_wrong_action_is_refused_with_its_key_path(
    keys: dict[str, Any], where: str, says: str
) -> None:
    """Unknown actions, contradicting switches and bad assignments name the key at fault."""
    with pytest.raises(ConfigError) as caught:
        services_from_config([{**SERVICE, **keys}])
    assert caught.value.key_path.startswith(where)
    assert says in str(caught.value)
