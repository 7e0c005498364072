"""Cycle time of 200 IMAP mailboxes with 1, 2 and 4 ``halomail worker`` processes.

Run it from the checkout, as root like the tests (it starts a private Dovecot, Redis
and PostgreSQL; about twelve minutes at the defaults)::

    python benchmarks/bench_scale.py                    # 200 mailboxes, 3 rounds
    python benchmarks/bench_scale.py --short            # 20 mailboxes, 1 round (CI)
    python benchmarks/bench_scale.py --storage sqlite   # one SQLite file instead

Everything is real: a private Dovecot with one account per mailbox, each reached over
TLS through the test suite's fault proxy, which holds back every chunk the server sends
by ``--latency`` milliseconds (so every IMAP round trip pays it once, as across a
network); a private Redis as the broker (append-only, as a broker must be) and a private
PostgreSQL cluster as the store (the tests' own servers, started the same way); and
``halomail worker -c halomail.toml --concurrency N`` subprocesses (Celery prefork: N
child processes each).

A **cycle** is the wall time from firing the fan-out (sending the
``halomail.schedule_polls`` task, as the scheduler does) until every mailbox was polled
once: each poll task logs one ``mailbox NAME: …`` line, and the script reads the
workers' logs until it has seen one per mailbox. Each round starts 1, 2, then 4 workers
(interleaved, so a quiet or busy moment of the machine touches every count), runs one
warm-up cycle (each worker process builds its processor on its first task), then:

- a **busy** cycle: ``--per-mailbox`` new emails in every INBOX, each to become one
  ticket (acknowledgements are off: this measures reading, not sending);
- a **steady** cycle: every INBOX empty, as most polls find them.

It prints, per number of workers, the median cycle time and its spread (min-max) over
the rounds, the ratio to one worker, the CPU time of the workers' processes (user +
system, children included), Redis's own command count and CPU per cycle (``INFO
commandstats`` reset before each cycle, ``INFO cpu``), the IMAP logins and the
connections left open, the server chunks a poll waited for, and PostgreSQL's statements
(``pg_stat_statements``) and write transactions (COMMIT records in the WAL) per poll. It
exits 1 when a mailbox was not polled, an email is not exactly one ticket, or an INBOX
still holds mail after a busy cycle. ``--report FILE`` also writes every cycle as JSON
(the test of ``--short`` reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from sim_scale import Store
from tests.servers.dovecot import Account, Dovecot, make_root, start_dovecot
from tests.servers.fault_proxy import FaultProxy
from tests.servers.redis import RedisServer, start_redis

from halomail.config.loader import load_config

# What a poll task logs when it ends: "mailbox NAME: 3 created" or "… : no new email".
_POLLED = re.compile(r"mailbox (box-\S+): (no new email|\d+ \w+)(.*)$")
_PASSWORD_ENV = "HALOMAIL_BENCH_BROKER_PASSWORD"  # noqa: S105 - a variable name
_DEADLINE = 600.0  # seconds a cycle may take before the run counts it as lost
# Each worker process keeps a logged-in connection to every mailbox it polled (the IMAP
# connector's end_session), and each TLS connection holds an imap-login process too:
# Dovecot's defaults (100 login processes, 1,024 imap processes) would drop clients.
_DOVECOT_LIMITS = """
default_process_limit = 5000
default_client_limit = 10000
service imap {
  process_limit = 5000
}
"""


# -- the servers ------------------------------------------------------------------------


class Broker:
    """The test suite's private Redis (persistent, as a broker must be) and its counters."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = server.client()

    def reset_stats(self) -> None:
        """Zero the per-command counters."""
        self.client.config_resetstat()

    def commands(self) -> dict[str, int]:
        """Calls per command since the last reset (``INFO commandstats``)."""
        stats = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def cpu_seconds(self) -> float:
        """The server's own CPU time so far (``INFO cpu``, user + system)."""
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def close(self) -> None:
        """Close the client (the server is stopped by its owner)."""
        self.client.close()


# -- the configuration -------------------------------------------------------------------


