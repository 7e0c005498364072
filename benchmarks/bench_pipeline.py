"""Throughput of halomail on real mail, against the stdlib, the floor and a conventional pipeline.

Run it from the checkout::

    python benchmarks/bench_pipeline.py            # all 5,983 real + 1,000 generated, ~10 min
    python benchmarks/bench_pipeline.py --short    # 200 real + 100 generated, 3 rounds, no (b)

**Real mail first**: the SpamAssassin corpus (``HALOMAIL_CORPUS``, else
``../shared/corpus/spamassassin`` next to the checkout; see ``real_mail.py``). Then 1 KB
plain-text emails, each from its own sender (the pipeline's fixed cost per email shows
there, and the last line says how many times compat32's time it is). Then the
generated corpus of ``corpus.py`` (60% plain replies with quoted history, 25% HTML, 10%
with attachments, 5% legacy charsets), as a whole and per kind: its base64 attachments
are most of its bytes, the one shape where halomail's parser beats the stdlib's, so the
mix alone would flatter halomail.

Over each corpus, on one core (the process is pinned to one CPU), every round runs,
one after another so that noise hits all alike:

(A) **the baseline**: ``compat32`` parsing **plus** reading the headers the pipeline
    reads and decoding the parts it decodes (``real_mail.compat32_baseline``: RFC 2047
    words, addresses, the date; text parts to ``str``, attachments to bytes);
(a) ``email.message_from_bytes(raw, policy=compat32)`` alone, the old baseline;
(P) ``halomail.parse_email`` alone;
(F) **the floor** (``floor.py``): ``parse_email``, the text read, and one row per email
    committed to SQLite in batches as (C) commits them, nothing else;
(S) **(C)'s SQL statements alone** (``statements.py``): every statement (C) ran, with
    its parameters and in its order (recorded in an untimed run), replayed into a fresh
    database with nothing between them: SQLite's own cost of what (C) stores;
(M) **halomail in memory**: (C) below, but into an ``InMemoryTicketRepository``:
    halomail's own work, with storing in Python dictionaries instead of SQLite (it must
    decide every email as (C) does, or the run fails);
(C) **halomail**: ``MailProcessor.run_once()`` over a ``MemoryConnector`` holding the
    corpus, a fresh ``SQLiteTicketRepository`` in a temporary directory, acknowledgements
    on (queued; no transport), forty rules that no email matches (the common case), and
    ``batch_size`` emails per transaction (``--batch-size``, 10 by default).

Printed per corpus: ms per email of each (CPU time, ``time.process_time``, the median
round) and each one's throughput ratio to (A), and to (a): the median over the rounds,
with the lowest and highest round. Ratios per round are what a loaded machine leaves meaningful.
Then how many times (F)'s CPU time (C) takes: how far the whole pipeline is from its floor;
(M)'s share of (C)'s time: what is left when storing is taken away; and the share of
(P) + (S): parsing and storing with no Python between, the least any rework of (C)'s
Python could reach while storing the same rows.

Then, on the generated corpus only and unless ``--short``: (b) **conventional**, the
pipeline helpdesks commonly write (``conventional.py``: ``policy.default``, bleach,
html2text, email-reply-parser, a commit per email; ``pip install -e '.[bench]'``), the
share of each stage of (C) from a run with timers wrapped around halomail's functions
(in this script only), and the top functions of a cProfile run.

``--report PATH`` writes every round's CPU seconds as JSON. Exit status 1 when a
pipeline failed an email: (C) leaving one for retry, or (b) raising.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import email
import functools
import gc
import json
import logging
import os
import pstats
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email import policy
from pathlib import Path
from typing import Any

import corpus
import real_mail
from conventional import run_conventional
from floor import Floor
from statements import Recorder, Recording, Replay
from timing import Timing, ratio_spread

import halomail.inbound._deferred
import halomail.inbound._mime
import halomail.inbound.models
import halomail.inbound.parse
import halomail.outbound.notifier
import halomail.pipeline.acknowledge
import halomail.pipeline.decide
import halomail.pipeline.records
import halomail.pipeline.unit
import halomail.rules
from halomail import (
    EmailRule,
    InMemoryTicketRepository,
    Mailbox,
    MailProcessor,
    MemoryConnector,
    Outcome,
    ProcessorSettings,
    RuleType,
    SenderIdentity,
    SQLiteTicketRepository,
)
from halomail.tickets.sqlite import SQLiteTicketRepository as _SQLiteClass

MAILBOX = "Support"
LOOP_TOKEN = "benchmark-loop-token"  # noqa: S105 - a fixed marker, not a secret


# -- (c) halomail -----------------------------------------------------------------


def bench_rules() -> list[EmailRule]:
    """Forty rules of the usual kinds (monitoring, backups, newsletters, vendors).

    None matches an email of the corpus, as for most customer mail: every email is
    evaluated against all of them and falls through to a plain new ticket.
    """
    rules: list[EmailRule] = []
    tools = ("nagios", "zabbix", "prtg", "veeam", "acronis", "datto", "sophos", "defender")
    for index, tool in enumerate(tools):
        rules.append(
            EmailRule(
                name=f"{tool} alerts",
                type=RuleType.ALERT,
                sequence=10 + index,
                from_=(f"{tool}@monitoring.msp.example",),
                from_exact=True,
                closure_string="RECOVERY",
            )
        )
        rules.append(
            EmailRule(
                name=f"{tool} reports",
                type=RuleType.IGNORE,
                sequence=100 + index,
                from_=(f"@{tool}-cloud.example",),
                subject=("daily report", "weekly summary"),
            )
        )
    for index, word in enumerate(("newsletter", "webinar", "unsubscribe", "special offer")):
        rules.append(
            EmailRule(
                name=f"ignore {word}",
                type=RuleType.IGNORE,
                sequence=200 + index,
                subject=(f"[{word}]",),
            )
        )
    for index in range(20):
        rules.append(
            EmailRule(
                name=f"vendor {index:02d}",
                type=RuleType.HELP_REQUEST,
                sequence=300 + index,
                from_=(f"orders@vendor{index:02d}.example",),
                from_exact=True,
                ticket_type="Purchase",
            )
        )
    return rules


def make_processor(
    repository: SQLiteTicketRepository | InMemoryTicketRepository,
    messages: Sequence[bytes],
    *,
    rules: Sequence[EmailRule] = (),
    limits: Any = None,
    batch_size: int = 1,
    batch_max_wait: dt.timedelta | None = None,
    copies: str = "skip",
) -> tuple[MailProcessor, MemoryConnector]:
    """A processor reading ``messages`` from memory into ``repository``, acknowledging.

    Args:
        repository: Where the tickets go.
        messages: The raw emails the mailbox holds.
        rules: The processor's rules.
        limits: ``ParseLimits`` overriding the default, or ``None``.
        batch_size: Emails committed per transaction (``[processing] batch_size``).
        batch_max_wait: How long a batch's first email waits for the rest (``None``:
            the default).
        copies: ``[processing] copies`` (``bench_copies.py`` measures both).

    Returns:
        The processor and its connector.
    """
    connector = MemoryConnector(MAILBOX, messages)
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="msp.example",
        default_sender=SenderIdentity(corpus.HELPDESK, "Support"),
        batch_size=batch_size,
        copies=copies,
        **({"limits": limits} if limits is not None else {}),
        **({"batch_max_wait": batch_max_wait} if batch_max_wait is not None else {}),
    )
    mailbox = Mailbox(connector, name=MAILBOX, send_acknowledgement=True)
    return MailProcessor(repository, [mailbox], settings, rules=rules), connector


#: Emails per transaction in (C); ``--batch-size`` changes it (10 measured fastest).
BATCH_SIZE = {"value": 10}


def one_kb_emails(count: int) -> list[bytes]:
    """``count`` plain-text emails of about 1 KB, each from its own sender and with its
    own Message-ID (all new tickets, all acknowledged)."""
    body = ("Hello, the printer on the third floor jams on every page again. " * 14).strip()
    emails = []
    for n in range(count):
        head = (
            f"From: Requester {n} <requester{n}@customer{n % 97}.example>\r\n"
            f"To: {corpus.HELPDESK}\r\nSubject: Printer jam report {n}\r\n"
            "Date: Mon, 07 Dec 2026 09:00:00 +0000\r\n"
            f"Message-ID: <text-{n}@customer.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n\r\n'
        )
        emails.append((head + body + f" Ticket request {n}.\r\n").encode())
    return emails


def run_halomail(
    messages: Sequence[bytes],
    directory: Path | None,
    rules: Sequence[EmailRule],
    *,
    record: list[Recording] | None = None,
) -> tuple[Timing, Counter[str]]:
    """The time of one ``run_once`` over ``messages`` with a fresh repository, and outcomes.

    The repository is SQLite in ``directory``, (C); with ``directory=None`` it is the
    in-memory one, (M). With ``record``, what (C) asked of SQLite is appended to it, for (S).
    """
    repository: SQLiteTicketRepository | InMemoryTicketRepository
    recorder = None
    if directory is None:
        repository = InMemoryTicketRepository()
    else:
        repository = SQLiteTicketRepository(directory / "halomail.db")
        if record is not None:
            recorder = Recorder.attach(repository)
    processor, _connector = make_processor(
        repository, messages, rules=rules, batch_size=BATCH_SIZE["value"]
    )
    gc.collect()
    timing = Timing()
    report = processor.run_once()
    timing.stop()
    if recorder is not None and record is not None:
        record.append(recorder.recording())
    repository.close()
    outcomes = Counter(o.outcome.value for o in report.outcomes)
    outcomes["acknowledged"] = sum(o.acknowledged for o in report.outcomes)
    return timing, outcomes


# -- (a) bare parsing ---------------------------------------------------------------


def run_compat32(messages: Sequence[bytes]) -> Timing:
    """The time to parse every email with ``message_from_bytes`` under ``compat32``."""
    parse = email.message_from_bytes
    compat32 = policy.compat32
    gc.collect()
    timing = Timing()
    for raw in messages:
        parse(raw, policy=compat32)
    return timing.stop()


# -- stage timing -------------------------------------------------------------------

#: The stages, in the order of the pipeline, as printed.
STAGES = (
    "parse",
    "parse, rest",
    "decode",
    "sanitize",
    "html to text",
    "quote stripping",
    "classify",
    "correlate",
    "rules",
    "repository",
    "render",
    "outbox",
    "dedupe key",
    "other",
)
# Time spent under these stays with them, whatever they call: correlation's and the
# outbox's own repository look-ups are part of correlating and queueing.
_STICKY = frozenset({"correlate", "outbox", "repository"})


class StageClock:
    """Exclusive time per stage, from timers wrapped around halomail's functions.

    A wrapped call pushes its stage; its time minus the time of wrapped calls inside
    it is that stage's. Calls under a sticky stage are not split out.
    """

    def __init__(self) -> None:
        self.exclusive: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[list[Any]] = []
        self._undo: list[tuple[object, str, object]] = []
        self.missing: list[str] = []

    def wrap(self, owner: object, name: str, stage: str) -> None:
        """Replace ``owner.name`` with a timed wrapper (undone by :meth:`restore`).

        A name that no longer exists (the code moved on) is listed in :attr:`missing`.
        """
        original = getattr(owner, name, None)
        if original is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        stack, exclusive, calls = self._stack, self.exclusive, self.calls
        clock = time.perf_counter

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if stack and (stack[-1][0] == stage or stack[-1][0] in _STICKY):
                return original(*args, **kwargs)
            frame = [stage, 0.0]
            stack.append(frame)
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = clock() - start
                stack.pop()
                exclusive[stage] += elapsed - frame[1]
                calls[stage] += 1
                if stack:
                    stack[-1][1] += elapsed

        self._undo.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        """Put every wrapped function back."""
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)


class _TimedConnection:
    """A sqlite3 connection whose statements are timed as the ``repository`` stage."""

    def __init__(self, connection: sqlite3.Connection, clock: StageClock) -> None:
        self._connection = connection
        # Bound through a tiny holder so StageClock.wrap can replace the methods.
        self.execute = connection.execute
        self.executemany = connection.executemany
        clock.wrap(self, "execute", "repository")
        clock.wrap(self, "executemany", "repository")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


# "parse" is the MIME parser (_mime.parse: header blocks, boundaries, the header checks);
# "parse, rest" is what else parse_email does itself: the SHA-256 of the raw bytes,
# the limits, the walk over the parts and building the InboundEmail. "decode" is the
# headers (RFC 2047, addresses, dates), the transfer encodings, the charsets and the
# attachments (names, hashes, flags).
# Where each stage's functions are looked up at call time (module globals and
# methods), so that replacing them there times every call.
_STAGE_FUNCTIONS: tuple[tuple[object, str, str], ...] = (
    (halomail.pipeline.unit, "parse_email", "parse, rest"),
    (halomail.inbound._mime, "parse", "parse"),
    (halomail.inbound.parse._TopHeaders, "__init__", "decode"),
    (halomail.inbound.parse._Builder, "_leaf", "decode"),
    (halomail.inbound.parse._Builder, "_attachments", "decode"),
    (halomail.inbound.models, "sanitize_html", "sanitize"),
    (halomail.inbound._deferred, "html_to_text", "html to text"),
    (halomail.inbound._deferred, "strip_reply", "quote stripping"),
    (halomail.pipeline.decide, "classify", "classify"),
    (halomail.pipeline.decide, "_correlate", "correlate"),
    (halomail.pipeline.decide, "_related", "correlate"),
    (halomail.rules.RuleEngine, "evaluate", "rules"),
    (halomail.pipeline.records, "_acknowledgement", "render"),
    (halomail.pipeline.acknowledge, "_may_acknowledge", "outbox"),
    (halomail.outbound.notifier.Notifier, "_throttled", "outbox"),
    (_SQLiteClass, "enqueue_outgoing", "outbox"),
    (halomail.pipeline.unit, "dedupe_key", "dedupe key"),
    (MailProcessor, "run_once", "other"),
)
_REPOSITORY_METHODS = (
    "_commit",
    "get_ticket",
    "find_ticket_by_message_ids",
    "create_ticket",
    "add_action",
    "set_status",
    "find_open_ticket",
    "find_customer",
    "find_user",
    "find_asset",
    "get_dedupe",
    "record_dedupe",
    "quarantine",
    "count_outgoing",
    "get_state",
    "set_state",
)


@contextmanager
def stage_timers(repository: SQLiteTicketRepository) -> Iterator[StageClock]:
    """Wrap halomail's stage functions (and the repository's SQL) with timers."""
    clock = StageClock()
    for owner, name, stage in _STAGE_FUNCTIONS:
        clock.wrap(owner, name, stage)
    for name in _REPOSITORY_METHODS:
        clock.wrap(_SQLiteClass, name, "repository")
    real = repository._connection
    assert real is not None
    repository._connection = _TimedConnection(real, clock)  # type: ignore[assignment]
    try:
        yield clock
    finally:
        repository._connection = real
        clock.restore()


def stage_shares(
    messages: Sequence[bytes], directory: Path, rules: Sequence[EmailRule]
) -> tuple[StageClock, float]:
    """The stage clock after one run of (c) with timers, and the run's seconds."""
    repository = SQLiteTicketRepository(directory / "stages.db")
    processor, _connector = make_processor(repository, messages, rules=rules)
    with stage_timers(repository) as clock:
        gc.collect()
        start = time.perf_counter()
        processor.run_once()
        total = time.perf_counter() - start
    repository.close()
    return clock, total


