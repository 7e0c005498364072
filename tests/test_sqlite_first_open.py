"""Several processes opening one new SQLite database at the same moment all succeed.

Two ``halomail run`` processes started together on a fresh install race to create
``halomail.db``. Each opens it in rollback mode and asks for WAL. Once the first has
converted it and holds it open (a WAL database's readers keep a shared lock on its
file), the other's conversion can wait for a lock it will never get, or be refused at
once by SQLite's deadlock avoidance: "database is locked", and a runner exiting 1
although the database is by then in the mode it wanted. It happened in CI to
``tests/test_group_commit_runners.py``. The repository now reads the mode again
between short attempts.

The race is timing-dependent. Before the fix, a script like this test failed once in 10
rounds of 3 processes on a machine kept busy, and not in 40 other rounds, so this test
can pass without the fix: it runs many rounds, three at a time, each process holding its
repository open for longer than its ``busy_timeout`` (so a wait for that lock fails), to
make a regression likely to show. With the old conversion put back, it failed in both of
two runs on a busy machine, and passed in four on an idle one (as did the earlier form of
this test, one round at a time, in two).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from halomail.tickets.sqlite import SQLiteTicketRepository

pytestmark = pytest.mark.slow

PROCESSES = 4
ROUNDS = 12
AT_ONCE = 3  # rounds run side by side, on files of their own: a busier machine, and a shorter wait
BUSY_TIMEOUT = 1.0

OPENER = """
import sys, time
from pathlib import Path
from halomail.tickets.sqlite import SQLiteTicketRepository
start, database = Path(sys.argv[1]), sys.argv[2]
Path(sys.argv[4]).touch()  # imported and waiting
while not start.exists():
    time.sleep(0.001)
repository = SQLiteTicketRepository(database, busy_timeout=float(sys.argv[3]))
time.sleep(float(sys.argv[3]) + 0.5)
repository.close()
"""


def test_processes_opening_a_new_database_at_once_all_open_it_in_wal_mode(
    tmp_path: Path,
) -> None:
    """Each round: PROCESSES processes wait for one signal, then open the same new file."""
    for first in range(0, ROUNDS, AT_ONCE):
        rounds = range(first, min(first + AT_ONCE, ROUNDS))
        start = tmp_path / f"start-{first}"
        databases = {round_: tmp_path / str(round_) / "halomail.db" for round_ in rounds}
        openers = []
        for round_, database in databases.items():
            database.parent.mkdir()
            for n in range(PROCESSES):
                ready = tmp_path / f"ready-{round_}-{n}"
                command = [sys.executable, "-c", OPENER, str(start), str(database)]
                command += [str(BUSY_TIMEOUT), str(ready)]
                opener = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
                openers.append((round_, ready, opener))
        deadline = time.monotonic() + 60
        while not all(ready.exists() for _, ready, _ in openers) and time.monotonic() < deadline:
            time.sleep(0.01)  # until every interpreter has started and waits
        start.touch()
        for round_, _, opener in openers:
            _, stderr = opener.communicate(timeout=60)
            assert opener.returncode == 0, f"round {round_}: {stderr}"
        for database in databases.values():
            with SQLiteTicketRepository(database) as repository:
                assert repository.list_tickets() == []
            assert _journal_mode(database) == "wal"


def _journal_mode(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()
