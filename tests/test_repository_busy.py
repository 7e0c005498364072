"""Issue 13, item 9: a locked database stops the pass after one busy timeout, and says so.

The lock is real: another connection holds ``BEGIN EXCLUSIVE`` on the SQLite file
while the real ``halomail run --once`` works on a Maildir of 50 emails. The child
counts the busy timeouts it met (each transient error the SQLite layer raised), so
the test counts waits instead of timing them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from halomail import Mailbox, MailProcessor, ProcessorSettings
from halomail.backends.memory import MemoryConnector
from halomail.pipeline.results import Outcome
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

pytestmark = pytest.mark.slow

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Deleted Items"

[[mailboxes]]
name = "Sales"
connection = "maildir"
path = "sales"
processed = "move:Deleted Items"
"""

# The real command; it writes how many busy timeouts it met to the file named in
# HALOMAIL_TEST_WAITS when it exits. Counting only: every error is raised as before.
CHILD = textwrap.dedent(
    """
    import atexit, os, sys
    import halomail.tickets._sqlite_base as base
    from halomail.errors import TransientRepositoryError

    real_translate = base.translate_error
    waits = []

    def counting_translate(exc, where):
        error = real_translate(exc, where)
        if isinstance(error, TransientRepositoryError):
            waits.append(str(error))
        return error

    def report():
        with open(os.environ["HALOMAIL_TEST_WAITS"], "w") as out:
            out.write(str(len(waits)))

    base.translate_error = counting_translate
    atexit.register(report)
    from halomail.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

EMAILS = 50


def _setup(root: Path) -> None:
    """The configuration, an initialised database, 50 emails for Support, 3 for Sales."""
    (root / "halomail.toml").write_text(CONFIG)
    for box in ("inbox", "sales"):
        for sub in ("cur", "new", "tmp"):
            (root / box / sub).mkdir(parents=True)
    assert _run(root)[0].returncode == 0  # an empty first run creates the database
    for n in range(EMAILS):
        raw = make_email(subject=f"Request {n}", message_id=f"<req-{n}@customer.example>")
        (root / "inbox" / "new" / f"17000000{n:02d}.M{n}P1.test").write_bytes(raw)
    for n in range(3):
        raw = make_email(subject=f"Sale {n}", message_id=f"<sale-{n}@customer.example>")
        (root / "sales" / "new" / f"17000001{n:02d}.M{n}P2.test").write_bytes(raw)


def _run(root: Path) -> tuple[subprocess.CompletedProcess[str], int, list[dict[str, object]]]:
    """``halomail run --once --json``: the process, its busy timeouts, its email outcomes."""
    waits = root / "waits"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "-c", str(root / "halomail.toml"), "run", "--once", "--json"],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "HALOMAIL_TEST_WAITS": str(waits),
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, int(waits.read_text()), [o for o in lines if o["event"] == "email"]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock (``BEGIN EXCLUSIVE``)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def _waiting(root: Path, box: str) -> int:
    return sum(1 for sub in ("new", "cur") for _ in (root / box / sub).iterdir())


def test_a_locked_database_stops_the_pass_after_one_wait_and_the_next_run_does_it_all(
    tmp_path: Path,
) -> None:
    """One busy timeout, not 50; nothing disposed; exit 1; once unlocked, 53 tickets once each."""
    _setup(tmp_path)
    with _locked(tmp_path / "halomail.db"):
        busy, waits, outcomes = _run(tmp_path)
    assert waits == 1, busy.stderr
    # Taking the first mailbox's lease met the lock: no email was attempted at all.
    assert outcomes == []
    assert busy.returncode == 1
    assert "repository busy: stopped the pass" in busy.stderr
    assert "mailbox Sales: not read: repository busy" in busy.stderr
    assert (_waiting(tmp_path, "inbox"), _waiting(tmp_path, "sales")) == (EMAILS, 3)

    done, waits, outcomes = _run(tmp_path)
    assert (done.returncode, waits) == (0, 0)
    assert [o["outcome"] for o in outcomes] == ["created"] * (EMAILS + 3)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        summaries = sorted(t.summary for t in repository.list_tickets(limit=1000))
    expected = [f"Request {n}" for n in range(EMAILS)] + [f"Sale {n}" for n in range(3)]
    assert summaries == sorted(expected)
    assert (_waiting(tmp_path, "inbox"), _waiting(tmp_path, "sales")) == (0, 0)


class _NoLeases(SQLiteTicketRepository):
    """A repository without leases, so the first write of the pass is an email's."""

    acquire_lease = None  # type: ignore[assignment]
    release_lease = None  # type: ignore[assignment]


def _busy_pass(tmp_path: Path, settings: ProcessorSettings, attempted: int) -> None:
    """Support (20 emails) meets the lock: only the first ``attempted`` are tried, each a
    retry; Sales is not read; nothing is disposed of; unlocked, all 25 are created."""
    db = tmp_path / "halomail.db"
    first = MemoryConnector(
        "Support",
        [make_email(subject=f"Help {n}", message_id=f"<s{n}@x.example>") for n in range(20)],
    )
    second = MemoryConnector(
        "Sales",
        [make_email(subject=f"Quote {n}", message_id=f"<t{n}@x.example>") for n in range(5)],
    )
    with _NoLeases(db, busy_timeout=0.05) as repository:
        processor = MailProcessor(repository, [Mailbox(first), Mailbox(second)], settings)
        with _locked(db):
            report = processor.run_once()
        assert [o.outcome for o in report.outcomes] == [Outcome.RETRY] * attempted
        assert report.repository_busy is not None
        assert report.repository_busy.startswith(
            f"repository busy: stopped the pass after {attempted} email(s) of mailbox Support"
        )
        assert not report.ok
        assert report.mailboxes[1].skipped
        assert (len(first.remaining), len(second.remaining), first.acks) == (20, 5, [])
        assert processor.health()[0].consecutive_failures == 0  # not the mailbox's fault

        again = processor.run_once()
        assert [o.outcome for o in again.outcomes] == [Outcome.CREATED] * 25
        assert again.ok


def test_the_batch_whose_write_met_the_lock_is_the_only_one_attempted(tmp_path: Path) -> None:
    """In-process, no leases, batches of 10: the first 10 of 20 emails retry, the rest wait."""
    settings = ProcessorSettings(loop_token="t", concurrent_mailboxes=1)
    assert settings.batch_size == 10  # the default
    _busy_pass(tmp_path, settings, attempted=10)


def test_the_email_whose_write_met_the_lock_is_the_only_one_attempted(tmp_path: Path) -> None:
    """In-process, no leases, one email at a time: 1 of 20 emails attempted, the rest wait."""
    settings = ProcessorSettings(loop_token="t", concurrent_mailboxes=1, batch_size=1)
    _busy_pass(tmp_path, settings, attempted=1)
