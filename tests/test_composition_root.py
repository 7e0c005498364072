"""The public composition root: ``halomail.load_config`` and ``halomail.build_processor``.

Also ``[storage] repository = "package.module:factory"``, shown with the real command
running on a host's repository module, and the code blocks of the documentation that
use them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import halomail
from halomail import (
    InMemoryTicketRepository,
    SQLiteTicketRepository,
    build_processor,
    load_config,
)
from halomail.errors import ConfigError
from tests.conftest import make_email

DOCS = Path(__file__).parent.parent / "docs"

CONFIG = """\
{storage}

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
"""


def _setup(tmp_path: Path, storage: str = '[storage]\nurl = "sqlite:///halomail.db"') -> Path:
    """A configuration with one Maildir mailbox holding two emails."""
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(storage=storage), encoding="utf-8")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    for index in (1, 2):
        raw = make_email(subject=f"Problem {index}", message_id=f"<m{index}@customer.example>")
        (tmp_path / "inbox" / "new" / f"{index}.eml").write_bytes(raw)
    return config


def _blocks(doc: str, language: str) -> list[str]:
    text = (DOCS / doc).read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def _python_blocks(doc: str) -> list[str]:
    return _blocks(doc, "python")


def _halomail(
    *args: str, cwd: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child process; unclosed resources there are errors."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-m", "halomail.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


# -- the public functions ----------------------------------------------------------------


def test_both_are_exported_from_halomail() -> None:
    """build_processor and load_config are public names of the package, documented."""
    assert {"build_processor", "load_config"} <= set(halomail.__all__)
    assert "``None`` opens the one ``[storage]`` names" in (halomail.build_processor.__doc__ or "")
    assert halomail.load_config.__doc__


def test_the_getting_started_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Python block of docs/getting-started.md makes the tickets and reports them."""
    (block,) = _python_blocks("getting-started.md")
    _setup(tmp_path)
    monkeypatch.chdir(tmp_path)

    exec(compile(block, "getting-started.md", "exec"), {})  # noqa: S102 - the docs' code

    assert capsys.readouterr().out.strip() == "2 emails, 2 sent"
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    try:
        assert sorted(t.summary for t in repository.list_tickets()) == ["Problem 1", "Problem 2"]
    finally:
        repository.close()


class _ClosingRepository(InMemoryTicketRepository):
    """An in-memory repository that remembers being closed."""

    closed = 0

    def close(self) -> None:
        """Count the call."""
        type(self).closed += 1


