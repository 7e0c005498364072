"""The :class:`~halomail.TicketStore` role: tickets and their actions."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from halomail.errors import RepositoryError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR
from halomail.tickets.models import (
    ActionKind,
    NewAction,
    RecordKind,
    StoredAttachment,
    TicketStatus,
    utcnow,
)

__all__ = ["TicketStoreContract"]


class TicketStoreContract(ContractBase):
    """The :class:`~halomail.TicketStore` role: tickets and their actions.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_create_ticket_returns_a_new_open_ticket_with_an_id(
        self, repository: CompleteRepository
    ) -> None:
        """A created ticket is new, not closed, with equal aware-UTC created/updated times."""
        before = utcnow()
        ticket = repository.create_ticket(self.new_ticket())
        assert ticket.status is TicketStatus.NEW
        assert ticket.is_open
        assert ticket.closed_at is None
        assert ticket.created_at == ticket.updated_at
        assert ticket.created_at.utcoffset() == dt.timedelta(0)
        assert before - dt.timedelta(seconds=5) <= ticket.created_at <= utcnow() + HOUR / 60
        assert (ticket.summary, ticket.user_email) == (
            "Printer is jammed",
            "alice@customer.example",
        )

    def test_a_ticket_keeps_the_fields_rules_map_and_every_linked_asset(
        self, repository: CompleteRepository
    ) -> None:
        """Impact, urgency, site and several assets read back; asset_id is the first asset.

        .. versionadded:: 0.1.0
        """
        created = repository.create_ticket(
            self.new_ticket(impact="High", urgency="Low", site="Leeds", asset_ids=(7, 3, 9))
        )
        fetched = repository.get_ticket(created.id)
        assert fetched == created
        assert fetched is not None
        assert (fetched.impact, fetched.urgency, fetched.site) == ("High", "Low", "Leeds")
        assert (fetched.asset_id, fetched.asset_ids) == (7, (7, 3, 9))
        single = repository.create_ticket(self.new_ticket(asset_id=5))
        assert (single.asset_id, single.asset_ids) == (5, (5,))
        assert repository.get_ticket(single.id) == single

    def test_create_ticket_starts_in_the_status_asked_for(
        self, repository: CompleteRepository
    ) -> None:
        """A ticket created open is open; one created closed is closed at once.

        .. versionadded:: 0.1.0
        """
        opened = repository.create_ticket(self.new_ticket(status=TicketStatus.OPEN))
        closed = repository.create_ticket(self.new_ticket(status="closed"))
        assert (opened.status, opened.closed_at) == (TicketStatus.OPEN, None)
        assert closed.status is TicketStatus.CLOSED
        assert not closed.is_open
        assert closed.closed_at == closed.created_at
        assert repository.get_ticket(opened.id) == opened
        assert repository.get_ticket(closed.id) == closed

    def test_get_ticket_round_trips_every_field(self, repository: CompleteRepository) -> None:
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

    def test_get_ticket_round_trips_the_defaults(self, repository: CompleteRepository) -> None:
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

    def test_get_ticket_of_an_unknown_id_is_none(self, repository: CompleteRepository) -> None:
        """Asking for a ticket that does not exist returns None."""
        ticket = repository.create_ticket(self.new_ticket())
        assert repository.get_ticket(ticket.id + 1000) is None

    def test_each_ticket_gets_its_own_id(self, repository: CompleteRepository) -> None:
        """Ten tickets get ten distinct ids, and each id reads back its own ticket."""
        tickets = [repository.create_ticket(self.new_ticket(summary=f"#{n}")) for n in range(10)]
        assert len({t.id for t in tickets}) == 10
        for ticket in tickets:
            fetched = repository.get_ticket(ticket.id)
            assert fetched is not None
            assert fetched.summary == ticket.summary

    def test_add_action_touches_the_ticket_updated_at(self, repository: CompleteRepository) -> None:
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

    def test_add_action_to_a_missing_ticket_raises(self, repository: CompleteRepository) -> None:
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
        self, repository: CompleteRepository
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

    def test_set_status_of_a_missing_ticket_raises(self, repository: CompleteRepository) -> None:
        """Changing the status of a ticket that does not exist raises RepositoryError."""
        ticket = repository.create_ticket(self.new_ticket())
        with pytest.raises(RepositoryError):
            repository.set_status(ticket.id + 1000, TicketStatus.CLOSED)

    def test_list_actions_is_oldest_first_and_round_trips_every_field(
        self, repository: CompleteRepository
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
        self, repository: CompleteRepository
    ) -> None:
        """A ticket nobody acted on lists no actions; another ticket's actions never show."""
        quiet = repository.create_ticket(self.new_ticket())
        busy = repository.create_ticket(self.new_ticket())
        repository.add_action(NewAction(busy.id, ActionKind.NOTE, "busy"))
        assert list(repository.list_actions(quiet.id)) == []
        assert [a.body for a in repository.list_actions(busy.id)] == ["busy"]

    def test_attachments_round_trip_byte_exact(self, repository: CompleteRepository) -> None:
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

    def test_find_ticket_by_the_message_id_of_an_action(
        self, repository: CompleteRepository
    ) -> None:
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
        self, repository: CompleteRepository
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
        self, repository: CompleteRepository
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

    def test_find_ticket_by_message_ids_reads_a_long_references_header(
        self, repository: CompleteRepository
    ) -> None:
        """Of 1,200 ids (a long thread's References), where only the 900th and the
        1,100th are known, the 900th's ticket wins, however the ids are batched."""
        early = repository.create_ticket(self.new_ticket(summary="named first"))
        late = repository.create_ticket(self.new_ticket(summary="named later"))
        repository.add_action(
            NewAction(late.id, ActionKind.EMAIL_IN, "x", message_id="id-1099@customer.example")
        )
        repository.enqueue_outgoing(
            self.new_outgoing("id-899@customer.example", ticket_id=early.id)
        )
        ids = [f"id-{n}@customer.example" for n in range(1200)]
        found = repository.find_ticket_by_message_ids(ids)
        assert found is not None
        assert found.id == early.id
        found = repository.find_ticket_by_message_ids(ids[900:])
        assert found is not None
        assert found.id == late.id

    def test_find_ticket_by_unknown_or_no_message_ids_is_none(
        self, repository: CompleteRepository
    ) -> None:
        """Unknown ids, no ids at all, and an outgoing email of no ticket find nothing."""
        ticket = repository.create_ticket(self.new_ticket())
        repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "x", message_id="known@x"))
        repository.enqueue_outgoing(self.new_outgoing("test@helpdesk.example", kind="test"))
        assert repository.find_ticket_by_message_ids([]) is None
        assert repository.find_ticket_by_message_ids(["unknown@x", "known@y"]) is None
        assert repository.find_ticket_by_message_ids(["test@helpdesk.example"]) is None

    def test_alert_key_round_trips_and_defaults_to_none(
        self, repository: CompleteRepository
    ) -> None:
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
        self, repository: CompleteRepository
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
        self, repository: CompleteRepository
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

    def test_find_open_ticket_compares_keys_exactly(self, repository: CompleteRepository) -> None:
        """Another case, a prefix or an extension of the key finds nothing."""
        repository.create_ticket(self.new_ticket(alert_key="alert:nagios:srv01/disk"))
        assert repository.find_open_ticket(alert_key="ALERT:NAGIOS:SRV01/DISK") is None
        assert repository.find_open_ticket(alert_key="alert:nagios:srv01") is None
        assert repository.find_open_ticket(alert_key="alert:nagios:srv01/disk2") is None
        assert repository.find_open_ticket(alert_key="") is None
