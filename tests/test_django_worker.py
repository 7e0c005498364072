"""``manage.py halomail_worker``: halomail's Celery worker on Django's database, as a real
process on the session's Redis, with ``halomail scheduler`` queueing the polls; and the
blocks of docs/django.md's "Many mailboxes" section.

The project is a new one (``django-admin startproject``) with the settings docs/django.md
gives; its ``halomail.toml`` is :func:`~tests.servers.celery_workers.write_setup`'s, whose
``[scale]`` names the test's own broker (the page's shows the usual local one).
"""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
import tomllib
from pathlib import Path

import pytest

from tests.servers.celery_workers import Processes, broker_env, wait_until, write_setup
from tests.servers.redis import RedisServer
from tests.test_django_docs import environment, page_blocks, run_sh

pytestmark = [pytest.mark.slow, pytest.mark.scale]

EMAILS = 12


def counts(database: Path) -> tuple[int, int]:
    """Tickets, and outgoing emails marked sent, in the project's database."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
        tickets = connection.execute("SELECT COUNT(*) FROM halomail_ticket").fetchone()[0]
        sent = connection.execute(
            "SELECT COUNT(*) FROM halomail_outboxmail WHERE status = 'sent'"
        ).fetchone()[0]
    return int(tickets), int(sent)


def new_project(folder: Path) -> None:
    """``django-admin startproject`` and the settings of docs/django.md, as the page says."""
    (settings_block,) = [
        block
        for block in page_blocks(worker=False)
        if block.text.startswith("# at the end of helpdesk/settings.py")
    ]
    run_sh("django-admin startproject helpdesk .", folder)
    with (folder / "helpdesk" / "settings.py").open("a", encoding="utf-8") as file:
        file.write("\n" + settings_block.text)
    run_sh("python manage.py migrate", folder)


def test_the_pages_worker_blocks_are_a_scale_table_and_the_command() -> None:
    """The page's worker section: a [scale] table with a broker, then halomail_worker."""
    toml, sh = page_blocks(worker=True)
    assert (toml.language, sh.language) == ("toml", "sh")
    assert set(tomllib.loads(toml.text)) == {"scale"}
    assert "broker_url" in tomllib.loads(toml.text)["scale"]
    assert shlex.split(sh.text)[:3] == ["python", "manage.py", "halomail_worker"]


def test_the_worker_turns_every_email_into_a_ticket_in_djangos_database(
    tmp_path: Path, redis_broker: RedisServer, processes: Processes
) -> None:
    """The page's ``halomail_worker`` and the scheduler: every email one ticket and one sent
    acknowledgement in db.sqlite3, the inboxes empty; SIGTERM stops the worker cleanly."""
    config = write_setup(tmp_path, redis_broker, mailboxes=2, emails=EMAILS)
    new_project(tmp_path)
    env = {**environment(), **broker_env(redis_broker), "PATH": environment()["PATH"]}
    _toml, sh = page_blocks(worker=True)
    # The page's command as written, run in the project's folder.
    in_project = ["sh", "-c", f'cd "$1" && exec {sh.text.strip()}', "sh", str(tmp_path)]
    worker = processes.start("worker", in_project, env)
    # The scheduler never touches the database: the plain command, on the same file.
    processes.scheduler(config, env)

    database = tmp_path / "db.sqlite3"

    def all_done() -> bool:
        assert worker.process.poll() is None, worker.output()[-3000:]
        return counts(database) == (EMAILS, EMAILS)

    wait_until(all_done, 180, f"{EMAILS} tickets, all acknowledged")

    assert list((tmp_path / "mail").rglob("*.request*")) == []
    assert len(list((tmp_path / "sent").rglob("*.eml"))) == EMAILS
    assert not (tmp_path / "tickets.db").exists(), "the [storage] of halomail.toml was used"
    assert Processes.terminate(worker) == 0, worker.output()[-3000:]
    log = worker.output()
    assert log.count("closed the processor of worker process") == log.count(
        "built the processor of worker process"
    )
    assert redis_broker.password not in log
