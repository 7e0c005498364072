"""``service_status``: a monitored service's heartbeat, and what each status does.

Each service says what a failure, a success and turning Unknown do to its ticket
(:class:`~halomail.services.ServiceAction`): open one (or add to the open one), add a
note to the open one only, close it, or nothing. The service's ticket is the open one
with the alert key ``service:<name>``; with ``reopen``, ``open`` reopens the last one
when it was closed. :func:`act_on_silence` does the same for a service that turned
Unknown by staying silent (:meth:`~halomail.runner.MailProcessor.check_services`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

from halomail.inbound.models import Classification, InboundEmail
from halomail.outbound.notifier import Notifier
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied, follow_up
from halomail.pipeline.records import open_ticket, rule_ticket, service_key
from halomail.pipeline.reports import ServiceCheck
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.services import ServiceAction, ServiceDefinition, is_overdue, judge
from halomail.tickets.models import (
    ActionKind,
    NewAction,
    NewServiceStatus,
    NewTicket,
    ServiceStatus,
    Ticket,
    TicketStatus,
)
from halomail.tickets.repository import TicketRepository

__all__ = ["ServiceStatusHandler", "act_on_silence", "check_silence", "last_ticket_key"]

log = logging.getLogger(__name__)


def last_ticket_key(service: ServiceDefinition) -> str:
    """The state key holding the id of the last ticket the service opened (``reopen``)."""
    return f"{service_key(service.name)}:last-ticket"


class ServiceStatusHandler:
    """Records what a service's email says, and does what the service's action for that
    status says to its ticket."""

    before_threading = False

    def decide(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        match: RuleMatch,
        reason: Reason | None,
    ) -> Decision:
        """Judge the email against the service's criteria, and pick the action's outcome."""
        service = _service(ctx, match)
        status = judge(service, email)
        decided = functools.partial(
            Decision, rule=match.rule.name, match=match, service_status=status
        )
        action = service.action_for(status)
        recorded_only = decided(Outcome.STATUS, Reason.for_service(status))
        if action is ServiceAction.NOTHING:
            return recorded_only
        existing = ctx.repository.find_open_ticket(alert_key=service_key(service.name))
        if existing is None:
            if action is not ServiceAction.OPEN:
                return recorded_only  # a note or a closure needs an open ticket
            closed = _closed_last_ticket(ctx.repository, service)
            if closed is not None:
                return decided(
                    Outcome.UPDATED, Reason.for_service(status), ticket=closed, reopen=True
                )
            return decided(Outcome.CREATED, Reason.for_service(status))
        if action is ServiceAction.CLOSE:
            why = Reason.SERVICE_RECOVERED if status is ServiceStatus.OK else None
            return decided(Outcome.CLOSED, why or Reason.for_service(status), ticket=existing)
        return decided(Outcome.UPDATED, Reason.for_service(status), ticket=existing)

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Open, update, reopen or close the service's ticket, then record the status (and
        tell the subscribers when it changed)."""
        service = _service(ctx, match)
        ticket_id = decision.ticket.id if decision.ticket else None
        acknowledged = False
        if decision.outcome is Outcome.CREATED:
            new = rule_ticket(
                ctx,
                mailbox,
                email,
                match,
                ticket_type=service.ticket_type,
                summary=f"{service.name}: {email.subject or 'failed'}",
                alert_key=service_key(service.name),
                **_assignment(service),
            )
            ticket_id, acknowledged = open_ticket(
                ctx, mailbox, email, new, decision, public=match.rule.public
            )
            ctx.repository.set_state(last_ticket_key(service), str(ticket_id))
        follow_up(ctx, email, decision)
        if decision.reopen and ticket_id is not None:
            ctx.repository.set_status(ticket_id, TicketStatus.OPEN)
        status = decision.service_status
        if status is not None:
            previous = ctx.repository.last_service_status(service.name)
            ctx.repository.record_service_status(
                NewServiceStatus(
                    service=service.name,
                    status=status.value,
                    at=ctx.clock(),
                    detail=email.subject,
                    ticket_id=ticket_id,
                    message_id=email.message_id,
                )
            )
            if previous is None or previous.status != status.value:
                ctx.notifier.service_changed(service, status.value, email.subject, ticket_id)
        return ticket_id, acknowledged