# -- profile ---------------------------------------------------------------------

_SITE = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    short = _SITE.sub("", filename)
    short = re.sub(r".*/src/", "", short)
    return f"{short}:{line}({name})"


def profile_run(
    messages: Sequence[bytes], directory: Path, rules: Sequence[EmailRule]
) -> pstats.Stats:
    """A cProfile of one run of (c) over a fresh repository."""
    repository = SQLiteTicketRepository(directory / "profile.db")
    processor, _connector = make_processor(repository, messages, rules=rules)
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    processor.run_once()
    profiler.disable()
    repository.close()
    return pstats.Stats(profiler)


def print_profile(stats: pstats.Stats, count: int, top: int = 25) -> None:
    """The top functions by cumulative and by own time, per email."""
    entries = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_cc, _nc, _tt, ct, _callers) in entries.values())
    for title, index in (("cumulative", 3), ("own time (tottime)", 2)):
        print()
        print(f"top {top} by {title} (cProfile, {count} emails; µs per email, % of the run)")
        print(f"{'calls':>9}  {'own µs':>8}  {'cum µs':>8}  {'cum %':>6}  function")
        ranked = sorted(entries.items(), key=lambda item: item[1][index], reverse=True)
        for func, (_cc, calls, own, cumulative, _callers) in ranked[:top]:
            print(
                f"{calls:>9}  {own / count * 1e6:>8.1f}  {cumulative / count * 1e6:>8.1f}  "
                f"{cumulative / total * 100:>5.1f}%  {_where(func)}"
            )


