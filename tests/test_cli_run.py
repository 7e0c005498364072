"""`halomail run` as an operator watches it: progress, logs, exit status, SIGTERM (#17)."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from tests.conftest import make_email, spamassassin

HALOMAIL = (sys.executable, "-m", "halomail.cli")

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Deleted Items"
send_acknowledgement = true
"""

_END = re.compile("(?!)")  # matches nothing: _wait_for reads to the end of the stream
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \d+ emails: ")


def _setup(root: Path, emails: list[Path] | None = None, *, config: str = CONFIG) -> Path:
    """A halomail.toml and a Maildir inbox holding ``emails``, in their order."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "halomail.toml").write_text(config)
    for sub in ("cur", "new", "tmp"):
        (root / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(emails or []):
        target = root / "inbox" / "new" / source.name
        shutil.copyfile(source, target)
        os.utime(target, (1_700_000_000 + index, 1_700_000_000 + index))
    return root / "halomail.toml"


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HALOMAIL, "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _inbox(root: Path) -> set[str]:
    return {p.name for sub in ("new", "cur") for p in (root / "inbox" / sub).iterdir()}


class _Child:
    """A ``halomail`` child process whose pipes are read on threads as lines arrive."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*HALOMAIL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._readers: list[threading.Thread] = []

    def stdout(self) -> queue.Queue[str | None]:
        """Lines of its standard output as they come (``None`` at the end)."""
        assert self.process.stdout is not None
        return self._lines(self.process.stdout)

    def stderr(self) -> queue.Queue[str | None]:
        """Lines of its standard error as they come (``None`` at the end)."""
        assert self.process.stderr is not None
        return self._lines(self.process.stderr)

    def _lines(self, stream: TextIO) -> queue.Queue[str | None]:
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self._readers.append(reader)
        return lines

    def close(self) -> None:
        """Kill the child if it still runs, then let the readers end and close the pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=60)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def child() -> Iterator[Callable[..., _Child]]:
    """Starts ``halomail`` children; each is stopped and its pipes closed at the end."""
    children: list[_Child] = []

    def start(*args: str) -> _Child:
        children.append(_Child(*args))
        return children[-1]

    yield start
    for each in children:
        each.close()


def _wait_for(lines: queue.Queue[str | None], wanted: re.Pattern[str], count: int) -> list[str]:
    """Every line up to the ``count``-th matching ``wanted``; with ``_END``, every line up to
    the end of the stream (a generous deadline either way)."""
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while wanted is _END or sum(1 for line in seen if wanted.search(line)) < count:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None and wanted is _END:
            break
        assert line is not None, "".join(seen)[-3000:]
        seen.append(line)
    return seen


def test_on_a_terminal_the_progress_line_shows_the_total_rate_and_time_left(
    tmp_path: Path,
) -> None:
    """With stderr a pseudo-terminal, the live line reads `N/40 emails, R/s, about T left`."""
    config = _setup(tmp_path)
    for i in range(40):
        raw = make_email(subject=f"n{i}", message_id=f"<n{i}@c.example>")
        (tmp_path / "inbox" / "new" / f"{i}.a").write_bytes(raw)
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [*HALOMAIL, "-c", str(config), "run", "--once"],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    assert re.search(rb"Support: \d+/40 emails, [\d.]+/s, about \S+ left", seen), seen
    assert b"/40 emails" not in result.stdout


def test_without_a_terminal_progress_and_every_email_are_in_the_log(tmp_path: Path) -> None:
    """250 corpus emails, stderr piped: `progress: N/250` records and one INFO line per email."""
    emails = spamassassin(250)
    config = _setup(tmp_path, emails)
    result = _run(config, "-v", "run", "--once")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"INFO halomail\.run: progress: \d+/250 emails, [\d.]+/s", result.stderr)
    per_email = re.findall(
        r"INFO halomail\.runner: mailbox Support source (\S+): (\w+) ticket=\S+ reason=\S+ "
        r"rule=\S+ in [\d.]+s",
        result.stderr,
    )
    assert len(per_email) == 250
    assert {source for source, _ in per_email} == {p.name for p in emails}
    assert "\r" not in result.stderr  # no live line drawn into a log
    assert "is unrelated to ticket" not in re.sub(r".*INFO.*\n", "", result.stderr)


def test_log_format_json_gives_one_object_per_line_with_the_email_fields(tmp_path: Path) -> None:
    """`--log-format json`: every stderr line is a JSON object; each email's has its fields."""
    config = _setup(tmp_path, spamassassin(30))
    result = _run(config, "-v", "run", "--once", "--log-format", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stderr.splitlines()]
    emails = [r for r in records if "source_id" in r]
    assert len(emails) == 30
    for record in emails:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert (record["level"], record["logger"], record["mailbox"]) == (
            "INFO",
            "halomail.runner",
            "Support",
        )
        assert record["outcome"] in {"created", "updated", "ignored", "skipped", "quarantined"}
        assert isinstance(record["seconds"], float)
        assert {"reason", "rule", "ticket_id", "message_id"} <= record.keys()


