"""docs/postgresql.md: every block works as written, against the session's PostgreSQL (#14).

The guide's host (``db.example.com:5432``) becomes the private server's loopback address;
nothing else is changed. The test follows the guide in order: the extra it installs
exists, its ``psql`` lines create the user and database, its configuration opens them
(with the password from the environment) and ``check-config`` prints what the guide
shows, and its Python block runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from halomail.app import open_repository
from halomail.config.loader import load_config
from halomail.tickets.models import NewTicket
from tests.servers.postgres import SUPERUSER, PostgresServer

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "postgresql.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
SH = [body for language, body in BLOCKS if language == "sh"]
TOML = [body for language, body in BLOCKS if language == "toml"]
PYTHON = [body for language, body in BLOCKS if language == "python"]
DOCUMENTED_HOST = "db.example.com:5432"
PASSWORD = "change-me"  # the guide's own example password


def test_the_guide_has_the_blocks_this_test_reads() -> None:
    """Two shell blocks, one configuration, one Python block: each is tested below."""
    assert (len(SH), len(TOML), len(PYTHON)) == (2, 1, 1)


def test_the_extra_the_guide_installs_brings_psycopg() -> None:
    """`pip install 'halomail[postgres]'` names an extra of ours that installs psycopg 3."""
    assert SH[0].strip() == "pip install 'halomail[postgres]'"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["postgres"] == ["psycopg[binary]>=3.1"]
    assert "halomail[postgres]" in extras["test"]


@pytest.fixture(scope="module")
def guide_database(postgres: PostgresServer) -> str:
    """The guide's psql lines, run as the superuser: its user and database exist after."""
    if not postgres.running():
        postgres.start()
    env = {
        **os.environ,
        "PATH": f"{postgres.bindir}{os.pathsep}{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": SUPERUSER,
        "PGDATABASE": "postgres",
    }
    for line in SH[1].strip().splitlines():
        done = subprocess.run(
            ["bash", "-c", line], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    return f"127.0.0.1:{postgres.port}"


def test_the_configuration_opens_the_guides_database_with_the_password_from_the_environment(
    guide_database: str, tmp_path: Path
) -> None:
    """The [storage] block, pointed at the server, opens a repository that keeps a ticket;
    check-config prints the storage as the guide shows it, without the password."""
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(TOML[0].replace(DOCUMENTED_HOST, guide_database))
    env = {**os.environ, "HALOMAIL_DB_PASSWORD": PASSWORD}
    config = load_config(config_file, env=env, require_mailbox=False)
    repository = open_repository(config)
    try:
        ticket = repository.create_ticket(NewTicket("From the guide", "d", "Incident", "a@b.c"))
        assert repository.get_ticket(ticket.id) == ticket
    finally:
        repository.close()  # type: ignore[attr-defined]
    (tmp_path / "inbox" / "new").mkdir(parents=True)
    config_file.write_text(
        config_file.read_text()
        + '\n[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n'
    )
    checked = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", str(config_file), "check-config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    shown = re.search(r"storage (postgresql://[^\s)]+)\)", DOC.read_text())
    assert shown is not None
    assert f"storage {shown[1].replace(DOCUMENTED_HOST, guide_database)})" in checked.stdout
    assert PASSWORD not in checked.stdout + checked.stderr


def test_the_python_block_runs(guide_database: str) -> None:
    """The block, given the server's URL in HALOMAIL_DB_URL, opens it and counts tickets."""
    url = f"postgresql://helpdesk@{guide_database}/helpdesk"
    env = {**os.environ, "HALOMAIL_DB_URL": url, "HALOMAIL_DB_PASSWORD": PASSWORD}
    done = subprocess.run(
        [sys.executable, "-c", PYTHON[0]], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{re.escape(url)} \d+ tickets\n", done.stdout)
