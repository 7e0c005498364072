"""The repository a host application implements, as small role protocols.

halomail reads and writes through five roles; :class:`TicketRepository` is their
union, and what :class:`~halomail.MailProcessor` takes:

- :class:`TicketStore`: tickets and their actions (the host's domain).
- :class:`Directory`: users, customers, assets, and files kept against them.
- :class:`IngestLedger`: halomail's bookkeeping of inbound mail: dedupe keys,
  quarantine, small persistent state, and leases (one runner per mailbox).
- :class:`OutboxStore`: outgoing mail, queued in the email's transaction and
  claimed before it is sent.
- :class:`ServiceLog`: the history of monitored services.

:class:`Browsing` is optional: the ``halomail`` command's listing commands
(``tickets``, ``quarantine``) need it; halomail's processing never calls it.
:class:`AttemptLedger` is optional too: with it, an email that kills the process
cannot block its mailbox (it is quarantined as ``repeated-crash``).
:class:`LedgerRetention` is optional as well: with it, ``[processing]
ledger_retention_days`` forgets the ledger's old rows instead of keeping them for ever.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from halomail.tickets.models import (
    Action,
    Asset,
    BatchKeys,
    Customer,
    DedupeRecord,
    FileOwner,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxMail,
    OutboxStatus,
    QuarantineEntry,
    ServiceStatusEntry,
    StoredAttachment,
    StoredFile,
    Ticket,
    TicketStatus,
    User,
)

__all__ = [
    "AttemptLedger",
    "Browsing",
    "Directory",
    "GroupCommit",
    "IngestLedger",
    "LedgerRetention",
    "OutboxAdmin",
    "OutboxStore",
    "QuarantineAdmin",
    "ServiceLog",
    "TicketRepository",
    "TicketStore",
    "Transactional",
]


@runtime_checkable
class Transactional(Protocol):
    """**Protocol:** the transaction every role writes in.

    Every write the processor makes for one email happens inside one
    :meth:`transaction`, and either all of it is committed or none of it is: the
    dedupe key, the ticket or action and the outbox rows land together, and only
    then is the source email disposed of.

    .. versionadded:: 0.1.0
    """

    def transaction(self) -> AbstractContextManager[None]:
        """Group writes: committed when the block exits normally, rolled back on an exception.

        Transactions do not nest: opening one while one is open on the same repository
        raises :class:`~halomail.errors.RepositoryError`. A write method called outside
        a transaction is committed on its own when it returns.
        """


@runtime_checkable
class TicketStore(Transactional, Protocol):
    """**Protocol:** tickets and their actions.

    .. versionadded:: 0.1.0
    """

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket that one of these Message-IDs belongs to, or ``None``.

        A Message-ID belongs to a ticket when an action of the ticket or an outgoing
        email of the ticket carries it. The first id that matches wins.
        """

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket with status ``new`` and return it with its id."""

    def add_action(self, new: NewAction) -> Action:
        """Add an action to a ticket, and touch the ticket's ``updated_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        """Change a ticket's status (``closed`` sets ``closed_at``; reopening clears it).

        Raises:
            RepositoryError: When the ticket does not exist.
        """

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first."""

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed, or ``None``.

        "Newest" is the one created last. Closed tickets with the key are passed
        over, so a problem that returns after its ticket was closed opens a new one.
        Keys compare exactly.

        .. versionadded:: 0.1.0
        """


@runtime_checkable
class Directory(Transactional, Protocol):
    """**Protocol:** the people and things mail is matched to, and files kept against them.

    .. versionadded:: 0.1.0
    """

    def find_user(self, email: str) -> User | None:
        """The user with this address (compared case-insensitively), or ``None``."""

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the customer owning its domain."""

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The asset whose ``field`` (``"tag"`` or a field name) equals ``value``
        (case-insensitively), or ``None``.

        Field names compare ignoring case, spaces and punctuation: ``"Serial Number"``
        finds a field stored as ``serial_number`` (as inventory reports write it) or
        ``SERIAL NUMBER``.
        """

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        """Create the asset with this tag, or update the one that has it.

        The existing asset is the one :meth:`find_asset` finds by ``"tag"`` (compared
        case-insensitively); it keeps its id and the tag's spelling, and ``fields``
        are merged over its fields (a name given replaces its value, in any spelling
        :meth:`find_asset` treats as the same field; the others stay).
        Afterwards :meth:`find_asset` finds it by its new field values, and no longer
        by values it dropped.

        Args:
            tag: The asset tag.
            fields: Field values by name.
            customer_id: The owning customer; ``None`` leaves an existing asset's
                owner as it was (and creates an asset without one).

        Returns:
            The asset as stored now, and True when it was created.

        Raises:
            RepositoryError: When ``customer_id`` names no customer.

        .. versionadded:: 0.1.0
        """

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket.

        Args:
            owner: ``"customer"`` or ``"asset"``.
            owner_id: The customer's or asset's id.
            attachments: The files, bytes included; stored byte for byte, in order.
            note: Kept with each file (the processor writes the email's subject).

        Returns:
            The files as stored, one per attachment, in order.

        Raises:
            RepositoryError: When the customer or asset does not exist.
            ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.

        .. versionadded:: 0.1.0
        """


