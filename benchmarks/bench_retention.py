"""What ``[processing] ledger_retention_days`` costs: forgetting rows against writing them.

Run it from the checkout::

    python benchmarks/bench_retention.py            # 5 rounds of 2,000 emails; 1,000,000 rows
    python benchmarks/bench_retention.py --short    # 3 rounds of 200; 100,000 rows

**Per email.** Each round processes the emails into a fresh SQLite file with (C) of
``bench_pipeline.py`` (the whole ``MailProcessor``, batches of 10, 40 rules,
acknowledgements), then, its clock past the retention, forgets every ledger row those
emails left (dedupe records, copy keys, the sending limits' rows, the loop guard's
counts) the way the daily purge
does (:func:`halomail.pipeline.retention.purge`). Both by CPU time, one after the other
in each round: printed, the purge's time over the processing's, median with the lowest
and highest round. Real mail first (the SpamAssassin corpus, ``HALOMAIL_CORPUS``), then
1 KB text emails. The run fails unless the purge leaves those tables empty.

**At scale.** A file holding ``--rows`` dedupe records of 1,000 mailboxes (written
straight with SQL, not timed), the oldest 40% past the retention, is purged: printed,
the statements' count, the longest a statement held the write lock (wall time, the
figure other runners wait on), the whole purge's CPU time, and the time of a purge that
finds nothing left (each table scanned once).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_pipeline
import real_mail
from timing import Timing, ratio_spread

from halomail import SQLiteTicketRepository
from halomail.pipeline.retention import purge
from halomail.tickets.models import utcnow

ROUNDS = 5
EMAILS = 2_000
ROWS = 1_000_000
SHORT_ROUNDS = 3
SHORT_EMAILS = 200
SHORT_ROWS = 100_000
RETENTION = dt.timedelta(days=30)
_TABLES = ("dedupe", "outbox_recipients", "attempts")


def _rows(path: Path) -> int:
    """The ledger rows retention forgets: its tables', and the timed state rows."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = sum(
            int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in _TABLES
        )
        timed = "SELECT COUNT(*) FROM state WHERE key LIKE 'loop:%' OR key LIKE 'outbox-sending:%'"
        return rows + int(connection.execute(timed).fetchone()[0])


def one_round(messages: Sequence[bytes], directory: Path) -> tuple[float, float, int]:
    """CPU seconds to process ``messages`` and to purge what they left, and the rows."""
    path = directory / "retention.db"
    repository = SQLiteTicketRepository(path)
    processor, _connector = bench_pipeline.make_processor(
        repository,
        messages,
        rules=bench_pipeline.bench_rules(),
        batch_size=bench_pipeline.BATCH_SIZE["value"],
    )
    gc.collect()
    timing = Timing()
    processor.run_once()
    processing = timing.stop().cpu
    left = _rows(path)
    later = utcnow() + RETENTION + dt.timedelta(days=1)
    gc.collect()
    timing = Timing()
    gone = purge(repository, RETENTION, processor.mailboxes, later)
    purging = timing.stop().cpu
    repository.close()
    if gone != left or _rows(path) != 0:
        raise RuntimeError(f"the purge forgot {gone} of {left} rows; {_rows(path)} are left")
    path.unlink()
    return processing, purging, gone


def per_email(name: str, messages: Sequence[bytes], rounds: int) -> None:
    """Interleaved rounds over ``messages``; prints the line."""
    processing: list[float] = []
    purging: list[float] = []
    rows = 0
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            spent, purged, rows = one_round(messages, Path(folder))
            processing.append(spent)
            purging.append(purged)
    median, low, high = ratio_spread(purging, processing)
    print(
        f"{name}: {len(messages)} emails left {rows} ledger rows; ms per email: processing "
        f"{statistics.median(processing) / len(messages) * 1000:.3f}, purging "
        f"{statistics.median(purging) / len(messages) * 1000:.4f}; the purge takes "
        f"{median:.4f}x the processing's CPU time [{low:.4f} - {high:.4f}x over {rounds} rounds]"
    )


class _TimedPurges:
    """The repository, its ``purge_ledger`` calls timed one by one."""

    def __init__(self, repository: SQLiteTicketRepository) -> None:
        self._repository = repository
        self.walls: list[float] = []

    def purge_ledger(self, **arguments: Any) -> int:
        start = time.perf_counter()
        gone = self._repository.purge_ledger(**arguments)
        self.walls.append(time.perf_counter() - start)
        return gone


def _fill(path: Path, rows: int, now: dt.datetime) -> None:
    """``rows`` dedupe records over 1,000 mailboxes, oldest first, one a minute apart in
    time so that the first 40% are past the retention."""
    SQLiteTicketRepository(path).close()  # the schema, as halomail makes it
    old = int(rows * 0.4)
    start = now - RETENTION - dt.timedelta(minutes=old)
    step = dt.timedelta(minutes=1)

    def record(n: int) -> tuple[str, str, str, int, str]:
        digest = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
        at = (start + n * step).isoformat(timespec="microseconds")
        key = f"Mailbox {n % 1000}\x1fid:{digest[:24]}@customer.example"
        return key, digest, "created", n, at

    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO dedupe (key, sha256, outcome, ticket_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            map(record, range(rows)),
        )
        connection.execute("COMMIT")


def at_scale(rows: int) -> None:
    """Purge a file of ``rows`` dedupe records; prints the lines."""
    now = utcnow()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.db"
        _fill(path, rows, now)
        repository = SQLiteTicketRepository(path)
        timed = _TimedPurges(repository)
        gc.collect()
        timing = Timing()
        gone = purge(timed, RETENTION, (), now)
        timing.stop()
        start = time.perf_counter()
        again = repository.purge_ledger(before=now - RETENTION)
        idle = time.perf_counter() - start
        repository.close()
        left = _rows(path)
    if gone != int(rows * 0.4) or again != 0 or left != rows - gone:
        raise RuntimeError(f"{rows} rows: {gone} forgotten, then {again}; {left} left")
    print(
        f"{rows:,} dedupe records, {gone:,} past the retention: {len(timed.walls)} purge calls "
        f"(4 statements each), the longest {max(timed.walls) * 1000:.1f} ms, the median "
        f"{statistics.median(timed.walls) * 1000:.1f} ms; {timing.cpu:.2f} s CPU, "
        f"{timing.wall:.2f} s wall in all; a purge finding nothing took {idle * 1000:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="3 rounds of 200; 100,000 rows")
    parser.add_argument("--rows", type=int, default=None, help="dedupe records at scale")
    args = parser.parse_args(argv)
    rounds, count, rows = (
        (SHORT_ROUNDS, SHORT_EMAILS, SHORT_ROWS) if args.short else (ROUNDS, EMAILS, ROWS)
    )
    rows = args.rows or rows
    bench_pipeline._quiet_halomail()
    print(
        f"ledger retention: CPU time, {rounds} interleaved rounds, one core "
        f"({bench_pipeline.pin_one_core()})"
    )
    per_email("real mail (SpamAssassin)", real_mail.load(count), rounds)
    per_email("1 KB text emails", bench_pipeline.one_kb_emails(count), rounds)
    at_scale(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
