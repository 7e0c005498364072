"""`halomail check-config --connect`: logs in to each channel, says what it found, exit 0/1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_email
from tests.servers.dovecot import Account, Dovecot
from tests.servers.smtp import SmtpServer


def _write_maildir(root: Path, count: int) -> None:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    for n in range(count):
        raw = make_email(subject=f"Local {n}", message_id=f"<local{n}@customer.example>")
        (root / "new" / f"100{n}.local{n}.host").write_bytes(raw)


def _config(
    tmp_path: Path,
    dovecot: Dovecot,
    account: Account,
    smtp: SmtpServer,
    *,
    imap_password: str | None = None,
    pop3_password: str | None = None,
    smtp_password: str | None = None,
) -> Path:
    """Three mailboxes (IMAP, POP3, Maildir) and SMTP; a password not given is the right one."""
    imap_password = imap_password or account.password
    pop3_password = pop3_password or account.password
    smtp_password = smtp_password or smtp.password
    _write_maildir(tmp_path / "inbox", 2)
    config = tmp_path / "halomail.toml"
    config.write_text(
        f"""
[outgoing]
transport = "smtp"
host = "{smtp.host}"
port = {smtp.port}
security = "starttls"
tls_ca_file = "{smtp.ca_file}"
username = "{smtp.username}"
password = "{smtp_password}"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "imap"
host = "{dovecot.host}"
port = {dovecot.imaps_port}
security = "tls"
tls_ca_file = "{dovecot.ca_file}"
username = "{account.username}"
password = "{imap_password}"

[[mailboxes]]
name = "Sales"
connection = "pop3"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
security = "tls"
tls_ca_file = "{dovecot.ca_file}"
username = "{account.username}"
password = "{pop3_password}"

[[mailboxes]]
name = "Local"
connection = "maildir"
path = "inbox"
"""
    )
    return config


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "halomail.cli", "-c", str(config), "check-config"]
    return subprocess.run(
        [*command, "--connect", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A mailbox on the session's Dovecot holding three emails."""
    account = dovecot.new_account()
    for n in range(3):
        dovecot.append(account, make_email(subject=f"Remote {n}", message_id=f"<r{n}@x.example>"))
    return account


def test_every_channel_logs_in_and_says_what_it_found(
    tmp_path: Path, dovecot: Dovecot, account: Account, smtp_server: SmtpServer
) -> None:
    """Good credentials: one ok line per mailbox and outgoing server, counts right, exit 0."""
    config = _config(tmp_path, dovecot, account, smtp_server)
    done = _check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{config}: OK (3 mailboxes")
    imap_port, pop3_port = dovecot.imaps_port, dovecot.pop3s_port
    smtp = f"{smtp_server.host}:{smtp_server.port}"
    assert lines[1:] == [
        f"mailbox Support (imap {dovecot.host}:{imap_port}): ok, tls, IDLE, 3 messages in INBOX",
        f"mailbox Sales (pop3 {dovecot.host}:{pop3_port}): ok, tls, 3 messages",
        f"mailbox Local (maildir {tmp_path / 'inbox'}): ok, 2 messages",
        f"outgoing (smtp {smtp}): ok, STARTTLS (TLSv1.3), AUTH PLAIN",
    ]
    # A probe reads and sends nothing: the mail is all still there, none was sent.
    assert len(dovecot.messages(account)) == 3
    assert smtp_server.messages == []


def test_wrong_passwords_fail_their_lines_exit_1_and_print_no_password(
    tmp_path: Path, dovecot: Dovecot, account: Account, smtp_server: SmtpServer
) -> None:
    """Wrong IMAP, POP3 and SMTP passwords: three FAILED lines, the Maildir still ok, exit 1."""
    wrong = "Wrong-Secret-4711"
    config = _config(
        tmp_path,
        dovecot,
        account,
        smtp_server,
        imap_password=wrong,
        pop3_password=wrong,
        smtp_password=wrong,
    )
    done = _check(config)
    assert done.returncode == 1
    lines = done.stdout.splitlines()[1:]
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"mailbox Support (imap {dovecot.host}:{dovecot.imaps_port})",
        f"mailbox Sales (pop3 {dovecot.host}:{dovecot.pop3s_port})",
        f"mailbox Local (maildir {tmp_path / 'inbox'})",
        f"outgoing (smtp {smtp_server.host}:{smtp_server.port})",
    ]
    assert lines[0].split(": ", 1)[1].startswith("FAILED: authentication failed")
    assert lines[1].split(": ", 1)[1].startswith("FAILED: authentication failed")
    assert ": ok, 2 messages" in lines[2]
    assert lines[3].split(": ", 1)[1].startswith("FAILED: ")
    assert "535" in lines[3]  # the server's refusal, as it said it
    assert wrong not in done.stdout + done.stderr


