"""IMAP ingestion: halomail over a real Dovecot against bare imaplib on the same mail.

Run it from the checkout, as root (it starts a private Dovecot, like the tests)::

    python benchmarks/bench_imap.py                  # 2,000 emails, 3 rounds, ~1-2 min
    python benchmarks/bench_imap.py --messages 500   # quicker

The emails are ``corpus.generate`` (the mix of issue 7: plain replies, HTML,
attachments, legacy charsets), APPENDed once to a folder ``Source`` of one account.
Each round copies them server-side into an empty INBOX (``UID COPY``) and times,
interleaved so that noise hits all alike:

(a) **bare imaplib**: connect, LOGIN, SELECT, one ``UID FETCH 1:* BODY.PEEK[]``,
    LOGOUT; the floor set by the protocol and Dovecot;
(b) **halomail IMAP**: ``MailProcessor.run_once()`` with an :class:`ImapConnector` on
    the same INBOX (sizes first, bodies in batches of 50, a ticket per email in a fresh
    SQLite repository in a temporary directory, acknowledgements queued, every email
    then moved to "Deleted Items" with batched ``UID MOVE``);
(c) **halomail, no IMAP**: the same run over a ``MemoryConnector`` holding the same
    bytes, i.e. the processing alone.

Printed: the median seconds, emails/s and MB/s of each, the ratio (b)/(a) (how much
slower than the bare protocol the whole ingestion is) and the share of (b) that is
not processing, ((b) - (c)) / (b): the goal is that processing, not the protocol, is
the bottleneck. Exit status 1 when a run disagrees (an email left in INBOX, a
retried or quarantined email, or a different number of emails).
"""

from __future__ import annotations

import argparse
import gc
import imaplib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import corpus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

from tests.servers.dovecot import Account, Dovecot, make_root, start_dovecot

from halomail.backends.imap import ImapConnector
from halomail.backends.memory import MemoryConnector
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository

LOOP_TOKEN = "bench-loop-token"  # noqa: S105 - a marker in our headers, not a secret


def settings() -> ProcessorSettings:
    """The processor settings of every halomail run."""
    return ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="msp.example",
        default_sender=SenderIdentity(corpus.HELPDESK, "Support"),
    )


def load(server: Dovecot, account: Account, messages: Sequence[bytes]) -> None:
    """APPEND the messages to ``Source`` once, over one connection."""
    with server.imap(account) as client:
        client.create("Source")
        for raw in messages:
            client.append("Source", None, None, raw)


def refill(server: Dovecot, account: Account, count: int) -> None:
    """Empty INBOX and Deleted Items, then copy ``Source`` into INBOX (server-side)."""
    with server.imap(account) as client:
        client.delete('"Deleted Items"')
        client.select("INBOX")
        client.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
        client.select("Source", readonly=True)
        typ, data = client.uid("COPY", "1:*", "INBOX")
        if typ != "OK":
            raise RuntimeError(f"UID COPY failed: {data!r}")
        status = client.status("INBOX", "(MESSAGES)")[1][0] or b""
    if f"MESSAGES {count})".encode() not in status:
        raise RuntimeError(f"INBOX should hold {count} emails: {status!r}")


def run_bare(server: Dovecot, account: Account) -> tuple[float, int, int]:
    """Seconds for a bare imaplib session fetching every body; (seconds, emails, bytes)."""
    gc.collect()
    start = time.perf_counter()
    client = imaplib.IMAP4(server.host, server.imap_port, timeout=60)
    client.login(account.username, account.password)
    client.select("INBOX", readonly=True)
    _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    client.logout()
    elapsed = time.perf_counter() - start
    bodies = [item[1] for item in data if isinstance(item, tuple)]
    return elapsed, len(bodies), sum(len(b) for b in bodies)


def run_halomail_imap(
    server: Dovecot, account: Account, directory: Path
) -> tuple[float, Counter[str], int]:
    """Seconds for ``run_once`` over IMAP, the outcomes, and the emails left in INBOX."""
    repository = SQLiteTicketRepository(directory / "imap.db")
    connector = ImapConnector(
        "Support",
        server.host,
        server.imap_port,
        security="none",
        username=account.username,
        password=account.password,
        max_message_bytes=settings().limits.max_message_bytes,
        timeout=60,
    )
    processor = MailProcessor(repository, [Mailbox(connector)], settings())
    gc.collect()
    start = time.perf_counter()
    report = processor.run_once()
    elapsed = time.perf_counter() - start
    repository.close()
    if report.mailboxes[0].error:
        raise RuntimeError(f"the IMAP run failed: {report.mailboxes[0].error}")
    with server.imap(account) as client:
        left = int(client.select("INBOX", readonly=True)[1][0] or 0)
    return elapsed, Counter(o.outcome.value for o in report.outcomes), left