def test_the_repository_it_opens_is_closed_with_the_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """repository=None opens [storage]; close() closes it; a passed repository stays open."""
    module = tmp_path / "hostrepo_closing.py"
    module.write_text(
        "from tests.test_composition_root import _ClosingRepository\n\n"
        "def make(config):\n    return _ClosingRepository()\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_ClosingRepository, "closed", 0)
    config = load_config(_setup(tmp_path, '[storage]\nrepository = "hostrepo_closing:make"'))

    owned = build_processor(config)
    assert isinstance(owned.repository, _ClosingRepository)
    assert owned.run_once().ok
    owned.close()
    assert _ClosingRepository.closed == 1

    hosts = _ClosingRepository()
    with build_processor(config, repository=hosts) as processor:
        assert processor.repository is hosts
    assert _ClosingRepository.closed == 1  # the host's repository is the host's to close


def test_a_build_that_fails_half_way_opens_no_storage(tmp_path: Path) -> None:
    """A mailbox that cannot be built stops build_processor before the database is made."""
    config_file = _setup(tmp_path)
    with config_file.open("a", encoding="utf-8") as file:
        file.write('\n[[mailboxes]]\nname = "Sales"\nconnection = "imap"\nhost = "imap.example"\n')
    config = load_config(config_file)  # loads: only building the login needs a username

    with pytest.raises(ConfigError) as caught:
        build_processor(config)

    assert caught.value.key_path == "mailboxes[1].username"
    assert not (tmp_path / "halomail.db").exists()


# -- [storage] repository ----------------------------------------------------------------


def test_the_command_runs_on_a_host_repository(tmp_path: Path) -> None:
    """The [storage] table and factory of docs/configuration.md run under the real command."""
    factory = next(b for b in _python_blocks("configuration.md") if "def open_repository" in b)
    (tmp_path / "host" / "myapp").mkdir(parents=True)
    (tmp_path / "host" / "myapp" / "helpdesk.py").write_text(factory, encoding="utf-8")
    (storage,) = (b for b in _blocks("configuration.md", "toml") if b.startswith("[storage]\nrep"))
    config = _setup(tmp_path, storage)
    host = tmp_path / "host"

    checked = _halomail("-c", str(config), "check-config", cwd=tmp_path, pythonpath=host)
    ran = _halomail("-c", str(config), "run", "--once", cwd=tmp_path, pythonpath=host)
    listed = _halomail("-c", str(config), "tickets", "--json", cwd=tmp_path, pythonpath=host)

    assert checked.returncode == 0, checked.stderr
    assert ran.returncode == 0, ran.stderr
    assert "2 emails: 2 created" in ran.stdout
    assert sorted(t["summary"] for t in json.loads(listed.stdout)) == ["Problem 1", "Problem 2"]
    assert (tmp_path / "helpdesk.db").is_file()
    assert not (tmp_path / "halomail.db").exists()  # the default storage was never opened
    for result in (checked, ran, listed):
        assert "ResourceWarning" not in result.stderr


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ('repository = "no_such_module_anywhere:make"', "cannot import 'no_such_module_anywhere'"),
        ('repository = "hostrepo_bad:missing"', "module 'hostrepo_bad' has no 'missing'"),
        ('repository = "hostrepo_bad:NOT_CALLABLE"', "'hostrepo_bad:NOT_CALLABLE' is not callable"),
        ('repository = "hostrepo_bad"', "expected 'package.module:factory'"),
        (
            'url = "sqlite:///halomail.db"\nrepository = "hostrepo_bad:make"',
            "give either url or repository, not both",
        ),
    ],
    ids=["unknown-module", "unknown-attribute", "not-callable", "no-colon", "with-url"],
)
def test_a_bad_repository_factory_is_a_configuration_error(
    tmp_path: Path, storage: str, message: str
) -> None:
    """check-config and run exit 2 naming storage.repository, and open no database."""
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "hostrepo_bad.py").write_text(
        "NOT_CALLABLE = 42\n\ndef make(config):\n    raise AssertionError('never called')\n",
        encoding="utf-8",
    )
    config = _setup(tmp_path, f"[storage]\n{storage}")
    for command in (["check-config"], ["run", "--once"]):
        result = _halomail("-c", str(config), *command, cwd=tmp_path, pythonpath=tmp_path / "host")
        assert result.returncode == 2, result.stderr
        assert f"configuration error: storage.repository: {message}" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "halomail.db").exists()


# -- every command closes what it opens ------------------------------------------------------


def test_every_command_closes_what_it_opens(tmp_path: Path) -> None:
    """No command leaves a SQLite connection or a file open (ResourceWarning is an error)."""
    config = str(_setup(tmp_path))
    sample = tmp_path / "sample.eml"
    sample.write_bytes(make_email(subject="Simulated"))
    commands = [
        ["check-config"],
        ["run", "--once"],
        ["simulate", str(sample)],
        ["tickets"],
        ["ticket", "1"],
        ["quarantine"],
        ["send-test-email", "--mailbox", "Support", "--to", "someone@example.com"],
    ]
    for command in commands:
        result = _halomail("-c", config, *command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "ResourceWarning" not in result.stderr, command
        assert "unclosed" not in result.stderr, command
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3  # 2 acknowledgements, 1 test
