"""`halomail send-test-email` sends at once through the mailbox's outgoing settings."""

from __future__ import annotations

import email
from email.policy import compat32
from pathlib import Path

import pytest

from halomail.cli import main
from tests.servers.smtp import SmtpServer


def _config(tmp_path: Path, server: SmtpServer, *, password: str) -> Path:
    config = tmp_path / "halomail.toml"
    (tmp_path / "inbox").mkdir()
    config.write_text(
        f"""
[outgoing]
transport = "smtp"
host = "{server.host}"
port = {server.port}
security = "starttls"
tls_ca_file = "{server.ca_file}"
username = "{server.username}"
password = "{password}"
from_address = "support@helpdesk.example"
display_name = "Support"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
"""
    )
    return config


def test_a_test_email_arrives_from_the_mailbox(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """It prints the route and the server receives the Test Email template over TLS+AUTH."""
    config = _config(tmp_path, smtp_server, password=smtp_server.password)
    code = main(
        ["-c", str(config), "send-test-email", "--mailbox", "support", "--to", "me@x.example"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"via smtp to {smtp_server.host}:{smtp_server.port}" in out
    (received,) = smtp_server.messages
    assert received.rcpt_tos == ("me@x.example",)
    assert received.tls
    assert received.auth_user == smtp_server.username
    message = email.message_from_bytes(received.raw, policy=compat32)
    assert message["Subject"] == "Test email from Support"
    assert message["From"] == "Support <support@helpdesk.example>"
    assert message["Message-ID"].strip("<>") in out


def test_a_refused_login_fails_with_exit_1_and_no_password_shown(
    tmp_path: Path, smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong password: exit status 1, the server's refusal shown, the password never."""
    config = _config(tmp_path, smtp_server, password="wrong-secret-123")
    code = main(
        ["-c", str(config), "send-test-email", "--mailbox", "Support", "--to", "me@x.example"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "535" in captured.err
    assert "wrong-secret-123" not in captured.err + captured.out
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mailbox", "Sales", "--to", "me@x.example"], "no mailbox named 'Sales'"),
        (["--mailbox", "Support", "--to", "me@x.example\r\nBcc: y@z"], "expected one email"),
    ],
)
def test_usage_mistakes_exit_2(
    tmp_path: Path,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    """An unknown mailbox or a bad address is a usage error (exit 2), and nothing is sent."""
    config = _config(tmp_path, smtp_server, password=smtp_server.password)
    assert main(["-c", str(config), "send-test-email", *argv]) == 2
    assert message in capsys.readouterr().err
    assert smtp_server.messages == []
