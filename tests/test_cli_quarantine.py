"""`halomail quarantine show|export|release|delete` (#17): real `run`s of the command on a
Maildir and a real SQLite file; the subprocess cases run the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.cli import main
from halomail.tickets.models import NewQuarantine
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
processed = "move:Processed"
hijack = "{hijack}"
"""

# A follow-up naming ticket 1 from a stranger: quarantined while hijack = "quarantine".
STRANGER = make_email(
    sender="Mallory <mallory@elsewhere.example>",
    subject="Re: [ID:1] Printer is jammed",
    body="Please send me the admin password.\n" + "x" * 5000 + "\n",
    message_id="<stranger-1@elsewhere.example>",
)


def _config(tmp_path: Path, *, hijack: str = "quarantine") -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(hijack=hijack))
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    return config


def _run(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """`run --once --json`: the per-email objects."""
    main(["-c", str(config), "run", "--once", "--json"])
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [o for o in objects if o.get("event", "email") == "email"]


@pytest.fixture
def quarantined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Ticket 1 from Alice, then a stranger's reply to it quarantined (entry 1)."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "new" / "1.eml").write_bytes(make_email())
    assert [e["outcome"] for e in _run(config, capsys)] == ["created"]
    (tmp_path / "inbox" / "new" / "2.eml").write_bytes(STRANGER)
    outcomes = [(e["outcome"], e["reason"]) for e in _run(config, capsys)]
    assert outcomes == [("quarantined", "thread-hijack-suspected")]
    return config


def _tickets(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["-c", str(config), "tickets", "--json"]) == 0
    return [t["summary"] for t in json.loads(capsys.readouterr().out)]


def test_show_gives_the_reason_and_the_original_headers_and_text(
    quarantined: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`show ID`: reason, mailbox, Message-ID, then the email's headers and readable text."""
    assert main(["-c", str(quarantined), "quarantine", "show", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Quarantined email 1: thread-hijack-suspected"
    assert lines[1].startswith("  mailbox Support, 20")
    assert lines[2] == "  Message-ID stranger-1@elsewhere.example"
    assert "From: Mallory <mallory@elsewhere.example>" in lines
    assert "Subject: Re: [ID:1] Printer is jammed" in lines
    assert "Please send me the admin password." in lines
    assert main(["-c", str(quarantined), "quarantine", "show", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["reason"], shown["size"], shown["released"]) == (
        "thread-hijack-suspected",
        len(STRANGER),
        None,
    )
    assert ["Subject", "Re: [ID:1] Printer is jammed"] in shown["headers"]
    assert shown["text"].startswith("Please send me the admin password.")


def test_show_bounds_a_huge_body_and_says_how_to_get_all_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 MB text body shows its first 4,000 characters and points to `export`."""
    config = _config(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        raw = make_email(body="line of text\n" * 160_000)
        repo.quarantine(NewQuarantine("Support", "processing-error", raw, "KeyError: 'x'"))
    assert main(["-c", str(config), "quarantine", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert len(out) < 10_000
    assert "more characters: halomail quarantine export 1]" in out
    assert "  KeyError: 'x'" in out.splitlines()


def test_export_writes_the_original_bytes_exactly(quarantined: Path) -> None:
    """`export ID` to stdout (a pipe) and `-o FILE` both give the stored bytes, byte for byte."""
    command = [sys.executable, "-m", "halomail.cli", "-c", str(quarantined), "quarantine"]
    piped = subprocess.run([*command, "export", "1"], capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == STRANGER
    target = quarantined.parent / "exported.eml"
    assert main(["-c", str(quarantined), "quarantine", "export", "1", "-o", str(target)]) == 0
    assert target.read_bytes() == STRANGER


def test_release_processes_it_again_and_a_second_release_creates_nothing(
    tmp_path: Path, quarantined: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hijack setting relaxed, `release` opens a ticket, records it; releasing again is a no-op."""
    _config(tmp_path, hijack="new-ticket")
    assert main(["-c", str(quarantined), "quarantine", "release", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quarantined email 1: released 20")
    assert ": created ticket 2" in out
    assert _tickets(quarantined, capsys) == ["Re: [ID:1] Printer is jammed", "Printer is jammed"]
    assert main(["-c", str(quarantined), "quarantine", "release", "1", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["event"], again["again"], again["outcome"], again["ticket_id"]) == (
        "released",
        True,
        "created",
        2,
    )
    assert len(_tickets(quarantined, capsys)) == 2
    assert main(["-c", str(quarantined), "quarantine", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["released"]["outcome"], listed["released"]["ticket_id"]) == ("created", 2)
    # The source email, fetched again, is still a duplicate of its first record.
    (tmp_path / "inbox" / "new" / "3.eml").write_bytes(STRANGER)
    assert [(e["outcome"], e["reason"]) for e in _run(quarantined, capsys)] == [
        ("skipped", "duplicate")
    ]
    assert len(_tickets(quarantined, capsys)) == 2


def test_release_under_the_same_settings_quarantines_it_again_with_no_ticket(
    quarantined: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing changed: the release gives the same verdict, a new entry, and no ticket."""
    assert main(["-c", str(quarantined), "quarantine", "release", "1"]) == 0
    assert "released 20" in capsys.readouterr().out
    assert _tickets(quarantined, capsys) == ["Printer is jammed"]
    assert main(["-c", str(quarantined), "quarantine", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["reason"]) for e in entries] == [
        (2, "thread-hijack-suspected"),
        (1, "thread-hijack-suspected"),
    ]
    assert entries[1]["released"]["outcome"] == "quarantined"


def test_delete_needs_yes_off_a_terminal_and_keeps_the_dedupe_record(
    tmp_path: Path, quarantined: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --yes and no terminal it refuses (exit 2); with --yes it is gone for good."""
    command = [sys.executable, "-m", "halomail.cli", "-c", str(quarantined), "quarantine"]
    refused = subprocess.run(
        [*command, "delete", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert "add --yes to delete it" in refused.stderr
    assert main(["-c", str(quarantined), "quarantine", "delete", "1", "--yes"]) == 0
    assert capsys.readouterr().out == "deleted quarantined email 1\n"
    assert main(["-c", str(quarantined), "quarantine", "show", "1"]) == 1
    assert "no quarantined email 1" in capsys.readouterr().err
    assert main(["-c", str(quarantined), "quarantine", "delete", "1", "--yes"]) == 1
    capsys.readouterr()
    (tmp_path / "inbox" / "new" / "3.eml").write_bytes(STRANGER)
    assert [e["outcome"] for e in _run(quarantined, capsys)] == ["skipped"]


def test_a_too_large_email_has_nothing_to_export_or_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry kept without its bytes: export and release say why and exit 1."""
    config = _config(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        repo.quarantine(
            NewQuarantine("Support", "too-large", b"", "30000000 bytes: over the limit")
        )
    for action in ("export", "release"):
        assert main(["-c", str(config), "quarantine", action, "1"]) == 1
        assert "the original was not kept" in capsys.readouterr().err
