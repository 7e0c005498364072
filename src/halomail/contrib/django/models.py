"""The tables of halomail's Django app: what :class:`~.DjangoRepository` reads and writes.

One model per table of halomail's own SQLite schema (``halomail/tickets/_schema.py``),
with the same columns, so the two stores mean the same thing:

- the host's domain: :class:`Ticket`, :class:`Action` and its :class:`Attachment`;
- the directory: :class:`Customer` (with :class:`CustomerDomain`), :class:`User` (an
  end user, not a Django login), :class:`Asset` (with :class:`AssetField`) and
  :class:`StoredFile` (files kept against a customer or an asset);
- halomail's ledger: :class:`DedupeRecord`, :class:`QuarantineEntry`, :class:`State`,
  :class:`Lease` and :class:`Attempt`;
- outgoing mail: :class:`OutboxMail` (with :class:`OutboxRecipient`, the
  acknowledgement throttle's index);
- monitored services: :class:`ServiceStatus`, one row per status in a service's history.

Lists (``cc``, recipients, references, linked assets) and mappings (custom fields, asset
fields) are JSON. Ids of tickets kept beside mail (the outbox, dedupe records, service
statuses) are plain integers, not foreign keys: halomail records them as the processor
saw them, and a ticket deleted by the host must not take its mail history with it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re
from typing import Any

from django.db import models

__all__ = [
    "Action",
    "Asset",
    "AssetField",
    "Attachment",
    "Attempt",
    "Customer",
    "CustomerDomain",
    "DedupeRecord",
    "Lease",
    "OutboxMail",
    "OutboxRecipient",
    "QuarantineEntry",
    "ServiceStatus",
    "State",
    "StoredFile",
    "Text",
    "Ticket",
    "User",
]


# PostgreSQL's text cannot hold NUL, which an email's text may (SQLite's can). On
# PostgreSQL, NUL is stored as ESCAPE "0" and ESCAPE itself doubled, a private-use
# character real mail almost never holds (as halomail's own PostgreSQL repository does):
# text without either is stored as it is, so equal text stays equal in lookups.
_ESCAPE = "\ue000"
_ESCAPED = re.compile(f"{_ESCAPE}(.)", re.DOTALL)


def _escape_nul(text: str) -> str:
    if "\x00" not in text and _ESCAPE not in text:
        return text
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("\x00", f"{_ESCAPE}0")


def _unescape_nul(text: str) -> str:
    if _ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda match: "\x00" if match[1] == "0" else match[1], text)


class Text(models.TextField):
    """A ``TextField`` that keeps NUL characters on PostgreSQL too (escaped there)."""

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        """The value for the database: NUL escaped on PostgreSQL."""
        value = super().get_db_prep_value(value, connection, prepared)
        if isinstance(value, str) and connection.vendor == "postgresql":
            return _escape_nul(value)
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        """The value read back: NUL restored on PostgreSQL."""
        if isinstance(value, str) and connection.vendor == "postgresql":
            return _unescape_nul(value)
        return value


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- tickets -----------------------------------------------------------------


class Ticket(models.Model):
    """A ticket (or opportunity) opened from an email."""

    STATUSES = [("new", "new"), ("open", "open"), ("closed", "closed")]
    RECORDS = [("ticket", "ticket"), ("opportunity", "opportunity")]

    summary = Text()
    details = Text()
    ticket_type = Text()
    user_email = Text()
    user_name = Text(blank=True, default="")
    mailbox = Text(blank=True, default="")
    record = Text(choices=RECORDS, default="ticket")
    customer = Text(blank=True, null=True)
    cc = models.JSONField(default=list, blank=True)
    priority = Text(blank=True, null=True)
    category = Text(blank=True, null=True)
    team = Text(blank=True, null=True)
    agent = Text(blank=True, null=True)
    # The first of asset_ids, kept apart as SQLite's schema keeps it.
    asset_id = models.BigIntegerField(blank=True, null=True)
    asset_ids = models.JSONField(default=list, blank=True)
    custom_fields = models.JSONField(default=dict, blank=True)
    status = Text(choices=STATUSES, default="new")
    alert_key = Text(blank=True, null=True)
    impact = Text(blank=True, null=True)
    urgency = Text(blank=True, null=True)
    site = Text(blank=True, null=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    closed_at = models.DateTimeField(blank=True, null=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # find_open_ticket: every alert email looks its key up.
            models.Index(fields=["alert_key", "status", "id"], name="halomail_ticket_alert"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {_short(self.summary)}"


class Action(models.Model):
    """Something that happened on a ticket: an email in or out, a note, a status change."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="actions")
    kind = Text()
    body = Text()
    from_address = Text(blank=True, default="")
    public = models.BooleanField(default=True)
    # Replies naming this Message-ID thread onto the ticket: looked up for every email.
    message_id = Text(blank=True, null=True, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} on ticket #{self.ticket_id}"


