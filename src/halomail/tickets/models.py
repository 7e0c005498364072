"""Domain models: tickets, their actions, and what the processor records beside them.

Every model is frozen; change one with :func:`attrs.evolve`. Inputs to the repository
(``New…``) are separate from what it returns, which carries ids and timestamps.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

import attrs

from halomail.tickets._common import file_owner

__all__ = [
    "MAYBE_SENT",
    "Action",
    "ActionKind",
    "Asset",
    "BatchKeys",
    "Customer",
    "DedupeRecord",
    "FileOwner",
    "NewAction",
    "NewOutgoing",
    "NewQuarantine",
    "NewServiceStatus",
    "NewTicket",
    "OutboxMail",
    "OutboxStatus",
    "QuarantineEntry",
    "RecordKind",
    "ServiceStatus",
    "ServiceStatusEntry",
    "StoredAttachment",
    "StoredFile",
    "Ticket",
    "TicketStatus",
    "User",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC (the only kind of time halomail stores)."""
    return dt.datetime.now(dt.UTC)


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


def _ids(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _link_assets(ticket: NewTicket | Ticket) -> None:
    """Keep ``asset_id`` the first of ``asset_ids``, whichever of the two was given."""
    ids = tuple(dict.fromkeys(ticket.asset_ids))
    if ticket.asset_id is not None and ids[:1] != (ticket.asset_id,):
        ids = tuple(dict.fromkeys((ticket.asset_id, *ids)))
    object.__setattr__(ticket, "asset_ids", ids)
    object.__setattr__(ticket, "asset_id", ids[0] if ids else None)


class RecordKind(enum.StrEnum):
    """What a mailbox turns new email into."""

    TICKET = "ticket"
    OPPORTUNITY = "opportunity"


class TicketStatus(enum.StrEnum):
    """The life of a ticket as halomail sees it; hosts may map these to their own."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class ActionKind(enum.StrEnum):
    """What an action on a ticket records."""

    EMAIL_IN = "email_in"  # an email from the user (the first one, or a follow-up)
    EMAIL_OUT = "email_out"  # an email we sent (acknowledgement, update)
    NOTE = "note"  # a note, public or private
    STATUS = "status"  # a status change (closed, reopened)
    BOUNCE = "bounce"  # a delivery failure of one of our emails
    SEND_FAILED = "send_failed"  # an outgoing email failed for good


class ServiceStatus(enum.StrEnum):
    """The status of a monitored service, as its emails (or its silence) tell it.

    Also importable as :class:`halomail.services.ServiceStatus`.

    .. versionadded:: 0.1.0
    """

    OK = "ok"  # the last email met the success criteria
    FAILED = "failed"  # the last email met the failure criteria
    UNKNOWN = "unknown"  # no email within the checking interval, or one that said neither


FileOwner: TypeAlias = Literal["customer", "asset"]
"""What a file stored without a ticket belongs to (see :class:`StoredFile`)."""
# The alias is exported from ``halomail``; give it the docstring help() shows there.
FileOwner.__doc__ = "What a file stored without a ticket belongs to: 'customer' or 'asset'."


class OutboxStatus(enum.StrEnum):
    """Where an outgoing email is in its life."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@attrs.frozen
class StoredAttachment:
    """An attachment as the repository keeps it.

    Args:
        filename: The display name (already cleaned by the parser).
        storage_name: The safe generated name to store the bytes under.
        content_type: The MIME type.
        size: The size in bytes.
        content_id: The Content-ID for inline images, or ``None``.
        inline: True for inline parts.
        payload: The bytes (not shown in repr).
    """

    filename: str
    storage_name: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    payload: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class NewTicket:
    """What the processor asks the repository to create.

    Args:
        summary: One line, the email's subject.
        details: The body text.
        ticket_type: The ticket type's name, e.g. ``"Incident"``.
        user_email: The requester's address (lower-cased addr-spec).
        user_name: The requester's display name.
        mailbox: The mailbox the email arrived in.
        record: Ticket or opportunity.
        customer: The customer's name, when the sender is known.
        cc: Addresses copied on the email, lower-cased.
        priority: Priority name, if a rule set one.
        category: Category name, if a rule set one.
        team: Team name, if a rule set one.
        agent: The assigned agent's address, if any.
        asset_id: The linked asset, if any: the first of ``asset_ids``.
        custom_fields: Custom field values by field name.
        alert_key: Ties the ticket to the problem that raised it, so that a repeat of
            the problem updates this ticket and its clearing closes it (see
            :meth:`~halomail.TicketRepository.find_open_ticket`). The processor uses
            ``alert:<rule>:<key>`` for alerts, ``virus:<rule>:<asset>`` for antivirus
            alerts and ``service:<name>`` for a monitored service's failure tickets;
            there is no separate "service" field. ``None`` for ordinary tickets.
        status (TicketStatus | str): The status the ticket starts in (``new`` unless a
            rule maps another; a ticket created ``closed`` is closed at once).
        impact: Impact name, if a rule set one.
        urgency: Urgency name, if a rule set one.
        site: The customer's site, if a rule set one.
        asset_ids (Iterable[int]): Every linked asset, ``asset_id`` first; given only one
            of the two, the other follows from it.
    """

    summary: str
    details: str
    ticket_type: str
    user_email: str
    user_name: str = ""
    mailbox: str = ""
    record: RecordKind = RecordKind.TICKET
    customer: str | None = None
    cc: tuple[str, ...] = ()
    priority: str | None = None
    category: str | None = None
    team: str | None = None
    agent: str | None = None
    asset_id: int | None = None
    custom_fields: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    alert_key: str | None = None
    status: TicketStatus = attrs.field(default=TicketStatus.NEW, converter=TicketStatus)
    impact: str | None = None
    urgency: str | None = None
    site: str | None = None
    asset_ids: tuple[int, ...] = attrs.field(default=(), converter=_ids)

    def __attrs_post_init__(self) -> None:
        _link_assets(self)


@attrs.frozen
class Ticket:
    """A ticket (or opportunity) as stored.

    The fields are those of :class:`NewTicket`, plus ``id`` and timestamps.
    """

    id: int
    summary: str
    details: str
    ticket_type: str
    user_email: str
    status: TicketStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    user_name: str = ""
    mailbox: str = ""
    record: RecordKind = RecordKind.TICKET
    customer: str | None = None
    cc: tuple[str, ...] = ()
    priority: str | None = None
    category: str | None = None
    team: str | None = None
    agent: str | None = None
    asset_id: int | None = None
    custom_fields: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    closed_at: dt.datetime | None = None
    alert_key: str | None = None
    impact: str | None = None
    urgency: str | None = None
    site: str | None = None
    asset_ids: tuple[int, ...] = attrs.field(default=(), converter=_ids)

    def __attrs_post_init__(self) -> None:
        _link_assets(self)

    @classmethod
    def from_new(
        cls,
        new: NewTicket,
        *,
        id: int,
        created_at: dt.datetime,
        closed_at: dt.datetime | None = None,
    ) -> Ticket:
        """The ticket ``new`` became once stored: every field of ``new``, with its id and
        times (``updated_at`` is ``created_at``).

        What a repository's ``create_ticket`` returns. Field by field, not through
        ``attrs.asdict``, whose loop over the fields cost about 30,000 instructions per
        ticket (callgrind), some 1.5% of processing a 1 KB email.

        .. versionadded:: 0.2.0
        """
        return cls(
            id=id,
            summary=new.summary,
            details=new.details,
            ticket_type=new.ticket_type,
            user_email=new.user_email,
            status=new.status,
            created_at=created_at,
            updated_at=created_at,
            user_name=new.user_name,
            mailbox=new.mailbox,
            record=new.record,
            customer=new.customer,
            cc=new.cc,
            priority=new.priority,
            category=new.category,
            team=new.team,
            agent=new.agent,
            asset_id=new.asset_id,
            custom_fields=new.custom_fields,
            closed_at=closed_at,
            alert_key=new.alert_key,
            impact=new.impact,
            urgency=new.urgency,
            site=new.site,
            asset_ids=new.asset_ids,
        )

    @property
    def is_open(self) -> bool:
        """True until the ticket is closed."""
        return self.status is not TicketStatus.CLOSED


@attrs.frozen
class NewAction:
    """An action to add to a ticket.

    Args:
        ticket_id: The ticket.
        kind: What the action records.
        body: The text of the action.
        from_address: Who it is from (an address, or ``""`` for the system).
        public: Whether the end user may see it.
        message_id: The Message-ID of the email behind it, if any; the repository
            indexes it so that replies naming it thread onto this ticket.
        attachments: Files kept with the action.
    """

    ticket_id: int
    kind: ActionKind
    body: str
    from_address: str = ""
    public: bool = True
    message_id: str | None = None
    attachments: tuple[StoredAttachment, ...] = ()


@attrs.frozen
class Action:
    """An action as stored: a :class:`NewAction` with ``id`` and ``created_at``."""

    id: int
    ticket_id: int
    kind: ActionKind
    body: str
    created_at: dt.datetime
    from_address: str = ""
    public: bool = True
    message_id: str | None = None
    attachments: tuple[StoredAttachment, ...] = ()


@attrs.frozen
class Customer:
    """A customer (client) of the helpdesk.

    Args:
        id: The host's id.
        name: The customer's name.
        domains: Email domains that belong to the customer (lower-case).
        from_address: Overrides the outgoing From address for this customer, if set.
        reply_address: Overrides the Reply-To address for this customer, if set.
    """

    id: int
    name: str
    domains: tuple[str, ...] = ()
    from_address: str | None = None
    reply_address: str | None = None


@attrs.frozen
class User:
    """An end user (requester) known to the helpdesk.

    Args:
        id: The host's id.
        email: The user's address, lower-case.
        name: The user's name.
        customer_id: The customer the user belongs to, if any.
        phone: Phone number, if known.
        mobile: Mobile number, if known.
    """

    id: int
    email: str
    name: str = ""
    customer_id: int | None = None
    phone: str | None = None
    mobile: str | None = None


@attrs.frozen
class Asset:
    """A configuration item that tickets may be linked to.

    Args:
        id: The host's id.
        tag: The asset tag.
        fields: Other field values by name (serial number, host name, …).
        customer_id: The owning customer, if any.
    """

    id: int
    tag: str
    fields: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    customer_id: int | None = None


@attrs.frozen
class DedupeRecord:
    """Proof that an email was handled: written in the same transaction as its effect.

    Args:
        key: ``mailbox + Message-ID``, or ``mailbox + sha256`` when there is no Message-ID.
        sha256: SHA-256 of the raw bytes, to tell a re-fetch from a Message-ID collision.
        outcome: The outcome recorded (``created``, ``updated``, …).
        ticket_id: The ticket affected, if any.
        created_at: When it was recorded.
    """

    key: str
    sha256: str
    outcome: str
    ticket_id: int | None = None
    created_at: dt.datetime = attrs.field(factory=utcnow)


@attrs.frozen
class StoredFile:
    """A file kept against a customer or an asset, with no ticket (a ``file_transfer`` rule).

    The file's own fields are those of :class:`StoredAttachment`; :attr:`attachment`
    gives them back as one (to attach the file to a ticket's action, say).

    Args:
        id: The repository's id for the file.
        owner: ``"customer"`` or ``"asset"``.
        owner_id: The id of the customer or asset.
        filename: The display name.
        storage_name: The safe generated name.
        content_type: The MIME type.
        size: The size in bytes.
        content_id: The Content-ID it came with, or ``None``.
        inline: True when it came as an inline part.
        payload: The bytes, exactly as stored (not shown in repr).
        note: What came with it (the processor writes the email's subject).
        created_at: When it was stored.

    Raises:
        ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.

    .. versionadded:: 0.1.0
    """

    id: int
    owner: FileOwner = attrs.field(converter=file_owner)
    owner_id: int
    filename: str
    storage_name: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    payload: bytes = attrs.field(default=b"", repr=False)
    note: str = ""
    created_at: dt.datetime = attrs.field(factory=utcnow)

    @property
    def attachment(self) -> StoredAttachment:
        """The file as a :class:`StoredAttachment` (the same name, type, size and bytes)."""
        return StoredAttachment(
            filename=self.filename,
            storage_name=self.storage_name,
            content_type=self.content_type,
            size=self.size,
            content_id=self.content_id,
            inline=self.inline,
            payload=self.payload,
        )


def _service_status(value: str) -> ServiceStatus:
    # Accepts the enum or its value ("ok"), so that hosts may pass either; anything
    # else raises ValueError here rather than being stored and misread later.
    return ServiceStatus(value)


@attrs.frozen
class NewServiceStatus:
    """A status of a monitored service to add to its history.

    Args:
        service: The service's name (compared exactly).
        status: ``ok``, ``failed`` or ``unknown`` (a :class:`ServiceStatus` or its value).
        at: When the status was observed (aware; stored in UTC).
        detail: Why, in a few words (the email's subject, "no email within 1 day, 0:00:00").
        ticket_id: The ticket the status created, updated or closed, if any.
        message_id: The Message-ID of the email that told it, if any.

    Raises:
        ValueError: When ``status`` is not one of the three.

    .. versionadded:: 0.1.0
    """

    service: str
    status: ServiceStatus = attrs.field(converter=_service_status)
    at: dt.datetime
    detail: str = ""
    ticket_id: int | None = None
    message_id: str | None = None


@attrs.frozen
class ServiceStatusEntry:
    """A status in a monitored service's history: a :class:`NewServiceStatus` with its id.

    .. versionadded:: 0.1.0
    """

    id: int
    service: str
    status: ServiceStatus = attrs.field(converter=_service_status)
    at: dt.datetime
    detail: str = ""
    ticket_id: int | None = None
    message_id: str | None = None


@attrs.frozen
class NewOutgoing:
    """An email to send after the transaction commits.

    The MIME message is composed when it is sent, not here: composing is costly
    and the ingest path should stay cheap.

    Args:
        message_id: Our Message-ID for it (without angle brackets), unique.
        to: Recipient addresses.
        subject: The subject (one line; the sender strips CR/LF again).
        text: The plain-text body.
        mailbox: The mailbox whose outgoing settings apply.
        kind: Why it is sent (``acknowledgement``, ``update``, ``test`` …).
        ticket_id: The ticket it belongs to, if any.
        html: An HTML body, if any.
        in_reply_to: The Message-ID it answers, if any.
        references: The thread's Message-IDs, oldest first.
        auto_submitted: True for automatic replies (adds ``Auto-Submitted: auto-replied``).
    """

    message_id: str
    to: tuple[str, ...]
    subject: str
    text: str
    mailbox: str = ""
    kind: str = "acknowledgement"
    ticket_id: int | None = None
    html: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: bool = True


MAYBE_SENT = "maybe sent: "
"""How ``last_error`` begins when the mail may have been delivered already: the transport
raised :class:`~halomail.errors.AmbiguousSendError` (a timeout or a 5xx after the request
reached the service). The mail stays ``pending``; :attr:`OutboxMail.maybe_sent` reads it.

.. versionadded:: 0.1.0
"""


@attrs.frozen
class OutboxMail:
    """An outgoing email as stored, with its delivery state."""

    id: int
    message_id: str
    to: tuple[str, ...]
    subject: str
    text: str
    status: OutboxStatus
    created_at: dt.datetime
    mailbox: str = ""
    kind: str = "acknowledgement"
    ticket_id: int | None = None
    html: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: bool = True
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None
    sent_at: dt.datetime | None = None

    @property
    def maybe_sent(self) -> bool:
        """True when the last attempt may have delivered it (its ``last_error`` says
        :data:`MAYBE_SENT`): before sending again, the outbox asks a transport that can
        look among its sent mail whether it is there."""
        return self.status is not OutboxStatus.SENT and (self.last_error or "").startswith(
            MAYBE_SENT
        )


@attrs.frozen
class NewQuarantine:
    """An email that could not be processed, kept whole with the reason.

    Args:
        mailbox: The mailbox it came from.
        reason: A machine-readable reason, e.g. ``"mime-too-deep"``.
        raw: The original bytes, unchanged.
        detail: A human-readable explanation.
        message_id: Its Message-ID, if one could be read.
        dedupe_key: The dedupe key, so a re-fetch is not quarantined twice.
    """

    mailbox: str
    reason: str
    raw: bytes = attrs.field(repr=False)
    detail: str = ""
    message_id: str | None = None
    dedupe_key: str | None = None


@attrs.frozen
class QuarantineEntry:
    """A quarantined email as stored."""

    id: int
    mailbox: str
    reason: str
    raw: bytes = attrs.field(repr=False)
    created_at: dt.datetime = attrs.field(factory=utcnow)
    detail: str = ""
    message_id: str | None = None
    dedupe_key: str | None = None


@attrs.frozen
class BatchKeys:
    """What a batch of emails will ask the repository, so that it can ask once
    (:class:`~halomail.tickets.repository.GroupCommit`).

    Args:
        dedupe: The dedupe keys the batch will look up.
        state: The state keys it will read.
        senders: The addresses it will count outgoing mail to and look up in the directory.
        since: The earliest start of a count of outgoing mail it will make.

    .. versionadded:: 0.1.0
    """

    dedupe: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    since: dt.datetime = attrs.field(factory=utcnow)
