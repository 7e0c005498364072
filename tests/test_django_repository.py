"""The Django repository (``halomail.contrib.django``) keeps the whole contract suite, on
SQLite and on PostgreSQL (the session's private cluster of ``tests/servers/``).

Django is configured in this process once (:func:`django_databases`), with two
databases: ``default``, an SQLite file, and ``postgres``, filled in when the cluster is
up. Each test starts from empty tables (``flush``).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from halomail.errors import DuplicateKeyError, RepositoryError
from halomail.tickets.models import DedupeRecord, NewTicket, utcnow
from halomail.tickets.repository import (
    AttemptLedger,
    Browsing,
    LedgerRetention,
    OutboxAdmin,
    QuarantineAdmin,
    TicketRepository,
)
from tests.servers.postgres import PostgresServer

# Detailed assertion messages from the shipped suite, as its docstring advises hosts.
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import (  # noqa: E402
    AttemptLedgerContract,
    LedgerRetentionContract,
    OutboxAdminContract,
    QuarantineAdminContract,
    TicketRepositoryContract,
)

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def django_databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Django set up in this process: the app, ``default`` on an SQLite file, migrated."""
    if not settings.configured:
        folder = tmp_path_factory.mktemp("django")
        settings.configure(
            INSTALLED_APPS=["halomail.contrib.django"],
            USE_TZ=True,
            TIME_ZONE="UTC",
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(folder / "default.db"),
                    "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
                },
                # Its server is the session's cluster: django_postgres fills it in.
                "postgres": {"ENGINE": "django.db.backends.postgresql", "NAME": "unset"},
            },
        )
        django.setup()
        call_command("migrate", database="default", verbosity=0)
    databases: dict[str, Any] = settings.DATABASES
    return databases


@pytest.fixture(scope="module")
def django_postgres(django_databases: dict[str, Any], postgres: PostgresServer) -> str:
    """The ``postgres`` alias pointed at a database of the session's cluster, migrated."""
    if not postgres.running():
        postgres.start()
    url = postgres.new_database()
    entry = django_databases["postgres"]
    # The entry is the dict Django's connections read: filled in before the first one.
    entry.update(
        NAME=url.rsplit("/", 1)[1], USER="halomail", HOST="127.0.0.1", PORT=str(postgres.port)
    )
    call_command("migrate", database="postgres", verbosity=0)
    return "postgres"


def _fresh(alias: str) -> Iterator[Any]:
    """Empty tables for a test; every connection it opened closed afterwards."""
    from halomail.contrib.django import DjangoRepository

    call_command("flush", database=alias, interactive=False, verbosity=0)
    try:
        yield DjangoRepository(alias)
    finally:
        connections.close_all()


class TestDjangoRepositoryOnSQLite(
    TicketRepositoryContract,
    AttemptLedgerContract,
    OutboxAdminContract,
    QuarantineAdminContract,
    LedgerRetentionContract,
):
    """On SQLite: the whole contract, the optional roles included."""

    @pytest.fixture
    def repository(self, django_databases: dict[str, Any]) -> Iterator[Any]:
        """The repository on ``default``, its tables empty."""
        yield from _fresh("default")


class TestDjangoRepositoryOnPostgreSQL(
    TicketRepositoryContract,
    AttemptLedgerContract,
    OutboxAdminContract,
    QuarantineAdminContract,
    LedgerRetentionContract,
):
    """On PostgreSQL: the whole contract, the optional roles included."""

    @pytest.fixture
    def repository(self, django_postgres: str) -> Iterator[Any]:
        """The repository on the ``postgres`` alias, its tables empty."""
        yield from _fresh(django_postgres)


@pytest.fixture(params=["default", "postgres"])
def repository(request: pytest.FixtureRequest, django_databases: dict[str, Any]) -> Iterator[Any]:
    """The repository on each database, its tables empty."""
    alias = request.param
    if alias == "postgres":
        request.getfixturevalue("django_postgres")
    yield from _fresh(alias)


def test_it_offers_every_optional_role(repository: Any) -> None:
    """Browsing, OutboxAdmin, QuarantineAdmin, AttemptLedger and LedgerRetention, as
    SQLite's repository does."""
    roles = (TicketRepository, Browsing, OutboxAdmin, QuarantineAdmin, AttemptLedger)
    for role in (*roles, LedgerRetention):
        assert isinstance(repository, role), role.__name__


def test_the_tickets_are_rows_of_the_apps_models(repository: Any) -> None:
    """A ticket created through halomail is a ``halomail.Ticket`` the host reads with the ORM."""
    from halomail.contrib.django.models import Ticket

    created = repository.create_ticket(
        NewTicket("Printer \x00 jammed", "details", "Incident", "alice@customer.example")
    )
    row = Ticket.objects.using(repository.using).get(pk=created.id)
    assert (row.summary, row.user_email, row.status) == (
        "Printer \x00 jammed",
        "alice@customer.example",
        "new",
    )
    assert str(row) == f"#{created.id} Printer \x00 jammed"


