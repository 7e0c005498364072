"""Instructions per email, counted by valgrind: ``bench_pipeline.py``'s ratios, not timed.

Run it from the checkout (``apt-get install valgrind`` first)::

    python benchmarks/bench_instructions.py              # 200 real + 200 1 KB emails
    python benchmarks/bench_instructions.py --emails 100

CPU time on a shared machine moves by a third from one round to the next; the number of
instructions a run executes does not. So this script runs each of ``bench_pipeline.py``'s
pipelines in a child process under callgrind (valgrind's tool that counts every
instruction a process executes in user space), over the same emails:

(A) compat32 parsing plus the headers and parts the pipeline reads (the baseline);
(a) compat32 parsing alone;
(P) ``halomail.parse_email``;
(F) the floor (``floor.py``): ``parse_email``, the text read, one SQLite row per email,
    committed in batches of 10;
(S) (C)'s SQL statements alone (``statements.py``): recorded once in this process, from
    a run of (C) over the same emails, and replayed by the child into a fresh database;
(M) (C) below, but into an ``InMemoryTicketRepository`` instead of SQLite;
(C) the whole ``MailProcessor`` into SQLite, acknowledgements queued, forty rules, in
    batches of 10 (``bench_pipeline.make_processor``).

Every child does the same set-up (imports, the emails loaded, each pipeline warmed up on
other emails, then each set up for the measured emails: (F)'s and (C)'s databases made) and then
runs one pipeline, or none: a pipeline's count is its child's count less the idle
child's, divided by the number of emails, so imports and set-up cancel out. Hash
randomization is fixed (``PYTHONHASHSEED=0``), and (C)'s batches are not cut by time
(valgrind runs a process about fifty times slower). Printed: instructions per email of
each pipeline, and each one's ratio to (A) and to (a) as instructions (1 / the ratio of
counts, so that above 1 is cheaper, as throughput ratios read), then (C)'s count over
(a)'s and (F)'s, (M)'s share of (C)'s, and the share of (P) + (S).

An instruction is not a unit of time: a cache miss, a system call's kernel time and an
``fsync`` cost nothing here, and SQLite's COMMIT is counted only for its user-space
work. The figures are for comparing two versions of the code, or one pipeline with
another, on the same emails; ``bench_pipeline.py``'s CPU-time ratios remain the
measure of speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import functools
import gc
import itertools
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from email import policy
from pathlib import Path

import real_mail
from bench_pipeline import bench_rules, make_processor, one_kb_emails
from floor import Floor
from statements import Recorder, Recording, Replay

from halomail import InMemoryTicketRepository, MailProcessor, SQLiteTicketRepository
from halomail.inbound.parse import parse_email

#: The pipelines, in the order they are printed.
PIPELINES = {
    "A": "(A) compat32 + headers + parts",
    "a": "(a) compat32 parsing alone",
    "P": "(P) halomail parse_email",
    "F": "(F) floor: parse + store",
    "S": "(S) (C)'s SQL statements alone",
    "M": "(M) MailProcessor, in memory",
    "C": "(C) halomail MailProcessor",
}
_WARM = 20  # emails each pipeline runs before the measured ones (other emails)
_BATCH = 10  # emails per transaction, in (F) and (C) alike


def _emails(corpus: str, count: int) -> tuple[list[bytes], list[bytes]]:
    """The measured emails and the warm-up ones, of ``corpus`` (``real`` or ``1kb``)."""
    if corpus == "real":
        emails = real_mail.load(count + _WARM)
    else:
        emails = one_kb_emails(count + _WARM)
    return emails[_WARM:], emails[:_WARM]


#: What a child opens and closes at its end: the repositories and the floor's database.
_Opened = SQLiteTicketRepository | InMemoryTicketRepository | Floor | Replay


def _processor(
    corpus: str,
    repository: SQLiteTicketRepository | InMemoryTicketRepository,
    messages: Sequence[bytes],
) -> MailProcessor:
    """(C)'s processor over ``messages`` into ``repository``, its batches not cut by time."""
    rules = bench_rules() if corpus == "real" else []
    processor, _ = make_processor(
        repository, messages, rules=rules, batch_size=_BATCH, batch_max_wait=dt.timedelta(hours=1)
    )
    return processor


def record_statements(corpus: str, count: int, path: Path) -> None:
    """Run (C) once over the measured emails, recording its SQL calls into ``path``
    (a pickle of the calls and of the rows they changed) for the children's (S)."""
    measured, _warm = _emails(corpus, count)
    logger = logging.getLogger("halomail")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as folder:
            repository = SQLiteTicketRepository(Path(folder) / "recorded.db")
            recorder = Recorder.attach(repository)
            _processor(corpus, repository, measured).run_once()
            recorded = recorder.recording()
            repository.close()
    finally:
        logger.setLevel(level)
    path.write_bytes(pickle.dumps(recorded))