# -- main ------------------------------------------------------------------------


def pin_one_core() -> str:
    """Pin this process to one CPU (Linux); returns a description."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def run_parse(messages: Sequence[bytes]) -> Timing:
    """The time to run ``parse_email`` over every email."""
    parse = halomail.inbound.parse.parse_email
    gc.collect()
    timing = Timing()
    for raw in messages:
        parse(raw)
    return timing.stop()


def run_floor(messages: Sequence[bytes], directory: Path) -> Timing:
    """The time of (F) over ``messages``, into a database made before the timer starts."""
    floor = Floor(directory / "floor.db", BATCH_SIZE["value"])
    gc.collect()
    timing = Timing()
    stored = floor.run(messages)
    timing.stop()
    floor.close()
    if stored != len(messages):
        raise RuntimeError(f"(F) stored {stored} of {len(messages)} emails")
    return timing


def run_statements(recording: Recording, directory: Path) -> Timing:
    """The time of (S): (C)'s recorded calls replayed into a database made untimed."""
    replay = Replay(directory / "statements.db")
    gc.collect()
    timing = Timing()
    replay.run(recording)
    timing.stop()
    replay.close()
    return timing


def run_baseline(messages: Sequence[bytes]) -> Timing:
    """The time of (A): compat32 parsing plus the headers and parts the pipeline reads."""
    gc.collect()
    timing = Timing()
    real_mail.run_baseline(messages)
    return timing.stop()


