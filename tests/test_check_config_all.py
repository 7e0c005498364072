"""`check-config` reports every problem at once, each with its file's line (#17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halomail.cli import main
from halomail.config._collect import ConfigErrors
from halomail.config.loader import load_config
from halomail.errors import ConfigError

BAD = """\
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"

[[mailboxes]]
name = "Sales"
connection = "imap"
host = "imap.example"
port = 99999

[[mailboxes]]
name = "support"
connection = "maildir"
path = "inbox"

[[mailboxes]]
name = "Billing"
connection = "maildir"
path = "inbox"
processed = "sideways"

[[rules]]
name = "Odd"
type = "nonsense"

[limits]
max_parts = "many"
"""

EXPECTED = [
    (13, "mailboxes[1].port"),
    (16, "mailboxes[2].name"),
    (24, "mailboxes[3].processed"),
    (28, "rules[0].type"),
    (31, "limits.max_parts"),
]


def _config(tmp_path: Path, text: str = BAD) -> Path:
    (tmp_path / "inbox").mkdir()
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir()
    path = tmp_path / "halomail.toml"
    path.write_text(text)
    return path


def test_every_problem_is_printed_with_its_line_and_the_exit_status_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five mistakes in three tables and three mailboxes: five `file:LINE: key: message` lines."""
    path = _config(tmp_path)
    assert main(["-c", str(path), "check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    located = [line for line in err if line.startswith(f"{path}:")]
    assert [tuple(line[len(str(path)) + 1 :].split(": ")[:2]) for line in located] == [
        (str(line), key) for line, key in EXPECTED
    ]
    assert "duplicate mailbox name 'support' (also mailboxes[0])" in located[1]
    assert err[-1] == f"halomail: 5 configuration errors in {path}"


def test_json_gives_one_error_object_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config --json`: one {"event": "error"} object per problem, with line and key path."""
    path = _config(tmp_path)
    assert main(["-c", str(path), "check-config", "--json"]) == 2
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["event"], o["line"], o["key_path"]) for o in objects] == [
        ("error", line, key) for line, key in EXPECTED
    ]
    assert all(o["file"] == str(path) and o["message"] for o in objects)


def test_the_library_raises_one_error_holding_every_problem(tmp_path: Path) -> None:
    """load_config raises ConfigErrors (a ConfigError) naming the first and holding all five."""
    path = _config(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert isinstance(raised.value, ConfigErrors)
    assert raised.value.key_path == "mailboxes[1].port"
    assert "(and 4 more; `halomail check-config` lists them all)" in str(raised.value)
    assert [(p.line, p.key_path) for p in raised.value.problems] == EXPECTED


def test_one_problem_reads_as_before_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A single mistake: the same message as always, now with its line; `run` exits 2 too."""
    path = _config(tmp_path, BAD.split('[[mailboxes]]\nname = "support"')[0])
    assert main(["-c", str(path), "check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:13: mailboxes[1].port: ")
    assert err[1].startswith("halomail: configuration error: mailboxes[1].port: ")
    assert len(err) == 2
    assert main(["-c", str(path), "run", "--once"]) == 2
    assert "configuration error: mailboxes[1].port: " in capsys.readouterr().err
