"""A quarantined too-large email's detail says where the email really is (#17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halomail.cli import main
from tests.conftest import make_email
from tests.servers.dovecot import Dovecot

LIMITS = "\n[limits]\nmax_message_bytes = 20000\n"
BIG = make_email(subject="Scanned contract", body="x" * 60_000)
SMALL = make_email(subject="A short question", message_id="<short@customer.example>")


def _quarantine(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """Run once, then the quarantine as `halomail quarantine --json` lists it."""
    assert main(["-c", str(config), "run", "--once"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "quarantine", "--json"]) == 0
    entries: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return entries


def test_maildir_says_the_email_moved_to_its_quarantine_folder_and_it_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Maildir: the detail names the Quarantine folder, where the unread file now is."""
    inbox = tmp_path / "inbox"
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True)
    (inbox / "new" / "1.big").write_bytes(BIG)
    (inbox / "new" / "2.small").write_bytes(SMALL)
    config = tmp_path / "halomail.toml"
    config.write_text(
        '[storage]\nurl = "sqlite:///halomail.db"\n\n[[mailboxes]]\nname = "Support"\n'
        'connection = "maildir"\npath = "inbox"\nsend_acknowledgement = false\n' + LIMITS
    )
    (entry,) = _quarantine(config, capsys)
    assert entry["reason"] == "too-large"
    assert entry["detail"] == (
        f"{len(BIG)} bytes: over the limit; moved unread to the mailbox's 'Quarantine' folder"
    )
    (moved,) = (inbox / ".Quarantine" / "cur").iterdir()
    assert moved.read_bytes() == BIG
    assert [p for sub in ("new", "cur") for p in (inbox / sub).iterdir()] == []


def test_imap_says_the_email_moved_to_its_quarantine_folder_and_it_is_there(
    dovecot: Dovecot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IMAP (Dovecot): the detail names the Quarantine folder, which now holds the email."""
    account = dovecot.new_account()
    dovecot.append(account, BIG)
    dovecot.append(account, SMALL)
    config = tmp_path / "halomail.toml"
    config.write_text(
        f"""
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "imap"
host = "{dovecot.host}"
port = {dovecot.imaps_port}
security = "tls"
tls_ca_file = "{dovecot.ca_file}"
username = "{account.username}"
password = "{account.password}"
send_acknowledgement = false
"""
        + LIMITS
    )
    (entry,) = _quarantine(config, capsys)
    assert entry["detail"] == (
        f"{len(BIG)} bytes: over the limit; moved unread to the mailbox's 'Quarantine' folder"
    )
    assert dovecot.messages(account) == []
    (kept,) = dovecot.messages(account, "Quarantine")
    assert kept.replace(b"\r\n", b"\n") == BIG.replace(b"\r\n", b"\n")
