"""What processing an email ends in: outcomes, reasons, and the decision before the write.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum

import attrs

from halomail.inbound.dsn import DeliveryReport
from halomail.inbound.models import Classification
from halomail.rules import Explanation, RuleMatch
from halomail.tickets.models import DedupeRecord, FileOwner, ServiceStatus, Ticket

__all__ = [
    "AcknowledgementVerdict",
    "Decision",
    "Outcome",
    "ProcessingOutcome",
    "Reason",
    "Simulation",
]


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


class Reason(enum.StrEnum):
    """Why an email got its outcome: the machine-readable ``reason`` of an outcome.

    The values are the strings logs, ``halomail run --json`` and stored quarantine
    entries have always carried; a :class:`Reason` compares equal to its string.

    .. versionadded:: 0.1.0
    """

    # skipped
    DUPLICATE = "duplicate"
    COPY = "copy"  # the same email, handled in another mailbox ([processing] copies)
    OWN_MESSAGE = "own-message"
    # ignored
    RULE = "rule"
    BULK = "bulk"
    SPAM = "spam"  # also a quarantine reason, and the note on spam made a ticket
    NOTHING_OPEN_TO_CLOSE = "nothing-open-to-close"
    LOOP_SUSPECTED = "loop-suspected"
    # ignored by default ([processing] unmatched_bounces), or quarantined, or a new ticket
    BOUNCE_UNMATCHED = "bounce-unmatched"
    # quarantined: the parser's limits
    TOO_LARGE = "too-large"
    HEADERS_TOO_LARGE = "headers-too-large"
    MIME_TOO_DEEP = "mime-too-deep"
    TOO_MANY_PARTS = "too-many-parts"
    UNPARSEABLE = "unparseable"
    # quarantined: what the email is
    UNPARSEABLE_SENDER = "unparseable-sender"
    # Never produced since 0.3.0 (an email reusing a Message-ID is a new email); kept so
    # that older quarantine entries and outcomes still read.
    MESSAGE_ID_COLLISION = "message-id-collision"
    THREAD_HIJACK_SUSPECTED = "thread-hijack-suspected"
    FILE_TRANSFER_WITHOUT_OWNER = "file-transfer-without-owner"
    INVENTORY_WITHOUT_ASSET_TAG = "inventory-without-asset-tag"
    PROCESSING_ERROR = "processing-error"
    REPEATED_CRASH = "repeated-crash"  # ended the process twice; not parsed again
    # created or updated, with a note
    UNRELATED_SENDER = "unrelated-sender"
    UNDELIVERABLE_SENDER = "undeliverable-sender"
    ACKNOWLEDGEMENT_THROTTLED = "acknowledgement-throttled"
    BOUNCE = "bounce"
    FILES_STORED = "files-stored"
    ASSET_CREATED = "asset-created"
    ASSET_UPDATED = "asset-updated"
    REPEATED_ALERT = "repeated-alert"
    CLEARED_WHILE_ASSIGNED = "cleared-while-assigned"
    ALERT_CLEARED = "alert-cleared"
    # monitored services
    SERVICE_OK = "service-ok"
    SERVICE_FAILED = "service-failed"
    SERVICE_UNKNOWN = "service-unknown"
    SERVICE_RECOVERED = "service-recovered"
    # retry
    TRANSIENT_ERROR = "transient-error"

    @classmethod
    def for_service(cls, status: ServiceStatus) -> Reason:
        """The reason a heartbeat of ``status`` is recorded with (``service-ok`` …)."""
        return cls(f"service-{status.value}")


def _reason(value: str | None) -> Reason | None:
    """Accept a reason's string (hosts and older code build outcomes with them)."""
    return None if value is None else Reason(value)


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
        reason: A machine-readable :class:`Reason` (``duplicate``, ``own-message``,
            ``mime-too-deep`` …; its string is accepted) or ``None`` for the plain cases.
        acknowledged: True when an acknowledgement was queued.
        subject: The decoded subject (for reports).
        recorded: For a duplicate, the outcome its first copy was recorded with: the
            source email is disposed of as that says (a quarantined email goes to the
            quarantine folder even when it is fetched again).
        detail: For ``retry`` after a transient repository error, that error's message
            (the runner stops the pass on it).
    """

    mailbox: str
    ref: str
    outcome: Outcome
    message_id: str | None = None
    ticket_id: int | None = None
    rule: str | None = None
    reason: Reason | None = attrs.field(default=None, converter=_reason)
    acknowledged: bool = False
    subject: str = ""
    recorded: Outcome | None = None
    detail: str | None = None

    @property
    def disposed_as(self) -> Outcome:
        """The outcome that decides what happens to the source email."""
        return self.recorded or self.outcome

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``halomail run --json``."""
        return {
            "mailbox": self.mailbox,
            "message_id": self.message_id,
            "outcome": self.outcome.value,
            "ticket_id": self.ticket_id,
            "rule": self.rule,
            "reason": self.reason.value if self.reason is not None else None,
        }


