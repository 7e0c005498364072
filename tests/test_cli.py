"""The `halomail` command, as an administrator uses it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.cli import main
from tests.conftest import make_email

CONFIG = """\
[storage]
url = "sqlite:///data/halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"
display_name = "Support"

[[mailboxes]]
name = "Support"
connection = "{connection}"
path = "{path}"
processed = "{processed}"
"""


def _setup(
    tmp_path: Path,
    *,
    connection: str = "maildir",
    processed: str = "move:Deleted Items",
    path: str = "inbox",
) -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(connection=connection, path=path, processed=processed))
    if connection == "maildir":
        for sub in ("cur", "new", "tmp"):
            (tmp_path / path / sub).mkdir(parents=True, exist_ok=True)
    return config


def _deliver(tmp_path: Path, name: str, raw: bytes) -> None:
    (tmp_path / "inbox" / "new" / name).write_bytes(raw)


def _run_json(
    config: Path, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, list[dict[str, object]]]:
    """Run once with --json; return the exit code and the per-email objects."""
    code = main(["-c", str(config), "run", "--once", "--json", *options])
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, [o for o in objects if o["event"] == "email"]


def test_run_json_ends_with_each_mailbox_health(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --json` prints the emails, one "mailbox" object per mailbox, "sent", "summary"."""
    config = _setup(tmp_path)
    code = main(["-c", str(config), "run", "--once", "--json"])
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    health = [o for o in objects if o.get("event") == "mailbox"]
    assert objects[-len(health) - 2 : -2] == health
    assert [o["event"] for o in objects[-2:]] == ["sent", "summary"]
    assert [(h["mailbox"], h["last_error"], h["consecutive_failures"]) for h in health] == [
        ("Support", None, 0)
    ]
    assert health[0]["last_success"] is not None
    assert health[0]["next_attempt_at"] is None


def test_quickstart_makes_tickets_and_acknowledgements_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`halomail quickstart DIR` processes its sample Maildir into SQLite, replies as .eml."""
    target = tmp_path / "qs"
    assert main(["quickstart", str(target)]) == 0
    out = capsys.readouterr().out
    assert "Printer on the 3rd floor is jamming" in out
    assert "VPN drops every 10 minutes" in out
    acknowledgements = sorted((target / "outbox").glob("*.eml"))
    # The printer and VPN emails are acknowledged; the reply updates ticket 1; the
    # out-of-office and the newsletter become tickets without a reply.
    assert len(acknowledgements) == 2
    assert main(["-c", str(target / "halomail.toml"), "tickets", "--json"]) == 0
    tickets = json.loads(capsys.readouterr().out)
    assert [t["summary"] for t in reversed(tickets)] == [
        "Printer on the 3rd floor is jamming",
        "VPN drops every 10 minutes \u2013 urgent",
        "Automatic reply: Maintenance window on Saturday",
        "November product update",
    ]
    assert main(["ticket", "1", "--json", "-c", str(target / "halomail.toml")]) == 0
    ticket = json.loads(capsys.readouterr().out)
    assert [a["kind"] for a in ticket["actions"]] == ["email_in", "email_in"]
    assert "PRN-0042" in ticket["actions"][1]["body"]
    assert "wrote:" not in ticket["actions"][1]["body"]


def test_running_twice_over_mail_left_in_the_mailbox_creates_nothing_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An mbox kept as it is: the second `run --once` finds every email a duplicate."""
    mbox = tmp_path / "import.mbox"
    mbox.write_bytes(
        b"".join(
            b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"
            + make_email(subject=f"Mail {i}", message_id=f"<m{i}@c.example>").replace(
                b"\r\n", b"\n"
            )
            + b"\n"
            for i in range(3)
        )
    )
    config = _setup(tmp_path, connection="mbox", processed="keep", path="import.mbox")
    code, first = _run_json(config, capsys)
    assert code == 0
    assert [e["outcome"] for e in first] == ["created"] * 3
    code, second = _run_json(config, capsys)
    assert code == 0
    assert [(e["outcome"], e["reason"]) for e in second] == [("skipped", "duplicate")] * 3
    assert [e["ticket_id"] for e in second] == [e["ticket_id"] for e in first]
    main(["-c", str(config), "tickets", "--json"])
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_a_reply_with_the_tag_updates_and_a_stranger_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `run`, `[ID:n]` from the requester updates ticket n; a stranger's opens a new one."""
    config = _setup(tmp_path)
    _deliver(tmp_path, "1.a", make_email(message_id="<first@customer.example>"))
    _, (created,) = _run_json(config, capsys)
    n = created["ticket_id"]
    _deliver(
        tmp_path, "2.a", make_email(subject=f"Re: [ID:{n}] Printer", message_id="<r@c.example>")
    )
    _, (reply,) = _run_json(config, capsys)
    assert (reply["outcome"], reply["ticket_id"]) == ("updated", n)
    _deliver(
        tmp_path,
        "3.a",
        make_email(
            subject=f"Re: [ID:{n}] Printer",
            message_id="<s@e.example>",
            sender="stranger@evil.example",
        ),
    )
    _, (stranger,) = _run_json(config, capsys)
    assert stranger["outcome"] == "created"
    assert stranger["ticket_id"] != n
    main(["-c", str(config), "ticket", str(n), "--json"])
    assert len(json.loads(capsys.readouterr().out)["actions"]) == 2


