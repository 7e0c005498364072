"""halomail's repository over SQLAlchemy 2: the host's tables, halomail's contract.

:class:`SQLAlchemyTicketRepository` implements :class:`halomail.TicketRepository` (and
the optional ``Browsing`` and ``AttemptLedger``) on the models of :mod:`.models`.
halomail's contract suite proves it (``tests/test_example_sqlalchemy_fastapi.py``).

Transactions: each ``transaction()`` is one SQLAlchemy session in one database
transaction; a method called outside one runs in a session of its own and commits.
:meth:`SQLAlchemyTicketRepository.unit_of_work` is the host's side: one transaction
for a whole request, which halomail's own ``transaction()`` blocks join as savepoints,
so an agent's reply and the email the notifier queues for it commit together.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from halomail import (
    Action,
    ActionKind,
    Asset,
    Customer,
    DedupeRecord,
    DuplicateKeyError,
    FileOwner,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxMail,
    OutboxStatus,
    QuarantineEntry,
    RecordKind,
    RepositoryError,
    ServiceStatusEntry,
    StoredAttachment,
    StoredFile,
    Ticket,
    TicketStatus,
    TransientRepositoryError,
    User,
)

from .models import (
    ActionRow,
    AssetFieldRow,
    AssetRow,
    AttachmentRow,
    AttemptRow,
    Base,
    CustomerDomainRow,
    CustomerRow,
    DedupeRow,
    FileRow,
    LeaseRow,
    OutboxRecipientRow,
    OutboxRow,
    QuarantineRow,
    ServiceStatusRow,
    StateRow,
    TicketRow,
    UserRow,
)

__all__ = ["SQLAlchemyTicketRepository", "sqlite_engine"]


def sqlite_engine(path: str) -> Engine:
    """An engine on an SQLite file whose transactions take the write lock when they begin.

    pysqlite opens transactions lazily and does not support savepoints well; the
    recipe from SQLAlchemy's SQLite documentation hands transactions to SQLAlchemy, and
    ``BEGIN IMMEDIATE`` makes two processes queue for the lock instead of deadlocking.
    """
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SQLAlchemyTicketRepository:
    """A :class:`halomail.TicketRepository` on the tables of :mod:`.models`.

    Args:
        engine: The database (``sqlite_engine(path)``, or any SQLAlchemy engine).
        create_tables: Create missing tables on start (a real host runs migrations).
    """

    # One lock guards the repository, and a transaction holds it until it ends, so
    # halomail may call it from several threads at once.
    thread_safe = True

    def __init__(self, engine: Engine, *, create_tables: bool = True) -> None:
        self.engine = engine
        if create_tables:
            Base.metadata.create_all(engine)
        self._lock = threading.RLock()
        self._session: Session | None = None  # the open transaction's session
        self._host_session: Session | None = None  # the host's unit of work, when open

    def close(self) -> None:
        """Close the engine's connections."""
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """halomail's transaction: committed when the block ends, rolled back on an exception.

        Inside :meth:`unit_of_work` it is a savepoint of the host's transaction instead.

        Raises:
            RepositoryError: When a transaction is already open (they do not nest).
        """
        with self._lock:
            if self._session is not None:
                raise RepositoryError("transactions do not nest: one is already open")
            if self._host_session is not None:
                with self._errors(), self._joined(self._host_session):
                    yield
                return
            with (
                Session(self.engine) as session,
                self._errors(),
                session.begin(),
                self._joined(session),
            ):
                yield

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """The host's transaction: halomail's writes inside it commit with the host's, or none.

        Every repository method called in the block writes in this one transaction, and
        halomail's own ``transaction()`` blocks (the notifier's) become savepoints of it.
        The host may use the session it yields for its own queries.
        """
        with self._lock:
            if self._session is not None or self._host_session is not None:
                raise RepositoryError("a transaction is already open")
            with Session(self.engine) as session, self._errors(), session.begin():
                self._host_session = session
                try:
                    yield session
                finally:
                    self._host_session = None

    @contextmanager
    def _joined(self, session: Session) -> Iterator[None]:
        """Make ``session`` the transaction every method writes in, as a savepoint if shared."""
        savepoint = session.begin_nested() if session is self._host_session else None
        self._session = session
        try:
            yield
        except BaseException:
            if savepoint is not None and savepoint.is_active:
                savepoint.rollback()
            raise
        else:
            if savepoint is not None:
                savepoint.commit()
        finally:
            self._session = None

    @contextmanager
    def _use(self) -> Iterator[Session]:
        """The session a method reads and writes in: the open transaction's, or its own."""
        with self._lock:
            session = self._session or self._host_session
            if session is not None:
                with self._errors():
                    yield session
                    session.flush()
                return
            with Session(self.engine) as own, self._errors(), own.begin():
                yield own

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLAlchemy's errors as halomail's: transient when trying again may succeed."""
        try:
            yield
        except OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise TransientRepositoryError(f"the database is busy: {exc.orig}") from exc
            raise RepositoryError(f"database error: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise RepositoryError(f"database error: {exc}") from exc

    # -- tickets -----------------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""
        with self._use() as session:
            row = session.get(TicketRow, ticket_id)
            return _ticket(row) if row is not None else None

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket an action or an outgoing email with one of these Message-IDs belongs to."""
        with self._use() as session:
            for message_id in message_ids:
                ticket_id = session.scalar(
                    select(ActionRow.ticket_id)
                    .where(ActionRow.message_id == message_id)
                    .order_by(ActionRow.id)
                    .limit(1)
                )
                if ticket_id is None:
                    ticket_id = session.scalar(
                        select(OutboxRow.ticket_id).where(OutboxRow.message_id == message_id)
                    )
                row = session.get(TicketRow, ticket_id) if ticket_id is not None else None
                if row is not None:
                    return _ticket(row)
            return None

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket in ``new.status`` and return it with its id."""
        with self._use() as session:
            now = _now()
            row = TicketRow(
                summary=new.summary,
                details=new.details,
                ticket_type=new.ticket_type,
                user_email=new.user_email,
                user_name=new.user_name,
                mailbox=new.mailbox,
                record=new.record.value,
                status=new.status.value,
                customer=new.customer,
                cc=list(new.cc),
                priority=new.priority,
                category=new.category,
                team=new.team,
                agent=new.agent,
                asset_id=new.asset_id,
                asset_ids=list(new.asset_ids),
                custom_fields=dict(new.custom_fields),
                alert_key=new.alert_key,
                impact=new.impact,
                urgency=new.urgency,
                site=new.site,
                created_at=now,
                updated_at=now,
                closed_at=now if new.status is TicketStatus.CLOSED else None,
            )
            session.add(row)
            session.flush()
            return _ticket(row)

    def add_action(self, new: NewAction) -> Action:
        """Add an action (attachments in order, byte for byte) and touch the ticket."""
        with self._use() as session:
            ticket = self._require_ticket(session, new.ticket_id)
            now = _now()
            row = ActionRow(
                kind=new.kind.value,
                body=new.body,
                from_address=new.from_address,
                public=new.public,
                message_id=new.message_id,
                created_at=now,
                attachments=[_attachment_row(a) for a in new.attachments],
            )
            ticket.actions.append(row)
            ticket.updated_at = now
            session.flush()
            return _action(row)

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        """Change a ticket's status: closing sets ``closed_at`` once, reopening clears it."""
        with self._use() as session:
            row = self._require_ticket(session, ticket_id)
            now = _now()
            row.status = status.value
            row.updated_at = now
            row.closed_at = (row.closed_at or now) if status is TicketStatus.CLOSED else None
            return _ticket(row)

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first."""
        with self._use() as session:
            rows = session.scalars(
                select(ActionRow).where(ActionRow.ticket_id == ticket_id).order_by(ActionRow.id)
            )
            return [_action(row) for row in rows]

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed."""
        with self._use() as session:
            row = session.scalar(
                select(TicketRow)
                .where(TicketRow.alert_key == alert_key, TicketRow.status != "closed")
                .order_by(TicketRow.id.desc())
                .limit(1)
            )
            return _ticket(row) if row is not None else None

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""
        _check_page(limit, offset)
        with self._use() as session:
            query = select(TicketRow).order_by(TicketRow.id.desc()).limit(limit).offset(offset)
            return [_ticket(row) for row in session.scalars(query)]

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket (``None`` clears one) and touch it."""
        with self._use() as session:
            row = self._require_ticket(session, ticket_id)
            row.agent, row.team, row.updated_at = agent, team, _now()
            return _ticket(row)

    @staticmethod
    def _require_ticket(session: Session, ticket_id: int) -> TicketRow:
        row = session.get(TicketRow, ticket_id)
        if row is None:
            raise RepositoryError(f"ticket {ticket_id} does not exist")
        return row

    # -- people and things ---------------------------------------------------------------

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer; a domain another customer claimed first stays theirs."""
        keys = list(dict.fromkeys(k for k in (_domain_key(d) for d in domains) if k))
        with self._use() as session:
            row = CustomerRow(
                name=name, domains=keys, from_address=from_address, reply_address=reply_address
            )
            session.add(row)
            session.flush()
            for key in keys:
                if session.get(CustomerDomainRow, key) is None:
                    session.add(CustomerDomainRow(domain=key, customer_id=row.id))
            return _customer(row)

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user (the address is unique, compared case-insensitively)."""
        key = email.strip().lower()
        with self._use() as session:
            if session.scalar(select(UserRow.id).where(UserRow.email == key)) is not None:
                raise RepositoryError(f"a user with the address {key!r} already exists")
            self._require_customer(session, customer_id)
            row = UserRow(email=key, name=name, customer_id=customer_id, phone=phone, mobile=mobile)
            session.add(row)
            session.flush()
            return _user(row)

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset."""
        with self._use() as session:
            self._require_customer(session, customer_id)
            return _asset(self._insert_asset(session, tag, dict(fields or {}), customer_id))

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        """Create the asset with this tag, or merge ``fields`` into the first one that has it."""
        with self._use() as session:
            self._require_customer(session, customer_id)
            row = session.scalar(
                select(AssetRow)
                .where(AssetRow.tag_key == tag.casefold())
                .order_by(AssetRow.id)
                .limit(1)
            )
            if row is None:
                return _asset(self._insert_asset(session, tag, dict(fields), customer_id)), True
            row.fields = _merge_fields(row.fields, fields)
            if customer_id is not None:
                row.customer_id = customer_id
            self._index_fields(session, row)
            return _asset(row), False

    def _insert_asset(
        self, session: Session, tag: str, fields: dict[str, str], customer_id: int | None
    ) -> AssetRow:
        row = AssetRow(tag=tag, tag_key=tag.casefold(), fields=fields, customer_id=customer_id)
        session.add(row)
        session.flush()
        self._index_fields(session, row)
        return row

    @staticmethod
    def _index_fields(session: Session, row: AssetRow) -> None:
        """Rewrite the searchable copy of an asset's fields."""
        session.execute(delete(AssetFieldRow).where(AssetFieldRow.asset_id == row.id))
        for name, value in row.fields.items():
            session.add(
                AssetFieldRow(
                    asset_id=row.id, name_key=_field_key(name), value_key=value.casefold()
                )
            )
        session.flush()

    def find_user(self, email: str) -> User | None:
        """The user with this address, compared case-insensitively."""
        with self._use() as session:
            row = session.scalar(select(UserRow).where(UserRow.email == email.strip().lower()))
            return _user(row) if row is not None else None

    def find_customer(self, email: str) -> Customer | None:
        """The customer of the user with this address, else the one owning its domain."""
        with self._use() as session:
            user = session.scalar(select(UserRow).where(UserRow.email == email.strip().lower()))
            customer_id = user.customer_id if user is not None else None
            if customer_id is None:
                domain = _domain_of(email)
                owner = session.get(CustomerDomainRow, domain) if domain else None
                customer_id = owner.customer_id if owner is not None else None
            row = session.get(CustomerRow, customer_id) if customer_id is not None else None
            return _customer(row) if row is not None else None

    def find_asset(self, field: str, value: str) -> Asset | None:
        """The first asset whose tag or field (name ignoring case and punctuation) is ``value``."""
        key = _field_key(field)
        with self._use() as session:
            if key == "tag":
                query = select(AssetRow).where(AssetRow.tag_key == value.casefold())
            else:
                query = (
                    select(AssetRow)
                    .join(AssetFieldRow)
                    .where(
                        AssetFieldRow.name_key == key, AssetFieldRow.value_key == value.casefold()
                    )
                )
            row = session.scalar(query.order_by(AssetRow.id).limit(1))
            return _asset(row) if row is not None else None

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        """Keep files against a customer or an asset, with no ticket."""
        table = _owner_table(owner)
        with self._use() as session:
            if session.get(table, owner_id) is None:
                raise RepositoryError(f"{owner} {owner_id} does not exist")
            now = _now()
            rows = [
                FileRow(
                    owner=owner,
                    owner_id=owner_id,
                    note=note,
                    created_at=now,
                    filename=a.filename,
                    storage_name=a.storage_name,
                    content_type=a.content_type,
                    size=a.size,
                    content_id=a.content_id,
                    inline=a.inline,
                    payload=a.payload,
                )
                for a in attachments
            ]
            session.add_all(rows)
            session.flush()
            return [_file(row) for row in rows]

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        """The files kept against a customer or an asset, oldest first."""
        _owner_table(owner)
        with self._use() as session:
            rows = session.scalars(
                select(FileRow)
                .where(FileRow.owner == owner, FileRow.owner_id == owner_id)
                .order_by(FileRow.id)
            )
            return [_file(row) for row in rows]

    @staticmethod
    def _require_customer(session: Session, customer_id: int | None) -> None:
        if customer_id is not None and session.get(CustomerRow, customer_id) is None:
            raise RepositoryError(f"customer {customer_id} does not exist")

    # -- the ingest ledger -----------------------------------------------------------------

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """Whether the email with this key was handled, and how."""
        with self._use() as session:
            row = session.get(DedupeRow, key)
            if row is None:
                return None
            return DedupeRecord(row.key, row.sha256, row.outcome, row.ticket_id, row.created_at)

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record that an email was handled; a key recorded already raises DuplicateKeyError."""
        created_at = _utc(record.created_at)
        with self._use() as session:
            duplicate = DuplicateKeyError(f"dedupe key already recorded: {record.key[:200]!r}")
            if session.get(DedupeRow, record.key) is not None:
                raise duplicate
            try:
                # A savepoint: if another process recorded the key since our read, only
                # this insert is undone and the caller's transaction stays usable.
                with session.begin_nested():
                    session.add(
                        DedupeRow(
                            key=record.key,
                            sha256=record.sha256,
                            outcome=record.outcome,
                            ticket_id=record.ticket_id,
                            created_at=created_at,
                        )
                    )
            except IntegrityError as exc:
                raise DuplicateKeyError(
                    f"dedupe key already recorded: {record.key[:200]!r}"
                ) from exc

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        """Keep an email that could not be processed, bytes exact."""
        with self._use() as session:
            row = QuarantineRow(
                mailbox=new.mailbox,
                reason=new.reason,
                raw=new.raw,
                detail=new.detail,
                message_id=new.message_id,
                dedupe_key=new.dedupe_key,
                created_at=_now(),
            )
            session.add(row)
            session.flush()
            return _quarantined(row)

    def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> Sequence[QuarantineEntry]:
        """Quarantined emails, newest first."""
        _check_page(limit, offset)
        with self._use() as session:
            query = (
                select(QuarantineRow).order_by(QuarantineRow.id.desc()).limit(limit).offset(offset)
            )
            return [_quarantined(row) for row in session.scalars(query)]

    def get_state(self, key: str) -> str | None:
        """A value halomail keeps between runs."""
        with self._use() as session:
            row = session.get(StateRow, key)
            return row.value if row is not None else None

    def set_state(self, key: str, value: str) -> None:
        """Keep a value between runs."""
        with self._use() as session:
            session.merge(StateRow(key=key, value=value))

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Take or renew the named lease, unless another owner holds it after ``now``.

        The read and the write are one step: the lock serialises this process, and the
        transaction's ``BEGIN IMMEDIATE`` other processes.
        """
        now = _utc(now)
        with self._use() as session:
            row = session.get(LeaseRow, name)
            if row is None:
                session.add(LeaseRow(name=name, owner=owner, until=now + ttl))
                return True
            if row.owner != owner and row.until > now:
                return False
            row.owner, row.until = owner, now + ttl
            return True

    def release_lease(self, name: str, owner: str) -> None:
        """Free the lease if ``owner`` holds it."""
        with self._use() as session:
            session.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.owner == owner))

    def begin_attempt(self, key: str, *, now: dt.datetime) -> int:
        """Count one more attempt at processing ``key``; return the unfinished earlier ones."""
        _utc(now)
        with self._use() as session:
            row = session.get(AttemptRow, key)
            if row is None:
                session.add(AttemptRow(key=key, started=1))
                return 0
            row.started += 1
            return row.started - 1

    def finish_attempt(self, key: str) -> None:
        """Forget the attempts at ``key``."""
        with self._use() as session:
            session.execute(delete(AttemptRow).where(AttemptRow.key == key))

    # -- the outbox ------------------------------------------------------------------------

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        """Queue an email (pending, never tried); a Message-ID queued already is refused."""
        with self._use() as session:
            taken = select(OutboxRow.id).where(OutboxRow.message_id == new.message_id)
            if session.scalar(taken) is not None:
                raise RepositoryError(f"outgoing Message-ID already queued: {new.message_id!r}")
            row = OutboxRow(
                message_id=new.message_id,
                to=list(new.to),
                subject=new.subject,
                text=new.text,
                html=new.html,
                mailbox=new.mailbox,
                kind=new.kind,
                ticket_id=new.ticket_id,
                in_reply_to=new.in_reply_to,
                references=list(new.references),
                auto_submitted=new.auto_submitted,
                status=OutboxStatus.PENDING.value,
                attempts=0,
                created_at=_now(),
                recipients=[
                    OutboxRecipientRow(address=a)
                    for a in dict.fromkeys(a.strip().lower() for a in new.to)
                ],
            )
            session.add(row)
            session.flush()
            return _outgoing(row)

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        """Claim the due pending emails nobody else holds, for ``owner`` until ``now + lease``."""
        _check_page(limit, 0)
        now = _utc(now)
        with self._use() as session:
            rows = list(
                session.scalars(
                    _due(now)
                    .where(
                        or_(
                            OutboxRow.claimed_by.is_(None),
                            OutboxRow.claimed_by == owner,
                            OutboxRow.claimed_until <= now,
                        )
                    )
                    .limit(limit)
                )
            )
            for row in rows:
                row.claimed_by, row.claimed_until = owner, now + lease
            return [_outgoing(row) for row in rows]

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        """Pending emails whose next attempt is due, oldest first."""
        _check_page(limit, 0)
        with self._use() as session:
            return [_outgoing(row) for row in session.scalars(_due(_utc(now)).limit(limit))]

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        """Record one delivery attempt: sent, failed for good, or pending until a retry."""
        retry_at = _utc(next_attempt_at) if next_attempt_at is not None else None
        with self._use() as session:
            row = session.get(OutboxRow, outbox_id)
            if row is None:
                raise RepositoryError(f"outgoing email {outbox_id} does not exist")
            row.status = OutboxStatus(status).value
            row.attempts += 1
            row.last_error = error
            row.next_attempt_at = retry_at
            row.claimed_by = row.claimed_until = None
            if status is OutboxStatus.SENT:
                row.sent_at = _now()
            return _outgoing(row)

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        """Emails queued to ``to`` (any recipient, any status) at or after ``since``."""
        query = (
            select(func.count())
            .select_from(OutboxRow)
            .join(OutboxRecipientRow)
            .where(
                OutboxRecipientRow.address == to.strip().lower(),
                OutboxRow.created_at >= _utc(since),
            )
        )
        if ticket_id is not None:
            query = query.where(OutboxRow.ticket_id == ticket_id)
        with self._use() as session:
            return session.scalar(query) or 0

    # -- monitored services ----------------------------------------------------------------

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        """Add a status to a service's history."""
        at = _utc(new.at)
        with self._use() as session:
            row = ServiceStatusRow(
                service=new.service,
                status=new.status.value,
                at=at,
                detail=new.detail,
                ticket_id=new.ticket_id,
                message_id=new.message_id,
            )
            session.add(row)
            session.flush()
            return _service_status(row)

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        """A service's newest status (by time, then the order recorded)."""
        history = self.service_history(service, limit=1)
        return history[0] if history else None

    def service_history(self, service: str, *, limit: int = 100) -> Sequence[ServiceStatusEntry]:
        """A service's statuses, newest first."""
        _check_page(limit, 0)
        with self._use() as session:
            rows = session.scalars(
                select(ServiceStatusRow)
                .where(ServiceStatusRow.service == service)
                .order_by(ServiceStatusRow.at.desc(), ServiceStatusRow.id.desc())
                .limit(limit)
            )
            return [_service_status(row) for row in rows]


