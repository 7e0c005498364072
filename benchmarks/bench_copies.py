"""What ``[processing] copies = "skip"`` costs: the pipeline with and without copy keys.

Run it from the checkout::

    python benchmarks/bench_copies.py            # 9 rounds of 2,000 emails of each corpus
    python benchmarks/bench_copies.py --short    # 3 rounds of 200

With ``copies = "skip"`` (the default) every email with a Message-ID is also looked up
and recorded under a key that names no mailbox, so that the same email sent to two of
our mailboxes makes one ticket. This runs (C) of ``bench_pipeline.py`` (the whole
``MailProcessor`` into SQLite, batches of 10, 40 rules, acknowledgements) over the same
emails with ``copies = "process"`` and with ``"skip"``, one after the other in each
round, by CPU time: real mail first (the SpamAssassin corpus, ``HALOMAIL_CORPUS``), then
1 KB text emails. Printed per corpus: each one's median ms per email, and "skip"'s time
over "process"'s per round (median, lowest, highest): what the copy keys cost. Both
must decide every email alike (none of these emails is in two mailboxes), or the run
fails.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import bench_pipeline
import real_mail
from timing import Timing, ratio_spread

from halomail import EmailRule, SQLiteTicketRepository

ROUNDS = 9
EMAILS = 2_000
SHORT_ROUNDS = 3
SHORT_EMAILS = 200
SETTINGS = ("process", "skip")


def run(
    messages: Sequence[bytes], copies: str, rules: Sequence[EmailRule], directory: Path
) -> tuple[float, Counter[str]]:
    """CPU seconds of one ``run_once`` over ``messages`` into a fresh SQLite file, and
    the outcomes."""
    repository = SQLiteTicketRepository(directory / f"{copies}.db")
    processor, _connector = bench_pipeline.make_processor(
        repository,
        messages,
        rules=rules,
        batch_size=bench_pipeline.BATCH_SIZE["value"],
        copies=copies,
    )
    gc.collect()
    timing = Timing()
    report = processor.run_once()
    timing.stop()
    repository.close()
    (directory / f"{copies}.db").unlink()
    return timing.cpu, Counter(o.outcome.value for o in report.outcomes)


def measure(name: str, messages: Sequence[bytes], rounds: int) -> None:
    """Interleaved rounds of both settings over ``messages``; prints the line."""
    rules = bench_pipeline.bench_rules()
    seconds: dict[str, list[float]] = {copies: [] for copies in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        decided = {copies: run(messages, copies, rules, directory)[1] for copies in SETTINGS}
        if decided["skip"] != decided["process"]:
            raise RuntimeError(f"{name}: the settings decided otherwise: {decided}")
        for _ in range(rounds):
            for copies in SETTINGS:
                seconds[copies].append(run(messages, copies, rules, directory)[0])
    per_email = {c: statistics.median(s) / len(messages) * 1000 for c, s in seconds.items()}
    median, low, high = ratio_spread(seconds["skip"], seconds["process"])
    print(
        f"{name}: {len(messages)} emails, ms per email: process {per_email['process']:.3f}, "
        f"skip {per_email['skip']:.3f}; skip takes {median:.3f}x process's CPU time "
        f"[{low:.3f} - {high:.3f}x over {rounds} rounds]"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure both corpora, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="3 rounds of 200 emails")
    args = parser.parse_args(argv)
    rounds, count = (SHORT_ROUNDS, SHORT_EMAILS) if args.short else (ROUNDS, EMAILS)
    bench_pipeline._quiet_halomail()
    print(
        f"copy keys: CPU time, {rounds} interleaved rounds, one core "
        f"({bench_pipeline.pin_one_core()})"
    )
    measure("real mail (SpamAssassin)", real_mail.load(count), rounds)
    measure("1 KB text emails", bench_pipeline.one_kb_emails(count), rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
