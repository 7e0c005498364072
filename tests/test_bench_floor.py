"""#18: ``benchmarks/floor.py``, the floor (F) the pipeline's time is compared with.

(F) must do what the issue calls the floor, parsing plus a durable commit per email, and
nothing less: every email parsed, its decoded text stored, each batch committed.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from halomail.inbound.parse import parse_email
from tests.conftest import make_email

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_floor_stores_every_email_with_its_decoded_text_and_commits_it(
    tmp_path: Path,
) -> None:
    """Seven emails in batches of three: seven rows, each email's own text, all committed
    (read back through another connection)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from floor import Floor
    finally:
        sys.path.remove(str(BENCHMARKS))
    emails = [
        make_email(
            sender=f"Customer {n} <c{n}@customer.example>",
            subject=f"Printer {n}",
            body=f"Caf\u00e9 printer number {n} jams.",
            message_id=f"<floor-{n}@customer.example>",
        )
        for n in range(7)
    ]
    floor = Floor(tmp_path / "floor.db", batch_size=3)
    assert floor.run(emails) == 7
    floor.close()
    reader = sqlite3.connect(tmp_path / "floor.db")
    try:
        rows = reader.execute(
            "SELECT message_id, sender, subject, text FROM emails ORDER BY id"
        ).fetchall()
    finally:
        reader.close()
    expected = [
        (
            parsed.message_id,
            parsed.sender.normalized if parsed.sender else None,
            parsed.subject,
            parsed.text,
        )
        for parsed in map(parse_email, emails)
    ]
    assert rows == expected
    assert rows[3][1:3] == ("c3@customer.example", "Printer 3")
    assert "Caf\u00e9 printer number 3 jams." in rows[3][3]
