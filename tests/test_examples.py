"""Every script in examples/ runs and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

EXPECTED = {
    "embed_in_memory.py": [
        "email 1: created ticket 1",
        "email 2: updated ticket 1",
        "ticket 1 [Access] 'Cannot log in to the CRM': 2 actions",
        "acknowledgement to alice@customer.example",
    ],
    "maildir_to_sqlite.py": [
        "run 1: 2 emails, 2 sent",
        "run 2: 0 emails, 0 sent",
        "ticket 2: New starter on Monday (bob@customer.example)",
        "2 replies in",
    ],
}


def test_every_example_has_expectations() -> None:
    """Each examples/*.py file is covered by a case below (a new example needs one)."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_its_results(name: str, tmp_path: Path) -> None:
    """The example exits 0 and prints the lines a reader is told to expect."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