def test_json_output_gives_every_line_an_event(tmp_path: Path) -> None:
    """`run --json`: email lines, then mailbox, sent and summary, each with its "event"."""
    config = _setup(tmp_path, spamassassin(12))
    result = _run(config, "run", "--once", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    events = [o["event"] for o in objects]
    assert events == ["email"] * 12 + ["mailbox", "sent", "summary"]
    summary = objects[-1]
    assert summary["emails"] == 12
    assert sum(summary["outcomes"].values()) == 12
    assert (summary["failed_mailboxes"], summary["stopped_by"]) == ([], None)
    assert objects[-2]["sent"] == len(list((tmp_path / "outbox").rglob("*.eml")))


def test_a_failed_mailbox_says_it_failed_and_fail_on_decides_the_exit_status(
    tmp_path: Path,
) -> None:
    """A broken Maildir: the summary names the failure, not "no new email"; exit 1 (0: never)."""
    config = _setup(tmp_path)
    (tmp_path / "inbox" / "cur").rmdir()  # no longer a Maildir: reading it fails
    failed = _run(config, "run", "--once")
    assert failed.returncode == 1
    assert "no new email" not in failed.stdout
    assert failed.stdout.startswith("0 emails: no email read;")
    assert "  mailbox Support failed: ConnectorError" in failed.stdout
    assert "halomail: mailbox Support failed: ConnectorError" in failed.stderr
    assert _run(config, "run", "--once", "--fail-on", "never").returncode == 0


def test_a_quarantined_email_fails_the_run_only_with_fail_on_quarantine(tmp_path: Path) -> None:
    """A quarantined email: exit 0 by default (cron stays quiet), 1 with --fail-on quarantine."""
    config = _setup(tmp_path)
    bad = make_email(sender="undisclosed-recipients:;")
    (tmp_path / "inbox" / "new" / "1.a").write_bytes(bad)
    default = _run(config, "run", "--once")
    assert default.returncode == 0, default.stderr
    assert "1 emails: 1 quarantined" in default.stdout
    (tmp_path / "inbox" / "new" / "2.a").write_bytes(bad.replace(b"Subject:", b"Subject: again"))
    strict = _run(config, "run", "--once", "--fail-on", "quarantine")
    assert strict.returncode == 1, strict.stderr
    assert "1 emails: 1 quarantined" in strict.stdout


def test_the_long_running_mode_stamps_each_cycle_and_stops_on_sigterm_while_waiting(
    tmp_path: Path, child: Callable[..., _Child]
) -> None:
    """Each cycle's line starts with its time; SIGTERM between cycles exits 0 with a message."""
    config = _setup(tmp_path, spamassassin(3))
    running = child("-c", str(config), "run", "--interval", "1")
    errors = running.stderr()
    cycles = _wait_for(running.stdout(), STAMPED, 2)
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=120) == 0
    stamped = [line for line in cycles if STAMPED.search(line)]
    assert re.search(r" 3 emails: ", stamped[0])
    assert re.search(r" 0 emails: no new email;", stamped[1])
    assert any("halomail: stopped on SIGTERM" in line for line in _wait_for(errors, _END, 0))


def test_sigterm_mid_run_finishes_the_batch_in_hand_and_loses_or_doubles_none(
    tmp_path: Path, child: Callable[..., _Child]
) -> None:
    """SIGTERM after 40 of 300 emails: the batch in hand is committed, disposed of and
    reported, exit 0; resumed, it ends as one uninterrupted run."""
    emails = spamassassin(300)
    reference = _run(_setup(tmp_path / "reference", emails), "run", "--once", "--json")
    expected = {
        o["source_id"]: o["outcome"]
        for o in map(json.loads, reference.stdout.splitlines())
        if o["event"] == "email"
    }
    assert len(expected) == 300

    config = _setup(tmp_path / "stopped", emails)
    running = child("-c", str(config), "-v", "--log-format", "json", "run", "--once", "--json")
    output = running.stdout()
    _wait_for(running.stderr(), re.compile(r'"source_id"'), 40)
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=120) == 0
    out = "".join(_wait_for(output, _END, 0))
    first = [json.loads(line) for line in out.splitlines()]
    assert first[-1]["event"] == "summary"
    assert first[-1]["stopped_by"] == "SIGTERM"
    done = {o["source_id"]: o["outcome"] for o in first if o["event"] == "email"}
    assert 40 <= len(done) < 300
    # What was not finished is untouched, still in the inbox; what was is gone from it.
    assert _inbox(tmp_path / "stopped") == {p.name for p in emails} - done.keys()

    second = _run(config, "run", "--once", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    rest = {
        o["source_id"]: o["outcome"]
        for o in map(json.loads, second.stdout.splitlines())
        if o["event"] == "email"
    }
    assert not done.keys() & rest.keys()
    assert {**done, **rest} == expected
    assert _inbox(tmp_path / "stopped") == set()
