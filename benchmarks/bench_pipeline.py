"""End-to-end throughput of halomail against bare MIME parsing and a conventional pipeline.

Run it from the checkout::

    python benchmarks/bench_pipeline.py                    # 1,000 emails, 5 rounds, ~2 min
    python benchmarks/bench_pipeline.py --messages 2000    # the full size, ~4 min

Over the same bytes (``corpus.generate``: 60% plain replies with quoted history, 25%
HTML, 10% with attachments, 5% legacy charsets), on one core (the process is pinned
to one CPU), each round runs, interleaved so that noise hits all three alike:

(a) **compat32**: ``email.message_from_bytes(raw, policy=compat32)`` and nothing else,
    the floor set by parsing MIME in Python;
(b) **conventional**: the pipeline helpdesks commonly write: ``policy.default`` parse,
    ``get_body``/``get_content`` for the text, HTML and attachments, ``bleach.clean``
    of the HTML, ``html2text`` when there is no text part, ``email-reply-parser`` for
    the new text, a lookup of the Message-ID and of an ``[ID:n]`` tag, and an INSERT
    of the ticket (or follow-up) and its attachments with a commit per email, in
    SQLite with WAL and ``synchronous=NORMAL``;
(c) **halomail**: ``MailProcessor.run_once()`` over a ``MemoryConnector`` holding the
    corpus, a fresh ``SQLiteTicketRepository`` in a temporary directory, acknowledgements
    on (queued in the outbox; no transport, so nothing is composed or sent) and a small
    set of rules that no email of the corpus matches (the common case).

Printed: emails/s and MB/s of each (the median of the rounds), and the throughput
ratios (c)/(a) (goal >= 0.5x) and (c)/(b) (goal >= 3x), by wall time and by CPU time
(which other work on a shared machine disturbs less). Then (a) and (c) over each kind
of email alone, since the mix's ratio hides how different they are. Then, from one
more run of (c) with timers wrapped around halomail's functions (in this script only),
the share of each stage; and the top 25 functions of a cProfile run by cumulative and
by own time. Exit status 1 when the pipelines disagree (an email that (b) cannot handle,
one that (c) quarantines or leaves for retry, or a different count of emails).

(b) needs ``bleach``, ``html2text`` and ``email-reply-parser``, which are not halomail
dependencies: ``pip install bleach html2text email-reply-parser``.
"""

from __future__ import annotations

import argparse
import cProfile
import email
import functools
import gc
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
    repository: SQLiteTicketRepository,
    messages: Sequence[bytes],
    *,
    rules: Sequence[EmailRule] = (),
    limits: Any = None,
) -> tuple[MailProcessor, MemoryConnector]:
    """A processor reading ``messages`` from memory into ``repository``, acknowledging.

    Args:
        repository: Where the tickets go.
        messages: The raw emails the mailbox holds.
        rules: The processor's rules.
        limits: ``ParseLimits`` overriding the default, or ``None``.

    Returns:
        The processor and its connector.
    """
    connector = MemoryConnector(MAILBOX, messages)
    settings = ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="msp.example",
        default_sender=SenderIdentity(corpus.HELPDESK, "Support"),
        **({"limits": limits} if limits is not None else {}),
    )
    mailbox = Mailbox(connector, name=MAILBOX, send_acknowledgement=True)
    return MailProcessor(repository, [mailbox], settings, rules=rules), connector


