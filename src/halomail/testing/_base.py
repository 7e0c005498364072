"""What every part of the contract suite shares: the fixture, the hooks and the builders."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import pytest

from halomail.testing._constants import T0
from halomail.tickets.models import (
    Asset,
    Customer,
    NewOutgoing,
    NewTicket,
    User,
)
from halomail.tickets.repository import Browsing, TicketRepository

__all__ = ["CompleteRepository", "ContractBase", "SeedableRepository", "open_and_leave"]


@runtime_checkable
class CompleteRepository(TicketRepository, Browsing, Protocol):
    """**Protocol:** the five roles and :class:`~halomail.Browsing`: what the whole suite reads.

    The role contracts check each role's promises and read the results back through
    the role's own methods and, where a role has no read of its own, through the
    :class:`~halomail.Browsing` listings.

    .. versionadded:: 0.1.0
    """


@runtime_checkable
class SeedableRepository(Protocol):
    """**Protocol:** the seeding methods halomail's own repositories offer beyond the contract.

    :meth:`TicketRepositoryContract.seed` uses them when a repository has them; a host
    that manages people and assets elsewhere overrides ``seed`` instead.

    .. versionadded:: 0.1.0
    """

    def add_customer(
        self,
        name: str,
        domains: Sequence[str] = (),
        from_address: str | None = None,
        reply_address: str | None = None,
    ) -> Customer:
        """Add a customer owning ``domains``; return it with its id."""

    def add_user(
        self,
        email: str,
        name: str = "",
        customer_id: int | None = None,
        phone: str | None = None,
        mobile: str | None = None,
    ) -> User:
        """Add an end user; return it with its id."""

    def add_asset(
        self, tag: str, fields: Mapping[str, str] | None = None, customer_id: int | None = None
    ) -> Asset:
        """Add an asset; return it with its id."""


def open_and_leave(repository: TicketRepository) -> None:
    """Open a transaction and leave it at once (the nested-transaction check)."""
    with repository.transaction():
        pass


class ContractBase:
    """The fixture, hooks and builders every role contract shares.

    See :class:`~halomail.testing.TicketRepositoryContract` for the fixture and hooks.

    .. versionadded:: 0.1.0
    """

    clock_resolution: ClassVar[float] = 0.001
    """Seconds between two distinct times the repository can store."""

    _T0: ClassVar[dt.datetime] = T0

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A fresh, empty repository; every subclass provides this fixture."""
        raise NotImplementedError("provide a `repository` fixture in your subclass")

    def seed(
        self,
        repository: TicketRepository,
        *,
        users: Sequence[User] = (),
        customers: Sequence[Customer] = (),
        assets: Sequence[Asset] = (),
    ) -> None:
        """Add people and things for a test.

        The ids in the given models are references within the call: a user's or an
        asset's ``customer_id`` names one of ``customers`` by its ``id``. The
        repository gives each its own id.

        Args:
            repository: The repository under test.
            users: Users to add (after the customers).
            customers: Customers to add first.
            assets: Assets to add (after the customers).

        Raises:
            NotImplementedError: When the repository has no ``add_*`` methods and the
                subclass did not override this hook.
        """
        if not isinstance(repository, SeedableRepository):
            raise NotImplementedError(
                f"{type(repository).__name__} has no add_customer/add_user/add_asset: "
                "override TicketRepositoryContract.seed() to add users, customers and assets"
            )
        ids: dict[int, int] = {}
        for customer in customers:
            added = repository.add_customer(
                customer.name, customer.domains, customer.from_address, customer.reply_address
            )
            ids[customer.id] = added.id
        for user in users:
            customer_id = None if user.customer_id is None else ids[user.customer_id]
            repository.add_user(user.email, user.name, customer_id, user.phone, user.mobile)
        for asset in assets:
            customer_id = None if asset.customer_id is None else ids[asset.customer_id]
            repository.add_asset(asset.tag, asset.fields, customer_id)

    def wait_for_the_clock(self) -> None:
        """Let enough time pass that the repository's next time stamp is a later one."""
        time.sleep(self.clock_resolution * 2)

    @staticmethod
    def new_ticket(**changes: Any) -> NewTicket:
        """A valid :class:`NewTicket`, with ``changes`` applied."""
        base = NewTicket(
            summary="Printer is jammed",
            details="The printer on floor 3 jams on every page.",
            ticket_type="Incident",
            user_email="alice@customer.example",
        )
        return attrs.evolve(base, **changes)

    @staticmethod
    def new_outgoing(message_id: str, **changes: Any) -> NewOutgoing:
        """A valid :class:`NewOutgoing` with this Message-ID, with ``changes`` applied."""
        base = NewOutgoing(
            message_id=message_id,
            to=("alice@customer.example",),
            subject="[ID:1] We received your request",
            text="Thank you, we are on it.",
        )
        return attrs.evolve(base, **changes)

    def _people(self, repository: CompleteRepository) -> None:
        self.seed(
            repository,
            customers=[
                Customer(
                    1,
                    "Customer Ltd",
                    ("customer.example",),
                    "support@customer.example",
                    "replies@customer.example",
                ),
                Customer(2, "Partner plc", ("partner.example", "partner.test")),
            ],
            users=[
                User(1, "alice@customer.example", "Alice Martin", 1, "+44 20 1234", "+44 7700 1"),
                User(2, "bob@partner.example", "Bob", 1),  # works for Customer Ltd
                User(3, "carol@partner.test", "Carol"),  # no customer of her own
            ],
        )

    def _owners(self, repository: CompleteRepository) -> tuple[int, int]:
        """A customer id and an asset id to store files against."""
        self._people(repository)
        customer = repository.find_customer("someone@customer.example")
        assert customer is not None
        asset, _ = repository.save_asset("NAS-01", {"Serial Number": "NAS-SN-1"})
        return customer.id, asset.id
