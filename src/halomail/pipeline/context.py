"""What every step of the pipeline reads: the repository, the settings, the rules.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

import attrs

from halomail.inbound.models import InboundEmail
from halomail.outbound.notifier import Notifier
from halomail.outbound.outbox import MessageIdFactory
from halomail.pipeline.settings import ProcessorSettings
from halomail.rules import RuleEngine
from halomail.services import ServiceDefinition
from halomail.tickets.repository import TicketRepository
from halomail.tickets.templates import TicketTemplate

__all__ = ["Context", "LoopWarnings", "ThrottleWarnings"]

log = logging.getLogger(__name__)
# Throttled senders remembered for the warn-once rule before the stale ones are dropped.
_THROTTLE_WARNINGS_KEPT = 10_000


class ThrottleWarnings:
    """Remembers which throttled senders were warned about, so a storm from one address
    logs one WARNING per throttle window, not one per email."""

    def __init__(self, count: int, window: dt.timedelta) -> None:
        self._count = count
        self._window = window
        self._warned: dict[str, dt.datetime] = {}
        # A repository that declares itself thread-safe lets mailboxes decide at once.
        self._lock = threading.Lock()

    def warn(
        self,
        address: str,
        now: dt.datetime,
        since: dt.datetime,
        *,
        limit: tuple[int, dt.timedelta] | None = None,
    ) -> None:
        """One WARNING per sender and throttle window; DEBUG for the rest of the window.

        ``limit`` names another cap than the throttle's (the long window's count and
        window), warned about apart from it.
        """
        count, window = limit or (self._count, self._window)
        key = address if limit is None else f"{address}\x1f{window}"
        with self._lock:
            warned = self._warned.get(key)
            if warned is not None and warned > since:
                log.debug("acknowledgements to %s still throttled", address)
                return
            if len(self._warned) >= _THROTTLE_WARNINGS_KEPT:
                # Forget the senders whose window has passed: they would be warned anyway.
                self._warned = {a: t for a, t in self._warned.items() if t > since}
            self._warned[key] = now
        log.warning(
            "acknowledgements to %s throttled: %d per %g minutes reached; the next ones are"
            " logged at DEBUG until the window has passed",
            address,
            count,
            window.total_seconds() / 60,
        )


class LoopWarnings:
    """Remembers which repeated contents were warned about: one WARNING per content and
    loop window, however many copies arrive in it."""

    def __init__(self) -> None:
        self._warned: dict[str, dt.datetime] = {}
        self._lock = threading.Lock()

    def warn(self, key: str, until: dt.datetime, email: InboundEmail) -> None:
        """Warn about ``email`` once for the window that ends at ``until``."""
        with self._lock:
            if self._warned.get(key) == until:
                log.debug("loop suspected again: %s", key)
                return
            if len(self._warned) >= _THROTTLE_WARNINGS_KEPT:
                self._warned.clear()  # the oldest windows: warned again at worst
            self._warned[key] = until
        sender = email.sender.normalized if email.sender is not None else ""
        log.warning(
            "loop suspected: %s sent the same email (subject %r) again; no more tickets for"
            " it until %s (the next copies are ignored with reason loop-suspected)",
            sender,
            email.subject[:80],
            until.isoformat(),
        )


@attrs.frozen
class Context:
    """The processor's parts that deciding and applying read.

    Args:
        repository: Where tickets live.
        settings: Settings for every mailbox.
        engine: The email rules, or ``None`` without rules.
        services: Monitored services by name.
        templates: Ticket templates by name.
        notifier: Queues acknowledgements and service notices.
        ids: Makes and recognises our Message-IDs.
        clock: The current time.
        throttle_warnings: The warn-once memory of throttled senders.
        loop_warnings: The warn-once memory of repeated contents (the loop cap).
    """

    repository: TicketRepository
    settings: ProcessorSettings
    engine: RuleEngine | None
    services: Mapping[str, ServiceDefinition]
    templates: Mapping[str, TicketTemplate]
    notifier: Notifier
    ids: MessageIdFactory
    clock: Callable[[], dt.datetime]
    throttle_warnings: ThrottleWarnings
    loop_warnings: LoopWarnings = attrs.field(factory=LoopWarnings)
