"""The tables: the host's own (tickets, actions, people, assets) and halomail's bookkeeping.

Lists and small mappings (a ticket's Cc, a customer's domains, an asset's fields) are
JSON columns; whatever halomail looks up by (a Message-ID, an address, a domain, an
asset field) gets a column or a table of its own, with an index.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, LargeBinary, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime, stored naive (SQLite has no time zones) and read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Store the UTC wall time; the repository converts to UTC before it gets here."""
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)  # type: ignore[no-any-return]

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Read it back as an aware datetime in UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    """The declarative base of every table here."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime,
        dict[str, str]: JSON,
        list[str]: JSON,
    }


# -- the host's domain -------------------------------------------------------------


class TicketRow(Base):
    """A ticket, as the helpdesk keeps it."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    ticket_type: Mapped[str] = mapped_column(String(100))
    user_email: Mapped[str] = mapped_column(String(320))
    user_name: Mapped[str] = mapped_column(String(200), default="")
    mailbox: Mapped[str] = mapped_column(String(200), default="")
    record: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    customer: Mapped[str | None] = mapped_column(String(200))
    cc: Mapped[list[str]] = mapped_column(default=list)
    priority: Mapped[str | None] = mapped_column(String(50))
    category: Mapped[str | None] = mapped_column(String(200))
    team: Mapped[str | None] = mapped_column(String(200))
    agent: Mapped[str | None] = mapped_column(String(320))
    asset_id: Mapped[int | None]
    asset_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    custom_fields: Mapped[dict[str, str]] = mapped_column(default=dict)
    alert_key: Mapped[str | None] = mapped_column(String(500), index=True)
    impact: Mapped[str | None] = mapped_column(String(50))
    urgency: Mapped[str | None] = mapped_column(String(50))
    site: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]

    actions: Mapped[list[ActionRow]] = relationship(
        back_populates="ticket", order_by="ActionRow.id", cascade="all, delete-orphan"
    )


class ActionRow(Base):
    """Something that happened on a ticket: an email in or out, a note, a status change."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    from_address: Mapped[str] = mapped_column(String(320), default="")
    public: Mapped[bool] = mapped_column(default=True)
    # Every follow-up email looks its ticket up by the Message-IDs it answers.
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    created_at: Mapped[dt.datetime]

    ticket: Mapped[TicketRow] = relationship(back_populates="actions")
    attachments: Mapped[list[AttachmentRow]] = relationship(
        order_by="AttachmentRow.id", cascade="all, delete-orphan"
    )


class AttachmentRow(Base):
    """A file that came with an action, kept byte for byte."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id"), index=True)
    filename: Mapped[str] = mapped_column(Text)
    storage_name: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    content_id: Mapped[str | None] = mapped_column(Text)
    inline: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class CustomerRow(Base):
    """A customer organisation."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    domains: Mapped[list[str]] = mapped_column(default=list)
    from_address: Mapped[str | None] = mapped_column(String(320))
    reply_address: Mapped[str | None] = mapped_column(String(320))


class CustomerDomainRow(Base):
    """Which customer owns an email domain (the first customer that claimed it)."""

    __tablename__ = "customer_domains"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))


class UserRow(Base):
    """An end user who writes to the helpdesk."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200), default="")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    phone: Mapped[str | None] = mapped_column(String(50))
    mobile: Mapped[str | None] = mapped_column(String(50))


class AssetRow(Base):
    """A thing the helpdesk looks after: a laptop, a printer, a server."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    tag: Mapped[str] = mapped_column(String(200))
    tag_key: Mapped[str] = mapped_column(String(200), index=True)  # case-folded
    fields: Mapped[dict[str, str]] = mapped_column(default=dict)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))


class AssetFieldRow(Base):
    """One field of an asset as it is searched: the name's key and the folded value."""

    __tablename__ = "asset_fields"
    __table_args__ = (Index("ix_asset_fields_lookup", "name_key", "value_key"),)

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), primary_key=True)
    name_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value_key: Mapped[str] = mapped_column(Text)


class FileRow(Base):
    """A file kept against a customer or an asset, with no ticket."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner", "owner", "owner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(20))  # "customer" or "asset"
    owner_id: Mapped[int]
    filename: Mapped[str] = mapped_column(Text)
    storage_name: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    content_id: Mapped[str | None] = mapped_column(Text)
    inline: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]
    payload: Mapped[bytes] = mapped_column(LargeBinary)


# -- halomail's bookkeeping --------------------------------------------------------


class DedupeRow(Base):
    """An email halomail has handled: the key that makes processing exactly once."""

    __tablename__ = "halomail_dedupe"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(50))
    ticket_id: Mapped[int | None]
    created_at: Mapped[dt.datetime]


class QuarantineRow(Base):
    """An email that could not be processed, kept whole for an administrator."""

    __tablename__ = "halomail_quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class StateRow(Base):
    """A small value halomail keeps between runs (sync state, mailbox health)."""

    __tablename__ = "halomail_state"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LeaseRow(Base):
    """Who holds a named lease (one runner per mailbox) and until when."""

    __tablename__ = "halomail_leases"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    until: Mapped[dt.datetime]


class AttemptRow(Base):
    """How many attempts at processing an email started and never finished."""

    __tablename__ = "halomail_attempts"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    started: Mapped[int]


class OutboxRow(Base):
    """An email queued to send, with its delivery attempts and its claim."""

    __tablename__ = "halomail_outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    to: Mapped[list[str]]
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    mailbox: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(50))
    ticket_id: Mapped[int | None] = mapped_column(index=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[list[str]] = mapped_column(default=list)
    auto_submitted: Mapped[bool]
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    claimed_by: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[dt.datetime | None]

    recipients: Mapped[list[OutboxRecipientRow]] = relationship(cascade="all, delete-orphan")


class OutboxRecipientRow(Base):
    """One recipient of a queued email, lower-case: the acknowledgement throttle counts them."""

    __tablename__ = "halomail_outbox_recipients"
    __table_args__ = (Index("ix_outbox_recipients_address", "address"),)

    outbox_id: Mapped[int] = mapped_column(ForeignKey("halomail_outbox.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)


class ServiceStatusRow(Base):
    """One entry of a monitored service's status history."""

    __tablename__ = "halomail_service_status"
    __table_args__ = (Index("ix_service_status_history", "service", "at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime]
    detail: Mapped[str] = mapped_column(Text, default="")
    ticket_id: Mapped[int | None]
    message_id: Mapped[str | None] = mapped_column(Text)