#: The pipelines of each round, in the order they run, and how they are printed.
PIPELINES = {
    "A": "(A) compat32 + headers + parts",
    "a": "(a) compat32 parsing alone",
    "P": "(P) halomail parse_email",
    "F": "(F) floor: parse + store",
    "S": "(S) (C)'s SQL statements alone",
    "M": "(M) MailProcessor, in memory",
    "C": "(C) halomail MailProcessor",
}


def measure(
    messages: Sequence[bytes], rounds: int, directory: Path, rules: Sequence[EmailRule]
) -> tuple[dict[str, list[float]], Counter[str]]:
    """CPU seconds of every pipeline in each round over ``messages``, and (C)'s outcomes."""
    seconds: dict[str, list[float]] = {key: [] for key in PIPELINES}
    # One untimed warm-up of each (imports, caches); (C)'s outcomes are checked.
    run_baseline(messages[:50])
    run_parse(messages[:50])
    warm = directory / "warm"
    warm.mkdir()
    run_floor(messages[:50], warm)
    recorded: list[Recording] = []
    _timing, outcomes = run_halomail(messages, warm, rules, record=recorded)
    _timing, in_memory = run_halomail(messages, None, rules)
    if in_memory != outcomes:
        raise RuntimeError(f"(M) decided otherwise than (C): {in_memory} != {outcomes}")
    for number in range(rounds):
        round_directory = directory / f"round{number}"
        round_directory.mkdir()
        seconds["A"].append(run_baseline(messages).cpu)
        seconds["a"].append(run_compat32(messages).cpu)
        seconds["P"].append(run_parse(messages).cpu)
        seconds["F"].append(run_floor(messages, round_directory).cpu)
        seconds["S"].append(run_statements(recorded[0], round_directory).cpu)
        seconds["M"].append(run_halomail(messages, None, rules)[0].cpu)
        seconds["C"].append(run_halomail(messages, round_directory, rules)[0].cpu)
    return seconds, outcomes


