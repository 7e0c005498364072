"""Times the contract suite builds its cases from."""

from __future__ import annotations

import datetime as dt

__all__ = ["HOUR", "MICROSECOND", "T0"]

HOUR = dt.timedelta(hours=1)
MICROSECOND = dt.timedelta(microseconds=1)
T0 = dt.datetime(2024, 5, 1, 2, 0, 0, 123456, tzinfo=dt.UTC)
"""A fixed instant with microseconds, for cases that write their own times."""
