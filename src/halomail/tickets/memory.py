"""The in-memory ticket repository: for tests, examples and hosts that keep nothing.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import attrs

from halomail.errors import DuplicateKeyError, RepositoryError
from halomail.tickets._common import (
    address_key,
    check_page,
    domain_key,
    domain_of,
    field_key,
    file_owner,
    fold,
    merge_fields,
    to_utc,
)
from halomail.tickets._memory_quarantine import QuarantineAdminPart, RetentionPart
from halomail.tickets.models import (
    Action,
    Asset,
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
    utcnow,
)

if TYPE_CHECKING:
    from halomail.tickets.repository import (
        AttemptLedger,
        Browsing,
        LedgerRetention,
        OutboxAdmin,
        QuarantineAdmin,
        TicketRepository,
    )

__all__ = ["InMemoryTicketRepository"]


class InMemoryTicketRepository(QuarantineAdminPart, RetentionPart):
    """A :class:`~halomail.TicketRepository` that keeps everything in dicts, until the process ends.

    Transactions keep an undo log of the entries they change and replay it backwards
    on an exception, so a rollback costs as much as the transaction changed, never a
    copy of the whole store. A write method called outside :meth:`transaction` runs
    in a transaction of its own: it is applied whole or not at all.

    The repository is thread-safe: one re-entrant lock guards every method, and a
    transaction holds it from start to end, so another thread's reads and writes
    wait for the commit or rollback (they never see, or join, uncommitted changes).

    Beyond the Protocol it offers :meth:`add_customer`, :meth:`add_user` and
    :meth:`add_asset` to seed the people and things a stand-alone install knows.

    Args:
        clock: Returns the current time (aware); tests pass a fixed clock.

    .. versionadded:: 0.1.0
    """

    thread_safe: bool = True
    """Concurrent calls from several threads are safe: one lock guards every method."""

    def __init__(self, *, clock: Callable[[], dt.datetime] = utcnow) -> None:
        super().__init__()
        self._clock = clock
        self._tickets: dict[int, Ticket] = {}
        self._alert_tickets: dict[str, tuple[int, ...]] = {}  # alert key -> ids, oldest first
        self._actions: dict[int, tuple[Action, ...]] = {}  # by ticket id, oldest first
        self._action_message_ids: dict[str, int] = {}  # Message-ID -> ticket id (first action)
        self._outbox: dict[int, OutboxMail] = {}
        self._outbox_message_ids: dict[str, int] = {}  # Message-ID -> outbox id
        self._pending: dict[int, None] = {}  # ids of pending outbox mail
        self._recipients: dict[str, tuple[int, ...]] = {}  # address key -> outbox ids
        self._claims: dict[int, tuple[str, dt.datetime]] = {}  # outbox id -> (owner, until)
        self._leases: dict[str, tuple[str, dt.datetime]] = {}  # name -> (owner, until)
        self._attempts: dict[str, int] = {}  # email key -> attempts started, not finished
        self._dedupe: dict[str, DedupeRecord] = {}
        self._quarantine: dict[int, QuarantineEntry] = {}
        self._state: dict[str, str] = {}
        self._customers: dict[int, Customer] = {}
        self._domains: dict[str, int] = {}  # domain -> customer id (the first one seeded)
        self._users: dict[str, User] = {}  # by address key
        self._assets: dict[int, Asset] = {}
        # (field name, folded value) -> ids of the assets with it, ascending (the
        # first is the one found); the tag is keyed under None so that a field called
        # "tag" cannot shadow it. All ids are kept, not just the first, so that when
        # save_asset moves an asset off a value the next asset with it takes over.
        self._asset_index: dict[tuple[str | None, str], tuple[int, ...]] = {}
        self._files: dict[tuple[str, int], tuple[StoredFile, ...]] = {}  # by owner, oldest first
        # Service name -> its statuses in (at, id) order, oldest first.
        self._service_history: dict[str, tuple[ServiceStatusEntry, ...]] = {}

    # -- life cycle ------------------------------------------------------------

    def close(self) -> None:
        """Release nothing: the data stays readable until the object is dropped."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<InMemoryTicketRepository: {len(self._tickets)} tickets>"

    def _now(self) -> dt.datetime:
        return to_utc(self._clock())

    # -- tickets ---------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""
        with self._lock:
            return self._tickets.get(ticket_id)

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket that one of these Message-IDs belongs to (through an action or
        an outgoing email), or ``None``; the first id that matches wins."""
        with self._lock:
            for message_id in message_ids:
                ticket_id = self._action_message_ids.get(message_id)
                if ticket_id is None:
                    outbox_id = self._outbox_message_ids.get(message_id)
                    if outbox_id is not None:
                        ticket_id = self._outbox[outbox_id].ticket_id
                if ticket_id is not None and ticket_id in self._tickets:
                    return self._tickets[ticket_id]
            return None

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket in ``new.status`` (``new`` by default) and return it with its id."""
        with self._writing():
            now = self._now()
            ticket = Ticket.from_new(
                new,
                id=self._next_id("tickets"),
                created_at=now,
                closed_at=now if new.status is TicketStatus.CLOSED else None,
            )
            self._put(self._tickets, ticket.id, ticket)
            if new.alert_key is not None:
                ids = self._alert_tickets.get(new.alert_key, ())
                self._put(self._alert_tickets, new.alert_key, (*ids, ticket.id))
            return ticket

    def add_action(self, new: NewAction) -> Action:
        """Add an action to a ticket, and touch the ticket's ``updated_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        with self._writing():
            ticket = self._require_ticket(new.ticket_id)
            now = self._now()
            action = Action(
                id=self._next_id("actions"),
                ticket_id=new.ticket_id,
                kind=new.kind,
                body=new.body,
                created_at=now,
                from_address=new.from_address,
                public=new.public,
                message_id=new.message_id,
                attachments=tuple(new.attachments),
            )
            self._put(self._actions, ticket.id, (*self._actions.get(ticket.id, ()), action))
            if new.message_id is not None and new.message_id not in self._action_message_ids:
                self._put(self._action_message_ids, new.message_id, ticket.id)
            self._put(self._tickets, ticket.id, attrs.evolve(ticket, updated_at=now))
            return action

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        """Change a ticket's status (``closed`` sets ``closed_at``; reopening clears it).

        Closing a ticket that is already closed keeps its first ``closed_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        with self._writing():
            ticket = self._require_ticket(ticket_id)
            now = self._now()
            closed_at = None
            if status is TicketStatus.CLOSED:
                closed_at = ticket.closed_at or now
            updated = attrs.evolve(ticket, status=status, updated_at=now, closed_at=closed_at)
            self._put(self._tickets, ticket_id, updated)
            return updated

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""
        check_page(limit, offset)
        with self._lock:
            # Ids are handed out in increasing order and dicts keep insertion order,
            # so walking the dict backwards is newest first without a sort.
            return list(itertools.islice(reversed(self._tickets.values()), offset, offset + limit))

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first (empty for an unknown ticket)."""
        with self._lock:
            return list(self._actions.get(ticket_id, ()))

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed, or ``None``."""
        with self._lock:
            for ticket_id in reversed(self._alert_tickets.get(alert_key, ())):
                ticket = self._tickets[ticket_id]
                if ticket.is_open:
                    return ticket
            return None

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket: both values are written (``None`` clears one).

        Touches ``updated_at``; the status is left as it is.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        with self._writing():
            ticket = self._require_ticket(ticket_id)
            updated = attrs.evolve(ticket, agent=agent, team=team, updated_at=self._now())
            self._put(self._tickets, ticket_id, updated)
            return updated

    def _require_ticket(self, ticket_id: int) -> Ticket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            raise RepositoryError(f"ticket {ticket_id} does not exist")
        return ticket

    # -- people and things -----------------------------------------------------

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer.

        Args:
            name: The customer's name.
            domains: Email domains that belong to the customer (stored lower-cased).
                When two customers claim a domain, the first one added owns it.
            from_address: Overrides the outgoing From address for this customer.
            reply_address: Overrides the Reply-To address for this customer.

        Returns:
            The customer with its id.
        """
        keys = tuple(dict.fromkeys(key for key in map(domain_key, domains) if key))
        with self._writing():
            customer = Customer(self._next_id("customers"), name, keys, from_address, reply_address)
            self._put(self._customers, customer.id, customer)
            for key in keys:
                if key not in self._domains:
                    self._put(self._domains, key, customer.id)
            return customer

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user.

        Args:
            email: The user's address (stored lower-cased; unique).
            name: The user's name.
            customer_id: The customer the user belongs to.
            phone: Phone number.
            mobile: Mobile number.

        Returns:
            The user with its id.

        Raises:
            RepositoryError: When a user with this address exists, or the customer does not.
        """
        key = address_key(email)
        with self._writing():
            if key in self._users:
                raise RepositoryError(f"a user with the address {key!r} already exists")
            self._require_customer(customer_id)
            user = User(self._next_id("users"), key, name, customer_id, phone, mobile)
            self._put(self._users, key, user)
            return user

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset.

        Args:
            tag: The asset tag.
            fields: Other field values by name (serial number, host name, …).
            customer_id: The owning customer.

        Returns:
            The asset with its id.

        Raises:
            RepositoryError: When the customer does not exist.
        """
        with self._writing():
            self._require_customer(customer_id)
            return self._insert_asset(tag, fields or {}, customer_id)

    def _insert_asset(self, tag: str, fields: Mapping[str, str], customer_id: int | None) -> Asset:
        asset = Asset(self._next_id("assets"), tag, dict(fields), customer_id)
        self._put(self._assets, asset.id, asset)
        self._index_asset(asset.id, (None, fold(tag)))
        for name, value in asset.fields.items():
            self._index_asset(asset.id, (field_key(name), fold(value)))
        return asset

    def _index_asset(self, asset_id: int, key: tuple[str | None, str]) -> None:
        ids = list(self._asset_index.get(key, ()))
        bisect.insort(ids, asset_id)
        self._put(self._asset_index, key, tuple(ids))

    def _unindex_asset(self, asset_id: int, key: tuple[str | None, str]) -> None:
        ids = tuple(i for i in self._asset_index.get(key, ()) if i != asset_id)
        if ids:
            self._put(self._asset_index, key, ids)
        else:
            self._pop(self._asset_index, key)

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        """Create the asset with this tag, or update the one that has it.

        The existing asset is the first one added with this tag (compared
        case-insensitively); it keeps its id and its tag's spelling, and ``fields``
        are merged over its own. ``customer_id`` ``None`` keeps its owner.

        Returns:
            The asset as stored now, and True when it was created.

        Raises:
            RepositoryError: When ``customer_id`` names no customer.
        """
        with self._writing():
            self._require_customer(customer_id)
            ids = self._asset_index.get((None, fold(tag)))
            if not ids:
                return self._insert_asset(tag, fields, customer_id), True
            old = self._assets[ids[0]]
            owner = old.customer_id if customer_id is None else customer_id
            asset = attrs.evolve(old, fields=merge_fields(old.fields, fields), customer_id=owner)
            self._put(self._assets, asset.id, asset)
            before = {(field_key(name), fold(value)) for name, value in old.fields.items()}
            after = {(field_key(name), fold(value)) for name, value in asset.fields.items()}
            for key in before - after:
                self._unindex_asset(asset.id, key)
            for key in after - before:
                self._index_asset(asset.id, key)
            return asset, False

    def _require_customer(self, customer_id: int | None) -> None:
        if customer_id is not None and customer_id not in self._customers:
            raise RepositoryError(f"customer {customer_id} does not exist")

    def _require_owner(self, owner: str, owner_id: int) -> None:
        if owner == "customer":
            self._require_customer(owner_id)
        elif owner_id not in self._assets:
            raise RepositoryError(f"asset {owner_id} does not exist")

    def find_user(self, email: str) -> User | None:
        """The user with this address (compared case-insensitively), or ``None``."""
        with self._lock:
            return self._users.get(address_key(email))

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the customer owning its domain."""
        with self._lock:
            user = self._users.get(address_key(email))
            if user is not None and user.customer_id is not None:
                return self._customers[user.customer_id]
            domain = domain_of(email)
            customer_id = self._domains.get(domain) if domain else None
            return self._customers[customer_id] if customer_id is not None else None

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The asset whose ``field`` (``"tag"`` or a field name, compared as
        :func:`~halomail.tickets._common.field_key` does) equals ``value``
        (case-insensitively), or ``None``; the first one added wins."""
        key = field_key(field)
        with self._lock:
            ids = self._asset_index.get((None if key == "tag" else key, fold(value)))
            return self._assets[ids[0]] if ids else None

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket.

        Returns:
            The files as stored, one per attachment, in order.

        Raises:
            RepositoryError: When the customer or asset does not exist.
            ValueError: When ``owner`` is neither ``"customer"`` nor ``"asset"``.
        """
        kind = file_owner(owner)
        with self._writing():
            self._require_owner(kind, owner_id)
            now = self._now()
            stored = tuple(
                StoredFile(
                    id=self._next_id("files"),
                    owner=kind,
                    owner_id=owner_id,
                    note=note,
                    created_at=now,
                    **attrs.asdict(attachment, recurse=False),
                )
                for attachment in attachments
            )
            if stored:
                key = (kind, owner_id)
                self._put(self._files, key, (*self._files.get(key, ()), *stored))
            return stored

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        """The files kept against a customer or an asset, oldest first (empty for none)."""
        kind = file_owner(owner)
        with self._lock:
            return list(self._files.get((kind, owner_id), ()))

    # -- exactly once ----------------------------------------------------------

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record for a dedupe key, or ``None`` if the email was never handled."""
        with self._lock:
            return self._dedupe.get(key)

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record that an email was handled.

        Raises:
            DuplicateKeyError: When the key is already recorded.
        """
        with self._writing():
            if record.key in self._dedupe:
                raise DuplicateKeyError(f"dedupe key already recorded: {record.key[:200]!r}")
            stored = attrs.evolve(record, created_at=to_utc(record.created_at))
            self._put(self._dedupe, record.key, stored)

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, with its reason and bytes."""
        with self._writing():
            entry = QuarantineEntry(
                id=self._next_id("quarantine"),
                mailbox=new.mailbox,
                reason=new.reason,
                raw=new.raw,
                created_at=self._now(),
                detail=new.detail,
                message_id=new.message_id,
                dedupe_key=new.dedupe_key,
            )
            self._put(self._quarantine, entry.id, entry)
            return entry

    def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> Sequence[QuarantineEntry]:
        """Quarantined emails, newest first."""
        check_page(limit, offset)
        with self._lock:
            entries = reversed(self._quarantine.values())
            return list(itertools.islice(entries, offset, offset + limit))

    # -- the outbox ------------------------------------------------------------

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email to send after the transaction commits (status ``pending``).

        Raises:
            RepositoryError: When an email with this Message-ID is already queued.
        """
        with self._writing():
            if new.message_id in self._outbox_message_ids:
                raise RepositoryError(f"outgoing Message-ID already queued: {new.message_id!r}")
            mail = OutboxMail(
                id=self._next_id("outbox"),
                message_id=new.message_id,
                to=tuple(new.to),
                subject=new.subject,
                text=new.text,
                status=OutboxStatus.PENDING,
                created_at=self._now(),
                mailbox=new.mailbox,
                kind=new.kind,
                ticket_id=new.ticket_id,
                html=new.html,
                in_reply_to=new.in_reply_to,
                references=tuple(new.references),
                auto_submitted=new.auto_submitted,
            )
            self._put(self._outbox, mail.id, mail)
            self._put(self._outbox_message_ids, mail.message_id, mail.id)
            self._put(self._pending, mail.id, None)
            for key in dict.fromkeys(map(address_key, mail.to)):
                self._put(self._recipients, key, (*self._recipients.get(key, ()), mail.id))
            return mail

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        """Pending emails whose next attempt is due (or never tried), oldest first."""
        check_page(limit, 0)
        now = to_utc(now)
        with self._lock:
            due = (
                mail
                for mail in map(self._outbox.__getitem__, sorted(self._pending))
                if mail.next_attempt_at is None or mail.next_attempt_at <= now
            )
            return list(itertools.islice(due, limit))

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        """Claim due pending emails for ``owner`` until ``now + lease``; return them, oldest first.

        Mail another owner claimed until after ``now`` is passed over. The lock makes
        the read and the claim one step, so two callers never receive the same email.
        """
        check_page(limit, 0)
        now = to_utc(now)
        until = now + lease
        with self._writing():
            claimed = list(itertools.islice(self._claimable(now, owner), limit))
            for mail in claimed:
                self._put(self._claims, mail.id, (owner, until))
            return claimed

    def _claimable(self, now: dt.datetime, owner: str) -> Iterator[OutboxMail]:
        for mail in map(self._outbox.__getitem__, sorted(self._pending)):
            if mail.next_attempt_at is not None and mail.next_attempt_at > now:
                continue
            holder, until = self._claims.get(mail.id, (owner, now))
            if holder == owner or until <= now:
                yield mail

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        """Record a delivery attempt: ``sent``, ``failed`` for good, or still ``pending``
        with the time of the next attempt. Each call counts one attempt.

        Raises:
            RepositoryError: When there is no outgoing email with this id.
        """
        retry_at = to_utc(next_attempt_at) if next_attempt_at is not None else None
        with self._writing():
            mail = self._outbox.get(outbox_id)
            if mail is None:
                raise RepositoryError(f"outgoing email {outbox_id} does not exist")
            updated = attrs.evolve(
                mail,
                status=status,
                attempts=mail.attempts + 1,
                last_error=error,
                next_attempt_at=retry_at,
                sent_at=self._now() if status is OutboxStatus.SENT else mail.sent_at,
            )
            self._put(self._outbox, outbox_id, updated)
            self._pop(self._claims, outbox_id)
            if status is OutboxStatus.PENDING:
                self._put(self._pending, outbox_id, None)
            else:
                self._pop(self._pending, outbox_id)
            return updated

    def list_outgoing(
        self,
        *,
        status: OutboxStatus | None = None,
        limit: int = 100,
        offset: int = 0,
        ticket_id: int | None = None,
    ) -> Sequence[OutboxMail]:
        """Outgoing emails (of one status, of one ticket, when given), newest first."""
        check_page(limit, offset)
        with self._lock:
            mails = (self._outbox[key] for key in sorted(self._outbox, reverse=True))
            chosen = (
                mail
                for mail in mails
                if status in (None, mail.status) and ticket_id in (None, mail.ticket_id)
            )
            return list(itertools.islice(chosen, offset, offset + limit))

    def retry_outgoing(
        self, now: dt.datetime, *, ids: Sequence[int] | None = None
    ) -> Sequence[OutboxMail]:
        """Make failed and pending emails due at ``now`` again (attempts 0, no claim)."""
        now = to_utc(now)
        with self._writing():
            wanted = sorted(self._outbox) if ids is None else sorted(set(ids) & set(self._outbox))
            changed = []
            for outbox_id in wanted:
                mail = self._outbox[outbox_id]
                if mail.status is OutboxStatus.SENT:
                    continue
                updated = attrs.evolve(
                    mail, status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now
                )
                self._put(self._outbox, outbox_id, updated)
                self._put(self._pending, outbox_id, None)
                self._pop(self._claims, outbox_id)
                changed.append(updated)
            return changed

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """How many emails (any status) were queued to ``to`` (one of their recipients,
        compared case-insensitively) at or after ``since``, for one ticket when given."""
        since = to_utc(since)
        with self._lock:
            return sum(
                1
                for mail in map(self._outbox.__getitem__, self._recipients.get(address_key(to), ()))
                if mail.created_at >= since and (ticket_id is None or mail.ticket_id == ticket_id)
            )

    # -- monitored services ------------------------------------------------------

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        """Add a status to a monitored service's history.

        Raises:
            ValueError: When ``new.at`` is naive.
        """
        at = to_utc(new.at)
        with self._writing():
            entry = ServiceStatusEntry(
                id=self._next_id("service_status"),
                service=new.service,
                status=new.status,
                at=at,
                detail=new.detail,
                ticket_id=new.ticket_id,
                message_id=new.message_id,
            )
            history = self._service_history.get(new.service, ())
            if history and history[-1].at > at:
                # Recorded out of order (an injected clock, a late email): keep the
                # history sorted so that reads stay a slice.
                ordered = list(history)
                bisect.insort(ordered, entry, key=_history_order)
                self._put(self._service_history, new.service, tuple(ordered))
            else:
                self._put(self._service_history, new.service, (*history, entry))
            return entry

    def service_history(self, service: str, *, limit: int = 100) -> Sequence[ServiceStatusEntry]:
        """A service's statuses, newest first (by ``at``, then the order recorded)."""
        check_page(limit, 0)
        with self._lock:
            history = self._service_history.get(service, ())
            return list(itertools.islice(reversed(history), limit))

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        """The newest status of a service, or ``None``."""
        with self._lock:
            history = self._service_history.get(service, ())
            return history[-1] if history else None

    # -- small persistent state --------------------------------------------------

    def get_state(self, key: str) -> str | None:
        """A value the processor keeps between runs, or ``None``."""
        with self._lock:
            return self._state.get(key)

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs; written inside or outside a transaction."""
        with self._writing():
            self._put(self._state, key, value)

    # -- leases ------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take (or renew) the named lease for ``owner`` until ``now + ttl``.

        Returns:
            True when ``owner`` holds it now; False when another owner holds it until
            after ``now``.
        """
        now = to_utc(now)
        with self._writing():
            holder, until = self._leases.get(name, (owner, now))
            if holder != owner and until > now:
                return False
            self._put(self._leases, name, (owner, now + ttl))
            return True

    def release_lease(self, name: str, owner: str) -> None:
        """Free the named lease if ``owner`` holds it; otherwise change nothing."""
        with self._writing():
            held = self._leases.get(name)
            if held is not None and held[0] == owner:
                self._pop(self._leases, name)

    # -- attempts ----------------------------------------------------------------

    def begin_attempt(self, key: str, *, now: dt.datetime) -> int:
        """Record that processing the email ``key`` starts; return the unfinished earlier ones."""
        to_utc(now)  # refuses a naive time, as the SQLite repository does
        with self._writing():
            earlier = self._attempts.get(key, 0)
            self._put(self._attempts, key, earlier + 1)
            return earlier

    def finish_attempt(self, key: str) -> None:
        """Forget the attempts of ``key`` (inside the transaction that commits its outcome)."""
        with self._writing():
            self._pop(self._attempts, key)


def _history_order(entry: ServiceStatusEntry) -> tuple[dt.datetime, int]:
    return entry.at, entry.id


if TYPE_CHECKING:
    # mypy proves the class satisfies the Protocol, signature by signature.
    _: type[TicketRepository] = InMemoryTicketRepository
    _browsing: type[Browsing] = InMemoryTicketRepository
    _outbox_admin: type[OutboxAdmin] = InMemoryTicketRepository
    _quarantine_admin: type[QuarantineAdmin] = InMemoryTicketRepository
    _attempts: type[AttemptLedger] = InMemoryTicketRepository
    _retention: type[LedgerRetention] = InMemoryTicketRepository
