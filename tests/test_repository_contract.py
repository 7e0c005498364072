"""The shipped contract suite (halomail.testing) run against every repository halomail offers.

A third run goes through a host-style adapter that exposes only the Protocol and seeds
people through its own ``seed`` override: the suite must need nothing else.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.metadata
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from halomail.tickets.memory import InMemoryTicketRepository
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
)
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import (
    Browsing,
    Directory,
    IngestLedger,
    OutboxStore,
    ServiceLog,
    TicketRepository,
    TicketStore,
)
from halomail.tickets.sqlite import SQLiteTicketRepository

# Detailed assertion messages from the shipped suite, as its docstring advises hosts.
pytest.register_assert_rewrite("halomail.testing")
import halomail.testing as halomail_testing  # noqa: E402
from halomail.testing import SeedableRepository, TicketRepositoryContract  # noqa: E402


class TestInMemoryRepository(TicketRepositoryContract):
    """The in-memory repository keeps the whole contract."""

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A fresh in-memory repository."""
        return InMemoryTicketRepository()


class TestSQLiteRepository(TicketRepositoryContract):
    """The SQLite repository keeps the whole contract, on a file."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[TicketRepository]:
        """A fresh SQLite database file in the test's own folder."""
        with SQLiteTicketRepository(tmp_path / "contract.db") as repository:
            yield repository


class TestSQLiteMemoryDatabase(TicketRepositoryContract):
    """The SQLite repository keeps the whole contract on a ``:memory:`` database too."""

    @pytest.fixture
    def repository(self) -> Iterator[TicketRepository]:
        """A fresh SQLite database in memory."""
        with SQLiteTicketRepository(":memory:") as repository:
            yield repository


class TestPostgreSQLRepository(TicketRepositoryContract):
    """The PostgreSQL repository keeps the whole contract, on a real server."""

    @pytest.fixture
    def repository(self, postgres_url: str) -> Iterator[TicketRepository]:
        """A fresh database of the session's private PostgreSQL."""
        with PostgreSQLTicketRepository(postgres_url) as repository:
            yield repository


class HostRepository:
    """What an embedding host writes: the five roles' methods only, delegated to its own store."""

    def __init__(self) -> None:
        self.store = InMemoryTicketRepository()

    def transaction(self) -> AbstractContextManager[None]:
        return self.store.transaction()

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        return self.store.get_ticket(ticket_id)

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        return self.store.find_ticket_by_message_ids(message_ids)

    def create_ticket(self, new: NewTicket) -> Ticket:
        return self.store.create_ticket(new)

    def add_action(self, new: NewAction) -> Action:
        return self.store.add_action(new)

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        return self.store.set_status(ticket_id, status)

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        return self.store.list_actions(ticket_id)

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        return self.store.find_open_ticket(alert_key=alert_key)

    def find_user(self, email: str) -> User | None:
        return self.store.find_user(email)

    def find_customer(self, email: str) -> Customer | None:
        return self.store.find_customer(email)

    def find_asset(self, field: str, value: str) -> Asset | None:
        return self.store.find_asset(field, value)

    def save_asset(
        self, tag: str, fields: Mapping[str, str], *, customer_id: int | None = None
    ) -> tuple[Asset, bool]:
        return self.store.save_asset(tag, fields, customer_id=customer_id)

    def store_files(
        self,
        *,
        owner: FileOwner,
        owner_id: int,
        attachments: Sequence[StoredAttachment],
        note: str = "",
    ) -> Sequence[StoredFile]:
        return self.store.store_files(
            owner=owner, owner_id=owner_id, attachments=attachments, note=note
        )

    def record_service_status(self, new: NewServiceStatus) -> ServiceStatusEntry:
        return self.store.record_service_status(new)

    def last_service_status(self, service: str) -> ServiceStatusEntry | None:
        return self.store.last_service_status(service)

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        return self.store.get_dedupe(key)

    def record_dedupe(self, record: DedupeRecord) -> None:
        self.store.record_dedupe(record)

    def quarantine(self, new: NewQuarantine) -> QuarantineEntry:
        return self.store.quarantine(new)

    def enqueue_outgoing(self, new: NewOutgoing) -> OutboxMail:
        return self.store.enqueue_outgoing(new)

    def mark_outgoing(
        self,
        outbox_id: int,
        status: OutboxStatus,
        *,
        error: str | None = None,
        next_attempt_at: dt.datetime | None = None,
    ) -> OutboxMail:
        return self.store.mark_outgoing(
            outbox_id, status, error=error, next_attempt_at=next_attempt_at
        )

    def count_outgoing(self, *, to: str, since: dt.datetime, ticket_id: int | None = None) -> int:
        return self.store.count_outgoing(to=to, since=since, ticket_id=ticket_id)

    def claim_outgoing(
        self, now: dt.datetime, *, owner: str, lease: dt.timedelta, limit: int = 100
    ) -> Sequence[OutboxMail]:
        return self.store.claim_outgoing(now, owner=owner, lease=lease, limit=limit)

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        return self.store.acquire_lease(name, owner, now=now, ttl=ttl)

    def release_lease(self, name: str, owner: str) -> None:
        self.store.release_lease(name, owner)

    def get_state(self, key: str) -> str | None:
        return self.store.get_state(key)

    def set_state(self, key: str, value: str) -> None:
        self.store.set_state(key, value)


