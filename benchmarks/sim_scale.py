"""A simulation of 200 to 5,000 mailboxes: how cycle time, broker load and database load grow.

Run it from the checkout (no server needed; about ten minutes at the default sizes)::

    python benchmarks/sim_scale.py                            # 200, 1,000, 5,000 mailboxes
    python benchmarks/sim_scale.py --sizes 50 --rounds 1      # a quick look

No real network: each mailbox is a :class:`SlowMailbox`, a ``MemoryConnector`` whose
connect, listing, fetch, acknowledgement and logout each *sleep* a number of round trips
of ``--latency`` (a network wait costs no CPU; a spin would). Everything else is real:
``MailProcessor.process_mailbox`` in ``--workers`` processes of ``--slots`` threads each
(as Celery workers with ``--concurrency``), over one repository (a SQLite file shared by
every worker, as the tests use for scale until PostgreSQL lands).

The broker is modelled, not run: the parent process is the scheduler. Each cycle it
"fires the fan-out" (one task), puts one poll task per mailbox on a queue the workers
share, and after every poll one outbox task per worker slot (the outbox's claims keep
them apart). What the script counts as **broker load** is those tasks: per cycle, and
per second at ``--interval`` (the poll interval) and during the cycle itself (the peak
rate). ``bench_scale.py`` measures what one task costs Redis for real.

**Database load** is every SQL statement the workers ran, counted by SQLite's own
``set_trace_callback`` (per thread, so each poll task knows its own), grouped by the
table it touches; ``COMMIT``\\ s are the write transactions. **Cycle time** is the wall
time from the fan-out until the last poll task finished. CPU time is the workers'
(user + system, from ``/proc``).

Each size runs on a fresh database: a busy cycle (each mailbox holds 1 or 2 new emails:
1.5 on average; each becomes one ticket and one acknowledgement), then a steady cycle
(empty mailboxes), ``--rounds`` times. The script exits 1 when any email is not exactly
one ticket, any acknowledgement is not sent once, or any poll failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from email.utils import format_datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import attrs

from halomail.backends.base import Disposition, FetchedMessage, OutgoingEmail
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository

# Round trips each step of a poll costs, as the IMAP connector spends them (measured
# through the latency proxy by bench_scale.py): greeting, LOGIN and SELECT to connect; a
# UID SEARCH to list; one UID FETCH per email; UID MOVE per acknowledgement; LOGOUT.
CONNECT_TRIPS = 3
LIST_TRIPS = 1
FETCH_TRIPS = 1
ACK_TRIPS = 1
LOGOUT_TRIPS = 1
# An acknowledgement on an SMTP connection kept open for the pass: MAIL, RCPT, DATA, end.
SEND_TRIPS = 4

#: Per-table groups of the statements counted (anything else is "other").
_TABLES = ("leases", "attempts", "dedupe", "tickets", "actions", "outbox", "state", "users")
_TABLE_RE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)", re.IGNORECASE)


# -- the simulated network ---------------------------------------------------------


class SlowMailbox(MemoryConnector):
    """A ``MemoryConnector`` whose every server exchange sleeps round trips of ``latency``.

    Args:
        name: The mailbox's name.
        latency: Seconds per round trip.
    """

    def __init__(self, name: str, latency: float) -> None:
        super().__init__(name)
        self.latency = latency
        self.trips = 0

    def _wait(self, trips: int) -> None:
        self.trips += trips
        time.sleep(self.latency * trips)

    def load(self, messages: Iterable[bytes]) -> None:
        """Put this cycle's new emails in the mailbox (the server received them)."""
        for raw in messages:
            self.add(raw)

    def fetch(self) -> Iterator[FetchedMessage]:
        """Connect, list, then fetch each email: each pays its round trips."""
        self._wait(CONNECT_TRIPS + LIST_TRIPS)
        for fetched in super().fetch():
            self._wait(FETCH_TRIPS)
            yield fetched

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Move the email away: one round trip."""
        self._wait(ACK_TRIPS)
        super().ack(ref, disposition)

    def end_session(self) -> None:
        """Log out: one round trip (a poll task does not keep its connection)."""
        self._wait(LOGOUT_TRIPS)


def slow_transport(latency: float) -> MemoryTransport:
    """A transport that records each email after the round trips of one SMTP transaction."""

    def send(_: OutgoingEmail) -> None:
        time.sleep(latency * SEND_TRIPS)

    return MemoryTransport(send)


def emails_for(index: int, cycle: int, count: int) -> list[bytes]:
    """``count`` small new emails for mailbox ``index`` in ``cycle``, each from its own sender."""
    emails = []
    for n in range(count):
        sender = f"user{index}-{cycle}-{n}@customer{index % 40}.example"
        lines = [
            f"From: Customer {index} <{sender}>",
            f"To: box{index:05d}@helpdesk.example",
            f"Subject: Printer {index} problem {cycle}.{n}",
            f"Date: {format_datetime(dt.datetime.now(dt.UTC))}",
            f"Message-ID: <sim-{index}-{cycle}-{n}@customer.example>",
            "MIME-Version: 1.0",
            'Content-Type: text/plain; charset="utf-8"',
            "",
            f"The printer of desk {index} jams on every page since cycle {cycle}.",
            "",
        ]
        emails.append("\r\n".join(lines).encode())
    return emails


def emails_per_mailbox(index: int, busy: bool) -> int:
    """A busy cycle brings 1 or 2 emails to each mailbox (1.5 on average); steady, none."""
    return 1 + index % 2 if busy else 0


# -- counting statements ---------------------------------------------------------------


class StatementCounter:
    """Counts the SQL statements each thread runs, by kind and table (a trace callback)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def counts(self) -> collections.Counter[str]:
        """This thread's counts so far."""
        if not hasattr(self._local, "counts"):
            self._local.counts = collections.Counter()
        counts: collections.Counter[str] = self._local.counts
        return counts

    def __call__(self, sql: str) -> None:
        counts = self.counts()
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        counts["statements"] += 1
        if verb in ("COMMIT", "BEGIN", "ROLLBACK"):
            counts[verb.lower()] += 1
            return
        match = _TABLE_RE.search(sql)
        table = match.group(1).lower() if match else ""
        counts[f"table:{table if table in _TABLES else 'other'}"] += 1


