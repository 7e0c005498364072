"""``Ticket.from_new``: the ticket a repository returns carries every field it was given.

Every bundled repository builds its ``create_ticket`` result with it, so a field it
forgot would be lost on every new ticket, silently.
"""

from __future__ import annotations

import datetime as dt

import attrs

from halomail.tickets.models import NewTicket, RecordKind, Ticket, TicketStatus

CREATED = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
CLOSED = CREATED + dt.timedelta(minutes=5)


def _every_field_set() -> NewTicket:
    """A NewTicket with no field at its default."""
    new = NewTicket(
        summary="Printer jams",
        details="Every page, floor 3.",
        ticket_type="Incident",
        user_email="alice@customer.example",
        user_name="Alice Martin",
        mailbox="Support",
        record=RecordKind.OPPORTUNITY,
        customer="Customer Ltd",
        cc=("bob@customer.example",),
        priority="High",
        category="Hardware",
        team="Field",
        agent="tech@msp.example",
        asset_id=7,
        custom_fields={"Floor": "3"},
        alert_key="alert:printers:floor-3",
        status=TicketStatus.CLOSED,
        impact="Many",
        urgency="Soon",
        site="Head office",
        asset_ids=(7, 9),
    )
    defaults = {f.name for f in attrs.fields(NewTicket) if getattr(new, f.name) == f.default}
    assert not defaults, defaults  # the test must set every field
    return new


def test_every_field_of_the_new_ticket_is_on_the_stored_one() -> None:
    """Each of NewTicket's fields, and the id and times given, reach the Ticket."""
    new = _every_field_set()
    ticket = Ticket.from_new(new, id=42, created_at=CREATED, closed_at=CLOSED)
    for field in attrs.fields(NewTicket):
        assert getattr(ticket, field.name) == getattr(new, field.name), field.name
    assert (ticket.id, ticket.created_at, ticket.updated_at, ticket.closed_at) == (
        42,
        CREATED,
        CREATED,
        CLOSED,
    )


def test_a_ticket_has_exactly_the_new_tickets_fields_and_its_id_and_times() -> None:
    """A field added to one model and not the other fails here, before a ticket loses it."""
    stored_only = {"id", "created_at", "updated_at", "closed_at"}
    new_fields = {f.name for f in attrs.fields(NewTicket)}
    assert {f.name for f in attrs.fields(Ticket)} == new_fields | stored_only


def test_an_open_ticket_has_no_closing_time_and_keeps_asset_id_first() -> None:
    """The defaults: not closed, and the asset named alone is the first linked one."""
    new = NewTicket(
        summary="s", details="d", ticket_type="Incident", user_email="a@b.example", asset_id=3
    )
    ticket = Ticket.from_new(new, id=1, created_at=CREATED)
    assert ticket.closed_at is None
    assert ticket.is_open
    assert (ticket.asset_id, ticket.asset_ids) == (3, (3,))
