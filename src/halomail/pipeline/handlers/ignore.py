"""``ignore``: the email is recorded and nothing else happens.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch

__all__ = ["IgnoreHandler"]


class IgnoreHandler:
    """Ignores what its rule matches, even a follow-up of a ticket."""

    before_threading = True

    def decide(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        match: RuleMatch,
        reason: Reason | None,
    ) -> Decision:
        """Ignored, because the rule said so."""
        return Decision(Outcome.IGNORED, Reason.RULE, rule=match.rule.name, match=match)

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Nothing to write but the dedupe record (the unit writes it)."""
        return None, False
