"""F5: a process SIGKILLed at each step of the state machine loses nothing and doubles nothing.

Each case runs the real pipeline (Maildir in, SQLite, .eml files out) in a child
process that kills itself with SIGKILL at one step while handling the second of
three emails, then runs it again to the end. Afterwards every email has exactly
one ticket, every ticket exactly one acknowledgement on disk, and the inbox is empty.
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

pytestmark = pytest.mark.slow

STEPS = [
    "fetched",  # read from the mailbox, nothing written
    "before-commit",  # inside the transaction: ticket written, not committed
    "after-commit",  # committed, the source email not yet disposed of
    "after-dispose",  # disposed of, the acknowledgement not yet sent
    "during-send",  # the transport called, nothing written yet
    "after-send",  # the acknowledgement written, not yet marked sent
]

CHILD = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from pathlib import Path
    from halomail.backends.files import EmlFileTransport
    from halomail.backends.local import MaildirConnector
    from halomail.outbound.outbox import SenderIdentity
    from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
    from halomail.tickets.sqlite import SQLiteTicketRepository

    root, step, minutes_later = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seen = {"fetched": 0, "dedupe": 0, "ack": 0, "send": 0}

    def die(counter, target=2):
        seen[counter] += 1
        if seen[counter] == target:
            os.kill(os.getpid(), signal.SIGKILL)

    class Repo(SQLiteTicketRepository):
        def record_dedupe(self, record):
            super().record_dedupe(record)
            if step == "before-commit":
                die("dedupe")

    class Inbox(MaildirConnector):
        def fetch(self):
            for message in super().fetch():
                if step == "fetched":
                    die("fetched")
                yield message

        def ack(self, ref, disposition):
            if step == "after-commit":
                die("ack")
            super().ack(ref, disposition)
            if step == "after-dispose":
                die("ack")

    class Outbox(EmlFileTransport):
        def send(self, mail):
            if step == "during-send":
                die("send")
            super().send(mail)
            if step == "after-send":
                die("send")

    repo = Repo(root / "halomail.db")
    processor = MailProcessor(
        repo,
        [Mailbox(Inbox("Support", root / "inbox"))],
        ProcessorSettings(loop_token="crash-token", domain="helpdesk.example",
                          default_sender=SenderIdentity("support@helpdesk.example")),
        transport=Outbox(root / "outbox"),
        clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes_later),
    )
    processor.run_once()
    repo.close()
    """
)


def _maildir(root: Path, count: int) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = root / "inbox" / "new" / f"17000000{index:02d}.M{index}P1.test"
        path.write_bytes(
            make_email(subject=f"Request {index}", message_id=f"<req-{index}@customer.example>")
        )
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


def _run(root: Path, step: str, *, minutes_later: int = 0) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), step, str(minutes_later)],
        env=env,
        capture_output=True,
        timeout=60,
    )
    return result.returncode


@pytest.mark.parametrize("step", STEPS)
def test_f5_killed_at_each_step_then_restarted_gives_exactly_one_of_everything(
    step: str, tmp_path: Path
) -> None:
    """SIGKILL at this step, then a restart: 3 tickets, 3 acknowledgements, inbox empty."""
    _maildir(tmp_path, 3)
    assert _run(tmp_path, step) == -signal.SIGKILL
    assert _run(tmp_path, "none") == 0
    # Outgoing mail the killed run had claimed is sent once its claim's lease (5 minutes)
    # has run out; a run then sends it, and doubles nothing else.
    assert _run(tmp_path, "none", minutes_later=6) == 0

    repo = SQLiteTicketRepository(tmp_path / "halomail.db")
    subjects = Counter(t.summary for t in repo.list_tickets())
    repo.close()
    assert subjects == Counter({"Request 0": 1, "Request 1": 1, "Request 2": 1})

    acknowledged = Counter(
        email.message_from_bytes(path.read_bytes())["In-Reply-To"]
        for path in (tmp_path / "outbox").glob("*.eml")
    )
    assert acknowledged == Counter({f"<req-{i}@customer.example>": 1 for i in range(3)})

    left = list((tmp_path / "inbox" / "new").iterdir()) + list(
        (tmp_path / "inbox" / "cur").iterdir()
    )
    assert left == []
    assert len(list((tmp_path / "inbox" / ".Deleted Items" / "cur").iterdir())) == 3
