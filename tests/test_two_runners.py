"""Two `halomail run --once` started together on one configuration send each email once.

The issue's "Done when": 300 emails in a Maildir, SQLite storage, SMTP outgoing to a
real server on loopback. Both processes read the same inbox and send the same
outbox; the dedupe keys make each email one ticket, and the outbox's claims make
each acknowledgement leave once.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
from collections import Counter
from email.policy import compat32
from pathlib import Path

import pytest

from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email
from tests.servers.smtp import SmtpServer

EMAILS = 300

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
password = "{server.password}"
from_address = "support@helpdesk.example"
display_name = "Support"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"
"""


def _setup(tmp_path: Path, server: SmtpServer) -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(server=server))
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    for n in range(EMAILS):
        raw = make_email(
            sender=f"Customer {n} <c{n}@customer.example>",
            subject=f"Problem number {n}",
            message_id=f"<problem-{n}@customer.example>",
        )
        (tmp_path / "inbox" / "new" / f"{n:04d}.eml").write_bytes(raw)
    return config


@pytest.mark.slow
def test_two_runs_at_once_make_300_tickets_and_send_300_acknowledgements_once(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """Two processes, one configuration, 300 emails: 300 tickets, each acknowledgement once."""
    config = _setup(tmp_path, smtp_server)
    command = [sys.executable, "-m", "halomail.cli", "-c", str(config), "run", "--once"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    runs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err.decode(errors="replace")[-3000:]
    with SQLiteTicketRepository(tmp_path / "halomail.db", read_only=True) as repository:
        tickets = repository.list_tickets(limit=10 * EMAILS)
        quarantined = repository.list_quarantine(limit=10 * EMAILS)
    assert len(tickets) == EMAILS
    assert sorted(t.summary for t in tickets) == sorted(
        f"Problem number {n}" for n in range(EMAILS)
    )
    assert quarantined == []
    message_ids = Counter(
        email.message_from_bytes(m.raw, policy=compat32)["Message-ID"] for m in smtp_server.messages
    )
    assert len(smtp_server.messages) == EMAILS
    assert len(message_ids) == EMAILS
    assert set(message_ids.values()) == {1}
    recipients = sorted(address for m in smtp_server.messages for address in m.rcpt_tos)
    assert recipients == sorted(f"c{n}@customer.example" for n in range(EMAILS))
