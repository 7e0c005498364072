"""The mail processor: each email, one unit of work, exactly once.

For every email a mailbox yields, :class:`MailProcessor`

1. parses it (:func:`~halomail.parse_email`, which never raises),
2. looks up its dedupe key — a second fetch of the same email changes nothing,
3. classifies it (auto-reply, bounce, bulk, our own mail fetched back),
4. correlates it with an existing ticket (subject tag, or a Message-ID we know),
5. decides its outcome, and
6. writes the outcome, the dedupe key and any acknowledgement to the outbox in
   **one** repository transaction,

and only after that commit asks the connector to dispose of the source email. A
crash anywhere therefore leaves either nothing (the email is fetched again) or
the whole outcome (the email is recognised by its dedupe key and disposed of).
Outgoing mail is sent after all mailboxes are read, from the outbox.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence

import attrs

from halomail.connectors.base import Disposition, FetchedMessage, MailboxConnector, MailTransport
from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.inbound.classify import classify
from halomail.inbound.models import Classification, InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email
from halomail.outbox import Backoff, MessageIdFactory, Outbox, SenderIdentity, SendReport
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewTicket,
    OutboxMail,
    RecordKind,
    StoredAttachment,
    Ticket,
    TicketStatus,
    utcnow,
)
from halomail.tickets.repository import TicketRepository

__all__ = [
    "MailProcessor",
    "Mailbox",
    "MailboxHealth",
    "MailboxReport",
    "Outcome",
    "ProcessingOutcome",
    "ProcessorSettings",
    "RunReport",
]

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How the processing of one email ended (design §3)."""

    CREATED = "created"  # a new ticket (or opportunity)
    UPDATED = "updated"  # an action added to an existing ticket
    CLOSED = "closed"  # an existing ticket closed
    STATUS = "status"  # a monitored service's heartbeat recorded
    IGNORED = "ignored"  # a rule or a policy said to ignore it
    SKIPPED = "skipped"  # a duplicate, or our own mail fetched back
    QUARANTINED = "quarantined"  # kept aside with its reason and bytes
    RETRY = "retry"  # a transient failure; the source email is untouched


