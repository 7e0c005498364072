"""The records an email becomes: new tickets, inbound actions, acknowledgements.

Shared by :mod:`~halomail.pipeline.apply` and the rule handlers; each function
writes at most what its name says.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

import attrs

from halomail._text import clean_text
from halomail.inbound.models import InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.results import Decision
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.tickets.models import (
    ActionKind,
    NewAction,
    NewOutgoing,
    NewTicket,
    StoredAttachment,
    Ticket,
)

__all__ = [
    "inbound_action",
    "new_ticket",
    "open_ticket",
    "rule_ticket",
    "service_key",
    "stored",
]

# Ticket fields a rule's field mappings may set on a new ticket.
_TICKET_FIELDS = (
    "summary",
    "details",
    "priority",
    "category",
    "team",
    "agent",
    "user_email",
    "status",
    "impact",
    "urgency",
    "site",
)


def service_key(name: str) -> str:
    """The alert key of a monitored service's open ticket."""
    return f"service:{name.lower()}"


def stored(email: InboundEmail) -> tuple[StoredAttachment, ...]:
    """The email's attachments as the repository stores them."""
    return tuple(
        StoredAttachment(
            filename=a.filename,
            storage_name=a.storage_name,
            content_type=a.content_type,
            size=a.size,
            content_id=a.content_id,
            inline=a.inline,
            payload=a.payload,
        )
        for a in email.attachments
    )


def new_ticket(ctx: Context, mailbox: Mailbox, email: InboundEmail) -> NewTicket:
    """The ticket a new email opens: its sender, subject, text, and the people copied."""
    assert email.sender is not None
    sender = email.sender.normalized
    customer = ctx.repository.find_customer(sender)
    own = {sender, (mailbox.sender or ctx.settings.default_sender).from_address.lower()}
    cc = tuple(
        dict.fromkeys(a.normalized for a in (*email.to, *email.cc) if a.normalized not in own)
    )
    return NewTicket(
        summary=clean_text(email.subject).strip() or "(no subject)",
        details=email.text,
        ticket_type=mailbox.ticket_type,
        user_email=sender,
        user_name=email.sender.display_name,
        mailbox=mailbox.name,
        record=mailbox.record,
        customer=customer.name if customer else None,
        cc=cc,
    )


def rule_ticket(
    ctx: Context, mailbox: Mailbox, email: InboundEmail, match: RuleMatch, **changes: Any
) -> NewTicket:
    """The new ticket a rule opens: the email's, with the rule's type, fields and asset.

    Args:
        ctx: The processor's parts.
        mailbox: The mailbox the email came from.
        email: The email.
        match: The rule that matched, with what it read.
        **changes: What the rule's type sets on top (an alert key, a summary …).
    """
    rule, extraction = match.rule, match.extraction
    new = new_ticket(ctx, mailbox, email)
    fields: dict[str, Any] = {
        name: str(extraction.fields[name]) for name in _TICKET_FIELDS if name in extraction.fields
    }
    if "user_email" in fields:
        fields.update(_requester(ctx, new, fields["user_email"]))
    fields["custom_fields"] = {**new.custom_fields, **extraction.custom_fields}
    if rule.ticket_type:
        fields["ticket_type"] = rule.ticket_type
    if extraction.priority:
        fields["priority"] = extraction.priority
    fields.update(changes)
    found = (ctx.repository.find_asset(field, tag) for field, tag in extraction.asset_tags)
    asset_ids = tuple(dict.fromkeys(asset.id for asset in found if asset is not None))
    if asset_ids:
        fields["asset_ids"] = asset_ids
    return attrs.evolve(new, **fields)


def _requester(ctx: Context, new: NewTicket, address: str) -> dict[str, Any]:
    """Who a mapped ``user_email`` names, looked up again: a web form sends for someone
    else, so the form's own name and customer must not stay on their ticket."""
    requester = address.strip().lower()
    user = ctx.repository.find_user(requester)
    customer = ctx.repository.find_customer(requester)
    return {
        "user_email": requester,
        "user_name": user.name if user is not None else "",
        "customer": customer.name if customer is not None else None,
        "cc": tuple(address for address in new.cc if address != requester),
    }


def inbound_action(
    ticket_id: int, email: InboundEmail, *, new_text_only: bool = False, public: bool = True
) -> NewAction:
    """The email as an action on ``ticket_id`` (a follow-up keeps only its new text)."""
    body = (email.new_text or email.text) if new_text_only else email.text
    return NewAction(
        ticket_id=ticket_id,
        kind=ActionKind.EMAIL_IN,
        body=body,
        from_address=email.sender.normalized if email.sender else "",
        public=public,
        message_id=email.message_id,
        attachments=stored(email),
    )


def open_ticket(
    ctx: Context,
    mailbox: Mailbox,
    email: InboundEmail,
    new: NewTicket,
    decision: Decision,
    *,
    public: bool = True,
) -> tuple[int, bool]:
    """Create the ticket with the email as its first action, and queue the acknowledgement.

    Returns:
        The ticket's id, and whether an acknowledgement was queued (a template that
        fails to render sends nothing; the ticket is created all the same).
    """
    ticket = ctx.repository.create_ticket(new)
    ctx.repository.add_action(inbound_action(ticket.id, email, public=public))
    if not decision.acknowledge:
        return ticket.id, False
    acknowledgement = _acknowledgement(ctx, mailbox, ticket, email)
    if acknowledgement is not None:
        ctx.repository.enqueue_outgoing(acknowledgement)
    return ticket.id, acknowledgement is not None


def _acknowledgement(
    ctx: Context, mailbox: Mailbox, ticket: Ticket, email: InboundEmail
) -> NewOutgoing | None:
    """The New Ticket Logged mail, rendered from the mailbox's message group."""
    assert email.sender is not None
    references = (*email.references, email.message_id) if email.message_id else email.references
    return ctx.notifier.acknowledgement(
        ticket,
        ctx.notifier.profile(mailbox.name),
        to=ticket.user_email or email.sender.normalized,
        in_reply_to=email.message_id,
        references=references,
    )
