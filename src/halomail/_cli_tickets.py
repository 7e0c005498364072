"""``halomail tickets`` and ``halomail ticket N``: the tickets, filtered and paged, and
one ticket with every field a rule can set and the mail sent about it.

Kept apart from :mod:`halomail.cli`, which registers it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TextIO

import attrs

from halomail._cli_outbox import mail_json
from halomail.errors import ConfigError
from halomail.tickets.models import Action, OutboxMail, Ticket, TicketStatus, utcnow
from halomail.tickets.repository import Browsing, OutboxAdmin, TicketRepository

__all__ = ["browsing", "print_tickets", "register"]

Opener = Callable[[argparse.Namespace], AbstractContextManager[TicketRepository]]

EXIT_OK, EXIT_PROBLEMS = 0, 1

# How many tickets a filtered listing reads from the repository at a time.
_SCAN_PAGE = 200
# How many emails about one ticket `ticket N` shows (the newest).
_MAIL_SHOWN = 100
# Shown in the ticket's heading lines, so not repeated among its fields.
_HEADING_FIELDS = frozenset(
    {"id", "summary", "details", "status", "ticket_type", "record", "mailbox"}
    | {"user_name", "user_email", "customer", "cc", "created_at", "updated_at"}
)
_AGO = re.compile(r"(\d{1,6})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def register(commands: Any, opened: Opener) -> None:
    """Add ``tickets`` and ``ticket`` to the command's subparsers.

    Args:
        commands: The ``halomail`` parser's subparsers.
        opened: Opens the configuration's repository for a command's arguments.
    """
    tickets = commands.add_parser("tickets", help="list tickets, newest first, filtered and paged")
    tickets.add_argument("--json", action="store_true", help="a JSON array of the tickets")
    tickets.add_argument("--limit", type=_positive_int, default=50, help="at most this many")
    page = tickets.add_mutually_exclusive_group()
    page.add_argument("--page", type=_positive_int, help="the Nth page of --limit tickets")
    page.add_argument("--offset", type=_whole, default=0, help="skip this many matching tickets")
    tickets.add_argument("--status", choices=[s.value for s in TicketStatus])
    tickets.add_argument("--mailbox", help="only tickets from this mailbox")
    tickets.add_argument(
        "--since", type=since, help="created since: an ISO date or time, or 7d / 24h / 30m ago"
    )
    tickets.set_defaults(handler=functools.partial(_cmd_tickets, opened=opened))

    ticket = commands.add_parser(
        "ticket", help="show one ticket: its fields, its actions, and the mail sent about it"
    )
    ticket.add_argument("id", type=_positive_int, help="the ticket's number")
    ticket.add_argument("--json", action="store_true")
    ticket.set_defaults(handler=functools.partial(_cmd_ticket, opened=opened))


# -- argument types ------------------------------------------------------------------


def _positive_int(value: str) -> int:
    """A whole number of at least 1 (a limit, a page, a ticket's number)."""
    return _at_least(1, value)


def _whole(value: str) -> int:
    """A whole number of at least 0 (an offset)."""
    return _at_least(0, value)


def _at_least(least: int, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {number}")
    return number


def since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: ``7d``, ``24h`` or ``30m`` ago, or an ISO date or time (UTC unless it says).

    Raises:
        argparse.ArgumentTypeError: For anything else.
    """
    text = value.strip()
    ago = _AGO.fullmatch(text)
    if ago is not None:
        span = dt.timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        return (now or utcnow()) - span
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date (2026-12-01), a time (2026-12-01T09:00) or 7d/24h/30m, "
            f"got {value!r}"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


# -- tickets ---------------------------------------------------------------------------


@attrs.frozen
class TicketFilter:
    """What ``halomail tickets`` keeps: every criterion given must hold."""

    status: TicketStatus | None = None
    mailbox: str | None = None
    since: dt.datetime | None = None

    def keeps(self, ticket: Ticket) -> bool:
        """Whether ``ticket`` passes every criterion given."""
        if self.status is not None and ticket.status is not self.status:
            return False
        if self.mailbox is not None and ticket.mailbox.casefold() != self.mailbox.casefold():
            return False
        return self.since is None or ticket.created_at >= self.since


def matching(
    repository: Browsing, wanted: TicketFilter, *, limit: int, offset: int = 0
) -> list[Ticket]:
    """The tickets ``wanted`` keeps, newest first, ``offset`` of them skipped, at most ``limit``.

    The repository's listing is read a page at a time; with ``since``, reading stops at
    the first older ticket (the listing is newest first).
    """
    found: list[Ticket] = []
    skipped = 0
    for ticket in _newest_first(repository, stop_before=wanted.since):
        if not wanted.keeps(ticket):
            continue
        if skipped < offset:
            skipped += 1
            continue
        found.append(ticket)
        if len(found) == limit:
            break
    return found


def _newest_first(repository: Browsing, *, stop_before: dt.datetime | None) -> Iterator[Ticket]:
    start = 0
    while True:
        page = repository.list_tickets(limit=_SCAN_PAGE, offset=start)
        for ticket in page:
            if stop_before is not None and ticket.created_at < stop_before:
                return
            yield ticket
        if len(page) < _SCAN_PAGE:
            return
        start += _SCAN_PAGE


def _cmd_tickets(args: argparse.Namespace, *, opened: Opener) -> int:
    wanted = TicketFilter(
        status=TicketStatus(args.status) if args.status else None,
        mailbox=args.mailbox,
        since=args.since,
    )
    offset = (args.page - 1) * args.limit if args.page else args.offset
    with opened(args) as repository:
        # One more than asked: whether there is a next page to point to.
        found = matching(browsing(repository), wanted, limit=args.limit + 1, offset=offset)
    tickets, more = found[: args.limit], len(found) > args.limit
    if args.json:
        print(json.dumps([ticket_json(t) for t in tickets], indent=2))
        return EXIT_OK
    print_tickets(tickets, sys.stdout)
    if more:
        shown = f"{offset + 1}-{offset + len(tickets)}"
        print(f"(tickets {shown}; more with --offset {offset + len(tickets)})", file=sys.stderr)
    return EXIT_OK


def print_tickets(tickets: Sequence[Ticket], out: TextIO) -> None:
    """The tickets as a table: id, status, type, requester and summary."""
    if not tickets:
        print("no tickets", file=out)
        return
    print(f"{'ID':>5}  {'STATUS':<7} {'TYPE':<10} {'FROM':<28} SUMMARY", file=out)
    for t in tickets:
        print(
            f"{t.id:>5}  {t.status.value:<7} {t.ticket_type[:10]:<10} {t.user_email[:28]:<28} "
            f"{t.summary[:60]}",
            file=out,
        )


def browsing(repository: TicketRepository) -> Browsing:
    """The repository's listings, which the listing commands need (an optional role)."""
    if not isinstance(repository, Browsing):
        raise ConfigError(
            "storage",
            f"{type(repository).__name__} does not implement halomail.Browsing "
            "(list_tickets, list_quarantine, ...), which this command needs",
        )
    return repository


# -- one ticket --------------------------------------------------------------------------


def _cmd_ticket(args: argparse.Namespace, *, opened: Opener) -> int:
    with opened(args) as repository:
        ticket = repository.get_ticket(args.id)
        actions = repository.list_actions(ticket.id) if ticket is not None else []
        mails = _mail_about(repository, ticket.id) if ticket is not None else []
    if ticket is None:
        print(f"halomail: no ticket {args.id}", file=sys.stderr)
        return EXIT_PROBLEMS
    if args.json:
        data = ticket_json(ticket)
        data["actions"] = [_action_json(a) for a in actions]
        data["mail"] = [mail_json(m) for m in mails]
        print(json.dumps(data, indent=2))
        return EXIT_OK
    _print_ticket(ticket, actions, mails, sys.stdout)
    return EXIT_OK


def _mail_about(repository: TicketRepository, ticket_id: int) -> Sequence[OutboxMail]:
    """The newest mail queued for the ticket, oldest first; none without ``OutboxAdmin``."""
    if not isinstance(repository, OutboxAdmin):
        return []
    return list(reversed(repository.list_outgoing(ticket_id=ticket_id, limit=_MAIL_SHOWN)))


def _print_ticket(
    ticket: Ticket, actions: Sequence[Action], mails: Sequence[OutboxMail], out: TextIO
) -> None:
    print(f"Ticket {ticket.id}: {ticket.summary}", file=out)
    print(
        f"  status {ticket.status.value}, type {ticket.ticket_type}, {ticket.record.value}, "
        f"mailbox {ticket.mailbox}",
        file=out,
    )
    print(
        f"  from {ticket.user_name} <{ticket.user_email}>"
        + (f", customer {ticket.customer}" if ticket.customer else ""),
        file=out,
    )
    if ticket.cc:
        print(f"  cc {', '.join(ticket.cc)}", file=out)
    print(
        f"  created {ticket.created_at:%Y-%m-%d %H:%M}, updated {ticket.updated_at:%Y-%m-%d %H:%M}",
        file=out,
    )
    for name, value in set_fields(ticket):
        print(f"  {name}: {value}", file=out)
    for a in actions:
        files = (
            f" [{', '.join(f.filename or f.storage_name for f in a.attachments)}]"
            if a.attachments
            else ""
        )
        print(
            f"\n--- {a.created_at:%Y-%m-%d %H:%M} {a.kind.value} from {a.from_address or 'system'}"
            f"{'' if a.public else ' (private)'}{files}",
            file=out,
        )
        print(a.body.strip(), file=out)
    _print_mail(mails, out)


def set_fields(ticket: Ticket) -> list[tuple[str, str]]:
    """Every field of the ticket that holds a value, beyond those of its heading.

    Read from the model itself, so a field added to :class:`Ticket` (by a rule's new
    target) is shown without changing this command. Custom fields are one line each,
    as ``CF_<name>``.
    """
    shown: list[tuple[str, str]] = []
    for field in attrs.fields(Ticket):
        if field.name in _HEADING_FIELDS:
            continue
        value = getattr(ticket, field.name)
        if isinstance(value, Mapping):
            shown += [(f"CF_{key}", str(item)) for key, item in sorted(value.items())]
        elif value not in (None, "", ()):
            shown.append((field.name.replace("_", " "), _text(value)))
    return shown


def _text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return str(value)


def _print_mail(mails: Sequence[OutboxMail], out: TextIO) -> None:
    if not mails:
        print("\nNo mail sent about this ticket.", file=out)
        return
    print("\nMail about this ticket:", file=out)
    for mail in mails:
        state = "maybe sent" if mail.maybe_sent else mail.status.value
        when = f" {mail.sent_at:%Y-%m-%d %H:%M}" if mail.sent_at else ""
        print(
            f"  #{mail.id} {state}{when}, {mail.kind} to {', '.join(mail.to)}: {mail.subject!r}",
            file=out,
        )
        if mail.last_error:
            print(f"      last error: {mail.last_error[:300]}", file=out)


# -- JSON ----------------------------------------------------------------------------------


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    """The ticket as JSON: every field but ``details`` (the first action holds the text)."""
    data: dict[str, Any] = {}
    for field in attrs.fields(Ticket):
        if field.name != "details":
            data[field.name] = _json_value(getattr(ticket, field.name))
    return data


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def _action_json(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "kind": action.kind.value,
        "from": action.from_address,
        "public": action.public,
        "created_at": action.created_at.isoformat(),
        "message_id": action.message_id,
        "body": action.body,
        "attachments": [
            {"filename": f.filename, "content_type": f.content_type, "size": f.size}
            for f in action.attachments
        ],
    }
