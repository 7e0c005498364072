"""One fetched email, one unit of work: parse → dedupe → decide → apply → outcome.

No threads here. The caller passes a *guard* (a context manager) that is held
around every use of the repository, and only then: parsing happens outside it, so
mailboxes read in threads parse at once while their writes go one at a time.
Disposing of the source email is the caller's, after :meth:`UnitOfWork.run`
returns, because only then is the outcome committed. Before parsing, the unit
records an attempt at the email (:mod:`halomail.pipeline.attempts`), so an email
that ends the process is not parsed for ever.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager

from halomail.backends.base import FetchedMessage
from halomail.errors import DuplicateKeyError, RepositoryError, TransientRepositoryError
from halomail.inbound.models import InboundEmail
from halomail.inbound.parse import parse_email
from halomail.pipeline import attempts
from halomail.pipeline.apply import apply, recorded_key
from halomail.pipeline.attempts import Attempt
from halomail.pipeline.context import Context
from halomail.pipeline.decide import (
    classify_email,
    copy_key,
    decide,
    dedupe_key,
    recorded_duplicate,
)
from halomail.pipeline.results import Decision, Outcome, ProcessingOutcome, Reason, Simulation
from halomail.pipeline.retention import mark_seen
from halomail.pipeline.settings import Mailbox
from halomail.pipeline.verdict import acknowledgement_verdict
from halomail.tickets.models import DedupeRecord, NewQuarantine

__all__ = ["Guard", "UnitOfWork"]

log = logging.getLogger(__name__)

Guard = AbstractContextManager[object]
"""Held around each use of the repository (the runner's one-writer lock)."""


def _simulated(mailbox: Mailbox, email: InboundEmail, decision: Decision) -> ProcessingOutcome:
    """The outcome ``decision`` would give, nothing written."""
    return ProcessingOutcome(
        mailbox.name,
        "simulate",
        decision.outcome,
        email.message_id,
        decision.ticket.id if decision.ticket else None,
        decision.rule,
        decision.reason,
        acknowledged=decision.acknowledge,
        subject=email.subject,
    )


class UnitOfWork:
    """Turns one fetched email into its committed outcome.

    Args:
        ctx: The processor's parts.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Attempt records of emails that failed without ending the process, which the
        # repository could not clear at the time (it was down); cleared before the next
        # email's attempt begins.
        self._owed_attempts: set[str] = set()

    @property
    def owes_attempts(self) -> bool:
        """True while attempt records the repository could not clear are waiting."""
        return bool(self._owed_attempts)

    def retry_later(
        self,
        mailbox: Mailbox,
        begun: Sequence[tuple[FetchedMessage, Attempt | None]],
        exc: TransientRepositoryError,
        guard: Guard,
    ) -> list[ProcessingOutcome]:
        """``retry`` for each email of ``begun`` after a transient repository failure,
        their attempts let go in one transaction (or owed, while the repository fails)."""
        log.warning("mailbox %s: %d email(s) will be retried: %s", mailbox.name, len(begun), exc)
        self._owed_attempts.update(
            a.key for _, a in begun if a is not None and not a.crashed_too_often
        )
        with guard:
            attempts.settle(self.ctx.repository, self._owed_attempts)
        return [
            ProcessingOutcome(
                mailbox.name,
                fetched.ref,
                Outcome.RETRY,
                reason=Reason.TRANSIENT_ERROR,
                detail=str(exc)[:500],
            )
            for fetched, _ in begun
        ]

    def run(
        self, mailbox: Mailbox, fetched: FetchedMessage, guard: Guard | None = None
    ) -> ProcessingOutcome:
        """Process ``fetched`` and commit its outcome; never raises.

        A transient repository failure gives ``retry`` (the source is to be left
        untouched); anything unexpected quarantines the email with its reason.

        Args:
            mailbox: The mailbox it came from.
            fetched: The email as the connector read it.
            guard: Held around each use of the repository (none by default).
        """
        guard = guard if guard is not None else contextlib.nullcontext()
        attempt: Attempt | None = None
        try:
            if fetched.too_large:
                with guard:
                    return self._quarantine_too_large(mailbox, fetched)
            with guard:
                attempts.settle(self.ctx.repository, self._owed_attempts)
                attempt = attempts.begin(
                    self.ctx.repository, mailbox.name, fetched, self.ctx.clock()
                )
        except Exception as exc:  # noqa: BLE001 - handled as every failure of the email is
            return self._failed(mailbox, fetched, guard, attempt, exc)
        return self.run_begun(mailbox, fetched, guard, attempt)

    def run_begun(
        self, mailbox: Mailbox, fetched: FetchedMessage, guard: Guard, attempt: Attempt | None
    ) -> ProcessingOutcome:
        """:meth:`run` for an email whose attempt is recorded already; never raises.

        Args:
            mailbox: The mailbox it came from.
            fetched: The email as the connector read it.
            guard: Held around each use of the repository.
            attempt: Its attempt, as :func:`~halomail.pipeline.attempts.begin` recorded it.
        """
        try:
            if attempt is not None and attempt.quarantined_before:
                return self._crashed_before(mailbox, fetched, guard, attempt)
            if attempt is not None and attempt.crashed_too_often:
                with guard:
                    return self._quarantine_crashed(mailbox, fetched, attempt)
            return self._run(mailbox, fetched, guard, attempt)
        except Exception as exc:  # noqa: BLE001 - handled as every failure of the email is
            return self._failed(mailbox, fetched, guard, attempt, exc)

    def _failed(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        guard: Guard,
        attempt: Attempt | None,
        exc: Exception,
    ) -> ProcessingOutcome:
        """The outcome of an email whose processing raised ``exc``: a transient repository
        failure gives ``retry`` (the source is left untouched); anything else quarantines
        the email with its reason."""
        if isinstance(exc, TransientRepositoryError):
            log.warning("mailbox %s ref %s: will retry: %s", mailbox.name, fetched.ref, exc)
            with guard:
                attempts.let_go(self.ctx.repository, attempt, self._owed_attempts)
            return ProcessingOutcome(
                mailbox.name,
                fetched.ref,
                Outcome.RETRY,
                reason=Reason.TRANSIENT_ERROR,
                detail=str(exc)[:500],
            )
        log.error(
            "mailbox %s ref %s: processing failed",
            mailbox.name,
            fetched.ref,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        with guard:
            return self._quarantine_after_error(mailbox, fetched, exc, attempt)

    def simulate(self, mailbox: Mailbox, raw: bytes, email: InboundEmail) -> ProcessingOutcome:
        """What processing ``email`` would do, and why; nothing is written.

        The caller holds the guard: deciding reads the repository.
        """
        key, fingerprint = dedupe_key(mailbox, email, raw)
        decision = decide(self.ctx, mailbox, email, key, fingerprint)
        return _simulated(mailbox, email, decision)

    def explain(self, mailbox: Mailbox, raw: bytes, email: InboundEmail) -> Simulation:
        """:meth:`simulate`, with the rules in order, the classification and why the
        email would (not) be acknowledged. The caller holds the guard."""
        classification = classify_email(self.ctx, email)
        engine = self.ctx.engine
        rules = engine.explain(email, mailbox.name, classification) if engine else None
        key, fingerprint = dedupe_key(mailbox, email, raw)
        decision = decide(self.ctx, mailbox, email, key, fingerprint)
        return Simulation(
            _simulated(mailbox, email, decision),
            rules,
            classification=classification,
            acknowledgement=acknowledgement_verdict(decision, classification, mailbox),
        )

    def _run(
        self, mailbox: Mailbox, fetched: FetchedMessage, guard: Guard, attempt: Attempt | None
    ) -> ProcessingOutcome:
        email = parse_email(fetched.raw, limits=self.ctx.settings.limits)
        key, fingerprint = dedupe_key(mailbox, email, fetched.raw)
        with guard:
            return self._commit(mailbox, fetched, email, key, fingerprint, attempt)

    def _quarantine_crashed(
        self, mailbox: Mailbox, fetched: FetchedMessage, attempt: Attempt
    ) -> ProcessingOutcome:
        attempts.quarantine_crashed(self.ctx.repository, mailbox.name, fetched, attempt)
        return ProcessingOutcome(
            mailbox.name, fetched.ref, Outcome.QUARANTINED, reason=Reason.REPEATED_CRASH
        )

    def _crashed_before(
        self, mailbox: Mailbox, fetched: FetchedMessage, guard: Guard, attempt: Attempt
    ) -> ProcessingOutcome:
        """Quarantined as ``repeated-crash`` before and fetched again: not parsed, a
        duplicate (its record marked seen, with ledger retention)."""
        if self.ctx.settings.ledger_retention is not None:
            repo = self.ctx.repository
            with guard, repo.transaction():
                mark_seen(self.ctx, repo.get_dedupe(attempt.quarantine_key))
        log.info(
            "mailbox %s ref %s: quarantined before as repeated-crash; a duplicate",
            mailbox.name,
            fetched.ref,
        )
        return ProcessingOutcome(
            mailbox.name,
            fetched.ref,
            Outcome.SKIPPED,
            reason=Reason.DUPLICATE,
            recorded=Outcome.QUARANTINED,
        )

    def _commit(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
        attempt: Attempt | None,
    ) -> ProcessingOutcome:
        """Decide and apply in one transaction, which also ends the email's attempt.

        Deciding inside the transaction means two processors racing on one mailbox
        cannot both create a ticket for the same email; when another runner commits
        it first anyway, our transaction is rolled back and the email is a duplicate.
        """
        repo = self.ctx.repository
        decision: Decision | None = None
        try:
            with repo.transaction():
                decision = decide(self.ctx, mailbox, email, key, fingerprint)
                outcome = apply(self.ctx, mailbox, fetched, email, key, fingerprint, decision)
                attempts.finish(repo, attempt)
                return outcome
        except DuplicateKeyError:
            contested = recorded_key(decision, key) if decision else key
            return self._lost_race(mailbox, fetched, email, key, fingerprint, contested, attempt)

    def _lost_race(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
        contested: str,
        attempt: Attempt | None,
    ) -> ProcessingOutcome:
        """Another runner recorded ``contested`` first: a duplicate, disposed of as its
        record says. Or one reading another mailbox recorded this email's copy first:
        a copy, disposed of as that one."""
        repo = self.ctx.repository
        copy = copy_key(self.ctx, email, fingerprint)
        with repo.transaction():
            winner = repo.get_dedupe(contested)
            copied = repo.get_dedupe(copy) if winner is None and copy is not None else None
        if copied is not None:
            with repo.transaction():
                attempts.finish(repo, attempt)
            log.info(
                "mailbox %s ref %s: a runner reading another mailbox recorded it first "
                "(%s); a copy",
                mailbox.name,
                fetched.ref,
                copied.outcome,
            )
            return apply(
                self.ctx,
                mailbox,
                fetched,
                email,
                key,
                fingerprint,
                recorded_duplicate(copied, Reason.COPY),
            )
        if winner is not None and winner.sha256 not in ("", fingerprint):
            # Another email with the same Message-ID won the key: ours is not a duplicate
            # of it. Decided again, it is recorded under a key of its own.
            log.info(
                "mailbox %s ref %s: another email with its Message-ID was recorded first",
                mailbox.name,
                fetched.ref,
            )
            return self._commit(mailbox, fetched, email, key, fingerprint, attempt)
        with repo.transaction():
            attempts.finish(repo, attempt)
        if winner is None:
            # The conflict names a record we cannot read yet: leave the email for later.
            log.warning(
                "mailbox %s ref %s: dedupe key conflict; will retry", mailbox.name, fetched.ref
            )
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason=Reason.TRANSIENT_ERROR
            )
        log.info(
            "mailbox %s ref %s: another runner recorded it first (%s); a duplicate",
            mailbox.name,
            fetched.ref,
            winner.outcome,
        )
        duplicate = recorded_duplicate(winner)
        return apply(self.ctx, mailbox, fetched, email, key, fingerprint, duplicate)

    def _quarantine_too_large(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        key = f"{mailbox.name}\x1fref:{fetched.ref}:{fetched.size}"
        detail = f"{fetched.size} bytes: over the limit; {_where_too_large_goes(mailbox)}"
        self._quarantine_once(
            key, NewQuarantine(mailbox.name, Reason.TOO_LARGE.value, b"", detail, dedupe_key=key)
        )
        return ProcessingOutcome(
            mailbox.name, fetched.ref, Outcome.QUARANTINED, reason=Reason.TOO_LARGE
        )

    def _quarantine_after_error(
        self, mailbox: Mailbox, fetched: FetchedMessage, exc: Exception, attempt: Attempt | None
    ) -> ProcessingOutcome:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        # Keyed by the bytes, so that the same email failing again on a re-fetch
        # (a backend that cannot move it aside) is not quarantined twice.
        key = f"{mailbox.name}\x1ferror:{hashlib.sha256(fetched.raw).hexdigest()}"
        entry = NewQuarantine(
            mailbox.name, Reason.PROCESSING_ERROR.value, fetched.raw, detail, dedupe_key=key
        )
        try:
            self._quarantine_once(key, entry, attempt)
        except RepositoryError:
            log.exception("mailbox %s ref %s: could not quarantine", mailbox.name, fetched.ref)
            attempts.let_go(self.ctx.repository, attempt, self._owed_attempts)
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason=Reason.PROCESSING_ERROR
            )
        return ProcessingOutcome(
            mailbox.name, fetched.ref, Outcome.QUARANTINED, reason=Reason.PROCESSING_ERROR
        )

    def _quarantine_once(
        self, key: str, entry: NewQuarantine, attempt: Attempt | None = None
    ) -> None:
        """Quarantine ``entry`` under ``key`` unless that key is known already."""
        repo = self.ctx.repository
        try:
            with repo.transaction():
                if repo.get_dedupe(key) is None:
                    repo.quarantine(entry)
                    repo.record_dedupe(DedupeRecord(key, "", Outcome.QUARANTINED.value))
                attempts.finish(repo, attempt)
        except DuplicateKeyError:
            pass  # another runner quarantined the same email first: the outcome stands


def _where_too_large_goes(mailbox: Mailbox) -> str:
    """Where a too-large email is once quarantined: its bytes were never read, so the
    mailbox's copy is the only one, and the detail must say truly where it is.

    A connector with a ``quarantine_folder`` (Maildir, IMAP, Graph, Gmail, EWS, the
    folder connectors) moves it there on the quarantine disposition; one without
    (POP3) leaves it where it was.
    """
    folder = getattr(mailbox.connector, "quarantine_folder", None)
    if isinstance(folder, str) and folder:
        return f"moved unread to the mailbox's {folder!r} folder"
    return "left in the mailbox unread"
