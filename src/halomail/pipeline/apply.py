"""The apply step: write a :class:`Decision`, with the email's dedupe record.

Called inside the unit's one transaction, so the ticket, its actions, the
acknowledgement in the outbox and the dedupe record are committed together or
not at all.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import attrs

from halomail.backends.base import FetchedMessage
from halomail.inbound.dsn import DeliveryReport
from halomail.inbound.models import Address, InboundEmail
from halomail.pipeline.acknowledge import UNDELIVERABLE, mark_value
from halomail.pipeline.context import Context
from halomail.pipeline.decide import copy_key
from halomail.pipeline.handlers import handler_for
from halomail.pipeline.records import inbound_action, new_ticket, open_ticket, stored
from halomail.pipeline.results import (
    QUARANTINE_DETAILS,
    Decision,
    Outcome,
    ProcessingOutcome,
    Reason,
)
from halomail.pipeline.retention import mark_seen
from halomail.pipeline.settings import Mailbox
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    NewQuarantine,
    TicketStatus,
)

__all__ = ["apply", "recorded_key"]

#: Outcomes that changed the helpdesk: another mailbox's copy of such an email is skipped
#: (``[processing] copies``). A copy of one ignored or quarantined here is decided in its
#: own mailbox, whose rules may say otherwise.
_COPIED_OUTCOMES = frozenset({Outcome.CREATED, Outcome.UPDATED, Outcome.CLOSED, Outcome.STATUS})


def recorded_key(decision: Decision, key: str) -> str:
    """The dedupe key ``decision`` is recorded under (a reused Message-ID gets its own,
    made by :func:`~halomail.pipeline.decide.collision_key`)."""
    return decision.dedupe_key or key


def apply(
    ctx: Context,
    mailbox: Mailbox,
    fetched: FetchedMessage,
    email: InboundEmail,
    key: str,
    fingerprint: str,
    decision: Decision,
) -> ProcessingOutcome:
    """Write ``decision`` and the email's dedupe record; the caller holds the transaction.

    Raises:
        DuplicateKeyError: Another runner recorded the same email first (the caller
            rolls back and reports a duplicate).
    """
    if decision.is_duplicate:
        # Handled before: nothing is written (but the record's seen mark, with ledger
        # retention), and the source goes where the first copy went.
        mark_seen(ctx, decision.seen)
        return ProcessingOutcome(
            mailbox.name,
            fetched.ref,
            Outcome.SKIPPED,
            email.message_id,
            decision.previous_ticket_id,
            reason=decision.reason,
            subject=email.subject,
            recorded=decision.recorded,
        )
    ticket_id, acknowledged = _write(ctx, mailbox, fetched, email, decision, key, fingerprint)
    if decision.outcome is Outcome.CREATED and decision.repeat_state is not None:
        ctx.repository.set_state(*decision.repeat_state)  # the long-window loop cap counts it
    ctx.repository.record_dedupe(
        DedupeRecord(
            recorded_key(decision, key),
            fingerprint,
            decision.outcome.value,
            ticket_id,
        )
    )
    copy = copy_key(ctx, email, fingerprint)
    if copy is not None and decision.outcome in _COPIED_OUTCOMES:
        # In the same transaction: a runner reading another mailbox at the same time
        # that records the copy first makes this one raise DuplicateKeyError, and it
        # is decided again (unit._lost_race) as a copy.
        ctx.repository.record_dedupe(
            DedupeRecord(copy, fingerprint, decision.outcome.value, ticket_id)
        )
    return ProcessingOutcome(
        mailbox.name,
        fetched.ref,
        decision.outcome,
        email.message_id,
        ticket_id,
        decision.rule,
        decision.reason,
        acknowledged=acknowledged,
        subject=email.subject,
    )


def _write(
    ctx: Context,
    mailbox: Mailbox,
    fetched: FetchedMessage,
    email: InboundEmail,
    decision: Decision,
    key: str,
    fingerprint: str,
) -> tuple[int | None, bool]:
    """Everything but the dedupe record; returns the ticket affected and whether we replied."""
    if decision.outcome is Outcome.QUARANTINED:
        _quarantine(ctx, mailbox, fetched, email, decision, recorded_key(decision, key))
        return None, False
    if decision.match is not None:
        handler = handler_for(decision.match.rule.type)
        return handler.apply(ctx, mailbox, email, decision, decision.match)
    ticket = decision.ticket
    if decision.outcome is Outcome.UPDATED and ticket is not None:
        if decision.reason is Reason.BOUNCE:
            _note_bounce(ctx, email, ticket.id, decision.report)
        else:
            ctx.repository.add_action(inbound_action(ticket.id, email, new_text_only=True))
            if decision.reopen:
                ctx.repository.set_status(ticket.id, TicketStatus.OPEN)
            if decision.clear_undeliverable:
                # An empty value is a cleared mark: the address receives mail again.
                ctx.repository.set_state(UNDELIVERABLE + decision.clear_undeliverable, "")
        return ticket.id, False
    if decision.outcome is Outcome.CREATED:
        if decision.reason is Reason.BOUNCE_UNMATCHED:
            email = _with_report_sender(email)  # a bounce may come from no address at all
        new = new_ticket(ctx, mailbox, email)
        return open_ticket(ctx, mailbox, email, new, decision, public=True)
    # Ignored, or skipped as our own mail: only the dedupe record is written.
    return (ticket.id if ticket else None), False


def _quarantine(
    ctx: Context,
    mailbox: Mailbox,
    fetched: FetchedMessage,
    email: InboundEmail,
    decision: Decision,
    key: str,
) -> None:
    reason = decision.reason
    ctx.repository.quarantine(
        NewQuarantine(
            mailbox=mailbox.name,
            reason=reason.value if reason is not None else "unknown",
            raw=fetched.raw,
            detail=QUARANTINE_DETAILS.get(reason, "") if reason is not None else "",
            message_id=email.message_id,
            dedupe_key=key,
        )
    )


def _note_bounce(
    ctx: Context, email: InboundEmail, ticket_id: int, report: DeliveryReport | None
) -> None:
    """Attach a bounce to its ticket as a private note saying, per recipient, what
    happened; a permanent failure or an abuse complaint marks that recipient undeliverable
    (a delay blocks nothing)."""
    repo = ctx.repository
    now = ctx.clock()
    lines: list[str] = []
    for recipient in report.recipients if report is not None else ():
        if recipient.stops_mail:
            repo.set_state(UNDELIVERABLE + recipient.address, mark_value(now, recipient))
            until = (now + ctx.settings.undeliverable_for).date().isoformat()
            lines.append(f"- {recipient.describe()}; no acknowledgements to it until {until}")
        elif recipient.delayed:
            lines.append(f"- {recipient.describe()}; still being retried, nothing blocked")
        else:
            lines.append(f"- {recipient.describe()}")
    title = report.title if report is not None else "Delivery report"
    head = "\n".join([f"{title}:", *lines]) if lines else f"{title}: no recipient named."
    repo.add_action(
        NewAction(
            ticket_id=ticket_id,
            kind=ActionKind.BOUNCE,
            body=f"{head}\n\n{email.subject}\n\n{email.text}",
            from_address=email.sender.normalized if email.sender else "",
            public=False,
            message_id=None,
            attachments=stored(email),
        )
    )


def _with_report_sender(email: InboundEmail) -> InboundEmail:
    """``email`` with a sender to open a ticket for: a bounce from ``MAILER-DAEMON <>``
    has no address, and a ticket needs a user."""
    if email.sender is not None:
        return email
    return attrs.evolve(email, sender=Address("mailer-daemon", "Mail Delivery System"))
