"""docs/scaling.md: every block works as written (#14).

The ``toml`` block loads with the real loader; every ``halomail`` command (console lines,
systemd ``ExecStart``, the Kubernetes containers' ``command``) is one the real parser
accepts, with options its ``--help`` lists; the Kubernetes YAML parses; the Redis lines
are those the tests' own broker runs with; the Python block runs.
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from halomail.config.loader import load_config
from tests.servers.celery_workers import halomail_command
from tests.servers.redis import RedisServer

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "scaling.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == language]


def _doc_env() -> dict[str, str]:
    """The environment variables the doc's configuration names."""
    (block,) = _blocks("toml")
    names = re.findall(r'_env = "([A-Z_]+)"', block)
    return {name: f"value-of-{name.lower()}" for name in names}


def _systemd_commands() -> list[list[str]]:
    commands = []
    for block in _blocks("ini"):
        unit = configparser.ConfigParser(strict=True, interpolation=None)
        unit.read_string(block)
        commands.append(shlex.split(unit["Service"]["ExecStart"]))
    return commands


def _kubernetes() -> list[dict[str, Any]]:
    (block,) = _blocks("yaml")
    return [document for document in yaml.safe_load_all(block) if document]


def _kubernetes_commands() -> list[list[str]]:
    return [
        container["command"]
        for document in _kubernetes()
        for container in document["spec"]["template"]["spec"]["containers"]
    ]


def _console_commands() -> list[list[str]]:
    return [
        shlex.split(line[2:])
        for block in _blocks("console")
        for line in block.splitlines()
        if line.startswith("$ halomail ")
    ]


def test_the_configuration_block_loads(tmp_path: Path) -> None:
    """The doc's halomail.toml is a valid configuration, with the [scale] it describes."""
    (block,) = _blocks("toml")
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(block)
    config = load_config(config_file, env=_doc_env())
    assert config.scale is not None
    assert config.scale.broker_display == "redis://127.0.0.1:6379/0"
    assert config.scale.broker_password == "value-of-halomail_broker_password"
    assert (config.scale.poll_interval_seconds, config.scale.outbox_interval_seconds) == (60, 10)
    # The commented keys are real keys too: uncommented, they load.
    uncommented = re.sub(r"^# (schedule_file|metrics_port)", r"\1", block, flags=re.MULTILINE)
    assert "\nmetrics_port" in uncommented
    config_file.write_text(uncommented)
    scale = load_config(config_file, env=_doc_env()).scale
    assert scale is not None
    assert scale.metrics_port == 9108
    assert scale.schedule_file == tmp_path / "beat-schedule"


def test_the_doc_shows_commands_of_every_kind() -> None:
    """Console lines, both systemd units and both Kubernetes containers name halomail."""
    assert len(_console_commands()) == 2
    assert len(_systemd_commands()) == 2
    assert len(_kubernetes_commands()) == 2
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "celery"
    ], "the extra `pip install 'halomail[celery]'` names exists"


@pytest.mark.parametrize(
    "argv",
    _console_commands() + _systemd_commands() + _kubernetes_commands(),
    ids=lambda argv: " ".join(argv[3:]),
)
def test_every_command_in_the_doc_is_a_real_halomail_command(argv: list[str]) -> None:
    """Each command parses with the real `halomail` (its values checked) and every option
    it uses is one its --help lists."""
    assert Path(argv[0]).name == "halomail"
    done = subprocess.run(
        [halomail_command(), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    subcommand = argv[3]
    assert subcommand in ("worker", "scheduler")
    assert done.stdout.startswith(f"usage: halomail {subcommand}")
    for option in (arg for arg in argv[4:] if arg.startswith("--")):
        assert option in done.stdout


def test_the_kubernetes_example_runs_many_workers_and_one_scheduler() -> None:
    """The YAML parses: a worker Deployment, and a single-replica Recreate scheduler."""
    worker, scheduler = _kubernetes()
    assert worker["kind"] == scheduler["kind"] == "Deployment"
    assert worker["spec"]["replicas"] > 1
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}


def test_the_redis_settings_are_those_the_tests_broker_runs_with(
    redis_server: RedisServer,
) -> None:
    """The doc's append-only lines are in the tests' own redis.conf."""
    (block,) = _blocks("text")
    conf = (redis_server.root / "redis.conf").read_text().splitlines()
    assert block.splitlines() == ["appendonly yes", "appendfsync always"]
    assert set(block.splitlines()) <= set(conf)


def test_the_python_block_registers_the_tasks_on_a_hosts_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host-app example runs: its app has halomail's tasks, schedule and repository."""
    (block,) = _blocks("python")
    (config_block,) = _blocks("toml")
    (tmp_path / "halomail.toml").write_text(config_block)
    monkeypatch.chdir(tmp_path)
    for name, value in _doc_env().items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "helpdesk"}
    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the doc's own code
    app = namespace["app"]
    assert {"halomail.poll_mailbox", "halomail.send_outbox"} <= set(app.tasks)
    assert set(app.conf.beat_schedule) == {
        "halomail.schedule_polls",
        "halomail.send_outbox",
        "halomail.check_services",
        "halomail.purge_ledger",
    }
    repository = namespace["open_repository"]()
    try:
        assert repository.list_tickets() == []
    finally:
        repository.close()
    assert (tmp_path / "helpdesk.db").exists()
