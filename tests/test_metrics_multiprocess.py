"""Many processes, one set of numbers: prometheus_client's multiprocess mode (#14).

Celery's prefork pool runs halomail in forked children while the parent serves the
metrics. The script below does the same with real parts: a parent that calls
``prepare_multiprocess`` and forks two children, each processing its own Maildir into
one shared SQLite database with a real ``MailProcessor``; after they exit, the parent
serves ``/metrics`` and the test scrapes it over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_email

PARENT = """\
import multiprocessing
import sys

from halomail.metrics import mark_process_dead, prepare_multiprocess, start_metrics_server


def child(config):
    from halomail import build_processor, load_config
    from halomail.metrics import observe

    with build_processor(load_config(config)) as processor:
        observe(processor)
        report = processor.run_once()
    if not report.ok:
        raise SystemExit(f"{config}: {report}")


if __name__ == "__main__":
    prepare_multiprocess(sys.argv[1])
    fork = multiprocessing.get_context("fork")  # as Celery's prefork pool does
    children = [fork.Process(target=child, args=(config,)) for config in sys.argv[2:]]
    for process in children:
        process.start()
    for process in children:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"child {process.pid} exited with {process.exitcode}")
        mark_process_dead(process.pid)
    server = start_metrics_server(0)
    print(server.port, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    server.close()
"""

CONFIG = """\
[storage]
url = "sqlite:///{database}"

[[mailboxes]]
name = "{name}"
connection = "maildir"
path = "inbox"
"""


def _child_config(tmp_path: Path, name: str, emails: int) -> Path:
    """A configuration of its own (one Maildir of ``emails``), on the shared database."""
    folder = tmp_path / name
    for sub in ("cur", "new", "tmp"):
        (folder / "inbox" / sub).mkdir(parents=True)
    for n in range(emails):
        raw = make_email(subject=f"{name} problem {n}", message_id=f"<{name}-{n}@customer.example>")
        (folder / "inbox" / "new" / f"{n}.eml").write_bytes(raw)
    config = folder / "halomail.toml"
    config.write_text(CONFIG.format(database=tmp_path / "shared.db", name=name))
    return config


def test_two_forked_processes_counting_are_served_as_their_sum(tmp_path: Path) -> None:
    """Two forked children process 3 and 5 emails; the parent's /metrics shows 8, 2 passes."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    configs = [_child_config(tmp_path, "Support", 3), _child_config(tmp_path, "Sales", 5)]
    metrics_dir = tmp_path / "metrics"
    parent = subprocess.Popen(
        [sys.executable, str(script), str(metrics_dir), *map(str, configs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        port = parent.stdout.readline().strip()  # empty: the parent failed (stderr says why)
        text = _scrape(f"http://127.0.0.1:{port}/metrics") if port else ""
    finally:
        try:
            _, err = parent.communicate(input="", timeout=60)  # closing stdin stops it
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
    assert parent.returncode == 0, err
    assert port, err

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("halomail_emails_total", (("outcome", "created"),))] == 8
    assert samples[("halomail_mailbox_passes_total", ())] == 2
    # Both children measured the shared outbox; the latest measurement saw every
    # acknowledgement (no transport: all 8 wait).
    assert samples[("halomail_outbox_backlog", ())] == 8
    # The children counted in files of the directory prepare_multiprocess set, one per child.
    counter_files = sorted(p.name for p in metrics_dir.glob("counter_*.db"))
    assert len(counter_files) == 2, counter_files


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.read().decode()


def test_preparing_after_prometheus_client_was_imported_is_refused(tmp_path: Path) -> None:
    """prepare_multiprocess refuses once prometheus_client counts in memory: children would too."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, prometheus_client\n"
            "from halomail.metrics import prepare_multiprocess\n"
            "prepare_multiprocess(sys.argv[1])",
            str(tmp_path / "metrics"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "RuntimeError: prepare_multiprocess() must run before prometheus_client" in done.stderr
    assert not (tmp_path / "metrics").exists()


def test_preparing_empties_the_files_of_an_earlier_run(tmp_path: Path) -> None:
    """An earlier run's counter files are removed, so their numbers are not counted again."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale")
    (directory / "README").write_text("not ours: kept")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from halomail.metrics import prepare_multiprocess\n"
            "print(prepare_multiprocess(sys.argv[1]), os.environ['PROMETHEUS_MULTIPROC_DIR'])",
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(directory), str(directory)]
    assert sorted(p.name for p in directory.iterdir()) == ["README"]
