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
    "Ticket",
    "User",
]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- tickets -----------------------------------------------------------------


class Ticket(models.Model):
    """A ticket (or opportunity) opened from an email."""

    STATUSES = [("new", "new"), ("open", "open"), ("closed", "closed")]
    RECORDS = [("ticket", "ticket"), ("opportunity", "opportunity")]

    summary = models.TextField()
    details = models.TextField()
    ticket_type = models.TextField()
    user_email = models.TextField()
    user_name = models.TextField(blank=True, default="")
    mailbox = models.TextField(blank=True, default="")
    record = models.TextField(choices=RECORDS, default="ticket")
    customer = models.TextField(blank=True, null=True)
    cc = models.JSONField(default=list, blank=True)
    priority = models.TextField(blank=True, null=True)
    category = models.TextField(blank=True, null=True)
    team = models.TextField(blank=True, null=True)
    agent = models.TextField(blank=True, null=True)
    # The first of asset_ids, kept apart as SQLite's schema keeps it.
    asset_id = models.BigIntegerField(blank=True, null=True)
    asset_ids = models.JSONField(default=list, blank=True)
    custom_fields = models.JSONField(default=dict, blank=True)
    status = models.TextField(choices=STATUSES, default="new")
    alert_key = models.TextField(blank=True, null=True)
    impact = models.TextField(blank=True, null=True)
    urgency = models.TextField(blank=True, null=True)
    site = models.TextField(blank=True, null=True)
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
    kind = models.TextField()
    body = models.TextField()
    from_address = models.TextField(blank=True, default="")
    public = models.BooleanField(default=True)
    # Replies naming this Message-ID thread onto the ticket: looked up for every email.
    message_id = models.TextField(blank=True, null=True, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} on ticket #{self.ticket_id}"


class Attachment(models.Model):
    """A file kept with an action, bytes included."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="attachments")
    position = models.IntegerField()
    filename = models.TextField()
    storage_name = models.TextField()
    content_type = models.TextField()
    size = models.BigIntegerField()
    content_id = models.TextField(blank=True, null=True)
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

    name = models.TextField()
    # As given; CustomerDomain holds them folded, for the lookup.
    domains = models.JSONField(default=list, blank=True)
    from_address = models.TextField(blank=True, null=True)
    reply_address = models.TextField(blank=True, null=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class CustomerDomain(models.Model):
    """One domain of a customer, lower-cased: how a sender's domain finds its customer."""

    domain = models.TextField()
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

    email = models.TextField(unique=True)
    name = models.TextField(blank=True, default="")
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, blank=True, null=True, related_name="users"
    )
    phone = models.TextField(blank=True, null=True)
    mobile = models.TextField(blank=True, null=True)

    class Meta:
        ordering = ["email"]
        verbose_name = "end user"

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class Asset(models.Model):
    """A configuration item tickets may be linked to."""

    tag = models.TextField()
    # The tag folded (case-insensitive lookups); AssetField indexes the fields the same way.
    tag_key = models.TextField(db_index=True)
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

    name = models.TextField()
    value_key = models.TextField()
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

    owner = models.TextField(choices=OWNERS)
    owner_id = models.BigIntegerField()
    filename = models.TextField()
    storage_name = models.TextField()
    content_type = models.TextField()
    size = models.BigIntegerField()
    content_id = models.TextField(blank=True, null=True)
    inline = models.BooleanField(default=False)
    note = models.TextField(blank=True, default="")
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

    key = models.TextField(primary_key=True)
    sha256 = models.TextField()
    outcome = models.TextField()
    ticket_id = models.BigIntegerField(blank=True, null=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.key}: {self.outcome}"


class QuarantineEntry(models.Model):
    """An email that could not be processed, kept whole with the reason."""

    mailbox = models.TextField()
    reason = models.TextField()
    raw = models.BinaryField()
    created_at = models.DateTimeField()
    detail = models.TextField(blank=True, default="")
    message_id = models.TextField(blank=True, null=True)
    dedupe_key = models.TextField(blank=True, null=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "quarantined email"
        verbose_name_plural = "quarantine"

    def __str__(self) -> str:
        return f"#{self.pk} {self.reason} ({self.mailbox})"


class State(models.Model):
    """A small value the processor keeps between runs."""

    key = models.TextField(primary_key=True)
    value = models.TextField()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Lease(models.Model):
    """Who reads a mailbox (or sends the outbox) now, and until when."""

    name = models.TextField(primary_key=True)
    owner = models.TextField()
    held_until = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner}"


class Attempt(models.Model):
    """An email whose processing started and has not finished."""

    key = models.TextField(primary_key=True)
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

    message_id = models.TextField(unique=True)
    recipients = models.JSONField(default=list)
    subject = models.TextField()
    text = models.TextField()
    mailbox = models.TextField(blank=True, default="")
    kind = models.TextField()
    ticket_id = models.BigIntegerField(blank=True, null=True, db_index=True)
    html = models.TextField(blank=True, null=True)
    in_reply_to = models.TextField(blank=True, null=True)
    references = models.JSONField(default=list, blank=True)
    auto_submitted = models.BooleanField(default=True)
    status = models.TextField(choices=STATUSES, default="pending")
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(blank=True, null=True)
    last_error = models.TextField(blank=True, null=True)
    sent_at = models.DateTimeField(blank=True, null=True)
    created_at = models.DateTimeField()
    claimed_by = models.TextField(blank=True, null=True)
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

    address = models.TextField()
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

    service = models.TextField()
    status = models.TextField(choices=STATUSES)
    at = models.DateTimeField()
    detail = models.TextField(blank=True, default="")
    ticket_id = models.BigIntegerField(blank=True, null=True)
    message_id = models.TextField(blank=True, null=True)

    class Meta:
        ordering = ["service", "-at", "-id"]
        verbose_name = "service status"
        verbose_name_plural = "service statuses"
        indexes = [
            models.Index(fields=["service", "at", "id"], name="halomail_service_at"),
        ]

    def __str__(self) -> str:
        return f"{self.service}: {self.status} at {self.at:%Y-%m-%d %H:%M}"