def test_a_transaction_inside_the_hosts_atomic_block_commits_with_it(repository: Any) -> None:
    """Inside the host's ``transaction.atomic``, halomail's writes roll back with the host's."""
    from django.db import transaction

    def hosts_view() -> None:
        with transaction.atomic(using=repository.using):
            with repository.transaction():
                repository.create_ticket(
                    NewTicket("Rolled back", "details", "Incident", "alice@customer.example")
                )
            raise RuntimeError("the host's view failed after halomail's block")

    with pytest.raises(RuntimeError, match="the host's view failed"):
        hosts_view()
    assert repository.list_tickets() == []


def test_a_duplicate_dedupe_key_leaves_the_transaction_usable(repository: Any) -> None:
    """A second record of one key raises DuplicateKeyError; the transaction still commits."""
    repository.record_dedupe(DedupeRecord("Support:<a@x>", "0" * 64, "created", None, NOW))
    with repository.transaction():
        with pytest.raises(DuplicateKeyError):
            repository.record_dedupe(DedupeRecord("Support:<a@x>", "1" * 64, "created"))
        repository.set_state("after", "the duplicate")
    assert repository.get_state("after") == "the duplicate"
    assert repository.get_dedupe("Support:<a@x>").sha256 == "0" * 64


def test_transactions_on_two_threads_are_each_their_own(repository: Any) -> None:
    """A transaction open on one thread does not refuse a write on another (each thread has
    its own connection), and both writes are kept."""
    opened = threading.Event()

    def other_thread() -> None:
        assert opened.wait(timeout=30)
        repository.set_state("other", "thread")

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(other_thread)
        with repository.transaction():
            opened.set()
            repository.set_state("this", "thread")
            if repository.using == "postgres":
                # PostgreSQL lets the other thread commit while this transaction is open.
                done.result(timeout=30)
        done.result(timeout=30)
    assert (repository.get_state("this"), repository.get_state("other")) == ("thread", "thread")


def test_it_refuses_settings_without_use_tz(repository: Any) -> None:
    """Without USE_TZ Django would store naive local times: the repository refuses to start."""
    from halomail.contrib.django import DjangoRepository

    with settings_override(USE_TZ=False), pytest.raises(RepositoryError, match="USE_TZ"):
        DjangoRepository(repository.using)


def settings_override(**values: Any) -> Any:
    """Django's own override of settings, for one block."""
    from django.test.utils import override_settings

    return override_settings(**values)


def test_a_quarantined_email_keeps_its_bytes_in_the_row(repository: Any) -> None:
    """The quarantine row holds the original email byte for byte (what the admin shows)."""
    from halomail.contrib.django.models import QuarantineEntry
    from halomail.tickets.models import NewQuarantine

    raw = b"From: a@b\r\n\r\n\x00\xff" + bytes(range(256))
    entry = repository.quarantine(NewQuarantine("Support", "mime-too-deep", raw, "too deep"))
    row = QuarantineEntry.objects.using(repository.using).get(pk=entry.id)
    assert bytes(row.raw) == raw
    assert row.created_at == entry.created_at
    assert entry.created_at <= utcnow()


def test_the_migration_matches_the_models(django_databases: dict[str, Any]) -> None:
    """``makemigrations --check`` finds nothing to write: the models and 0001 agree."""
    try:
        call_command("makemigrations", "halomail", check=True, dry_run=True, verbosity=0)
    finally:
        connections.close_all()


@pytest.fixture
def postgres_repository(django_postgres: str) -> Iterator[Any]:
    """The repository on the ``postgres`` alias only, its tables empty."""
    yield from _fresh(django_postgres)


def test_a_connection_the_server_dropped_is_replaced_after_one_transient_error(
    postgres_repository: Any, postgres: PostgresServer
) -> None:
    """The server ends the session (a restart): one call fails as transient, the next works."""
    from halomail.errors import TransientRepositoryError

    postgres_repository.set_state("before", "the restart")
    dbname = settings.DATABASES[postgres_repository.using]["NAME"]
    assert postgres.terminate_backends(dbname) >= 1
    with pytest.raises(TransientRepositoryError):
        postgres_repository.get_state("before")
    assert postgres_repository.get_state("before") == "the restart"


def test_settings_name_the_configuration_and_the_database(
    django_databases: dict[str, Any], tmp_path: Path
) -> None:
    """HALOMAIL's config is loaded with Django's storage; its database names the alias used."""
    from django.test.utils import override_settings

    from halomail.contrib.django import conf
    from halomail.contrib.django.repository import from_config

    (tmp_path / "inbox").mkdir()
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(
        '[storage]\nurl = "sqlite:///elsewhere.db"\n\n[[mailboxes]]\nname = "Support"\n'
        'connection = "maildir"\npath = "inbox"\n'
    )
    with override_settings(HALOMAIL={"config": str(config_file), "database": "postgres"}):
        config = conf.load()
        assert config.storage.repository == conf.REPOSITORY_FACTORY
        assert config.storage.sqlite_path is None
        assert from_config(config).using == "postgres"
        assert [mailbox.name for mailbox in config.mailboxes] == ["Support"]
    with override_settings(HALOMAIL={"config": str(config_file)}):
        assert from_config(conf.load()).using == "default"
    assert not (tmp_path / "elsewhere.db").exists()
