"""examples/sqlalchemy_fastapi: a host's SQLAlchemy repository and FastAPI app, run for real.

The example's repository passes halomail's whole contract suite on SQLite files; its
FastAPI app records an agent's reply and queues the reply's email in one transaction
(both or neither), and the queued email reaches a real SMTP server; its ``__main__``
processes a Maildir into the database.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail import TicketRepository
from halomail.testing import AttemptLedgerContract, TicketRepositoryContract

EXAMPLES = Path(__file__).parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    # The example is a folder a host copies, not an installed package.
    sys.path.insert(0, str(EXAMPLES))

from sqlalchemy_fastapi.repository import (  # noqa: E402
    SQLAlchemyTicketRepository,
    sqlite_engine,
)


class TestSQLAlchemyRepository(TicketRepositoryContract, AttemptLedgerContract):
    """The example's repository keeps every promise of halomail's contract suite."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[TicketRepository]:
        """A fresh SQLite database file for each test, its tables made by the repository."""
        repository = SQLAlchemyTicketRepository(sqlite_engine(str(tmp_path / "helpdesk.db")))
        try:
            yield repository
        finally:
            repository.close()