# -- rows to halomail's records ------------------------------------------------------------


def _ticket(row: TicketRow) -> Ticket:
    return Ticket(
        id=row.id,
        summary=row.summary,
        details=row.details,
        ticket_type=row.ticket_type,
        user_email=row.user_email,
        status=TicketStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        user_name=row.user_name,
        mailbox=row.mailbox,
        record=RecordKind(row.record),
        customer=row.customer,
        cc=tuple(row.cc),
        priority=row.priority,
        category=row.category,
        team=row.team,
        agent=row.agent,
        asset_id=row.asset_id,
        custom_fields=row.custom_fields,
        closed_at=row.closed_at,
        alert_key=row.alert_key,
        impact=row.impact,
        urgency=row.urgency,
        site=row.site,
        asset_ids=row.asset_ids,
    )


def _action(row: ActionRow) -> Action:
    return Action(
        id=row.id,
        ticket_id=row.ticket_id,
        kind=ActionKind(row.kind),
        body=row.body,
        created_at=row.created_at,
        from_address=row.from_address,
        public=row.public,
        message_id=row.message_id,
        attachments=tuple(
            StoredAttachment(
                filename=a.filename,
                storage_name=a.storage_name,
                content_type=a.content_type,
                size=a.size,
                content_id=a.content_id,
                inline=a.inline,
                payload=a.payload,
            )
            for a in row.attachments
        ),
    )