class Attachment(models.Model):
    """A file kept with an action, bytes included."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="attachments")
    position = models.IntegerField()
    filename = Text()
    storage_name = Text()
    content_type = Text()
    size = models.BigIntegerField()
    content_id = Text(blank=True, null=True)
    inline = models.BooleanField(default=False)
    payload = models.BinaryField()

    class Meta:
        ordering = ["action_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["action", "position"], name="halomail_attachment_position"
            )
        ]

    def __str__(self) -> str:
        return self.filename


# -- the directory -------------------------------------------------------------


class Customer(models.Model):
    """A customer (client) of the helpdesk, and the email domains it owns."""

    name = Text()
    # As given; CustomerDomain holds them folded, for the lookup.
    domains = models.JSONField(default=list, blank=True)
    from_address = Text(blank=True, null=True)
    reply_address = Text(blank=True, null=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class CustomerDomain(models.Model):
    """One domain of a customer, lower-cased: how a sender's domain finds its customer."""

    domain = Text()
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="domain_rows")

    class Meta:
        ordering = ["domain", "customer_id"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "customer"], name="halomail_customer_domain")
        ]

    def __str__(self) -> str:
        return self.domain


class User(models.Model):
    """An end user (requester) known to the helpdesk; not a Django login."""

    email = Text(unique=True)
    name = Text(blank=True, default="")
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, blank=True, null=True, related_name="users"
    )
    phone = Text(blank=True, null=True)
    mobile = Text(blank=True, null=True)

    class Meta:
        ordering = ["email"]
        verbose_name = "end user"

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class Asset(models.Model):
    """A configuration item tickets may be linked to."""

    tag = Text()
    # The tag folded (case-insensitive lookups); AssetField indexes the fields the same way.
    tag_key = Text(db_index=True)
    fields = models.JSONField(default=dict, blank=True)
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, blank=True, null=True, related_name="assets"
    )

    class Meta:
        ordering = ["tag", "id"]

    def __str__(self) -> str:
        return self.tag


class AssetField(models.Model):
    """One field of an asset, name and value folded: how find_asset finds it."""

    name = Text()
    value_key = Text()
    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="field_rows")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name", "value_key", "asset"], name="halomail_asset_field"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value_key}"


class StoredFile(models.Model):
    """A file kept against a customer or an asset, with no ticket."""

    OWNERS = [("customer", "customer"), ("asset", "asset")]

    owner = Text(choices=OWNERS)
    owner_id = models.BigIntegerField()
    filename = Text()
    storage_name = Text()
    content_type = Text()
    size = models.BigIntegerField()
    content_id = Text(blank=True, null=True)
    inline = models.BooleanField(default=False)
    note = Text(blank=True, default="")
    created_at = models.DateTimeField()
    payload = models.BinaryField()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["owner", "owner_id", "id"], name="halomail_storedfile_owner")
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.owner} {self.owner_id})"


# -- halomail's ledger ----------------------------------------------------------


