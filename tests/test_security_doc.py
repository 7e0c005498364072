"""docs/security.md lists every hostile case with its test, and docs/logging.md's filter works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SECURITY_MD = ROOT / "docs" / "security.md"
LOGGING_MD = ROOT / "docs" / "logging.md"
#: The project's list of hostile cases, beside the repository (as issue 13 names it).
REFERENCE = ROOT.parent / "shared" / "reference" / "adversarial-cases.md"

#: The case ids of the reference file, kept here for a checkout without it (and checked
#: against it when it is there, so the copy cannot go stale).
KEPT_IDS = (
    *(f"M{n}" for n in range(1, 17)),
    *(f"A{n}" for n in range(1, 10)),
    *(f"X{n}" for n in range(1, 9)),
    *(f"V{n}" for n in range(1, 6)),
    *(f"L{n}" for n in range(1, 10)),
    *(f"O{n}" for n in range(1, 8)),
    *(f"F{n}" for n in range(1, 13)),
)
#: The eleven items of issue 13.
ISSUE_ITEMS = tuple(f"13.{n}" for n in range(1, 12))


def _reference_ids() -> tuple[str, ...]:
    """The ids of the reference file when it is there, else the kept copy."""
    if not REFERENCE.is_file():
        return KEPT_IDS
    return tuple(re.findall(r"^- ([A-Z]\d+) ", REFERENCE.read_text(encoding="utf-8"), re.M))


def _rows() -> dict[str, str]:
    """The security.md table rows by their first cell."""
    rows = re.findall(r"^\| ([A-Z]\d+|13\.\d+) \|(.*)$", SECURITY_MD.read_text(), re.M)
    return dict(rows)


def test_the_kept_ids_match_the_reference_file_when_it_is_there() -> None:
    """The copy of the case ids in this test is the reference file's list, in its order."""
    assert _reference_ids() == KEPT_IDS


@pytest.mark.parametrize("case", [*KEPT_IDS, *ISSUE_ITEMS])
def test_every_hostile_case_and_issue_item_has_a_row(case: str) -> None:
    """security.md has one table row for the case, with an outcome and a test column."""
    rows = _rows()
    assert case in rows, f"docs/security.md has no row for {case}"
    outcome, tests = (cell.strip() for cell in rows[case].rstrip("|").rsplit("|", 1))
    assert outcome
    assert tests


def test_there_is_no_row_for_an_unknown_case() -> None:
    """Every row names a case of the reference file or an item of issue 13, once."""
    rows = re.findall(r"^\| ([A-Z]\d+|13\.\d+) \|", SECURITY_MD.read_text(), re.M)
    assert sorted(rows) == sorted([*_reference_ids(), *ISSUE_ITEMS])


def test_every_test_named_in_security_md_exists() -> None:
    """Each `file.py::test_name` of the tables is a test function defined in that file."""
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", SECURITY_MD.read_text())
    assert len(named) > 100
    missing = [
        f"{file}::{name}"
        for file, name in named
        if not re.search(rf"def {name}\(", (ROOT / "tests" / file).read_text())
    ]
    assert missing == []


def test_the_logging_md_filter_example_masks_the_password() -> None:
    """docs/logging.md's code, run as it stands, logs the DSN with its password masked."""
    (block,) = re.findall(
        r"## Secrets in log lines\n.*?```python\n(.*?)```", LOGGING_MD.read_text(), re.S
    )
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == "INFO:myapp:using postgres://helpdesk:***@db/helpdesk\n"
