"""`[scale] metrics_port`: `halomail run` and `halomail worker` serve Prometheus metrics.

Real commands as subprocesses, scraped over real HTTP: a long-running `run` counts its
own emails; a worker's pool children count in shared files and the worker serves their
sum.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from halomail.config.loader import load_config
from halomail.errors import ConfigError
from tests.conftest import make_email
from tests.servers.celery_workers import (
    Processes,
    Results,
    broker_env,
    halomail_command,
    wait_until,
    write_setup,
)
from tests.servers.redis import RedisServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape(port: int) -> str:
    """The text of ``/metrics``, or "" while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text
    except (urllib.error.URLError, ConnectionError):
        return ""


def _created(text: str) -> float:
    """``halomail_emails_total{outcome="created"}`` in a scrape (0 when absent)."""
    match = re.search(r'^halomail_emails_total\{outcome="created"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _maildir_setup(root: Path, emails: int, extra: str) -> Path:
    for folder in ("cur", "new", "tmp"):
        (root / "inbox" / folder).mkdir(parents=True)
    config = root / "halomail.toml"
    for number in range(emails):
        raw = make_email(
            subject=f"Printer {number} is jammed",
            sender=f"user{number}@customer.example",
            message_id=f"<metrics-{number}@customer.example>",
        )
        (root / "inbox" / "new" / f"{number}.eml:2,").write_bytes(raw)
    config.write_text(
        '[storage]\nurl = "sqlite:///tickets.db"\n\n'
        '[processing]\nloop_token = "metrics-test-token"\n\n'
        f"{extra}\n"
        '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n'
        'processed = "delete"\n'
    )
    return config


def test_a_long_running_run_serves_the_emails_it_made_tickets_of(tmp_path: Path) -> None:
    """`halomail run` (no --once) with metrics_port: /metrics counts its 3 new tickets."""
    port = _free_port()
    config = _maildir_setup(tmp_path, 3, f"[scale]\nmetrics_port = {port}\n")
    run = subprocess.Popen(
        [halomail_command(), "-c", str(config), "run", "--interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: _created(_scrape(port)) == 3, 60, "3 created emails in /metrics")
        text = _scrape(port)
        assert "halomail_mailbox_passes_total" in text
    finally:
        run.terminate()
        _, stderr = run.communicate(timeout=30)
    assert f"metrics at http://127.0.0.1:{port}/metrics" in stderr.decode()


def test_run_once_serves_nothing(tmp_path: Path) -> None:
    """`halomail run --once` ends before a scrape could come: it opens no metrics port."""
    port = _free_port()
    config = _maildir_setup(tmp_path, 1, f"[scale]\nmetrics_port = {port}\n")
    done = subprocess.run(
        [halomail_command(), "-c", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "metrics at" not in done.stderr


def test_a_worker_serves_the_sum_of_its_pool_processes(
    tmp_path: Path, redis_broker: RedisServer, processes: Processes
) -> None:
    """A worker with two pool processes: its /metrics shows all 24 emails they counted."""
    port = _free_port()
    config = write_setup(tmp_path, redis_broker, mailboxes=4, emails=24)
    text = config.read_text().replace(
        "visibility_timeout_seconds = 30\n",
        f"visibility_timeout_seconds = 30\nmetrics_port = {port}\n",
    )
    config.write_text(text)
    env = broker_env(redis_broker)
    worker = processes.worker("counted", config, env, concurrency=2)
    processes.scheduler(config, env)

    wait_until(lambda: Results(tmp_path).tickets() == 24, 120, "24 tickets")
    wait_until(lambda: _created(_scrape(port)) == 24, 60, "24 created emails in /metrics")
    # The pool processes counted, the worker's main process served: without the shared
    # files it would show 0.
    assert "built the processor of worker process" in worker.output()
    assert Processes.terminate(worker) == 0


def test_the_metrics_address_must_be_an_ip_address(tmp_path: Path) -> None:
    """`metrics_address = "localhost"` is refused, naming the key; an IP address is kept."""
    config = _maildir_setup(
        tmp_path, 0, '[scale]\nmetrics_port = 9464\nmetrics_address = "localhost"\n'
    )
    with pytest.raises(ConfigError, match=r"scale\.metrics_address"):
        load_config(config)
    every_interface = "0.0.0.0"  # noqa: S104 - what an operator writes to be scraped
    config = _maildir_setup(
        tmp_path / "two",
        0,
        f'[scale]\nmetrics_port = 9464\nmetrics_address = "{every_interface}"\n',
    )
    scale = load_config(config).scale
    assert scale is not None
    assert scale.metrics_address == every_interface


def test_the_metrics_default_to_loopback(tmp_path: Path) -> None:
    """Without metrics_address, metrics are served on 127.0.0.1 only."""
    config = _maildir_setup(tmp_path, 0, "[scale]\nmetrics_port = 9464\n")
    scale = load_config(config).scale
    assert scale is not None
    assert scale.metrics_address == "127.0.0.1"