class DedupeRecord(models.Model):
    """Proof that an email was handled, written in the transaction of its effect."""

    key = Text(primary_key=True)
    sha256 = Text()
    outcome = Text()
    ticket_id = models.BigIntegerField(blank=True, null=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.key}: {self.outcome}"


class QuarantineEntry(models.Model):
    """An email that could not be processed, kept whole with the reason."""

    mailbox = Text()
    reason = Text()
    raw = models.BinaryField()
    created_at = models.DateTimeField()
    detail = Text(blank=True, default="")
    message_id = Text(blank=True, null=True)
    dedupe_key = Text(blank=True, null=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "quarantined email"
        verbose_name_plural = "quarantine"

    def __str__(self) -> str:
        return f"#{self.pk} {self.reason} ({self.mailbox})"


class State(models.Model):
    """A small value the processor keeps between runs."""

    key = Text(primary_key=True)
    value = Text()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Lease(models.Model):
    """Who reads a mailbox (or sends the outbox) now, and until when."""

    name = Text(primary_key=True)
    owner = Text()
    held_until = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner}"


class Attempt(models.Model):
    """An email whose processing started and has not finished."""

    key = Text(primary_key=True)
    count = models.IntegerField()
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.count})"


# -- outgoing mail ----------------------------------------------------------------


class OutboxMail(models.Model):
    """An outgoing email, queued in its ticket's transaction and claimed before it is sent."""

    STATUSES = [("pending", "pending"), ("sent", "sent"), ("failed", "failed")]

    message_id = Text(unique=True)
    recipients = models.JSONField(default=list)
    subject = Text()
    text = Text()
    mailbox = Text(blank=True, default="")
    kind = Text()
    ticket_id = models.BigIntegerField(blank=True, null=True, db_index=True)
    html = Text(blank=True, null=True)
    in_reply_to = Text(blank=True, null=True)
    references = models.JSONField(default=list, blank=True)
    auto_submitted = models.BooleanField(default=True)
    status = Text(choices=STATUSES, default="pending")
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(blank=True, null=True)
    last_error = Text(blank=True, null=True)
    sent_at = models.DateTimeField(blank=True, null=True)
    created_at = models.DateTimeField()
    claimed_by = Text(blank=True, null=True)
    claimed_until = models.DateTimeField(blank=True, null=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "outgoing email"
        verbose_name_plural = "outbox"
        indexes = [
            # The sender's scan of pending mail, oldest first.
            models.Index(fields=["status", "id"], name="halomail_outbox_status"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {_short(self.subject)} ({self.status})"


class OutboxRecipient(models.Model):
    """One recipient of an outgoing email: what the acknowledgement throttle counts."""

    address = Text()
    created_at = models.DateTimeField()
    outbox = models.ForeignKey(OutboxMail, on_delete=models.CASCADE, related_name="recipient_rows")
    ticket_id = models.BigIntegerField(blank=True, null=True)

    class Meta:
        indexes = [
            models.Index(fields=["address", "created_at"], name="halomail_recipient_address")
        ]

    def __str__(self) -> str:
        return self.address


# -- monitored services -------------------------------------------------------------


class ServiceStatus(models.Model):
    """One status in a monitored service's history (the admin draws them as a timeline)."""

    STATUSES = [("ok", "ok"), ("failed", "failed"), ("unknown", "unknown")]

    service = Text()
    status = Text(choices=STATUSES)
    at = models.DateTimeField()
    detail = Text(blank=True, default="")
    ticket_id = models.BigIntegerField(blank=True, null=True)
    message_id = Text(blank=True, null=True)

    class Meta:
        ordering = ["service", "-at", "-id"]
        verbose_name = "service status"
        verbose_name_plural = "service statuses"
        indexes = [
            models.Index(fields=["service", "at", "id"], name="halomail_service_at"),
        ]

    def __str__(self) -> str:
        return f"{self.service}: {self.status} at {self.at:%Y-%m-%d %H:%M}"
