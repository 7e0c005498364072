"""The README's quick start and Python example work as written (#12).

Every fenced block of README.md is run here, the way a new user would run it, from a
fresh folder: the quick start's commands through the installed ``halomail`` command, and
the Python example with its Maildir path pointed at a folder of real sample emails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_email

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
HALOMAIL = shutil.which("halomail", path=str(Path(sys.executable).parent))


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The commands of a shell block, comments dropped."""
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def halomail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed command as a user would."""
    assert HALOMAIL is not None, "the halomail console script is not installed"
    return subprocess.run(
        [HALOMAIL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the quick start's first command has run (the install is this venv's)."""
    first, _test = commands(blocks("sh")[0])
    assert first == "pip install . && halomail quickstart"
    home = tmp_path_factory.mktemp("user")
    result = halomail("quickstart", cwd=home)
    assert result.returncode == 0, result.stderr
    assert "Created" in result.stdout
    return home


def test_the_quick_start_test_command_is_what_ci_runs() -> None:
    """The second quick-start command is the one `.ci/run` runs, exactly."""
    _install, test = commands(blocks("sh")[0])
    assert test == "./scripts/test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./scripts/test$", ci, re.MULTILINE)


def test_the_quick_start_makes_tickets_and_acknowledgements(quickstart: Path) -> None:
    """`halomail quickstart` leaves SQLite tickets and .eml acknowledgements behind."""
    folder = quickstart / "halomail-quickstart"
    assert (folder / "halomail.db").is_file()
    assert sorted((folder / "outbox").glob("*.eml"))


def test_then_try_runs_each_command_as_written(quickstart: Path) -> None:
    """Each "then try" command succeeds in the quick start's folder and says what it promises."""
    cd, ticket, run, write, simulate = commands(blocks("sh")[1])
    assert cd == "cd halomail-quickstart"
    folder = quickstart / "halomail-quickstart"
    shown = halomail(*shlex.split(ticket)[1:], cwd=folder)
    assert shown.returncode == 0, shown.stderr
    # The ticket, with the follow-up that threaded onto it: two emails in.
    assert shown.stdout.startswith("Ticket 1: ")
    assert shown.stdout.count("email_in from alice@customer.example") == 2
    again = halomail(*shlex.split(run)[1:], cwd=folder)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stdout.splitlines() if '"event": "email"' in line] == []
    # The email to simulate is written by the block's own shell line, as a user would.
    subprocess.run(["sh", "-c", write], cwd=folder, check=True, timeout=60)
    dry = halomail(*shlex.split(simulate)[1:], cwd=folder)
    assert dry.returncode == 0, dry.stderr
    assert "created" in dry.stdout


def test_the_python_example_makes_a_ticket_of_each_email(tmp_path: Path) -> None:
    """The "Use it from Python" example, on a Maildir of two emails, prints two created tickets
    and that their acknowledgements are queued, not sent (#17)."""
    (example,) = blocks("python")
    assert '"/var/mail/support"' in example
    maildir = tmp_path / "support"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n in (1, 2):
        raw = make_email(subject=f"Help {n}", message_id=f"<readme-{n}@customer.example>")
        (maildir / "new" / f"{n}.readme").write_bytes(raw)
    script = tmp_path / "example.py"
    script.write_text(example.replace('"/var/mail/support"', repr(str(maildir))))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 0, result.stderr
    # Acknowledged means queued: with no transport nothing is sent, and the output says so.
    assert result.stdout.splitlines() == [
        "created 1 None True",
        "created 2 None True",
        "0 sent, 2 queued with no transport to send them",
    ]