def check_silence(
    repository: TicketRepository, notifier: Notifier, service: ServiceDefinition, now: dt.datetime
) -> ServiceCheck:
    """Turn ``service`` Unknown, once, when its last email is older than its checking
    interval (watched from the first check on), doing its ``on_unknown`` action."""
    since_key = f"service:{service.name}:watching-since"
    with repository.transaction():
        since_text = repository.get_state(since_key)
        if since_text is None:
            repository.set_state(since_key, now.isoformat())
            since = now
        else:
            since = dt.datetime.fromisoformat(since_text)
        last = repository.last_service_status(service.name)
        if not is_overdue(service, last, now, watching_since=since):
            return ServiceCheck(service.name, last.status if last else None)
        detail = f"no email within {service.check_interval}"
        ticket_id = act_on_silence(repository, service, detail)
        repository.record_service_status(
            NewServiceStatus(
                service=service.name,
                status=ServiceStatus.UNKNOWN.value,
                at=now,
                detail=detail,
                ticket_id=ticket_id,
            )
        )
        notifier.service_changed(service, ServiceStatus.UNKNOWN.value, detail, ticket_id)
    log.warning("service %s is unknown: no email within %s", service.name, service.check_interval)
    return ServiceCheck(service.name, ServiceStatus.UNKNOWN.value, True, ticket_id)


def act_on_silence(
    repository: TicketRepository, service: ServiceDefinition, detail: str
) -> int | None:
    """Do the service's ``on_unknown`` action for a silence past its interval.

    Called inside the caller's transaction. There is no email: the note added to the
    ticket is ``detail``.

    Args:
        repository: Where the service's tickets are.
        service: The service that turned Unknown.
        detail: Why, in words (``no email within 1 day, 0:00:00``).

    Returns:
        The ticket opened, noted, reopened or closed, or ``None`` when none was.
    """
    action = service.on_unknown
    if action is ServiceAction.NOTHING:
        return None
    existing = repository.find_open_ticket(alert_key=service_key(service.name))
    if existing is not None:
        _note(repository, existing.id, detail)
        if action is ServiceAction.CLOSE:
            repository.set_status(existing.id, TicketStatus.CLOSED)
        return existing.id
    if action is not ServiceAction.OPEN:
        return None
    closed = _closed_last_ticket(repository, service)
    if closed is not None:
        _note(repository, closed.id, detail)
        repository.set_status(closed.id, TicketStatus.OPEN)
        return closed.id
    ticket = repository.create_ticket(
        NewTicket(
            summary=f"{service.name}: no status email within {service.check_interval}",
            details=f"The monitored service {service.name!r} has not reported within its "
            f"checking interval ({service.check_interval}); its status is now Unknown.",
            ticket_type=service.ticket_type,
            user_email="",
            alert_key=service_key(service.name),
            priority=service.priority,
            team=service.team,
            agent=service.agent,
        )
    )
    repository.set_state(last_ticket_key(service), str(ticket.id))
    return ticket.id


def _assignment(service: ServiceDefinition) -> dict[str, str]:
    """The priority, team and agent the service sets on the tickets it opens (those it
    leaves out are left to the rule's fields)."""
    chosen = {"priority": service.priority, "team": service.team, "agent": service.agent}
    return {name: value for name, value in chosen.items() if value is not None}


def _closed_last_ticket(repository: TicketRepository, service: ServiceDefinition) -> Ticket | None:
    """With ``reopen``, the service's last ticket when it is closed; else ``None``."""
    if not service.reopen:
        return None
    stored = repository.get_state(last_ticket_key(service))
    ticket = repository.get_ticket(int(stored)) if stored and stored.isdigit() else None
    if ticket is None or ticket.status is not TicketStatus.CLOSED:
        return None
    return ticket


def _note(repository: TicketRepository, ticket_id: int, text: str) -> None:
    repository.add_action(
        NewAction(ticket_id=ticket_id, kind=ActionKind.NOTE, body=text, public=False)
    )


def _service(ctx: Context, match: RuleMatch) -> ServiceDefinition:
    return ctx.services[match.rule.service or ""]
