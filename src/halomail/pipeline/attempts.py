"""The attempt record: an email that kills the process cannot block its mailbox.

Whatever ends the process on one email (memory, a native crash, SIGKILL) ends it
again on the next run, since the email is still there. So before an email is
parsed, an attempt is recorded for it and committed on its own; the transaction
that commits the email's outcome forgets it. An email that finds two unfinished
attempts of its own ended the process twice: it is quarantined as
``repeated-crash`` with its bytes, without being parsed again, and the mailbox
moves on. One crash alone is retried, since it may have been the machine's fault.

The identity is the mailbox and the SHA-256 of the raw bytes: it is the same on a
re-fetch from every connector (an IMAP UID, a POP3 UIDL or a file name is not).
Only a repository with ``begin_attempt`` and ``finish_attempt``
(:class:`~halomail.tickets.repository.AttemptLedger`) keeps the record; with any
other, nothing here writes anything.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import attrs

from halomail.backends.base import FetchedMessage
from halomail.pipeline.results import Outcome, Reason
from halomail.tickets.models import DedupeRecord, NewQuarantine

__all__ = [
    "CRASHES_BEFORE_QUARANTINE",
    "Attempt",
    "begin",
    "begin_many",
    "finish",
    "keeps_attempts",
    "keys",
    "let_go",
    "quarantine_crashed",
    "settle",
]

log = logging.getLogger(__name__)

CRASHES_BEFORE_QUARANTINE = 2
"""Unfinished attempts after which an email is quarantined instead of parsed again."""


@attrs.frozen
class Attempt:
    """One attempt at processing an email, recorded before it is parsed.

    Args:
        key: The attempt's key: the mailbox and the SHA-256 of the email's bytes.
        quarantine_key: The dedupe key the email is quarantined under when it crashed.
        earlier: How many earlier attempts were started and never finished.
        quarantined_before: The email was quarantined as ``repeated-crash`` already (it
            is fetched again): no attempt was recorded, and it is not to be parsed.
    """

    key: str
    quarantine_key: str
    earlier: int
    quarantined_before: bool = False

    @property
    def crashed_too_often(self) -> bool:
        """True when the email ended the process often enough not to be parsed again."""
        return self.earlier >= CRASHES_BEFORE_QUARANTINE


def keys(mailbox: str, raw: bytes) -> tuple[str, str]:
    """The attempt key and the ``repeated-crash`` dedupe key of ``raw`` in ``mailbox``."""
    digest = hashlib.sha256(raw).hexdigest()
    return f"{mailbox}\x1fattempt:{digest}", f"{mailbox}\x1fcrash:{digest}"


def keeps_attempts(repository: Any) -> bool:
    """True when ``repository`` has the attempt ledger's two methods."""
    return callable(getattr(repository, "begin_attempt", None)) and callable(
        getattr(repository, "finish_attempt", None)
    )


def begin(
    repository: Any, mailbox: str, fetched: FetchedMessage, now: dt.datetime
) -> Attempt | None:
    """Record an attempt at ``fetched``, committed on its own; ``None`` without a ledger.

    An email quarantined as ``repeated-crash`` before (fetched again) gets no new
    attempt: the answer says :attr:`Attempt.quarantined_before`.

    Raises:
        TransientRepositoryError: The repository could not record it (the email is
            left for the next run, unparsed).
    """
    if not keeps_attempts(repository):
        return None
    return _begin_one(repository, mailbox, fetched, now, keys(mailbox, fetched.raw))


def _begin_one(
    repository: Any,
    mailbox: str,
    fetched: FetchedMessage,
    now: dt.datetime,
    pair: tuple[str, str],
) -> Attempt:
    """:func:`begin`, the email's keys computed already."""
    key, quarantine_key = pair
    if repository.get_dedupe(quarantine_key) is not None:
        return Attempt(key, quarantine_key, 0, quarantined_before=True)
    earlier = int(repository.begin_attempt(key, now=now))
    if earlier:
        _warn_unfinished(mailbox, fetched, earlier)
    return Attempt(key, quarantine_key, earlier)


def _warn_unfinished(mailbox: str, fetched: FetchedMessage, earlier: int) -> None:
    log.warning(
        "mailbox %s ref %s: %d earlier attempt(s) at this email never finished "
        "(the process ended while processing it)",
        mailbox,
        fetched.ref,
        earlier,
    )


