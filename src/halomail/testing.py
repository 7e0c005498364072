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

Only test code imports this module (it imports pytest). For pytest's detailed
assertion messages in these tests, register the module for assertion rewriting in
your ``conftest.py`` before anything imports it::

    pytest.register_assert_rewrite("halomail.testing")

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import pytest

from halomail.errors import RepositoryError
from halomail.tickets.models import (
    ActionKind,
    Asset,
    Customer,
    DedupeRecord,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxStatus,
    RecordKind,
    ServiceStatus,
    StoredAttachment,
    TicketStatus,
    User,
    utcnow,
)
from halomail.tickets.repository import TicketRepository

__all__ = ["SeedableRepository", "TicketRepositoryContract"]

_HOUR = dt.timedelta(hours=1)
_MICROSECOND = dt.timedelta(microseconds=1)


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


def _open_and_leave(repository: TicketRepository) -> None:
    with repository.transaction():
        pass


class TicketRepositoryContract:
    """The tests every :class:`~halomail.TicketRepository` must pass.

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

    clock_resolution: ClassVar[float] = 0.001
    """Seconds between two distinct times the repository can store."""

    @pytest.fixture
    def repository(self) -> TicketRepository:
        """A fresh, empty repository; every subclass provides this fixture."""
        raise NotImplementedError("provide a `repository` fixture in your subclass")

    # -- hooks -----------------------------------------------------------------

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

    # -- builders --------------------------------------------------------------

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

    # -- tickets ---------------------------------------------------------------

    def test_create_ticket_returns_a_new_open_ticket_with_an_id(
        self, repository: TicketRepository
    ) -> None:
        """A created ticket is new, not closed, with equal aware-UTC created/updated times."""
        before = utcnow()
        ticket = repository.create_ticket(self.new_ticket())
        assert ticket.status is TicketStatus.NEW
        assert ticket.is_open
        assert ticket.closed_at is None
        assert ticket.created_at == ticket.updated_at
        assert ticket.created_at.utcoffset() == dt.timedelta(0)
        assert before - dt.timedelta(seconds=5) <= ticket.created_at <= utcnow() + _HOUR / 60
        assert (ticket.summary, ticket.user_email) == (
            "Printer is jammed",
            "alice@customer.example",
        )

    def test_get_ticket_round_trips_every_field(self, repository: TicketRepository) -> None:
        """Every ticket field, custom fields, CC and record kind included, reads back equal."""
        created = repository.create_ticket(
            self.new_ticket(
                summary="Überweisung fehlgeschlagen — 💸 [urgent]",
                details="Line one\r\nLine two\n\ttabbed\x00nul",
                ticket_type="Sales lead",
                user_email="bob@customer.example",
                user_name="Bob O'Brien",
                mailbox="Sales",
                record=RecordKind.OPPORTUNITY,
                customer="Customer Ltd",
                cc=("carol@customer.example", "dave@partner.example"),
                priority="High",
                category="Billing",
                team="Second line",
                agent="eve@helpdesk.example",
                asset_id=42,
                custom_fields={"Order number": "A-1001", "Région": "Île-de-France", "Empty": ""},
            )
        )
        fetched = repository.get_ticket(created.id)
        assert fetched == created
        assert fetched is not None
        assert fetched.record is RecordKind.OPPORTUNITY
        assert fetched.cc == ("carol@customer.example", "dave@partner.example")
        assert dict(fetched.custom_fields) == {
            "Order number": "A-1001",
            "Région": "Île-de-France",
            "Empty": "",
        }
        assert fetched.details == "Line one\r\nLine two\n\ttabbed\x00nul"

    def test_get_ticket_round_trips_the_defaults(self, repository: TicketRepository) -> None:
        """A ticket with only the required fields reads back with empty CC, fields and Nones."""
        created = repository.create_ticket(self.new_ticket())
        fetched = repository.get_ticket(created.id)
        assert fetched == created
        assert fetched is not None
        assert fetched.cc == ()
        assert dict(fetched.custom_fields) == {}
        assert fetched.record is RecordKind.TICKET
        assert (fetched.customer, fetched.priority, fetched.asset_id, fetched.agent) == (
            None,
            None,
            None,
            None,
        )

    def test_get_ticket_of_an_unknown_id_is_none(self, repository: TicketRepository) -> None:
        """Asking for a ticket that does not exist returns None."""
        ticket = repository.create_ticket(self.new_ticket())
        assert repository.get_ticket(ticket.id + 1000) is None

    def test_each_ticket_gets_its_own_id(self, repository: TicketRepository) -> None:
        """Ten tickets get ten distinct ids, and each id reads back its own ticket."""
        tickets = [repository.create_ticket(self.new_ticket(summary=f"#{n}")) for n in range(10)]
        assert len({t.id for t in tickets}) == 10
        for ticket in tickets:
            fetched = repository.get_ticket(ticket.id)
            assert fetched is not None
            assert fetched.summary == ticket.summary

    def test_add_action_touches_the_ticket_updated_at(self, repository: TicketRepository) -> None:
        """Adding an action moves the ticket's updated_at on and leaves created_at alone."""
        ticket = repository.create_ticket(self.new_ticket())
        self.wait_for_the_clock()
        action = repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "Looking into it."))
        fetched = repository.get_ticket(ticket.id)
        assert fetched is not None
        assert fetched.updated_at > ticket.updated_at
        assert fetched.updated_at >= action.created_at
        assert fetched.created_at == ticket.created_at
        assert fetched.status is TicketStatus.NEW

    def test_add_action_to_a_missing_ticket_raises(self, repository: TicketRepository) -> None:
        """An action for a ticket that does not exist raises RepositoryError and is not kept."""
        ticket = repository.create_ticket(self.new_ticket())
        missing = ticket.id + 1000
        with pytest.raises(RepositoryError):
            repository.add_action(
                NewAction(missing, ActionKind.NOTE, "orphan", message_id="orphan@x.example")
            )
        assert repository.list_actions(missing) == []
        assert repository.find_ticket_by_message_ids(["orphan@x.example"]) is None

    def test_set_status_closed_sets_closed_at_and_reopening_clears_it(
        self, repository: TicketRepository
    ) -> None:
        """Closing sets closed_at, reopening clears it, and both touch updated_at."""
        ticket = repository.create_ticket(self.new_ticket())
        self.wait_for_the_clock()
        closed = repository.set_status(ticket.id, TicketStatus.CLOSED)
        assert closed.status is TicketStatus.CLOSED
        assert not closed.is_open
        assert closed.closed_at is not None
        assert closed.closed_at.utcoffset() == dt.timedelta(0)
        assert closed.updated_at > ticket.updated_at
        assert repository.get_ticket(ticket.id) == closed

        self.wait_for_the_clock()
        reopened = repository.set_status(ticket.id, TicketStatus.OPEN)
        assert reopened.status is TicketStatus.OPEN
        assert reopened.closed_at is None
        assert reopened.updated_at > closed.updated_at
        assert repository.get_ticket(ticket.id) == reopened

    def test_set_status_of_a_missing_ticket_raises(self, repository: TicketRepository) -> None:
        """Changing the status of a ticket that does not exist raises RepositoryError."""
        ticket = repository.create_ticket(self.new_ticket())
        with pytest.raises(RepositoryError):
            repository.set_status(ticket.id + 1000, TicketStatus.CLOSED)

    def test_list_tickets_is_newest_first_with_limit_and_offset(
        self, repository: TicketRepository
    ) -> None:
        """Tickets list newest first, and limit/offset page through that order."""
        ids = [repository.create_ticket(self.new_ticket(summary=f"#{n}")).id for n in range(5)]
        newest_first = list(reversed(ids))
        assert [t.id for t in repository.list_tickets()] == newest_first
        assert [t.id for t in repository.list_tickets(limit=2)] == newest_first[:2]
        assert [t.id for t in repository.list_tickets(limit=2, offset=2)] == newest_first[2:4]
        assert [t.id for t in repository.list_tickets(limit=10, offset=4)] == newest_first[4:]
        assert list(repository.list_tickets(offset=5)) == []
        assert list(repository.list_tickets(limit=0)) == []
        assert [t.summary for t in repository.list_tickets(limit=1)] == ["#4"]

    def test_list_tickets_of_an_empty_repository_is_empty(
        self, repository: TicketRepository
    ) -> None:
        """A fresh repository lists no tickets."""
        assert list(repository.list_tickets()) == []

    def test_list_actions_is_oldest_first_and_round_trips_every_field(
        self, repository: TicketRepository
    ) -> None:
        """Actions list oldest first with kind, body, sender, visibility and Message-ID."""
        ticket = repository.create_ticket(self.new_ticket())
        first = repository.add_action(
            NewAction(
                ticket.id,
                ActionKind.EMAIL_IN,
                "The printer jams.\r\n",
                from_address="alice@customer.example",
                public=True,
                message_id="first@customer.example",
            )
        )
        second = repository.add_action(
            NewAction(ticket.id, ActionKind.NOTE, "Ordered a part.", public=False)
        )
        third = repository.add_action(NewAction(ticket.id, ActionKind.STATUS, "Closed."))
        actions = list(repository.list_actions(ticket.id))
        assert actions == [first, second, third]
        assert [a.kind for a in actions] == [
            ActionKind.EMAIL_IN,
            ActionKind.NOTE,
            ActionKind.STATUS,
        ]
        assert [a.public for a in actions] == [True, False, True]
        assert actions[0].from_address == "alice@customer.example"
        assert actions[0].message_id == "first@customer.example"
        assert actions[1].message_id is None
        assert all(a.ticket_id == ticket.id for a in actions)
        assert all(a.created_at.utcoffset() == dt.timedelta(0) for a in actions)
        assert len({a.id for a in actions}) == 3

    def test_list_actions_of_a_ticket_without_actions_is_empty(
        self, repository: TicketRepository
    ) -> None:
        """A ticket nobody acted on lists no actions; another ticket's actions never show."""
        quiet = repository.create_ticket(self.new_ticket())
        busy = repository.create_ticket(self.new_ticket())
        repository.add_action(NewAction(busy.id, ActionKind.NOTE, "busy"))
        assert list(repository.list_actions(quiet.id)) == []
        assert [a.body for a in repository.list_actions(busy.id)] == ["busy"]

    def test_attachments_round_trip_byte_exact(self, repository: TicketRepository) -> None:
        """Attachments (0 bytes, all byte values, 3 MiB, inline) read back exactly, in order."""
        # Over 3 MiB and not a whole number of MiB: large payloads may be written in chunks.
        noise = random.Random(20240501).randbytes((3 << 20) + 4099)
        every_byte = bytes(range(256)) * 4
        files = (
            StoredAttachment("empty.txt", "a0.bin", "text/plain", 0, payload=b""),
            StoredAttachment(
                "bytes.bin", "a1.bin", "application/octet-stream", 1024, None, False, every_byte
            ),
            StoredAttachment(
                "noise.bin", "a2.bin", "application/octet-stream", len(noise), payload=noise
            ),
            StoredAttachment(
                "logo — café.png",
                "a3.png",
                "image/png",
                8,
                "<logo@x.example>",
                True,
                b"\x89PNG\r\n\x1a\n",
            ),
        )
        ticket = repository.create_ticket(self.new_ticket())
        added = repository.add_action(
            NewAction(ticket.id, ActionKind.EMAIL_IN, "see attached", attachments=files)
        )
        repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "no files"))
        actions = list(repository.list_actions(ticket.id))
        assert added.attachments == files
        assert actions[0].attachments == files
        assert [a.payload for a in actions[0].attachments] == [
            b"",
            every_byte,
            noise,
            files[3].payload,
        ]
        assert actions[0].attachments[3].inline is True
        assert actions[0].attachments[3].content_id == "<logo@x.example>"
        assert actions[1].attachments == ()

    # -- threading by Message-ID -------------------------------------------------

    def test_find_ticket_by_the_message_id_of_an_action(self, repository: TicketRepository) -> None:
        """A Message-ID carried by one of a ticket's actions finds that ticket."""
        ticket = repository.create_ticket(self.new_ticket())
        repository.create_ticket(self.new_ticket(summary="other"))
        repository.add_action(
            NewAction(ticket.id, ActionKind.EMAIL_IN, "hi", message_id="in-1@customer.example")
        )
        found = repository.find_ticket_by_message_ids(["in-1@customer.example"])
        assert found is not None
        assert found.id == ticket.id

    def test_find_ticket_by_the_message_id_of_an_outgoing_email(
        self, repository: TicketRepository
    ) -> None:
        """A Message-ID of an outgoing email queued for a ticket finds that ticket."""
        repository.create_ticket(self.new_ticket(summary="other"))
        ticket = repository.create_ticket(self.new_ticket())
        repository.enqueue_outgoing(
            self.new_outgoing("ack-1@helpdesk.example", ticket_id=ticket.id)
        )
        found = repository.find_ticket_by_message_ids(["ack-1@helpdesk.example"])
        assert found is not None
        assert found.id == ticket.id

    def test_find_ticket_by_message_ids_takes_the_first_id_that_matches(
        self, repository: TicketRepository
    ) -> None:
        """With ids of two tickets, the ticket of the id listed first wins, from either table."""
        by_action = repository.create_ticket(self.new_ticket(summary="by action"))
        by_outbox = repository.create_ticket(self.new_ticket(summary="by outbox"))
        repository.add_action(
            NewAction(by_action.id, ActionKind.EMAIL_IN, "x", message_id="a@customer.example")
        )
        repository.enqueue_outgoing(self.new_outgoing("b@helpdesk.example", ticket_id=by_outbox.id))
        ids = ["unknown@x.example", "b@helpdesk.example", "a@customer.example"]
        first = repository.find_ticket_by_message_ids(ids)
        assert first is not None
        assert first.id == by_outbox.id
        second = repository.find_ticket_by_message_ids(list(reversed(ids)))
        assert second is not None
        assert second.id == by_action.id

    def test_find_ticket_by_unknown_or_no_message_ids_is_none(
        self, repository: TicketRepository
    ) -> None:
        """Unknown ids, no ids at all, and an outgoing email of no ticket find nothing."""
        ticket = repository.create_ticket(self.new_ticket())
        repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "x", message_id="known@x"))
        repository.enqueue_outgoing(self.new_outgoing("test@helpdesk.example", kind="test"))
        assert repository.find_ticket_by_message_ids([]) is None
        assert repository.find_ticket_by_message_ids(["unknown@x", "known@y"]) is None
        assert repository.find_ticket_by_message_ids(["test@helpdesk.example"]) is None

    # -- transactions ------------------------------------------------------------

    def test_a_transaction_commits_every_write_together(self, repository: TicketRepository) -> None:
        """Every kind of write made in a transaction is kept once it commits."""
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket())
            repository.add_action(
                NewAction(ticket.id, ActionKind.EMAIL_IN, "hi", message_id="in@customer.example")
            )
            repository.record_dedupe(
                DedupeRecord("Support\x1fid:in", "f" * 64, "created", ticket.id)
            )
            mail = repository.enqueue_outgoing(
                self.new_outgoing("ack@helpdesk.example", ticket_id=ticket.id)
            )
            repository.quarantine(NewQuarantine("Support", "mime-too-deep", b"raw"))
            repository.set_state("onboarded:Support", "yes")
        stored = repository.get_ticket(ticket.id)
        assert stored is not None
        assert (stored.id, stored.summary) == (ticket.id, ticket.summary)
        assert [a.body for a in repository.list_actions(ticket.id)] == ["hi"]
        dedupe = repository.get_dedupe("Support\x1fid:in")
        assert dedupe is not None
        assert dedupe.ticket_id == ticket.id
        assert [m.id for m in repository.due_outgoing(utcnow() + _HOUR)] == [mail.id]
        assert [q.reason for q in repository.list_quarantine()] == ["mime-too-deep"]
        assert repository.get_state("onboarded:Support") == "yes"
        found = repository.find_ticket_by_message_ids(["ack@helpdesk.example"])
        assert found is not None
        assert found.id == ticket.id

    def test_an_exception_in_a_transaction_rolls_back_every_write(
        self, repository: TicketRepository
    ) -> None:
        """An exception in a transaction propagates unchanged and leaves no trace of any write."""
        kept = repository.create_ticket(self.new_ticket(summary="kept"))
        kept_mail = repository.enqueue_outgoing(self.new_outgoing("kept@helpdesk.example"))
        repository.set_state("cursor", "before")
        boom = RuntimeError("the host failed half-way")
        raised: BaseException | None = None
        try:
            with repository.transaction():
                ticket = repository.create_ticket(self.new_ticket(summary="lost"))
                repository.add_action(
                    NewAction(
                        ticket.id, ActionKind.EMAIL_IN, "lost", message_id="lost@customer.example"
                    )
                )
                repository.add_action(NewAction(kept.id, ActionKind.NOTE, "lost note"))
                repository.set_status(kept.id, TicketStatus.CLOSED)
                repository.record_dedupe(
                    DedupeRecord("Support\x1fid:lost", "0" * 64, "created", ticket.id)
                )
                repository.enqueue_outgoing(
                    self.new_outgoing("lost-ack@helpdesk.example", ticket_id=ticket.id)
                )
                repository.mark_outgoing(kept_mail.id, OutboxStatus.SENT)
                repository.quarantine(NewQuarantine("Support", "processing-error", b"lost"))
                repository.set_state("cursor", "after")
                repository.set_state("new-key", "value")
                raise boom
        except RuntimeError as exc:
            raised = exc
        assert raised is boom
        assert repository.get_ticket(ticket.id) is None
        assert [t.summary for t in repository.list_tickets()] == ["kept"]
        assert repository.get_ticket(kept.id) == kept
        assert list(repository.list_actions(kept.id)) == []
        assert list(repository.list_actions(ticket.id)) == []
        assert repository.get_dedupe("Support\x1fid:lost") is None
        assert repository.find_ticket_by_message_ids(["lost@customer.example"]) is None
        assert repository.find_ticket_by_message_ids(["lost-ack@helpdesk.example"]) is None
        assert list(repository.due_outgoing(utcnow() + _HOUR)) == [kept_mail]
        assert repository.count_outgoing(to="alice@customer.example", since=utcnow() - _HOUR) == 1
        assert list(repository.list_quarantine()) == []
        assert repository.get_state("cursor") == "before"
        assert repository.get_state("new-key") is None

    def test_a_transaction_reads_its_own_writes(self, repository: TicketRepository) -> None:
        """Inside a transaction, reads see the writes made earlier in the same transaction."""
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket())
            repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "x", message_id="m@x"))
            repository.record_dedupe(DedupeRecord("k", "s", "created", ticket.id))
            repository.set_state("k", "v")
            stored = repository.get_ticket(ticket.id)
            assert stored is not None
            assert (stored.id, stored.summary) == (ticket.id, ticket.summary)
            found = repository.find_ticket_by_message_ids(["m@x"])
            assert found is not None
            assert found.id == ticket.id
            dedupe = repository.get_dedupe("k")
            assert dedupe is not None
            assert dedupe.outcome == "created"
            assert repository.get_state("k") == "v"

    def test_transactions_do_not_nest(self, repository: TicketRepository) -> None:
        """A transaction inside another raises RepositoryError; the outer one still commits."""
        with repository.transaction():
            first = repository.create_ticket(self.new_ticket(summary="outer"))
            with pytest.raises(RepositoryError):
                _open_and_leave(repository)
            second = repository.create_ticket(self.new_ticket(summary="after the refusal"))
        assert repository.get_ticket(first.id) == first
        assert repository.get_ticket(second.id) == second

    def test_writes_outside_a_transaction_are_kept_at_once(
        self, repository: TicketRepository
    ) -> None:
        """A write outside any transaction is committed; a later rollback does not undo it."""
        ticket = repository.create_ticket(self.new_ticket())
        repository.set_state("k", "v")

        def abort() -> None:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(summary="rolled back"))
                raise KeyError("abort")

        with pytest.raises(KeyError):
            abort()
        assert repository.get_ticket(ticket.id) == ticket
        assert repository.get_state("k") == "v"
        assert [t.id for t in repository.list_tickets()] == [ticket.id]

    def test_a_new_transaction_works_after_a_rollback(self, repository: TicketRepository) -> None:
        """After a rolled-back transaction, the next one starts and commits normally."""

        def abort() -> None:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(summary="lost"))
                raise ValueError("first")

        with pytest.raises(ValueError, match="first"):
            abort()
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket(summary="kept"))
        assert [t.summary for t in repository.list_tickets()] == ["kept"]
        assert repository.get_ticket(ticket.id) == ticket

    # -- dedupe ------------------------------------------------------------------

    def test_get_dedupe_of_an_unknown_key_is_none(self, repository: TicketRepository) -> None:
        """A key never recorded reads back None."""
        assert repository.get_dedupe("Support\x1fid:never@x.example") is None

    def test_record_dedupe_round_trips_every_field(self, repository: TicketRepository) -> None:
        """A dedupe record reads back with key, fingerprint, outcome, ticket id and time equal."""
        ticket = repository.create_ticket(self.new_ticket())
        when = dt.datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)
        record = DedupeRecord("Support\x1fid:a@x.example", "ab" * 32, "created", ticket.id, when)
        repository.record_dedupe(record)
        repository.record_dedupe(DedupeRecord("Support\x1fsha256:00ff", "", "ignored", None, when))
        assert repository.get_dedupe(record.key) == record
        other = repository.get_dedupe("Support\x1fsha256:00ff")
        assert other is not None
        assert (other.ticket_id, other.outcome, other.sha256) == (None, "ignored", "")
        assert repository.get_dedupe("support\x1fid:a@x.example") is None

    def test_record_dedupe_of_a_recorded_key_raises_and_keeps_the_first(
        self, repository: TicketRepository
    ) -> None:
        """Recording a key twice raises RepositoryError, and the first record stays as it was."""
        first = DedupeRecord("Support\x1fid:dup@x.example", "1" * 64, "created", None)
        repository.record_dedupe(first)
        with pytest.raises(RepositoryError):
            repository.record_dedupe(DedupeRecord(first.key, "2" * 64, "updated", None))
        stored = repository.get_dedupe(first.key)
        assert stored is not None
        assert (stored.sha256, stored.outcome) == ("1" * 64, "created")

    # -- quarantine --------------------------------------------------------------

    def test_quarantine_keeps_the_bytes_exactly_and_every_field(
        self, repository: TicketRepository
    ) -> None:
        """A quarantined email keeps its raw bytes (CRLF, NUL, 8-bit) exactly, with its reason."""
        raw = b"From: x@y\r\nSubject: \xff\xfe\r\n\r\nbody\x00\x80\r\n.\r\n" + bytes(range(256))
        entry = repository.quarantine(
            NewQuarantine(
                "Support",
                "mime-too-deep",
                raw,
                detail="33 levels of nesting (limit 32)",
                message_id="deep@x.example",
                dedupe_key="Support\x1fid:deep@x.example",
            )
        )
        assert entry.raw == raw
        assert entry.created_at.utcoffset() == dt.timedelta(0)
        (listed,) = repository.list_quarantine()
        assert listed == entry
        assert listed.raw == raw
        assert (listed.mailbox, listed.reason, listed.detail) == (
            "Support",
            "mime-too-deep",
            "33 levels of nesting (limit 32)",
        )
        assert (listed.message_id, listed.dedupe_key) == (
            "deep@x.example",
            "Support\x1fid:deep@x.example",
        )

    def test_list_quarantine_is_newest_first_with_limit_and_offset(
        self, repository: TicketRepository
    ) -> None:
        """Quarantined emails list newest first, and limit/offset page through them."""
        ids = [repository.quarantine(NewQuarantine("Support", f"r{n}", b"")).id for n in range(4)]
        newest_first = list(reversed(ids))
        assert [q.id for q in repository.list_quarantine()] == newest_first
        assert [q.id for q in repository.list_quarantine(limit=2, offset=1)] == newest_first[1:3]
        assert [q.reason for q in repository.list_quarantine(limit=1)] == ["r3"]
        assert repository.list_quarantine()[-1].raw == b""

    # -- the outbox --------------------------------------------------------------

    def test_enqueue_outgoing_round_trips_every_field_as_pending(
        self, repository: TicketRepository
    ) -> None:
        """A queued email reads back with every field, pending, with no attempt and no sent time."""
        ticket = repository.create_ticket(self.new_ticket())
        mail = repository.enqueue_outgoing(
            NewOutgoing(
                message_id="upd-1@helpdesk.example",
                to=("alice@customer.example", "bob@customer.example"),
                subject="[ID:1] Re: Printer — fixed",
                text="Fixed.\r\n-- \r\nSupport",
                mailbox="Support",
                kind="update",
                ticket_id=ticket.id,
                html="<p>Fixed.</p>",
                in_reply_to="in-1@customer.example",
                references=("in-0@customer.example", "in-1@customer.example"),
                auto_submitted=False,
            )
        )
        assert mail.status is OutboxStatus.PENDING
        assert (mail.attempts, mail.next_attempt_at, mail.last_error, mail.sent_at) == (
            0,
            None,
            None,
            None,
        )
        assert mail.created_at.utcoffset() == dt.timedelta(0)
        (due,) = repository.due_outgoing(utcnow() + _HOUR)
        assert due == mail
        assert due.to == ("alice@customer.example", "bob@customer.example")
        assert due.references == ("in-0@customer.example", "in-1@customer.example")
        assert (due.html, due.in_reply_to, due.auto_submitted) == (
            "<p>Fixed.</p>",
            "in-1@customer.example",
            False,
        )
        assert (due.kind, due.mailbox, due.ticket_id) == ("update", "Support", ticket.id)

    def test_enqueue_outgoing_keeps_the_defaults(self, repository: TicketRepository) -> None:
        """A queued email with only the required fields reads back with the model's defaults."""
        mail = repository.enqueue_outgoing(self.new_outgoing("min@helpdesk.example"))
        (due,) = repository.due_outgoing(utcnow() + _HOUR)
        assert due == mail
        assert (due.html, due.in_reply_to, due.references, due.ticket_id) == (None, None, (), None)
        assert (due.kind, due.mailbox, due.auto_submitted) == ("acknowledgement", "", True)

    def test_due_outgoing_lists_never_tried_mail_oldest_first_up_to_the_limit(
        self, repository: TicketRepository
    ) -> None:
        """Never-tried pending mail is due at once, listed oldest first, cut at the limit."""
        ids = [
            repository.enqueue_outgoing(self.new_outgoing(f"m{n}@h.example")).id for n in range(4)
        ]
        now = utcnow() + _HOUR
        assert [m.id for m in repository.due_outgoing(now)] == ids
        assert [m.id for m in repository.due_outgoing(now, limit=2)] == ids[:2]
        assert list(repository.due_outgoing(now, limit=0)) == []

    def test_pending_mail_with_a_later_attempt_is_due_only_from_then(
        self, repository: TicketRepository
    ) -> None:
        """Mail to retry later is not due before its next attempt time, and due from then on."""
        mail = repository.enqueue_outgoing(self.new_outgoing("retry@helpdesk.example"))
        retry_at = (utcnow() + _HOUR).replace(microsecond=0)
        marked = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="421 try later", next_attempt_at=retry_at
        )
        assert marked.status is OutboxStatus.PENDING
        assert marked.next_attempt_at == retry_at
        assert marked.last_error == "421 try later"
        assert marked.attempts == 1
        assert list(repository.due_outgoing(utcnow())) == []
        assert list(repository.due_outgoing(retry_at - _MICROSECOND)) == []
        assert [m.id for m in repository.due_outgoing(retry_at)] == [mail.id]
        (due,) = repository.due_outgoing(retry_at + _HOUR)
        assert due == marked

    def test_due_outgoing_orders_retries_among_new_mail_by_age(
        self, repository: TicketRepository
    ) -> None:
        """A retry that has come due is listed before newer mail, because it was queued first."""
        old = repository.enqueue_outgoing(self.new_outgoing("old@helpdesk.example"))
        new = repository.enqueue_outgoing(self.new_outgoing("new@helpdesk.example"))
        soon = utcnow() + dt.timedelta(minutes=5)
        repository.mark_outgoing(old.id, OutboxStatus.PENDING, error="busy", next_attempt_at=soon)
        assert [m.id for m in repository.due_outgoing(utcnow())] == [new.id]
        assert [m.id for m in repository.due_outgoing(soon + _HOUR)] == [old.id, new.id]

    def test_sent_mail_is_not_due_and_records_when_it_was_sent(
        self, repository: TicketRepository
    ) -> None:
        """Marking mail sent sets sent_at, counts the attempt and takes it out of the due list."""
        mail = repository.enqueue_outgoing(self.new_outgoing("sent@helpdesk.example"))
        before = mail.created_at
        sent = repository.mark_outgoing(mail.id, OutboxStatus.SENT)
        assert sent.status is OutboxStatus.SENT
        assert sent.attempts == 1
        assert sent.sent_at is not None
        assert sent.sent_at >= before
        assert sent.sent_at.utcoffset() == dt.timedelta(0)
        assert list(repository.due_outgoing(utcnow() + _HOUR)) == []

    def test_failed_mail_is_not_due_and_keeps_its_error(self, repository: TicketRepository) -> None:
        """Mail marked failed keeps its error, has no sent_at and is never due again."""
        mail = repository.enqueue_outgoing(self.new_outgoing("failed@helpdesk.example"))
        failed = repository.mark_outgoing(mail.id, OutboxStatus.FAILED, error="550 no such user")
        assert failed.status is OutboxStatus.FAILED
        assert failed.last_error == "550 no such user"
        assert failed.sent_at is None
        assert failed.attempts == 1
        assert list(repository.due_outgoing(utcnow() + _HOUR * 24 * 365)) == []

    def test_mark_outgoing_counts_each_attempt(self, repository: TicketRepository) -> None:
        """Two transient failures and a success make three attempts, and the mail ends sent."""
        mail = repository.enqueue_outgoing(self.new_outgoing("flaky@helpdesk.example"))
        past = utcnow() - _HOUR
        first = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="e1", next_attempt_at=past
        )
        second = repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error="e2", next_attempt_at=past
        )
        assert (first.attempts, second.attempts, second.last_error) == (1, 2, "e2")
        (due,) = repository.due_outgoing(utcnow())
        assert due.attempts == 2
        final = repository.mark_outgoing(mail.id, OutboxStatus.SENT)
        assert (final.attempts, final.status) == (3, OutboxStatus.SENT)
        assert final.message_id == "flaky@helpdesk.example"

    def test_count_outgoing_counts_mail_queued_since_a_time(
        self, repository: TicketRepository
    ) -> None:
        """The count includes mail queued at or after `since`, not mail queued before it."""
        first = repository.enqueue_outgoing(self.new_outgoing("c1@helpdesk.example"))
        self.wait_for_the_clock()
        second = repository.enqueue_outgoing(self.new_outgoing("c2@helpdesk.example"))
        assert second.created_at > first.created_at
        to = "alice@customer.example"
        assert repository.count_outgoing(to=to, since=first.created_at - _HOUR) == 2
        assert repository.count_outgoing(to=to, since=first.created_at) == 2
        assert repository.count_outgoing(to=to, since=first.created_at + _MICROSECOND) == 1
        assert repository.count_outgoing(to=to, since=second.created_at) == 1
        assert repository.count_outgoing(to=to, since=second.created_at + _MICROSECOND) == 0

    def test_count_outgoing_ignores_case_and_finds_any_recipient(
        self, repository: TicketRepository
    ) -> None:
        """An address counts in any case and among several recipients; other addresses do not."""
        repository.enqueue_outgoing(
            self.new_outgoing("c1@h.example", to=("Alice@Customer.Example", "bob@customer.example"))
        )
        repository.enqueue_outgoing(
            self.new_outgoing("c2@h.example", to=("carol@customer.example",))
        )
        since = utcnow() - _HOUR
        assert repository.count_outgoing(to="alice@customer.example", since=since) == 1
        assert repository.count_outgoing(to="ALICE@CUSTOMER.EXAMPLE", since=since) == 1
        assert repository.count_outgoing(to="bob@customer.example", since=since) == 1
        assert repository.count_outgoing(to="carol@customer.example", since=since) == 1
        assert repository.count_outgoing(to="dave@customer.example", since=since) == 0

    def test_count_outgoing_matches_whole_addresses_only(
        self, repository: TicketRepository
    ) -> None:
        """An address that is part of another (ob@ in bob@) is not counted for it."""
        repository.enqueue_outgoing(self.new_outgoing("c1@h.example", to=("bob@customer.example",)))
        since = utcnow() - _HOUR
        assert repository.count_outgoing(to="ob@customer.example", since=since) == 0
        assert repository.count_outgoing(to="bob@customer.exampl", since=since) == 0

    def test_count_outgoing_counts_mail_in_every_status(self, repository: TicketRepository) -> None:
        """Sent, failed and pending mail all count: the throttle limits what was queued."""
        ids = [
            repository.enqueue_outgoing(self.new_outgoing(f"s{n}@h.example")).id for n in range(3)
        ]
        repository.mark_outgoing(ids[0], OutboxStatus.SENT)
        repository.mark_outgoing(ids[1], OutboxStatus.FAILED, error="550")
        assert repository.count_outgoing(to="alice@customer.example", since=utcnow() - _HOUR) == 3

    def test_count_outgoing_for_one_ticket(self, repository: TicketRepository) -> None:
        """With a ticket id, only that ticket's mail to the address counts."""
        one = repository.create_ticket(self.new_ticket())
        two = repository.create_ticket(self.new_ticket())
        repository.enqueue_outgoing(self.new_outgoing("t1@h.example", ticket_id=one.id))
        repository.enqueue_outgoing(self.new_outgoing("t2@h.example", ticket_id=one.id))
        repository.enqueue_outgoing(self.new_outgoing("t3@h.example", ticket_id=two.id))
        repository.enqueue_outgoing(self.new_outgoing("t4@h.example"))
        since = utcnow() - _HOUR
        to = "alice@customer.example"
        assert repository.count_outgoing(to=to, since=since) == 4
        assert repository.count_outgoing(to=to, since=since, ticket_id=one.id) == 2
        assert repository.count_outgoing(to=to, since=since, ticket_id=two.id) == 1
        assert repository.count_outgoing(to=to, since=since, ticket_id=two.id + 1000) == 0

    # -- state -------------------------------------------------------------------

    def test_get_state_of_an_unknown_key_is_none(self, repository: TicketRepository) -> None:
        """A key never set reads back None."""
        assert repository.get_state("never-set") is None

    def test_set_state_keeps_and_overwrites_a_value(self, repository: TicketRepository) -> None:
        """A value set reads back; setting it again replaces it; other keys are untouched."""
        repository.set_state("mailbox:Support:start", "2024-05-01T00:00:00+00:00")
        repository.set_state("other", "")
        assert repository.get_state("mailbox:Support:start") == "2024-05-01T00:00:00+00:00"
        repository.set_state("mailbox:Support:start", '{"uids": [1, 2, 3]}')
        assert repository.get_state("mailbox:Support:start") == '{"uids": [1, 2, 3]}'
        assert repository.get_state("other") == ""

    # -- people and things -------------------------------------------------------

    def _people(self, repository: TicketRepository) -> None:
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

    def test_find_user_ignores_case_and_returns_every_field(
        self, repository: TicketRepository
    ) -> None:
        """A known user is found by address in any case, with name, phone and mobile."""
        self._people(repository)
        user = repository.find_user("Alice@CUSTOMER.example")
        assert user is not None
        assert (user.email, user.name, user.phone, user.mobile) == (
            "alice@customer.example",
            "Alice Martin",
            "+44 20 1234",
            "+44 7700 1",
        )
        customer = repository.find_customer("alice@customer.example")
        assert customer is not None
        assert user.customer_id == customer.id

    def test_find_user_of_an_unknown_address_is_none(self, repository: TicketRepository) -> None:
        """An address no user has finds no user, even in a known domain."""
        self._people(repository)
        assert repository.find_user("mallory@customer.example") is None
        assert repository.find_user("") is None

    def test_find_customer_prefers_the_user_customer_to_the_domain(
        self, repository: TicketRepository
    ) -> None:
        """A known user's own customer wins over the customer owning the address's domain."""
        self._people(repository)
        customer = repository.find_customer("BOB@partner.example")
        assert customer is not None
        assert customer.name == "Customer Ltd"
        assert customer.domains == ("customer.example",)
        assert customer.from_address == "support@customer.example"
        assert customer.reply_address == "replies@customer.example"

    def test_find_customer_by_domain(self, repository: TicketRepository) -> None:
        """An unknown address, or a user with no customer, finds the customer of its domain."""
        self._people(repository)
        unknown = repository.find_customer("Someone@Partner.Test")
        assert unknown is not None
        assert (unknown.name, unknown.domains) == (
            "Partner plc",
            ("partner.example", "partner.test"),
        )
        assert unknown.from_address is None
        assert unknown.reply_address is None
        carol = repository.find_customer("carol@partner.test")
        assert carol is not None
        assert carol.name == "Partner plc"

    def test_find_customer_of_an_unknown_address_is_none(
        self, repository: TicketRepository
    ) -> None:
        """An address of no known user and no known domain finds no customer."""
        self._people(repository)
        assert repository.find_customer("someone@elsewhere.example") is None
        assert repository.find_customer("someone@sub.customer.example") is None
        assert repository.find_customer("not-an-address") is None

    def test_find_asset_by_tag_ignores_case(self, repository: TicketRepository) -> None:
        """An asset is found by its tag in any case, with its fields."""
        self.seed(
            repository,
            assets=[
                Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "Host name": "lt42"}),
                Asset(2, "PRN-7", {"Serial Number": "SN-XYZ-9"}),
            ],
        )
        asset = repository.find_asset("tag", "laptop-0042")
        assert asset is not None
        assert asset.tag == "LAPTOP-0042"
        assert dict(asset.fields) == {"Serial Number": "SN-ABC-123", "Host name": "lt42"}
        other = repository.find_asset("tag", "prn-7")
        assert other is not None
        assert other.tag == "PRN-7"

    def test_find_asset_by_field_ignores_case_of_the_value(
        self, repository: TicketRepository
    ) -> None:
        """An asset is found by a field's value in any case."""
        self.seed(
            repository,
            assets=[
                Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "Host name": "lt42"}),
                Asset(2, "PRN-7", {"Serial Number": "SN-XYZ-9"}),
            ],
        )
        asset = repository.find_asset("Serial Number", "sn-xyz-9")
        assert asset is not None
        assert asset.tag == "PRN-7"
        by_host = repository.find_asset("Host name", "LT42")
        assert by_host is not None
        assert by_host.tag == "LAPTOP-0042"

    def test_find_asset_of_an_unknown_value_or_field_is_none(
        self, repository: TicketRepository
    ) -> None:
        """A value no asset has, or a value under the wrong field, finds no asset."""
        self.seed(repository, assets=[Asset(1, "LAPTOP-0042", {"Serial Number": "SN-ABC-123"})])
        assert repository.find_asset("tag", "LAPTOP-9999") is None
        assert repository.find_asset("Serial Number", "SN-ABC") is None
        assert repository.find_asset("Host name", "SN-ABC-123") is None
        assert repository.find_asset("tag", "SN-ABC-123") is None

    # -- alert keys and assignment ---------------------------------------------

    def test_alert_key_round_trips_and_defaults_to_none(self, repository: TicketRepository) -> None:
        """A ticket's alert key reads back as given; a ticket created without one has None."""
        keyed = repository.create_ticket(self.new_ticket(alert_key="alert:nagios:srv01/disk"))
        plain = repository.create_ticket(self.new_ticket())
        assert keyed.alert_key == "alert:nagios:srv01/disk"
        assert repository.get_ticket(keyed.id) == keyed
        assert plain.alert_key is None
        stored = repository.get_ticket(plain.id)
        assert stored is not None
        assert stored.alert_key is None
        assert [t.alert_key for t in repository.list_tickets()] == [None, "alert:nagios:srv01/disk"]

    def test_find_open_ticket_picks_the_newest_open_ticket_with_the_key(
        self, repository: TicketRepository
    ) -> None:
        """Of several tickets with one key, the newest not closed is found; others never are."""
        key = "service:Nightly backup"
        repository.create_ticket(self.new_ticket(summary="older", alert_key=key))
        newer = repository.create_ticket(self.new_ticket(summary="newer", alert_key=key))
        repository.create_ticket(self.new_ticket(summary="other", alert_key="service:Replication"))
        repository.create_ticket(self.new_ticket(summary="no key"))
        found = repository.find_open_ticket(alert_key=key)
        assert found is not None
        assert (found.id, found.summary) == (newer.id, "newer")
        assert found == repository.get_ticket(newer.id)
        other = repository.find_open_ticket(alert_key="service:Replication")
        assert other is not None
        assert other.summary == "other"
        assert repository.find_open_ticket(alert_key="service:Mail relay") is None

    def test_find_open_ticket_passes_over_closed_tickets(
        self, repository: TicketRepository
    ) -> None:
        """Closed tickets are skipped for an older open one; none open: None; reopened: found."""
        key = "alert:prtg:core-switch ping"
        older = repository.create_ticket(self.new_ticket(alert_key=key))
        newer = repository.create_ticket(self.new_ticket(alert_key=key))
        repository.set_status(newer.id, TicketStatus.CLOSED)
        found = repository.find_open_ticket(alert_key=key)
        assert found is not None
        assert found.id == older.id
        repository.set_status(older.id, TicketStatus.CLOSED)
        assert repository.find_open_ticket(alert_key=key) is None
        repository.set_status(older.id, TicketStatus.OPEN)
        reopened = repository.find_open_ticket(alert_key=key)
        assert reopened is not None
        assert (reopened.id, reopened.status) == (older.id, TicketStatus.OPEN)

    def test_find_open_ticket_compares_keys_exactly(self, repository: TicketRepository) -> None:
        """Another case, a prefix or an extension of the key finds nothing."""
        repository.create_ticket(self.new_ticket(alert_key="alert:nagios:srv01/disk"))
        assert repository.find_open_ticket(alert_key="ALERT:NAGIOS:SRV01/DISK") is None
        assert repository.find_open_ticket(alert_key="alert:nagios:srv01") is None
        assert repository.find_open_ticket(alert_key="alert:nagios:srv01/disk2") is None
        assert repository.find_open_ticket(alert_key="") is None

    def test_assign_sets_agent_and_team_and_touches_updated_at(
        self, repository: TicketRepository
    ) -> None:
        """Assigning writes agent and team, moves updated_at on, and keeps status and created_at."""
        ticket = repository.create_ticket(self.new_ticket(alert_key="alert:x:y"))
        self.wait_for_the_clock()
        assigned = repository.assign(ticket.id, agent="eve@helpdesk.example", team="Second line")
        assert (assigned.agent, assigned.team) == ("eve@helpdesk.example", "Second line")
        assert assigned.status is TicketStatus.NEW
        assert assigned.created_at == ticket.created_at
        assert assigned.updated_at > ticket.updated_at
        assert assigned.alert_key == "alert:x:y"
        assert repository.get_ticket(ticket.id) == assigned

    def test_assign_with_none_clears_a_value(self, repository: TicketRepository) -> None:
        """None for the agent removes the agent while the team given is set."""
        ticket = repository.create_ticket(
            self.new_ticket(agent="eve@helpdesk.example", team="First line")
        )
        assigned = repository.assign(ticket.id, agent=None, team="Second line")
        assert (assigned.agent, assigned.team) == (None, "Second line")
        cleared = repository.assign(ticket.id, agent=None, team=None)
        assert (cleared.agent, cleared.team) == (None, None)
        assert repository.get_ticket(ticket.id) == cleared

    def test_assign_a_missing_ticket_raises(self, repository: TicketRepository) -> None:
        """Assigning a ticket that does not exist raises RepositoryError."""
        ticket = repository.create_ticket(self.new_ticket())
        with pytest.raises(RepositoryError):
            repository.assign(ticket.id + 1000, agent="eve@helpdesk.example", team=None)
        assert repository.get_ticket(ticket.id) == ticket

    # -- saving assets -------------------------------------------------------------

    def test_save_asset_creates_an_asset_that_find_asset_finds(
        self, repository: TicketRepository
    ) -> None:
        """A new tag creates an asset (created=True) found by its tag and by its fields."""
        asset, created = repository.save_asset(
            "WS-0107", {"Serial Number": "CZC1234XYZ", "Host name": "ws-0107"}
        )
        assert created is True
        assert (asset.tag, asset.customer_id) == ("WS-0107", None)
        assert dict(asset.fields) == {"Serial Number": "CZC1234XYZ", "Host name": "ws-0107"}
        assert repository.find_asset("tag", "ws-0107") == asset
        assert repository.find_asset("Serial Number", "czc1234xyz") == asset
        assert repository.find_asset("Host name", "WS-0107") == asset

    def test_save_asset_updates_by_tag_in_any_case_merging_fields(
        self, repository: TicketRepository
    ) -> None:
        """A known tag in another case updates that asset: fields merged, id and tag kept."""
        first, _ = repository.save_asset(
            "LAPTOP-0042", {"Serial Number": "SN-ABC-123", "RAM": "8 GB", "OS": "Windows 10"}
        )
        updated, created = repository.save_asset(
            "laptop-0042", {"RAM": "16 GB", "OS": "Windows 11", "Disk": "512 GB"}
        )
        assert created is False
        assert (updated.id, updated.tag) == (first.id, "LAPTOP-0042")
        assert dict(updated.fields) == {
            "Serial Number": "SN-ABC-123",
            "RAM": "16 GB",
            "OS": "Windows 11",
            "Disk": "512 GB",
        }
        assert repository.find_asset("tag", "LAPTOP-0042") == updated
        assert repository.find_asset("RAM", "16 gb") == updated
        assert repository.find_asset("Disk", "512 GB") == updated
        assert repository.find_asset("Serial Number", "SN-ABC-123") == updated
        assert repository.find_asset("RAM", "8 GB") is None
        assert repository.find_asset("OS", "Windows 10") is None

    def test_save_asset_with_the_same_values_changes_nothing(
        self, repository: TicketRepository
    ) -> None:
        """Saving no fields, or the same values in another case, keeps the asset findable."""
        first, _ = repository.save_asset("PRN-7", {"Serial Number": "SN-XYZ-9"})
        same, created = repository.save_asset("PRN-7", {})
        assert (same, created) == (first, False)
        recased, _ = repository.save_asset("prn-7", {"Serial Number": "sn-xyz-9"})
        assert dict(recased.fields) == {"Serial Number": "sn-xyz-9"}
        assert repository.find_asset("Serial Number", "SN-XYZ-9") == recased

    def test_save_asset_keeps_or_changes_the_owner(self, repository: TicketRepository) -> None:
        """Without a customer an update keeps the owner; with one it moves the asset to it."""
        self._people(repository)
        customer = repository.find_customer("someone@customer.example")
        partner = repository.find_customer("someone@partner.example")
        assert customer is not None
        assert partner is not None
        self.seed(repository, assets=[Asset(1, "SRV-01", {"Role": "File server"})])
        created, _ = repository.save_asset("SRV-02", {}, customer_id=customer.id)
        assert created.customer_id == customer.id
        kept, _ = repository.save_asset("srv-02", {"Role": "Backup"})
        assert kept.customer_id == customer.id
        moved, _ = repository.save_asset("SRV-02", {}, customer_id=partner.id)
        assert moved.customer_id == partner.id
        assert repository.find_asset("tag", "srv-02") == moved
        seeded, was_created = repository.save_asset("srv-01", {"Role": "Print server"})
        assert was_created is False
        assert (seeded.tag, dict(seeded.fields)) == ("SRV-01", {"Role": "Print server"})

    def test_save_asset_with_an_unknown_customer_raises_and_changes_nothing(
        self, repository: TicketRepository
    ) -> None:
        """A customer id of no customer raises RepositoryError; nothing is created or changed."""
        existing, _ = repository.save_asset("SRV-01", {"Role": "File server"})
        with pytest.raises(RepositoryError):
            repository.save_asset("SRV-01", {"Role": "Other"}, customer_id=existing.id + 1000)
        with pytest.raises(RepositoryError):
            repository.save_asset("SRV-99", {"Role": "New"}, customer_id=existing.id + 1000)
        assert repository.find_asset("tag", "SRV-01") == existing
        assert repository.find_asset("tag", "SRV-99") is None
        assert repository.find_asset("Role", "Other") is None

    def test_a_value_an_asset_drops_finds_the_next_asset_with_it(
        self, repository: TicketRepository
    ) -> None:
        """When the first asset with a value changes it, find_asset finds the next one with it."""
        first, _ = repository.save_asset("DOCK-1", {"Location": "Room 101"})
        second, _ = repository.save_asset("DOCK-2", {"Location": "Room 101"})
        found = repository.find_asset("Location", "room 101")
        assert found is not None
        assert found.id == first.id
        repository.save_asset("DOCK-1", {"Location": "Room 202"})
        after = repository.find_asset("Location", "Room 101")
        assert after is not None
        assert after.id == second.id
        moved = repository.find_asset("Location", "Room 202")
        assert moved is not None
        assert moved.id == first.id

    # -- files without a ticket ------------------------------------------------------

    def _owners(self, repository: TicketRepository) -> tuple[int, int]:
        """A customer id and an asset id to store files against."""
        self._people(repository)
        customer = repository.find_customer("someone@customer.example")
        assert customer is not None
        asset, _ = repository.save_asset("NAS-01", {"Serial Number": "NAS-SN-1"})
        return customer.id, asset.id

    def test_store_files_round_trips_byte_exact(self, repository: TicketRepository) -> None:
        """Files kept against a customer read back byte for byte, in order, with owner and note."""
        customer_id, _ = self._owners(repository)
        noise = random.Random(20240502).randbytes((3 << 20) + 4099)
        files = (
            StoredAttachment("empty.txt", "f0.bin", "text/plain", 0, payload=b""),
            StoredAttachment(
                "bytes.bin",
                "f1.bin",
                "application/octet-stream",
                1024,
                payload=bytes(range(256)) * 4,
            ),
            StoredAttachment(
                "report — März.pdf", "f2.pdf", "application/pdf", len(noise), payload=noise
            ),
            StoredAttachment(
                "logo.png", "f3.png", "image/png", 8, "<logo@x.example>", True, b"\x89PNG\r\n\x1a\n"
            ),
        )
        stored = repository.store_files(
            owner="customer", owner_id=customer_id, attachments=files, note="Monthly export"
        )
        assert [f.attachment for f in stored] == list(files)
        assert len({f.id for f in stored}) == 4
        assert all(
            (f.owner, f.owner_id, f.note) == ("customer", customer_id, "Monthly export")
            for f in stored
        )
        assert all(f.created_at.utcoffset() == dt.timedelta(0) for f in stored)
        listed = list(repository.list_files(owner="customer", owner_id=customer_id))
        assert listed == list(stored)
        assert [f.payload for f in listed] == [
            b"",
            bytes(range(256)) * 4,
            noise,
            b"\x89PNG\r\n\x1a\n",
        ]
        assert [(f.filename, f.content_type, f.size) for f in listed] == [
            ("empty.txt", "text/plain", 0),
            ("bytes.bin", "application/octet-stream", 1024),
            ("report — März.pdf", "application/pdf", len(noise)),
            ("logo.png", "image/png", 8),
        ]
        assert (listed[3].inline, listed[3].content_id, listed[3].storage_name) == (
            True,
            "<logo@x.example>",
            "f3.png",
        )

    def test_list_files_is_per_owner_and_oldest_first(self, repository: TicketRepository) -> None:
        """Each owner lists only its own files, across calls oldest first; others list none."""
        customer_id, asset_id = self._owners(repository)

        def one(name: str) -> tuple[StoredAttachment, ...]:
            return (StoredAttachment(name, name + ".bin", "text/csv", 3, payload=b"a,b"),)

        repository.store_files(owner="asset", owner_id=asset_id, attachments=one("first"))
        repository.store_files(owner="customer", owner_id=customer_id, attachments=one("theirs"))
        repository.store_files(
            owner="asset", owner_id=asset_id, attachments=one("second"), note="later"
        )
        on_asset = list(repository.list_files(owner="asset", owner_id=asset_id))
        assert [(f.filename, f.note) for f in on_asset] == [
            ("first", ""),
            ("second", "later"),
        ]
        assert all((f.owner, f.owner_id) == ("asset", asset_id) for f in on_asset)
        on_customer = list(repository.list_files(owner="customer", owner_id=customer_id))
        assert [f.filename for f in on_customer] == ["theirs"]
        assert list(repository.list_files(owner="customer", owner_id=customer_id + 1000)) == []
        assert list(repository.list_files(owner="asset", owner_id=asset_id + 1000)) == []

    def test_store_files_without_attachments_stores_nothing(
        self, repository: TicketRepository
    ) -> None:
        """An empty list of attachments stores no file and returns none."""
        customer_id, _ = self._owners(repository)
        assert (
            list(repository.store_files(owner="customer", owner_id=customer_id, attachments=()))
            == []
        )
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []

    def test_store_files_for_a_missing_owner_raises_and_keeps_nothing(
        self, repository: TicketRepository
    ) -> None:
        """Files for a customer or asset that does not exist raise RepositoryError, none kept."""
        customer_id, asset_id = self._owners(repository)
        files = (StoredAttachment("a.txt", "a.bin", "text/plain", 1, payload=b"a"),)
        missing_customer = customer_id + 1000
        missing_asset = asset_id + 1000
        with pytest.raises(RepositoryError):
            repository.store_files(owner="customer", owner_id=missing_customer, attachments=files)
        with pytest.raises(RepositoryError):
            repository.store_files(owner="asset", owner_id=missing_asset, attachments=files)
        assert list(repository.list_files(owner="customer", owner_id=missing_customer)) == []
        assert list(repository.list_files(owner="asset", owner_id=missing_asset)) == []

    def test_store_files_for_an_unknown_kind_of_owner_raises_value_error(
        self, repository: TicketRepository
    ) -> None:
        """An owner that is neither "customer" nor "asset" raises ValueError."""
        customer_id, _ = self._owners(repository)
        files = (StoredAttachment("a.txt", "a.bin", "text/plain", 1, payload=b"a"),)
        owner: Any = "ticket"
        with pytest.raises(ValueError, match="ticket"):
            repository.store_files(owner=owner, owner_id=customer_id, attachments=files)

    # -- monitored services -----------------------------------------------------------

    _T0 = dt.datetime(2024, 5, 1, 2, 0, 0, 123456, tzinfo=dt.UTC)

    def test_record_service_status_round_trips_every_field(
        self, repository: TicketRepository
    ) -> None:
        """A status reads back with service, status, UTC time, detail, ticket and Message-ID."""
        ticket = repository.create_ticket(self.new_ticket(alert_key="service:Nightly backup"))
        sydney = dt.timezone(dt.timedelta(hours=10))
        at = dt.datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=sydney)
        entry = repository.record_service_status(
            NewServiceStatus(
                service="Nightly backup",
                status=ServiceStatus.FAILED,
                at=at,
                detail="Backup job FAILED: 3 errors",
                ticket_id=ticket.id,
                message_id="job-17@backup.example",
            )
        )
        assert entry.status is ServiceStatus.FAILED
        assert entry.at == at
        assert entry.at.utcoffset() == dt.timedelta(0)
        assert (entry.service, entry.detail, entry.ticket_id, entry.message_id) == (
            "Nightly backup",
            "Backup job FAILED: 3 errors",
            ticket.id,
            "job-17@backup.example",
        )
        assert list(repository.service_history("Nightly backup")) == [entry]
        assert repository.last_service_status("Nightly backup") == entry
        plain = repository.record_service_status(
            NewServiceStatus("Nightly backup", "ok", at + _HOUR)
        )
        assert (plain.status, plain.detail, plain.ticket_id, plain.message_id) == (
            ServiceStatus.OK,
            "",
            None,
            None,
        )
        assert repository.last_service_status("Nightly backup") == plain

    def test_service_history_is_newest_first_by_time_with_a_limit(
        self, repository: TicketRepository
    ) -> None:
        """History lists by time, newest first, whatever the order of recording, up to the limit."""
        statuses = ["ok", "failed", "ok", "unknown", "ok"]
        for hour in (2, 0, 4, 1, 3):
            repository.record_service_status(
                NewServiceStatus("Replication", statuses[hour], self._T0 + hour * _HOUR, f"h{hour}")
            )
        history = list(repository.service_history("Replication"))
        assert [e.detail for e in history] == ["h4", "h3", "h2", "h1", "h0"]
        assert [e.status for e in history] == [
            ServiceStatus.OK,
            ServiceStatus.UNKNOWN,
            ServiceStatus.OK,
            ServiceStatus.FAILED,
            ServiceStatus.OK,
        ]
        assert [e.detail for e in repository.service_history("Replication", limit=2)] == [
            "h4",
            "h3",
        ]
        assert list(repository.service_history("Replication", limit=0)) == []
        last = repository.last_service_status("Replication")
        assert last is not None
        assert (last.detail, last.at) == ("h4", self._T0 + 4 * _HOUR)

    def test_statuses_at_the_same_time_list_the_last_recorded_first(
        self, repository: TicketRepository
    ) -> None:
        """Two statuses with one time list in reverse order of recording."""
        first = repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0, "first"))
        second = repository.record_service_status(
            NewServiceStatus("UPS", "failed", self._T0, "second")
        )
        assert list(repository.service_history("UPS")) == [second, first]
        assert repository.last_service_status("UPS") == second

    def test_service_history_is_per_service_with_exact_names(
        self, repository: TicketRepository
    ) -> None:
        """Each service sees only its own statuses; a name in another case is another service."""
        backup = repository.record_service_status(
            NewServiceStatus("Nightly backup", "ok", self._T0)
        )
        repository.record_service_status(
            NewServiceStatus("Replication", "failed", self._T0 + _HOUR)
        )
        assert list(repository.service_history("Nightly backup")) == [backup]
        assert list(repository.service_history("nightly backup")) == []
        assert repository.last_service_status("nightly backup") is None
        assert list(repository.service_history("Mail relay")) == []
        assert repository.last_service_status("Mail relay") is None

    # -- the new writes and transactions ------------------------------------------------

    def test_rule_writes_commit_together_and_are_read_inside_the_transaction(
        self, repository: TicketRepository
    ) -> None:
        """Alert tickets, assignment, assets, files and statuses commit together (seen inside)."""
        customer_id, _ = self._owners(repository)
        files = (StoredAttachment("x.csv", "x.bin", "text/csv", 3, payload=b"1,2"),)
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket(alert_key="alert:a:b"))
            repository.assign(ticket.id, agent="eve@helpdesk.example", team=None)
            asset, created = repository.save_asset("NEW-1", {"OS": "Linux"})
            repository.store_files(owner="asset", owner_id=asset.id, attachments=files)
            repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0))
            inside = repository.find_open_ticket(alert_key="alert:a:b")
            assert inside is not None
            assert inside.agent == "eve@helpdesk.example"
            assert repository.find_asset("OS", "linux") == asset
            assert len(repository.list_files(owner="asset", owner_id=asset.id)) == 1
            assert repository.last_service_status("UPS") is not None
        assert created is True
        found = repository.find_open_ticket(alert_key="alert:a:b")
        assert found is not None
        assert (found.id, found.agent) == (ticket.id, "eve@helpdesk.example")
        assert repository.find_asset("tag", "new-1") == asset
        assert [
            f.attachment for f in repository.list_files(owner="asset", owner_id=asset.id)
        ] == list(files)
        assert [e.status for e in repository.service_history("UPS")] == [ServiceStatus.OK]
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []

    def test_an_exception_rolls_back_every_rule_write(self, repository: TicketRepository) -> None:
        """An exception in a transaction undoes every alert, asset, file and status write."""
        customer_id, asset_id = self._owners(repository)
        kept = repository.create_ticket(self.new_ticket(alert_key="alert:a:kept"))
        existing = repository.find_asset("tag", "NAS-01")
        first_status = repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0))
        files = (StoredAttachment("x.csv", "x.bin", "text/csv", 3, payload=b"1,2"),)
        boom = RuntimeError("the host failed half-way")
        raised: BaseException | None = None
        try:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(alert_key="alert:a:lost"))
                repository.assign(kept.id, agent="eve@helpdesk.example", team="Second line")
                repository.set_status(kept.id, TicketStatus.CLOSED)
                repository.save_asset("LOST-1", {"OS": "Linux"})
                repository.save_asset("nas-01", {"Serial Number": "CHANGED", "Extra": "x"})
                repository.store_files(owner="customer", owner_id=customer_id, attachments=files)
                repository.store_files(owner="asset", owner_id=asset_id, attachments=files)
                repository.record_service_status(
                    NewServiceStatus("UPS", "failed", self._T0 + _HOUR)
                )
                repository.record_service_status(NewServiceStatus("New service", "ok", self._T0))
                raise boom
        except RuntimeError as exc:
            raised = exc
        assert raised is boom
        assert repository.find_open_ticket(alert_key="alert:a:lost") is None
        assert repository.find_open_ticket(alert_key="alert:a:kept") == kept
        assert repository.get_ticket(kept.id) == kept
        assert repository.find_asset("tag", "LOST-1") is None
        assert repository.find_asset("OS", "Linux") is None
        assert repository.find_asset("tag", "NAS-01") == existing
        assert repository.find_asset("Serial Number", "NAS-SN-1") == existing
        assert repository.find_asset("Serial Number", "CHANGED") is None
        assert repository.find_asset("Extra", "x") is None
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []
        assert list(repository.list_files(owner="asset", owner_id=asset_id)) == []
        assert list(repository.service_history("UPS")) == [first_status]
        assert repository.last_service_status("New service") is None
