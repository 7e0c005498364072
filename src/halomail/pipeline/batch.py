"""Group commit: several emails of one mailbox, one transaction for their outcomes.

A durable commit costs more than most emails' statements, so a mailbox's emails are
taken a batch at a time (``[processing] batch_size``):

1. their attempt records (:mod:`halomail.pipeline.attempts`) are written in one
   transaction and committed, before any of them is parsed;
2. they are parsed, outside the repository's guard;
3. each is decided and applied, in order, inside **one** transaction that also ends
   their attempts, and that commits or rolls back as a whole;
4. only then does the caller dispose of them in their mailbox.

Exactly-once holds as it does for one email: the dedupe records are in the same
transaction as the tickets, so a process that dies before the commit leaves nothing
of the batch but its attempts, and the next run processes the emails again. Emails
of one batch see each other (one connection, one transaction): a second email with
the same Message-ID is a duplicate. A copy of the very same bytes ends the batch
before it instead (its attempt would count as the original's, see
:func:`~halomail.pipeline.attempts.begin_many`), and is processed alone after the
commit, a duplicate too.

What is not ordinary goes one email at a time, through
:meth:`~halomail.pipeline.unit.UnitOfWork.run_begun`, exactly as before batching:

- an email whose attempt finds an earlier, unfinished one (the process ended while a
  batch held it). It closes the batch, and the emails behind it are not begun yet: a
  poison email ends the process alone next time and is quarantined after its second
  crash, while the innocent emails of its batch are each counted once;
- an email too large to read, or fetched again after its ``repeated-crash``
  quarantine;
- every email of a batch whose transaction failed (a parse error, a lost race with
  another runner, a busy database, anything): the batch is rolled back and each email
  is processed alone, so one bad email never takes its neighbours down with it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import attrs

from halomail.backends.base import FetchedMessage
from halomail.errors import TransientRepositoryError
from halomail.inbound.models import InboundEmail
from halomail.inbound.parse import parse_email
from halomail.pipeline import attempts
from halomail.pipeline.acknowledge import UNDELIVERABLE
from halomail.pipeline.apply import apply
from halomail.pipeline.attempts import Attempt
from halomail.pipeline.context import Context
from halomail.pipeline.decide import copy_key, decide, dedupe_key, legacy_key
from halomail.pipeline.loops import repeat_key
from halomail.pipeline.results import ProcessingOutcome
from halomail.pipeline.settings import Mailbox
from halomail.pipeline.unit import Guard, UnitOfWork
from halomail.tickets.models import BatchKeys

__all__ = [
    "Batches",
    "batch_keys",
    "content_key",
    "report_each",
    "run_batch",
    "until_broken",
]

log = logging.getLogger(__name__)


@attrs.frozen
class _Begun:
    """An email of the batch whose attempt is recorded."""

    fetched: FetchedMessage
    attempt: Attempt | None

    @property
    def ordinary(self) -> bool:
        """True when nothing about its attempt asks for it to go alone."""
        attempt = self.attempt
        return attempt is None or (attempt.earlier == 0 and not attempt.quarantined_before)


def run_batch(
    unit: UnitOfWork, mailbox: Mailbox, batch: Sequence[FetchedMessage], guard: Guard
) -> list[ProcessingOutcome]:
    """Process ``batch`` (emails of ``mailbox``, in mailbox order) and commit their
    outcomes, in one transaction when they are ordinary; never raises.

    Returns:
        One outcome per email, in order. The caller disposes of each email afterwards.
    """
    if len(batch) <= 1 or unit.owes_attempts or any(f.too_large for f in batch):
        return [unit.run(mailbox, fetched, guard) for fetched in batch]
    try:
        with guard:
            begun = _begin(unit, mailbox, batch)
    except TransientRepositoryError as exc:
        return unit.retry_later(mailbox, [(fetched, None) for fetched in batch], exc, guard)
    except Exception as exc:  # noqa: BLE001 - nothing was begun: each email goes alone
        log.info("mailbox %s: batch not begun (%s); one email at a time", mailbox.name, exc)
        return [unit.run(mailbox, fetched, guard) for fetched in batch]
    ordinary = list(itertools.takewhile(lambda b: b.ordinary, begun))
    outcomes = _commit_together(unit, mailbox, ordinary, guard)
    for alone in begun[len(ordinary) :]:
        # The email whose attempt found an earlier one: alone, its attempt recorded.
        outcomes.append(unit.run_begun(mailbox, alone.fetched, guard, alone.attempt))
    for fetched in batch[len(begun) :]:
        outcomes.append(unit.run(mailbox, fetched, guard))
    return outcomes


def _begin(unit: UnitOfWork, mailbox: Mailbox, batch: Sequence[FetchedMessage]) -> list[_Begun]:
    """Record the batch's attempts in one transaction, stopping after the first email
    that is not ordinary (it is processed alone; those behind it are not begun)."""
    repository = unit.ctx.repository
    if not attempts.keeps_attempts(repository):
        return [_Begun(fetched, None) for fetched in batch]
    with repository.transaction():
        begun = attempts.begin_many(repository, mailbox.name, batch, unit.ctx.clock())
    return [_Begun(fetched, attempt) for fetched, attempt in zip(batch, begun, strict=False)]


def _commit_together(
    unit: UnitOfWork, mailbox: Mailbox, begun: Sequence[_Begun], guard: Guard
) -> list[ProcessingOutcome]:
    """Parse, decide and apply ``begun`` in one transaction; on any failure roll it all
    back and process each email alone."""
    if not begun:
        return []
    try:
        parsed = [(b, parse_email(b.fetched.raw, limits=unit.ctx.settings.limits)) for b in begun]
        with guard:
            return _apply_all(unit, mailbox, parsed)
    except TransientRepositoryError as exc:
        # A busy or unreachable database: alone, each email would wait for it again.
        return unit.retry_later(mailbox, [(b.fetched, b.attempt) for b in begun], exc, guard)
    except Exception as exc:  # noqa: BLE001 - rolled back: each email goes alone
        log.info(
            "mailbox %s: a batch of %d rolled back (%s: %s); one email at a time",
            mailbox.name,
            len(begun),
            type(exc).__name__,
            exc,
        )
        return [unit.run_begun(mailbox, b.fetched, guard, b.attempt) for b in begun]


def _apply_all(
    unit: UnitOfWork, mailbox: Mailbox, parsed: Sequence[tuple[_Begun, InboundEmail]]
) -> list[ProcessingOutcome]:
    """Decide and apply each email, and end its attempt, all in one transaction."""
    ctx = unit.ctx
    outcomes: list[ProcessingOutcome] = []
    keyed = [(b, email, *dedupe_key(mailbox, email, b.fetched.raw)) for b, email in parsed]
    # Each email's content key (the loop cap's), worked out once for the batch's read
    # and handed to its decision; a repository read email by email is asked lazily.
    contents: list[str | None] = [None] * len(keyed)
    with ctx.repository.transaction():
        prepare = getattr(ctx.repository, "prepare_batch", None)
        if callable(prepare):
            contents = [content_key(mailbox, email) for _, email, _, _ in keyed]
            emails = [(email, key, fingerprint) for _, email, key, fingerprint in keyed]
            prepare(batch_keys(ctx, mailbox, emails, contents))
        for (begun, email, key, fingerprint), content in zip(keyed, contents, strict=True):
            decision = decide(ctx, mailbox, email, key, fingerprint, content_key=content)
            outcomes.append(apply(ctx, mailbox, begun.fetched, email, key, fingerprint, decision))
            attempts.finish(ctx.repository, begun.attempt)
    return outcomes


def content_key(mailbox: Mailbox, email: InboundEmail) -> str | None:
    """``email``'s content key (:func:`~halomail.pipeline.loops.repeat_key`), or ``None``
    for an email decided without it (quarantined, or without a sender)."""
    if email.quarantine_reason or email.sender is None:
        return None
    return repeat_key(mailbox.name, email)


def batch_keys(
    ctx: Context,
    mailbox: Mailbox,
    emails: Sequence[tuple[InboundEmail, str, str]],
    contents: Sequence[str | None],
) -> BatchKeys:
    """What deciding ``emails`` (each with its dedupe key) will ask the repository: their
    dedupe keys (and their copies' in other mailboxes), the state of their content and
    their senders, their senders' mail.

    Args:
        ctx: The processor's parts.
        mailbox: The mailbox they came from.
        emails: Each email, with its dedupe key and fingerprint.
        contents: Each email's :func:`content_key`, in the same order.
    """
    dedupe: list[str] = []
    state: list[str] = []
    senders: list[str] = []
    for (email, key, fingerprint), content in zip(emails, contents, strict=True):
        dedupe.append(key)
        legacy = legacy_key(mailbox, email)
        if legacy is not None:
            dedupe.append(legacy)
        copy = copy_key(ctx, email, fingerprint)
        if copy is not None:
            dedupe.append(copy)
        if content is None or email.sender is None:
            continue  # decided without the state or the sender's history
        state.append(content)
        state.append(UNDELIVERABLE + email.sender.normalized)
        senders.append(email.sender.normalized)
    settings = ctx.settings
    widest = max(settings.ack_throttle_window, settings.loop_window)
    return BatchKeys(tuple(dedupe), tuple(state), tuple(senders), ctx.clock() - widest)


class Batches:
    """Gathers a mailbox's emails into batches bounded in count and in age.

    A batch is ready when it holds ``size`` emails, or when its first email has waited
    ``max_wait`` for the others: a slow mailbox (a server that hands over one email a
    second) does not hold its first emails uncommitted for long. The age is checked as
    each email arrives; the caller takes what is left when the mailbox has no more.

    Args:
        size: The most emails in one batch.
        max_wait: The longest the first email of a batch waits for the rest.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        size: int,
        max_wait: dt.timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._max_wait = max_wait.total_seconds()
        self._clock = clock
        self._emails: list[FetchedMessage] = []
        self._since = 0.0

    def add(self, fetched: FetchedMessage) -> list[FetchedMessage] | None:
        """Add ``fetched``; return the batch when it is ready (and start a new one)."""
        now = self._clock()
        if not self._emails:
            self._since = now
        self._emails.append(fetched)
        if len(self._emails) >= self._size or now - self._since >= self._max_wait:
            return self.take()
        return None

    def take(self) -> list[FetchedMessage]:
        """The emails gathered so far (possibly none); the next batch starts empty."""
        emails, self._emails = self._emails, []
        return emails


def until_broken(
    messages: Iterator[FetchedMessage], broken: list[Exception]
) -> Iterator[FetchedMessage]:
    """``messages`` until the connector fails; the failure goes into ``broken``, so that
    the emails fetched before it are committed (their batch) before it is reported."""
    try:
        yield from messages
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller after the batch
        broken.append(exc)


def report_each(
    outcomes: Sequence[ProcessingOutcome],
    on_outcome: Callable[[ProcessingOutcome], None] | None,
) -> None:
    """Call ``on_outcome`` with each outcome of a committed, disposed-of batch, in order.

    A caller may stop the pass from ``on_outcome`` (SIGTERM, by raising). The stop waits
    for the batch's end: every outcome is reported before the first exception raised is
    raised again, so a pass stops between batches, with every email of the batch it
    committed disposed of and reported.
    """
    if on_outcome is None:
        return
    stopped: BaseException | None = None
    for outcome in outcomes:
        try:
            on_outcome(outcome)
        except BaseException as exc:  # noqa: BLE001 - raised again once all are reported
            stopped = stopped or exc
    if stopped is not None:
        raise stopped
