"""A simulation of 200 to 5,000 mailboxes: how cycle time, broker load and database load grow.

Run it from the checkout (no mail server needed; about five minutes at the defaults)::

    python benchmarks/sim_scale.py                            # 200, 1,000, 5,000 mailboxes
    python benchmarks/sim_scale.py --storage sqlite           # on one SQLite file
    python benchmarks/sim_scale.py --sizes 50 --rounds 1      # a quick look

No real network: each mailbox is a :class:`SlowMailbox`, a ``MemoryConnector`` that
*sleeps* the IMAP round trips the real connector spends (a network wait costs no CPU; a
spin would), and acknowledgements leave through a transport that sleeps an SMTP
transaction's. Everything else is real: ``MailProcessor.process_mailbox`` and
``send_outbox`` in ``--workers`` processes of ``--slots`` threads each (each slot with its
own processor and connection, as a child of a Celery prefork worker with
``--concurrency``), over one repository: a database of a private PostgreSQL cluster the
script starts as the tests do, or a SQLite file shared by every worker.

The broker is modelled, not run: the parent process is the scheduler. Each cycle it
fires the fan-out, puts one poll task per mailbox on a queue the workers share, then
sends the acknowledgements with ``send_outbox`` tasks (one pass sends up to 1,000 mails;
as many passes at once as the backlog needs, as the schedule's overlapping passes
would). **Broker load** is the tasks the Celery schedule sends per poll interval (the
fan-out, a poll per mailbox, a ``send_outbox`` per outbox interval, a
``check_services``), per second, and the rate at which the fan-out's tasks drain.
``bench_scale.py`` measures what one task costs Redis.

**Database load** is every SQL statement the workers ran, grouped by the table it
touches, and the write transactions (commits): counted by SQLite's own
``set_trace_callback`` in each worker thread, or by PostgreSQL itself
(``pg_stat_statements``, and the COMMIT records ``pg_waldump`` finds in the WAL).
**Cycle time** is the wall time from the fan-out until the last poll task finished;
CPU time is the workers' (user + system, from ``/proc``).

Each size runs on a fresh database: a busy cycle (each mailbox holds 1 or 2 new emails,
1.5 on average, each to become one ticket and one acknowledgement), then a steady cycle
(empty mailboxes), ``--rounds`` times. The script exits 1 when any email is not exactly
one ticket, any acknowledgement is not sent once, or any poll failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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

# Round trips of a poll, as the IMAP connector spends them over TLS (counted through the
# fault proxy, see benchmarks/README.md): a new connection costs 6 (TLS handshake,
# greeting, CAPABILITY, LOGIN); every poll then SELECTs and searches (2); a poll that
# finds mail fetches it in one batch (2: sizes, then bodies) and, when the poll ends,
# moves every processed email in one command (2). A worker process keeps its
# connection to each mailbox it polled, so only its first poll of a mailbox connects.
CONNECT_TRIPS = 6
LIST_TRIPS = 2
FETCH_TRIPS = 2
ACK_TRIPS = 2
# An acknowledgement on an SMTP connection kept open for the pass: MAIL, RCPT, DATA, end.
SEND_TRIPS = 4
# The most mail one outbox pass sends (Outbox.send_due's default limit).
OUTBOX_PASS = 1000

#: Per-table groups of the statements counted (anything else is "other").
_TABLES = ("leases", "attempts", "dedupe", "tickets", "actions", "outbox", "state", "users")
_TABLE_RE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)", re.IGNORECASE)


# -- the simulated network ---------------------------------------------------------


class SlowMailbox(MemoryConnector):
    """A ``MemoryConnector`` whose server exchanges sleep round trips of ``latency``.

    Each thread stands for a worker process's own connection (each slot has its own
    processor): the first poll of the mailbox from a slot logs in, later ones reuse it.

    Args:
        name: The mailbox's name.
        latency: Seconds per round trip.
    """

    def __init__(self, name: str, latency: float) -> None:
        super().__init__(name)
        self.latency = latency
        self.logins = 0
        self._sessions: set[int] = set()
        self._acked = False

    def _wait(self, trips: int) -> None:
        time.sleep(self.latency * trips)

    def load(self, messages: Iterable[bytes]) -> None:
        """Put this cycle's new emails in the mailbox (the server received them)."""
        for raw in messages:
            self.add(raw)

    def fetch(self) -> Iterator[FetchedMessage]:
        """Log in unless this slot is still logged in, list, then fetch all in one batch."""
        if threading.get_ident() not in self._sessions:
            self._sessions.add(threading.get_ident())
            self.logins += 1
            self._wait(CONNECT_TRIPS)
        self._wait(LIST_TRIPS)
        messages = list(super().fetch())
        if messages:
            self._wait(FETCH_TRIPS)
        yield from messages

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Queue the move: sent in one command when the poll ends."""
        self._acked = True
        super().ack(ref, disposition)

    def end_session(self) -> None:
        """Send the queued moves (one command) and keep the connection."""
        if self._acked:
            self._acked = False
            self._wait(ACK_TRIPS)


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


def classify(sql: str) -> str:
    """The group a statement counts in: ``begin``/``commit``/``rollback``, or its table."""
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if verb in ("COMMIT", "BEGIN", "ROLLBACK"):
        return verb.lower()
    match = _TABLE_RE.search(sql)
    table = match.group(1).lower() if match else ""
    return f"table:{table if table in _TABLES else 'other'}"


class StatementCounter:
    """Counts the SQL statements each thread runs, by group (a SQLite trace callback)."""

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
        counts["statements"] += 1
        counts[classify(sql)] += 1


class Store:
    """Where the workers' repository lives: a SQLite file per database, or a database of
    a private PostgreSQL cluster (started here, as the tests start theirs), whose own
    ``pg_stat_statements`` counts the statements.

    Args:
        kind: ``"sqlite"`` or ``"postgresql"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server: Any = None
        self._wal_start = "0/0"
        self.label = "SQLite (one file, WAL)"
        if kind == "postgresql":
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.servers
            from tests.servers.postgres import start_postgres

            self.server = start_postgres()
            try:
                with self.server.admin() as connection:
                    connection.execute(
                        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
                    )
                self.server.restart("fast")  # the library loads at start only
                with self.server.admin() as connection:
                    connection.execute("CREATE EXTENSION pg_stat_statements")
                    version = connection.execute("SHOW server_version").fetchone()[0]
            except BaseException:
                self.server.close()
                raise
            self.label = f"PostgreSQL {version.split()[0]} (private cluster, fsync off)"
        elif kind != "sqlite":
            raise ValueError(f"--storage: sqlite or postgresql, not {kind!r}")

    def new_database(self, folder: Path) -> str:
        """A fresh, migrated database: its path (SQLite) or URL (PostgreSQL)."""
        if self.server is None:
            database = str(folder / "halomail.db")
            SQLiteTicketRepository(database).close()  # the schema, before workers race to it
            return database
        url: str = self.server.new_database()
        open_repository(url).close()
        return url

    def tickets(self, database: str) -> int:
        """Tickets in ``database`` now."""
        if self.server is None:
            with contextlib.closing(sqlite3.connect(database)) as connection:
                return int(connection.execute("SELECT count(*) FROM tickets").fetchone()[0])
        import psycopg

        with psycopg.connect(database) as connection:
            row = connection.execute("SELECT count(*) FROM tickets").fetchone()
        return int(row[0]) if row else 0

    def reset_counts(self) -> None:
        """Zero the server's statement counts and mark the WAL (PostgreSQL only)."""
        if self.server is not None:
            with self.server.admin() as connection:
                connection.execute("SELECT pg_stat_statements_reset()")
            self._wal_start = self._wal_position()

    def counts(self, database: str) -> collections.Counter[str]:
        """The server's statement counts in ``database`` since the reset, by group.

        With PostgreSQL, ``commit`` is the COMMIT records written to the WAL since the
        reset: the write transactions, whether a statement ran in one of its own or in
        a ``BEGIN`` … ``COMMIT`` (``pg_stat_database`` would also count read-only ones,
        and reports a backend's counts only up to ten seconds late).
        """
        counts: collections.Counter[str] = collections.Counter()
        if self.server is None:
            return counts  # SQLite's are counted by the workers themselves
        with self.server.admin() as connection:
            rows = connection.execute(
                "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d "
                "ON d.oid = s.dbid WHERE d.datname = %s",
                (database.rsplit("/", 1)[1],),
            ).fetchall()
        for query, calls in rows:
            counts["statements"] += calls
            counts[classify(query)] += calls
        counts.pop("commit", None)
        counts["commit"] = self._wal_commits(self._wal_start, self._wal_position())
        return counts

    def _wal_position(self) -> str:
        with self.server.admin() as connection:
            # Written out: a COMMIT is, before it returns (fsync off skips only the sync).
            row = connection.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        return str(row[0]) if row else "0/0"

    def _wal_commits(self, start: str, end: str) -> int:
        """COMMIT records between two WAL positions, counted by ``pg_waldump``."""
        if start == end:
            return 0
        done = subprocess.run(
            [
                str(self.server.bindir / "pg_waldump"),
                "--stats=record",
                *("--path", str(self.server.data / "pg_wal")),
                *("--start", start, "--end", end),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"^Transaction/COMMIT\s+(\d+)", done.stdout, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"pg_waldump: no COMMIT count: {done.stdout}{done.stderr}")
        return int(match.group(1))

    def close(self) -> None:
        """Stop the cluster, if one was started."""
        if self.server is not None:
            self.server.close()


def open_repository(database: str) -> SQLiteTicketRepository | Any:
    """The repository of ``database``: a PostgreSQL URL or a SQLite path."""
    if database.startswith("postgresql://"):
        from halomail.tickets.postgres import PostgreSQLTicketRepository

        return PostgreSQLTicketRepository(database)
    return SQLiteTicketRepository(database)


# -- a worker process ------------------------------------------------------------------


@attrs.frozen
class WorkerPlan:
    """What one worker process is started with."""

    number: int
    database: str
    mailboxes: int
    slots: int
    latency: float
    send_latency: float
    shared_processor: bool = False


def worker_main(plan: WorkerPlan, tasks: Queue[Any], results: Queue[Any]) -> None:
    """A worker: ``plan.slots`` threads taking tasks until each is told to stop.

    Each slot has its own processor and its own database connection, as each child of a
    Celery prefork worker has: its own lease owner and outbox claimant. With
    ``shared_processor`` the slots share one, as the threads of a threaded pool would.
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

    def make_processor() -> MailProcessor:
        repository = open_repository(plan.database)
        if isinstance(repository, SQLiteTicketRepository):
            # The repository's own connection; tracing it changes nothing it does.
            repository._connection.set_trace_callback(counter)  # type: ignore[union-attr]
        transport = slow_transport(plan.send_latency)
        return MailProcessor(
            repository, mailboxes, settings, transport=transport, owns_repository=True
        )

    shared = make_processor() if plan.shared_processor else None

    def serve() -> None:
        processor = shared or make_processor()
        try:
            while (task := tasks.get())[0] != "stop":
                results.put(run_task(task, processor, connectors, counter))
        finally:
            if shared is None:
                processor.close()

    threads = [threading.Thread(target=serve) for _ in range(plan.slots)]
    for thread in threads:
        thread.start()
    results.put(("ready", (plan.number, os.getpid()), {}, 0.0))
    for thread in threads:
        thread.join()
    if shared is not None:
        shared.close()


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
        connector = connectors[index]
        connector.load(emails_for(index, cycle, count))
        logins = connector.logins
        report = processor.process_mailbox(processor.mailboxes[index])
        created = sum(1 for o in report.outcomes if o.outcome.value == "created")
        outcome: tuple[Any, ...] = (created, report.error, connector.logins - logins)
    else:
        outcome = (processor.send_outbox().sent, None, 0)
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
    logins: int
    held: int
    errors: tuple[str, ...]


class Simulation:
    """Worker processes over one SQLite database, fed by this process as the scheduler."""

    def __init__(self, mailboxes: int, args: argparse.Namespace, store: Store) -> None:
        self.mailboxes = mailboxes
        self.slots = args.workers * args.slots
        self.held = 0  # IMAP connections the workers keep open
        self.store = store
        self.folder = Path(tempfile.mkdtemp(prefix="halomail-sim-scale-"))
        self.database = database = store.new_database(self.folder)
        context = multiprocessing.get_context("spawn")
        self.tasks: Queue[Any] = context.Queue()
        self.results: Queue[Any] = context.Queue()
        self.processes = [
            context.Process(
                target=worker_main,
                args=(
                    WorkerPlan(
                        n,
                        database,
                        mailboxes,
                        args.slots,
                        args.latency,
                        args.send_latency,
                        args.shared_processor,
                    ),
                    self.tasks,
                    self.results,
                ),
            )
            for n in range(args.workers)
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
        self.store.reset_counts()
        cpu_before = sum(cpu_seconds(pid) for pid in self.pids)
        started = time.perf_counter()
        emails = 0
        for index in range(self.mailboxes):  # the fan-out task's work
            count = emails_per_mailbox(index, busy)
            emails += count
            self.tasks.put(("poll", index, number, count))
        polls: collections.Counter[str] = collections.Counter()
        created = logins = 0
        errors: list[str] = []
        for _ in range(self.mailboxes):
            _, (made, error, logged_in), spent, _ = self._next("poll")
            polls.update(spent)
            logins += logged_in
            created += made
            if error:
                errors.append(error)
        seconds = time.perf_counter() - started
        self.held += logins  # the connections stay open for the next cycles
        polls.update(self.store.counts(self.database))
        self.store.reset_counts()
        outbox_started = time.perf_counter()
        sends: collections.Counter[str] = collections.Counter()
        sent = passes = 0
        while True:
            # One pass sends at most OUTBOX_PASS mails; the schedule's passes (one every
            # outbox interval) overlap while a backlog lasts, their claims keeping them
            # apart: as many at once as the backlog needs, until one finds nothing.
            wanted = max(1, -(-(created - sent) // OUTBOX_PASS))
            for _ in range(wanted):
                self.tasks.put(("outbox",))
            sent_now = 0
            for _ in range(wanted):
                _, (count, _, _), spent, _ = self._next("outbox")
                sends.update(spent)
                sent_now += count
            passes += wanted
            sent += sent_now
            if sent_now == 0 or sent >= created:
                break
        outbox_seconds = time.perf_counter() - outbox_started
        sends.update(self.store.counts(self.database))
        return Cycle(
            mailboxes=self.mailboxes,
            busy=busy,
            seconds=seconds,
            outbox_seconds=outbox_seconds,
            cpu_seconds=sum(cpu_seconds(pid) for pid in self.pids) - cpu_before,
            tasks=1 + self.mailboxes + passes,
            poll_statements=polls,
            outbox_statements=sends,
            emails=emails,
            created=created,
            sent=sent,
            logins=logins,
            held=self.held,
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
        return self.store.tickets(self.database)


# -- reporting -------------------------------------------------------------------------


def _median(runs: list[Cycle], value: Callable[[Cycle], float]) -> float:
    return float(statistics.median(value(c) for c in runs))


def schedule_tasks(mailboxes: int, args: argparse.Namespace) -> float:
    """Tasks the Celery schedule sends per poll interval: the fan-out, one poll per
    mailbox, one send_outbox per outbox interval, one check_services."""
    interval: float = args.interval
    outbox_interval: float = args.outbox_interval
    return 1 + mailboxes + interval / outbox_interval + 1


def print_report(cycles: list[Cycle], args: argparse.Namespace, storage: str) -> None:
    """The tables: per size and kind of cycle, medians over rounds; then the growth."""
    print(
        f"{args.workers} worker processes x {args.slots} slots"
        f"{' (one shared processor each)' if args.shared_processor else ''}, "
        f"{args.latency * 1000:g} ms per IMAP round trip, {args.send_latency * 1000:g} ms per "
        f"SMTP round trip, {storage}, median of {args.rounds} round(s)"
    )
    groups: dict[tuple[int, bool], list[Cycle]] = collections.defaultdict(list)
    for cycle in cycles:
        groups[(cycle.mailboxes, cycle.busy)].append(cycle)
    order = sorted(groups, key=lambda key: (key[0], not key[1]))
    print()
    print("Cycle (fan-out until every mailbox was polled once):")
    print(
        f"{'mailboxes':>9} {'cycle':>6} {'cycle s':>8} {'min-max':>13} {'CPU s':>6} "
        f"{'logins':>6} {'held conns':>10} {'emails':>6} {'outbox s':>8} {'sent/s':>6}"
    )
    for size, busy in order:
        runs = groups[(size, busy)]
        seconds = [c.seconds for c in runs]
        outbox = _median(runs, lambda c: c.outbox_seconds)
        sent = _median(runs, lambda c: c.sent)
        print(
            f"{size:>9} {'busy' if busy else 'steady':>6} {statistics.median(seconds):>8.2f} "
            f"{min(seconds):>6.2f}-{max(seconds):<6.2f} "
            f"{_median(runs, lambda c: c.cpu_seconds):>6.1f} "
            f"{_median(runs, lambda c: c.logins):>6.0f} {max(c.held for c in runs):>10} "
            f"{runs[0].emails:>6} {outbox:>8.2f} {sent / outbox if sent else 0.0:>6.0f}"
        )
    print()
    print(
        f"Broker (the Celery schedule at poll_interval_seconds = {args.interval:g}, "
        f"outbox_interval_seconds = {args.outbox_interval:g}):"
    )
    print(
        f"{'mailboxes':>9} {'cycle':>6} {'tasks/interval':>14} {'tasks/s':>8} "
        f"{'fan-out tasks/s':>15}"
    )
    for size, busy in order:
        runs = groups[(size, busy)]
        tasks = schedule_tasks(size, args)
        drain = (size + 1) / _median(runs, lambda c: c.seconds)
        print(
            f"{size:>9} {'busy' if busy else 'steady':>6} {tasks:>14.0f} "
            f"{tasks / args.interval:>8.1f} {drain:>15.0f}"
        )
    print()
    print("Database (every statement of the poll and outbox tasks; commits = write transactions):")
    print(
        f"{'mailboxes':>9} {'cycle':>6} {'statements':>10} {'commits':>7} {'stmts/mbx':>9} "
        f"{'commits/mbx':>11} {'lease stmts/mbx':>15} {'commits/s':>9}"
    )
    for size, busy in order:
        runs = groups[(size, busy)]
        statements = _median(
            runs, lambda c: c.poll_statements["statements"] + c.outbox_statements["statements"]
        )
        commits = _median(
            runs, lambda c: c.poll_statements["commit"] + c.outbox_statements["commit"]
        )
        leases = _median(runs, lambda c: c.poll_statements["table:leases"])
        busy_seconds = _median(runs, lambda c: c.seconds + c.outbox_seconds)
        print(
            f"{size:>9} {'busy' if busy else 'steady':>6} {statements:>10.0f} {commits:>7.0f} "
            f"{statements / size:>9.1f} {commits / size:>11.2f} {leases / size:>15.1f} "
            f"{commits / busy_seconds:>9.0f}"
        )
    print()
    print("Statements per mailbox per cycle, by table (poll tasks; the outbox's apart):")
    for size, busy in order:
        runs = groups[(size, busy)]
        polls: collections.Counter[str] = collections.Counter()
        sends: collections.Counter[str] = collections.Counter()
        for cycle in runs:
            polls.update(cycle.poll_statements)
            sends.update(cycle.outbox_statements)
        n = size * len(runs)
        shown = ", ".join(
            f"{key.removeprefix('table:')} {value / n:.2f}"
            for key, value in sorted(polls.items())
            if key.startswith("table:") or key == "commit"
        )
        outbox = sends["statements"] / n
        print(f"  {size:>5} {'busy' if busy else 'steady':<6} {shown}; outbox {outbox:.2f}")
    sizes = sorted({size for size, _ in groups})
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        print()
        print(f"Growth from {first} to {last} mailboxes ({last / first:g}x the mailboxes):")
        for busy in (True, False):
            a, b = groups.get((first, busy)), groups.get((last, busy))
            if a is None or b is None:
                continue

            def ratio(
                value: Callable[[Cycle], float], a: list[Cycle] = a, b: list[Cycle] = b
            ) -> float:
                return _median(b, value) / max(_median(a, value), 1e-9)

            print(
                f"  {'busy' if busy else 'steady':<6} cycle {ratio(lambda c: c.seconds):.1f}x, "
                f"CPU {ratio(lambda c: c.cpu_seconds):.1f}x, "
                f"tasks {schedule_tasks(last, args) / schedule_tasks(first, args):.1f}x, "
                f"statements {ratio(lambda c: c.poll_statements['statements']):.1f}x, "
                f"commits {ratio(lambda c: c.poll_statements['commit']):.1f}x"
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
    parser.add_argument("--latency", type=float, default=20.0, help="ms per IMAP round trip")
    parser.add_argument(
        "--send-latency", type=float, default=2.0, help="ms per SMTP round trip (a relay)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="busy + steady cycles per size")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    parser.add_argument(
        "--outbox-interval", type=float, default=10.0, help="outbox interval, seconds"
    )
    parser.add_argument("--report", type=Path, help="write every cycle here as JSON")
    parser.add_argument(
        "--storage",
        default="postgresql",
        choices=("sqlite", "postgresql"),
        help="a private PostgreSQL cluster started here (default), or one SQLite file",
    )
    parser.add_argument(
        "--shared-processor",
        action="store_true",
        help="one processor per worker process, shared by its slots (a threaded pool)",
    )
    args = parser.parse_args(argv)
    args.latency /= 1000
    args.send_latency /= 1000
    return args


def run_sizes(
    args: argparse.Namespace,
    store: Store,
    cycles: list[Cycle],
    problems: list[str],
    tickets: dict[int, int],
) -> None:
    """Each size on a fresh database: busy then steady cycles, ``args.rounds`` times."""
    for size in (int(s) for s in args.sizes.split(",")):
        simulation = Simulation(size, args, store)
        try:
            for round_no in range(args.rounds):
                for busy in (True, False):
                    cycle = simulation.cycle(2 * round_no + int(not busy), busy=busy)
                    cycles.append(cycle)
                    problems += check(cycle)
            expected = sum(c.emails for c in cycles if c.mailboxes == size)
            tickets[size] = simulation.tickets()
            if tickets[size] != expected:
                problems.append(f"{size} mailboxes: {tickets[size]} tickets for {expected} emails")
        finally:
            simulation.close()
        print(f"... {size} mailboxes done", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Simulate, print the tables; exit 1 when an email or an acknowledgement went wrong."""
    args = parse_args(argv)
    cycles: list[Cycle] = []
    problems: list[str] = []
    tickets: dict[int, int] = {}
    store = Store(args.storage)
    try:
        run_sizes(args, store, cycles, problems, tickets)
    finally:
        store.close()
    print_report(cycles, args, store.label)
    if args.report is not None:
        cycles_json = [attrs.asdict(c) for c in cycles]
        args.report.write_text(json.dumps({"cycles": cycles_json, "tickets": tickets}, indent=1))
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
