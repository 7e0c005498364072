"""The decide step: one parsed email and the repository's answers → a :class:`Decision`.

Pure in the sense that matters: it reads the repository and writes nothing, so
``simulate`` and ``explain`` use it as it is. In order, an email is

1. a duplicate: its Message-ID is known *with the same body*; an email that reuses a
   known Message-ID with another body is a new email (devices do that), recorded under
   its own key,
2. quarantined by the parser's limits,
3. our own mail fetched back, or (unless it is a bounce, which needs no sender) from no
   parseable sender,
4. ignored by an ``ignore`` rule (which wins even over a bounce and a follow-up, so
   ``classification = "bounce"`` with ``type = "ignore"`` drops bounces),
5. a bounce: what the first matching rule makes of it when that rule names the
   ``bounce`` classification, else attached to the ticket whose mail bounced; one naming
   none of our mail is ignored, quarantined or a new ticket (``unmatched_bounces``),
6. a follow-up of an existing ticket (subject tag or Message-ID) from someone related
   to it, or a suspected hijack,
7. ignored as ``loop-suspected``: the same email from one sender opened the most
   tickets the long window allows (:mod:`halomail.pipeline.loops`; not for alerts,
   services, files and inventory, which repeat by nature),
8. what the first matching rule's handler makes of it,
9. for spam no rule took: what ``[processing] spam`` says (a ticket, ignored or
   quarantined), and for bulk mail no rule took, what ``bulk`` says, or
10. a new ticket.

Rules are evaluated once, after step 3, with the email's classification, so a rule can
name every classification it may meet (``spam``, ``bulk``, ``auto-reply``, ``bounce``).
Spam is never acknowledged, whatever took it: the classification forbids it, and its
outcome carries the reason ``spam`` unless a more telling one applies.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import logging

import attrs

from halomail.inbound.classify import classify
from halomail.inbound.dsn import DeliveryReport, read_report
from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.acknowledge import UNDELIVERABLE, decide_new
from halomail.pipeline.context import Context
from halomail.pipeline.handlers import handler_for
from halomail.pipeline.loops import check_repeats, counts_repeats
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleMatch
from halomail.tickets.models import DedupeRecord, Ticket

__all__ = [
    "classify_email",
    "collision_key",
    "copy_key",
    "decide",
    "dedupe_key",
    "legacy_key",
    "recorded_duplicate",
]

log = logging.getLogger(__name__)


def dedupe_key(mailbox: Mailbox, email: InboundEmail, raw: bytes) -> tuple[str, str]:
    """The dedupe key and the content fingerprint of an email.

    The fingerprint leaves out the header block, so the same email delivered twice
    with different trace headers (Received, Delivered-To) is still a duplicate, while a
    different email that reuses a Message-ID is not. An email with a Message-ID is keyed
    by it (the fingerprint, kept in its record, tells a re-fetch from another email); one
    without is keyed by the fingerprint, which then counts its Date too, so that a device
    sending the same alert text twice a day without Message-IDs opens two tickets.
    """
    separator = raw.find(b"\r\n\r\n")
    if separator < 0:
        separator = raw.find(b"\n\n")
    # A view, not a slice: a 50 MB email is not copied to be hashed.
    body = memoryview(raw)[separator:] if separator >= 0 else raw
    digest = hashlib.sha256(body)
    for part in (email.subject, str(email.sender or ""), email.message_id or ""):
        digest.update(b"\x00" + part.encode("utf-8", "replace"))
    if email.message_id:
        return f"{mailbox.name}\x1fid:{email.message_id}", digest.hexdigest()
    digest.update(b"\x00" + (email.header("Date") or "").encode("utf-8", "replace"))
    fingerprint = digest.hexdigest()
    return f"{mailbox.name}\x1fbody:{fingerprint}", fingerprint


def legacy_key(mailbox: Mailbox, email: InboundEmail) -> str | None:
    """The key 0.2 recorded an email without a Message-ID under (its raw bytes' SHA-256),
    or ``None`` for an email with one (its key has not changed)."""
    return None if email.message_id else f"{mailbox.name}\x1fsha256:{email.sha256}"


def collision_key(key: str, fingerprint: str) -> str:
    """The dedupe key of an email that reuses another's Message-ID with another body."""
    return f"{key}\x1fcollision:{fingerprint}"


def copy_key(ctx: Context, email: InboundEmail, fingerprint: str) -> str | None:
    """The key a copy of ``email`` in any of our mailboxes is recorded under, or ``None``
    for an email without a Message-ID, and when ``[processing] copies = "process"``
    (each mailbox processes its copy: there is no such key to read or write).

    One email sent to two of our mailboxes (support@ and sales@ in one To) reaches each
    with the same Message-ID, subject, sender and body, so the same fingerprint (which
    digests all four, see :func:`dedupe_key`); its trace headers differ, and the
    fingerprint leaves them out. An email without a Message-ID is never taken for a
    copy: two devices sending the same alert text are two emails. The key opens with
    the separator, so no mailbox's own key can look like it.
    """
    if not email.message_id or ctx.settings.copies != "skip":
        return None
    return f"\x1fcopy\x1f{fingerprint}"


def recorded_duplicate(record: DedupeRecord, reason: Reason = Reason.DUPLICATE) -> Decision:
    """A duplicate of the email ``record`` was written for: disposed of as it says.

    ``reason`` is :attr:`Reason.COPY` for a copy of an email another mailbox handled.
    """
    return Decision(
        Outcome.SKIPPED,
        reason,
        previous_ticket_id=record.ticket_id,
        recorded=_recorded_outcome(record.outcome),
        seen=record,
    )


def _recorded_outcome(value: str) -> Outcome | None:
    try:
        return Outcome(value)
    except ValueError:  # a host's repository may store something else: dispose as processed
        return None


def decide(
    ctx: Context,
    mailbox: Mailbox,
    email: InboundEmail,
    key: str,
    fingerprint: str,
    *,
    content_key: str | None = None,
) -> Decision:
    """What will happen to ``email``, and why; reads the repository, writes nothing.

    Args:
        ctx: The processor's parts.
        mailbox: The mailbox the email came from.
        email: The parsed email.
        key: Its dedupe key (:func:`dedupe_key`).
        fingerprint: Its content fingerprint (:func:`dedupe_key`).
        content_key: Its :func:`~halomail.pipeline.loops.repeat_key`, when the caller
            has it already (``None``: worked out if the loop cap needs it).
    """
    previous = ctx.repository.get_dedupe(key)
    if previous is None:
        # Recorded by 0.2 under its raw bytes' hash (a POP3 or IMAP mailbox that leaves
        # mail on the server fetches it again after an upgrade).
        legacy = legacy_key(mailbox, email)
        recorded = ctx.repository.get_dedupe(legacy) if legacy else None
        if recorded is not None:
            return recorded_duplicate(recorded)
        copied = _copied(ctx, mailbox, email, fingerprint)
        if copied is not None:
            return copied
        return _decide(ctx, mailbox, email, content_key)
    if previous.sha256 == fingerprint:
        return recorded_duplicate(previous)
    # The same Message-ID on another body: another email (a NAS or a UPS sending every
    # alert with one Message-ID), recorded under a key of its own.
    own_key = collision_key(key, fingerprint)
    recorded = ctx.repository.get_dedupe(own_key)
    if recorded is not None:
        return recorded_duplicate(recorded)
    # That other email may have reached another of our mailboxes first.
    copied = _copied(ctx, mailbox, email, fingerprint)
    if copied is not None:
        return copied
    log.info(
        "mailbox %s: Message-ID <%s> seen before with another body; a new email",
        mailbox.name,
        email.message_id,
    )
    return attrs.evolve(_decide(ctx, mailbox, email, content_key), dedupe_key=own_key)


def _copied(
    ctx: Context, mailbox: Mailbox, email: InboundEmail, fingerprint: str
) -> Decision | None:
    """``email`` skipped as a ``copy`` when another mailbox handled it (``[processing]
    copies = "skip"``), or ``None``."""
    copy = copy_key(ctx, email, fingerprint)
    recorded = ctx.repository.get_dedupe(copy) if copy else None
    if recorded is None:
        return None
    log.info(
        "mailbox %s: <%s> was handled in another mailbox (%s, ticket %s); a copy",
        mailbox.name,
        email.message_id,
        recorded.outcome,
        recorded.ticket_id,
    )
    return recorded_duplicate(recorded, Reason.COPY)


def _decide(
    ctx: Context, mailbox: Mailbox, email: InboundEmail, content_key: str | None
) -> Decision:
    """The decision for an email never seen before."""
    if email.quarantine_reason:
        return Decision(Outcome.QUARANTINED, Reason(email.quarantine_reason))

    classification = classify_email(ctx, email)
    if classification.own_message:
        return Decision(Outcome.SKIPPED, Reason.OWN_MESSAGE)
    if email.sender is None and not classification.bounce:
        return Decision(Outcome.QUARANTINED, Reason.UNPARSEABLE_SENDER)

    match = ctx.engine.evaluate(email, mailbox.name, classification) if ctx.engine else None
    handler = handler_for(match.rule.type) if match is not None else None
    if match is not None and handler is not None and handler.before_threading:
        return handler.decide(ctx, mailbox, email, classification, match, None)
    if classification.bounce:
        if match is not None and handler is not None and "bounce" in match.rule.classification:
            # The administrator named bounces in this rule: it takes them, not step 5.
            return handler.decide(ctx, mailbox, email, classification, match, None)
        return _decide_bounce(ctx, mailbox, email, classification)
    decision = _decide_rest(ctx, mailbox, email, classification, match, content_key)
    if classification.spam and decision.reason is None:
        # Spam is never acknowledged (the classification forbids it): say why.
        decision = attrs.evolve(decision, reason=Reason.SPAM)
    return decision


def classify_email(ctx: Context, email: InboundEmail) -> Classification:
    """The classification :func:`decide` works with: our tokens and Message-IDs known."""
    return classify(
        email,
        loop_token=ctx.settings.loop_token,
        previous_loop_tokens=ctx.settings.previous_loop_tokens,
        is_own_message_id=ctx.ids.is_ours,
    )


def _decide_rest(
    ctx: Context,
    mailbox: Mailbox,
    email: InboundEmail,
    classification: Classification,
    match: RuleMatch | None,
    content_key: str | None,
) -> Decision:
    """Steps 6 to 10: threading, loops, the matching rule, spam and bulk, a new ticket."""
    assert email.sender is not None
    handler = handler_for(match.rule.type) if match is not None else None

    reason: Reason | None = None
    ticket = _correlate(ctx, mailbox, email)
    if ticket is not None:
        if _related(ctx, ticket, email):
            # An auto-reply on the thread is recorded but changes nothing (O1).
            reopen = not ticket.is_open and classification.may_acknowledge
            cleared = _cleared_mark(ctx, email) if classification.may_acknowledge else None
            return Decision(
                Outcome.UPDATED, None, ticket=ticket, reopen=reopen, clear_undeliverable=cleared
            )
        if mailbox.hijack == "quarantine":
            return Decision(Outcome.QUARANTINED, Reason.THREAD_HIJACK_SUSPECTED)
        log.info(
            "mailbox %s: %s is unrelated to ticket %d; opening a new ticket",
            mailbox.name,
            email.sender.normalized,
            ticket.id,
        )
        reason = Reason.UNRELATED_SENDER
    state: tuple[str, str] | None = None  # what counts a new ticket towards the loop cap
    if counts_repeats(handler):
        repeats = check_repeats(ctx, mailbox.name, email, content_key)
        if repeats.suspected:
            # The same email again and again from one sender: a responder answering us.
            return Decision(Outcome.IGNORED, Reason.LOOP_SUSPECTED)
        state = repeats.state
    if match is not None and handler is not None:
        decision = handler.decide(ctx, mailbox, email, classification, match, reason)
    elif classification.spam and ctx.settings.spam != "ticket":
        decision = _decide_spam(ctx.settings.spam)
    elif classification.bulk and ctx.settings.bulk == "ignore":
        decision = Decision(Outcome.IGNORED, Reason.BULK)
    else:
        return decide_new(ctx, mailbox, email, classification, reason, repeat_state=state)
    return decision if state is None else attrs.evolve(decision, repeat_state=state)


def _decide_spam(setting: str) -> Decision:
    """Spam no rule took, when ``[processing] spam`` does not make it a ticket."""
    if setting == "quarantine":
        return Decision(Outcome.QUARANTINED, Reason.SPAM)
    return Decision(Outcome.IGNORED, Reason.SPAM)


def _decide_bounce(
    ctx: Context, mailbox: Mailbox, email: InboundEmail, classification: Classification
) -> Decision:
    """A bounce (or abuse report, or list error) is attached to the ticket whose mail it
    returns; one naming none of our mail is handled as ``unmatched_bounces`` says."""
    candidates = [mid for mid in (classification.bounced_message_id, *email.thread_ids) if mid]
    ticket = ctx.repository.find_ticket_by_message_ids(candidates) if candidates else None
    report = read_report(email, classification.bounce_kind)
    if ticket is not None:
        return Decision(Outcome.UPDATED, Reason.BOUNCE, ticket=ticket, report=report)
    return _unmatched_bounce(ctx, mailbox, classification, report)


def _unmatched_bounce(
    ctx: Context, mailbox: Mailbox, classification: Classification, report: DeliveryReport
) -> Decision:
    # Mostly backscatter: bounces of spam that forged one of our addresses.
    policy = ctx.settings.unmatched_bounces
    log.info(
        "mailbox %s: %s naming none of our mail (bounced Message-ID %s): %s",
        mailbox.name,
        classification.bounce_kind or "bounce",
        classification.bounced_message_id or "none found",
        {"ignore": "ignored", "quarantine": "quarantined", "ticket": "a new ticket"}[policy],
    )
    if policy == "quarantine":
        return Decision(Outcome.QUARANTINED, Reason.BOUNCE_UNMATCHED)
    if policy == "ticket":
        return Decision(Outcome.CREATED, Reason.BOUNCE_UNMATCHED, report=report)
    return Decision(Outcome.IGNORED, Reason.BOUNCE_UNMATCHED, report=report)


def _cleared_mark(ctx: Context, email: InboundEmail) -> str | None:
    """The sender's address when a person's reply from it finds it marked undeliverable.

    Only a reply on a ticket clears a mark: it proves someone reads that mailbox,
    whereas a new email "from" a dead address is most often forged (or a device that
    sends from an address nobody reads), and acknowledging it would bounce again.
    """
    assert email.sender is not None
    address = email.sender.normalized
    return address if ctx.repository.get_state(UNDELIVERABLE + address) else None


def _correlate(ctx: Context, mailbox: Mailbox, email: InboundEmail) -> Ticket | None:
    """The existing ticket this email follows up, by subject tag or Message-ID."""
    tagged = mailbox.tag_pattern.search(email.subject)
    if tagged:
        ticket = ctx.repository.get_ticket(int(tagged.group(1)))
        if ticket is not None:
            return ticket
    if email.thread_ids:
        return ctx.repository.find_ticket_by_message_ids(email.thread_ids)
    return None


def _related(ctx: Context, ticket: Ticket, email: InboundEmail) -> bool:
    """True when the sender may update ``ticket``: its user, a CC, its agent, or a
    contact of its customer."""
    assert email.sender is not None
    sender = email.sender.normalized
    people = {ticket.user_email.lower(), *(c.lower() for c in ticket.cc)}
    if ticket.agent:
        people.add(ticket.agent.lower())
    if sender in people:
        return True
    if ticket.customer:
        customer = ctx.repository.find_customer(sender)
        return customer is not None and customer.name == ticket.customer
    return False