class BrowsableHostRepository(HostRepository):
    """The host repository with the optional Browsing role too, as the command needs."""

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        return self.store.list_tickets(limit=limit, offset=offset)

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        return self.store.assign(ticket_id, agent=agent, team=team)

    def list_files(self, *, owner: FileOwner, owner_id: int) -> Sequence[StoredFile]:
        return self.store.list_files(owner=owner, owner_id=owner_id)

    def service_history(self, service: str, *, limit: int = 100) -> Sequence[ServiceStatusEntry]:
        return self.store.service_history(service, limit=limit)

    def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> Sequence[QuarantineEntry]:
        return self.store.list_quarantine(limit=limit, offset=offset)

    def due_outgoing(self, now: dt.datetime, *, limit: int = 100) -> Sequence[OutboxMail]:
        return self.store.due_outgoing(now, limit=limit)


class TestHostStyleRepository(TicketRepositoryContract):
    """A repository with only the Protocol's methods passes once it overrides ``seed``."""

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A host-style repository without any seeding methods."""
        return BrowsableHostRepository()

    def seed(
        self,
        repository: TicketRepository,
        *,
        users: Sequence[User] = (),
        customers: Sequence[Customer] = (),
        assets: Sequence[Asset] = (),
    ) -> None:
        """Seed through the host's own store, as a host would through its own tables."""
        assert isinstance(repository, HostRepository)
        super().seed(repository.store, users=users, customers=customers, assets=assets)


def test_the_default_seed_asks_a_host_without_add_methods_to_override_it() -> None:
    """The default seed hook names the hook to override when the repository cannot seed."""
    host = HostRepository()
    assert isinstance(host, TicketRepository)
    assert not isinstance(host, SeedableRepository)
    with pytest.raises(NotImplementedError, match=r"override TicketRepositoryContract\.seed"):
        TicketRepositoryContract().seed(host, customers=[Customer(1, "Customer Ltd")])


def test_the_bundled_repositories_satisfy_the_protocol_and_can_seed(
    tmp_path: Path, postgres_url: str
) -> None:
    """The three bundled repositories are TicketRepository and SeedableRepository instances."""
    memory: TicketRepository = InMemoryTicketRepository()
    with (
        SQLiteTicketRepository(tmp_path / "p.db") as sqlite,
        PostgreSQLTicketRepository(postgres_url) as postgres,
    ):
        on_disk: TicketRepository = sqlite
        shared: TicketRepository = postgres
        for repository in (memory, on_disk, shared):
            assert isinstance(repository, TicketRepository)
            assert isinstance(repository, SeedableRepository)
            assert isinstance(repository, Browsing)
            # Declared, and shown by ThreadingContract's eight-thread cases above.
            assert getattr(repository, "thread_safe", False) is True


def test_the_testing_extra_brings_everything_the_contract_suite_imports() -> None:
    """halomail.testing imports only the stdlib, halomail, its dependencies, and the extra."""
    package = Path(halomail_testing.__file__).parent
    imported: set[str] = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "halomail", "attrs"}
    extra = {
        requirement.split(">")[0].split(";")[0].strip()
        for requirement in importlib.metadata.requires("halomail") or []
        if "extra == 'testing'" in requirement
    }
    assert extra == {"pytest", "hypothesis"}
    assert third_party <= extra
    assert "pytest" in third_party


def test_a_host_with_the_five_roles_only_is_a_ticket_repository_but_not_browsable() -> None:
    """The required set is the five roles; Browsing is a role of its own, not required."""
    roles_only = HostRepository()
    for role in (TicketStore, Directory, IngestLedger, OutboxStore, ServiceLog, TicketRepository):
        assert isinstance(roles_only, role)
    assert not isinstance(roles_only, Browsing)
    assert isinstance(BrowsableHostRepository(), Browsing)
    assert not hasattr(roles_only, "list_tickets")
    assert getattr(roles_only, "thread_safe", False) is False
