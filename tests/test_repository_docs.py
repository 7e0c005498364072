"""docs/repository.md: its contract-suite example runs as it stands, and it names every method."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from halomail.tickets.repository import (
    Browsing,
    Directory,
    IngestLedger,
    OutboxStore,
    ServiceLog,
    TicketStore,
)

DOCS = Path(__file__).parent.parent / "docs" / "repository.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)


def _methods(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


def test_the_contract_suite_example_runs_and_passes(tmp_path: Path) -> None:
    """The docs' test file, run by pytest in a fresh process, collects the suite and passes."""
    (block,) = _python_blocks()
    test_file = tmp_path / "test_my_repository.py"
    test_file.write_text(block, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None, result.stdout[-3000:]
    assert int(passed.group(1)) >= 90
    assert "skipped" not in result.stdout


def test_the_docs_name_every_method_of_every_role() -> None:
    """Each role's table row or list names each of its methods, Browsing included."""
    text = DOCS.read_text(encoding="utf-8")
    roles = (TicketStore, Directory, IngestLedger, OutboxStore, ServiceLog, Browsing)
    missing = sorted(
        f"{role.__name__}.{name}"
        for role in roles
        for name in _methods(role)
        if f"`{name}`" not in text
    )
    assert missing == []
    for role in roles:
        assert f"`{role.__name__}`" in text
