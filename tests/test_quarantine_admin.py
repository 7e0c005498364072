"""The optional QuarantineAdmin role (halomail quarantine show/export/release/delete) and
OutboxAdmin's ticket filter (halomail ticket N), against every shipped repository (#17)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

# Detailed assertion messages from the shipped suite (as test_repository_contract does).
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import OutboxAdminContract, QuarantineAdminContract  # noqa: E402


class TestInMemoryQuarantineAdmin(QuarantineAdminContract):
    """The in-memory repository reads and forgets quarantined emails."""

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A fresh in-memory repository."""
        return InMemoryTicketRepository()


class TestSQLiteQuarantineAdmin(QuarantineAdminContract):
    """The SQLite repository reads and forgets quarantined emails."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[TicketRepository]:
        """A fresh SQLite file."""
        repo = SQLiteTicketRepository(tmp_path / "halomail.db")
        yield repo
        repo.close()


class TestPostgreSQLAdminRoles(QuarantineAdminContract, OutboxAdminContract):
    """PostgreSQL reads and forgets quarantined emails, and lists and retries outgoing mail."""

    @pytest.fixture
    def repository(self, postgres_url: str) -> Iterator[TicketRepository]:
        """The session's PostgreSQL, emptied for this test."""
        with PostgreSQLTicketRepository(postgres_url) as repository:
            yield repository
