"""`halomail check-config` refuses every configuration `halomail run` would refuse.

Each case is a configuration that used to pass `check-config` (or to fail only later,
while running); both commands now exit 2 and name the key path to fix, without a
traceback and without connecting anywhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# A configuration that loads: one Maildir mailbox, mail written as .eml files.
VALID = """\
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
"""

_IMAP = """\
[[mailboxes]]
name = "Support"
connection = "imap"
host = "imap.example.com"
username = "support@example.com"
password = "secret"
"""
_OFFICE365 = """\
[[mailboxes]]
name = "Support"
connection = "office365"
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "secret"
"""
_GOOGLE = """\
[[mailboxes]]
name = "Support"
connection = "google"
subject = "support@example.com"
"""
_SMTP = """\
[outgoing]
transport = "smtp"
host = "smtp.example.com"
from_address = "support@example.com"
"""

CASES = [
    pytest.param(
        '[[mailboxes]]\nname = "S"\nconnection = "maildir"\npath = "no-such-maildir"\n',
        "mailboxes[0].path",
        "no such folder",
        id="maildir-path-missing",
    ),
    pytest.param(
        '[[mailboxes]]\nname = "S"\nconnection = "mbox"\npath = "no-such.mbox"\n',
        "mailboxes[0].path",
        "no such file",
        id="mbox-path-missing",
    ),
    pytest.param(
        '[[mailboxes]]\nname = "S"\nconnection = "eml-dir"\npath = "no-such-folder"\n',
        "mailboxes[0].path",
        "no such folder",
        id="eml-dir-path-missing",
    ),
    pytest.param(
        _IMAP + 'folder = "INBOX"\nprocessed = "move:INBOX"\n',
        "mailboxes[0].processed",
        "the folder being read",
        id="imap-processed-into-its-own-folder",
    ),
    pytest.param(
        _IMAP + 'folder = "INBOX"\nprocessed = "move:inbox"\n',
        "mailboxes[0].processed",
        "the folder being read",
        id="imap-processed-into-inbox-in-another-case",
    ),
    pytest.param(
        _OFFICE365,
        "mailboxes[0].user_id",
        "required for office365",
        id="office365-without-user-id",
    ),
    pytest.param(
        _GOOGLE + 'credentials_file = "no-such-service-account.json"\n',
        "mailboxes[0].credentials_file",
        "no such file",
        id="google-credentials-file-missing",
    ),
    pytest.param(
        _IMAP + 'tls_ca_file = "no-such-ca.pem"\n',
        "mailboxes[0].tls_ca_file",
        "no such file",
        id="imap-tls-ca-file-missing",
    ),
    pytest.param(
        _OFFICE365.replace('client_secret = "secret"', 'certificate_file = "no-such.pem"')
        + 'user_id = "support@example.com"\n',
        "mailboxes[0].certificate_file",
        "no such file",
        id="client-certificate-file-missing",
    ),
    pytest.param(
        _SMTP + 'tls_ca_file = "no-such-ca.pem"\n',
        "outgoing.tls_ca_file",
        "no such file",
        id="smtp-tls-ca-file-missing",
    ),
    pytest.param(
        '[outgoing]\ntransport = "gmail"\ncredentials_file = "no-such.json"\n',
        "outgoing.credentials_file",
        "no such file",
        id="gmail-transport-credentials-file-missing",
    ),
    pytest.param(
        _IMAP.replace('password = "secret"\n', ""),
        "mailboxes[0].password",
        "required",
        id="imap-login-without-a-password",
    ),
    pytest.param(
        '[outgoing]\ntransport = "graph"\nfrom_address = "support@example.com"\n' + _IMAP,
        "outgoing.tenant_id",
        "needs tenant_id",
        id="graph-transport-without-credentials",
    ),
    pytest.param(
        '[storage]\nurl = "mysql://db.example.com/helpdesk"\n',
        "storage.url",
        "the supported schemes are sqlite",
        id="unknown-storage-scheme",
    ),
]


def _halomail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(("toml", "key_path", "message"), CASES)
def test_check_config_and_run_refuse_it_with_the_key_path(
    tmp_path: Path, toml: str, key_path: str, message: str
) -> None:
    """check-config exits 2 naming the key path, and run --once refuses the same file."""
    config = tmp_path / "halomail.toml"
    config.write_text(toml, encoding="utf-8")

    checked = _halomail("-c", str(config), "check-config", cwd=tmp_path)
    ran = _halomail("-c", str(config), "run", "--once", cwd=tmp_path)

    for result in (checked, ran):
        assert result.returncode == 2, result.stderr
        assert f"configuration error: {key_path}: " in result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    # check-config also names the file's line of each problem (#17).
    assert re.search(
        rf"^{re.escape(str(config))}:\d+: {re.escape(key_path)}: ", checked.stderr, re.M
    )
    assert "OK" not in checked.stdout
    assert not (tmp_path / "halomail.db").exists()  # run stopped before opening storage


def test_the_valid_configuration_passes_both(tmp_path: Path) -> None:
    """The configuration the cases start from is accepted by check-config and run."""
    config = tmp_path / "halomail.toml"
    config.write_text(VALID, encoding="utf-8")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)

    checked = _halomail("-c", str(config), "check-config", cwd=tmp_path)
    ran = _halomail("-c", str(config), "run", "--once", cwd=tmp_path)

    assert checked.returncode == 0, checked.stderr
    assert "OK (1 mailboxes, 1 enabled" in checked.stdout
    assert ran.returncode == 0, ran.stderr
    assert "no new email" in ran.stdout


def test_a_disabled_mailbox_is_not_built(tmp_path: Path) -> None:
    """A disabled mailbox whose Maildir is gone does not stop check-config: run skips it."""
    config = tmp_path / "halomail.toml"
    config.write_text(
        VALID
        + '[[mailboxes]]\nname = "Old"\nconnection = "maildir"\npath = "gone"\nenabled = false\n',
        encoding="utf-8",
    )
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    checked = _halomail("-c", str(config), "check-config", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "2 mailboxes, 1 enabled" in checked.stdout
