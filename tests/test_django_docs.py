"""The "done when" of #19's Django app: a new Django project reaches tickets from a Maildir
with ``pip install``, ``INSTALLED_APPS``, ``migrate`` and ``manage.py halomail_run``,
exactly as docs/django.md says, every block of the page run as written.

The page's blocks run in order in a new folder, each as a reader would use it: ``sh``
blocks by ``sh -e`` with this environment's ``bin`` first on ``PATH`` (``pip``,
``django-admin``, ``python``); the ``python`` block that begins ``# at the end of
helpdesk/settings.py`` is appended to that file, one that names a file is written there;
the whole ``halomail.toml`` is written as that file (and ``halomail check-config``
accepts it); the ``text`` block is the output of the ``sh`` block before it. The blocks
of "Many mailboxes" run in tests/test_django_worker.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from tests.test_docs_blocks import Block, blocks_of

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "django.md"
BIN = Path(sys.executable).parent
WORKER_SECTION = "## Many mailboxes"

_SETTINGS_COMMENT = re.compile(r"\A# at the end of ([\w./-]+\.py)\n")
_FILE_COMMENT = re.compile(r"\A#\s*([\w./-]+\.py)\s*\n")


def page_blocks(*, worker: bool) -> list[Block]:
    """The page's blocks before "Many mailboxes" (or, with ``worker``, from it on)."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.count("\n", 0, text.index(WORKER_SECTION)) + 1
    return [block for block in blocks_of(PAGE) if (block.line > start) == worker]


def environment() -> dict[str, str]:
    """This environment's tools first on PATH; pip never reaches an index (all installed)."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONPATH": "",
    }


def run_sh(script: str, folder: Path) -> str:
    """Run a block's script with ``sh -e`` in ``folder``; its stdout (it must exit 0)."""
    done = subprocess.run(
        ["sh", "-e"],
        input=script,
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def new_mail(folder: Path, *names: str) -> None:
    """Deliver the quick start's sample emails of these names to the Maildir ``inbox/``."""
    for sub in ("new", "cur", "tmp"):
        (folder / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    samples = resources.files("halomail._quickstart")
    for name in names:
        (folder / "inbox" / "new" / name).write_bytes(samples.joinpath(name).read_bytes())


def run_page(folder: Path) -> list[tuple[Block, str]]:
    """Run the page's blocks (up to "Many mailboxes") in ``folder``; each block's output."""
    outputs: list[tuple[Block, str]] = []
    for block in page_blocks(worker=False):
        assert block.not_run is None, block.where
        output = ""
        if block.language == "sh":
            output = run_sh(block.text, folder)
        elif block.language == "python":
            appended = _SETTINGS_COMMENT.match(block.text)
            named = _FILE_COMMENT.match(block.text)
            if appended:
                with (folder / appended.group(1)).open("a", encoding="utf-8") as file:
                    file.write("\n" + block.text)
            else:
                assert named, f"{block.where}: a python block names its file"
                (folder / named.group(1)).write_text(block.text, encoding="utf-8")
        elif block.language == "toml":
            # New mail arrives in the Maildir the configuration names.
            new_mail(folder, "01-printer.eml", "02-vpn-html.eml")
            (folder / "halomail.toml").write_text(block.text, encoding="utf-8")
            run_sh("halomail -c halomail.toml check-config", folder)
        else:
            assert block.language == "text", block.where
            output = outputs[-1][1]
            assert output == block.text, f"{block.where}: the page shows other output"
        outputs.append((block, output))
    return outputs


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new folder where the page's blocks ran, from ``pip install`` to the agent's reply."""
    folder = tmp_path_factory.mktemp("django-project")
    run_page(folder)
    return folder


def shell(folder: Path, code: str) -> str:
    """``manage.py shell -c code`` in the project; its stdout."""
    return run_sh(f'python manage.py shell -v 0 -c "{code}"', folder)


def test_the_page_makes_a_project_with_halomails_app(project: Path) -> None:
    """startproject made the project, and the settings name the app and the configuration."""
    settings = (project / "helpdesk" / "settings.py").read_text(encoding="utf-8")
    assert 'INSTALLED_APPS += ["halomail.contrib.django"]' in settings
    assert (project / "manage.py").is_file()
    assert "halomail" in shell(
        project, "from django.apps import apps; print(apps.get_app_config('halomail').label)"
    )


def test_the_tickets_of_the_maildir_are_in_djangos_database(project: Path) -> None:
    """The two emails became two tickets in db.sqlite3, with the senders and the mailbox."""
    code = (
        "from halomail.contrib.django.models import Ticket; "
        "rows = Ticket.objects.order_by('id'); "
        "print(*(f'{t.user_email} {t.mailbox} {t.status}' for t in rows), sep=chr(10))"
    )
    assert shell(project, code).splitlines() == [
        "alice@customer.example Support new",
        "bob@customer.example Support new",
    ]
    # Read from the database file itself too: the tickets are not in halomail's own SQLite.
    assert (project / "db.sqlite3").is_file()
    assert not (project / "halomail.db").exists()


def test_the_mail_left_the_inbox_and_acknowledgements_and_the_reply_were_sent(
    project: Path,
) -> None:
    """The inbox is empty, each sender got an acknowledgement, and the agent's reply went out."""
    assert list((project / "inbox" / "new").iterdir()) == []
    sent = [
        path.read_text(errors="replace")
        for path in (project / "outbox").rglob("*")
        if path.is_file()
    ]
    assert len(sent) == 3
    assert sum("We replaced the toner." in mail for mail in sent) == 1


def test_the_reply_and_its_email_are_rows_of_one_ticket(project: Path) -> None:
    """The agent's reply is an action of ticket 1 and its email is in the outbox, sent."""
    code = (
        "from halomail.contrib.django.models import Action, OutboxMail; "
        "print(Action.objects.filter(ticket_id=1, kind='email_out').count(), "
        "OutboxMail.objects.filter(ticket_id=1, kind='ticket_update', status='sent').count())"
    )
    assert shell(project, code).split() == ["1", "1"]
