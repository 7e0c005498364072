"""CPU-time measurement for the benchmarks: interleaved rounds and ratios with their spread.

On a shared machine, wall time moves with whatever else runs; CPU time
(``time.process_time``) moves much less, and running the pipelines one after another in
each round (A, B, A, B ...) lets the remaining noise hit all of them alike. A ratio is
therefore taken per round, and reported as its median with the lowest and highest round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

__all__ = ["Timing", "ratio_spread"]


class Timing:
    """Wall-clock and CPU seconds of one run, started at construction."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = -time.perf_counter()
        self.cpu = -time.process_time()

    def stop(self) -> Timing:
        """Take the end times; returns itself."""
        self.wall += time.perf_counter()
        self.cpu += time.process_time()
        return self


def ratio_spread(baseline: Sequence[float], ours: Sequence[float]) -> tuple[float, float, float]:
    """The per-round throughput ratios ``baseline / ours``: median, lowest and highest.

    Args:
        baseline: The baseline's seconds, one per round.
        ours: The measured pipeline's seconds in the same rounds.

    Returns:
        ``(median, min, max)``; above 1 means faster than the baseline.
    """
    ratios = [b / o for b, o in zip(baseline, ours, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)
