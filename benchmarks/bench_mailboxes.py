"""One processing cycle over many IMAP mailboxes, against the slowest single mailbox.

Run it from the checkout (as root, like the tests: it starts a private Dovecot)::

    python benchmarks/bench_mailboxes.py                 # 50 mailboxes, 20 ms latency
    python benchmarks/bench_mailboxes.py --latency 0     # the bare loopback

Fifty accounts on a private Dovecot each hold a few emails. Every connection goes through
a small proxy that delays each chunk the server sends by ``--latency`` milliseconds, as a
real server across a network does (on bare loopback an IMAP round trip costs nothing and
the cycle is only CPU). The script measures, medians of several rounds:

- each mailbox processed alone (one processor, one mailbox): the slowest of them;
- one ``run_once`` over all the mailboxes, at several ``concurrent_mailboxes`` bounds;

and prints the cycle's time over the slowest single mailbox (the goal: under 3x). That no
more than ``concurrent_mailboxes`` mailboxes are read at once is proved by
tests/test_concurrency.py, not measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import corpus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.servers

import attrs
from tests.servers.dovecot import Account, Dovecot, make_root, start_dovecot

from halomail.backends.imap import ImapConnector
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository


class LatencyProxy:
    """Forwards TCP to the server, delaying each chunk the server sends."""

    def __init__(self, upstream: tuple[str, int], latency: float) -> None:
        self.upstream = upstream
        self.latency = latency
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(server, client, self.latency), daemon=True
            ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while chunk := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        """Stop accepting connections."""
        self.listener.close()


def fill(server: Dovecot, accounts: list[Account], per_mailbox: int, seed: int) -> None:
    """Put ``per_mailbox`` fresh emails in each INBOX (after emptying it)."""
    messages = corpus.generate(per_mailbox * len(accounts), seed)
    for index, account in enumerate(accounts):
        with server.imap(account) as client:
            client.select("INBOX")
            client.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
            client.expunge()
            for raw in messages[index * per_mailbox : (index + 1) * per_mailbox]:
                client.append("INBOX", None, None, raw)


def processor_for(
    server: Dovecot, proxy: LatencyProxy, accounts: list[Account], folder: Path, bound: int
) -> MailProcessor:
    """A processor over ``accounts``' mailboxes, through the proxy, into a fresh SQLite."""
    mailboxes = [
        Mailbox(
            ImapConnector(
                f"box-{account.username}",
                "127.0.0.1",
                proxy.port,
                security="none",
                username=account.username,
                password=account.password,
                timeout=30,
            )
        )
        for account in accounts
    ]
    settings = ProcessorSettings(
        loop_token="bench",  # noqa: S106 - a benchmark's loop marker, not a secret
        domain="helpdesk.example",
        default_sender=SenderIdentity("support@helpdesk.example", "Support"),
        concurrent_mailboxes=bound,
    )
    repository = SQLiteTicketRepository(folder / "halomail.db")
    return MailProcessor(repository, mailboxes, settings)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; exit 1 when a cycle loses or doubles an email."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument("--per-mailbox", type=int, default=4, help="emails in each mailbox")
    parser.add_argument("--latency", type=float, default=20.0, help="ms per server chunk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bounds", default="4,16,50", help="concurrent_mailboxes to try")
    args = parser.parse_args(argv)
    logging.getLogger("halomail").setLevel(logging.ERROR)
    bounds = [int(b) for b in args.bounds.split(",")]

    server = start_dovecot(make_root())
    proxy = LatencyProxy((server.host, server.imap_port), args.latency / 1000)
    work = Path(tempfile.mkdtemp(prefix="halomail-bench-mailboxes-"))
    problems: list[str] = []
    try:
        accounts = [server.new_account() for _ in range(args.mailboxes)]
        expected = args.mailboxes * args.per_mailbox
        singles: list[float] = []
        cycles: dict[int, list[float]] = {bound: [] for bound in bounds}
        for round_no in range(args.rounds):
            fill(server, accounts, args.per_mailbox, corpus.DEFAULT_SEED + round_no)
            slowest = 0.0
            for index, account in enumerate(accounts):
                folder = work / f"single-{round_no}-{index}"
                folder.mkdir()
                processor = processor_for(server, proxy, [account], folder, 1)
                start = time.perf_counter()
                processor.run_once()
                slowest = max(slowest, time.perf_counter() - start)
                processor.repository.close()  # type: ignore[attr-defined]
            singles.append(slowest)
            for bound in bounds:
                fill(server, accounts, args.per_mailbox, corpus.DEFAULT_SEED + round_no)
                folder = work / f"cycle-{round_no}-{bound}"
                folder.mkdir()
                processor = processor_for(server, proxy, accounts, folder, bound)
                start = time.perf_counter()
                report = processor.run_once()
                cycles[bound].append(time.perf_counter() - start)
                created = sum(
                    1 for o in report.outcomes if o.outcome.value in ("created", "updated")
                )
                if created != expected or any(r.error for r in report.mailboxes):
                    problems.append(f"round {round_no} bound {bound}: {created}/{expected} emails")
                processor.repository.close()  # type: ignore[attr-defined]
        slowest_single = statistics.median(singles)
        print(
            f"{args.mailboxes} IMAP mailboxes x {args.per_mailbox} emails, "
            f"{args.latency:g} ms latency per server chunk, median of {args.rounds} rounds"
        )
        print(f"slowest single mailbox: {slowest_single:.3f} s")
        print(f"{'concurrent_mailboxes':>20}  {'cycle s':>8}  {'cycle / slowest':>15}")
        default = attrs.fields(ProcessorSettings).concurrent_mailboxes.default
        for bound in bounds:
            cycle = statistics.median(cycles[bound])
            label = f"{bound} (default)" if bound == default else str(bound)
            print(f"{label:>20}  {cycle:>8.3f}  {cycle / slowest_single:>14.1f}x")
        print("(goal: cycle / slowest under 3x)")
    finally:
        proxy.close()
        server.stop()
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
