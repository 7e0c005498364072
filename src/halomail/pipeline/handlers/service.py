"""``service_status``: a monitored service's heartbeat, and its failure tickets.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import functools

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied, follow_up
from halomail.pipeline.records import open_ticket, rule_ticket, service_key
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.services import ServiceDefinition, judge
from halomail.tickets.models import NewServiceStatus, ServiceStatus

__all__ = ["ServiceStatusHandler"]


class ServiceStatusHandler:
    """Records what a service's email says; a failure opens (or updates) its ticket and a
    success may close it."""

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
        """Judge the email against the service's criteria."""
        service = _service(ctx, match)
        status = judge(service, email)
        decided = functools.partial(
            Decision, rule=match.rule.name, match=match, service_status=status
        )
        existing = ctx.repository.find_open_ticket(alert_key=service_key(service.name))
        if status is ServiceStatus.FAILED and service.failure_ticket_type:
            if existing is not None:
                return decided(Outcome.UPDATED, Reason.SERVICE_FAILED, ticket=existing)
            return decided(Outcome.CREATED, Reason.SERVICE_FAILED)
        if status is ServiceStatus.OK and service.close_on_success and existing is not None:
            return decided(Outcome.CLOSED, Reason.SERVICE_RECOVERED, ticket=existing)
        return decided(Outcome.STATUS, Reason.for_service(status))

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Open, update or close the service's ticket, then record the status (and tell
        whoever wants to know when it changed)."""
        service = _service(ctx, match)
        ticket_id = decision.ticket.id if decision.ticket else None
        acknowledged = False
        if decision.outcome is Outcome.CREATED:
            new = rule_ticket(
                ctx,
                mailbox,
                email,
                match,
                ticket_type=service.failure_ticket_type or mailbox.ticket_type,
                summary=f"{service.name}: {email.subject or 'failed'}",
                alert_key=service_key(service.name),
            )
            ticket_id, acknowledged = open_ticket(
                ctx, mailbox, email, new, decision, public=match.rule.public
            )
        follow_up(ctx, email, decision)
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


def _service(ctx: Context, match: RuleMatch) -> ServiceDefinition:
    return ctx.services[match.rule.service or ""]
