"""``[scale]``, the commands' refusals, and halomail's tasks on a host's own Celery app (#14)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from halomail.celery import (
    CHECK_SERVICES,
    POLL_MAILBOX,
    PURGE_LEDGER,
    SCHEDULE_POLLS,
    SEND_OUTBOX,
    beat_schedule,
    create_app,
    register,
)
from halomail.cli import main
from halomail.config.loader import parse_config
from halomail.errors import ConfigError
from tests.servers.celery_workers import (
    Processes,
    Results,
    broker_env,
    halomail_command,
    wait_until,
    write_setup,
)
from tests.servers.redis import RedisServer

BROKER = "redis://127.0.0.1:6379/0"


def _scale(table: dict[str, object], env: dict[str, str] | None = None) -> object:
    return parse_config({"scale": table}, base_dir=Path("/srv/halomail"), env=env or {}).scale


# -- [scale] -------------------------------------------------------------------------


def test_a_file_without_scale_loads_with_no_scale_settings() -> None:
    """[scale] is optional: a file without it has Config.scale None."""
    assert parse_config({}, base_dir=Path(".")).scale is None


def test_scale_defaults_are_the_documented_ones() -> None:
    """Only broker_url given: the queue, intervals and visibility timeout take their defaults."""
    scale = _scale({"broker_url": BROKER})
    assert scale is not None
    assert (scale.broker_url, scale.queue, scale.metrics_port) == (BROKER, "halomail", None)
    assert (scale.poll_interval_seconds, scale.outbox_interval_seconds) == (60.0, 10.0)
    assert (scale.service_check_interval_seconds, scale.visibility_timeout_seconds) == (60.0, 600)
    assert scale.schedule_file is None


def test_the_broker_password_comes_from_the_environment_and_is_never_shown() -> None:
    """broker_password_env puts the password in the connection URL only, never in repr."""
    scale = _scale(
        {"broker_url": BROKER, "broker_password_env": "BROKER_PW", "metrics_port": 9108},
        env={"BROKER_PW": "s3cr:t/pw"},
    )
    assert scale.broker_connection_url == "redis://:s3cr%3At%2Fpw@127.0.0.1:6379/0"
    assert scale.broker_display == BROKER
    assert "s3cr" not in repr(scale)
    assert scale.metrics_port == 9108


def test_a_password_written_in_the_url_is_masked_in_what_is_shown() -> None:
    """An inline password stays out of broker_display and repr."""
    scale = _scale({"broker_url": "redis://halo:inline-pw@redis.example:6380/2"})
    assert scale.broker_display == "redis://halo@redis.example:6380/2"
    assert "inline-pw" not in repr(scale)


def test_the_schedule_file_is_relative_to_the_configuration_folder() -> None:
    """schedule_file = "beat/schedule" is under the configuration file's folder."""
    scale = _scale({"broker_url": BROKER, "schedule_file": "beat/schedule"})
    assert scale.schedule_file == Path("/srv/halomail/beat/schedule")


@pytest.mark.parametrize(
    ("table", "env", "key", "words"),
    [
        ({"broker_url": "amqp://127.0.0.1/"}, {}, "scale.broker_url", "redis://host:port/db"),
        ({"broker_url": "redis://127.0.0.1:99999/0"}, {}, "scale.broker_url", "not a valid"),
        ({"broker_url": "redis://127.0.0.1/zero"}, {}, "scale.broker_url", "must be a number"),
        ({"broker_url": BROKER, "poll_interval_seconds": 0}, {}, "poll_interval_seconds", ""),
        ({"broker_url": BROKER, "outbox_interval_seconds": "10"}, {}, "outbox_interval", ""),
        ({"broker_url": BROKER, "visibility_timeout_seconds": 5}, {}, "visibility", "at least"),
        ({"broker_url": BROKER, "metrics_port": 0}, {}, "scale.metrics_port", "1 to 65535"),
        ({"broker_url": BROKER, "queue": "a queue"}, {}, "scale.queue", "letters"),
        ({"broker_url": BROKER, "brokr": 1}, {}, "scale.brokr", "unknown key"),
        ({"broker_url": BROKER, "broker_password_env": "NOPE"}, {}, "password_env", "not set"),
        ({"broker_password_env": "PW"}, {"PW": "x"}, "scale.broker_password_env", "broker_url"),
        (
            {"broker_url": "redis://:pw@h/0", "broker_password_env": "PW"},
            {"PW": "x"},
            "scale.broker_password_env",
            "not both",
        ),
    ],
)
def test_a_wrong_scale_table_is_refused_naming_the_key(
    table: dict[str, object], env: dict[str, str], key: str, words: str
) -> None:
    """Each wrong [scale] value raises ConfigError at its key path, with what is allowed."""
    with pytest.raises(ConfigError) as caught:
        _scale(table, env)
    assert key in caught.value.key_path
    assert words in caught.value.message


