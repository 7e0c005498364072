"""The optional group-commit role (issue 18): its contract on both SQL repositories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

# Detailed assertion messages from the shipped suite, as its docstring advises hosts.
pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import GroupCommitContract  # noqa: E402


class TestSQLiteGroupCommit(GroupCommitContract):
    """The SQLite repository answers batches as it answers emails, on a file."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[SQLiteTicketRepository]:
        """A fresh SQLite file."""
        with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
            yield repository


class TestSQLiteMemoryGroupCommit(GroupCommitContract):
    """The SQLite repository answers batches on a ``:memory:`` database too."""

    @pytest.fixture
    def repository(self) -> Iterator[SQLiteTicketRepository]:
        """A fresh SQLite database in memory."""
        with SQLiteTicketRepository(":memory:") as repository:
            yield repository


class TestPostgreSQLGroupCommit(GroupCommitContract):
    """The PostgreSQL repository answers batches as it answers emails, on a real server."""

    @pytest.fixture
    def repository(self, postgres_url: str) -> Iterator[PostgreSQLTicketRepository]:
        """A fresh database of the session's private PostgreSQL."""
        with PostgreSQLTicketRepository(postgres_url) as repository:
            yield repository
