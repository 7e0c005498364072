"""The ``halomail`` command on PostgreSQL: ``[storage] url = "postgresql://…"`` with the
password from the environment, a Maildir in, .eml acknowledgements out (#14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.config.loader import Config, load_config
from halomail.errors import ConfigError
from tests.conftest import make_email
from tests.servers.postgres import PostgresServer

SECRET = "pg-Secret-4-cli"
EMAILS = 5


def halomail(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real command (a new process) with ``-v``, so its log is in stderr too."""
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-v", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def load(tmp_path: Path, text: str, env: dict[str, str]) -> Config:
    """The configuration ``text`` as ``load_config`` reads it from a file."""
    path = tmp_path / "halomail.toml"
    path.write_text(text)
    return load_config(path, env=env, require_mailbox=False)


def setup(tmp_path: Path, url: str) -> Path:
    """A Maildir of EMAILS emails, .eml files out, tickets in PostgreSQL; the config's path."""
    inbox = tmp_path / "inbox"
    for sub in ("new", "cur", "tmp"):
        (inbox / sub).mkdir(parents=True)
    for n in range(EMAILS):
        raw = make_email(subject=f"Problem {n}", message_id=f"<p{n}@customer.example>")
        (inbox / "new" / f"100{n}.p{n}.host").write_bytes(raw)
    config = tmp_path / "halomail.toml"
    config.write_text(
        f'[storage]\nurl = "{url}"\npassword_env = "HALOMAIL_TEST_PG_PASSWORD"\n\n'
        '[outgoing]\ntransport = "maildir"\npath = "outbox"\n'
        'from_address = "support@helpdesk.example"\n\n'
        '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n'
    )
    return config


def test_run_once_makes_tickets_in_postgresql_and_never_shows_the_password(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """`run --once` turns the Maildir into tickets in PostgreSQL, `tickets` lists them, a
    second run adds nothing, and the password is in no output and no log line."""
    postgres.create_user("cliuser", SECRET)
    url = postgres_url.replace("halomail@", "cliuser@")
    config = setup(tmp_path, url)
    env = {**os.environ, "HALOMAIL_TEST_PG_PASSWORD": SECRET}
    checked = halomail(config, "check-config", env=env)
    ran = halomail(config, "run", "--once", env=env)
    again = halomail(config, "run", "--once", env=env)
    listed = halomail(config, "tickets", "--json", env=env)
    for done in (checked, ran, again, listed):
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
    assert f"storage {url})" in checked.stdout
    tickets = json.loads(listed.stdout)
    assert sorted(t["summary"] for t in tickets) == [f"Problem {n}" for n in range(EMAILS)]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == EMAILS
    assert list((tmp_path / "inbox" / "new").iterdir()) == []


def test_a_wrong_password_fails_the_run_without_showing_it(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """The server refuses the login: the command fails and says so, the password unseen."""
    postgres.create_user("cliuser2", SECRET)
    config = setup(tmp_path, postgres_url.replace("halomail@", "cliuser2@"))
    env = {**os.environ, "HALOMAIL_TEST_PG_PASSWORD": "not-" + SECRET}
    done = halomail(config, "run", "--once", env=env)
    assert done.returncode != 0
    assert "password authentication failed" in done.stderr
    assert "not-" + SECRET not in done.stdout + done.stderr


def test_the_storage_password_comes_from_the_environment_and_is_never_in_the_repr(
    tmp_path: Path,
) -> None:
    """password_env is read at load; the settings' repr shows neither it nor a url password."""
    text = '[storage]\nurl = "postgres://u:inline-pw@db.example/helpdesk"\npassword_env = "PGPW"\n'
    config = load(tmp_path, text, {"PGPW": "from-env"})
    assert config.storage.password == "from-env"
    assert config.storage.is_postgres
    assert config.storage.sqlite_path is None
    assert config.storage.location == "postgres://u@db.example/helpdesk"
    assert "from-env" not in repr(config.storage)
    assert "inline-pw" not in repr(config)


def test_check_config_shows_where_the_storage_is_without_the_urls_password(
    tmp_path: Path,
) -> None:
    """A password written in the url is left out of check-config's summary (no connection)."""
    config = setup(tmp_path, f"postgresql://cliuser:{SECRET}@db.example:5432/helpdesk")
    config.write_text(
        config.read_text().replace('password_env = "HALOMAIL_TEST_PG_PASSWORD"\n', "")
    )
    checked = halomail(config, "check-config", env=dict(os.environ))
    assert checked.returncode == 0, checked.stderr
    assert "storage postgresql://cliuser@db.example:5432/helpdesk)" in checked.stdout
    assert SECRET not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("storage", "key"),
    [
        ('url = "postgresql://db/x"\npassword_env = "UNSET_PG_PASSWORD"\n', "storage.password_env"),
        ('url = "sqlite:///x.db"\npassword = "pw"\n', "storage.password"),
    ],
)
def test_a_storage_password_mistake_names_its_key(tmp_path: Path, storage: str, key: str) -> None:
    """An unset password variable, or a password for SQLite, is refused with its key path."""
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, f"[storage]\n{storage}", {})
    assert refused.value.key_path == key
    assert "pw" not in str(refused.value).replace("password", "")
