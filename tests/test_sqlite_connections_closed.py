"""No code of ours relies on ``with sqlite3.connect(...)`` to close a connection.

The sqlite3 module's context manager commits or rolls back; it does not close. The
connection is closed only when the garbage collector gets to it, in whichever test is
running then, and Python 3.13 warns there ("unclosed database"), which this suite turns
into that unrelated test's failure. It happened in CI, from ``tests/test_release.py``.
``contextlib.closing(sqlite3.connect(...))`` closes it where the block ends.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACES = ("src", "tests", "examples", "docs", "benchmarks", "scripts")
UNCLOSED = re.compile(r"\bwith\s+sqlite3\.connect\(")
HERE = Path(__file__).resolve()


def test_no_sqlite_connection_is_left_to_the_garbage_collector() -> None:
    """Every Python file and docs page: no ``with sqlite3.connect(`` block."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for place in PLACES
        for path in sorted((ROOT / place).rglob("*"))
        if path.suffix in {".py", ".md"} and path.is_file() and path != HERE
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNCLOSED.search(line)
    ]
    assert found == [], "use contextlib.closing(sqlite3.connect(...)): " + ", ".join(found)
