"""The scale benchmarks run in their short modes and prove what they measure went right.

``benchmarks/bench_scale.py --short`` starts a private Dovecot and Redis and real
``halomail worker`` processes; ``benchmarks/sim_scale.py`` runs worker processes. Both
write to a private PostgreSQL cluster, which counts their statements. Neither asserts a
time: these tests check that every mailbox was polled and every email became exactly one
ticket, from the JSON each script writes with ``--report``. The commands are the ones
``docs/scaling.md`` shows, read from it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Many processes at once: scripts/test runs these on the first Python only.
pytestmark = [pytest.mark.slow, pytest.mark.scale]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scaling.md"


def _documented(script: str) -> list[str]:
    """The arguments a ``sh`` block of docs/scaling.md gives ``script``."""
    for block in re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line)
            if words[:2] == ["python", f"benchmarks/{script}"]:
                return words[2:]
    raise AssertionError(f"docs/scaling.md does not show benchmarks/{script}")


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a benchmark in its own process group; on a hang, end the group, not just it."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        pytest.fail(f"{script} did not finish within 240 s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_bench_scale_short_polls_every_mailbox_and_tickets_every_email_once(
    tmp_path: Path,
) -> None:
    """20 IMAP mailboxes, 1 then 2 real workers: every cycle polls all 20, each email 1 ticket."""
    report = tmp_path / "report.json"
    arguments = _documented("bench_scale.py")
    assert arguments == ["--short"]
    result = _run("bench_scale.py", *arguments, "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    cycles: list[dict[str, Any]] = json.loads(report.read_text())
    assert {(c["workers"], c["kind"]) for c in cycles} == {
        (1, "busy"),
        (1, "steady"),
        (2, "busy"),
        (2, "steady"),
    }
    for cycle in cycles:
        assert cycle["polled"] == cycle["mailboxes"] == 20, cycle
        assert cycle["failed_polls"] == [], cycle
        assert cycle["redis_commands"] > 0, cycle  # the tasks went through the broker
        assert cycle["delayed_chunks"] > 0, cycle  # and IMAP through the latency proxy
        # PostgreSQL counted the polls' writes: each took its mailbox's lease and gave it back.
        assert cycle["commits"] >= 2 * cycle["mailboxes"], cycle
        if cycle["kind"] == "busy":
            assert cycle["emails"] == 60, cycle
            assert cycle["tickets"] == 60, cycle
            assert cycle["left_in_inboxes"] == 0, cycle
        else:
            assert cycle["emails"] == cycle["tickets"] == 0, cycle
    assert "vs 1" in result.stdout  # the table of ratios was printed


def test_sim_scale_tickets_and_acknowledges_every_email_once(tmp_path: Path) -> None:
    """Simulated mailboxes over 2 worker processes: one ticket and one sent ack per email."""
    report = tmp_path / "report.json"
    arguments = _documented("sim_scale.py")
    assert arguments == ["--sizes", "10,20", "--rounds", "1", "--workers", "2", "--slots", "2"]
    result = _run("sim_scale.py", *arguments, "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    cycles: list[dict[str, Any]] = data["cycles"]
    assert sorted((c["mailboxes"], c["busy"]) for c in cycles) == [
        (10, False),
        (10, True),
        (20, False),
        (20, True),
    ]
    for cycle in cycles:
        mailboxes = cycle["mailboxes"]
        assert cycle["errors"] == [], cycle
        # 1 or 2 emails per mailbox in a busy cycle, none in a steady one.
        assert cycle["emails"] == (mailboxes * 3 // 2 if cycle["busy"] else 0)
        assert cycle["created"] == cycle["sent"] == cycle["emails"], cycle
        # Each poll took its mailbox's lease and gave it back: two statements each.
        assert cycle["poll_statements"]["table:leases"] == 2 * mailboxes, cycle
        assert cycle["poll_statements"]["commit"] >= 2 * mailboxes, cycle
    assert data["tickets"] == {"10": 15, "20": 30}
    assert "Growth from 10 to 20 mailboxes" in result.stdout