def run_halomail_memory(messages: Sequence[bytes], directory: Path) -> tuple[float, Counter[str]]:
    """Seconds for ``run_once`` over a MemoryConnector holding the same bytes."""
    repository = SQLiteTicketRepository(directory / "memory.db")
    connector = MemoryConnector("Support")
    for raw in messages:
        connector.add(raw)
    processor = MailProcessor(repository, [Mailbox(connector)], settings())
    gc.collect()
    start = time.perf_counter()
    report = processor.run_once()
    elapsed = time.perf_counter() - start
    repository.close()
    return elapsed, Counter(o.outcome.value for o in report.outcomes)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table; exit 1 when the runs disagree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=2000, help="emails (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    args = parser.parse_args(argv)
    # The corpus has repeat senders: their throttled acknowledgements are expected.
    logging.getLogger("halomail").setLevel(logging.ERROR)

    messages = corpus.generate(args.messages, args.seed)
    total_mb = sum(len(m) for m in messages) / 1e6
    print(f"{len(messages)} emails, {total_mb:.1f} MB (corpus seed {args.seed})")
    root = make_root()
    server = start_dovecot(root)
    work = Path(tempfile.mkdtemp(prefix="halomail-bench-imap-"))
    times: dict[str, list[float]] = {"bare": [], "imap": [], "memory": []}
    problems: list[str] = []
    try:
        account = server.new_account()
        start = time.perf_counter()
        load(server, account, messages)
        append_s = time.perf_counter() - start
        print(f"APPEND (imaplib, one by one): {append_s:.1f} s, {len(messages) / append_s:,.0f}/s")
        for round_no in range(1, args.rounds + 1):
            refill(server, account, len(messages))
            seconds, count, size = run_bare(server, account)
            times["bare"].append(seconds)
            if count != len(messages):
                problems.append(f"round {round_no}: bare imaplib fetched {count} emails")
            directory = work / f"round-{round_no}"
            directory.mkdir()
            seconds, outcomes, left = run_halomail_imap(server, account, directory)
            times["imap"].append(seconds)
            seconds_mem, outcomes_mem = run_halomail_memory(messages, directory)
            times["memory"].append(seconds_mem)
            print(
                f"round {round_no}: bare {times['bare'][-1]:.2f} s, "
                f"halomail IMAP {seconds:.2f} s, halomail memory {seconds_mem:.2f} s"
            )
            if outcomes != outcomes_mem or sum(outcomes.values()) != len(messages):
                problems.append(
                    f"round {round_no}: outcomes {dict(outcomes)} vs {dict(outcomes_mem)}"
                )
            if outcomes.get("retry") or outcomes.get("quarantined"):
                problems.append(f"round {round_no}: retried or quarantined: {dict(outcomes)}")
            if left:
                problems.append(f"round {round_no}: {left} emails left in INBOX")
            if size != sum(len(m) for m in messages):
                problems.append(f"round {round_no}: bare imaplib read {size} bytes")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        ("(a) bare imaplib UID FETCH 1:* BODY.PEEK[]", median["bare"]),
        ("(b) halomail: ImapConnector + MailProcessor", median["imap"]),
        ("(c) halomail: MemoryConnector + MailProcessor", median["memory"]),
    ]
    print()
    print(
        f"{'median of ' + str(args.rounds) + ' rounds':<48} {'s':>8} {'emails/s':>10} {'MB/s':>8}"
    )
    for label, seconds in rows:
        print(
            f"{label:<48} {seconds:>8.2f} {len(messages) / seconds:>10,.0f} "
            f"{total_mb / seconds:>8.1f}"
        )
    print()
    print(f"(b)/(a) time ratio: {median['imap'] / median['bare']:.1f}x")
    protocol = max(0.0, median["imap"] - median["memory"])
    print(
        f"IMAP share of (b): ((b) - (c)) / (b) = {protocol / median['imap']:.0%} "
        f"({protocol:.2f} s); processing (c) / (b) = {median['memory'] / median['imap']:.0%}"
    )
    for problem in problems:
        print("DISAGREEMENT:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
