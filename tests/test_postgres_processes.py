"""Several processes on one PostgreSQL database at once: migrations, outbox claims,
leases and the instance's loop token (#14).

Each worker is a real Python process that opens its own repository and waits for a
"go" file, so all of them start their work at the same moment.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from halomail.tickets import _pg_schema
from halomail.tickets.models import NewOutgoing, OutboxStatus
from halomail.tickets.postgres import PostgreSQLTicketRepository

# Many processes at once: scripts/test runs these on the first Python only.
pytestmark = pytest.mark.scale

WORKERS = 4
_DEADLINE = 120  # seconds for all workers to finish: generous, never a measurement

# What every worker runs first: import, say it is ready, wait for the go file, then
# open the repository.
_PRELUDE = """
import datetime as dt, json, logging, os, sys, time
from pathlib import Path
from halomail.app import instance_loop_token
from halomail.tickets.models import OutboxStatus
from halomail.tickets.postgres import PostgreSQLTicketRepository
url, go, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
repo = PostgreSQLTicketRepository(url)
now = dt.datetime.now(dt.UTC)
"""


def run_workers(url: str, tmp_path: Path, body: str) -> list[tuple[Any, str]]:
    """Start WORKERS processes running ``body``, release them together, and return each
    one's JSON result (its last line of output) with its log."""
    go = tmp_path / "go"
    script = _PRELUDE + textwrap.dedent(body)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, str(go), f"worker-{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    results: list[tuple[Any, str]] = []
    try:
        for process in processes:  # every worker has imported halomail: start them level
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        go.touch()
        deadline = time.monotonic() + _DEADLINE
        for process in processes:
            out, err = process.communicate(timeout=max(1, deadline - time.monotonic()))
            assert process.returncode == 0, err
            results.append((json.loads(out.splitlines()[-1]), err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def test_workers_opening_a_fresh_database_at_once_migrate_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four processes open an empty database together: each step runs once, all can write."""
    results = run_workers(
        postgres_url,
        tmp_path,
        """
        repo.set_state(me, "opened")
        print(json.dumps(me))
        """,
    )
    logs = "".join(err for _, err in results)
    steps = [line for line in logs.splitlines() if "schema migrated to version" in line]
    assert sorted(steps) == [
        f"halomail.tickets._pg_schema: schema migrated to version {n}: {description}"
        # Every step, each exactly once, whatever steps later versions add.
        for n, description in enumerate((m.description for m in _pg_schema.MIGRATIONS), start=1)
    ]
    with PostgreSQLTicketRepository(postgres_url) as repo:
        assert [repo.get_state(f"worker-{n}") for n in range(WORKERS)] == ["opened"] * WORKERS


def test_claimers_in_four_processes_send_each_mail_exactly_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """300 due emails, four processes claiming five at a time: each email is claimed and
    marked sent by exactly one of them, and every one is sent."""
    with PostgreSQLTicketRepository(postgres_url) as repo:
        for n in range(300):
            repo.enqueue_outgoing(
                NewOutgoing(message_id=f"m{n}@x", to=("a@b.example",), subject="s", text="t")
            )
    results = run_workers(
        postgres_url,
        tmp_path,
        """
        mine = []
        while batch := repo.claim_outgoing(now, owner=me, lease=dt.timedelta(minutes=10), limit=5):
            for mail in batch:
                repo.mark_outgoing(mail.id, OutboxStatus.SENT)
                mine.append(mail.message_id)
        print(json.dumps(mine))
        """,
    )
    claimed = [message_id for mine, _ in results for message_id in mine]
    assert Counter(claimed) == Counter(f"m{n}@x" for n in range(300))
    assert all(mine for mine, _ in results), "every worker took part"
    with PostgreSQLTicketRepository(postgres_url) as repo:
        sent = repo.list_outgoing(status=OutboxStatus.SENT, limit=1000)
        assert len(sent) == 300
        assert {mail.attempts for mail in sent} == {1}


def test_each_lease_is_won_by_exactly_one_of_four_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four processes race for 100 mailbox leases at once: each lease has one holder."""
    results = run_workers(
        postgres_url,
        tmp_path,
        """
        won = [
            name
            for name in (f"mailbox-{n}" for n in range(100))
            if repo.acquire_lease(name, me, now=now, ttl=dt.timedelta(hours=1))
        ]
        print(json.dumps(won))
        """,
    )
    winners = Counter(name for won, _ in results for name in won)
    assert winners == Counter(f"mailbox-{n}" for n in range(100))
    with PostgreSQLTicketRepository(postgres_url) as repo:
        later = dt.datetime.now(dt.UTC)
        assert not any(
            repo.acquire_lease(f"mailbox-{n}", "someone-else", now=later, ttl=dt.timedelta(1))
            for n in range(100)
        )


def test_workers_starting_together_agree_on_one_loop_token(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four processes make the instance's loop token at once: one token, kept, for all.

    Each worker's repository dawdles for a moment before writing the token, so every
    worker reads "no token yet" while the first one is still making it: without the
    lease, READ COMMITTED lets each of them write a token of its own.
    """
    PostgreSQLTicketRepository(postgres_url).close()  # migrated: the workers start level
    results = run_workers(
        postgres_url,
        tmp_path,
        """
        class Dawdling(PostgreSQLTicketRepository):
            def set_state(self, key, value):
                time.sleep(1)  # widens the race; asserts nothing about time
                super().set_state(key, value)

        repo.close()
        print(json.dumps(instance_loop_token(Dawdling(url))))
        """,
    )
    tokens = {token for token, _ in results}
    assert len(tokens) == 1
    with PostgreSQLTicketRepository(postgres_url) as repo:
        assert repo.get_state("halomail:loop-token") in tokens
        assert repo.acquire_lease(
            "halomail:loop-token", "me", now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(1)
        ), "the lease that guarded making it was released"