def test_json_gives_one_probe_event_per_channel(
    tmp_path: Path, dovecot: Dovecot, account: Account, smtp_server: SmtpServer
) -> None:
    """--json: every stdout line is JSON: the config event, then one probe event per channel."""
    config = _config(
        tmp_path,
        dovecot,
        account,
        smtp_server,
        pop3_password="wrong-pop3-password",
    )
    done = _check(config, "--json")
    assert done.returncode == 1
    first, *events = [json.loads(line) for line in done.stdout.splitlines()]
    assert (first["event"], first["ok"]) == ("config", True)
    assert first["summary"].startswith(f"{config}: OK (3 mailboxes")
    assert {e["event"] for e in events} == {"probe"}
    assert [(e["channel"], e["kind"], e["ok"], e["messages"]) for e in events] == [
        ("mailbox Support", "imap", True, 3),
        ("mailbox Sales", "pop3", False, None),
        ("mailbox Local", "maildir", True, 2),
        ("outgoing", "smtp", True, None),
    ]
    assert "wrong-pop3-password" not in done.stdout


_DOCS = Path(__file__).parent.parent / "docs" / "mailboxes.md"
_LINE = re.compile(r"^(mailbox \S+|outgoing) \((\w+) [^)]*\): (ok, |FAILED: |not tested: )\S")


def _documented_session() -> tuple[list[str], list[str]]:
    """The command and the output lines of the check-config --connect console block."""
    text = _DOCS.read_text(encoding="utf-8")
    block = text.split("## Testing every channel", 1)[1].split("```console\n", 1)[1]
    lines = block.split("```", 1)[0].splitlines()
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    return commands, [line for line in lines if not line.startswith("$ ")]


def test_the_documented_command_runs_and_prints_lines_shaped_as_documented(
    tmp_path: Path,
) -> None:
    """docs/mailboxes.md: its command works on a Maildir setup, its lines have the real shape."""
    commands, documented = _documented_session()
    assert commands == ["halomail -c halomail.toml check-config --connect"]
    assert all(_LINE.match(line) for line in documented[1:])
    _write_maildir(tmp_path / "inbox", 1)
    (tmp_path / "halomail.toml").write_text(
        '[outgoing]\ntransport = "maildir"\npath = "outbox"\n\n'
        '[[mailboxes]]\nname = "Local"\nconnection = "maildir"\npath = "inbox"\n'
    )
    argv = commands[0].split()
    done = subprocess.run(
        [sys.executable, "-m", "halomail.cli", *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[0].startswith("halomail.toml: OK (1 mailboxes")
    assert documented[0].startswith("halomail.toml: OK (")
    assert [_LINE.match(line) is not None for line in printed[1:]] == [True, True]
    assert printed[1] == f"mailbox Local (maildir {tmp_path / 'inbox'}): ok, 1 message"
    assert printed[
        2
    ] == f"outgoing (maildir {tmp_path / 'outbox'}): ok, writes .eml files to " + str(
        tmp_path / "outbox"
    )
