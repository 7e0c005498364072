"""Observers: who is told what a :class:`~halomail.MailProcessor` did, for metrics.

An observer hears three things, each after the fact: an email's committed outcome,
the end of a pass over a mailbox, and the end of a pass over the outbox. It must not
change what the processor does, so whatever an observer raises is logged and
swallowed: a broken metrics exporter never stops mail. :mod:`halomail.metrics`
implements one for Prometheus; the processor itself knows nothing of Prometheus.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from halomail.outbound.outbox import SendReport
from halomail.pipeline.results import ProcessingOutcome

__all__ = ["Observers", "ProcessorObserver"]

log = logging.getLogger(__name__)


@runtime_checkable
class ProcessorObserver(Protocol):
    """**Protocol:** told what a :class:`~halomail.MailProcessor` did.

    Each method is called after the fact it reports is committed, one call at a time
    (inside the processor's one-writer turn, so an observer may read the repository),
    except with a repository that declares ``thread_safe = True``, whose processor may
    call from several mailbox threads at once. Whatever a method raises is logged and
    ignored.

    .. versionadded:: 0.1.0
    """

    def on_outcome(self, mailbox: str, outcome: ProcessingOutcome) -> None:
        """An email of ``mailbox`` ended in ``outcome`` (committed, source disposed of)."""

    def on_pass(self, mailbox: str, error: str | None) -> None:
        """A pass over ``mailbox`` ended: ``error`` says why it failed, ``None`` if it did not.

        Passes not made are not reported: a mailbox backing off after failures, or
        whose lease another runner holds, or a pass cut short by a busy repository
        (not the mailbox's failure).
        """

    def on_send(self, report: SendReport) -> None:
        """A pass over the outbox ended with ``report``."""


class Observers:
    """The processor's observers, each told in turn, none allowed to break processing.

    Args:
        observers: The observers to start with.
        turn: Held around each call: the processor's one-writer lock.
    """

    def __init__(
        self, observers: Iterable[ProcessorObserver], turn: AbstractContextManager[None]
    ) -> None:
        self._observers = list(observers)
        self._turn = turn

    def add(self, observer: ProcessorObserver) -> None:
        """Tell ``observer`` too, from now on."""
        self._observers.append(observer)

    def outcome(self, mailbox: str, outcome: ProcessingOutcome) -> None:
        """Tell every observer an email's outcome."""
        self._tell("on_outcome", lambda o: o.on_outcome(mailbox, outcome))

    def mailbox_pass(self, mailbox: str, error: str | None) -> None:
        """Tell every observer a mailbox pass ended."""
        self._tell("on_pass", lambda o: o.on_pass(mailbox, error))

    def send(self, report: SendReport) -> None:
        """Tell every observer an outbox pass ended."""
        self._tell("on_send", lambda o: o.on_send(report))

    def _tell(self, what: str, call: Callable[[ProcessorObserver], None]) -> None:
        for observer in self._observers:
            try:
                with self._turn:
                    call(observer)
            except Exception:  # metrics must never stop mail
                log.exception("observer %r failed in %s; processing goes on", observer, what)