# -- a worker process ------------------------------------------------------------------


@attrs.frozen
class WorkerPlan:
    """What one worker process is started with."""

    number: int
    database: str
    mailboxes: int
    slots: int
    latency: float


def worker_main(plan: WorkerPlan, tasks: Queue[Any], results: Queue[Any]) -> None:
    """A worker: ``plan.slots`` threads taking tasks until each is told to stop.

    Each slot has its own processor and its own database connection, as each child of a
    Celery prefork worker has: its own lease owner and outbox claimant. (Slots sharing one
    processor would share one claimant name, and two of its outbox passes at once would
    both take the same mail as their own.)
    """
    logging.getLogger("halomail").setLevel(logging.ERROR)
    counter = StatementCounter()
    connectors = [SlowMailbox(f"box{i:05d}", plan.latency) for i in range(plan.mailboxes)]
    mailboxes = [Mailbox(c) for c in connectors]
    settings = ProcessorSettings(
        loop_token="sim-scale",  # noqa: S106 - a simulation's loop marker, not a secret
        domain="helpdesk.example",
        default_sender=SenderIdentity("support@helpdesk.example", "Support"),
    )

    def serve() -> None:
        repository = SQLiteTicketRepository(plan.database)
        # The repository's own connection; tracing it changes nothing it does.
        repository._connection.set_trace_callback(counter)  # type: ignore[union-attr]
        processor = MailProcessor(
            repository, mailboxes, settings, transport=slow_transport(plan.latency)
        )
        try:
            while (task := tasks.get())[0] != "stop":
                results.put(run_task(task, processor, connectors, counter))
        finally:
            processor.close()
            repository.close()

    threads = [threading.Thread(target=serve) for _ in range(plan.slots)]
    for thread in threads:
        thread.start()
    results.put(("ready", (plan.number, os.getpid()), {}, 0.0))
    for thread in threads:
        thread.join()


