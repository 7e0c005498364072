"""``halomail quarantine``: list the emails kept aside, and ``show``, ``export``,
``release`` or ``delete`` one of them.

A release runs the email through the normal pipeline again, now, against the
configured repository. Its first pass recorded its dedupe key as *quarantined*, which
would make it a duplicate; released, it is decided under a key of its own
(:class:`ReleasedDedupe`), so a re-fetch of the source is still a duplicate, and a
second release finds the first one's record and creates nothing more. What came of
the release is kept in the ledger's state (``quarantine-release:<id>``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, cast

import attrs

from halomail import app
from halomail._cli_tickets import browsing
from halomail.backends.base import FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.config.loader import Config, load_config
from halomail.errors import ConfigError
from halomail.inbound.parse import parse_email
from halomail.pipeline.results import ProcessingOutcome
from halomail.tickets.models import DedupeRecord, QuarantineEntry, utcnow
from halomail.tickets.repository import QuarantineAdmin, TicketRepository

__all__ = ["RELEASE_STATE", "ReleasedDedupe", "register", "release", "release_record"]

Opener = Callable[[argparse.Namespace], AbstractContextManager[TicketRepository]]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

RELEASE_STATE = "quarantine-release:{id}"
"""The state key of a released email's record: JSON with ``at``, ``outcome``,
``ticket_id``, ``reason`` and ``rule``."""
RELEASED_SUFFIX = "\x1freleased"
"""Appended to a released email's dedupe key: its second pass is recorded under it."""

# `show` prints at most this much of the original: enough to recognise the email.
_HEADERS_SHOWN = 60
_HEADER_CHARS = 300
_TEXT_CHARS = 4000


def register(commands: Any, opened: Opener) -> None:
    """Add ``quarantine`` and its ``show``, ``export``, ``release`` and ``delete``.

    Args:
        commands: The ``halomail`` parser's subparsers.
        opened: Opens the configuration's repository for a command's arguments.
    """
    listing = commands.add_parser(
        "quarantine", help="list quarantined emails and why; show, export, release, delete one"
    )
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=_positive_int, default=100, help="at most this many")
    listing.set_defaults(handler=functools.partial(_cmd_list, opened=opened))
    actions = listing.add_subparsers(dest="quarantine_command", metavar="ACTION")

    show = actions.add_parser("show", help="the reason, and the original email's headers and text")
    show.add_argument("id", type=_positive_int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=functools.partial(_cmd_show, opened=opened))

    export = actions.add_parser("export", help="the original email's bytes, exactly")
    export.add_argument("id", type=_positive_int)
    export.add_argument("-o", "--output", type=Path, help="write to this file (default: stdout)")
    export.set_defaults(handler=functools.partial(_cmd_export, opened=opened))

    release = actions.add_parser("release", help="process it again now, through the rules")
    release.add_argument("id", type=_positive_int)
    release.add_argument("--json", action="store_true")
    release.set_defaults(handler=_cmd_release)

    delete = actions.add_parser("delete", help="forget it and its bytes")
    delete.add_argument("id", type=_positive_int)
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.set_defaults(handler=functools.partial(_cmd_delete, opened=opened))


