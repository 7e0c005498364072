"""Time per email with 1,000 versus 100,000 tickets already in the SQLite repository.

Run it from the checkout::

    python benchmarks/bench_growth.py                         # 1,000 vs 100,000, ~1.5 min
    python benchmarks/bench_growth.py --small 1000 --large 20000 --batch 300  # quicker

Each size gets one SQLite database, filled through the repository's own API in one
transaction (so it is exactly what halomail writes), with a clock in the past: per
ticket, the customer's email as its first action (with its Message-ID), the dedupe
record of that email, an acknowledgement in the outbox (our Message-ID, marked sent)
and, for nine tickets in ten, the ticket closed. Forty customers own the corpus's
mail domains. Ticket *i* is the same in both databases, so the larger one holds the
smaller one's tickets and 99,000 more.

The batch is the same bytes for both: ``--batch`` emails (500 by default), of which
a quarter reply to existing tickets by an ``[ID:n]`` subject tag, a quarter by an
In-Reply-To naming our acknowledgement's Message-ID (both from the ticket's user, to
tickets 1-1,000 so they exist in both), and half are new emails from the corpus
(plain, HTML and legacy-charset; the emails with multi-megabyte attachments are left
out so that the per-email database work is not drowned by base64 decoding).

Each round processes the batch once per size, each time on a fresh copy of that
size's database, alternating the sizes. Printed: the median ms per email per size
and their ratio (goal <= 1.3x). Exit status 1 when the two sizes do not give each
email the same outcome (and, for follow-ups, the same ticket).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import corpus
from bench_pipeline import STAGES, bench_rules, make_processor, pin_one_core, stage_timers

from halomail import NewAction, NewTicket, SQLiteTicketRepository, TicketStatus
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewOutgoing,
    OutboxStatus,
)

SEED = corpus.DEFAULT_SEED
#: Replies go to tickets up to this id, so that they exist in every database.
REPLY_RANGE = 1_000


def _ticket_fields(index: int, rng: random.Random, people: list[corpus.Person]) -> tuple:
    """The sender, subject and original Message-ID of prefilled ticket ``index``."""
    person = people[rng.randrange(len(people))]
    topic = corpus._TOPICS[index % len(corpus._TOPICS)][0]
    subject = f"{topic} ({index})"
    message_id = f"{rng.getrandbits(64):016x}.t{index}@{person.domain}"
    ours = f"halomail.{index}.{rng.getrandbits(64):016x}.{rng.getrandbits(48):012x}@msp.example"
    return person, subject, message_id, ours


def _tickets(count: int) -> Iterator[tuple[int, corpus.Person, str, str, str]]:
    """Ticket 1..count, the same for every count (one generator per ticket index)."""
    people = corpus.people(SEED)
    for index in range(1, count + 1):
        rng = random.Random(index * 7919 + SEED)
        person, subject, message_id, ours = _ticket_fields(index, rng, people)
        yield index, person, subject, message_id, ours


class _PastClock:
    """A clock that starts two years back and advances a minute per call."""

    def __init__(self) -> None:
        self.now = dt.datetime(2022, 5, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=60)
        return self.now


def prefill(path: Path, count: int) -> float:
    """Fill a new database at ``path`` with ``count`` tickets; returns the seconds taken."""
    start = time.perf_counter()
    clock = _PastClock()
    repository = SQLiteTicketRepository(path, clock=clock)
    body = " ".join(corpus._SENTENCES[:6])
    with repository.transaction():
        domains = sorted({p.domain for p in corpus.people(SEED)} - set(corpus._FREEMAIL))
        customers = {}
        for domain in domains:
            customer = repository.add_customer(domain.split(".")[0].title(), [domain])
            customers[domain] = customer.name
        for index, person, subject, message_id, ours in _tickets(count):
            ticket = repository.create_ticket(
                NewTicket(
                    summary=subject,
                    details=body,
                    ticket_type="Incident",
                    user_email=person.address,
                    user_name=person.name,
                    mailbox="Support",
                    customer=customers.get(person.domain),
                )
            )
            assert ticket.id == index
            repository.add_action(
                NewAction(
                    ticket_id=index,
                    kind=ActionKind.EMAIL_IN,
                    body=body,
                    from_address=person.address,
                    message_id=message_id,
                )
            )
            repository.record_dedupe(
                DedupeRecord(
                    f"Support\x1fid:{message_id}", f"{index:064x}", "created", index, clock()
                )
            )
            mail = repository.enqueue_outgoing(
                NewOutgoing(
                    message_id=ours,
                    to=(person.address,),
                    subject=f"[ID:{index}] {subject}",
                    text=f"Thank you for your email. We have logged it as ticket {index}.",
                    mailbox="Support",
                    kind="acknowledgement",
                    ticket_id=index,
                    in_reply_to=message_id,
                    references=(message_id,),
                    auto_submitted=True,
                )
            )
            repository.mark_outgoing(mail.id, OutboxStatus.SENT)
            if index % 10:
                repository.set_status(index, TicketStatus.CLOSED)
    repository.close()
    return time.perf_counter() - start


def batch(size: int) -> list[bytes]:
    """The emails processed at every size: replies to tickets 1-1,000 and new emails."""
    rng = random.Random(SEED + 1)
    tickets = list(_tickets(REPLY_RANGE))
    when = dt.datetime(2024, 6, 3, 9, 0, tzinfo=dt.UTC)
    emails: list[bytes] = []
    replies = size // 2
    for number in range(replies):
        index, person, subject, _message_id, ours = tickets[rng.randrange(len(tickets))]
        when += dt.timedelta(seconds=rng.randint(5, 60))
        own_id = f"<{rng.getrandbits(64):016x}.r{number}@{person.domain}>"
        if number % 2 == 0:
            raw = corpus.plain_reply(
                person, f"RE: [ID:{index}] {subject}", message_id=own_id, when=when,
                seed=SEED + number,
            )  # fmt: skip
        else:
            raw = corpus.plain_reply(
                person, f"Re: {subject}", message_id=own_id, when=when,
                in_reply_to=f"<{ours}>", seed=SEED + number,
            )  # fmt: skip
        emails.append(raw)
    # New emails: the corpus's, without its own follow-ups (whose tags point at the
    # tickets a fresh repository would have) and without the big attachments.
    fresh = [
        raw
        for kind, raw in corpus.generate_labelled(size * 2, SEED + 2)
        if kind != "attachment" and b"[ID:" not in raw.split(b"\r\n\r\n", 1)[0]
    ]
    emails += fresh[: size - replies]
    random.Random(SEED + 3).shuffle(emails)
    return emails


def _fresh_copy(database: Path, work: Path) -> SQLiteTicketRepository:
    target = work / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(database, target)
    # Flush the copy now: otherwise the first checkpoint's fsync during the run would
    # pay for writing back the whole freshly copied file, which a real database never has.
    with open(target, "rb+") as copied:
        os.fsync(copied.fileno())
    return SQLiteTicketRepository(target)


def run(database: Path, work: Path, emails: list[bytes]) -> tuple[float, float, list[tuple]]:
    """Process ``emails`` on a fresh copy of ``database``.

    Returns:
        The wall-clock seconds, the process's CPU seconds, and per-email results.
    """
    repository = _fresh_copy(database, work)
    processor, _connector = make_processor(repository, emails, rules=bench_rules())
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    report = processor.run_once()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    repository.close()
    results = [
        (
            o.outcome.value,
            o.reason,
            o.ticket_id if o.ticket_id is not None and o.ticket_id <= REPLY_RANGE else "new",
            o.acknowledged,
        )
        for o in report.outcomes
    ]
    return elapsed, cpu, results


class _StatementClock:
    """A sqlite3 connection stand-in that times each SQL statement by its text."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def _timed(self, method: Callable[..., Any], sql: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(sql, *args)
        finally:
            key = " ".join(sql.split())
            self.seconds[key] += time.perf_counter() - start
            self.calls[key] += 1

    def execute(self, sql: str, *args: Any) -> Any:
        """Time ``Connection.execute``."""
        return self._timed(self._connection.execute, sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        """Time ``Connection.executemany``."""
        return self._timed(self._connection.executemany, sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def breakdown(
    database: Path, work: Path, emails: list[bytes]
) -> tuple[dict[str, float], dict[str, float], Counter[str]]:
    """One run with stage timers, one with statement timers: seconds per stage and per SQL."""
    repository = _fresh_copy(database, work)
    processor, _connector = make_processor(repository, emails, rules=bench_rules())
    with stage_timers(repository) as clock:
        gc.collect()
        processor.run_once()
    repository.close()
    stages = dict(clock.exclusive)

    repository = _fresh_copy(database, work)
    processor, _connector = make_processor(repository, emails, rules=bench_rules())
    real = repository._connection
    assert real is not None
    statements = _StatementClock(real)
    repository._connection = statements  # type: ignore[assignment]
    gc.collect()
    processor.run_once()
    repository._connection = real
    repository.close()
    return stages, dict(statements.seconds), statements.calls


def _lower(
    runs: list[tuple[dict[str, float], dict[str, float], Counter[str]]],
) -> tuple[dict[str, float], dict[str, float], Counter[str]]:
    """Per key, the lowest time over several breakdown runs."""
    stages = {k: min(run[0].get(k, 0.0) for run in runs) for k in runs[0][0]}
    statements = {k: min(run[1].get(k, 0.0) for run in runs) for k in runs[0][1]}
    return stages, statements, runs[0][2]


def main(argv: list[str] | None = None) -> int:
    """Prefill both sizes, time the batch on each, print the ratio; exit 1 on disagreement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--small", type=int, default=1_000, help="tickets (default 1,000)")
    parser.add_argument("--large", type=int, default=100_000, help="tickets (default 100,000)")
    parser.add_argument("--batch", type=int, default=500, help="emails per run (default 500)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    args = parser.parse_args(argv)
    if args.small < REPLY_RANGE:
        parser.error(f"--small must be at least {REPLY_RANGE}: replies go to tickets 1-1,000")

    pinned = pin_one_core()
    emails = batch(args.batch)
    print(
        f"batch of {len(emails)} emails ({sum(map(len, emails)) / 1e6:.1f} MB), "
        f"{args.rounds} rounds, one core ({pinned}), Python {sys.version.split()[0]}"
    )
    sizes = (args.small, args.large)
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    cpu: dict[int, list[float]] = {size: [] for size in sizes}
    results: dict[int, list[tuple]] = {}
    with tempfile.TemporaryDirectory(prefix="halomail-growth-") as tmp:
        base = Path(tmp)
        databases = {}
        for size in sizes:
            databases[size] = base / f"prefill-{size}.db"
            took = prefill(databases[size], size)
            megabytes = databases[size].stat().st_size / 1e6
            print(f"  prefilled {size:>7,} tickets in {took:5.1f} s ({megabytes:.1f} MB)")
        work = base / "work"
        work.mkdir()
        for size in sizes:  # warm-up, and the results to compare
            _elapsed, _cpu, results[size] = run(databases[size], work, emails)
        for round_number in range(args.rounds):
            order = sizes if round_number % 2 == 0 else sizes[::-1]
            for size in order:
                elapsed, cpu_seconds, _results = run(databases[size], work, emails)
                seconds[size].append(elapsed)
                cpu[size].append(cpu_seconds)
            print(
                f"  round {round_number + 1}: "
                + "  ".join(f"{s:,} tickets {seconds[s][-1]:.2f} s" for s in sizes),
                flush=True,
            )
        # The breakdowns: two runs per size, interleaved; the lower figure of the two
        # for each stage and statement (the machine's noise only ever adds time).
        runs: dict[int, list[tuple[dict[str, float], dict[str, float], Counter[str]]]] = {
            size: [] for size in sizes
        }
        for size in (*sizes, *sizes[::-1]):
            runs[size].append(breakdown(databases[size], work, emails))
        details = {size: _lower(runs[size]) for size in sizes}

    outcomes = Counter(outcome for outcome, _reason, _ticket, _ack in results[args.small])
    print()
    print("outcomes per run: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print()
    print(f"{'tickets':>9} {'ms/email':>9} {'emails/s':>9} {'rounds (s)':>16} {'CPU ms/email':>13}")
    medians, cpu_medians = {}, {}
    for size in sizes:
        median = statistics.median(seconds[size])
        medians[size], cpu_medians[size] = median, statistics.median(cpu[size])
        spread = f"{min(seconds[size]):.2f} - {max(seconds[size]):.2f}"
        print(
            f"{size:>9,} {median / len(emails) * 1e3:>9.3f} {len(emails) / median:>9.0f} "
            f"{spread:>16} {cpu_medians[size] / len(emails) * 1e3:>13.3f}"
        )
    per_round = [b / a for a, b in zip(seconds[args.small], seconds[args.large], strict=True)]
    print()
    print(
        f"time per email, {args.large:,} / {args.small:,} tickets: "
        f"{medians[args.large] / medians[args.small]:.2f}x (goal <= 1.3x)"
    )
    print(
        f"  per round (both sizes run back to back): median {statistics.median(per_round):.2f}x, "
        f"{min(per_round):.2f} - {max(per_round):.2f}x; "
        f"CPU time (process_time): {cpu_medians[args.large] / cpu_medians[args.small]:.2f}x"
    )

    small, large = details[args.small], details[args.large]
    count = len(emails)
    print()
    print("where the time goes (stage timers; the lower of two runs per size; µs per email)")
    print(f"{'stage':<17} {f'{args.small:,}':>9} {f'{args.large:,}':>9} {'ratio':>7}")
    for stage in STAGES:
        a, b = small[0].get(stage, 0.0), large[0].get(stage, 0.0)
        ratio = f"{b / a:.2f}x" if a else "-"
        print(f"{stage:<17} {a / count * 1e6:>9.1f} {b / count * 1e6:>9.1f} {ratio:>7}")
    print()
    print("SQL statements (timed per statement; the lower of two runs), by growth, µs per email")
    print(f"{'calls':>6} {f'{args.small:,} µs':>10} {f'{args.large:,} µs':>12}  statement")
    keys = set(small[1]) | set(large[1])
    ranked = sorted(keys, key=lambda k: large[1].get(k, 0.0) - small[1].get(k, 0.0), reverse=True)
    for key in ranked[:12]:
        text = key if len(key) <= 90 else key[:87] + "..."
        print(
            f"{large[2][key]:>6} {small[1].get(key, 0.0) / count * 1e6:>10.1f} "
            f"{large[1].get(key, 0.0) / count * 1e6:>12.1f}  {text}"
        )
    if results[args.small] != results[args.large]:
        differing = sum(
            a != b for a, b in zip(results[args.small], results[args.large], strict=True)
        )
        print(f"DISAGREEMENT: {differing} emails ended differently", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
