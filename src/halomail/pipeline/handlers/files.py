"""``file_transfer``: the email's attachments are kept against an asset or a customer.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers.base import Applied
from halomail.pipeline.records import stored
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.tickets.models import FileOwner

__all__ = ["FileTransferHandler"]


class FileTransferHandler:
    """Stores the attachments with no ticket; quarantines them when nobody owns them."""

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
        """Find where the files go: the named asset, else the sender's customer."""
        owner = _owner(ctx, email, match)
        if owner is None:
            return Decision(
                Outcome.QUARANTINED,
                Reason.FILE_TRANSFER_WITHOUT_OWNER,
                rule=match.rule.name,
                match=match,
            )
        return Decision(
            Outcome.UPDATED,
            Reason.FILES_STORED,
            rule=match.rule.name,
            match=match,
            file_owner=owner,
        )

    def apply(
        self,
        ctx: Context,
        mailbox: Mailbox,
        email: InboundEmail,
        decision: Decision,
        match: RuleMatch,
    ) -> Applied:
        """Store the attachments, with the subject as their note."""
        if decision.file_owner is not None:
            owner, owner_id = decision.file_owner
            ctx.repository.store_files(
                owner=owner, owner_id=owner_id, attachments=stored(email), note=email.subject
            )
        return None, False


def _owner(ctx: Context, email: InboundEmail, match: RuleMatch) -> tuple[FileOwner, int] | None:
    rule, extraction = match.rule, match.extraction
    if extraction.asset_tag and rule.asset is not None:
        asset = ctx.repository.find_asset(rule.asset.field, extraction.asset_tag)
        if asset is not None:
            return "asset", asset.id
    customer = ctx.repository.find_customer(email.sender.normalized) if email.sender else None
    return ("customer", customer.id) if customer is not None else None
