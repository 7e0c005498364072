"""What a rule type's handler does: decide what a matching email means, then write it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Protocol

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.records import inbound_action
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.tickets.models import TicketStatus

__all__ = ["Applied", "RuleHandler", "follow_up"]

Applied = tuple[int | None, bool]
"""What applying wrote: the ticket affected (if any), and whether an acknowledgement was queued."""


class RuleHandler(Protocol):
    """One rule type: its decide and its apply side by side.

    ``decide`` reads the repository and never writes (``simulate`` uses it);
    ``apply`` writes what ``decide`` said, inside the unit's transaction.
    """

    #: Decided before threading: the rule wins even over a follow-up of a ticket.
    before_threading: bool

    def decide(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        match: RuleMatch,
        reason: Reason | None,
    ) -> Decision:
        """What ``match`` makes of a new email (``reason``: a note decided before it)."""
        ...

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Write ``decision``; never called for a quarantine."""
        ...


def follow_up(ctx: Context, email: InboundEmail, decision: Decision) -> None:
    """Add the email to the ticket a rule found open (as a private note), closing it
    when the rule said so."""
    if decision.ticket is None or decision.outcome not in (Outcome.UPDATED, Outcome.CLOSED):
        return
    ticket_id = decision.ticket.id
    ctx.repository.add_action(inbound_action(ticket_id, email, public=False, new_text_only=True))
    if decision.outcome is Outcome.CLOSED:
        ctx.repository.set_status(ticket_id, TicketStatus.CLOSED)
