"""Issue 18, point 2: group commit bounded in count and in age, and two runners at once.

Two real ``halomail run`` processes read one Maildir into one SQLite file, several
cycles each, at the same time, with batches, while more mail arrives: every email is
exactly one ticket with one acknowledgement sent, and the inbox ends empty.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from halomail.app import build_processor
from halomail.backends.base import FetchedMessage
from halomail.backends.local import MaildirConnector
from halomail.config import load_config
from halomail.errors import ConfigError
from halomail.pipeline.batch import Batches
from halomail.pipeline.settings import ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.test_group_commit import CONFIG, HALOMAIL, _mail

pytestmark = pytest.mark.slow


def _fetched(n: int) -> FetchedMessage:
    raw = _mail(n)
    return FetchedMessage(ref=str(n), raw=raw, size=len(raw))


class _Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_ready_when_full() -> None:
    """With a patient clock, batches hold batch_size emails; the rest is taken at the end."""
    batches = Batches(3, dt.timedelta(seconds=1), clock=_Clock())
    ready = [batches.add(_fetched(n)) for n in range(7)]
    sizes = [len(batch) for batch in ready if batch is not None]
    assert sizes == [3, 3]
    assert [f.ref for f in batches.take()] == ["6"]
    assert batches.take() == []


def test_a_batch_whose_first_email_waited_too_long_is_ready_unfilled() -> None:
    """An email arriving after the first has waited batch_max_wait closes the batch."""
    clock = _Clock()
    batches = Batches(10, dt.timedelta(milliseconds=500), clock=clock)
    assert batches.add(_fetched(0)) is None
    clock.now += 0.2
    assert batches.add(_fetched(1)) is None
    clock.now += 0.3  # the first has waited 500 ms
    ready = batches.add(_fetched(2))
    assert ready is not None
    assert [f.ref for f in ready] == ["0", "1", "2"]
    assert batches.add(_fetched(3)) is None  # a new batch, its own clock
    assert [f.ref for f in batches.take()] == ["3"]


def test_batch_max_ms_and_the_largest_batch_size_are_read_from_the_config(
    tmp_path: Path,
) -> None:
    """[processing] batch_max_ms is read; a batch_size over 1000 is refused with its key."""
    MaildirConnector("Support", tmp_path / "inbox", create=True).close()
    path = tmp_path / "halomail.toml"
    path.write_text(
        CONFIG.format(batch_size=10).replace("[processing]\n", "[processing]\nbatch_max_ms = 250\n")
    )
    processing = load_config(path).processing
    assert (processing.batch_size, processing.batch_max_ms) == (10, 250)
    path.write_text(CONFIG.format(batch_size=1001))
    with pytest.raises(ConfigError, match=r"batch_size.*at most 1000"):
        load_config(path)


def test_ten_emails_a_batch_is_the_default_everywhere(tmp_path: Path) -> None:
    """No batch_size in halomail.toml: the config, its processor and ProcessorSettings say 10."""
    MaildirConnector("Support", tmp_path / "inbox", create=True).close()
    path = tmp_path / "halomail.toml"
    path.write_text(CONFIG.format(batch_size=1).replace("batch_size = 1\n", ""))
    config = load_config(path)
    assert (config.processing.batch_size, config.processing.batch_max_ms) == (10, 1000)
    with build_processor(config) as processor:
        assert processor.settings.batch_size == 10
        assert processor.settings.batch_max_wait == dt.timedelta(seconds=1)
    assert ProcessorSettings(loop_token="t").batch_size == 10


ROUNDS = 4
WAVE = 8


def _drop(inbox: Path, first: int, count: int) -> None:
    """Deliver requests first .. first+count-1 into the Maildir's new/."""
    for n in range(first, first + count):
        (inbox / "new" / f"{1_700_000_000 + n}.M{n}P2.mx").write_bytes(_mail(n))


def test_two_runners_at_once_with_batches_make_one_ticket_and_one_ack_per_email(
    tmp_path: Path,
) -> None:
    """Two `halomail run --once` processes, side by side for several cycles on one
    Maildir and one SQLite file (batches of 4), while mail keeps arriving: each email
    is one ticket with one acknowledgement, and nothing is left in the inbox."""
    root = tmp_path / "desk"
    root.mkdir()
    config = root / "halomail.toml"
    config.write_text(CONFIG.format(batch_size=4))
    MaildirConnector("Support", root / "inbox", create=True).close()
    delivered = 0
    for _ in range(ROUNDS):
        _drop(root / "inbox", delivered, WAVE)
        delivered += WAVE
        runners = [
            subprocess.Popen(
                [*HALOMAIL, "-c", str(config), "run", "--once"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for runner in runners:
            _, stderr = runner.communicate(timeout=300)
            assert runner.returncode == 0, stderr
    # A last cycle for what a runner skipped while the other held the mailbox's lease.
    done = subprocess.run(
        [*HALOMAIL, "-c", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with SQLiteTicketRepository(root / "halomail.db") as repository:
        tickets = repository.list_tickets(limit=1000)
        mail = repository.list_outgoing(limit=1000)
    assert sorted(t.summary for t in tickets) == sorted(f"Request {n}" for n in range(delivered))
    assert sorted(m.ticket_id for m in mail) == sorted(t.id for t in tickets)
    assert {m.status.value for m in mail} == {"sent"}
    sent = [p for p in (root / "outbox").rglob("*") if p.is_file()]
    assert len(sent) == delivered
    inbox = root / "inbox"
    assert [p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir()] == []
