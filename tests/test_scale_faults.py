"""PostgreSQL crashing or stopping under real ``halomail worker`` processes (#14).

Two workers and the scheduler on Redis turn Maildir mailboxes into tickets on the
session's PostgreSQL; in the middle of the batch the server crashes
(``pg_ctl stop -m immediate``, then started again) or is down for a few seconds. The
workers must never exit: each failing task is retried by the next round of the
schedule on a new connection. Afterwards every email is exactly one ticket and every
acknowledgement was delivered once, as a user would check.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.servers.celery_workers import (
    Processes,
    Results,
    Started,
    assert_exactly_once,
    broker_env,
    postgres_storage,
    wait_until,
    write_setup,
)
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

# Many processes at once: scripts/test runs these on the first Python only.
pytestmark = [pytest.mark.slow, pytest.mark.scale]

EMAILS = 300
_MAILBOXES = [f"box{n:02d}" for n in range(6)]
_DEADLINE = 180  # seconds for the batch to finish after the fault: generous, not measured


def _start(
    tmp_path: Path, redis_broker: RedisServer, url: str, processes: Processes
) -> tuple[list[Started], Results]:
    """Two workers and the scheduler on mailboxes holding EMAILS emails, stored at ``url``."""
    config = write_setup(
        tmp_path,
        redis_broker,
        mailboxes=len(_MAILBOXES),
        emails=EMAILS,
        storage=postgres_storage(url),
    )
    env = broker_env(redis_broker)
    workers = [processes.worker(name, config, env, concurrency=2) for name in ("one", "two")]
    processes.scheduler(config, env)
    return workers, Results(tmp_path)


def _wait_for_the_middle_of_the_batch(results: Results) -> None:
    """Until some tickets exist, but not all: the fault must hit work under way."""
    wait_until(lambda: results.tickets() > 0, 120, "the first tickets")
    assert results.tickets() < EMAILS, "the batch was over before the fault"


#: How long a session must sit idle inside a transaction to count as left there. The
#: workers keep polling, and one caught between its BEGIN and its next statement (on a
#: loaded machine that can take a while) is only passing through.
_LEFT_FOR = 2.0


def _open_transactions(postgres: PostgresServer, url: str) -> list[tuple[str, str]]:
    """The sessions on the test's database left inside a transaction: (application, query).

    Waits :data:`_LEFT_FOR` first, so a session left there before the call (by the fault)
    has been idle in its transaction at least that long, and one just passing through
    has not.
    """
    time.sleep(_LEFT_FOR)
    with postgres.admin() as connection:
        rows = connection.execute(
            "SELECT application_name, query FROM pg_stat_activity "
            "WHERE datname = %s AND state LIKE 'idle in transaction%%' "
            "AND state_change < now() - make_interval(secs => %s)",
            (url.rsplit("/", 1)[-1], _LEFT_FOR),
        ).fetchall()
    return [(str(name), str(query)) for name, query in rows]


def _assert_workers_survived(workers: list[Started]) -> None:
    """The workers outlived the fault and still stop cleanly (warm shutdown, exit 0)."""
    for worker in workers:
        assert worker.process.poll() is None, f"{worker.name} exited:\n{worker.output()[-3000:]}"
    for worker in workers:
        assert Processes.terminate(worker) == 0, worker.output()[-3000:]


_POLL_REFUSED = re.compile(r"stopped the pass before reading mailbox (box\d+)")
_OUTBOX_REFUSED = re.compile(r"outbox send: the repository is unavailable, left for the next round")
# What a worker logs when the database fails under it.
_DATABASE_FAILED = re.compile(r"the connection was lost|repository busy|TransientRepositoryError")


def _logged_since(workers: list[Started], offsets: list[int]) -> str:
    """What the workers logged after ``offsets`` (their log lengths at some moment)."""
    return "".join(w.output()[at:] for w, at in zip(workers, offsets, strict=True))


def _every_task_refused(log: str) -> bool:
    """The log shows the polls of every mailbox and a send of the outbox failing: the
    server has been down through at least one whole round of the schedule."""
    return set(_POLL_REFUSED.findall(log)) == set(_MAILBOXES) and bool(_OUTBOX_REFUSED.search(log))


def test_a_postgresql_crash_in_the_middle_of_a_batch_loses_and_doubles_nothing(
    tmp_path: Path,
    redis_broker: RedisServer,
    postgres: PostgresServer,
    postgres_url: str,
    processes: Processes,
) -> None:
    """PostgreSQL crashes and restarts mid-batch: the workers reconnect, and every email
    is still one ticket and one acknowledgement delivered once."""
    workers, results = _start(tmp_path, redis_broker, postgres_url, processes)
    _wait_for_the_middle_of_the_batch(results)
    offsets = [len(worker.output()) for worker in workers]

    postgres.restart(mode="immediate")  # a crash: every session cut, no shutdown

    wait_until(lambda: results.all_done(EMAILS), _DEADLINE, "every ticket after the crash")
    assert _DATABASE_FAILED.search(_logged_since(workers, offsets)), "the crash reached no worker"
    assert_exactly_once(results, EMAILS)
    assert _open_transactions(postgres, postgres_url) == [], "a session left in a transaction"
    _assert_workers_survived(workers)


def test_postgresql_down_for_a_few_seconds_loses_and_doubles_nothing(
    tmp_path: Path,
    redis_broker: RedisServer,
    postgres: PostgresServer,
    postgres_url: str,
    processes: Processes,
) -> None:
    """PostgreSQL stops mid-batch until the workers report failures, then starts again:
    they reconnect, and every email is one ticket and one acknowledgement delivered once."""
    workers, results = _start(tmp_path, redis_broker, postgres_url, processes)
    _wait_for_the_middle_of_the_batch(results)
    offsets = [len(worker.output()) for worker in workers]

    postgres.stop()
    try:
        wait_until(
            lambda: _every_task_refused(_logged_since(workers, offsets)),
            60,
            "the workers reporting every poll and the outbox failing",
        )
    finally:
        postgres.start()  # the next tests need it, whatever happened here

    wait_until(lambda: results.all_done(EMAILS), _DEADLINE, "every ticket after the restart")
    # An outage is one warning line per task, not a task failure with its traceback.
    assert "raised unexpected" not in _logged_since(workers, offsets)
    assert_exactly_once(results, EMAILS)
    assert _open_transactions(postgres, postgres_url) == [], "a session left in a transaction"
    _assert_workers_survived(workers)