def _attachment_row(attachment: StoredAttachment) -> AttachmentRow:
    return AttachmentRow(
        filename=attachment.filename,
        storage_name=attachment.storage_name,
        content_type=attachment.content_type,
        size=attachment.size,
        content_id=attachment.content_id,
        inline=attachment.inline,
        payload=attachment.payload,
    )


def _customer(row: CustomerRow) -> Customer:
    return Customer(row.id, row.name, tuple(row.domains), row.from_address, row.reply_address)


def _user(row: UserRow) -> User:
    return User(row.id, row.email, row.name, row.customer_id, row.phone, row.mobile)


def _asset(row: AssetRow) -> Asset:
    return Asset(row.id, row.tag, dict(row.fields), row.customer_id)


def _file(row: FileRow) -> StoredFile:
    return StoredFile(
        id=row.id,
        owner=row.owner,
        owner_id=row.owner_id,
        filename=row.filename,
        storage_name=row.storage_name,
        content_type=row.content_type,
        size=row.size,
        content_id=row.content_id,
        inline=row.inline,
        payload=row.payload,
        note=row.note,
        created_at=row.created_at,
    )


def _quarantined(row: QuarantineRow) -> QuarantineEntry:
    return QuarantineEntry(
        id=row.id,
        mailbox=row.mailbox,
        reason=row.reason,
        raw=row.raw,
        created_at=row.created_at,
        detail=row.detail,
        message_id=row.message_id,
        dedupe_key=row.dedupe_key,
    )