def test_a_quarantined_email_makes_run_exit_1_and_is_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No valid sender: `run --fail-on quarantine` exits 1, `quarantine` lists it with why."""
    config = _setup(tmp_path)
    _deliver(tmp_path, "1.a", make_email(sender="undisclosed-recipients:;"))
    code, (entry,) = _run_json(config, capsys, "--fail-on", "quarantine")
    assert code == 1
    assert (entry["outcome"], entry["reason"]) == ("quarantined", "unparseable-sender")
    assert main(["-c", str(config), "quarantine", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["reason"] == "unparseable-sender"
    assert list((tmp_path / "inbox" / ".Quarantine" / "cur").iterdir())


def test_simulate_explains_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`simulate` prints the outcome an email would get and creates no ticket."""
    config = _setup(tmp_path)
    sample = tmp_path / "sample.eml"
    sample.write_bytes(make_email(headers={"Auto-Submitted": "auto-replied"}))
    assert main(["-c", str(config), "simulate", str(sample), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert (result["outcome"], result["acknowledge"]) == ("created", False)
    main(["-c", str(config), "tickets", "--json"])
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("toml", "key_path"),
    [
        (
            '[[mailboxes]]\nname = "A"\nconnection = "maildir"\npath = "x"\nport = "abc"\n',
            "mailboxes[0].port",
        ),
        ('[outgoing]\nsecurity = "ssl3"\n', "outgoing.security"),
        ('[[mailboxes]]\nname = "A"\nconnection = "carrier-pigeon"\n', "mailboxes[0].connection"),
        ("[storage\nurl = 1\n", "line 1"),
    ],
)
def test_a_bad_config_exits_2_naming_the_key_path_without_a_traceback(
    toml: str, key_path: str, tmp_path: Path
) -> None:
    """`check-config` on a bad file exits 2, names the key path, and shows no traceback."""
    config = tmp_path / "halomail.toml"
    config.write_text(toml)
    result = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert key_path in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Running without a config file says which file is missing and exits 2."""
    assert main(["-c", str(tmp_path / "nope.toml"), "run", "--once"]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_check_config_accepts_the_quickstart_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config` on a valid file exits 0 and summarises it."""
    config = _setup(tmp_path)
    assert main(["check-config", "--config", str(config)]) == 0
    assert "OK (1 mailboxes" in capsys.readouterr().out


def test_the_installed_command_runs(tmp_path: Path) -> None:
    """The `halomail` console script is installed and answers --version."""
    exe = shutil.which("halomail", path=str(Path(sys.executable).parent))
    assert exe is not None
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("halomail ")


def test_a_run_on_a_terminal_shows_progress(tmp_path: Path) -> None:
    """On a terminal, `run --once` counts emails on stderr as it goes; piped output stays clean."""
    import os
    import pty

    config = _setup(tmp_path)
    for i in range(40):
        _deliver(tmp_path, f"{i}.a", make_email(subject=f"n{i}", message_id=f"<n{i}@c.example>"))
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "halomail.cli", "-c", str(config), "run", "--once"],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    assert b"Support: " in seen
    assert b" emails" in seen
    assert b"Support: " not in result.stdout
    assert b"40 emails: 40 created" in result.stdout


