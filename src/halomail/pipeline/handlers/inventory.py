"""``inventory``: a machine's inventory report creates or updates its asset.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import Extraction, RuleMatch

__all__ = ["InventoryHandler"]

# Inventory fields that name the machine, most specific first.
_TAG_FIELDS = ("asset_tag", "assettag", "tag", "hostname", "computer_name", "computername")


class InventoryHandler:
    """Saves the reported fields on the asset named by the report."""

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
        """A new asset or an update of a known one; quarantined when no asset is named."""
        tag = _asset_tag(match.extraction)
        if tag is None:
            return Decision(
                Outcome.QUARANTINED,
                Reason.INVENTORY_WITHOUT_ASSET_TAG,
                rule=match.rule.name,
                match=match,
            )
        exists = ctx.repository.find_asset("tag", tag) is not None
        return Decision(
            Outcome.UPDATED if exists else Outcome.CREATED,
            Reason.ASSET_UPDATED if exists else Reason.ASSET_CREATED,
            rule=match.rule.name,
            match=match,
        )

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Save the asset, for the sender's customer when there is one."""
        tag = _asset_tag(match.extraction)
        if tag is not None:
            sender = email.sender.normalized if email.sender else None
            customer = ctx.repository.find_customer(sender) if sender else None
            ctx.repository.save_asset(
                tag, dict(match.extraction.inventory), customer_id=customer.id if customer else None
            )
        return None, False


def _asset_tag(extraction: Extraction) -> str | None:
    """The asset an inventory report is about: a reported tag, else its host name."""
    for key in _TAG_FIELDS:
        value = extraction.inventory.get(key)
        if value and value.strip():
            return value.strip()
    return extraction.asset_tag
