"""Issue 13, item 2: an email that kills the process cannot block its mailbox.

The poison is simulated the only way a test can make a process die hard on one email:
the child ``halomail`` process starts through a wrapper that replaces the parser, in
that child only, with one that calls ``os._exit(137)`` (what the kernel's OOM killer
leaves) when the raw bytes carry a marker. Everything else is the real command on a
real Maildir and a real SQLite file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail import Mailbox, MailProcessor, ProcessorSettings
from halomail.backends.base import FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.pipeline import attempts
from halomail.pipeline.attempts import CRASHES_BEFORE_QUARANTINE
from halomail.pipeline.results import Outcome, Reason
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

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
"""

MARKER = b"X-Test-Poison: kills-the-parser"

# The child: the real `halomail` command, with the parser replaced in this process only.
# With a flag file named in HALOMAIL_TEST_DIE_ONCE, it dies only while that file is
# absent (a crash that was the machine's fault, not the email's).
CHILD = textwrap.dedent(
    """
    import os, sys
    import halomail.inbound.parse as parse
    import halomail.pipeline.batch as batch
    import halomail.pipeline.unit as unit

    real_parse = parse.parse_email
    once = os.environ.get("HALOMAIL_TEST_DIE_ONCE")

    def parse_or_die(raw, *args, **kwargs):
        if b"X-Test-Poison: kills-the-parser" in raw:
            if once is None:
                os._exit(137)
            if not os.path.exists(once):
                open(once, "w").close()
                os._exit(137)
        return real_parse(raw, *args, **kwargs)

    # Every caller of the parser: one email alone (unit), or a batch of them (batch).
    parse.parse_email = unit.parse_email = batch.parse_email = parse_or_die
    from halomail.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _setup(root: Path, *, poison: bool = True, batch_size: int | None = None) -> bytes:
    """A Maildir with three good emails and, between them, the poison; its bytes.

    ``batch_size``: the ``[processing]`` one, when not the default (10)."""
    processing = "" if batch_size is None else f"\n[processing]\nbatch_size = {batch_size}\n"
    (root / "halomail.toml").write_text(CONFIG + processing)
    for sub in ("cur", "new", "tmp"):
        (root / "inbox" / sub).mkdir(parents=True)
    bad = make_email(
        subject="Poison", message_id="<poison@attacker.example>", headers={"X-Test-Poison": ""}
    ).replace(b"X-Test-Poison: ", MARKER)
    emails = [make_email(subject="Request 1", message_id="<req-1@customer.example>")]
    emails += [bad] if poison else []
    emails += [
        make_email(subject=f"Request {n}", message_id=f"<req-{n}@customer.example>") for n in (2, 3)
    ]
    for index, raw in enumerate(emails):
        path = root / "inbox" / "new" / f"17000000{index:02d}.M{index}P1.test"
        path.write_bytes(raw)
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
    return bad


# A quarantined email fails the run only when asked (the default is --fail-on error).
CHILD_COMMAND = (sys.executable, "-c", CHILD)
FAIL_ON_QUARANTINE = ("--fail-on", "quarantine")


def _run(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``halomail run --once`` in a child process whose parser dies on the marker."""
    return subprocess.run(
        [*CHILD_COMMAND, "-c", str(root / "halomail.toml"), "run", "--once", *FAIL_ON_QUARANTINE],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _after_a_death(root: Path) -> None:
    """Five minutes pass: the lease the dead process held on the mailbox runs out.

    (The next run is another runner: it leaves a mailbox alone while its lease is held.)
    """
    with contextlib.closing(sqlite3.connect(root / "halomail.db")) as connection, connection:
        expired = connection.execute(
            "UPDATE leases SET held_until = '2000-01-01T00:00:00.000000+00:00'"
        ).rowcount
    assert expired == 1


def _inbox(root: Path) -> list[str]:
    return sorted(p.name for sub in ("new", "cur") for p in (root / "inbox" / sub).iterdir())


def _acknowledgements(root: Path) -> int:
    return len(list((root / "outbox").glob("*.eml")))


@pytest.mark.parametrize("batch_size", [None, 1], ids=["batches-of-10", "one-at-a-time"])
def test_a_poison_email_costs_two_deaths_then_is_quarantined_and_the_rest_go_on(
    tmp_path: Path, batch_size: int | None
) -> None:
    """Runs 1 and 2 die on it; run 3 quarantines it unparsed and makes 3 tickets; run 4 adds 0."""
    poison = _setup(tmp_path, batch_size=batch_size)
    assert _run(tmp_path).returncode == 137
    _after_a_death(tmp_path)
    assert _run(tmp_path).returncode == 137
    _after_a_death(tmp_path)
    third = _run(tmp_path)
    # Not 137: the poison was not parsed again. 1: a quarantined email (--fail-on quarantine).
    assert third.returncode == 1, third.stderr
    assert "quarantined (repeated-crash)" in third.stdout
    assert _run(tmp_path).returncode == 0

    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        subjects = Counter(t.summary for t in repository.list_tickets())
        quarantined = list(repository.list_quarantine())
    assert subjects == Counter({"Request 1": 1, "Request 2": 1, "Request 3": 1})
    assert [(q.reason, q.raw) for q in quarantined] == [("repeated-crash", poison)]
    assert "2 times" in quarantined[0].detail
    assert _inbox(tmp_path) == []
    assert [p.name for p in (tmp_path / "inbox" / ".Quarantine" / "cur").iterdir()] == [
        "1700000001.M1P1.test:2,"
    ]
    assert _acknowledgements(tmp_path) == 3


def test_a_single_crash_is_retried_and_the_email_becomes_a_ticket(tmp_path: Path) -> None:
    """One death on an email is given a retry: the next run makes its ticket, quarantines none."""
    _setup(tmp_path)
    flag = str(tmp_path / "died-once")
    assert _run(tmp_path, HALOMAIL_TEST_DIE_ONCE=flag).returncode == 137
    _after_a_death(tmp_path)
    assert _run(tmp_path, HALOMAIL_TEST_DIE_ONCE=flag).returncode == 0

    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        subjects = Counter(t.summary for t in repository.list_tickets())
        assert list(repository.list_quarantine()) == []
    assert subjects == Counter({"Request 1": 1, "Poison": 1, "Request 2": 1, "Request 3": 1})
    assert _inbox(tmp_path) == []


def _two_deaths(repository: InMemoryTicketRepository | SQLiteTicketRepository, raw: bytes) -> None:
    """Leave the state two processes that died on ``raw`` leave: two unfinished attempts."""
    fetched = FetchedMessage("1", raw, len(raw))
    for _ in range(CRASHES_BEFORE_QUARANTINE):
        attempts.begin(repository, "Support", fetched, dt.datetime.now(dt.UTC))


@pytest.fixture(params=["memory", "sqlite"])
def repository(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[InMemoryTicketRepository | SQLiteTicketRepository]:
    """Each shipped repository, fresh, closed after the test."""
    if request.param == "memory":
        yield InMemoryTicketRepository()
        return
    with SQLiteTicketRepository(tmp_path / "halomail.db") as opened:
        yield opened


def test_a_quarantined_poison_fetched_again_is_a_duplicate_not_parsed_again(
    repository: InMemoryTicketRepository | SQLiteTicketRepository,
) -> None:
    """A server that cannot move it aside hands it over again: skipped, one quarantine entry."""
    raw = make_email(subject="Poison")
    _two_deaths(repository, raw)
    settings = ProcessorSettings(loop_token="t")
    first = MemoryConnector("Support", [raw])
    (outcome,) = MailProcessor(repository, [Mailbox(first)], settings).run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.QUARANTINED, Reason.REPEATED_CRASH)
    again = MemoryConnector("Support", [raw])
    (outcome,) = MailProcessor(repository, [Mailbox(again)], settings).run_once().outcomes
    assert (outcome.outcome, outcome.reason, outcome.recorded) == (
        Outcome.SKIPPED,
        Reason.DUPLICATE,
        Outcome.QUARANTINED,
    )
    assert [q.reason for q in repository.list_quarantine()] == ["repeated-crash"]
    assert list(repository.list_tickets()) == []