# -- issue 13, item 11: a configuration that reads nothing, and bad argument values -------


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("", "no [[mailboxes]] table"),
        ("\n# nothing but a comment\n", "no [[mailboxes]] table"),
        ('[storage]\nurl = "sqlite:///halomail.db"\n', "no [[mailboxes]] table"),
        (
            '[[mailboxes]]\nname = "Old"\nconnection = "maildir"\npath = "inbox"\n'
            "enabled = false\n",
            "every mailbox is disabled ('Old')",
        ),
    ],
    ids=["empty", "comment-only", "storage-only", "none-enabled"],
)
def test_a_configuration_that_reads_nothing_is_an_error(
    toml: str, message: str, tmp_path: Path
) -> None:
    """check-config, run and simulate exit 2 at key path `mailboxes` with a hint, no traceback."""
    config = tmp_path / "halomail.toml"
    config.write_text(toml)
    eml = tmp_path / "a.eml"
    eml.write_bytes(make_email())
    for command in (["check-config"], ["run", "--once"], ["simulate", str(eml)]):
        result = _command("-c", str(config), *command, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "configuration error: mailboxes: " in result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert "OK" not in result.stdout


def test_listing_needs_no_enabled_mailbox(tmp_path: Path) -> None:
    """tickets and quarantine read only [storage]: they still work with every mailbox off."""
    config = tmp_path / "halomail.toml"
    config.write_text(
        '[[mailboxes]]\nname = "Old"\nconnection = "maildir"\npath = "inbox"\nenabled = false\n'
    )
    listed = _command("-c", str(config), "tickets", cwd=tmp_path)
    quarantined = _command("-c", str(config), "quarantine", cwd=tmp_path)
    assert (listed.returncode, listed.stdout) == (0, "no tickets\n")
    assert (quarantined.returncode, quarantined.stdout) == (0, "the quarantine is empty\n")


def test_a_truncated_toml_file_names_line_and_column(tmp_path: Path) -> None:
    """A file cut off mid-table gives the TOML error with its line and column, exit 2."""
    whole = CONFIG.format(connection="maildir", path="inbox", processed="move:Done")
    config = tmp_path / "halomail.toml"
    config.write_text(whole[: whole.index('from_address = "') + len('from_address = "sup')])
    result = _command("-c", str(config), "check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid TOML" in result.stderr
    assert "Unterminated string (at end of document: line 7, column 20)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tickets", "--limit", "-1"], "argument --limit: must be 1 or more, got -1"),
        (["tickets", "--limit", "0"], "argument --limit: must be 1 or more, got 0"),
        (["tickets", "--limit", "ten"], "argument --limit: expected a whole number, got 'ten'"),
        (["quarantine", "--limit", "-5"], "argument --limit: must be 1 or more, got -5"),
        (["ticket", "0"], "argument id: must be 1 or more, got 0"),
        (["ticket", "-3"], "argument id: must be 1 or more, got -3"),
        (["ticket", "1.5"], "argument id: expected a whole number, got '1.5'"),
        (["run", "--interval", "0"], "argument --interval: must be more than 0 seconds"),
        (["run", "--interval", "-60"], "argument --interval: must be more than 0 seconds"),
        (["run", "--interval", "nan"], "argument --interval: must be more than 0 seconds"),
        (["run", "--interval", "soon"], "argument --interval: expected a number of seconds"),
        (["simulate", ""], "argument FILE.eml: expected a file name, got ''"),
        (["quickstart", ""], "argument dir: expected a file name, got ''"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_argument_values_are_usage_errors(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Each bad value is refused by the parser: exit 2, argparse's usage line, no traceback."""
    config = _setup(tmp_path)
    result = _command("-c", str(config), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: halomail ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was opened