def _pipelines(
    corpus: str, directory: Path, opened: list[_Opened], statements: Path
) -> dict[str, Callable[[Sequence[bytes]], Callable[[], object]]]:
    """Each pipeline's set-up: given the emails, it returns the run to count."""
    runs = itertools.count()
    recorded: Recording = pickle.loads(statements.read_bytes())  # noqa: S301 - ours

    def whole(messages: Sequence[bytes], *, in_memory: bool = False) -> Callable[[], object]:
        # The database is made here, outside the run (as bench_pipeline.py's timer
        # leaves it out): its schema costs some 16 million instructions, a fixed cost
        # of the set-up, not of the emails. The run ends by closing the database, and
        # so with the checkpoint that writes the emails' pages into its file.
        repository: SQLiteTicketRepository | InMemoryTicketRepository
        if in_memory:
            repository = InMemoryTicketRepository()
        else:
            repository = SQLiteTicketRepository(directory / f"run{next(runs)}.db")
        opened.append(repository)
        processor = _processor(corpus, repository, messages)

        def run() -> object:
            report = processor.run_once()
            repository.close()
            return report

        return run

    def floor(messages: Sequence[bytes]) -> Callable[[], object]:
        store = Floor(directory / f"floor{next(runs)}.db", _BATCH)
        opened.append(store)

        def run() -> object:
            stored = store.run(messages)
            store.close()
            return stored

        return run

    def replay(messages: Sequence[bytes]) -> Callable[[], object]:
        # The warm-up runs the recorded calls too: they are (C)'s on the measured
        # emails, which a fresh database takes whatever the emails handed in.
        del messages
        database = Replay(directory / f"replay{next(runs)}.db")
        opened.append(database)

        def run() -> object:
            database.run(recorded)  # fails unless it changes the rows (C) changed
            database.close()
            return recorded.changes

        return run

    def compat32(messages: Sequence[bytes]) -> object:
        return [email.message_from_bytes(raw, policy=policy.compat32) for raw in messages]

    def each(
        run: Callable[[Sequence[bytes]], object],
    ) -> Callable[[Sequence[bytes]], Callable[[], object]]:
        return lambda messages: lambda: run(messages)

    return {
        "A": each(real_mail.run_baseline),
        "a": each(compat32),
        "P": each(lambda messages: [parse_email(raw) for raw in messages]),
        "F": floor,
        "S": replay,
        "M": functools.partial(whole, in_memory=True),
        "C": whole,
    }


def child(corpus: str, count: int, pipeline: str, statements: Path) -> None:
    """Set up as every child does, then run ``pipeline`` over the emails (``-``: none).

    Every child, the idle one too, sets up every pipeline on the measured emails (and
    so makes (F)'s, (S)'s and (C)'s databases) before the one it runs: only the run
    differs. ``statements`` holds the calls :func:`record_statements` recorded.
    """
    logging.getLogger("halomail").setLevel(logging.ERROR)
    measured, warm = _emails(corpus, count)
    opened: list[_Opened] = []
    with tempfile.TemporaryDirectory() as folder:
        pipelines = _pipelines(corpus, Path(folder), opened, statements)
        for prepare in pipelines.values():
            prepare(warm)()
        runs = {key: prepare(measured) for key, prepare in pipelines.items()}
        gc.collect()
        if pipeline != "-":
            runs[pipeline]()
        for database in opened:
            database.close()


def count_instructions(corpus: str, count: int, pipeline: str, statements: Path) -> int:
    """The instructions a child executes (callgrind's ``Collected`` total)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        corpus,
        str(count),
        pipeline,
        str(statements),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise SystemExit(
        f"callgrind printed no count for {pipeline} ({done.returncode}):\n{done.stderr}"
    )


def measure(corpus: str, count: int) -> dict[str, float]:
    """Instructions per email of every pipeline over ``count`` emails of ``corpus``."""
    with tempfile.TemporaryDirectory() as folder:
        statements = Path(folder) / "statements.pickle"
        record_statements(corpus, count, statements)
        idle = count_instructions(corpus, count, "-", statements)
        return {
            key: (count_instructions(corpus, count, key, statements) - idle) / count
            for key in PIPELINES
        }


def print_table(title: str, per_email: dict[str, float]) -> None:
    """Instructions per email and the ratios to (A) and (a)."""
    print()
    print(title)
    print(f"{'pipeline':<31} {'instructions/email':>18}  {'vs (A)':>7}  {'vs (a)':>7}")
    for key, name in PIPELINES.items():
        mine = per_email[key]
        ratios = [per_email[base] / mine for base in ("A", "a")]
        print(f"{name:<31} {mine:>18,.0f}  {ratios[0]:>6.2f}x  {ratios[1]:>6.2f}x")
    print(f"(C) costs {per_email['C'] / per_email['a']:.1f}x the instructions of (a)")
    print(f"(C) costs {per_email['C'] / per_email['F']:.2f}x the instructions of its floor (F)")
    print(
        f"(M), storing in memory, costs {per_email['M'] / per_email['C']:.0%} of (C)'s instructions"
    )
    both = per_email["P"] + per_email["S"]
    print(
        f"(P) + (S), parsing and (C)'s statements alone, cost {both / per_email['C']:.0%} "
        f"of (C)'s instructions, {both / per_email['a']:.1f}x (a)'s"
    )


def main(argv: list[str] | None = None) -> int:
    """Count the real emails, then the 1 KB ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--emails", type=int, default=200, help="emails per corpus (200)")
    parser.add_argument("--child", nargs=4, metavar=("CORPUS", "COUNT", "PIPELINE", "STATEMENTS"))
    args = parser.parse_args(argv)
    if args.child:
        corpus, count, pipeline, statements = args.child
        child(corpus, int(count), pipeline, Path(statements))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    version = sys.version.split()[0]
    print(f"instructions counted by callgrind, {args.emails} emails a corpus, Python {version}")
    print_table(f"SpamAssassin corpus: {args.emails} emails", measure("real", args.emails))
    print_table(f"1 KB text emails: {args.emails} emails", measure("1kb", args.emails))
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
