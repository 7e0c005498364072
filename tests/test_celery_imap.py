"""Celery workers on real IMAP mailboxes: each poll logs out when it is done.

A mailbox's next poll may run in any worker process, so a connection kept open after a
poll mostly sits idle; kept by every process, they would pile up towards one per
mailbox per process. Real Dovecot behind a proxy that counts the open connections, a
real Redis, a real `halomail worker` and `halomail scheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_email
from tests.servers.celery_workers import (
    PASSWORD_ENV,
    Processes,
    Results,
    broker_env,
    wait_until,
)
from tests.servers.dovecot import Dovecot
from tests.servers.fault_proxy import FaultProxy
from tests.servers.redis import RedisServer

# Many processes at once: scripts/test runs these on the first Python only.
pytestmark = pytest.mark.scale

MAILBOXES = 4
EMAILS_EACH = 2


def _config(root: Path, dovecot: Dovecot, proxy: FaultProxy, broker: RedisServer) -> Path:
    """Every account a mailbox read through the proxy over TLS, polled every second."""
    tables = [
        '[storage]\nurl = "sqlite:///tickets.db"\n',
        '[processing]\nloop_token = "imap-poll-test"\n',
        f'[scale]\nbroker_url = "{broker.url()}"\nbroker_password_env = "{PASSWORD_ENV}"\n'
        "poll_interval_seconds = 1\n",
    ]
    for n in range(MAILBOXES):
        account = dovecot.new_account()
        for k in range(EMAILS_EACH):
            dovecot.append(
                account,
                make_email(
                    subject=f"Mailbox {n}, request {k}",
                    sender=f"user{n}-{k}@customer.example",
                    message_id=f"<imap-poll-{n}-{k}@customer.example>",
                ),
            )
        tables.append(
            f'[[mailboxes]]\nname = "box{n}"\nconnection = "imap"\nhost = "{proxy.host}"\n'
            f'port = {proxy.port}\nsecurity = "tls"\ntls_ca_file = "{dovecot.ca_file}"\n'
            f'username = "{account.username}"\npassword = "{account.password}"\n'
            'processed = "delete"\nsend_acknowledgement = false\n'
        )
    config = root / "halomail.toml"
    config.write_text("\n".join(tables))
    return config


def test_each_poll_logs_out_so_idle_connections_never_pile_up(
    tmp_path: Path,
    dovecot: Dovecot,
    fault_proxy_factory: Callable[[str, int], FaultProxy],
    redis_broker: RedisServer,
    processes: Processes,
) -> None:
    """Four IMAP mailboxes polled every second by two pool processes: every email is one
    ticket, and once the scheduler stops no connection is left open to the server."""
    proxy = fault_proxy_factory(dovecot.host, dovecot.imaps_port)
    config = _config(tmp_path, dovecot, proxy, redis_broker)
    env = broker_env(redis_broker)
    worker = processes.worker("imap", config, env, concurrency=2)
    scheduler = processes.scheduler(config, env)
    results = Results(tmp_path)

    wait_until(lambda: results.tickets() == MAILBOXES * EMAILS_EACH, 120, "a ticket per email")
    # Several rounds, so that both pool processes have polled mailboxes (the proxy sees
    # TLS only, so the rounds are counted in the worker's log).
    wait_until(
        lambda: worker.output().count(": no new email") >= 3 * MAILBOXES,
        120,
        "three rounds of polls after the mail was read",
    )
    Processes.terminate(scheduler)

    wait_until(lambda: proxy.open_connections() == 0, 60, "no IMAP connection left open")
    assert worker.process.poll() is None, "the worker is still running: it logged out itself"
    assert sorted(results.ticket_summaries().values()) == [1] * (MAILBOXES * EMAILS_EACH)
