"""``benchmarks/bench_retention.py --short``: the purge measured against the processing,
real mail first, and a purge at scale. Nothing here asserts a time: the run must finish,
every row the emails left must be forgotten (the script fails otherwise), and each
figure must be printed in its place."""

from __future__ import annotations

import re

import pytest

from tests.test_bench_real_mail import _run

pytestmark = pytest.mark.slow


def test_bench_retention_short_measures_both_corpora_then_a_large_file() -> None:
    """Three lines of figures after the heading: real mail, 1 KB emails, 100,000 rows."""
    result = _run(["python", "benchmarks/bench_retention.py", "--short"])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ledger retention: CPU time, 3 interleaved rounds")
    shape = (
        r": 200 emails left \d+ ledger rows; ms per email: processing [\d.]+, purging "
        r"[\d.]+; the purge takes [\d.]+x the processing's CPU time "
        r"\[[\d.]+ - [\d.]+x over 3 rounds\]"
    )
    assert re.fullmatch(re.escape("real mail (SpamAssassin)") + shape, lines[1])
    assert re.fullmatch(re.escape("1 KB text emails") + shape, lines[2])
    assert re.fullmatch(
        r"100,000 dedupe records, 40,000 past the retention: \d+ purge calls \(4 statements "
        r"each\), the longest [\d.]+ ms, the median [\d.]+ ms; [\d.]+ s CPU, [\d.]+ s wall in "
        r"all; a purge finding nothing took [\d.]+ ms",
        lines[3],
    )
