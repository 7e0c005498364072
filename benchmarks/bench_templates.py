"""Renders per second of the default acknowledgement: halomail against plain Jinja2.

Run it from the checkout::

    python benchmarks/bench_templates.py

The acknowledgement is the built-in ``new_ticket_logged`` template of the ``Default``
message group: a subject, a text body and an HTML body with a table of the ticket's
details. One render is all three parts.

- **halomail**: ``TemplateRenderer().render(MessageKind.NEW_TICKET_LOGGED, values)``,
  the values built once with ``TemplateValues.for_ticket`` for a sample ticket (as the
  processor does, once per mail); the sandbox, the value escaping, the ``<br>`` for
  line breaks in HTML values and the one-line subject are all included.
- **halomail + values**: the same, building the ``TemplateValues`` inside the loop.
- **values only**: ``TemplateValues.for_ticket`` alone, what the processor builds once
  per acknowledged email (no render).
- **jinja2**: the same three templates written directly in Jinja2 syntax (each
  ``$name`` as ``{{ name }}``), compiled in a plain ``jinja2.Environment`` (autoescape
  for the HTML, the same whitespace options), rendered with ``Template.render(dict)``
  from the same values as a plain ``dict``.

Printed: the median renders per second of several rounds (the three run interleaved in
each round, so a busy machine slows all of them alike) and the ratio of Jinja2's rate to
each (the goal: halomail within 1.2x of Jinja2, i.e. a ratio of at most 1.2).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable

import jinja2

from halomail.templates.defaults import BUILT_IN
from halomail.templates.render import (
    _NAMES,
    MessageKind,
    TemplateRenderer,
    TemplateValues,
)
from halomail.templates.sandbox import translate
from halomail.tickets.models import Ticket, TicketStatus

ROUNDS = 9
RENDERS = 2_000

TICKET = Ticket(
    id=1234,
    summary="Printer on floor 3 is jammed",
    details="The printer jams on every page.\nIt started this morning.",
    ticket_type="Incident",
    user_email="alice@customer.example",
    status=TicketStatus.NEW,
    created_at=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC),
    updated_at=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC),
    user_name="Alice Martin",
    mailbox="Support",
    priority="P2",
    custom_fields={"site": "HQ"},
)
VALUES_ARGS = {
    "mailbox_name": "Support",
    "ticket_url": "https://helpdesk.example/tickets/1234",
    "tag": "[ID:1234]",
}


def _halomail(renderer: TemplateRenderer, values: TemplateValues) -> Callable[[], object]:
    kind = MessageKind.NEW_TICKET_LOGGED

    def run() -> object:
        return renderer.render(kind, values)

    return run


def _halomail_with_values(renderer: TemplateRenderer) -> Callable[[], object]:
    kind = MessageKind.NEW_TICKET_LOGGED

    def run() -> object:
        return renderer.render(kind, TemplateValues.for_ticket(TICKET, **VALUES_ARGS))

    return run


def _values_only() -> Callable[[], object]:
    def run() -> object:
        return TemplateValues.for_ticket(TICKET, **VALUES_ARGS)

    return run


def _jinja(values: dict[str, str]) -> Callable[[], object]:
    subject, text, html = BUILT_IN[MessageKind.NEW_TICKET_LOGGED]
    assert html is not None
    options = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
    plain = jinja2.Environment(autoescape=False, **options)  # noqa: S701 - text, not HTML
    escaping = jinja2.Environment(autoescape=True, **options)
    subject_t = plain.from_string(translate(subject, _NAMES))
    text_t = plain.from_string(translate(text, _NAMES))
    html_t = escaping.from_string(translate(html, _NAMES))

    def run() -> object:
        return (subject_t.render(values), text_t.render(values), html_t.render(values))

    return run


def _rate(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(RENDERS):
        run()
    return RENDERS / (time.perf_counter() - start)


def main() -> None:
    """Measure and print the table."""
    renderer = TemplateRenderer()
    values = TemplateValues.for_ticket(TICKET, **VALUES_ARGS)
    contenders = {
        "halomail": _halomail(renderer, values),
        "halomail + values": _halomail_with_values(renderer),
        "values only": _values_only(),
        "jinja2": _jinja(dict(values.values)),
    }
    for run in contenders.values():  # warm up: first renders fill caches
        for _ in range(200):
            run()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, run in contenders.items():
            rates[name].append(_rate(run))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    jinja = medians["jinja2"]
    print(f"default acknowledgement (subject + text + HTML), median of {ROUNDS} x {RENDERS}")
    print(f"{'renderer':<20} {'renders/s':>10} {'µs/render':>10} {'jinja2 / this':>14}")
    for name, rate in medians.items():
        print(f"{name:<20} {rate:>10,.0f} {1e6 / rate:>10.1f} {jinja / rate:>13.2f}x")


if __name__ == "__main__":
    main()
