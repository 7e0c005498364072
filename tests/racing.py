"""A repository where another runner records a dedupe key just before our commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from halomail.errors import DuplicateKeyError
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import DedupeRecord


class RaceLost(InMemoryTicketRepository):
    """Another runner commits a dedupe key just before us, once.

    The first key ``loses`` picks makes our ``record_dedupe`` raise
    :class:`DuplicateKeyError`, so our transaction rolls back; the other runner's record,
    ``winner(our record)``, is what the ledger holds once ours has rolled back.
    """

    def __init__(
        self,
        winner: Callable[[DedupeRecord], DedupeRecord],
        loses: Callable[[str], bool] = lambda key: True,
    ) -> None:
        super().__init__()
        self._make_winner = winner
        self._loses = loses
        self._winner: DedupeRecord | None = None

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Lose the race for the first key ``loses`` picks; record the rest as usual."""
        if self._winner is None and self._loses(record.key):
            self._winner = self._make_winner(record)
            raise DuplicateKeyError(f"dedupe key already recorded: {record.key!r}")
        super().record_dedupe(record)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Our transaction; the winner's commit lands once ours has rolled back."""
        try:
            with super().transaction():
                yield
        finally:
            if self._winner is not None and self.get_dedupe(self._winner.key) is None:
                super().record_dedupe(self._winner)
