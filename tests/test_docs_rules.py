"""docs/rules.md: its rules load as written, and its commands explain them (#12).

The guide's ``toml`` blocks, in order, make one configuration (a ``[[rules.fields]]``
block belongs to the rule before it); with one Maildir mailbox added it must load and
build. Its ``sh`` block is run with the installed ``halomail`` on an alert email.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from halomail.app import check_config
from halomail.config.loader import parse_config

DOC = (Path(__file__).parent.parent / "docs" / "rules.md").read_text()
TOML = re.findall(r"^```toml\n(.*?)^```", DOC, re.MULTILINE | re.DOTALL)
(SHELL,) = re.findall(r"^```sh\n(.*?)^```", DOC, re.MULTILINE | re.DOTALL)
MAILBOX = '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n\n'
ALERT = (
    b"From: nagios@example.com\r\nTo: support@example.com\r\n"
    b"Subject: PROBLEM: web01 is DOWN\r\nMessage-ID: <a1@example.com>\r\n\r\n"
    b"Host: web01\r\nState: CRITICAL\r\n"
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with the guide's rules in halomail.toml and an empty Maildir."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    (tmp_path / "halomail.toml").write_text(MAILBOX + "\n".join(TOML))
    (tmp_path / "alert.eml").write_bytes(ALERT)
    return tmp_path


def test_every_rule_of_the_guide_loads_and_builds(folder: Path) -> None:
    """All rules, the service and the ticket template of the guide are a valid configuration."""
    data = tomllib.loads((folder / "halomail.toml").read_text())
    config = parse_config(data, base_dir=folder)
    named = re.findall(r'^\[\[rules\]\]\nname = "([^"]+)"', "\n".join(TOML), re.MULTILINE)
    assert len(named) >= 10
    assert sorted(r.name for r in config.rules) == sorted(named)
    assert [s.name for s in config.services] == ["Nightly backup"]
    assert len(config.ticket_templates) == 1
    check_config(config)


def test_the_guides_commands_explain_the_rules(folder: Path) -> None:
    """`halomail simulate alert.eml [--json]` walks every rule and picks the guide's alert rule."""
    halomail = shutil.which("halomail", path=str(Path(sys.executable).parent))
    assert halomail is not None
    plain, as_json = [line.split("#")[0].strip() for line in SHELL.splitlines() if line.strip()]
    outputs = []
    for command in (plain, as_json):
        argv = shlex.split(command)
        assert argv[0] == "halomail"
        result = subprocess.run(
            [halomail, *argv[1:]], cwd=folder, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert "Decision: Monitoring (alert)" in outputs[0]
    assert all(rule.name in outputs[0] for rule in _rules(folder))
    explained = json.loads(outputs[1].splitlines()[0])
    assert (explained["rule"], explained["outcome"]) == ("Monitoring", "created")


def _rules(folder: Path) -> list[object]:
    data = tomllib.loads((folder / "halomail.toml").read_text())
    return list(parse_config(data, base_dir=folder).rules)