def begin_many(
    repository: Any, mailbox: str, batch: Sequence[FetchedMessage], now: dt.datetime
) -> list[Attempt | None]:
    """:func:`begin` for each email of ``batch`` in order, inside the caller's transaction,
    stopping after the first that is not ordinary (an earlier attempt, or quarantined
    before): the emails behind it are not begun.

    Nor is a copy of an email begun before it (the very same bytes, so the same attempt
    key), or anything behind the copy: begun with its original, the copy's attempt would
    be counted as the original's, and one crash of the batch would count as two. The
    copy waits for the batch's commit and is processed alone, a duplicate.

    A repository with ``begin_attempts`` (:class:`~halomail.tickets.repository.GroupCommit`)
    is asked once for the batch; any other, email by email.
    """
    if not keeps_attempts(repository):
        return [None] * len(batch)
    pairs = [keys(mailbox, fetched.raw) for fetched in batch]
    distinct = _before_a_copy(pairs)
    batch, pairs = batch[:distinct], pairs[:distinct]
    many = getattr(repository, "begin_attempts", None)
    if not callable(many):
        begun: list[Attempt | None] = []
        for fetched, pair in zip(batch, pairs, strict=True):
            attempt = _begin_one(repository, mailbox, fetched, now, pair)
            begun.append(attempt)
            if attempt.earlier or attempt.quarantined_before:
                break
        return begun
    answers = many(pairs, now=now)
    attempts: list[Attempt | None] = []
    for fetched, (key, quarantine_key), earlier in zip(batch, pairs, answers, strict=False):
        if earlier is None:
            attempts.append(Attempt(key, quarantine_key, 0, quarantined_before=True))
            continue
        if earlier:
            _warn_unfinished(mailbox, fetched, earlier)
        attempts.append(Attempt(key, quarantine_key, int(earlier)))
    return attempts


def _before_a_copy(pairs: Sequence[tuple[str, str]]) -> int:
    """How many of ``pairs`` come before the first whose attempt key repeats an earlier one."""
    seen: set[str] = set()
    for index, (key, _quarantine_key) in enumerate(pairs):
        if key in seen:
            return index
        seen.add(key)
    return len(pairs)


def finish(repository: Any, attempt: Attempt | None) -> None:
    """Forget ``attempt``; called inside the transaction that commits the outcome."""
    if attempt is not None:
        repository.finish_attempt(attempt.key)


def let_go(repository: Any, attempt: Attempt | None, owed: set[str]) -> None:
    """Forget ``attempt`` after a failure that did not end the process; best effort.

    The process is alive, so this attempt must not count as a crash. When even this
    write fails (the repository is down), its key is added to ``owed``, which
    :func:`settle` clears once the repository answers again: an email caught twice by
    a database outage is not taken for one that crashed the process twice.
    """
    if attempt is None or attempt.crashed_too_often:
        return  # too many crashes already: a failure to quarantine must not reset the count
    owed.add(attempt.key)
    settle(repository, owed)


def settle(repository: Any, owed: set[str]) -> None:
    """Forget the attempts in ``owed`` (those :func:`let_go` could not), in one transaction.

    Best effort: while the repository still fails, they stay owed. A process that dies
    first leaves them counted, rightly: it did end while they were unfinished.
    """
    if not owed:
        return
    try:
        with repository.transaction():
            for key in owed:
                repository.finish_attempt(key)
    except Exception as exc:  # noqa: BLE001 - retried before the next email's attempt
        log.warning("could not clear %d attempt record(s) yet: %s", len(owed), exc)
        return
    owed.clear()


def quarantine_crashed(
    repository: Any, mailbox: str, fetched: FetchedMessage, attempt: Attempt
) -> None:
    """Quarantine an email that ended the process too often, with its bytes, unparsed.

    The entry, its dedupe record and the end of its attempts commit together.
    """
    detail = (
        f"processing this email ended the process {attempt.earlier} times "
        "(out of memory, a native crash or a kill); it was not parsed again"
    )
    log.error("mailbox %s ref %s: quarantined: %s", mailbox, fetched.ref, detail)
    with repository.transaction():
        if repository.get_dedupe(attempt.quarantine_key) is None:
            repository.quarantine(
                NewQuarantine(
                    mailbox,
                    Reason.REPEATED_CRASH.value,
                    fetched.raw,
                    detail,
                    dedupe_key=attempt.quarantine_key,
                )
            )
            repository.record_dedupe(
                DedupeRecord(attempt.quarantine_key, "", Outcome.QUARANTINED.value)
            )
        repository.finish_attempt(attempt.key)
