"""A busy repository stops the cycle: one busy timeout, not one per email.

A write that meets another connection's lock waits out the repository's busy timeout
(5 seconds for SQLite) and fails as transient. The next email would wait just as
long, so the runner stops every mailbox's pass after the first such failure and
leaves the rest for the next cycle.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import threading

from halomail.pipeline.results import ProcessingOutcome, Reason

__all__ = ["PassStop", "stops_the_pass"]

log = logging.getLogger(__name__)


class PassStop:
    """Stops a cycle's mailbox passes once the repository is busy (shared by their threads).

    The repository is shared: when one write waited out the busy timeout, the next
    would too, so every pass stops instead of waiting once per email.
    """

    def __init__(self) -> None:
        self._reason: str | None = None
        self._lock = threading.Lock()
        #: Held while a mailbox's pass starts (its lease is taken).
        self.starting = threading.Lock()

    def why(self) -> str | None:
        """Why the passes stop (another thread may have said so meanwhile), or ``None``."""
        return self._reason

    def repository_busy(self, mailbox: str, done: int, error: object) -> str:
        """Stop every pass; return what the mailbox that met the error reports."""
        where = (
            f"after {done} email(s) of mailbox {mailbox}"
            if done
            else f"before reading mailbox {mailbox}"
        )
        message = f"repository busy: stopped the pass {where} ({error}); the rest wait"
        with self._lock:
            if self._reason is None:
                self._reason = message
                log.error("%s", message)
        return message


def stops_the_pass(outcome: ProcessingOutcome) -> bool:
    """True when the unit met a transient repository error (a locked database, a full disk).

    A dedupe-key conflict is left for retry with the same reason, but carries no error.
    """
    return outcome.reason is Reason.TRANSIENT_ERROR and outcome.detail is not None