class Timing:
    """Wall-clock and CPU seconds of one run, started at construction."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = -time.perf_counter()
        self.cpu = -time.process_time()

    def stop(self) -> Timing:
        """Take the end times; returns itself."""
        self.wall += time.perf_counter()
        self.cpu += time.process_time()
        return self


def run_halomail(
    messages: Sequence[bytes], directory: Path, rules: Sequence[EmailRule]
) -> tuple[Timing, Counter[str]]:
    """The time of one ``run_once`` over ``messages`` with a fresh repository, and outcomes."""
    repository = SQLiteTicketRepository(directory / "halomail.db")
    processor, _connector = make_processor(repository, messages, rules=rules)
    gc.collect()
    timing = Timing()
    report = processor.run_once()
    timing.stop()
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


# -- (b) the conventional pipeline ----------------------------------------------------

_CONVENTIONAL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tickets (
        id INTEGER PRIMARY KEY, message_id TEXT, sender TEXT, sender_name TEXT,
        subject TEXT, body TEXT, new_text TEXT, html TEXT, created_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS tickets_by_message_id ON tickets (message_id)",
    """CREATE TABLE IF NOT EXISTS followups (
        id INTEGER PRIMARY KEY, ticket_id INTEGER, message_id TEXT, sender TEXT,
        body TEXT, new_text TEXT, html TEXT, created_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS followups_by_message_id ON followups (message_id)",
    """CREATE TABLE IF NOT EXISTS attachments (
        id INTEGER PRIMARY KEY, ticket_id INTEGER, followup_id INTEGER, filename TEXT,
        content_type TEXT, payload BLOB)""",
)
_TAG = re.compile(r"\[ID:(\d+)\]")
# The allow-list helpdesks typically give bleach to keep an email's formatting.
_BLEACH_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "div", "em", "font", "h1", "h2", "h3",
        "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "table", "tbody", "td",
        "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
_BLEACH_ATTRIBUTES = {
    # "style" is left out: bleach would need its optional CSS sanitizer (tinycss2).
    "*": ["class", "dir", "align"],
    "a": ["href", "title"],
    "img": ["src", "alt", "width", "height"],
    "td": ["colspan", "rowspan"],
    "font": ["color", "face", "size"],
}


