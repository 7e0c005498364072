"""``manage.py halomail_run`` as a real subprocess, on the test project of
``tests/django_project`` (its database an SQLite file of the test's own): what it prints,
where the tickets go, exactly once across runs, and its errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_email

ROOT = Path(__file__).parent.parent

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "delete"
ticket_type = "Incident"
"""


def manage(folder: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGS`` with the test project's settings, in ``folder``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.django_project.settings",
        "PYTHONPATH": str(ROOT),
        "HALOMAIL_TEST_DB": str(folder / "db.sqlite3"),
        "HALOMAIL_TEST_CONFIG": str(folder / "halomail.toml") if config is None else config,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def deliver(folder: Path, count: int, first: int = 0) -> None:
    """``count`` new emails, each from its own sender, in the Maildir ``inbox/``."""
    for sub in ("new", "cur", "tmp"):
        (folder / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    for number in range(first, first + count):
        raw = make_email(
            subject=f"Request {number}",
            sender=f"user{number}@customer.example",
            message_id=f"<request-{number}@customer.example>",
        )
        (folder / "inbox" / "new" / f"{number:03d}.eml").write_bytes(raw)


def tickets(folder: Path) -> list[tuple[str, str]]:
    """The tickets in the project's database: (summary, sender), in id order."""
    database = folder / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT summary, user_email FROM halomail_ticket ORDER BY id"
        ).fetchall()
    return [(summary, sender) for summary, sender in rows]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with halomail.toml (its [storage] an SQLite file) and a migrated database."""
    (tmp_path / "halomail.toml").write_text(CONFIG)
    migrated = manage(tmp_path, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    return tmp_path


def test_run_once_puts_the_tickets_in_djangos_database_not_the_storage_of_the_file(
    project: Path,
) -> None:
    """Two emails: two tickets in Django's database; [storage] ignored with an INFO line."""
    deliver(project, 2)
    done = manage(project, "halomail_run", "--once", "-v", "2")
    assert done.returncode == 0, done.stderr
    assert tickets(project) == [
        ("Request 0", "user0@customer.example"),
        ("Request 1", "user1@customer.example"),
    ]
    assert not (project / "halomail.db").exists()
    assert "[storage] is ignored" in done.stderr
    assert done.stdout.startswith("2 emails: 2 created")


def test_json_output_and_exactly_once_across_runs(project: Path) -> None:
    """--json prints halomail run's events; a second run reads only the new email."""
    deliver(project, 2)
    first = manage(project, "halomail_run", "--once", "--json")
    assert first.returncode == 0, first.stderr
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert [e["outcome"] for e in events if e["event"] == "email"] == ["created", "created"]
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["emails"] == 2

    deliver(project, 1, first=2)
    second = manage(project, "halomail_run", "--once", "--json")
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert (summary["emails"], summary["outcomes"]) == (1, {"created": 1})
    assert [subject for subject, _ in tickets(project)] == ["Request 0", "Request 1", "Request 2"]
    # Without -v 2, halomail's INFO lines stay quiet.
    assert "[storage] is ignored" not in second.stderr


def test_without_halomail_config_both_commands_say_what_to_set(project: Path) -> None:
    """settings.HALOMAIL without "config": each command names the setting, exit 1."""
    for command in (["halomail_run", "--once"], ["halomail_worker"]):
        done = manage(project, *command, config="")
        assert done.returncode == 1, done.stderr
        assert 'settings.HALOMAIL has no "config"' in done.stderr


def test_an_invalid_configuration_is_a_configuration_error(project: Path) -> None:
    """A bad key path in halomail.toml: exit 2, the message names it."""
    (project / "halomail.toml").write_text(CONFIG.replace('"maildir"', '"carrier-pigeon"'))
    done = manage(project, "halomail_run", "--once")
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert "mailboxes[0].connection" in done.stderr
