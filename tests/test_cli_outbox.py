"""``halomail run`` with a wrong SMTP password, and ``halomail outbox [retry]``: issue 13, item 4.

Real processes of the ``halomail`` command, a real SQLite file, and the real SMTP
server of ``tests/servers/smtp.py`` configured to refuse the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from halomail.tickets.models import NewOutgoing, OutboxStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email
from tests.servers.smtp import SmtpServer

EMAILS = 5

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "smtp"
host = "{server.host}"
port = {server.port}
security = "starttls"
tls_ca_file = "{server.ca_file}"
username = "{server.username}"
password = "{password}"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"
"""


def _setup(tmp_path: Path, server: SmtpServer, password: str) -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(server=server, password=password))
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    for n in range(EMAILS):
        raw = make_email(
            sender=f"Customer {n} <c{n}@customer.example>",
            subject=f"Problem number {n}",
            message_id=f"<problem-{n}@customer.example>",
        )
        (tmp_path / "inbox" / "new" / f"{n:04d}.eml").write_bytes(raw)
    return config


def _halomail(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "halomail.cli", "-c", str(tmp_path / "halomail.toml"), *args]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _statuses(tmp_path: Path) -> list[OutboxStatus]:
    with SQLiteTicketRepository(tmp_path / "halomail.db", read_only=True) as repository:
        return [mail.status for mail in repository.list_outgoing()]


def test_a_wrong_password_stops_the_run_and_retry_sends_once_fixed(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """5 acks, wrong password: 1 login, exit 1, 5 pending; fixed + outbox retry: 5 sent once."""
    _setup(tmp_path, smtp_server, "not-the-password")
    run = _halomail(tmp_path, "run", "--once")
    assert run.returncode == 1, run.stderr
    assert len(smtp_server.auth_attempts) == 1
    assert "535" in run.stderr
    assert "sending through it stopped until" in run.stderr
    assert "not-the-password" not in run.stderr
    assert _statuses(tmp_path) == [OutboxStatus.PENDING] * EMAILS

    listed = _halomail(tmp_path, "outbox", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert [m["status"] for m in document["outgoing"]] == ["pending"] * EMAILS
    assert len(document["halted"]) == 1

    # A second run at once does not log in again: the transport waits for its backoff.
    again = _halomail(tmp_path, "run", "--once")
    assert again.returncode == 1, again.stderr
    assert len(smtp_server.auth_attempts) == 1

    # The administrator fixes the password and says so: everything is due now.
    _setup(tmp_path, smtp_server, smtp_server.password)
    retry = _halomail(tmp_path, "outbox", "retry", "--all")
    assert retry.returncode == 0, retry.stderr
    assert f"{EMAILS} emails queued again" in retry.stdout
    fixed = _halomail(tmp_path, "run", "--once")
    assert fixed.returncode == 0, fixed.stderr
    assert sorted(address for m in smtp_server.messages for address in m.rcpt_tos) == [
        f"c{n}@customer.example" for n in range(EMAILS)
    ]
    assert _statuses(tmp_path) == [OutboxStatus.SENT] * EMAILS
    assert json.loads(_halomail(tmp_path, "outbox", "--json").stdout) == {
        "outgoing": [],
        "halted": [],
    }


def test_outbox_retry_sends_mail_failed_by_an_older_version(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """Mail marked failed (as 0.2 did on a 535) is listed, retried by id, and sent once."""
    _setup(tmp_path, smtp_server, smtp_server.password)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        for n in range(2):
            mail = repository.enqueue_outgoing(
                _new(f"old-{n}@helpdesk.example", f"c{n}@customer.example")
            )
            repository.mark_outgoing(mail.id, OutboxStatus.FAILED, error="535 5.7.8 refused")
    listed = _halomail(tmp_path, "outbox")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("failed") == 2
    assert "535 5.7.8 refused" in listed.stdout

    unknown = _halomail(tmp_path, "outbox", "retry", "1", "99")
    assert unknown.returncode == 1
    assert "99" in unknown.stderr
    assert "1 emails queued again" in unknown.stdout
    assert _halomail(tmp_path, "outbox", "retry", "2").returncode == 0
    usage = _halomail(tmp_path, "outbox", "retry")
    assert usage.returncode == 2

    # Only the outbox: the inbox is emptied first so the run sends just these two.
    for path in (tmp_path / "inbox" / "new").iterdir():
        path.unlink()
    run = _halomail(tmp_path, "run", "--once")
    assert run.returncode == 0, run.stderr
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == [
        "c0@customer.example",
        "c1@customer.example",
    ]


def _new(message_id: str, to: str) -> NewOutgoing:
    return NewOutgoing(message_id=message_id, to=(to,), subject="Re: your request", text="Done.")
