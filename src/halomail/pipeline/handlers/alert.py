"""``alert``, ``off_alert``, ``virus``: machine-sent alerts, each kept on one open ticket.

An alert opens a ticket under an alert key; a repeat of it updates that ticket, and a
clearance (an ``off_alert`` rule, or an ``alert`` whose email reads as closing)
closes it. Keys are kept apart per alert rule, so two monitoring systems that report
the same host never close each other's tickets.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied, follow_up
from halomail.pipeline.records import open_ticket, rule_ticket
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch, alert_key_from_subject
from halomail.tickets.models import Ticket

__all__ = ["AlertHandler", "OffAlertHandler", "VirusHandler"]


class AlertHandler:
    """``alert``: opens, repeats onto, or (when the email reads as closing) clears a ticket."""

    before_threading = False

    def keys(self, email: InboundEmail, match: RuleMatch) -> list[str]:
        """The keys the alert may be filed under, the one new tickets get first."""
        extraction = match.extraction
        key = extraction.alert_key or email.subject.strip().lower()
        return [f"alert:{match.rule.name.lower()}:{key}"] if key else []

    def clears(self, match: RuleMatch) -> bool:
        """True when the email clears the alert rather than raising it."""
        return match.extraction.closing

    def decide(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        match: RuleMatch,
        reason: Reason | None,
    ) -> Decision:
        """Raise, repeat or clear, by what is open under the alert's keys."""
        decided = functools.partial(Decision, rule=match.rule.name, match=match)
        existing = self._open_ticket(ctx, email, match)
        if self.clears(match):
            if existing is None:
                return decided(Outcome.IGNORED, Reason.NOTHING_OPEN_TO_CLOSE)
            if existing.agent:
                # Someone is working on it: tell them, don't pull it from under them.
                return decided(Outcome.UPDATED, Reason.CLEARED_WHILE_ASSIGNED, ticket=existing)
            return decided(Outcome.CLOSED, Reason.ALERT_CLEARED, ticket=existing)
        if existing is not None:
            return decided(Outcome.UPDATED, Reason.REPEATED_ALERT, ticket=existing)
        return decided(Outcome.CREATED, reason)

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Open the alert's ticket under its key, or note the email on the open one."""
        if decision.outcome is Outcome.CREATED:
            new = rule_ticket(ctx, mailbox, email, match, alert_key=self.keys(email, match)[0])
            return open_ticket(ctx, mailbox, email, new, decision, public=match.rule.public)
        follow_up(ctx, email, decision)
        return (decision.ticket.id if decision.ticket else None), False

    def _open_ticket(self, ctx: Context, email: InboundEmail, match: RuleMatch) -> Ticket | None:
        for key in self.keys(email, match):
            existing = ctx.repository.find_open_ticket(alert_key=key)
            if existing is not None:
                return existing
        return None


class OffAlertHandler(AlertHandler):
    """``off_alert``: clears the ticket its alert rule opened."""

    def keys(self, email: InboundEmail, match: RuleMatch) -> list[str]:
        """The alert rule's keys; a clearance's own marker ("CLEARED: …") is what its rule
        matches on, so the subject is also tried with those words taken out."""
        rule, extraction = match.rule, match.extraction
        owner = rule.alert_rule or rule.name
        keys = [extraction.alert_key or email.subject.strip().lower()]
        keys += [alert_key_from_subject(email.subject, marker) or "" for marker in rule.subject]
        return [f"alert:{owner.lower()}:{key}" for key in dict.fromkeys(keys) if key]

    def clears(self, match: RuleMatch) -> bool:
        """Always: that is what an off_alert is for."""
        return True


class VirusHandler(AlertHandler):
    """``virus``: one open ticket per infected machine (or sender), never cleared by email."""

    def keys(self, email: InboundEmail, match: RuleMatch) -> list[str]:
        """One key: the rule and the machine's asset tag, else the sender."""
        subject = match.extraction.asset_tag or (email.sender.normalized if email.sender else "")
        return [f"virus:{match.rule.name.lower()}:{subject.lower()}"]

    def clears(self, match: RuleMatch) -> bool:
        """Never."""
        return False