def _outgoing(row: OutboxRow) -> OutboxMail:
    return OutboxMail(
        id=row.id,
        message_id=row.message_id,
        to=tuple(row.to),
        subject=row.subject,
        text=row.text,
        status=OutboxStatus(row.status),
        created_at=row.created_at,
        mailbox=row.mailbox,
        kind=row.kind,
        ticket_id=row.ticket_id,
        html=row.html,
        in_reply_to=row.in_reply_to,
        references=tuple(row.references),
        auto_submitted=row.auto_submitted,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        sent_at=row.sent_at,
    )


def _service_status(row: ServiceStatusRow) -> ServiceStatusEntry:
    return ServiceStatusEntry(
        id=row.id,
        service=row.service,
        status=row.status,
        at=row.at,
        detail=row.detail,
        ticket_id=row.ticket_id,
        message_id=row.message_id,
    )


# -- small rules halomail's contract spells out ------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive time is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: give an aware time")
    return value.astimezone(dt.UTC)


def _due(now: dt.datetime) -> Any:
    """Pending emails never tried or due by ``now``, oldest first."""
    return (
        select(OutboxRow)
        .where(
            OutboxRow.status == OutboxStatus.PENDING.value,
            or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= now),
        )
        .order_by(OutboxRow.id)
    )


def _check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative (got {limit}, {offset})")


def _owner_table(owner: str) -> type[CustomerRow] | type[AssetRow]:
    if owner == "customer":
        return CustomerRow
    if owner == "asset":
        return AssetRow
    raise ValueError(f"a file belongs to a 'customer' or an 'asset', not {owner!r}")


def _domain_key(domain: str) -> str:
    return domain.strip().lower().lstrip("@").rstrip(".")


def _domain_of(address: str) -> str | None:
    """The lower-cased domain after the last ``@``, or ``None`` for an address without one."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not local:
        return None
    return domain.rstrip(".") or None


_SEPARATORS = re.compile(r"[\W_]+")


def _field_key(name: str) -> str:
    """A field name as compared: "Serial Number", "serial_number" and "SERIAL-NUMBER" agree."""
    return _SEPARATORS.sub("_", name.casefold()).strip("_")


def _merge_fields(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """``old`` with ``new`` over it; a field given again in another spelling is replaced."""
    given = {_field_key(name) for name in new}
    return {**{k: v for k, v in old.items() if _field_key(k) not in given}, **new}
