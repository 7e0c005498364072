"""Two bugs of issue 17: `halomail tickets | head -3` ended in a BrokenPipeError traceback,
and without an `[outgoing]` table mail was queued and never sent while nothing said so."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.cli import main
from halomail.tickets.models import NewTicket
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

HALOMAIL = shutil.which("halomail", path=str(Path(sys.executable).parent))

WITHOUT_OUTGOING = """\
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"
"""


def _setup(tmp_path: Path, toml: str = WITHOUT_OUTGOING) -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(toml)
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    return config


@pytest.mark.parametrize(
    "args", [["tickets", "--limit", "3000"], ["tickets", "--json", "--limit", "3000"]]
)
def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, args: list[str]) -> None:
    """`halomail tickets | head -3` through real pipes: three lines, exit 1, stderr silent."""
    assert HALOMAIL is not None, "the halomail console script is not installed"
    config = _setup(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo, repo.transaction():
        for n in range(3000):  # far more than a pipe holds: the writer must block
            repo.create_ticket(
                NewTicket(f"Ticket number {n} " + "x" * 60, "d", "Incident", "a@customer.example")
            )
    writer = subprocess.Popen(
        [HALOMAIL, "-c", str(config), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None
    assert writer.stderr is not None
    head = subprocess.run(
        ["head", "-3"], stdin=writer.stdout, capture_output=True, timeout=120, check=False
    )
    writer.stdout.close()  # as a shell does: only `head` holds the pipe's reading end
    try:
        stderr = writer.stderr.read().decode()
        code = writer.wait(timeout=120)
    finally:
        writer.kill()
        writer.wait()
        writer.stderr.close()
    assert len(head.stdout.splitlines()) == 3
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert stderr == ""
    assert code == 1


def test_check_config_warns_that_mail_is_queued_and_not_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No [outgoing]: the summary says so and a warning names the mailbox; exit status 0."""
    config = _setup(tmp_path)
    assert main(["-c", str(config), "check-config"]) == 0
    captured = capsys.readouterr()
    assert "outgoing via" not in captured.out
    assert "no [outgoing] table: mail is queued, not sent" in captured.out
    assert captured.err.startswith("warning: no [outgoing] table: mail from Support ")
    assert "is queued in the outbox but never sent; add an [outgoing] table" in captured.err
    assert main(["-c", str(config), "check-config", "--json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["event"], o.get("key_path")) for o in objects] == [
        ("config", None),
        ("warning", "outgoing"),
    ]


def test_check_config_with_outgoing_has_no_such_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an [outgoing] table: `outgoing via maildir` and no warning at all."""
    toml = WITHOUT_OUTGOING + '\n[outgoing]\ntransport = "maildir"\npath = "outbox"\n'
    config = _setup(tmp_path, toml)
    assert main(["-c", str(config), "check-config"]) == 0
    captured = capsys.readouterr()
    assert "outgoing via maildir" in captured.out
    assert captured.err == ""


def test_run_warns_once_and_its_summary_counts_the_mail_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`run`: one WARNING in the log, and the summary says how many mails wait unsent."""
    config = _setup(tmp_path)
    for n in range(2):
        raw = make_email(subject=f"Help {n}", message_id=f"<help-{n}@customer.example>")
        (tmp_path / "inbox" / "new" / f"{n}.eml").write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="halomail"):
        assert main(["-c", str(config), "run", "--once"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "no [outgoing] table" in r.getMessage()]
    assert len(warnings) == 1
    assert "mail from Support (acknowledgements included) is queued" in warnings[0]
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 emails waiting in the outbox, not sent: no [outgoing] table"
    assert main(["-c", str(config), "run", "--once", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (last["event"], last["waiting"]) == ("warning", 2)


def test_check_config_with_only_mailbox_outgoing_has_no_such_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No [outgoing] but the mailbox sends through its own: no warning, the summary says so."""
    toml = WITHOUT_OUTGOING + '\n[mailboxes.outgoing]\ntransport = "maildir"\npath = "outbox"\n'
    config = _setup(tmp_path, toml)
    assert main(["-c", str(config), "check-config"]) == 0
    captured = capsys.readouterr()
    assert "outgoing per mailbox" in captured.out
    assert captured.err == ""