class Conventional:
    """The conventional pipeline, one email at a time into its own SQLite file.

    Args:
        path: The database file.
    """

    def __init__(self, path: Path) -> None:
        import bleach
        import html2text
        from email_reply_parser import EmailReplyParser

        self._clean = functools.partial(
            bleach.clean, tags=_BLEACH_TAGS, attributes=_BLEACH_ATTRIBUTES, strip=True
        )
        converter = html2text.HTML2Text()
        converter.ignore_images = True
        converter.body_width = 0
        self._html2text = converter.handle
        self._reply = EmailReplyParser.parse_reply
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        for statement in _CONVENTIONAL_SCHEMA:
            self.db.execute(statement)

    def handle(self, raw: bytes) -> str:
        """Parse, clean, store and commit one email; returns ``created`` or ``updated``."""
        message = email.message_from_bytes(raw, policy=policy.default)
        sender_header = message["From"]
        sender = sender_header.addresses[0] if sender_header and sender_header.addresses else None
        subject = str(message["Subject"] or "")
        message_id = str(message["Message-ID"] or "").strip()
        plain = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        html = html_part.get_content() if html_part is not None else None
        if plain is not None:
            text = plain.get_content()
        elif html is not None:
            text = self._html2text(html)
        else:
            text = ""
        cleaned = self._clean(html) if html is not None else None
        new_text = self._reply(text)
        files = [
            (part.get_filename() or "", part.get_content_type(), part.get_content())
            for part in message.iter_attachments()
        ]
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        db = self.db
        db.execute("BEGIN")
        try:
            if db.execute(
                "SELECT 1 FROM tickets WHERE message_id = ? UNION ALL "
                "SELECT 1 FROM followups WHERE message_id = ?",
                (message_id, message_id),
            ).fetchone():
                db.execute("ROLLBACK")
                return "duplicate"
            tag = _TAG.search(subject)
            ticket = None
            if tag is not None:
                ticket = db.execute(
                    "SELECT id FROM tickets WHERE id = ?", (int(tag.group(1)),)
                ).fetchone()
            address = sender.addr_spec.lower() if sender else ""
            if ticket is not None:
                cursor = db.execute(
                    "INSERT INTO followups (ticket_id, message_id, sender, body, new_text, html, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ticket[0], message_id, address, text, new_text, cleaned, now),
                )
                owner = (None, cursor.lastrowid)
                outcome = "updated"
            else:
                cursor = db.execute(
                    "INSERT INTO tickets (message_id, sender, sender_name, subject, body, "
                    "new_text, html, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message_id,
                        address,
                        sender.display_name if sender else "",
                        subject,
                        text,
                        new_text,
                        cleaned,
                        now,
                    ),
                )
                owner = (cursor.lastrowid, None)
                outcome = "created"
            db.executemany(
                "INSERT INTO attachments (ticket_id, followup_id, filename, content_type, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                [(*owner, name, content_type, payload) for name, content_type, payload in files],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcome

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def run_conventional(messages: Sequence[bytes], directory: Path) -> tuple[Timing, Counter[str]]:
    """The time of the conventional pipeline over ``messages`` into a fresh database."""
    pipeline = Conventional(directory / "conventional.db")
    outcomes: Counter[str] = Counter()
    gc.collect()
    timing = Timing()
    for raw in messages:
        try:
            outcomes[pipeline.handle(raw)] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported as a disagreement
            outcomes[f"error:{type(exc).__name__}"] += 1
    timing.stop()
    pipeline.close()
    return timing, outcomes


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
    (halomail.inbound.parse, "html_to_text", "html to text"),
    (halomail.inbound.parse, "strip_reply", "quote stripping"),
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


def _rate(count: int, size: int, seconds: float) -> tuple[float, float]:
    return count / seconds, size / seconds / 1e6


def main(argv: list[str] | None = None) -> int:
    """Run the three pipelines, print the tables; exit 1 when they disagree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1000, help="corpus size (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    parser.add_argument("--no-profile", action="store_true", help="skip stages and profile")
    parser.add_argument("--top", type=int, default=25, help="profile lines (default 25)")
    args = parser.parse_args(argv)

    try:
        import bleach  # noqa: F401
        import email_reply_parser  # noqa: F401
        import html2text  # noqa: F401
    except ImportError as exc:
        print(
            f"{exc.name} is missing; (b) needs: pip install bleach html2text email-reply-parser",
            file=sys.stderr,
        )
        return 2
    pinned = pin_one_core()
    labelled = corpus.generate_labelled(args.messages, args.seed)
    messages = [raw for _kind, raw in labelled]
    size = sum(map(len, messages))
    kinds = Counter(kind for kind, _raw in labelled)
    rules = bench_rules()
    print(
        f"{len(messages)} emails, {size / 1e6:.1f} MB ("
        + ", ".join(f"{kinds[k]} {k}" for k in corpus.KINDS)
        + f"), seed {args.seed}; {args.rounds} rounds; one core ({pinned}); "
        f"Python {sys.version.split()[0]}; {len(rules)} rules"
    )

    timings: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    cpu_times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    disagreements: list[str] = []
    with tempfile.TemporaryDirectory(prefix="halomail-bench-") as tmp:
        base = Path(tmp)
        # One untimed warm-up of each (imports, caches), checked for agreement.
        run_compat32(messages[:50])
        warm = base / "warm"
        warm.mkdir()
        _timing, conventional = run_conventional(messages, warm)
        _timing, ours = run_halomail(messages, warm, rules)
        errors = {k: v for k, v in conventional.items() if k.startswith("error")}
        if errors:
            disagreements.append(f"(b) failed on some emails: {errors}")
        bad = {k: ours[k] for k in (Outcome.QUARANTINED.value, Outcome.RETRY.value) if ours[k]}
        if bad:
            disagreements.append(f"(c) quarantined or left emails: {bad}")
        handled_b = sum(v for k, v in conventional.items() if not k.startswith("error"))
        handled_c = sum(v for k, v in ours.items() if k != "acknowledged")
        if not handled_b == handled_c == len(messages):
            disagreements.append(f"emails handled: (b) {handled_b}, (c) {handled_c}")
        for round_number in range(args.rounds):
            directory = base / f"round{round_number}"
            directory.mkdir()
            for key, timing in (
                ("a", run_compat32(messages)),
                ("b", run_conventional(messages, directory)[0]),
                ("c", run_halomail(messages, directory, rules)[0]),
            ):
                timings[key].append(timing.wall)
                cpu_times[key].append(timing.cpu)
            print(
                f"  round {round_number + 1}: (a) {timings['a'][-1]:.2f} s  "
                f"(b) {timings['b'][-1]:.2f} s  (c) {timings['c'][-1]:.2f} s",
                flush=True,
            )

        print()
        print(
            "outcomes: (b) "
            + ", ".join(f"{k} {v}" for k, v in sorted(conventional.items()))
            + "; (c) "
            + ", ".join(f"{k} {v}" for k, v in sorted(ours.items()))
        )
        print()
        names = {
            "a": "(a) message_from_bytes, compat32",
            "b": "(b) conventional pipeline",
            "c": "(c) halomail MailProcessor",
        }
        print(f"{'pipeline':<36} {'emails/s':>9} {'MB/s':>7} {'ms/email':>9} {'rounds (s)':>24}")
        medians = {}
        for key, name in names.items():
            seconds = statistics.median(timings[key])
            medians[key] = seconds
            per_second, mb = _rate(len(messages), size, seconds)
            spread = f"{min(timings[key]):.2f} - {max(timings[key]):.2f}"
            print(
                f"{name:<36} {per_second:>9.0f} {mb:>7.1f} "
                f"{seconds / len(messages) * 1e3:>9.2f} {spread:>24}"
            )
        print()
        for other, goal in (("a", "goal >= 0.5x"), ("b", "goal >= 3x")):
            ratio = medians[other] / medians["c"]
            per_round = [b / c for b, c in zip(timings[other], timings["c"], strict=True)]
            print(
                f"throughput (c)/({other}): {ratio:.2f}x ({goal}); per round: median "
                f"{statistics.median(per_round):.2f}x, {min(per_round):.2f} - "
                f"{max(per_round):.2f}x"
            )
        # CPU time is less disturbed by other work on a shared machine than wall time.
        cpu = {key: statistics.median(values) for key, values in cpu_times.items()}
        print(
            f"by CPU time (process_time, medians): (c)/(a) {cpu['a'] / cpu['c']:.2f}x, "
            f"(c)/(b) {cpu['b'] / cpu['c']:.2f}x"
        )

        # The ratio of the mix hides how different the kinds are: compat32 reads an
        # attachment line by line (slow), while a short reply costs it almost nothing.
        print()
        print("by kind: (a) and (c) over each kind's emails alone, CPU time, median of 3 runs:")
        header = f"{'kind':<11} {'emails':>6} {'MB':>6} {'(a) µs/email':>13}"
        print(f"{header} {'(c) µs/email':>13} {'(c)/(a)':>8}")
        # Alone, a kind's follow-ups name tickets numbered for the whole corpus: they
        # open new tickets, with a warning each that would only clutter the table.
        quiet = logging.getLogger("halomail")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            for kind in corpus.KINDS:
                subset = [raw for label, raw in labelled if label == kind]
                if not subset:
                    continue
                bare_runs, ours_runs = [], []
                for run in range(3):
                    directory = base / f"kind-{kind}-{run}"
                    directory.mkdir()
                    bare_runs.append(run_compat32(subset).cpu)
                    ours_runs.append(run_halomail(subset, directory, rules)[0].cpu)
                bare, ours_cpu = statistics.median(bare_runs), statistics.median(ours_runs)
                print(
                    f"{kind:<11} {len(subset):>6} {sum(map(len, subset)) / 1e6:>6.1f} "
                    f"{bare / len(subset) * 1e6:>13.0f} {ours_cpu / len(subset) * 1e6:>13.0f} "
                    f"{bare / ours_cpu:>7.2f}x"
                )
        finally:
            quiet.setLevel(level)

        if not args.no_profile:
            directory = base / "profile"
            directory.mkdir()
            clock, total = stage_shares(messages, directory, rules)
            seconds, calls = clock.exclusive, clock.calls
            print()
            print(
                f"time per stage of (c): one more run, with timers ({total:.2f} s; the "
                f"median run of (c) without them took {medians['c']:.2f} s)"
            )
            print(f"{'stage':<17} {'µs/email':>9} {'share':>7} {'timed calls':>12}")
            for stage in STAGES:
                spent = seconds.get(stage, 0.0)
                print(
                    f"{stage:<17} {spent / len(messages) * 1e6:>9.1f} "
                    f"{spent / total * 100:>6.1f}% {calls.get(stage, 0):>12}"
                )
            if clock.missing:
                print(f"(not found, so not timed: {', '.join(clock.missing)})")
            stats = profile_run(messages, directory, rules)
            print_profile(stats, len(messages), args.top)

    if disagreements:
        for line in disagreements:
            print(f"DISAGREEMENT: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
