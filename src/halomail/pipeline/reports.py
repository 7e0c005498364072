"""What a run reports: each mailbox's pass and health, each service check, the whole cycle.

:class:`~halomail.MailProcessor` returns these; ``halomail run`` prints them.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt

import attrs

from halomail.outbound.outbox import SendReport
from halomail.pipeline.results import Outcome, ProcessingOutcome

__all__ = ["MailboxHealth", "MailboxReport", "RunReport", "ServiceCheck"]


@attrs.frozen
class MailboxHealth:
    """A mailbox's state, as an administrator wants to see it.

    Args:
        name: The mailbox.
        last_success: When it was last read without error.
        last_error: The last error (secret-free), or ``None``.
        last_error_at: When that error happened.
        consecutive_failures: Failed reads since the last success.
        next_attempt_at: After repeated failures, the mailbox is not read again before
            this time (``None``: read it on the next cycle).
    """

    name: str
    last_success: dt.datetime | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    consecutive_failures: int = 0
    next_attempt_at: dt.datetime | None = None

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used by ``halomail run --json``."""
        return {
            "mailbox": self.name,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "consecutive_failures": self.consecutive_failures,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


@attrs.frozen
class MailboxReport:
    """What one pass over one mailbox did (``error`` says why it failed or was skipped)."""

    name: str
    outcomes: tuple[ProcessingOutcome, ...]
    error: str | None = None
    left_alone: int = 0
    # Not read this cycle: backing off after repeated failures (``error`` says so), or
    # another runner holds the mailbox's lease (``note`` says so; not a failure).
    skipped: bool = False
    note: str | None = None


@attrs.frozen
class ServiceCheck:
    """One monitored service as a cycle found it.

    Args:
        service: The service's name.
        status: Its latest status (``ok``, ``failed``, ``unknown``), or ``None`` before any.
        turned_unknown: True when this check turned it Unknown.
        ticket_id: The ticket raised for it, if any.
    """

    service: str
    status: str | None
    turned_unknown: bool = False
    ticket_id: int | None = None


@attrs.frozen
class RunReport:
    """What one cycle over every mailbox did.

    ``repository_busy`` says why the cycle stopped early: the repository met a
    transient error (a locked database), so the passes stopped, and services and the
    outbox were not checked (``None`` when the cycle ran to its end).
    """

    mailboxes: tuple[MailboxReport, ...]
    sent: SendReport = attrs.field(factory=SendReport)
    services: tuple[ServiceCheck, ...] = ()
    repository_busy: str | None = None

    @property
    def outcomes(self) -> tuple[ProcessingOutcome, ...]:
        """Every email's outcome, mailbox by mailbox."""
        return tuple(o for report in self.mailboxes for o in report.outcomes)

    @property
    def ok(self) -> bool:
        """False when a mailbox failed, the repository was busy, an email was quarantined
        or left for retry, or a transport's login or TLS failed (:attr:`SendReport.halted`)."""
        if self.repository_busy is not None:
            return False
        return (
            all(report.error is None for report in self.mailboxes)
            and not any(o.outcome in (Outcome.QUARANTINED, Outcome.RETRY) for o in self.outcomes)
            and not self.sent.halted
        )
