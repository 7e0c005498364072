"""#18: ``benchmarks/bench_instructions.py`` counts what bench_pipeline.py times.

Its children run every pipeline over real and generated emails (checked here without
valgrind, in a moment), and its count is the difference of two callgrind runs (checked
once, with valgrind, on three emails: a pipeline that parses them executes more
instructions than the idle child, and a plausible number per email).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_instructions.py"


def _bench_instructions() -> ModuleType:
    """The script as a module (it imports its neighbours in ``benchmarks/``)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_instructions
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return bench_instructions


@pytest.mark.parametrize("corpus", ["real", "1kb"])
def test_every_pipeline_of_a_child_runs_over_the_emails(corpus: str, tmp_path: Path) -> None:
    """Each child (the idle one too) sets up, warms up and runs its pipeline cleanly;
    (S)'s child replays the statements recorded from (C) and checks the rows changed."""
    statements = tmp_path / "statements.pickle"
    _bench_instructions().record_statements(corpus, 3, statements)
    for pipeline in ("-", "A", "a", "P", "F", "S", "M", "C"):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--child", corpus, "3", pipeline, str(statements)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (pipeline, done.stderr)


@pytest.mark.scale
def test_a_count_is_a_pipelines_instructions_beyond_the_idle_child(tmp_path: Path) -> None:
    """Under callgrind, parsing three 1 KB emails costs more than the idle child, by
    a plausible number of instructions per email (compat32 parses 1 KB in well under a
    million)."""
    assert shutil.which("valgrind"), "scripts/test installs valgrind"
    bench_instructions = _bench_instructions()
    statements = tmp_path / "statements.pickle"
    bench_instructions.record_statements("1kb", 3, statements)
    count = bench_instructions.count_instructions
    with ThreadPoolExecutor(2) as pool:  # two valgrind children at once: half the wait
        idle_run = pool.submit(count, "1kb", 3, "-", statements)
        parsed_run = pool.submit(count, "1kb", 3, "a", statements)
        idle, parsed = idle_run.result(), parsed_run.result()
    per_email = (parsed - idle) / 3
    assert 10_000 < per_email < 10_000_000, per_email
