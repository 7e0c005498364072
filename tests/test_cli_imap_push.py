"""`halomail run` over IMAP, as an administrator runs it: pushed mail is a ticket within seconds."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_email
from tests.servers.dovecot import Dovecot


def _tickets(database: Path) -> list[str]:
    if not database.exists():
        return []
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)
        ) as db:
            return [row[0] for row in db.execute("SELECT summary FROM tickets ORDER BY id")]
    except sqlite3.OperationalError:  # the schema is still being created
        return []


def test_mail_appended_while_run_waits_becomes_a_ticket_long_before_the_next_poll(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    """With a 60 s poll interval, IDLE makes `halomail run` ticket new mail within
    seconds. The bound is 20 s, a third of the interval: a loaded machine has taken
    just over 5 s, and a run that only polled would take a minute."""
    account = dovecot.new_account()
    database = tmp_path / "halomail.db"
    config = tmp_path / "halomail.toml"
    config.write_text(
        f"""
[storage]
url = "sqlite:///{database}"

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
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "halomail.cli", "-c", str(config), "run", "--interval", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not database.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the first cycle has run once the database exists
        time.sleep(1.0)  # and the run is now waiting (IDLE) for the next cycle
        assert run.poll() is None
        dovecot.append(account, make_email(subject="Pushed while waiting"))
        appended = time.monotonic()
        while "Pushed while waiting" not in _tickets(database):
            assert time.monotonic() - appended < 20, "no ticket within 20 seconds of the append"
            time.sleep(0.1)
        assert dovecot.messages(account) == []  # moved out of INBOX after the commit
    finally:
        run.terminate()
        _out, err = run.communicate(timeout=30)
    assert account.password.encode() not in err