def parsing_and_statements(seconds: dict[str, list[float]]) -> list[float]:
    """(P) + (S) per round: parsing, and storing with nothing between."""
    return [p + s for p, s in zip(seconds["P"], seconds["S"], strict=True)]


def print_table(title: str, messages: Sequence[bytes], seconds: dict[str, list[float]]) -> None:
    """ms per email (median round) and the throughput ratios to (A) and (a), with spread."""
    size = sum(map(len, messages))
    print()
    print(f"{title}: {len(messages)} emails, {size / 1e6:.1f} MB, CPU time")
    print(
        f"{'pipeline':<31} {'ms/email':>8}  {'vs (A): median [rounds]':>29}  "
        f"{'vs (a): median [rounds]':>29}"
    )
    for key, name in PIPELINES.items():
        per_email = statistics.median(seconds[key]) / len(messages) * 1e3
        columns = []
        for baseline in ("A", "a"):
            median, low, high = ratio_spread(seconds[baseline], seconds[key])
            columns.append(f"{median:>6.2f}x [{low:.2f} - {high:.2f}x]".rjust(29))
        print(f"{name:<31} {per_email:>8.3f}  {columns[0]}  {columns[1]}")
    median, low, high = ratio_spread(seconds["C"], seconds["F"])  # (C)'s time / (F)'s
    print(f"(C) takes {median:.2f}x the CPU time of its floor (F) [{low:.2f} - {high:.2f}x]")
    median, low, high = ratio_spread(seconds["M"], seconds["C"])  # (M)'s time / (C)'s
    print(f"(M), storing in memory, takes {median:.0%} of (C)'s CPU time [{low:.0%} - {high:.0%}]")
    parse_and_store = parsing_and_statements(seconds)
    median, low, high = ratio_spread(parse_and_store, seconds["C"])  # (P) + (S) over (C)
    print(
        f"(P) + (S), parsing and (C)'s statements with nothing between, take {median:.0%} "
        f"of (C)'s CPU time [{low:.0%} - {high:.0%}]"
    )
    median, low, high = ratio_spread(seconds["a"], parse_and_store)  # (a) over (P) + (S)
    print(f"(P) + (S) alone run at {median:.2f}x the throughput of (a) [{low:.2f} - {high:.2f}x]")


