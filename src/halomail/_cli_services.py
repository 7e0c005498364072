"""``halomail services``: the monitored services and their history; ``services message``.

Kept apart from :mod:`halomail.cli`, which registers it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO

from halomail import app
from halomail.config.loader import load_config
from halomail.errors import ConfigError
from halomail.outbound.notifier import CHANNELS
from halomail.services import ServiceDefinition
from halomail.tickets.models import ServiceStatusEntry
from halomail.tickets.repository import Browsing, TicketRepository

__all__ = ["register"]

Opener = Callable[[argparse.Namespace], AbstractContextManager[TicketRepository]]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_MAX_MESSAGE_BYTES = 64 * 1024  # a typed message, not a document: a larger file is a mistake


def register(commands: Any, opened: Opener) -> None:
    """Add ``services`` and ``services message`` to the command's subparsers.

    Args:
        commands: The ``halomail`` parser's subparsers.
        opened: Opens the configuration's repository for a command's arguments.
    """
    services = commands.add_parser(
        "services", help="the monitored services: status, last report, history of changes"
    )
    services.add_argument("--json", action="store_true", help="one JSON object per service")
    services.add_argument(
        "--limit", type=int, default=10, help="status changes shown per service (default 10)"
    )
    services.set_defaults(handler=functools.partial(_cmd_list, opened=opened))
    actions = services.add_subparsers(dest="services_command", metavar="ACTION")
    message = actions.add_parser(
        "message", help="send a typed message to a service's subscribers, by email and SMS"
    )
    message.add_argument("service", metavar="SERVICE", help="the service's name")
    message.add_argument("--subject", default="", help="the subject (default: the service)")
    text = message.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the message")
    text.add_argument("--file", type=Path, help="a UTF-8 file holding the message")
    message.add_argument("--email", action="store_true", help="only subscribers by email")
    message.add_argument("--sms", action="store_true", help="only subscribers by SMS")
    message.add_argument(
        "--again", action="store_true", help="send it even to those it was sent to before"
    )
    message.set_defaults(handler=_cmd_message)


# -- services ---------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace, *, opened: Opener) -> int:
    if args.limit < 1:
        print("halomail: services: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args.config, require_mailbox=False)
    with opened(args) as repository:
        browsing = _browsing(repository)
        # Changes are read from the newest entries: a service reporting every five
        # minutes has thousands of OK entries and a handful of changes.
        listed = [
            (service, browsing.service_history(service.name, limit=1000))
            for service in config.services
        ]
    if args.json:
        for service, history in listed:
            print(json.dumps(_service_json(service, history, args.limit)))
    else:
        _print_services(listed, args.limit, sys.stdout)
    return EXIT_OK


def _browsing(repository: TicketRepository) -> Browsing:
    if not isinstance(repository, Browsing):
        raise ConfigError(
            "storage",
            f"{type(repository).__name__} does not implement halomail.Browsing "
            "(service_history, ...), which this command needs",
        )
    return repository


def _changes(history: Sequence[ServiceStatusEntry], limit: int) -> list[ServiceStatusEntry]:
    """The entries where the status changed, newest first (each the first of its run)."""
    oldest_first = list(reversed(history))
    changes = [
        entry
        for index, entry in enumerate(oldest_first)
        if index == 0 or entry.status != oldest_first[index - 1].status
    ]
    return list(reversed(changes))[:limit]


def _last_report(history: Sequence[ServiceStatusEntry]) -> ServiceStatusEntry | None:
    """The newest entry an email made (silence makes entries without a Message-ID)."""
    return next((entry for entry in history if entry.message_id is not None), None)


def _entry_json(entry: ServiceStatusEntry) -> dict[str, Any]:
    return {
        "status": entry.status.value,
        "at": entry.at.isoformat(),
        "detail": entry.detail,
        "ticket_id": entry.ticket_id,
    }


def _service_json(
    service: ServiceDefinition, history: Sequence[ServiceStatusEntry], limit: int
) -> dict[str, Any]:
    last = history[0] if history else None
    reported = _last_report(history)
    return {
        "event": "service",
        "service": service.name,
        "status": last.status.value if last else None,
        "since": _changes(history, 1)[0].at.isoformat() if history else None,
        "last_report_at": reported.at.isoformat() if reported else None,
        "check_interval_minutes": _minutes(service),
        "subscribers": len(service.subscribers),
        "history": [_entry_json(entry) for entry in _changes(history, limit)],
    }


def _minutes(service: ServiceDefinition) -> float | int:
    minutes = service.check_interval.total_seconds() / 60
    return int(minutes) if minutes.is_integer() else minutes


def _print_services(
    listed: Sequence[tuple[ServiceDefinition, Sequence[ServiceStatusEntry]]],
    limit: int,
    out: TextIO,
) -> None:
    if not listed:
        print("no monitored services ([[services]] in the configuration)", file=out)
        return
    for service, history in listed:
        status = history[0].status.value.upper() if history else "NO REPORT YET"
        reported = _last_report(history)
        last = f"last report {_when(reported)}" if reported else "no email yet"
        print(f"{service.name}: {status} ({last}, every {service.check_interval})", file=out)
        for entry in _changes(history, limit):
            ticket = f" [ticket {entry.ticket_id}]" if entry.ticket_id else ""
            print(
                f"  {_when(entry)}  {entry.status.value:<8} {entry.detail[:70]}{ticket}",
                file=out,
            )


def _when(entry: ServiceStatusEntry) -> str:
    return entry.at.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- services message ----------------------------------------------------------------------


def _cmd_message(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    service = _service(config.services, args.service)
    text = _message_text(args)
    channels = tuple(c for c, chosen in (("email", args.email), ("sms", args.sms)) if chosen)
    with app.build_processor(config) as processor:
        notices = processor.notifier.message_subscribers(
            service, args.subject, text, channels=channels or CHANNELS, again=args.again
        )
        sent = processor.send_outbox()
    queued = sum(notice.sent for notice in notices)
    print(f"{service.name}: message queued to {queued} of {len(notices)} subscribers")
    refused = [n.reason for n in notices if n.reason and n.reason != "already-sent"]
    for reason in refused:
        print(f"halomail: services message: not queued: {reason}", file=sys.stderr)
    already = sum(n.reason == "already-sent" for n in notices)
    if already:
        print(f"{already} had it already (the same message was sent before; --again repeats it)")
    print(f"outbox: {sent.sent} sent, {sent.retrying} waiting to retry, {sent.failed} failed")
    return EXIT_OK if not refused and not sent.failed and not sent.retrying else EXIT_PROBLEMS


def _service(services: Sequence[ServiceDefinition], name: str) -> ServiceDefinition:
    for service in services:
        if service.name.casefold() == name.casefold():
            return service
    known = ", ".join(repr(s.name) for s in services) or "none"
    raise ConfigError("services", f"no monitored service {name!r} (known: {known})")


def _message_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        text: str = args.text
    else:
        path: Path = args.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError("--file", f"cannot read {path}: {exc.strerror}") from None
        if len(data) > _MAX_MESSAGE_BYTES:
            raise ConfigError("--file", f"{path} is larger than {_MAX_MESSAGE_BYTES} bytes")
        text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise ConfigError("--text", "the message is empty")
    return text