def run_task(
    task: tuple[Any, ...],
    processor: MailProcessor,
    connectors: list[SlowMailbox],
    counter: StatementCounter,
) -> tuple[Any, ...]:
    """Run one poll or outbox task; return its result with the statements it ran."""
    before = counter.counts().copy()
    started = time.perf_counter()
    if task[0] == "poll":
        _, index, cycle, count = task
        # A mailbox is polled once per cycle, so no two slots use its connector at once.
        connectors[index].load(emails_for(index, cycle, count))
        report = processor.process_mailbox(processor.mailboxes[index])
        created = sum(1 for o in report.outcomes if o.outcome.value == "created")
        outcome: tuple[Any, ...] = (created, report.error)
    else:
        outcome = (processor.send_outbox().sent, None)
    spent = counter.counts().copy()
    spent.subtract(before)
    return (task[0], outcome, dict(+spent), time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the scheduler (parent) ------------------------------------------------------------


@attrs.frozen
class Cycle:
    """What one cycle cost."""

    mailboxes: int
    busy: bool
    seconds: float
    outbox_seconds: float
    cpu_seconds: float
    tasks: int
    poll_statements: collections.Counter[str]
    outbox_statements: collections.Counter[str]
    emails: int
    created: int
    sent: int
    errors: tuple[str, ...]


class Simulation:
    """Worker processes over one SQLite database, fed by this process as the scheduler."""

    def __init__(self, mailboxes: int, workers: int, slots: int, latency: float) -> None:
        self.mailboxes = mailboxes
        self.slots = workers * slots
        self.folder = Path(tempfile.mkdtemp(prefix="halomail-sim-scale-"))
        database = str(self.folder / "halomail.db")
        SQLiteTicketRepository(database).close()  # the schema, before workers race to it
        context = multiprocessing.get_context("spawn")
        self.tasks: Queue[Any] = context.Queue()
        self.results: Queue[Any] = context.Queue()
        self.processes = [
            context.Process(
                target=worker_main,
                args=(WorkerPlan(n, database, mailboxes, slots, latency), self.tasks, self.results),
            )
            for n in range(workers)
        ]
        for process in self.processes:
            process.start()
        self.pids = [self._next("ready")[1][1] for _ in self.processes]

    def _next(self, kind: str) -> tuple[Any, ...]:
        result: tuple[Any, ...] = self.results.get(timeout=600)
        if result[0] != kind:
            raise RuntimeError(f"expected a {kind} result, got {result!r}")
        return result

    def cycle(self, number: int, *, busy: bool) -> Cycle:
        """Fan out one poll per mailbox, wait for all, then drain the outbox."""
        cpu_before = sum(cpu_seconds(pid) for pid in self.pids)
        started = time.perf_counter()
        emails = 0
        for index in range(self.mailboxes):  # the fan-out task's work
            count = emails_per_mailbox(index, busy)
            emails += count
            self.tasks.put(("poll", index, number, count))
        polls: collections.Counter[str] = collections.Counter()
        created = 0
        errors: list[str] = []
        for _ in range(self.mailboxes):
            _, (made, error), spent, _ = self._next("poll")
            polls.update(spent)
            created += made
            if error:
                errors.append(error)
        seconds = time.perf_counter() - started
        outbox_started = time.perf_counter()
        for _ in range(self.slots):
            self.tasks.put(("outbox",))
        sends: collections.Counter[str] = collections.Counter()
        sent = 0
        for _ in range(self.slots):
            _, (count, _), spent, _ = self._next("outbox")
            sends.update(spent)
            sent += count
        outbox_seconds = time.perf_counter() - outbox_started
        return Cycle(
            mailboxes=self.mailboxes,
            busy=busy,
            seconds=seconds,
            outbox_seconds=outbox_seconds,
            cpu_seconds=sum(cpu_seconds(pid) for pid in self.pids) - cpu_before,
            tasks=1 + self.mailboxes + self.slots,
            poll_statements=polls,
            outbox_statements=sends,
            emails=emails,
            created=created,
            sent=sent,
            errors=tuple(errors),
        )

    def close(self) -> None:
        """Stop the workers and remove the database."""
        for _ in range(self.slots):
            self.tasks.put(("stop",))
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
        self.tasks.close()
        self.results.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def tickets(self) -> int:
        """Tickets in the database now."""
        with contextlib.closing(sqlite3.connect(self.folder / "halomail.db")) as connection:
            return int(connection.execute("SELECT count(*) FROM tickets").fetchone()[0])


# -- reporting -------------------------------------------------------------------------


def per_mailbox(counts: collections.Counter[str], key: str, mailboxes: int) -> float:
    """A count per mailbox."""
    return counts[key] / mailboxes


def print_report(cycles: list[Cycle], args: argparse.Namespace) -> None:
    """The tables: per size and kind of cycle, medians over rounds; then the growth."""
    print(
        f"{args.workers} worker processes x {args.slots} slots, {args.latency * 1000:g} ms per "
        f"round trip, SQLite, median of {args.rounds} round(s); poll interval {args.interval} s"
    )
    print()
    header = (
        f"{'mailboxes':>9} {'cycle':>6} {'cycle s':>8} {'(min-max)':>13} {'outbox s':>8} "
        f"{'CPU s':>6} {'tasks':>6} {'tasks/s@int':>11} {'tasks/s peak':>12} "
        f"{'stmts':>8} {'commits':>7} {'stmts/mbx':>9} {'commits/mbx':>11} {'lease/mbx':>9}"
    )
    print(header)
    groups: dict[tuple[int, bool], list[Cycle]] = collections.defaultdict(list)
    for cycle in cycles:
        groups[(cycle.mailboxes, cycle.busy)].append(cycle)
    medians: dict[tuple[int, bool], dict[str, float]] = {}
    for (size, busy), runs in sorted(groups.items()):
        seconds = [c.seconds for c in runs]
        row = {
            "cycle": statistics.median(seconds),
            "outbox": statistics.median(c.outbox_seconds for c in runs),
            "cpu": statistics.median(c.cpu_seconds for c in runs),
            "tasks": runs[0].tasks,
            "statements": statistics.median(
                c.poll_statements["statements"] + c.outbox_statements["statements"] for c in runs
            ),
            "commits": statistics.median(
                c.poll_statements["commit"] + c.outbox_statements["commit"] for c in runs
            ),
            "leases": statistics.median(c.poll_statements["table:leases"] for c in runs),
        }
        medians[(size, busy)] = row
        print(
            f"{size:>9} {'busy' if busy else 'steady':>6} {row['cycle']:>8.2f} "
            f"{min(seconds):>6.2f}-{max(seconds):<6.2f} {row['outbox']:>8.2f} {row['cpu']:>6.1f} "
            f"{row['tasks']:>6.0f} {row['tasks'] / args.interval:>11.1f} "
            f"{row['tasks'] / (row['cycle'] + row['outbox']):>12.1f} "
            f"{row['statements']:>8.0f} {row['commits']:>7.0f} "
            f"{row['statements'] / size:>9.1f} {row['commits'] / size:>11.2f} "
            f"{row['leases'] / size:>9.1f}"
        )
    print()
    print("Statements per mailbox per cycle, by table (poll tasks; outbox tasks apart):")
    for (size, busy), runs in sorted(groups.items()):
        polls: collections.Counter[str] = collections.Counter()
        sends: collections.Counter[str] = collections.Counter()
        for cycle in runs:
            polls.update(cycle.poll_statements)
            sends.update(cycle.outbox_statements)
        n = size * len(runs)
        shown = ", ".join(
            f"{key.removeprefix('table:')} {value / n:.2f}" for key, value in sorted(polls.items())
        )
        outbox = sends["statements"] / n
        print(f"  {size:>5} {'busy' if busy else 'steady':<6} {shown}; outbox {outbox:.2f}")
    sizes = sorted({size for size, _ in groups})
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        print()
        print(f"Growth from {first} to {last} mailboxes ({last / first:g}x the mailboxes):")
        for busy in (True, False):
            a, b = medians.get((first, busy)), medians.get((last, busy))
            if a is None or b is None:
                continue
            print(
                f"  {'busy' if busy else 'steady':<6} cycle {b['cycle'] / a['cycle']:.1f}x, "
                f"CPU {b['cpu'] / a['cpu']:.1f}x, tasks {b['tasks'] / a['tasks']:.1f}x, "
                f"statements {b['statements'] / a['statements']:.1f}x, "
                f"commits {b['commits'] / a['commits']:.1f}x"
            )


def check(cycle: Cycle) -> list[str]:
    """What went wrong in a cycle: lost or doubled emails or acknowledgements, failed polls."""
    problems = [f"{cycle.mailboxes} mailboxes: poll failed: {e}" for e in cycle.errors[:5]]
    if cycle.created != cycle.emails:
        problems.append(f"{cycle.mailboxes} mailboxes: {cycle.created}/{cycle.emails} tickets")
    if cycle.sent != cycle.emails:
        problems.append(
            f"{cycle.mailboxes} mailboxes: {cycle.sent}/{cycle.emails} acknowledgements"
        )
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="200,1000,5000", help="mailbox counts")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--slots", type=int, default=16, help="concurrent tasks per worker")
    parser.add_argument("--latency", type=float, default=20.0, help="ms per round trip")
    parser.add_argument("--rounds", type=int, default=2, help="busy + steady cycles per size")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    args = parser.parse_args(argv)
    args.latency /= 1000
    return args


def main(argv: list[str] | None = None) -> int:
    """Simulate, print the tables; exit 1 when an email or an acknowledgement went wrong."""
    args = parse_args(argv)
    cycles: list[Cycle] = []
    problems: list[str] = []
    for size in (int(s) for s in args.sizes.split(",")):
        simulation = Simulation(size, args.workers, args.slots, args.latency)
        try:
            for round_no in range(args.rounds):
                for busy in (True, False):
                    cycle = simulation.cycle(2 * round_no + int(not busy), busy=busy)
                    cycles.append(cycle)
                    problems += check(cycle)
            expected = sum(c.emails for c in cycles if c.mailboxes == size)
            if (tickets := simulation.tickets()) != expected:
                problems.append(f"{size} mailboxes: {tickets} tickets for {expected} emails")
        finally:
            simulation.close()
        print(f"... {size} mailboxes done", file=sys.stderr, flush=True)
    print_report(cycles, args)
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
