"""Ticket templates: the starting point an ``apply_template`` rule gives a new ticket.

A template names a ticket type, a summary prefix, a priority, a category, custom field
values, and the team or agent the ticket goes to. In ``halomail.toml``::

    [[ticket_templates]]
    name = "Printer fault"
    ticket_type = "Incident"
    summary_prefix = "[Printer] "
    priority = "P3"
    category = "Hardware"
    team = "Field Service"
    # agent = "tech@example.com"
    fields = { CF_site = "HQ" }      # custom fields, with or without the CF_ prefix

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from halomail.errors import ConfigError
from halomail.tickets.models import NewTicket

__all__ = ["TicketTemplate", "ticket_templates_from_config"]

_KEYS = (
    "name",
    "ticket_type",
    "summary_prefix",
    "priority",
    "category",
    "team",
    "agent",
    "fields",
)


def _frozen_fields(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen
class TicketTemplate:
    """What a new ticket starts from when an ``apply_template`` rule matches.

    Args:
        name: The template's name, referred to by rules.
        ticket_type: Overrides the mailbox's ticket type.
        summary_prefix: Put before the email's subject.
        priority: The ticket's priority.
        category: The ticket's category.
        team: The team the ticket is assigned to.
        agent: The agent the ticket is assigned to.
        fields: Custom field values by name (without ``CF_``).
    """

    name: str
    ticket_type: str | None = None
    summary_prefix: str = ""
    priority: str | None = None
    category: str | None = None
    team: str | None = None
    agent: str | None = None
    fields: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_fields)

    def apply(self, ticket: NewTicket) -> NewTicket:
        """``ticket`` started from this template; what the email itself set wins for fields."""
        return attrs.evolve(
            ticket,
            ticket_type=self.ticket_type or ticket.ticket_type,
            summary=f"{self.summary_prefix}{ticket.summary}",
            priority=ticket.priority or self.priority,
            category=ticket.category or self.category,
            team=ticket.team or self.team,
            agent=ticket.agent or self.agent,
            custom_fields={**self.fields, **ticket.custom_fields},
        )


def ticket_templates_from_config(
    tables: Sequence[Any], *, key_path: str = "ticket_templates"
) -> tuple[TicketTemplate, ...]:
    """Build and validate ``[[ticket_templates]]``.

    Raises:
        ConfigError: With the key path of the first problem.
    """
    if not isinstance(tables, list | tuple):
        raise ConfigError(key_path, "expected an array of tables ([[ticket_templates]])")
    templates: list[TicketTemplate] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        kp = f"{key_path}[{index}]"
        if not isinstance(table, Mapping):
            raise ConfigError(kp, "expected a table")
        for key in table:
            if key not in _KEYS:
                close = difflib.get_close_matches(str(key), _KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{kp}.{key}", f"unknown key {key!r}{hint}")
        values: dict[str, Any] = {}
        for key in _KEYS:
            if key == "fields" or key not in table:
                continue
            value = table[key]
            if not isinstance(value, str) or (key == "name" and not value.strip()):
                raise ConfigError(f"{kp}.{key}", f"expected a non-empty string, got {value!r}")
            values[key] = value
        if "name" not in values:
            raise ConfigError(f"{kp}.name", "required: the name rules refer to")
        if values["name"].lower() in seen:
            raise ConfigError(f"{kp}.name", f"duplicate template name {values['name']!r}")
        seen.add(values["name"].lower())
        fields = table.get("fields", {})
        if not isinstance(fields, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
        ):
            raise ConfigError(f"{kp}.fields", "expected a table of string values")
        values["fields"] = {k.removeprefix("CF_"): v for k, v in fields.items()}
        templates.append(TicketTemplate(**values))
    return tuple(templates)
