"""CPU time of the default acknowledgement: halomail against plain Jinja2, and per email.

Run it from the checkout::

    python benchmarks/bench_templates.py            # 9 rounds of 2,000 renders
    python benchmarks/bench_templates.py --short    # 3 rounds of 300 renders

The acknowledgement is the built-in ``new_ticket_logged`` template of the ``Default``
message group: a subject, a text body and an HTML body with a table of the ticket's
details. One render is all three parts.

- **halomail**: ``TemplateRenderer().render(MessageKind.NEW_TICKET_LOGGED, values)``,
  the values built once with ``TemplateValues.for_ticket`` for a sample ticket; the
  sandbox, the value escaping, the ``<br>`` for line breaks in HTML values and the
  one-line subject are all included.
- **halomail, Jinja2 path**: the same render with each part through Jinja2
  (``Compiled.render_jinja``), as every render was before parts that only print and test
  variables rendered by a join (:mod:`halomail.templates.plain`; all the built-in ones).
- **halomail + values**: the same as **halomail**, building the ``TemplateValues`` inside the loop.
- **values only**: ``TemplateValues.for_ticket`` alone.
- **acknowledgement**: what processing pays per acknowledged email,
  ``Notifier.acknowledgement``: the template looked up, the values built once, the
  three parts rendered from their compiled forms and the outgoing mail made (its
  Message-ID included; the memory repository is never asked, as the built-in template
  needs no user or customer record for a sender with a name).
- **jinja2**: the same three templates written directly in Jinja2 syntax (each
  ``$name`` as ``{{ name }}``), compiled in a plain ``jinja2.Environment`` (autoescape
  for the HTML, the same whitespace options), rendered with ``Template.render(dict)``
  from the same values as a plain ``dict``.

Each round runs every contender once, one after the other, by CPU time
(``time.process_time``), so that a busy machine slows all of them alike. Printed: the
median CPU µs per render over the rounds with the lowest and highest round, and each
one's time over Jinja2's in the same round (median, lowest, highest; the goal: halomail
within 1.2x of Jinja2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable

import jinja2
from timing import ratio_spread

from halomail.outbound.notifier import MailboxProfile, Notifier
from halomail.outbound.outbox import MessageIdFactory
from halomail.templates.defaults import BUILT_IN
from halomail.templates.render import (
    _NAMES,
    MessageKind,
    RenderedMessage,
    TemplateRenderer,
    TemplateValues,
    _header_value,
)
from halomail.templates.sandbox import translate
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import Ticket, TicketStatus

ROUNDS = 9
RENDERS = 2_000
SHORT_ROUNDS = 3
SHORT_RENDERS = 300

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


def _halomail_jinja_path(
    renderer: TemplateRenderer, values: TemplateValues
) -> Callable[[], object]:
    subject, text, html = renderer.template(MessageKind.NEW_TICKET_LOGGED)._parts
    assert html is not None
    variables = values._variables

    def run() -> object:
        return RenderedMessage(
            subject=_header_value(subject.render_jinja(variables)),
            text=text.render_jinja(variables),
            html=html.render_jinja(variables),
        )

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


def _acknowledgement() -> Callable[[], object]:
    notifier = Notifier(
        InMemoryTicketRepository(),
        TemplateRenderer(),
        [MailboxProfile("Support")],
        ids=MessageIdFactory("bench-token", "helpdesk.example"),
        ticket_url="https://helpdesk.example/tickets/{id}",
    )
    profile = notifier.profile("Support")
    to = TICKET.user_email

    def run() -> object:
        return notifier.acknowledgement(TICKET, profile, to=to, in_reply_to=None, references=())

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


def _cpu_seconds(run: Callable[[], object], renders: int) -> float:
    start = time.process_time()
    for _ in range(renders):
        run()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="3 rounds of 300 renders")
    args = parser.parse_args(argv)
    rounds, renders = (SHORT_ROUNDS, SHORT_RENDERS) if args.short else (ROUNDS, RENDERS)
    renderer = TemplateRenderer()
    values = TemplateValues.for_ticket(TICKET, **VALUES_ARGS)
    contenders = {
        "halomail": _halomail(renderer, values),
        "halomail, Jinja2 path": _halomail_jinja_path(renderer, values),
        "halomail + values": _halomail_with_values(renderer),
        "values only": _values_only(),
        "acknowledgement": _acknowledgement(),
        "jinja2": _jinja(dict(values.values)),
    }
    for run in contenders.values():  # warm up: first renders fill caches
        for _ in range(200):
            run()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            seconds[name].append(_cpu_seconds(run, renders))
    print(
        f"default acknowledgement (subject + text + HTML), CPU time, "
        f"{rounds} interleaved rounds of {renders} renders"
    )
    print(f"{'renderer':<22} {'µs/render [lowest - highest]':>30} {'time / jinja2':>26}")
    for name, times in seconds.items():
        per_render = [1e6 * t / renders for t in times]
        spread = (
            f"{statistics.median(per_render):.1f} [{min(per_render):.1f} - {max(per_render):.1f}]"
        )
        median, low, high = ratio_spread(times, seconds["jinja2"])
        print(f"{name:<22} {spread:>30} {median:>12.2f}x [{low:.2f} - {high:.2f}x]")


if __name__ == "__main__":
    main()
