"""#18: the benchmarks docs/performance.md shows run in their short modes, on real mail.

Every command of the doc's ``sh`` blocks is run as written (``bench_pipeline.py`` with
``--report`` added, to read what it measured). Nothing here asserts a time: the tests
check that the real corpus came first, that every pipeline ran in every round over every
email, and that no email was left for retry.
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

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
KINDS = ("plain", "html", "attachment", "legacy")


def _commands() -> list[list[str]]:
    """Every command line of the doc's ``sh`` blocks, split into words."""
    blocks = re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line]


def _run(words: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a documented command in its own process group; on a hang, end the group."""
    assert words[0] == "python"
    process = subprocess.Popen(
        [sys.executable, *words[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{words} did not finish within 600 s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_doc_shows_only_the_short_benchmarks_the_suite_runs() -> None:
    """The doc's commands are the pipeline, rules, templates and copy-key benchmarks,
    short modes."""
    assert _commands() == [
        ["python", "benchmarks/bench_pipeline.py", "--short"],
        ["python", "benchmarks/bench_rules.py", "--short"],
        ["python", "benchmarks/bench_templates.py", "--short"],
        ["python", "benchmarks/bench_copies.py", "--short"],
    ]


def test_bench_pipeline_short_measures_real_mail_first_in_interleaved_rounds(
    tmp_path: Path,
) -> None:
    """Real mail first, then the generated mix and each kind; every pipeline every round."""
    (command, _rules, _templates, _copies) = _commands()
    report = tmp_path / "report.json"
    result = _run([*command, "--report", str(report)])
    assert result.returncode == 0, result.stdout + result.stderr
    measured: dict[str, Any] = json.loads(report.read_text())
    names = [entry["name"] for entry in measured["corpora"]]
    assert names == [
        "spamassassin",
        "text-1kb",
        "generated",
        *(f"generated:{kind}" for kind in KINDS),
    ]
    rounds = measured["rounds"]
    assert rounds >= 2  # a spread needs rounds
    for entry in measured["corpora"]:
        assert sorted(entry["cpu_seconds"]) == ["A", "C", "F", "M", "P", "S", "a"]
        assert all(len(seconds) == rounds for seconds in entry["cpu_seconds"].values())
        assert all(s > 0 for seconds in entry["cpu_seconds"].values() for s in seconds)
        outcomes = entry["outcomes"]
        assert outcomes.get("retry", 0) == 0, entry["name"]
        handled = sum(count for outcome, count in outcomes.items() if outcome != "acknowledged")
        assert handled == entry["emails"], entry["name"]
    real = measured["corpora"][0]
    assert real["emails"] == 200
    # The SpamAssassin table leads the output, with its ratios to both baselines.
    first_table = result.stdout.index("SpamAssassin corpus (real mail)")
    assert first_table < result.stdout.index("generated corpus, all kinds")
    assert "(A) compat32 + headers + parts" in result.stdout
    assert re.search(
        r"\(P\) halomail parse_email +[\d.]+ +[\d.]+x \[[\d.]+ - [\d.]+x\]", result.stdout
    )
    # Every corpus: how far (C) is from its floor, (F) parsing and storing each email.
    floor_lines = re.findall(
        r"^\(C\) takes [\d.]+x the CPU time of its floor \(F\) \[[\d.]+ - [\d.]+x\]$",
        result.stdout,
        re.MULTILINE,
    )
    assert len(floor_lines) == len(names)
    # ... and what is left of (C) with the store in memory, (M), which decided alike.
    memory_lines = re.findall(
        r"^\(M\), storing in memory, takes \d+% of \(C\)'s CPU time \[\d+% - \d+%\]$",
        result.stdout,
        re.MULTILINE,
    )
    assert len(memory_lines) == len(names)
    # ... and the share of parsing and (C)'s own statements replayed alone, (P) + (S),
    # with their throughput against compat32's (the replay changed the rows (C) did, or
    # the run would have failed).
    replay_lines = re.findall(
        r"^\(P\) \+ \(S\), parsing and \(C\)'s statements with nothing between, take "
        r"\d+% of \(C\)'s CPU time \[\d+% - \d+%\]\n"
        r"\(P\) \+ \(S\) alone run at [\d.]+x the throughput of \(a\) \[[\d.]+ - [\d.]+x\]$",
        result.stdout,
        re.MULTILINE,
    )
    assert len(replay_lines) == len(names)
    # The 1 KB text email's line: the pipeline's cost as a multiple of compat32's.
    assert re.search(
        r"a 1 KB text email: \(C\) costs [\d.]+x what compat32 parsing does "
        r"\[[\d.]+ - [\d.]+x\] \(goal: within 5x\)\n"
        r"a 1 KB text email: \(P\) \+ \(S\) alone cost [\d.]+x what compat32 parsing does "
        r"\[[\d.]+ - [\d.]+x\]$",
        result.stdout,
        re.MULTILINE,
    )


def test_bench_rules_short_compares_10_and_10000_rules_on_real_mail() -> None:
    """The rules benchmark runs on 200 real emails first, round by round, engines agreeing."""
    (_pipeline, command, _templates, _copies) = _commands()
    result = _run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("real mail (200 SpamAssassin emails)")
    assert re.search(
        r"10,000 rules / 10 rules on real mail: [\d.]+x \[[\d.]+ - [\d.]+x over 3 rounds\]",
        result.stdout,
    )
    assert "MISMATCH" not in result.stderr


def test_bench_templates_short_times_the_acknowledgement_in_interleaved_cpu_rounds() -> None:
    """Every contender, the notifier's acknowledgement included, with its spread over rounds."""
    (_pipeline, _rules, command, _copies) = _commands()
    result = _run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        "default acknowledgement (subject + text + HTML), CPU time, 3 interleaved rounds"
    )
    names = ("halomail", "halomail, Jinja2 path", "halomail + values", "values only")
    for name in (*names, "acknowledgement", "jinja2"):
        line = re.escape(name) + r" +[\d.]+ \[[\d.]+ - [\d.]+\] +[\d.]+x \[[\d.]+ - [\d.]+x\]"
        assert re.search("^" + line + "$", result.stdout, re.MULTILINE), name


def test_bench_copies_short_times_both_settings_on_real_mail_first() -> None:
    """Real mail, then 1 KB emails: each setting's ms per email and skip's time over
    process's with its spread, both having decided every email alike."""
    (_pipeline, _rules, _templates, command) = _commands()
    result = _run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("copy keys: CPU time, 3 interleaved rounds")
    shape = (
        r": 200 emails, ms per email: process [\d.]+, skip [\d.]+; skip takes [\d.]+x "
        r"process's CPU time \[[\d.]+ - [\d.]+x over 3 rounds\]"
    )
    assert re.fullmatch(re.escape("real mail (SpamAssassin)") + shape, lines[1])
    assert re.fullmatch(re.escape("1 KB text emails") + shape, lines[2])