def test_a_wrong_broker_url_is_refused_without_showing_its_password() -> None:
    """The refusal of a non-Redis broker URL never repeats the password it holds."""
    with pytest.raises(ConfigError) as caught:
        _scale({"broker_url": "amqp://guest:hunter2@127.0.0.1//"})
    assert "hunter2" not in str(caught.value)


# -- the app and its schedule ------------------------------------------------------------


def _config(tmp_path: Path, scale: str) -> Path:
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "halomail.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [storage]
            url = "sqlite:///tickets.db"

            [[mailboxes]]
            name = "Support"
            connection = "maildir"
            path = "inbox"
            """
        )
        + scale
    )
    return config


def test_create_app_sets_late_acknowledgement_and_the_schedule(tmp_path: Path) -> None:
    """The app acks late, prefetches one task, ignores results, and schedules all three."""
    from halomail import load_config

    scale = '\n[scale]\nbroker_url = "redis://127.0.0.1:6390/3"\npoll_interval_seconds = 30\n'
    app = create_app(load_config(_config(tmp_path, scale)))
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert (conf.worker_prefetch_multiplier, conf.task_ignore_result) == (1, True)
    assert conf.broker_transport_options == {"visibility_timeout": 600}
    assert conf.task_default_queue == "halomail"
    assert {POLL_MAILBOX, SEND_OUTBOX, CHECK_SERVICES, SCHEDULE_POLLS, PURGE_LEDGER} <= set(
        app.tasks
    )
    schedule = conf.beat_schedule
    assert schedule[SCHEDULE_POLLS]["schedule"] == 30
    assert schedule[SCHEDULE_POLLS]["options"] == {"expires": 30}
    assert schedule[SEND_OUTBOX]["schedule"] == 10
    assert (tmp_path / "tickets.db").exists() is False, "no repository opened before a fork"


def test_beat_schedule_uses_defaults_for_a_host_file_without_scale(tmp_path: Path) -> None:
    """A host's file needs no [scale]: the schedule uses the documented defaults."""
    from halomail import load_config

    schedule = beat_schedule(load_config(_config(tmp_path, "")))
    assert {name: entry["schedule"] for name, entry in schedule.items()} == {
        SCHEDULE_POLLS: 60.0,
        SEND_OUTBOX: 10.0,
        CHECK_SERVICES: 60.0,
        PURGE_LEDGER: 3600.0,
    }


def test_tasks_are_registered_acknowledged_late_on_a_hosts_app(tmp_path: Path) -> None:
    """register() puts the five tasks on the host's app only, acks_late and ignore_result."""
    import celery

    from halomail import load_config

    app = celery.Celery("host", broker="memory://", set_as_current=False)
    tasks = register(app, load_config(_config(tmp_path, "")))
    for task in (tasks.poll_mailbox, tasks.send_outbox, tasks.check_services, tasks.purge_ledger):
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True
        assert task.ignore_result is True
        assert app.tasks[task.name].acks_late is True
    # Not shared: an app made afterwards (another host, another test) does not get them.
    other = celery.Celery("other", broker="memory://", set_as_current=False)
    assert POLL_MAILBOX not in other.tasks