@attrs.frozen
class Simulation:
    """What processing an email would do, and why (nothing written).

    Args:
        outcome: The outcome it would get.
        rules: Each rule in order with why it matched or not; ``None`` without rules.
        classification: What the email is (auto-reply, bounce, bulk, spam …), each flag
            with its reasons.
        acknowledgement: Whether it would be acknowledged, and why (not).
    """

    outcome: ProcessingOutcome
    rules: Explanation | None = None
    classification: Classification | None = None
    acknowledgement: AcknowledgementVerdict | None = None


@attrs.frozen
class AcknowledgementVerdict:
    """Whether an email would be acknowledged, and why or why not.

    Args:
        would: True when an acknowledgement would be queued.
        reasons: In words: what allows it, or everything that stands in its way.

    .. versionadded:: 0.1.0
    """

    would: bool
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The JSON shape ``halomail simulate --json`` prints."""
        return {"would": self.would, "reasons": list(self.reasons)}


@attrs.frozen
class Decision:
    """What will happen to one email; nothing is written yet.

    Args:
        outcome: The outcome it will get.
        reason: Why, when it is not the plain case.
        ticket: The existing ticket a follow-up, bounce or alert belongs to.
        reopen: Reopen ``ticket`` (a follow-up to a closed ticket).
        acknowledge: Queue an acknowledgement for the new ticket.
        rule: The name of the rule that decided.
        match: The rule that decided, with what it read from the email.
        service_status: A monitored service's status this email reports.
        previous_ticket_id: For a duplicate, the ticket its first copy affected.
        recorded: For a duplicate, the outcome its first copy was recorded with.
        file_owner: For a file transfer, where the files go.
        repeat_state: For a new ticket that counts towards the long-window loop cap,
            the state key and value that count it (:mod:`halomail.pipeline.loops`).
        dedupe_key: The key the email is recorded under when it is not the usual one:
            an email that reuses a known Message-ID with another body gets its own.
        report: For a bounce, what it says of each recipient.
        clear_undeliverable: An address whose undeliverable mark this email clears (a
            person's reply from it proves that it receives mail again).
        seen: For a duplicate, the dedupe record that found it (marked seen when
            ledger retention is on).
    """

    outcome: Outcome
    reason: Reason | None = None
    ticket: Ticket | None = None
    reopen: bool = False
    acknowledge: bool = False
    rule: str | None = None
    match: RuleMatch | None = None
    service_status: ServiceStatus | None = None
    previous_ticket_id: int | None = None
    recorded: Outcome | None = None
    file_owner: tuple[FileOwner, int] | None = None
    repeat_state: tuple[str, str] | None = None
    dedupe_key: str | None = None
    report: DeliveryReport | None = None
    clear_undeliverable: str | None = None
    seen: DedupeRecord | None = None

    @property
    def is_duplicate(self) -> bool:
        """True when the email was handled before, in its mailbox or (a copy) in another:
        nothing is written for it."""
        return self.reason is Reason.DUPLICATE or self.reason is Reason.COPY


# What an administrator reads next to a quarantined email.
QUARANTINE_DETAILS: dict[Reason, str] = {
    Reason.TOO_LARGE: "The email is larger than the configured limit.",
    Reason.MIME_TOO_DEEP: "The email's MIME parts nest deeper than the configured limit.",
    Reason.TOO_MANY_PARTS: "The email has more MIME parts than the configured limit.",
    Reason.HEADERS_TOO_LARGE: "The email's headers are larger than the configured limit.",
    Reason.UNPARSEABLE_SENDER: "The From header holds no valid address.",
    Reason.BOUNCE_UNMATCHED: "A delivery failure that names none of our emails.",
    Reason.THREAD_HIJACK_SUSPECTED: "A follow-up from an address unrelated to the ticket.",
    Reason.MESSAGE_ID_COLLISION: "Another email with the same Message-ID and different content "
    "was already processed.",
    Reason.UNPARSEABLE: "The email could not be parsed.",
    Reason.SPAM: "The spam filter upstream marked the email as spam ([processing] spam).",
    Reason.REPEATED_CRASH: "Processing the email ended the process twice; it was not parsed again.",
}
