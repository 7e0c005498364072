"""The repository contract suite: run it against your :class:`~halomail.TicketRepository`.

halomail's own repositories pass this suite; a host application that implements the
Protocol over its own database runs the same tests to know its implementation keeps
every promise the processor relies on. Subclass :class:`TicketRepositoryContract`
in your tests and provide the ``repository`` fixture::

    import pytest
    from halomail.testing import TicketRepositoryContract

    class TestMyRepository(TicketRepositoryContract):
        @pytest.fixture
        def repository(self, my_database):
            return MyRepository(my_database)  # fresh and empty for every test

The suite is split by role, one class per role protocol
(:class:`TicketStoreContract`, :class:`DirectoryContract`, :class:`IngestLedgerContract`,
:class:`OutboxStoreContract`, :class:`ServiceLogContract`, :class:`BrowsingContract`),
plus :class:`TransactionContract` and :class:`ThreadingContract`;
:class:`TicketRepositoryContract` combines them all. :class:`AttemptLedgerContract`
is for the optional attempt ledger: add it when your repository keeps attempts, and
:class:`GroupCommitContract` for the optional group commit (``prepare_batch``,
``begin_attempts``), and :class:`LedgerRetentionContract` for the optional ledger
retention (``touch_dedupe``, ``purge_ledger``).
``pip install 'halomail[testing]'`` brings what it needs (pytest and hypothesis).

Only test code imports this package (it imports pytest). For pytest's detailed
assertion messages in these tests, register the module for assertion rewriting in
your ``conftest.py`` before anything imports it::

    pytest.register_assert_rewrite("halomail.testing")

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.testing._base import CompleteRepository, ContractBase, SeedableRepository
from halomail.testing.browsing import BrowsingContract
from halomail.testing.directory import DirectoryContract
from halomail.testing.group_commit import GroupCommitContract, GroupCommitRepository
from halomail.testing.ledger import AttemptLedgerContract, AttemptRepository, IngestLedgerContract
from halomail.testing.outbox import OutboxStoreContract
from halomail.testing.outbox_admin import OutboxAdminContract
from halomail.testing.quarantine_admin import QuarantineAdminContract
from halomail.testing.retention import LedgerRetentionContract, RetentionRepository
from halomail.testing.services import ServiceLogContract
from halomail.testing.threads import ThreadingContract
from halomail.testing.tickets import TicketStoreContract
from halomail.testing.transactions import TransactionContract

__all__ = [
    "AttemptLedgerContract",
    "AttemptRepository",
    "BrowsingContract",
    "CompleteRepository",
    "ContractBase",
    "DirectoryContract",
    "GroupCommitContract",
    "GroupCommitRepository",
    "IngestLedgerContract",
    "LedgerRetentionContract",
    "OutboxAdminContract",
    "OutboxStoreContract",
    "QuarantineAdminContract",
    "RetentionRepository",
    "SeedableRepository",
    "ServiceLogContract",
    "ThreadingContract",
    "TicketRepositoryContract",
    "TicketStoreContract",
    "TransactionContract",
]


class TicketRepositoryContract(
    TicketStoreContract,
    DirectoryContract,
    IngestLedgerContract,
    OutboxStoreContract,
    ServiceLogContract,
    BrowsingContract,
    TransactionContract,
    ThreadingContract,
):
    """Every role's tests together: what a complete :class:`~halomail.TicketRepository` passes.

    Subclass it in your tests (name the subclass ``Test…`` so pytest collects it) and
    provide the ``repository`` fixture: a fresh, empty repository for each test; it
    may ``yield`` the repository and clean up afterwards.

    Two hooks adapt the suite to a host:

    - :meth:`seed` adds users, customers and assets. The default calls the
      ``add_customer`` / ``add_user`` / ``add_asset`` methods halomail's repositories
      have (:class:`SeedableRepository`); override it if your people and assets live
      elsewhere (another table, a directory service).
    - :attr:`clock_resolution` is how finely your repository stamps times, in
      seconds. Tests that need time to move on between two writes wait this long;
      raise it if your database keeps whole seconds.

    Ids are compared only with ids the repository returned, never with numbers the
    suite made up, so any id scheme passes.

    .. versionadded:: 0.1.0
    """