def write_config(
    path: Path,
    dovecot: Dovecot,
    proxy: FaultProxy,
    accounts: list[Account],
    storage: str,
    broker: str,
) -> None:
    """A halomail.toml: every account a mailbox, through the proxy, over TLS."""
    lines = [
        "[storage]",
        f'url = "{storage}"',
        "",
        "[scale]",
        f'broker_url = "{broker}"',
        f'broker_password_env = "{_PASSWORD_ENV}"',
        # The script fires each fan-out itself; a poll expires after this long.
        "poll_interval_seconds = 3600",
        "",
    ]
    for account in accounts:
        lines += [
            "[[mailboxes]]",
            f'name = "box-{account.username}"',
            'connection = "imap"',
            f'host = "{proxy.host}"',
            f"port = {proxy.port}",
            'security = "tls"',
            f'tls_ca_file = "{dovecot.ca_file}"',
            f'username = "{account.username}"',
            f'password = "{account.password}"',
            "send_acknowledgement = false",
            "",
        ]
    path.write_text("\n".join(lines))


def fill(dovecot: Dovecot, accounts: list[Account], per_mailbox: int, cycle: int) -> int:
    """Append ``per_mailbox`` new emails to every INBOX (directly, not through the proxy)."""
    for index, account in enumerate(accounts):
        for n in range(per_mailbox):
            dovecot.append(account, _email(index, cycle, n))
    return per_mailbox * len(accounts)


def _email(index: int, cycle: int, n: int) -> bytes:
    lines = [
        f"From: Customer {index} <user{index}@customer{index % 40}.example>",
        "To: support@helpdesk.example",
        f"Subject: Printer {index} problem {cycle}.{n}",
        "Date: Sun, 06 Dec 2026 08:00:00 +0000",
        f"Message-ID: <bench-{index}-{cycle}-{n}@customer.example>",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "",
        f"The printer of desk {index} jams on every page (cycle {cycle}, email {n}).",
        "",
    ]
    return "\r\n".join(lines).encode()


def inbox_counts(dovecot: Dovecot, accounts: list[Account]) -> int:
    """Emails left in every INBOX, in all."""
    left = 0
    for account in accounts:
        with dovecot.imap(account) as client:
            status, data = client.status("INBOX", "(MESSAGES)")
            left += int(re.findall(rb"MESSAGES (\d+)", data[0] or b"")[0]) if status == "OK" else 0
    return left


# -- the workers ---------------------------------------------------------------------------