# -- the commands' refusals -----------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_the_commands_refuse_a_file_without_a_broker_with_exit_2(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without [scale] broker_url, worker and scheduler say what to add and exit 2."""
    config = _config(tmp_path, "\n[scale]\npoll_interval_seconds = 5\n")
    assert main(["-c", str(config), command]) == 2
    err = capsys.readouterr().err
    assert "scale.broker_url" in err
    assert 'broker_url = "redis://' in err


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_the_commands_refuse_a_wrong_scale_table_with_exit_2(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong [scale] value stops worker and scheduler with its key path and exit 2."""
    config = _config(tmp_path, '\n[scale]\nbroker_url = "http://127.0.0.1/"\n')
    assert main(["-c", str(config), command]) == 2
    assert "scale.broker_url" in capsys.readouterr().err


def test_check_config_names_the_broker_but_not_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config mentions the workers' broker, without the password from the environment."""
    monkeypatch.setenv("BROKER_PW", "pw-never-printed")
    scale = '\n[scale]\nbroker_url = "redis://10.0.0.5:6379/1"\nbroker_password_env = "BROKER_PW"\n'
    assert main(["-c", str(_config(tmp_path, scale)), "check-config"]) == 0
    out = capsys.readouterr()
    assert "broker redis://10.0.0.5:6379/1" in out.out
    assert "pw-never-printed" not in out.out + out.err


def test_a_missing_celery_extra_names_the_pip_command(tmp_path: Path) -> None:
    """Without Celery installed, `halomail worker` says pip install 'halomail[celery]', exit 2."""
    config = _config(tmp_path, f'\n[scale]\nbroker_url = "{BROKER}"\n')
    # A Python where the celery distribution cannot be imported (as without the extra).
    script = (
        "import sys; sys.modules['celery'] = None\n"
        "from halomail.cli import main\n"
        f"sys.exit(main(['-c', {str(config)!r}, 'worker']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'halomail[celery]'" in done.stderr


def test_importing_halomail_does_not_import_celery() -> None:
    """`import halomail` (and its command) works without loading Celery."""
    script = "import sys, halomail, halomail.cli; print('celery' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_the_commands_have_help(command: str) -> None:
    """`halomail worker --help` and `halomail scheduler --help` describe their options."""
    done = subprocess.run(
        [halomail_command(), command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "--loglevel" in done.stdout


# -- a host's own Celery app, run by `celery -A … worker` -------------------------------------

_HOST_MODULE = '''\
"""A helpdesk's own Celery app, with halomail's tasks and the helpdesk's repository."""

import os

from celery import Celery

import halomail.celery
from halomail import SQLiteTicketRepository, load_config

app = Celery("helpdesk", broker=os.environ["HELPDESK_BROKER_URL"])
app.conf.task_default_queue = "helpdesk"
app.conf.worker_prefetch_multiplier = 1


class HelpdeskRepository(SQLiteTicketRepository):
    """The helpdesk's repository: its tickets live in the helpdesk's own database."""


def open_helpdesk_repository():
    """Called in each worker process, after the fork."""
    return HelpdeskRepository(os.environ["HELPDESK_DATABASE"])


tasks = halomail.celery.register(
    app, load_config(os.environ["HELPDESK_HALOMAIL_CONFIG"]), repository=open_helpdesk_repository
)
'''


def test_a_hosts_celery_app_runs_the_tasks_on_its_own_repository(
    tmp_path: Path, redis_broker: RedisServer, processes: Processes
) -> None:
    """register() on a host app, run by `celery -A host worker`: tickets land in the host's
    repository (not the one [storage] names), and acknowledgements are sent once."""
    import celery

    emails = 12
    config = write_setup(
        tmp_path,
        redis_broker,
        mailboxes=2,
        emails=emails,
        storage='url = "sqlite:///halomail-own.db"',
    )
    (tmp_path / "helpdesk_host.py").write_text(_HOST_MODULE)
    password_url = f"redis://:{redis_broker.password}@127.0.0.1:{redis_broker.port}/0"
    env = {
        **broker_env(redis_broker),
        "PYTHONPATH": str(tmp_path),
        "HELPDESK_BROKER_URL": password_url,
        "HELPDESK_DATABASE": str(tmp_path / "tickets.db"),
        "HELPDESK_HALOMAIL_CONFIG": str(config),
    }
    argv = [sys.executable, "-m", "celery", "--workdir", str(tmp_path), "-A", "helpdesk_host"]
    host = processes.start("host", [*argv, "worker", "--concurrency", "1", "-l", "INFO"], env)

    client = celery.Celery("client", broker=password_url, set_as_current=False)
    try:
        for name in ("box00", "box01"):
            client.send_task(POLL_MAILBOX, args=(name,), queue="helpdesk")
        wait_until(lambda: Results(tmp_path).emails_left() == 0, 120, "both inboxes read")
        client.send_task(SEND_OUTBOX, queue="helpdesk")
        host_results = Results(tmp_path)
        wait_until(
            lambda: sum(host_results.delivered().values()) == emails, 120, "acknowledgements"
        )
    finally:
        client.close()

    # The host's repository holds the tickets; [storage]'s file was never made.
    assert not (tmp_path / "halomail-own.db").exists()
    from halomail import SQLiteTicketRepository

    repository = SQLiteTicketRepository(tmp_path / "tickets.db")
    try:
        assert len(repository.list_tickets(limit=100)) == emails
    finally:
        repository.close()
    assert set(host_results.delivered().values()) == {1}
    assert Processes.terminate(host) == 0
    assert "mailbox box00: 6 created" in host.output()
