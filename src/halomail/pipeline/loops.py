"""The long-window loop cap: identical emails from one sender stop opening tickets.

A crude auto-responder (no automatic headers, a fixed subject and body) answering our
acknowledgements is capped in rate by the acknowledgement throttle, but not in total.
Here each new ticket counts its *content*: the sender, the subject and the body text.
After :attr:`~halomail.pipeline.settings.ProcessorSettings.loop_repeat_count` tickets
with the same content within ``loop_window``, the next copies are ``ignored`` with the
reason ``loop-suspected`` until the window that the first one opened has passed.

The count is a small state key in the repository (``loop:<sha256>``), read once by the
decide step, which hands the updated count to the apply step in the decision; it is
written with the ticket, in the unit's one transaction: one writer at a time, so two
runners never both take the last place.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

import attrs

from halomail.inbound.models import InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.handlers import RuleHandler
from halomail.pipeline.handlers.human import HumanHandler

__all__ = [
    "LOOP_STATE",
    "RepeatCheck",
    "RepeatCount",
    "check_repeats",
    "counts_repeats",
    "repeat_key",
]

log = logging.getLogger(__name__)

#: The state key prefix of a content's repeat count.
LOOP_STATE = "loop:"


@attrs.frozen
class RepeatCount:
    """How many tickets one content opened since ``since``, the start of its window."""

    since: dt.datetime
    count: int

    def encode(self) -> str:
        """The state value: ``<count> <ISO start>``."""
        return f"{self.count} {self.since.isoformat()}"

    @classmethod
    def decode(cls, value: str | None) -> RepeatCount | None:
        """The count a state value holds, or ``None`` for none (or one unreadable)."""
        if not value:
            return None
        count, _, since = value.partition(" ")
        try:
            return cls(dt.datetime.fromisoformat(since), int(count))
        except ValueError:
            return None


def repeat_key(mailbox: str, email: InboundEmail) -> str:
    """The state key of ``email``'s content in ``mailbox``: its sender, subject and body.

    The Message-ID and the date are left out on purpose: they are what a responder
    changes from one copy to the next. The mailbox is in: a loop runs between one of
    our mailboxes and the responder, and one email sent to several mailboxes is not one.
    """
    digest = hashlib.sha256()
    sender = email.sender.normalized if email.sender is not None else ""
    subject = " ".join(email.subject.casefold().split())
    for part in (mailbox, sender, subject):
        digest.update(part.encode("utf-8", "replace") + b"\x00")
    _hash_stripped(digest, email.text)
    digest.update(b"\x00")
    return LOOP_STATE + digest.hexdigest()


#: Characters of a text encoded (or stripped) at a time by :func:`_hash_stripped`.
_CHUNK = 1 << 16


def _hash_stripped(digest: hashlib._Hash, text: str) -> None:
    """Feed ``text.strip()`` to ``digest`` as UTF-8 (unencodable characters as ``?``),
    without a copy of the text: a 25 MB body costs a chunk of memory, not two copies.

    The digest is the one of the whole stripped text encoded at once: UTF-8 encodes each
    character on its own, and the ``replace`` handler turns each lone surrogate into one
    ``?`` wherever a chunk ends.
    """
    start, end = 0, len(text)
    # Leading and trailing whitespace, a chunk at a time (str.isspace's whitespace).
    while start < end:
        chunk = text[start : min(start + _CHUNK, end)]
        kept = chunk.lstrip()
        start += len(chunk) - len(kept)
        if kept:
            break
    while end > start:
        chunk = text[max(end - _CHUNK, start) : end]
        kept = chunk.rstrip()
        end -= len(chunk) - len(kept)
        if kept:
            break
    for offset in range(start, end, _CHUNK):
        digest.update(text[offset : min(offset + _CHUNK, end)].encode("utf-8", "replace"))


def counts_repeats(handler: RuleHandler | None) -> bool:
    """True when tickets opened with ``handler`` (``None``: no rule) count for the cap.

    Only the tickets a person's email opens do: alerts, service reports, file transfers
    and inventory reports repeat by nature, and have their own rules for it.
    """
    return handler is None or isinstance(handler, HumanHandler)


def _current(ctx: Context, key: str, now: dt.datetime) -> RepeatCount | None:
    """The count of ``key`` in its window, or ``None`` when it has none or it has passed."""
    counted = RepeatCount.decode(ctx.repository.get_state(key))
    if counted is None or now - counted.since >= ctx.settings.loop_window:
        return None
    return counted


@attrs.frozen
class RepeatCheck:
    """What the cap says of one email's content, read once by the decide step.

    Args:
        suspected: The content already opened the most tickets its window allows.
        state: The state key and the count to write when the email opens a ticket.
    """

    suspected: bool
    state: tuple[str, str]


def check_repeats(
    ctx: Context, mailbox: str, email: InboundEmail, key: str | None = None
) -> RepeatCheck:
    """Whether ``email``'s content is a suspected loop, and its count after one more ticket.

    Reads only; a suspected loop is warned about once per window.

    Args:
        ctx: The processor's parts.
        mailbox: The mailbox's name.
        email: The email.
        key: Its :func:`repeat_key` in ``mailbox``, when the caller has it (``None``:
            worked out here).
    """
    now = ctx.clock()
    if key is None:
        key = repeat_key(mailbox, email)
    counted = _current(ctx, key, now)
    if counted is None:
        updated = RepeatCount(now, 1)
    else:
        updated = attrs.evolve(counted, count=counted.count + 1)
    suspected = counted is not None and counted.count >= ctx.settings.loop_repeat_count
    if suspected:
        ctx.loop_warnings.warn(key, updated.since + ctx.settings.loop_window, email)
    return RepeatCheck(suspected, (key, updated.encode()))
