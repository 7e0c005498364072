"""``halomail outbox``: list the mail waiting or failed, and send it again.

Kept apart from :mod:`halomail.cli`, which registers it, so the command module stays
about the commands that process mail.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TextIO

from halomail.errors import ConfigError
from halomail.outbound.outbox import HALTS_STATE
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from halomail.tickets.repository import OutboxAdmin, TicketRepository

__all__ = ["mail_json", "register", "retry", "state"]

Opener = Callable[[argparse.Namespace], AbstractContextManager[TicketRepository]]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def register(commands: Any, opened: Opener) -> None:
    """Add ``outbox`` and ``outbox retry`` to the command's subparsers.

    Args:
        commands: The ``halomail`` parser's subparsers.
        opened: Opens the configuration's repository for a command's arguments.
    """
    outbox = commands.add_parser(
        "outbox",
        help="list outgoing mail not sent yet (pending, maybe sent, failed), newest first",
    )
    outbox.add_argument("--json", action="store_true")
    which_mail = outbox.add_mutually_exclusive_group()
    which_mail.add_argument(
        "--status", choices=[s.value for s in OutboxStatus], help="only mail of this status"
    )
    which_mail.add_argument("--all", action="store_true", help="sent mail too")
    outbox.add_argument("--limit", type=int, default=100)
    outbox.set_defaults(handler=functools.partial(_cmd_list, opened=opened))
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    retry = actions.add_parser(
        "retry", help="send failed (or waiting) mail again, now: after fixing the configuration"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--all", action="store_true", help="every failed and pending email, and every transport"
    )
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    retry.set_defaults(handler=functools.partial(_cmd_retry, opened=opened))


def _admin(repository: TicketRepository) -> OutboxAdmin:
    if not isinstance(repository, OutboxAdmin):
        raise ConfigError(
            "storage",
            f"{type(repository).__name__} does not implement "
            "halomail.tickets.repository.OutboxAdmin (list_outgoing, retry_outgoing), "
            "which this command needs",
        )
    return repository


def _cmd_list(args: argparse.Namespace, *, opened: Opener) -> int:
    if args.limit < 1:
        print("halomail: outbox: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    with opened(args) as repository:
        admin = _admin(repository)
        if args.status is not None or args.all:
            status = OutboxStatus(args.status) if args.status is not None else None
            mails = list(admin.list_outgoing(status=status, limit=args.limit))
        else:
            mails = [
                mail
                for status in (OutboxStatus.FAILED, OutboxStatus.PENDING)
                for mail in admin.list_outgoing(status=status, limit=args.limit)
            ]
            mails = sorted(mails, key=lambda mail: mail.id, reverse=True)[: args.limit]
        halts = _halts(repository)
    if args.json:
        document = {"outgoing": [mail_json(m) for m in mails], "halted": halts}
        print(json.dumps(document, indent=2))
    else:
        _print_mails(mails, halts, sys.stdout)
    return EXIT_OK


def retry(repository: TicketRepository, ids: Sequence[int] | None) -> Sequence[OutboxMail]:
    """Queue failed (or waiting) mail again, due now, as ``halomail outbox retry`` does.

    Args:
        repository: The configured repository (an :class:`OutboxAdmin`).
        ids: The emails to retry; ``None`` for every failed and pending one.

    Returns:
        The emails queued again (sent ones and unknown ids are not among them).

    Raises:
        ConfigError: The repository does not implement :class:`OutboxAdmin`.
    """
    retried = _admin(repository).retry_outgoing(utcnow(), ids=ids)
    # The administrator says the configuration is fixed: no transport waits any more.
    if _halts(repository):
        repository.set_state(HALTS_STATE, "{}")
    return retried


def _cmd_retry(args: argparse.Namespace, *, opened: Opener) -> int:
    ids: Sequence[int] | None = None if args.all else args.ids
    with opened(args) as repository:
        retried = retry(repository, ids)
    print(f"{len(retried)} emails queued again, due now: the next run sends them")
    missing = sorted(set(ids or ()) - {mail.id for mail in retried})
    if missing:
        listed = ", ".join(map(str, missing))
        print(
            f"halomail: outbox: not failed or pending (sent, or no such id): {listed}",
            file=sys.stderr,
        )
        return EXIT_PROBLEMS
    return EXIT_OK


def _halts(repository: TicketRepository) -> list[dict[str, Any]]:
    raw = repository.get_state(HALTS_STATE)
    try:
        stored = json.loads(raw) if raw else {}
        return [
            {"transport": name, "halts": count, "until": until}
            for name, (count, until) in sorted(stored.items())
        ]
    except (ValueError, TypeError, AttributeError):
        return []


def mail_json(mail: OutboxMail) -> dict[str, Any]:
    """An outgoing email as JSON: where it is (``state`` says ``maybe sent`` too) and why."""
    return {
        "id": mail.id,
        "status": mail.status.value,
        "state": state(mail),
        "maybe_sent": mail.maybe_sent,
        "to": list(mail.to),
        "subject": mail.subject,
        "kind": mail.kind,
        "ticket_id": mail.ticket_id,
        "attempts": mail.attempts,
        "next_attempt_at": mail.next_attempt_at.isoformat() if mail.next_attempt_at else None,
        "last_error": mail.last_error,
        "created_at": mail.created_at.isoformat(),
        "sent_at": mail.sent_at.isoformat() if mail.sent_at else None,
    }


def state(mail: OutboxMail) -> str:
    """``pending``, ``maybe sent`` (pending, and perhaps delivered already), ``sent`` or
    ``failed``."""
    return "maybe sent" if mail.maybe_sent else mail.status.value


def _print_mails(mails: Sequence[OutboxMail], halts: list[dict[str, Any]], out: TextIO) -> None:
    for halt in halts:
        print(f"stopped until {halt['until']}: {halt['transport']}", file=out)
    if not mails:
        print("no outgoing mail waiting or failed", file=out)
        return
    print(
        f"{'ID':>5}  {'STATUS':<10} {'TRIES':>5}  {'TICKET':>6}  {'TO':<28} SUBJECT / LAST ERROR",
        file=out,
    )
    for mail in mails:
        ticket = str(mail.ticket_id) if mail.ticket_id is not None else "-"
        print(
            f"{mail.id:>5}  {state(mail):<10} {mail.attempts:>5}  {ticket:>6}  "
            f"{', '.join(mail.to)[:28]:<28} {mail.subject[:60]}",
            file=out,
        )
        if mail.last_error:
            print(f"{'':>34}{mail.last_error[:200]}", file=out)