def _quiet_halomail() -> int:
    """Silence halomail's warnings (a kind alone names tickets it never opened)."""
    logger = logging.getLogger("halomail")
    level = logger.level
    logger.setLevel(logging.ERROR)
    return level


def main(argv: list[str] | None = None) -> int:
    """Measure real mail, then generated mail; exit 1 when a pipeline failed an email."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="a quick run (as in the tests)")
    parser.add_argument("--real", type=int, default=None, help="real emails (default all)")
    parser.add_argument("--messages", type=int, default=1000, help="generated emails")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    parser.add_argument("--no-profile", action="store_true", help="skip (b), stages, profile")
    parser.add_argument("--top", type=int, default=25, help="profile lines (default 25)")
    parser.add_argument("--report", type=Path, help="write the rounds' CPU seconds as JSON")
    parser.add_argument("--batch-size", type=int, default=10, help="(C)'s emails per commit")
    args = parser.parse_args(argv)
    BATCH_SIZE["value"] = args.batch_size
    if args.short:
        args.real, args.messages, args.rounds, args.no_profile = 200, 100, 3, True

    pinned = pin_one_core()
    real = real_mail.load(args.real)
    labelled = corpus.generate_labelled(args.messages, args.seed)
    generated = [raw for _kind, raw in labelled]
    rules = bench_rules()
    print(
        f"{args.rounds} interleaved rounds; one core ({pinned}); Python "
        f"{sys.version.split()[0]}; {len(rules)} rules; {os.cpu_count()} CPUs on the machine"
    )
    report: dict[str, Any] = {"rounds": args.rounds, "corpora": []}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="halomail-bench-") as tmp:
        base = Path(tmp)
        corpora = [("SpamAssassin corpus (real mail)", "spamassassin", real)]
        corpora.append(("1 KB text emails", "text-1kb", one_kb_emails(len(real))))
        corpora.append(("generated corpus, all kinds", "generated", generated))
        for kind in corpus.KINDS:
            subset = [raw for label, raw in labelled if label == kind]
            if subset:
                corpora.append((f"generated corpus, {kind} only", f"generated:{kind}", subset))
        level = _quiet_halomail()
        try:
            for title, name, messages in corpora:
                directory = base / name.replace(":", "-")
                directory.mkdir()
                seconds, outcomes = measure(messages, args.rounds, directory, rules)
                print_table(title, messages, seconds)
                if name == "text-1kb":
                    median, low, high = ratio_spread(seconds["C"], seconds["a"])
                    print(
                        f"a 1 KB text email: (C) costs {median:.1f}x what compat32 parsing "
                        f"does [{low:.1f} - {high:.1f}x] (goal: within 5x)"
                    )
                    parse_and_store = parsing_and_statements(seconds)
                    median, low, high = ratio_spread(parse_and_store, seconds["a"])
                    print(
                        f"a 1 KB text email: (P) + (S) alone cost {median:.1f}x what compat32 "
                        f"parsing does [{low:.1f} - {high:.1f}x]"
                    )
                print("(C) outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
                if outcomes[Outcome.RETRY.value]:
                    failures.append(f"(C) left {outcomes[Outcome.RETRY.value]} for retry: {name}")
                report["corpora"].append(
                    {
                        "name": name,
                        "emails": len(messages),
                        "bytes": sum(map(len, messages)),
                        "cpu_seconds": seconds,
                        "outcomes": dict(outcomes),
                    }
                )
        finally:
            logging.getLogger("halomail").setLevel(level)
        if not args.no_profile:
            failures += conventional_and_stages(generated, base, rules, args.rounds, args.top)
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2))
    for line in failures:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failures else 0


def conventional_and_stages(
    messages: Sequence[bytes], base: Path, rules: Sequence[EmailRule], rounds: int, top: int
) -> list[str]:
    """(b) against (C) on the generated corpus, then (C)'s stages and profile."""
    failures: list[str] = []
    try:
        import bleach  # noqa: F401
        import email_reply_parser  # noqa: F401
        import html2text  # noqa: F401
    except ImportError as exc:
        return [f"{exc.name} is missing; (b) needs: pip install -e '.[bench]'"]
    conventional_cpu, ours_cpu = [], []
    for number in range(rounds):
        directory = base / f"conventional{number}"
        directory.mkdir()
        timing, outcomes = run_conventional(messages, directory)
        conventional_cpu.append(timing.cpu)
        ours_cpu.append(run_halomail(messages, directory, rules)[0].cpu)
        errors = {k: v for k, v in outcomes.items() if k.startswith("error")}
        if errors:
            failures.append(f"(b) failed on some emails: {errors}")
    median, low, high = ratio_spread(conventional_cpu, ours_cpu)
    print()
    print(
        f"generated corpus: (C) halomail vs (b) conventional, CPU time: {median:.2f}x "
        f"[{low:.2f} - {high:.2f}x] the throughput"
    )
    directory = base / "profile"
    directory.mkdir()
    clock, total = stage_shares(messages, directory, rules)
    seconds, calls = clock.exclusive, clock.calls
    print()
    print(f"time per stage of (C), generated corpus: one run with timers ({total:.2f} s)")
    print(f"{'stage':<17} {'µs/email':>9} {'share':>7} {'timed calls':>12}")
    for stage in STAGES:
        spent = seconds.get(stage, 0.0)
        print(
            f"{stage:<17} {spent / len(messages) * 1e6:>9.1f} "
            f"{spent / total * 100:>6.1f}% {calls.get(stage, 0):>12}"
        )
    if clock.missing:
        print(f"(not found, so not timed: {', '.join(clock.missing)})")
    print_profile(profile_run(messages, directory, rules), len(messages), top)
    return failures


if __name__ == "__main__":
    sys.exit(main())