class Workers:
    """``count`` ``halomail worker`` subprocesses, each logging to its own file."""

    def __init__(self, config: Path, folder: Path, count: int, concurrency: int) -> None:
        self.logs = [folder / f"worker-{count}-{n}.log" for n in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for n, log in enumerate(self.logs):
            with log.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "halomail.cli",
                            "-c",
                            str(config),
                            "worker",
                            "--concurrency",
                            str(concurrency),
                            "--hostname",
                            f"bench{n}@%h",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        self._offsets = [0] * count

    def mark(self) -> None:
        """From now on, :meth:`polled` reads only what the workers log after this call."""
        self._offsets = [log.stat().st_size for log in self.logs]

    def polled(self) -> dict[str, str]:
        """Each mailbox polled since :meth:`mark`, with what its poll logged after the name."""
        seen: dict[str, str] = {}
        for log, offset in zip(self.logs, self._offsets, strict=True):
            with log.open("rb") as text:
                text.seek(offset)
                for line in text.read().decode("utf-8", "replace").splitlines():
                    if match := _POLLED.search(line):
                        seen[match.group(1)] = match.group(2) + match.group(3)
        return seen

    def cpu_seconds(self) -> float:
        """User + system CPU of every worker process and its pool's children, now."""
        return sum(_tree_cpu(process.pid) for process in self.processes)

    def alive(self) -> bool:
        """Whether every worker is still running."""
        return all(process.poll() is None for process in self.processes)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then a kill for any worker still there after 30 s."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, from ``/proc``."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        spent[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(spent.get(pid, 0.0) for pid in tree)


# -- one cycle -----------------------------------------------------------------------------


@attrs.frozen
class Cycle:
    """What one cycle measured."""

    round: int
    workers: int
    kind: str  # "busy" or "steady" ("warm-up" cycles are not kept)
    seconds: float
    cpu_seconds: float
    redis_commands: int
    redis_cpu_seconds: float
    statements: int  # PostgreSQL only (counted by the server); 0 with SQLite
    commits: int
    connections: int
    held_connections: int
    delayed_chunks: int
    mailboxes: int
    polled: int
    emails: int
    tickets: int
    left_in_inboxes: int
    failed_polls: tuple[str, ...]


class Bench:
    """The servers, the configuration, and the Celery app that fires fan-outs."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.cycles = 0
        # Whatever started is stopped again, also when a later part fails to start.
        self._started = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._started.close()
            raise

    def _start(self) -> None:
        self.dovecot = start_dovecot(make_root(), extra_config=_DOVECOT_LIMITS)
        self._started.callback(self.dovecot.stop)
        self.proxy = FaultProxy(self.dovecot.host, self.dovecot.imaps_port)
        self._started.callback(self.proxy.close)
        self.proxy.latency = self.args.latency / 1000
        server = self._started.enter_context(start_redis())
        # The workers and this process read the broker's password from the environment.
        os.environ[_PASSWORD_ENV] = server.password
        self.redis = Broker(server)
        self._started.callback(self.redis.close)
        self.store = Store(self.args.storage)
        self._started.callback(self.store.close)
        self.accounts = [self.dovecot.new_account() for _ in range(self.args.mailboxes)]
        self.database = self.store.new_database(self.folder)
        postgres = self.args.storage == "postgresql"
        storage = self.database if postgres else f"sqlite:///{self.database}"
        self.config = self.folder / "halomail.toml"
        write_config(self.config, self.dovecot, self.proxy, self.accounts, storage, server.url())
        from halomail.celery import SCHEDULE_POLLS, create_app

        self.app = create_app(load_config(self.config))
        self._started.callback(self.app.close)
        self.fan_out = SCHEDULE_POLLS

    def close(self) -> None:
        """Stop every server the bench started."""
        self._started.close()

    def start_workers(self, count: int) -> Workers:
        """Start ``count`` workers and wait until each answers a ping."""
        workers = Workers(self.config, self.folder, count, self.args.concurrency)
        deadline = time.monotonic() + 120
        while len(self.app.control.ping(timeout=0.5)) < count:
            if time.monotonic() > deadline or not workers.alive():
                workers.stop()
                raise RuntimeError(f"{count} workers did not start: see {workers.logs}")
        return workers

    def cycle(self, workers: Workers, round_no: int, kind: str) -> Cycle:
        """Fill the INBOXes (busy), fire the fan-out, wait until every mailbox was polled."""
        self.cycles += 1
        emails = (
            fill(self.dovecot, self.accounts, self.args.per_mailbox, self.cycles)
            if (kind == "busy")
            else 0
        )
        tickets_before = self.tickets()
        workers.mark()
        self.store.reset_counts()
        self.redis.reset_stats()
        redis_cpu = self.redis.cpu_seconds()
        cpu_before = workers.cpu_seconds()
        connections, delays = self.proxy.connections, self.proxy.delays
        started = time.perf_counter()
        self.app.send_task(self.fan_out)
        deadline = time.monotonic() + _DEADLINE
        while len(polled := workers.polled()) < len(self.accounts):
            if time.monotonic() > deadline or not workers.alive():
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu = workers.cpu_seconds() - cpu_before
        commands = sum(self.redis.commands().values())
        redis_cpu = self.redis.cpu_seconds() - redis_cpu
        statements = self.store.counts(self.database)
        return Cycle(
            round=round_no,
            workers=len(workers.processes),
            kind=kind,
            seconds=seconds,
            cpu_seconds=cpu,
            redis_commands=commands,
            redis_cpu_seconds=redis_cpu,
            statements=statements["statements"],
            commits=statements["commit"],
            connections=self.proxy.connections - connections,
            held_connections=self.proxy.open_connections(),
            delayed_chunks=self.proxy.delays - delays,
            mailboxes=len(self.accounts),
            polled=len(polled),
            emails=emails,
            tickets=self.tickets() - tickets_before,
            left_in_inboxes=inbox_counts(self.dovecot, self.accounts) if kind == "busy" else 0,
            failed_polls=tuple(f"{n}: {what}" for n, what in polled.items() if "error" in what),
        )

    def tickets(self) -> int:
        """Tickets in the repository now."""
        return self.store.tickets(self.database)


# -- the run -------------------------------------------------------------------------------


def problems_of(cycle: Cycle) -> Iterator[str]:
    """What went wrong in a cycle."""
    where = f"round {cycle.round}, {cycle.workers} workers, {cycle.kind}"
    if cycle.polled != cycle.mailboxes:
        yield f"{where}: {cycle.polled}/{cycle.mailboxes} mailboxes polled"
    if cycle.tickets != cycle.emails:
        yield f"{where}: {cycle.tickets} tickets for {cycle.emails} emails"
    if cycle.left_in_inboxes:
        yield f"{where}: {cycle.left_in_inboxes} emails left in the INBOXes"
    for failure in cycle.failed_polls[:5]:
        yield f"{where}: poll failed: {failure}"


def print_report(cycles: list[Cycle], args: argparse.Namespace, storage: str) -> None:
    """Per kind of cycle and number of workers: medians, spread, ratio, CPU, Redis, IMAP."""
    print(
        f"{args.mailboxes} IMAP mailboxes over TLS, {args.latency:g} ms per server chunk, "
        f"{args.per_mailbox} emails each in a busy cycle; workers with --concurrency "
        f"{args.concurrency} (prefork); storage {storage}; "
        f"{args.rounds} interleaved round(s)"
    )
    counts = sorted({c.workers for c in cycles})
    for kind in ("busy", "steady"):
        print()
        print(
            f"{kind:>6} {'workers':>7} {'cycle s':>8} {'min-max':>13} {'vs 1':>6} "
            f"{'CPU s':>6} {'Redis cmds':>10} {'cmds/poll':>9} {'Redis ms':>8} {'new conns':>9} "
            f"{'held':>5} {'chunks/poll':>11} {'SQL/poll':>8} {'commits/poll':>12}"
        )
        medians = {
            n: statistics.median(c.seconds for c in cycles if c.workers == n and c.kind == kind)
            for n in counts
        }
        for n in counts:
            runs = [c for c in cycles if c.workers == n and c.kind == kind]
            seconds = [c.seconds for c in runs]
            commands = statistics.median(c.redis_commands for c in runs)
            chunks = statistics.median(c.delayed_chunks for c in runs)
            print(
                f"{'':>6} {n:>7} {medians[n]:>8.2f} {min(seconds):>6.2f}-{max(seconds):<6.2f} "
                f"{medians[n] / medians[counts[0]]:>5.2f}x "
                f"{statistics.median(c.cpu_seconds for c in runs):>6.1f} {commands:>10.0f} "
                f"{commands / args.mailboxes:>9.1f} "
                f"{statistics.median(c.redis_cpu_seconds for c in runs) * 1000:>8.0f} "
                f"{statistics.median(c.connections for c in runs):>9.0f} "
                f"{statistics.median(c.held_connections for c in runs):>5.0f} "
                f"{chunks / args.mailboxes:>11.1f} "
                f"{_per_poll(runs, 'statements', args):>8} {_per_poll(runs, 'commits', args):>12}"
            )


def _per_poll(runs: list[Cycle], what: str, args: argparse.Namespace) -> str:
    """A database count per poll, or "-" where the server does not count (SQLite)."""
    if args.storage != "postgresql":
        return "-"
    return f"{statistics.median(getattr(c, what) for c in runs) / args.mailboxes:.1f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--short`` is 20 mailboxes, 1 and 2 workers, one round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--per-mailbox", type=int, default=3, help="emails in a busy cycle")
    parser.add_argument("--latency", type=float, default=20.0, help="ms per server chunk")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, interleaved")
    parser.add_argument("--concurrency", type=int, default=4, help="--concurrency per worker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--storage",
        default="postgresql",
        choices=("sqlite", "postgresql"),
        help="a private PostgreSQL cluster started here (default), or a SQLite file",
    )
    parser.add_argument("--report", type=Path, help="write every cycle here as JSON")
    parser.add_argument("--short", action="store_true", help="20 mailboxes, 1-2 workers, 1 round")
    args = parser.parse_args(argv)
    if args.short:
        args.mailboxes, args.workers, args.rounds, args.concurrency = 20, "1,2", 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print the tables; exit 1 when a cycle lost or doubled anything."""
    args = parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="halomail-bench-scale-"))
    cycles: list[Cycle] = []
    bench = Bench(args, folder)
    try:
        for round_no in range(1, args.rounds + 1):
            for count in counts:
                workers = bench.start_workers(count)
                try:
                    bench.cycle(workers, round_no, "warm-up")
                    for kind in ("busy", "steady"):
                        cycles.append(bench.cycle(workers, round_no, kind))
                finally:
                    workers.stop()
                print(f"... round {round_no}, {count} workers done", file=sys.stderr, flush=True)
    finally:
        bench.close()
    print_report(cycles, args, bench.store.label)
    problems = [p for cycle in cycles for p in problems_of(cycle)]
    if args.report is not None:
        args.report.write_text(json.dumps([attrs.asdict(c) for c in cycles], indent=1))
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    if not problems:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"(the workers' logs are kept in {folder})", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
