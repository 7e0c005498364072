"""The ``halomail`` command's log lines never hold up processing.

Processing logs inside its transactions. A log handler that writes to stderr in the
calling thread stops there when stderr is a pipe nobody reads (a stalled log collector,
a supervisor that stopped draining): the runner waits for ever, holding SQLite's write
lock, and every other runner of the repository is "busy". The command's handler
(:class:`halomail._logformat.BackgroundHandler`) writes from a thread of its own, drops
(and counts) what its queue cannot hold, and waits at exit only a bounded time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from halomail._logformat import BackgroundHandler
from tests.conftest import make_email

#: The command, run by the interpreter running the tests (its script may not be on PATH).
HALOMAIL = (sys.executable, "-m", "halomail.cli")
#: Enough emails that their -vv log lines overflow a pipe's buffer (64 KiB) many times.
EMAILS = 600


def test_a_run_whose_stderr_nobody_reads_processes_every_email_and_exits(
    tmp_path: Path,
) -> None:
    """``halomail -vv run --once`` with its stderr a pipe that is never read: every email
    becomes a ticket and the command exits 0 (it used to stop at the first full pipe,
    about 250 emails in, and never exit)."""
    subprocess.run([*HALOMAIL, "quickstart", "desk"], cwd=tmp_path, check=True, capture_output=True)
    desk = tmp_path / "desk"
    for n in range(EMAILS):
        raw = make_email(subject=f"Scanner jam {n}", message_id=f"<printer-{n}@customer.example>")
        (desk / "inbox" / "new" / f"printer-{n}.eml").write_bytes(raw)
    process = subprocess.Popen(
        [*HALOMAIL, "-vv", "run", "--once"],
        cwd=desk,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        returncode = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("halomail run stopped on its unread stderr")
    finally:
        assert process.stderr is not None
        written = process.stderr.read()
        process.stderr.close()
    assert returncode == 0
    assert b"created ticket=" in written  # the lines that fitted in the pipe were written
    with contextlib.closing(sqlite3.connect(desk / "halomail.db")) as connection:
        (subjects,) = connection.execute(
            "SELECT COUNT(*) FROM tickets WHERE summary LIKE 'Scanner jam %'"
        ).fetchone()
    assert subjects == EMAILS
    assert not list((desk / "inbox" / "new").iterdir())


class _Gate(io.StringIO):
    """A stream whose writes wait until the gate is opened, as a full pipe's do."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = threading.Event()

    def write(self, text: str) -> int:
        """Wait for the gate, then keep ``text``."""
        self.opened.wait()
        return super().write(text)


def _handler(stream: io.StringIO, **options: float) -> tuple[logging.Logger, BackgroundHandler]:
    """A logger of its own writing through a BackgroundHandler to ``stream``."""
    handler = BackgroundHandler(stream, **options)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-background-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def _in_a_thread(work: object) -> bool:
    """Run ``work`` in a thread; True when it returned within a minute (never timed,
    only bounded: a call that blocks on the output would not return at all)."""
    thread = threading.Thread(target=work, daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(60)
    return not thread.is_alive()


def test_records_are_written_in_order_with_their_values_as_they_were() -> None:
    """Each record is formatted by the handler's formatter, in order, with its arguments
    read when it was logged, and its traceback."""
    stream = io.StringIO()
    logger, handler = _handler(stream)
    names = ["first"]
    logger.info("mailbox %s", names)
    names.append("changed later")
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("could not %s", "go on")
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "INFO mailbox ['first']"
    assert lines[1] == "ERROR could not go on"
    assert "ValueError: broken" in stream.getvalue()


def test_a_blocked_output_drops_what_the_queue_cannot_hold_and_says_how_many() -> None:
    """With the output blocked, logging never waits: the first ``capacity`` records wait,
    the rest are counted, and once the output flows a warning gives the count."""
    stream = _Gate()
    logger, handler = _handler(stream, capacity=10)

    def log_many() -> None:
        for n in range(25):
            logger.info("email %d", n)

    assert _in_a_thread(log_many)
    stream.opened.set()
    handler.flush()
    lines = stream.getvalue().splitlines()
    written = [line for line in lines if line.startswith("INFO email")]
    # The writer may hold one record while it waits at the gate, so 10 or 11 get through.
    assert len(written) in (10, 11)
    assert written == [f"INFO email {n}" for n in range(len(written))]
    assert f"WARNING {25 - len(written)} log record(s) dropped" in stream.getvalue()


def test_flush_waits_only_so_long_for_a_blocked_output() -> None:
    """:meth:`flush` (what ``logging.shutdown`` calls at exit) returns after its timeout
    when the output stays blocked, and writes everything when it is not."""
    stream = _Gate()
    logger, handler = _handler(stream, flush_timeout=0.2)
    logger.info("stuck")
    assert _in_a_thread(handler.flush)
    assert stream.getvalue() == ""
    stream.opened.set()
    handler.flush()
    assert stream.getvalue() == "INFO stuck\n"


def _exit_code_within_a_minute(pid: int) -> int | None:
    """The exit code of child ``pid``, or ``None`` (the child killed) if it hangs."""
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_writes_through_a_thread_of_its_own(tmp_path: Path) -> None:
    """A process forked after the first record (a worker pool) has no writing thread of
    its parent's, and may be forked while that thread holds the handler's lock: its
    records are written all the same, and it never waits on a lock nobody will free."""
    path = tmp_path / "log.txt"
    with path.open("w", encoding="utf-8") as stream:
        logger, handler = _handler(stream)  # type: ignore[arg-type]
        logger.info("parent")
        handler.flush()
        with handler._counting:  # as the writing thread holds it, now and then
            pid = os.fork()
            if pid == 0:  # the child: log, flush, and leave without the parent's code
                logger.info("child")
                handler.flush()
                os._exit(0)
        assert _exit_code_within_a_minute(pid) == 0
    assert path.read_text(encoding="utf-8").splitlines() == ["INFO parent", "INFO child"]