@attrs.frozen
class ProcessingOutcome:
    """What happened to one email, and why.

    Args:
        mailbox: The mailbox's name.
        ref: The connector's id of the email.
        outcome: How it ended.
        message_id: The email's Message-ID, if it had one.
        ticket_id: The ticket created or changed, if any.
        rule: The rule that decided, if any.
        reason: A machine-readable reason (``duplicate``, ``own-message``,
            ``mime-too-deep`` …) or ``None`` for the plain cases.
        acknowledged: True when an acknowledgement was queued.
        subject: The decoded subject (for reports).
    """

    mailbox: str
    ref: str
    outcome: Outcome
    message_id: str | None = None
    ticket_id: int | None = None
    rule: str | None = None
    reason: str | None = None
    acknowledged: bool = False
    subject: str = ""

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``halomail run --json``."""
        return {
            "mailbox": self.mailbox,
            "message_id": self.message_id,
            "outcome": self.outcome.value,
            "ticket_id": self.ticket_id,
            "rule": self.rule,
            "reason": self.reason,
        }


@attrs.frozen
class Mailbox:
    """A mailbox the processor reads, with its per-mailbox settings.

    Args:
        connector: How to read it.
        name: Its name (defaults to the connector's).
        ticket_type: The type of the tickets it creates.
        record: Whether it creates tickets or opportunities.
        send_acknowledgement: Whether new tickets are acknowledged by email.
        subject_tag: The threading tag's opening, closed by ``]`` (``[ID:`` → ``[ID:123]``).
        start_from: ``"all"``, or ``"now"`` to leave alone the mail already there when
            the mailbox is first read (safe onboarding of a busy mailbox).
        hijack: What a follow-up from an address unrelated to the ticket becomes:
            ``"new-ticket"`` or ``"quarantine"``.
        sender: Who acknowledgements from this mailbox are from.
        enabled: Disabled mailboxes are not read.
    """

    connector: MailboxConnector
    name: str = ""
    ticket_type: str = "Incident"
    record: RecordKind = RecordKind.TICKET
    send_acknowledgement: bool = True
    subject_tag: str = "[ID:"
    start_from: str = "all"
    hijack: str = "new-ticket"
    sender: SenderIdentity | None = None
    enabled: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", getattr(self.connector, "name", "") or "mailbox")
        if self.start_from not in ("all", "now"):
            raise ValueError(f"start_from must be 'all' or 'now', not {self.start_from!r}")
        if self.hijack not in ("new-ticket", "quarantine"):
            raise ValueError(f"hijack must be 'new-ticket' or 'quarantine', not {self.hijack!r}")

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        """Matches this mailbox's tag in a subject: ``[ID:123]`` and the bare ``[ID 123]``."""
        return _tag_pattern(self.subject_tag)

    def tag(self, ticket_id: int) -> str:
        """The tag for ``ticket_id``, e.g. ``[ID:123]``."""
        return f"{self.subject_tag}{ticket_id}]"


def _tag_pattern(subject_tag: str) -> re.Pattern[str]:
    opening = subject_tag.rstrip(":#- ")
    return re.compile(re.escape(opening) + r"(?:[:#-]\s*|\s+)(\d{1,12})\s*\]", re.IGNORECASE)


@attrs.frozen
class ProcessorSettings:
    """Settings that apply to every mailbox.

    Args:
        loop_token: Marks our own mail (loop header and Message-ID signature).
        domain: The domain of our Message-IDs.
        default_sender: Who acknowledgements are from when a mailbox names nobody.
        limits: Parsing limits (design §4).
        bulk: What list or bulk mail becomes: ``"ticket"`` or ``"ignore"``.
        ack_throttle_count: At most this many acknowledgements …
        ack_throttle_window: … to one address (and per ticket) in this window.
        backoff: The outbox's retry strategy.
    """

    loop_token: str = attrs.field(repr=False)
    domain: str = "halomail.invalid"
    default_sender: SenderIdentity = attrs.field(
        factory=lambda: SenderIdentity("helpdesk@halomail.invalid", "Helpdesk")
    )
    limits: ParseLimits = attrs.field(factory=ParseLimits)
    bulk: str = "ticket"
    ack_throttle_count: int = 10
    ack_throttle_window: dt.timedelta = dt.timedelta(minutes=10)
    backoff: Backoff = attrs.field(factory=Backoff)


@attrs.frozen
class MailboxHealth:
    """A mailbox's state, as an administrator wants to see it.

    Args:
        name: The mailbox.
        last_success: When it was last read without error.
        last_error: The last error (secret-free), or ``None``.
        last_error_at: When that error happened.
        consecutive_failures: Failed reads since the last success.
    """

    name: str
    last_success: dt.datetime | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used by ``halomail run --json``."""
        return {
            "mailbox": self.name,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "consecutive_failures": self.consecutive_failures,
        }


@attrs.frozen
class MailboxReport:
    """What one pass over one mailbox did."""

    name: str
    outcomes: tuple[ProcessingOutcome, ...]
    error: str | None = None
    left_alone: int = 0


@attrs.frozen
class RunReport:
    """What one cycle over every mailbox did."""

    mailboxes: tuple[MailboxReport, ...]
    sent: SendReport = attrs.field(factory=SendReport)

    @property
    def outcomes(self) -> tuple[ProcessingOutcome, ...]:
        """Every email's outcome, mailbox by mailbox."""
        return tuple(o for report in self.mailboxes for o in report.outcomes)

    @property
    def ok(self) -> bool:
        """False when a mailbox failed or an email was quarantined or left for retry."""
        return all(report.error is None for report in self.mailboxes) and not any(
            o.outcome in (Outcome.QUARANTINED, Outcome.RETRY) for o in self.outcomes
        )


@attrs.frozen
class _Decision:
    """What the processor will do with one email; nothing is written yet."""

    outcome: Outcome
    reason: str | None = None
    ticket: Ticket | None = None  # the existing ticket a follow-up or bounce belongs to
    reopen: bool = False
    acknowledge: bool = False
    rule: str | None = None


_UNDELIVERABLE = "undeliverable:"


class MailProcessor:
    """Turns the email of one or more mailboxes into tickets, exactly once.

    Args:
        repository: Where tickets live (the host's, or a shipped implementation).
        mailboxes: The mailboxes to read.
        settings: Settings for every mailbox.
        transport: How outgoing mail leaves; without one, mail stays queued.
        clock: The current time (replaceable in tests).

    Example::

        processor = MailProcessor(repo, [Mailbox(MaildirConnector("Support", "inbox"))],
                                  ProcessorSettings(loop_token="…"), transport=transport)
        report = processor.run_once()

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        repository: TicketRepository,
        mailboxes: Sequence[Mailbox],
        settings: ProcessorSettings,
        *,
        transport: MailTransport | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        names = [m.name for m in mailboxes]
        if len(set(names)) != len(names):
            raise ValueError(f"mailbox names must be unique: {names}")
        self.repository = repository
        self.mailboxes = tuple(mailboxes)
        self.settings = settings
        self.transport = transport
        self._clock = clock
        self._ids = MessageIdFactory(settings.loop_token, settings.domain)
        self._health: dict[str, MailboxHealth] = {m.name: MailboxHealth(m.name) for m in mailboxes}

    # -- running ---------------------------------------------------------------

    def run_once(
        self, *, on_outcome: Callable[[ProcessingOutcome], None] | None = None
    ) -> RunReport:
        """Read every enabled mailbox once, then send the outbox.

        One broken mailbox never stops the others: its error lands in its report
        and in :meth:`health`.

        Args:
            on_outcome: Called with each email's outcome as soon as it is known.
        """
        reports = tuple(
            self.process_mailbox(m, on_outcome=on_outcome) for m in self.mailboxes if m.enabled
        )
        sent = self.send_outbox()
        return RunReport(mailboxes=reports, sent=sent)

    def process_mailbox(
        self, mailbox: Mailbox, *, on_outcome: Callable[[ProcessingOutcome], None] | None = None
    ) -> MailboxReport:
        """Process every email of ``mailbox``; never raises for a mailbox failure.

        Args:
            mailbox: One of this processor's mailboxes.
            on_outcome: Called with each email's outcome as soon as it is known.
        """
        outcomes: list[ProcessingOutcome] = []
        left_alone = 0
        error: str | None = None
        try:
            baseline = self._onboarding_baseline(mailbox)
            messages: Iterator[FetchedMessage] = iter(mailbox.connector.fetch())
            for fetched in messages:
                if baseline is not None and fetched.ref in baseline:
                    left_alone += 1
                    continue
                outcome = self.process_message(mailbox, fetched)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        except Exception as exc:  # noqa: BLE001 - one broken mailbox must not stop the others
            error = f"{type(exc).__name__}: {exc}"
            log.error("mailbox %s failed: %s", mailbox.name, error)
        finally:
            try:
                mailbox.connector.close()
            except Exception as exc:  # noqa: BLE001 - a failed close is reported, not raised
                error = error or f"close failed: {type(exc).__name__}: {exc}"
                log.error("mailbox %s: close failed: %s", mailbox.name, exc)
        self._record_health(mailbox.name, error)
        if left_alone:
            log.info(
                "mailbox %s: left %d older emails alone (start_from=now)", mailbox.name, left_alone
            )
        return MailboxReport(mailbox.name, tuple(outcomes), error=error, left_alone=left_alone)

    def send_outbox(self) -> SendReport:
        """Send the queued outgoing mail that is due (nothing without a transport)."""
        if self.transport is None:
            return SendReport()
        outbox = Outbox(
            self.repository,
            self.transport,
            self._sender_for,
            loop_token=self.settings.loop_token,
            backoff=self.settings.backoff,
            clock=self._clock,
        )
        return outbox.send_due()

    def health(self) -> tuple[MailboxHealth, ...]:
        """Each mailbox's last success, last error and consecutive failures."""
        return tuple(self._health[m.name] for m in self.mailboxes)

    # -- one email -------------------------------------------------------------

    def process_message(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        """Run the unit of work for one fetched email and dispose of it.

        Never raises: a transient repository failure gives ``retry`` (the source is
        left untouched), anything unexpected quarantines the email with its reason.
        """
        try:
            outcome = self._process(mailbox, fetched)
        except TransientRepositoryError as exc:
            log.warning("mailbox %s ref %s: will retry: %s", mailbox.name, fetched.ref, exc)
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason="transient-error"
            )
        except Exception as exc:
            log.exception("mailbox %s ref %s: processing failed", mailbox.name, fetched.ref)
            outcome = self._quarantine_after_error(mailbox, fetched, exc)
        self._dispose(mailbox, fetched.ref, outcome.outcome)
        log.info(
            "%s %s %s ticket=%s reason=%s",
            mailbox.name,
            outcome.message_id or fetched.ref,
            outcome.outcome.value,
            outcome.ticket_id,
            outcome.reason,
        )
        return outcome

    def simulate(self, raw: bytes, mailbox: Mailbox | None = None) -> ProcessingOutcome:
        """What processing ``raw`` would do, and why; nothing is written or sent."""
        mailbox = mailbox or self.mailboxes[0]
        email = parse_email(raw, limits=self.settings.limits)
        fetched = FetchedMessage(ref="simulate", raw=raw, size=len(raw))
        key, fingerprint = self._dedupe_key(mailbox, email, raw)
        decision = self._decide(mailbox, fetched, email, key, fingerprint)
        return ProcessingOutcome(
            mailbox.name,
            "simulate",
            decision.outcome,
            email.message_id,
            decision.ticket.id if decision.ticket else None,
            decision.rule,
            decision.reason,
            acknowledged=decision.acknowledge,
            subject=email.subject,
        )

    def _process(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        if fetched.too_large:
            return self._quarantine_too_large(mailbox, fetched)
        email = parse_email(fetched.raw, limits=self.settings.limits)
        key, fingerprint = self._dedupe_key(mailbox, email, fetched.raw)
        with self.repository.transaction():
            # Decide inside the transaction so that two processors racing on one
            # mailbox cannot both create a ticket for the same email.
            decision = self._decide(mailbox, fetched, email, key, fingerprint)
            return self._apply(mailbox, fetched, email, key, fingerprint, decision)

    def _dedupe_key(self, mailbox: Mailbox, email: InboundEmail, raw: bytes) -> tuple[str, str]:
        """The dedupe key and the content fingerprint of an email.

        The fingerprint leaves out the header block, so the same email delivered
        twice with different trace headers (Received, Delivered-To) is still a
        duplicate, while a different email that reuses a Message-ID is not.
        """
        separator = raw.find(b"\r\n\r\n")
        if separator < 0:
            separator = raw.find(b"\n\n")
        body = raw[separator:] if separator >= 0 else raw
        digest = hashlib.sha256(body)
        for part in (email.subject, str(email.sender or ""), email.message_id or ""):
            digest.update(b"\x00" + part.encode("utf-8", "replace"))
        fingerprint = digest.hexdigest()
        if email.message_id:
            return f"{mailbox.name}\x1fid:{email.message_id}", fingerprint
        return f"{mailbox.name}\x1fsha256:{email.sha256}", fingerprint

    def _decide(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
    ) -> _Decision:
        repo = self.repository
        previous = repo.get_dedupe(key)
        if previous is not None:
            if previous.sha256 == fingerprint:
                return _Decision(Outcome.SKIPPED, "duplicate")
            # Same Message-ID, different content: never drop it silently (L7).
            if repo.get_dedupe(_collision_key(key, fingerprint)) is not None:
                return _Decision(Outcome.SKIPPED, "duplicate")
            return _Decision(Outcome.QUARANTINED, "message-id-collision")
        if email.quarantine_reason:
            return _Decision(Outcome.QUARANTINED, email.quarantine_reason)

        classification = classify(
            email, loop_token=self.settings.loop_token, is_own_message_id=self._ids.is_ours
        )
        if classification.own_message:
            return _Decision(Outcome.SKIPPED, "own-message")
        if email.sender is None:
            return _Decision(Outcome.QUARANTINED, "unparseable-sender")
        if classification.bounce:
            return self._decide_bounce(email, classification)

        ticket = self._correlate(mailbox, email)
        if ticket is not None:
            if self._related(ticket, email):
                # An auto-reply on the thread is recorded but changes nothing (O1).
                reopen = not ticket.is_open and classification.may_acknowledge
                return _Decision(Outcome.UPDATED, None, ticket=ticket, reopen=reopen)
            if mailbox.hijack == "quarantine":
                return _Decision(Outcome.QUARANTINED, "thread-hijack-suspected")
            log.warning(
                "mailbox %s: %s is unrelated to ticket %d; opening a new ticket",
                mailbox.name,
                email.sender.normalized,
                ticket.id,
            )
            return self._decide_new(mailbox, email, classification, "unrelated-sender")
        if classification.bulk and self.settings.bulk == "ignore":
            return _Decision(Outcome.IGNORED, "bulk")
        return self._decide_new(mailbox, email, classification, None)

    def _decide_new(
        self,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        reason: str | None,
    ) -> _Decision:
        acknowledge = False
        if mailbox.send_acknowledgement and email.sender is not None:
            acknowledge, why_not = self._may_acknowledge(email, classification)
            if not acknowledge and why_not:
                reason = reason or why_not
        return _Decision(Outcome.CREATED, reason, acknowledge=acknowledge)

    def _may_acknowledge(
        self, email: InboundEmail, classification: Classification
    ) -> tuple[bool, str | None]:
        if not classification.may_acknowledge:
            return False, None
        assert email.sender is not None
        address = email.sender.normalized
        if self.repository.get_state(_UNDELIVERABLE + address) is not None:
            return False, "undeliverable-sender"
        since = self._clock() - self.settings.ack_throttle_window
        if (
            self.repository.count_outgoing(to=address, since=since)
            >= self.settings.ack_throttle_count
        ):
            log.warning("acknowledgements to %s throttled", address)
            return False, "acknowledgement-throttled"
        return True, None

    def _decide_bounce(self, email: InboundEmail, classification: Classification) -> _Decision:
        candidates = [mid for mid in (classification.bounced_message_id, *email.thread_ids) if mid]
        ticket = self.repository.find_ticket_by_message_ids(candidates) if candidates else None
        if ticket is None:
            return _Decision(Outcome.QUARANTINED, "bounce-unmatched")
        return _Decision(Outcome.UPDATED, "bounce", ticket=ticket)

    def _correlate(self, mailbox: Mailbox, email: InboundEmail) -> Ticket | None:
        """The existing ticket this email follows up, by subject tag or Message-ID."""
        match = mailbox.tag_pattern.search(email.subject)
        if match:
            ticket = self.repository.get_ticket(int(match.group(1)))
            if ticket is not None:
                return ticket
        if email.thread_ids:
            return self.repository.find_ticket_by_message_ids(email.thread_ids)
        return None

    def _related(self, ticket: Ticket, email: InboundEmail) -> bool:
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
            customer = self.repository.find_customer(sender)
            return customer is not None and customer.name == ticket.customer
        return False

    # -- writing ---------------------------------------------------------------

    def _apply(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
        decision: _Decision,
    ) -> ProcessingOutcome:
        repo = self.repository
        ticket_id: int | None = decision.ticket.id if decision.ticket else None
        acknowledged = False
        if decision.outcome is Outcome.SKIPPED and decision.reason == "duplicate":
            previous = repo.get_dedupe(key)
            return ProcessingOutcome(
                mailbox.name,
                fetched.ref,
                Outcome.SKIPPED,
                email.message_id,
                previous.ticket_id if previous else None,
                reason="duplicate",
                subject=email.subject,
            )
        if decision.outcome is Outcome.QUARANTINED:
            dedupe_key = key
            if decision.reason == "message-id-collision":
                dedupe_key = _collision_key(key, fingerprint)
            repo.quarantine(
                NewQuarantine(
                    mailbox=mailbox.name,
                    reason=decision.reason or "unknown",
                    raw=fetched.raw,
                    detail=_QUARANTINE_DETAILS.get(decision.reason or "", ""),
                    message_id=email.message_id,
                    dedupe_key=dedupe_key,
                )
            )
            repo.record_dedupe(DedupeRecord(dedupe_key, fingerprint, Outcome.QUARANTINED.value))
        elif decision.outcome is Outcome.UPDATED and decision.ticket is not None:
            ticket_id = decision.ticket.id
            if decision.reason == "bounce":
                self._apply_bounce(email, ticket_id)
            else:
                repo.add_action(self._inbound_action(ticket_id, email, new_text_only=True))
                if decision.reopen:
                    repo.set_status(ticket_id, TicketStatus.OPEN)
            repo.record_dedupe(DedupeRecord(key, fingerprint, Outcome.UPDATED.value, ticket_id))
        elif decision.outcome is Outcome.CREATED:
            ticket = repo.create_ticket(self._new_ticket(mailbox, email))
            ticket_id = ticket.id
            repo.add_action(self._inbound_action(ticket_id, email, new_text_only=False))
            if decision.acknowledge:
                repo.enqueue_outgoing(self._acknowledgement(mailbox, ticket, email))
                acknowledged = True
            repo.record_dedupe(DedupeRecord(key, fingerprint, Outcome.CREATED.value, ticket_id))
        else:  # ignored, or skipped as our own mail
            repo.record_dedupe(DedupeRecord(key, fingerprint, decision.outcome.value))
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

    def _apply_bounce(self, email: InboundEmail, ticket_id: int) -> None:
        repo = self.repository
        # Which of our recipients bounced: the ticket's outbox mail named in the bounce.
        ticket = repo.get_ticket(ticket_id)
        if ticket is not None:
            repo.set_state(_UNDELIVERABLE + ticket.user_email.lower(), self._clock().isoformat())
        repo.add_action(
            NewAction(
                ticket_id=ticket_id,
                kind=ActionKind.BOUNCE,
                body=f"Delivery failed: {email.subject}\n\n{email.text}",
                from_address=email.sender.normalized if email.sender else "",
                public=False,
                message_id=None,
                attachments=_stored(email),
            )
        )

    def _new_ticket(self, mailbox: Mailbox, email: InboundEmail) -> NewTicket:
        assert email.sender is not None
        sender = email.sender.normalized
        customer = self.repository.find_customer(sender)
        own = {sender, *self._own_addresses(mailbox)}
        cc = tuple(
            dict.fromkeys(a.normalized for a in (*email.to, *email.cc) if a.normalized not in own)
        )
        return NewTicket(
            summary=email.subject.strip() or "(no subject)",
            details=email.text,
            ticket_type=mailbox.ticket_type,
            user_email=sender,
            user_name=email.sender.display_name,
            mailbox=mailbox.name,
            record=mailbox.record,
            customer=customer.name if customer else None,
            cc=cc,
        )

    def _inbound_action(
        self, ticket_id: int, email: InboundEmail, *, new_text_only: bool
    ) -> NewAction:
        body = (email.new_text or email.text) if new_text_only else email.text
        return NewAction(
            ticket_id=ticket_id,
            kind=ActionKind.EMAIL_IN,
            body=body,
            from_address=email.sender.normalized if email.sender else "",
            public=True,
            message_id=email.message_id,
            attachments=_stored(email),
        )

    def _acknowledgement(
        self, mailbox: Mailbox, ticket: Ticket, email: InboundEmail
    ) -> NewOutgoing:
        assert email.sender is not None
        name = email.sender.display_name or email.sender.addr_spec
        tag = mailbox.tag(ticket.id)
        text = (
            f"Hello {name},\n\n"
            f"Thank you for your email. We have logged it as ticket {ticket.id}:\n\n"
            f"    {ticket.summary}\n\n"
            f"We will be in touch. When you reply, please keep {tag} in the subject.\n"
        )
        references = (*email.references, email.message_id) if email.message_id else email.references
        return NewOutgoing(
            message_id=self._ids.new(ticket.id),
            to=(email.sender.normalized,),
            subject=f"{tag} {ticket.summary}",
            text=text,
            mailbox=mailbox.name,
            kind="acknowledgement",
            ticket_id=ticket.id,
            in_reply_to=email.message_id,
            references=tuple(references),
            auto_submitted=True,
        )

    def _quarantine_too_large(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        key = f"{mailbox.name}\x1fref:{fetched.ref}:{fetched.size}"
        with self.repository.transaction():
            if self.repository.get_dedupe(key) is None:
                self.repository.quarantine(
                    NewQuarantine(
                        mailbox=mailbox.name,
                        reason="too-large",
                        raw=b"",
                        detail=f"{fetched.size} bytes: over the limit; left in the mailbox unread",
                        dedupe_key=key,
                    )
                )
                self.repository.record_dedupe(DedupeRecord(key, "", Outcome.QUARANTINED.value))
        return ProcessingOutcome(mailbox.name, fetched.ref, Outcome.QUARANTINED, reason="too-large")

    def _quarantine_after_error(
        self, mailbox: Mailbox, fetched: FetchedMessage, exc: Exception
    ) -> ProcessingOutcome:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        # Keyed by the bytes, so that the same email failing again on a re-fetch
        # (a backend that cannot move it aside) is not quarantined twice.
        key = f"{mailbox.name}\x1ferror:{hashlib.sha256(fetched.raw).hexdigest()}"
        try:
            with self.repository.transaction():
                if self.repository.get_dedupe(key) is None:
                    self.repository.quarantine(
                        NewQuarantine(
                            mailbox=mailbox.name,
                            reason="processing-error",
                            raw=fetched.raw,
                            detail=detail,
                            dedupe_key=key,
                        )
                    )
                    self.repository.record_dedupe(DedupeRecord(key, "", Outcome.QUARANTINED.value))
        except RepositoryError:
            log.exception("mailbox %s ref %s: could not quarantine", mailbox.name, fetched.ref)
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason="processing-error"
            )
        return ProcessingOutcome(
            mailbox.name, fetched.ref, Outcome.QUARANTINED, reason="processing-error"
        )

    def _dispose(self, mailbox: Mailbox, ref: str, outcome: Outcome) -> None:
        """Ack the source email now that its outcome is committed."""
        if outcome is Outcome.RETRY:
            return
        disposition = (
            Disposition.QUARANTINED if outcome is Outcome.QUARANTINED else Disposition.PROCESSED
        )
        try:
            mailbox.connector.ack(ref, disposition)
        except Exception as exc:  # noqa: BLE001 - committed already; a re-fetch is a no-op
            log.warning(
                "mailbox %s ref %s: could not dispose (%s): %s",
                mailbox.name,
                ref,
                disposition.value,
                exc,
            )

    # -- small helpers ----------------------------------------------------------

    def _sender_for(self, mail: OutboxMail) -> SenderIdentity:
        for mailbox in self.mailboxes:
            if mailbox.name == mail.mailbox and mailbox.sender is not None:
                return mailbox.sender
        return self.settings.default_sender

    def _own_addresses(self, mailbox: Mailbox) -> set[str]:
        sender = mailbox.sender or self.settings.default_sender
        return {sender.from_address.lower()}

    def _record_health(self, name: str, error: str | None) -> None:
        previous = self._health.get(name, MailboxHealth(name))
        now = self._clock()
        if error is None:
            self._health[name] = attrs.evolve(previous, last_success=now, consecutive_failures=0)
        else:
            self._health[name] = attrs.evolve(
                previous,
                last_error=error,
                last_error_at=now,
                consecutive_failures=previous.consecutive_failures + 1,
            )

    def _onboarding_baseline(self, mailbox: Mailbox) -> set[str] | None:
        """For ``start_from = "now"``: the refs present when the mailbox was first read."""
        if mailbox.start_from != "now":
            return None
        state_key = f"mailbox:{mailbox.name}:baseline"
        stored = self.repository.get_state(state_key)
        if stored is not None:
            return set(json.loads(stored))
        # First read: remember what is there now, and leave all of it alone.
        refs = sorted(fetched.ref for fetched in mailbox.connector.fetch())
        self.repository.set_state(state_key, json.dumps(refs))
        log.info(
            "mailbox %s: onboarding mark set; %d existing emails left alone",
            mailbox.name,
            len(refs),
        )
        return set(refs)


def _collision_key(key: str, fingerprint: str) -> str:
    return f"{key}\x1fcollision:{fingerprint}"


def _stored(email: InboundEmail) -> tuple[StoredAttachment, ...]:
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


_QUARANTINE_DETAILS = {
    "too-large": "The email is larger than the configured limit.",
    "mime-too-deep": "The email's MIME parts nest deeper than the configured limit.",
    "too-many-parts": "The email has more MIME parts than the configured limit.",
    "headers-too-large": "The email's headers are larger than the configured limit.",
    "unparseable-sender": "The From header holds no valid address.",
    "bounce-unmatched": "A delivery failure that names none of our emails.",
    "thread-hijack-suspected": "A follow-up from an address unrelated to the ticket.",
    "message-id-collision": "Another email with the same Message-ID and different content "
    "was already processed.",
    "unparseable": "The email could not be parsed.",
}
