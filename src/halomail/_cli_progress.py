"""How far ``halomail run`` has got: a live line on a terminal, a log record otherwise.

On a terminal (stderr is a TTY) one line is rewritten in place: the emails done, out of
the total when the mailboxes know it, the rate and the time left. Without a terminal
(cron, a service manager) nothing is drawn; a one-line ``progress`` record is logged at
INFO every :data:`LOG_EVERY_EMAILS` emails or :data:`LOG_EVERY_SECONDS` seconds,
whichever comes first, so a long run shows it is alive in the log.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["LOG_EVERY_EMAILS", "LOG_EVERY_SECONDS", "Progress", "describe"]

log = logging.getLogger("halomail.run")

#: Without a terminal, a progress record is logged after this many emails...
LOG_EVERY_EMAILS = 100
#: ...or this many seconds since the last one, whichever comes first.
LOG_EVERY_SECONDS = 30.0
# A terminal line is redrawn at most this often: drawing costs more than an email.
_DRAW_EVERY_SECONDS = 0.1


def describe(done: int, total: int | None, elapsed: float) -> str:
    """``120/3000 emails, 41.5/s, about 1m09s left`` (the total and time left when known).

    Args:
        done: Emails processed so far.
        total: Emails the mailboxes listed, or ``None`` when unknown.
        elapsed: Seconds since the run started.
    """
    rate = done / elapsed if elapsed > 0 else 0.0
    counted = f"{done}/{total}" if total is not None and total >= done else f"{done}"
    text = f"{counted} emails, {rate:.1f}/s"
    if total is not None and total > done and rate > 0:
        text += f", about {_duration((total - done) / rate)} left"
    return text


def _duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``: short enough for one terminal line."""
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Counts a cycle's emails and shows how far it has got.

    Args:
        stream: Where the live line goes (stderr); drawn only when it is a terminal.
        total: Called for the number of emails the mailboxes listed so far, or ``None``.
        clock: Seconds, monotonic (replaceable in tests).
    """

    def __init__(
        self,
        stream: TextIO,
        total: Callable[[], int | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._terminal = stream.isatty()
        self._total = total
        self._clock = clock
        self._started = clock()
        self._done = 0
        self._drawn_at = 0.0
        self._logged_at = self._started
        self._logged_done = 0
        self._width = 0

    @property
    def done(self) -> int:
        """Emails counted so far."""
        return self._done

    def tick(self, mailbox: str) -> None:
        """One more email of ``mailbox`` is done."""
        self._done += 1
        now = self._clock()
        if self._terminal:
            if now - self._drawn_at >= _DRAW_EVERY_SECONDS:
                self._drawn_at = now
                self._draw(f"{mailbox}: {self._describe(now)}")
        elif (
            self._done - self._logged_done >= LOG_EVERY_EMAILS
            or now - self._logged_at >= LOG_EVERY_SECONDS
        ):
            self._logged_at, self._logged_done = now, self._done
            log.info("progress: %s", self._describe(now), extra={"done": self._done})

    def finish(self) -> None:
        """Clear the live line (the summary follows it)."""
        if self._terminal and self._width:
            self._stream.write(f"\r{' ' * self._width}\r")
            self._stream.flush()
            self._width = 0

    def _describe(self, now: float) -> str:
        return describe(self._done, self._total(), now - self._started)

    def _draw(self, line: str) -> None:
        # Pad over what a longer line before left behind.
        self._stream.write(f"\r{line.ljust(self._width)}")
        self._stream.flush()
        self._width = max(self._width, len(line))
