"""The optional OutboxAdmin role (halomail outbox), against the shipped repositories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

# Detailed assertion messages from the shipped suite (as test_repository_contract does).
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import OutboxAdminContract  # noqa: E402


class TestInMemoryOutboxAdmin(OutboxAdminContract):
    """The in-memory repository lists and retries outgoing mail."""

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A fresh in-memory repository."""
        return InMemoryTicketRepository()


class TestSQLiteOutboxAdmin(OutboxAdminContract):
    """The SQLite repository lists and retries outgoing mail."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[TicketRepository]:
        """A fresh SQLite file."""
        repo = SQLiteTicketRepository(tmp_path / "halomail.db")
        yield repo
        repo.close()
