"""Two ``halomail run --once`` at once on one SQLite file, one of them forgetting 200,000
old ledger rows while the other turns 1,000 emails into tickets: the purge's short
statements never stop the other runner, and nothing is lost or doubled."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.tickets.models import utcnow
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

EMAILS = 1000
OLD_ROWS = 200_000

CONFIG = """\
[storage]
url = "sqlite:///{db}"

[outgoing]
transport = "maildir"
path = "{folder}/outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "{name}"
connection = "maildir"
path = "{folder}/inbox"
processed = "move:Processed"

[processing]
ledger_retention_days = 30
"""


def _runner(folder: Path, db: Path, name: str, emails: int) -> list[str]:
    """A folder with its configuration and an inbox of ``emails``; the command to run."""
    for sub in ("cur", "new", "tmp"):
        (folder / "inbox" / sub).mkdir(parents=True)
    (folder / "halomail.toml").write_text(CONFIG.format(db=db, name=name, folder=folder))
    for n in range(emails):
        raw = make_email(
            sender=f"Customer {n} <c{n}@customer.example>",
            subject=f"Problem number {n}",
            message_id=f"<problem-{n}@customer.example>",
        )
        (folder / "inbox" / "new" / f"{n:04d}.eml").write_bytes(raw)
    config = str(folder / "halomail.toml")
    return [sys.executable, "-m", "halomail.cli", "-c", config, "run", "--once"]


def _old_records(db: Path) -> None:
    """OLD_ROWS dedupe records of a mailbox long gone, 40 to 100 days old."""
    SQLiteTicketRepository(db).close()
    start = utcnow() - dt.timedelta(days=100)
    step = dt.timedelta(days=60) / OLD_ROWS

    def record(n: int) -> tuple[str, str, str, int, str]:
        digest = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
        at = (start + n * step).isoformat(timespec="microseconds")
        return f"Gone\x1fid:{digest[:24]}@customer.example", digest, "created", n, at

    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as connection:
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO dedupe (key, sha256, outcome, ticket_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            map(record, range(OLD_ROWS)),
        )
        connection.execute("COMMIT")


def _count(db: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return int(connection.execute(sql).fetchone()[0])


@pytest.mark.slow
def test_a_purge_beside_a_busy_runner_stops_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    """The runner with an empty inbox purges at once; the other's 1,000 emails become
    1,000 tickets meanwhile, with no pass stopped as busy; every old row goes."""
    db = tmp_path / "halomail.db"
    _old_records(db)
    busy = _runner(tmp_path / "busy", db, "Support", EMAILS)
    purging = _runner(tmp_path / "purging", db, "Sales", 0)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in (busy, purging)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
        assert "busy" not in err, err
    assert _count(db, "SELECT COUNT(*) FROM tickets") == EMAILS
    assert list((tmp_path / "busy" / "inbox" / "new").iterdir()) == []
    assert list((tmp_path / "busy" / "inbox" / "cur").iterdir()) == []
    assert _count(db, "SELECT COUNT(*) FROM dedupe WHERE key LIKE 'Gone%'") == 0
    # Each email's own record and its copy key, all fresh: kept.
    assert _count(db, "SELECT COUNT(*) FROM dedupe") == 2 * EMAILS
    assert _count(db, "SELECT COUNT(*) FROM state WHERE key = 'ledger:purged-at'") == 1
