"""docs/cli.md's `run` section and docs/logging.md's JSON line are true as written (#17)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_email

ROOT = Path(__file__).parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
LOGGING_MD = ROOT / "docs" / "logging.md"

CONFIG = """\
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


def _run_section() -> str:
    """docs/cli.md from `## run` to the next `## ` heading."""
    (section,) = re.findall(r"^## run\n(.*?)(?=^## |\Z)", CLI_MD.read_text(), re.S | re.M)
    return section


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def _folder(tmp_path: Path, emails: int = 2) -> Path:
    """A halomail.toml and a Maildir inbox with ``emails`` new emails."""
    (tmp_path / "halomail.toml").write_text(CONFIG)
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    for index in range(emails):
        raw = make_email(subject=f"Question {index}", message_id=f"<q{index}@customer.example>")
        (tmp_path / "inbox" / "new" / f"{index}.eml").write_bytes(raw)
    return tmp_path


def _halomail(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_run_section_has_one_sh_and_one_json_block() -> None:
    """Only blocks this file runs or checks: the commands, the --json lines."""
    languages = re.findall(r"^```(\w+)$", _run_section(), re.M)
    assert languages == ["sh", "json"]


def test_every_command_of_the_run_section_runs_and_exits_0(tmp_path: Path) -> None:
    """Each `halomail ...` line, run in a folder with a halomail.toml, processes and exits 0."""
    (block,) = _blocks(_run_section(), "sh")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert len(commands) == 4
    folder = _folder(tmp_path)
    for command in commands:
        assert command[0] == "halomail"
        result = _halomail(folder, *command[1:])
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert not list((folder / "inbox" / "new").iterdir())


def test_the_json_lines_have_the_events_and_keys_of_the_real_output(tmp_path: Path) -> None:
    """The documented lines are the real events, in order, each with exactly its keys."""
    (block,) = _blocks(_run_section(), "json")
    documented = [json.loads(line) for line in block.splitlines()]
    result = _halomail(_folder(tmp_path, emails=1), "run", "--once", "--json")
    assert result.returncode == 0, result.stderr
    real = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["event"], sorted(o)) for o in documented] == [(o["event"], sorted(o)) for o in real]


def test_the_logging_md_json_line_has_the_keys_of_a_real_email_record(tmp_path: Path) -> None:
    """docs/logging.md's JSON line has exactly the keys `--log-format json` gives an email."""
    (section,) = re.findall(r"^## JSON logs\n(.*?)(?=^## )", LOGGING_MD.read_text(), re.S | re.M)
    (block,) = _blocks(section, "json")
    documented = json.loads(block)
    result = _halomail(_folder(tmp_path, emails=1), "-v", "--log-format", "json", "run", "--once")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (real,) = [r for r in records if r.get("source_id")]
    assert sorted(documented) == sorted(real)
    assert (documented["logger"], documented["level"]) == (real["logger"], real["level"])
