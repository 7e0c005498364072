"""``help_request``, ``apply_template``, ``formatted_email``: mail people wrote.

These open a ticket like any other email, shaped by the rule (its type, fields,
template), and are acknowledged unless the rule says not.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import attrs

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.acknowledge import decide_new
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied
from halomail.pipeline.records import open_ticket, rule_ticket
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch

__all__ = ["HumanHandler"]


@attrs.frozen
class HumanHandler:
    """Opens a ticket for mail a person wrote.

    Args:
        applies_template: Start the ticket from the rule's ticket template.
    """

    applies_template: bool = False
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
        """A new ticket, acknowledged like any other unless the rule says not."""
        rule = match.rule
        decision = decide_new(
            ctx, mailbox, email, classification, reason, acknowledge=rule.send_acknowledgement
        )
        return attrs.evolve(decision, rule=rule.name, match=match)

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Open the rule's ticket and queue its acknowledgement."""
        if decision.outcome is not Outcome.CREATED:
            return (decision.ticket.id if decision.ticket else None), False
        new = rule_ticket(ctx, mailbox, email, match)
        if self.applies_template and match.rule.template:
            new = ctx.templates[match.rule.template].apply(new)
        return open_ticket(ctx, mailbox, email, new, decision, public=match.rule.public)
