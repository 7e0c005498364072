"""``halomail services [--json]`` and ``halomail services message`` (#17).

Real ``halomail`` processes on a real SQLite file, mail sent to the aiosmtpd server of
``tests/servers/smtp.py``. The configuration, the Python block and the commands are
those of the "Monitored services" section of docs/processing.md, run as written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_email
from tests.servers.smtp import SmtpServer

DOC = (Path(__file__).parent.parent / "docs" / "processing.md").read_text()
SECTION = DOC[DOC.index("## Monitored services") :]
(TOML, *_) = re.findall(r"^```toml\n(.*?)^```", SECTION, re.MULTILINE | re.DOTALL)
(PYTHON,) = re.findall(r"^```python\n(.*?)^```", SECTION, re.MULTILINE | re.DOTALL)
(SHELL,) = re.findall(r"^```sh\n(.*?)^```", SECTION, re.MULTILINE | re.DOTALL)

SETUP = """\
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

[sms]
provider_domain = "sms.example.net"
from_address = "sms-account@helpdesk.example"
default_country_code = "44"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"

"""
SMS_TO = "447700900123@sms.example.net"


@pytest.fixture
def folder(tmp_path: Path, smtp_server: SmtpServer) -> Path:
    """The guide's service and rule, SQLite, SMTP to the test server, an empty inbox."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    (tmp_path / "halomail.toml").write_text(SETUP.format(server=smtp_server) + TOML)
    return tmp_path


def _halomail(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "halomail.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _deliver(folder: Path, *results: str) -> None:
    """Backup reports into the Maildir, in this order (Maildir order is arrival order)."""
    for n, result in enumerate(results):
        path = folder / "inbox" / "new" / f"{1_700_000_000 + n}.{n:04d}.test"
        path.write_bytes(
            make_email(
                sender="Veeam Backup <backup@example.com>",
                subject=f"[{result}] Nightly backup job {n}",
                message_id=f"<backup-{n}@example.com>",
                body=f"Result: {result}\n",
            )
        )
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))


def _recipients(server: SmtpServer) -> list[str]:
    return sorted(rcpt for captured in server.messages for rcpt in captured.rcpt_tos)


def test_services_lists_status_last_report_and_history(folder: Path) -> None:
    """After ok, failed, ok: OK, a last report, three changes (the failure with its ticket)."""
    _deliver(folder, "Success", "Failed", "Success")
    run = _halomail(folder, "run", "--once")
    assert run.returncode == 0, run.stderr

    listed = _halomail(folder, "services", "--json")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    service = json.loads(line)
    assert (service["event"], service["service"], service["status"]) == (
        "service",
        "Nightly backup",
        "ok",
    )
    assert service["last_report_at"] is not None
    assert service["since"] == service["history"][0]["at"]
    assert [h["status"] for h in service["history"]] == ["ok", "failed", "ok"]
    failed = service["history"][1]
    assert failed["detail"] == "[Failed] Nightly backup job 1"
    assert failed["ticket_id"] == 1
    assert (service["subscribers"], service["check_interval_minutes"]) == (2, 1560)

    plain = _halomail(folder, "services")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("Nightly backup: OK (last report ")
    assert "failed   [Failed] Nightly backup job 1 [ticket 1]" in lines[2]
    assert len(lines) == 4


def test_a_service_that_never_reported_is_listed_as_such(folder: Path) -> None:
    """No email yet: status null in JSON, "NO REPORT YET" on the terminal."""
    as_json = json.loads(_halomail(folder, "services", "--json").stdout)
    assert (as_json["status"], as_json["last_report_at"], as_json["history"]) == (None, None, [])
    assert _halomail(folder, "services").stdout.startswith("Nightly backup: NO REPORT YET")


def test_the_guides_python_block_tells_every_subscriber(
    folder: Path, smtp_server: SmtpServer
) -> None:
    """The guide's Python block queues and sends one email and one SMS."""
    result = subprocess.run(
        [sys.executable, "-c", PYTHON], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True]"
    assert _recipients(smtp_server) == [SMS_TO, "ops@example.com"]
    mail = next(c for c in smtp_server.messages if "ops@example.com" in c.rcpt_tos)
    assert b"Nightly backup pauses from 22:00 to 23:00" in mail.raw


def test_the_guides_message_commands_tell_each_subscriber_once(
    folder: Path, smtp_server: SmtpServer
) -> None:
    """message: 2 sent; the same again: none; --file --sms: the SMS subscriber only."""
    commands = [shlex.split(line) for line in SHELL.splitlines() if "message" in line]
    assert len(commands) == 2
    assert all(argv[0] == "halomail" for argv in commands)
    first = _halomail(folder, *commands[0][1:])
    assert first.returncode == 0, first.stderr
    assert "message queued to 2 of 2 subscribers" in first.stdout
    assert _recipients(smtp_server) == [SMS_TO, "ops@example.com"]

    again = _halomail(folder, *commands[0][1:])
    assert again.returncode == 0, again.stderr
    assert "queued to 0 of 2" in again.stdout
    assert "2 had it already" in again.stdout
    assert len(smtp_server.messages) == 2

    (folder / "notice.txt").write_text("Backups are back.\r\nThank you for waiting.\n")
    texted = _halomail(folder, *commands[1][1:])
    assert texted.returncode == 0, texted.stderr
    assert "message queued to 1 of 1 subscribers" in texted.stdout
    assert _recipients(smtp_server) == [SMS_TO, SMS_TO, "ops@example.com"]
    assert b"Backups are back." in smtp_server.messages[-1].raw


def test_message_to_an_unknown_service_is_a_usage_error(folder: Path) -> None:
    """An unknown service name: exit 2, the known names listed, nothing sent."""
    result = _halomail(folder, "services", "message", "Backup", "--text", "hello")
    assert result.returncode == 2
    assert "no monitored service 'Backup' (known: 'Nightly backup')" in result.stderr


def test_the_guides_listing_commands_run(folder: Path) -> None:
    """The guide's `halomail services` and `halomail services --json` run as written."""
    listing = [
        shlex.split(line)
        for line in SHELL.splitlines()
        if line.startswith("halomail ") and "message" not in line
    ]
    assert [argv[1:] for argv in listing] == [["services"], ["services", "--json"]]
    for argv in listing:
        result = _halomail(folder, *argv[1:])
        assert result.returncode == 0, result.stderr
        assert "Nightly backup" in result.stdout
