"""docs/cli.md: every command of every block runs as written, in the quick start's folder
with one quarantined email added, and says what the guide says it does (#17)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_email

DOC = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
#: The operator's sections; the `run` section is tests/test_docs_cli_run.py's.
TOOLS = re.sub(r"^## run\n.*?(?=^## )", "", DOC, flags=re.MULTILINE | re.DOTALL)
BLOCKS = re.findall(r"^```sh\n(.*?)^```", TOOLS, re.MULTILINE | re.DOTALL)
HALOMAIL = shutil.which("halomail", path=str(Path(sys.executable).parent))
NO_SENDER = make_email(sender="undisclosed-recipients:;", message_id="<nosender@x.example>")


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _halomail(command: str, folder: Path) -> subprocess.CompletedProcess[str]:
    assert HALOMAIL is not None, "the halomail console script is not installed"
    words = shlex.split(command)
    assert words[0] == "halomail", command
    return subprocess.run(
        [HALOMAIL, *words[1:]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`halomail quickstart`'s folder, where one email without a sender was quarantined."""
    home = tmp_path_factory.mktemp("cli-docs")
    assert _halomail("halomail quickstart", home).returncode == 0
    folder = home / "halomail-quickstart"
    (folder / "inbox" / "new" / "9.nosender").write_bytes(NO_SENDER)
    ran = _halomail("halomail run --once --fail-on quarantine", folder)
    assert ran.returncode == 1, ran.stderr  # the quarantined email
    assert "unparseable-sender" in ran.stdout
    return folder


def test_the_guide_has_its_four_blocks() -> None:
    """Tickets, rules, outbox and quarantine: four shell blocks, every line a command."""
    assert len(BLOCKS) == 4
    assert all(c.startswith("halomail ") for block in BLOCKS for c in _commands(block))


@pytest.mark.parametrize("number", range(4))
def test_every_command_of_the_block_succeeds(folder: Path, number: int) -> None:
    """Each command of the block exits 0 and prints something, in the guide's order."""
    for command in _commands(BLOCKS[number]):
        result = _halomail(command, folder)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout or "-o " in command, command
        assert "Traceback" not in result.stderr, command
        _says_what_the_guide_says(command, result.stdout, folder)


def _says_what_the_guide_says(command: str, out: str, folder: Path) -> None:
    if command.startswith("halomail ticket 1"):
        assert "Mail about this ticket:" in out or '"mail": [' in out
    elif command.startswith("halomail quarantine export"):
        assert (folder / "quarantined-1.eml").read_bytes() == NO_SENDER
    elif command.startswith("halomail quarantine release"):
        assert out.startswith("quarantined email 1: released ")
    elif command.startswith("halomail quarantine delete"):
        assert out == "deleted quarantined email 1\n"
    elif command == "halomail rules":
        assert "An email no rule takes:" in out


def test_the_commands_say_what_the_guide_says(folder: Path) -> None:
    """`ticket 1` shows its acknowledgement sent; `tickets --json --status new` only new ones."""
    shown = _halomail("halomail ticket 1", folder).stdout
    assert shown.startswith("Ticket 1: ")
    assert " sent 20" in shown.split("Mail about this ticket:")[1]
    listed = json.loads(_halomail("halomail tickets --json --status new", folder).stdout)
    assert [t["status"] for t in listed] == ["new"] * len(listed)
    assert listed
