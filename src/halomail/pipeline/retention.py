"""Ledger retention: the old rows of the ledger forgotten, never an email still there.

Every email leaves a dedupe record, and every acknowledgement a row that the sending
limits count; an MSP's thousand mailboxes write hundreds of thousands a day. With
``[processing] ledger_retention_days`` and a repository that implements
:class:`~halomail.tickets.repository.LedgerRetention`, :func:`purge` forgets the rows
older than that, once a day.

A dedupe record is what keeps an email that is fetched again from becoming a second
ticket, so one may go only when its email cannot come back:

- An email is fetched again when its disposal failed (a folder it may not be moved to)
  or when someone put it back. Each time, its record is marked *seen*
  (:func:`mark_seen`, at most once a day), and retention counts from the last time it
  was seen: an email that stays in its mailbox keeps its record for as long as it stays.
- A mailbox whose processed mail stays where it is (an mbox import with ``processed =
  "keep"``, POP3 with ``leave_on_server``) keeps every record of its own: the
  connector says so with ``keeps_processed_mail``.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from halomail.pipeline.context import Context
from halomail.pipeline.settings import Mailbox, ProcessorSettings
from halomail.tickets.models import DedupeRecord

__all__ = [
    "PURGED_AT",
    "PURGE_EVERY",
    "SEEN_EVERY",
    "keeps_retention",
    "kept_prefixes",
    "mark_seen",
    "purge",
    "purge_when_due",
]

log = logging.getLogger(__name__)

#: A record whose email is fetched again is marked seen at most once in this long: a
#: mailbox whose disposals keep failing fetches the same emails at every poll.
SEEN_EVERY = dt.timedelta(days=1)
#: The state key holding when the ledger was last purged, shared by every runner.
PURGED_AT = "ledger:purged-at"
#: How often the ledger is purged.
PURGE_EVERY = dt.timedelta(days=1)
#: Rows a table per statement: each statement holds the write lock only briefly.
_CHUNK = 5_000
#: Statements per purge at most; what is left waits for the next day's.
_MAX_CHUNKS = 200


def keeps_retention(repository: Any) -> bool:
    """True when ``repository`` has :class:`LedgerRetention`'s two methods."""
    return callable(getattr(repository, "touch_dedupe", None)) and callable(
        getattr(repository, "purge_ledger", None)
    )


def mark_seen(ctx: Context, record: DedupeRecord | None) -> None:
    """``record``'s email was fetched again: keep the record as long as it stays.

    Nothing is written without retention, for a record marked within the last
    :data:`SEEN_EVERY`, or for a repository without :class:`LedgerRetention`. The
    write takes part in the open transaction.
    """
    if record is None or ctx.settings.ledger_retention is None:
        return
    repository: Any = ctx.repository
    now = ctx.clock()
    if now - record.created_at < SEEN_EVERY or not keeps_retention(repository):
        return
    repository.touch_dedupe(record.key, now=now)


def kept_prefixes(mailboxes: Sequence[Mailbox]) -> tuple[str, ...]:
    """The key prefixes of the mailboxes whose processed mail stays where it is."""
    return tuple(
        f"{mailbox.name}\x1f"
        for mailbox in mailboxes
        if getattr(mailbox.connector, "keeps_processed_mail", False)
    )


def purge(
    repository: Any, retention: dt.timedelta, mailboxes: Sequence[Mailbox], now: dt.datetime
) -> int:
    """Forget the ledger's rows older than ``retention``, a chunk at a time.

    Each chunk commits on its own, so other runners write between them. Returns how
    many rows went.
    """
    before = now - retention
    keep = kept_prefixes(mailboxes)
    total = 0
    for _ in range(_MAX_CHUNKS):
        gone = int(repository.purge_ledger(before=before, keep=keep, limit=_CHUNK))
        total += gone
        if gone == 0:
            break
    if total:
        log.info("ledger: forgot %d rows older than %s", total, before.isoformat())
    return total


def purge_when_due(
    repository: Any,
    settings: ProcessorSettings,
    mailboxes: Sequence[Mailbox],
    now: dt.datetime,
    *,
    force: bool = False,
) -> int:
    """:func:`purge` when a day has passed since the last purge of ``repository`` (by
    any runner: the time is kept in its state), or with ``force``; returns the rows
    that went. Nothing happens without retention or :class:`LedgerRetention`."""
    retention = settings.ledger_retention
    if retention is None or not keeps_retention(repository):
        return 0
    with repository.transaction():
        if not force and not _due(repository.get_state(PURGED_AT), now):
            return 0
        repository.set_state(PURGED_AT, now.isoformat())
    return purge(repository, retention, mailboxes, now)


def _due(last: str | None, now: dt.datetime) -> bool:
    """True when the ledger was last purged (``last``, ISO text) a day or more ago."""
    try:
        return last is None or now - dt.datetime.fromisoformat(last) >= PURGE_EVERY
    except (TypeError, ValueError):  # not a time with its zone: purge, and write one
        return True