def _positive_int(value: str) -> int:
    """A whole number of at least 1 (a limit, an id)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _admin(repository: TicketRepository) -> QuarantineAdmin:
    if not isinstance(repository, QuarantineAdmin):
        raise ConfigError(
            "storage",
            f"{type(repository).__name__} does not implement "
            "halomail.tickets.repository.QuarantineAdmin (get_quarantine, delete_quarantine), "
            "which this command needs",
        )
    return repository


def _error(message: str) -> None:
    print(f"halomail: quarantine: {message}", file=sys.stderr)


def release_record(repository: TicketRepository, entry_id: int) -> dict[str, Any] | None:
    """What came of releasing quarantined email ``entry_id``, or ``None`` if it was not."""
    raw = repository.get_state(RELEASE_STATE.format(id=entry_id))
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# -- list ------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace, *, opened: Opener) -> int:
    with opened(args) as repository:
        entries = browsing(repository).list_quarantine(limit=args.limit)
        released = {e.id: release_record(repository, e.id) for e in entries}
    if args.json:
        print(json.dumps([_entry_json(e, released[e.id]) for e in entries], indent=2))
    elif not entries:
        print("the quarantine is empty")
    else:
        for e in entries:
            after = _released_line(released[e.id])
            print(
                f"{e.id:>5}  {e.created_at:%Y-%m-%d %H:%M}  {e.mailbox}  {e.reason}  "
                f"{e.message_id or '-'}  {e.detail}" + (f"  [{after}]" if after else "")
            )
    return EXIT_OK


def _entry_json(entry: QuarantineEntry, released: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": entry.id,
        "mailbox": entry.mailbox,
        "reason": entry.reason,
        "detail": entry.detail,
        "message_id": entry.message_id,
        "size": len(entry.raw),
        "created_at": entry.created_at.isoformat(),
        "released": released,
    }


def _released_line(record: dict[str, Any] | None) -> str:
    if record is None:
        return ""
    ticket = f" ticket {record['ticket_id']}" if record.get("ticket_id") else ""
    return f"released {record.get('at', '')[:16]}: {record.get('outcome')}{ticket}"


# -- show and export ----------------------------------------------------------------------


def _entry(args: argparse.Namespace, opened: Opener) -> tuple[QuarantineEntry | None, Any]:
    with opened(args) as repository:
        entry = _admin(repository).get_quarantine(args.id)
        released = release_record(repository, args.id) if entry is not None else None
    if entry is None:
        _error(f"no quarantined email {args.id}")
    return entry, released


def _cmd_show(args: argparse.Namespace, *, opened: Opener) -> int:
    entry, released = _entry(args, opened)
    if entry is None:
        return EXIT_PROBLEMS
    headers, text, more = _readable(entry.raw)
    if args.json:
        data = _entry_json(entry, released)
        data |= {"headers": [list(h) for h in headers], "text": text, "text_cut": more}
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"Quarantined email {entry.id}: {entry.reason}")
    when = f"{entry.created_at:%Y-%m-%d %H:%M} UTC"
    print(f"  mailbox {entry.mailbox}, {when}, {len(entry.raw)} bytes")
    print(f"  Message-ID {entry.message_id or '-'}")
    if entry.detail:
        print(f"  {entry.detail}")
    if released is not None:
        print(f"  {_released_line(released)}")
    if not entry.raw:
        print("\nThe original was not kept (see above for where it is).")
        return EXIT_OK
    print()
    for name, value in headers:
        print(f"{name}: {value[:_HEADER_CHARS]}")
    print()
    print(text)
    if more:
        print(f"\n[... {more} more characters: halomail quarantine export {entry.id}]")
    return EXIT_OK


def _readable(raw: bytes) -> tuple[list[tuple[str, str]], str, int]:
    """The email's first headers, its text (bounded), and how many characters were cut.

    The parser bounds its own work (size, parts, nesting), so a hostile email costs
    no more here than it did when it was quarantined.
    """
    if not raw:
        return [], "", 0
    email = parse_email(raw)
    text = email.text.strip()
    return list(email.headers[:_HEADERS_SHOWN]), text[:_TEXT_CHARS], max(0, len(text) - _TEXT_CHARS)


def _cmd_export(args: argparse.Namespace, *, opened: Opener) -> int:
    entry, _released = _entry(args, opened)
    if entry is None:
        return EXIT_PROBLEMS
    if not entry.raw:
        _error(f"{entry.id}: the original was not kept: {entry.detail}")
        return EXIT_PROBLEMS
    if args.output is not None:
        args.output.write_bytes(entry.raw)
        print(f"wrote {len(entry.raw)} bytes to {args.output}", file=sys.stderr)
        return EXIT_OK
    out = _binary_stdout()
    if out.isatty():
        _error("export writes the email's bytes: redirect it (> mail.eml) or use -o FILE")
        return EXIT_USAGE
    out.write(entry.raw)
    out.flush()
    return EXIT_OK


def _binary_stdout() -> BinaryIO:
    """Standard output's bytes, under the command's terminal-safe text wrapper."""
    stream = getattr(sys.stdout, "raw_stream", sys.stdout)
    return cast(BinaryIO, stream.buffer)


# -- delete -----------------------------------------------------------------------------


def _cmd_delete(args: argparse.Namespace, *, opened: Opener) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            _error(f"delete {args.id}: not asked on a terminal; add --yes to delete it")
            return EXIT_USAGE
        answer = input(f"Delete quarantined email {args.id} and its bytes? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    with opened(args) as repository:
        deleted = _admin(repository).delete_quarantine(args.id)
    if not deleted:
        _error(f"no quarantined email {args.id}")
        return EXIT_PROBLEMS
    print(f"deleted quarantined email {args.id}")
    return EXIT_OK


# -- release ----------------------------------------------------------------------------


class ReleasedDedupe:
    """The configured repository, with one email's dedupe key set aside for its release.

    Every call goes to the repository, but reads and writes of ``key`` (the released
    email's first record, *quarantined*) go to ``key`` + :data:`RELEASED_SUFFIX`. The
    pipeline finds its attributes by name, as it does any host's repository.

    Args:
        repository: The configured repository.
        key: The dedupe key the quarantined email was recorded under.
    """

    def __init__(self, repository: TicketRepository, key: str) -> None:
        self._repository = repository
        self._key = key

    def _aside(self, key: str) -> str:
        return key + RELEASED_SUFFIX if key == self._key else key

    def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The record of ``key``; for the released key, its release's record."""
        return self._repository.get_dedupe(self._aside(key))

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Record ``record``; the released key's record is kept under its own key."""
        self._repository.record_dedupe(attrs.evolve(record, key=self._aside(record.key)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repository, name)


def _cmd_release(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    repository = app.open_repository(config)
    try:
        return _release(args, config, repository)
    finally:
        close = getattr(repository, "close", None)
        if callable(close):
            close()


def _release(args: argparse.Namespace, config: Config, repository: TicketRepository) -> int:
    entry = _admin(repository).get_quarantine(args.id)
    if entry is None:
        _error(f"no quarantined email {args.id}")
        return EXIT_PROBLEMS
    if not entry.raw and release_record(repository, entry.id) is None:
        _error(f"{entry.id}: the original was not kept, nothing to release: {entry.detail}")
        return EXIT_PROBLEMS
    record, again = release(config, repository, entry)
    _report(args, entry, record, again=again)
    return EXIT_OK


def release(
    config: Config, repository: TicketRepository, entry: QuarantineEntry
) -> tuple[dict[str, Any], bool]:
    """Release quarantined ``entry``: process its bytes again, once, and record what came of it.

    The release of ``halomail quarantine release``, for other front ends (the Django
    admin's action) to share.

    Args:
        config: The configuration whose mailbox the entry came from.
        repository: Where the entry, and the tickets, live.
        entry: The quarantined email; its original bytes must have been kept.

    Returns:
        The release's record (``at``, ``outcome``, ``ticket_id``, ``reason``, ``rule``),
        and whether it was released already (then nothing was done).
    """
    earlier = release_record(repository, entry.id)
    if earlier is not None:
        return earlier, True
    outcome = _process_again(config, repository, entry)
    record = {
        "at": utcnow().isoformat(),
        "outcome": outcome.outcome.value,
        "ticket_id": outcome.ticket_id,
        "reason": outcome.reason.value if outcome.reason is not None else None,
        "rule": outcome.rule,
    }
    repository.set_state(RELEASE_STATE.format(id=entry.id), json.dumps(record))
    return record, False


def _process_again(
    config: Config, repository: TicketRepository, entry: QuarantineEntry
) -> ProcessingOutcome:
    """One pass of the pipeline over the entry's bytes, as if its mailbox fetched it now.

    The mailbox's connector is swapped for one in memory: disposing of the email must
    not touch the real mailbox, which may hold another email under the same reference.
    """
    aside = entry.dedupe_key or ""
    target = cast(TicketRepository, ReleasedDedupe(repository, aside))
    with app.build_processor(config, repository=target) as processor:
        mailbox = next((m for m in processor.mailboxes if m.name == entry.mailbox), None)
        if mailbox is None:
            raise ConfigError(
                "mailboxes", f"no enabled mailbox named {entry.mailbox!r} to release into"
            )
        memory = MemoryConnector(mailbox.name, [entry.raw])  # holds it under ref "1"
        fetched = FetchedMessage("1", entry.raw, len(entry.raw))
        return processor.process_message(attrs.evolve(mailbox, connector=memory), fetched)


def _report(
    args: argparse.Namespace, entry: QuarantineEntry, record: dict[str, Any], *, again: bool
) -> None:
    if args.json:
        print(json.dumps({"event": "released", "id": entry.id, "again": again, **record}))
        return
    if again:
        print(f"quarantined email {entry.id} was released already: nothing done")
    print(f"quarantined email {entry.id}: {_released_line(record)}")
    if not again and record.get("outcome") in ("created", "updated"):
        print("any acknowledgement is queued: the next `halomail run` sends it")