@runtime_checkable
class IngestLedger(Transactional, Protocol):
    """**Protocol:** halomail's bookkeeping of inbound mail.

    Dedupe keys make every email count once, the quarantine keeps what could not be
    processed, state keeps small values between runs, and leases let one runner at
    a time read a mailbox.

    .. versionadded:: 0.1.0
    """

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record for a dedupe key, or ``None`` if the email was never handled."""

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record that an email was handled.

        Raises:
            DuplicateKeyError: When the key is already recorded (another runner handled
                the email first). The record already there is kept; the caller rolls
                its transaction back and treats the email as a duplicate.
        """

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, with its reason and bytes."""

    def get_state(self, key: str) -> str | None:
        """A value the processor keeps between runs (a mailbox's onboarding mark, …)."""

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs; written inside or outside a transaction."""

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take the named lease (``"mailbox:Support"``) for ``owner`` until ``now + ttl``.

        The lease is taken when it is free, expired (held until ``now`` or earlier), or
        already held by ``owner`` (then it is renewed until ``now + ttl``). Works inside
        a transaction and outside one (committed on its own).

        Returns:
            True when ``owner`` holds the lease now; False when another owner holds
            it until after ``now``.

        .. versionadded:: 0.1.0
        """

    def release_lease(self, name: str, owner: str) -> None:
        """Free the named lease if ``owner`` holds it; otherwise change nothing.

        .. versionadded:: 0.1.0
        """


@runtime_checkable
class OutboxStore(Transactional, Protocol):
    """**Protocol:** outgoing mail, queued with its ticket and claimed before it is sent.

    .. versionadded:: 0.1.0
    """

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email to send after the transaction commits (status ``pending``)."""

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        """Claim due pending emails for ``owner`` until ``now + lease``; return them, oldest first.

        Due means pending and never tried, or with ``next_attempt_at <= now``. Mail
        another owner claimed until after ``now`` is passed over; a claim whose lease
        ran out (its runner died) is taken over, and ``owner``'s own claims are
        renewed. Atomic: two callers at once never receive the same email.
        :meth:`mark_outgoing` clears the claim.

        .. versionadded:: 0.1.0
        """

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        """Record a delivery attempt: ``sent``, ``failed`` for good, or still ``pending``
        with the time of the next attempt. Each call counts one attempt
        and clears the email's claim (:meth:`claim_outgoing`)."""

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """How many emails were queued to ``to`` since ``since`` (for one ticket when given).

        The acknowledgement throttle reads this.
        """


@runtime_checkable
class ServiceLog(Transactional, Protocol):
    """**Protocol:** the history of monitored services' statuses.

    .. versionadded:: 0.1.0
    """

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        """Add a status to a monitored service's history.

        Raises:
            ValueError: When ``new.at`` is naive.

        .. versionadded:: 0.1.0
        """

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        """The newest status of a service (the first of :meth:`service_history`), or ``None``.

        .. versionadded:: 0.1.0
        """


@runtime_checkable
class AttemptLedger(Protocol):
    """**Protocol (optional):** emails whose processing started and has not finished.

    Before an email is parsed, halomail records an attempt for it, committed on its
    own; the transaction that commits the email's outcome forgets it. An email whose
    earlier attempts never finished ended the process (out of memory, a native crash,
    SIGKILL); after two, it is quarantined as ``repeated-crash`` without being parsed
    again, and the mailbox moves on. A repository without these methods keeps
    working, but such an email kills every run that reaches it.

    .. versionadded:: 0.1.0
    """

    def begin_attempt(self, key: str, *, now: dt.datetime) -> int:
        """Record one more attempt at processing the email ``key``.

        Called outside any transaction: the record is committed on its own.

        Args:
            key: The email's identity (its mailbox and the SHA-256 of its bytes).
            now: When the attempt starts (timezone-aware).

        Returns:
            How many earlier attempts at ``key`` were started and never finished.
        """

    def finish_attempt(self, key: str) -> None:
        """Forget every attempt at ``key``; it takes part in the open transaction.

        Called inside the transaction that commits the email's outcome, so the two
        are kept or lost together. A key with no attempts changes nothing.
        """


@runtime_checkable
class GroupCommit(Protocol):
    """**Protocol (optional):** a batch of emails in one transaction, asked at once.

    With ``[processing] batch_size`` above 1, halomail commits several emails of a
    mailbox in one transaction. A repository with these methods answers the batch's
    questions in a few statements, and may keep its small writes for the commit; one
    without them is asked email by email, as always. Either way the transaction
    commits or rolls back as a whole.

    .. versionadded:: 0.1.0
    """

    def prepare_batch(self, keys: BatchKeys) -> None:
        """Read what ``keys`` names for the open transaction; its answers and its writes
        stay consistent with every other method until the transaction ends. A dedupe key
        another runner records meanwhile may raise
        :class:`~halomail.errors.DuplicateKeyError` when the transaction commits."""

    def begin_attempts(
        self, keys: Sequence[tuple[str, str]], *, now: dt.datetime
    ) -> list[int | None]:
        """:meth:`AttemptLedger.begin_attempt` for several emails, in order.

        Args:
            keys: Per email, its attempt key and its ``repeated-crash`` dedupe key.
            now: When the attempts start (timezone-aware).

        Returns:
            Per email begun: how many earlier attempts never finished, or ``None`` when
            its ``repeated-crash`` key is recorded (no attempt is then recorded). The
            list stops after the first answer that is not 0; the emails behind it are
            not begun.
        """


@runtime_checkable
class LedgerRetention(Protocol):
    """**Protocol (optional):** the ledger's old rows forgotten, so that it stops growing.

    Every email leaves a dedupe record, and every acknowledgement a row counted by the
    sending limits; nothing removes them. With ``[processing] ledger_retention_days``
    (:attr:`~halomail.ProcessorSettings.ledger_retention`) and a repository with these
    methods, halomail forgets, once a day, the dedupe records that were neither written
    nor seen within that many days, the attempts begun that long ago, and the rows of
    mail sent that long ago. A record is *seen* when its email is fetched again (its
    disposal failed, or it was put back): :meth:`touch_dedupe` keeps it, so an email
    still in its mailbox is never processed twice. A repository without these methods
    keeps every row, as before.

    .. versionadded:: 0.3.0
    """

    def touch_dedupe(self, key: str, *, now: dt.datetime) -> None:
        """Mark the dedupe record ``key`` seen at ``now``: its email was fetched again.

        It takes part in the open transaction. A key with no record changes nothing.
        """

    def purge_ledger(
        self, *, before: dt.datetime, keep: Sequence[str] = (), limit: int = 10_000
    ) -> int:
        """Forget at most ``limit`` old rows a table of the ledger.

        The rows: dedupe records, attempts, the sent mail the sending limits count, and
        the state rows whose key starts with ``loop:`` (valued ``"<count> <ISO time>"``)
        or ``outbox-sending:`` (valued ``"<ISO time>"``), by the time after the value's
        first space.

        Called outside any transaction; what it removes is committed on its own.

        Args:
            before: Rows recorded (or seen, for dedupe records) before this instant go;
                a timed state row, when its time is before it.
            keep: Key prefixes whose dedupe records stay whatever their age (the
                mailboxes whose mail stays where it is, ``processed = "keep"``).
            limit: At most this many rows per table.

        Returns:
            How many rows went.
        """


@runtime_checkable
class Browsing(Protocol):
    """**Protocol (optional):** what tools for people use; processing mail never calls it.

    Listings, and :meth:`assign`. The ``halomail`` command's ``tickets`` and
    ``quarantine`` commands need it; a host that embeds halomail and never runs
    those commands need not implement it. The shipped repositories implement it.

    .. versionadded:: 0.1.0
    """

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""

    def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> Sequence[QuarantineEntry]:
        """Quarantined emails, newest first."""

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        """The files kept against a customer or an asset, oldest first (empty for none).

        .. versionadded:: 0.1.0
        """

    def service_history(self, service: str, *, limit: int = 100) -> Sequence[ServiceStatusEntry]:
        """A service's statuses, newest first (by ``at``, then the order recorded).

        The name compares exactly; an unknown service has an empty history.

        .. versionadded:: 0.1.0
        """

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        """Pending emails whose next attempt is due (or never tried), oldest first, claimed or not.

        Read-only; halomail itself sends what :meth:`OutboxStore.claim_outgoing` returns.
        """

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket: both values are written (``None`` clears one).

        Touches ``updated_at``; the status is left as it is.

        Raises:
            RepositoryError: When the ticket does not exist.

        .. versionadded:: 0.1.0
        """


@runtime_checkable
class OutboxAdmin(Protocol):
    """**Protocol (optional):** the outbox seen by people: what ``halomail outbox`` needs.

    Not part of :class:`TicketRepository`: processing mail never calls it. The shipped
    repositories implement it; :class:`halomail.testing.OutboxAdminContract` checks it.

    .. versionadded:: 0.1.0
    """

    def list_outgoing(
        self,
        *,
        status: OutboxStatus | None = None,
        limit: int = 100,
        offset: int = 0,
        ticket_id: int | None = None,
    ) -> Sequence[OutboxMail]:
        """Outgoing emails (of one status, of one ticket, when given), newest first."""

    def retry_outgoing(
        self, now: dt.datetime, *, ids: Sequence[int] | None = None
    ) -> Sequence[OutboxMail]:
        """Make failed and pending emails due at ``now`` again: status ``pending``,
        attempts back to 0, claim cleared; sent mail is never touched.

        Args:
            now: When they are due.
            ids: These emails (unknown ids are passed over); every failed or pending
                email when ``None``.

        Returns:
            The emails changed, oldest first.
        """


@runtime_checkable
class QuarantineAdmin(Protocol):
    """**Protocol (optional):** one quarantined email, for ``halomail quarantine show``,
    ``export``, ``release`` and ``delete``.

    Not part of :class:`TicketRepository`: processing mail never calls it. The shipped
    repositories implement it; :class:`halomail.testing.QuarantineAdminContract` checks it.

    .. versionadded:: 0.1.0
    """

    def get_quarantine(self, quarantine_id: int) -> QuarantineEntry | None:
        """The quarantined email with this id, its bytes included, or ``None``."""

    def delete_quarantine(self, quarantine_id: int) -> bool:
        """Forget a quarantined email and its bytes; True when it existed.

        The email's dedupe record is kept: fetched again, it is still a duplicate.
        """


@runtime_checkable
class TicketRepository(TicketStore, Directory, IngestLedger, OutboxStore, ServiceLog, Protocol):
    """**Protocol:** where halomail reads and writes: the union of the five roles.

    A host application (a helpdesk, PSA or CRM) implements it over its own
    database; halomail ships :class:`~halomail.InMemoryTicketRepository` and
    :class:`~halomail.SQLiteTicketRepository` (both also implement :class:`Browsing`).
    Run the contract suite in :mod:`halomail.testing` against your implementation to
    know it is right; ``docs/repository.md`` states every rule.

    Every write takes part in the open transaction. Reads outside a transaction see
    committed data. Methods raise :class:`~halomail.errors.TransientRepositoryError`
    for failures worth retrying (a locked database, a full disk) and
    :class:`~halomail.errors.RepositoryError` otherwise. All datetimes are
    timezone-aware, in UTC.

    By default halomail never calls a repository from two threads at once, though it
    may call it from a thread other than the one that created it. A class that sets
    ``thread_safe = True`` (a class attribute) declares that concurrent calls are
    safe, and may be called from several threads at once.

    .. versionadded:: 0.1.0
    """
