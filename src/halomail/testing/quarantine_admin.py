"""The optional :class:`~halomail.tickets.repository.QuarantineAdmin` role: one
quarantined email, read or forgotten."""

from __future__ import annotations

from halomail.testing._base import CompleteRepository, ContractBase
from halomail.tickets.models import DedupeRecord, NewQuarantine
from halomail.tickets.repository import QuarantineAdmin

__all__ = ["QuarantineAdminContract"]

_RAW = b"From: a@customer.example\r\nSubject: kept\r\n\r\n\x00\xff byte for byte\r\n"


class QuarantineAdminContract(ContractBase):
    """The optional :class:`~halomail.tickets.repository.QuarantineAdmin` role.

    Not part of :class:`~halomail.testing.TicketRepositoryContract`: subclass it too
    when your repository implements the role (``halomail quarantine show``, ``export``,
    ``release`` and ``delete`` need it), with the same ``repository`` fixture.

    .. versionadded:: 0.1.0
    """

    def test_get_quarantine_returns_the_entry_with_its_bytes(
        self, repository: CompleteRepository
    ) -> None:
        """An entry is read back by id, bytes identical; an unknown id gives None."""
        assert isinstance(repository, QuarantineAdmin)
        kept = repository.quarantine(
            NewQuarantine("Support", "processing-error", _RAW, "KeyError: 'x'", "m@c", "k1")
        )
        entry = repository.get_quarantine(kept.id)
        assert entry is not None
        assert (entry.id, entry.mailbox, entry.reason, entry.raw) == (
            kept.id,
            "Support",
            "processing-error",
            _RAW,
        )
        assert (entry.detail, entry.message_id, entry.dedupe_key) == ("KeyError: 'x'", "m@c", "k1")
        assert repository.get_quarantine(kept.id + 1000) is None

    def test_delete_quarantine_forgets_the_entry_and_keeps_its_dedupe_record(
        self, repository: CompleteRepository
    ) -> None:
        """Deleted, an entry is gone from reads and listings; its dedupe key stays recorded."""
        assert isinstance(repository, QuarantineAdmin)
        with repository.transaction():
            first = repository.quarantine(NewQuarantine("Support", "r1", b"one", dedupe_key="k1"))
            repository.record_dedupe(DedupeRecord("k1", "", "quarantined"))
        second = repository.quarantine(NewQuarantine("Support", "r2", b"two"))
        assert repository.delete_quarantine(first.id) is True
        assert repository.get_quarantine(first.id) is None
        assert [q.id for q in repository.list_quarantine()] == [second.id]
        assert repository.delete_quarantine(first.id) is False
        record = repository.get_dedupe("k1")
        assert record is not None
        assert record.outcome == "quarantined"

    def test_a_delete_in_a_rolled_back_transaction_keeps_the_entry(
        self, repository: CompleteRepository
    ) -> None:
        """Deleting takes part in the transaction: rolled back, the entry is still there."""
        assert isinstance(repository, QuarantineAdmin)
        kept = repository.quarantine(NewQuarantine("Support", "r1", b"one"))
        try:
            with repository.transaction():
                assert repository.delete_quarantine(kept.id) is True
                raise _Abandon
        except _Abandon:
            pass
        entry = repository.get_quarantine(kept.id)
        assert entry is not None
        assert entry.raw == b"one"


class _Abandon(Exception):
    """Raised inside a transaction to roll it back."""
