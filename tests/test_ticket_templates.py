"""Ticket templates: what apply_template rules start a ticket from, and their validation."""

from __future__ import annotations

from typing import Any

import pytest

from halomail.errors import ConfigError
from halomail.tickets.models import NewTicket
from halomail.tickets.templates import TicketTemplate, ticket_templates_from_config


def test_a_template_fills_what_the_email_left_open_and_prefixes_the_summary() -> None:
    """A template sets type, prefix, priority, team and fields; the email's own values win."""
    template = TicketTemplate(
        "Printer",
        ticket_type="Printer Fault",
        summary_prefix="[Printer] ",
        priority="P3",
        category="Hardware",
        team="Field",
        fields={"site": "HQ", "floor": "?"},
    )
    ticket = NewTicket(
        summary="Jams",
        details="",
        ticket_type="Incident",
        user_email="a@example.com",
        priority="P1",
        custom_fields={"floor": "3"},
    )
    applied = template.apply(ticket)
    assert (applied.ticket_type, applied.summary, applied.priority) == (
        "Printer Fault",
        "[Printer] Jams",
        "P1",
    )
    assert (applied.category, applied.team, applied.agent) == ("Hardware", "Field", None)
    assert applied.custom_fields == {"site": "HQ", "floor": "3"}


def test_templates_load_from_toml_tables_with_cf_prefixes_removed() -> None:
    """[[ticket_templates]] load in order; CF_ prefixes on field names are optional."""
    (template,) = ticket_templates_from_config(
        [{"name": "New starter", "priority": "P3", "fields": {"CF_department": "HR", "site": "HQ"}}]
    )
    assert template.name == "New starter"
    assert template.fields == {"department": "HR", "site": "HQ"}


@pytest.mark.parametrize(
    ("tables", "key_path"),
    [
        ([{"name": "A", "priorty": "P1"}], "ticket_templates[0].priorty"),
        ([{"priority": "P1"}], "ticket_templates[0].name"),
        ([{"name": ""}], "ticket_templates[0].name"),
        ([{"name": "A"}, {"name": "a"}], "ticket_templates[1].name"),
        ([{"name": "A", "priority": 1}], "ticket_templates[0].priority"),
        ([{"name": "A", "fields": {"x": 1}}], "ticket_templates[0].fields"),
        (["not a table"], "ticket_templates[0]"),
    ],
)
def test_every_template_mistake_names_its_key_path(tables: list[Any], key_path: str) -> None:
    """A misspelt key, a missing or duplicate name, or a wrong type is a ConfigError at its key."""
    with pytest.raises(ConfigError) as info:
        ticket_templates_from_config(tables)
    assert info.value.key_path == key_path


def test_a_misspelt_key_gets_a_suggestion() -> None:
    """An unknown key's error suggests the key that was probably meant."""
    with pytest.raises(ConfigError, match="did you mean 'priority'"):
        ticket_templates_from_config([{"name": "A", "priorty": "P1"}])
