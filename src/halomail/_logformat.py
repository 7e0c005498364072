"""The ``halomail`` command's log lines: text for people, JSON for log shippers.

``--log-format json`` writes one JSON object per line, with ``time``, ``level``,
``logger`` and ``message``, and the structured fields a record carries (the per-email
line's ``mailbox``, ``source_id``, ``outcome``, ``reason``, ``rule``, ``seconds``...).
The record has passed :class:`~halomail.RedactingFilter` first, and every structured
string is redacted here too: a URL's password never reaches the shipper.

The lines are written by a thread of their own (:class:`BackgroundHandler`): processing
logs inside its transactions, and a stderr that nobody reads (a full pipe, a stalled log
collector) must never stop it while it holds the database's write lock.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import queue
import sys
import threading
import time
import weakref
from typing import TextIO

from halomail._text import RedactingFilter, redact_secrets

__all__ = ["LOG_FORMATS", "BackgroundHandler", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every attribute a plain LogRecord has: what is left on a record is what `extra=` gave.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON (a traceback goes in ``exc_info``)."""
        data: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = _structured(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = redact_secrets(record.exc_text)
        return json.dumps(data)


def _structured(value: object) -> object:
    """A field as JSON can hold it: numbers, booleans and None as they are, text redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_secrets(str(value))


class BackgroundHandler(logging.Handler):
    """Writes each record to ``stream`` from a thread of its own.

    The caller never waits on the output: a record is filtered, its message and
    traceback are made text (as they are at that moment), it is queued, and the call
    returns; the thread formats and writes it. When the output is blocked (a pipe
    nobody reads) and ``capacity`` records are waiting, the next ones are dropped and
    counted, and a warning saying how many is written before the next record that gets
    through. The process's own stderr or stdout is written with ``os.write``, holding
    no lock that the interpreter's exit or another thread would wait for.

    :meth:`flush`, which :func:`logging.shutdown` calls at exit, waits up to
    ``flush_timeout`` seconds for the queue to be written: a blocked output delays the
    exit by that much at most, and the records still queued are lost. A process forked
    after the first record starts a thread (and a queue) of its own.

    Args:
        stream: Where the lines go (``sys.stderr``).
        capacity: How many records may wait.
        flush_timeout: How long :meth:`flush` waits for the queue, in seconds.
    """

    def __init__(
        self, stream: TextIO, *, capacity: int = 10_000, flush_timeout: float = 5.0
    ) -> None:
        super().__init__()
        self.stream = stream
        self._capacity = capacity
        self._flush_timeout = flush_timeout
        self._queue: queue.Queue[logging.LogRecord] = queue.Queue(capacity)
        self._dropped = 0
        self._counting = threading.Lock()
        self._pid = -1  # no thread yet
        self._fd = _own_descriptor(stream)
        self._broken = False
        _HANDLERS.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for the writing thread; never blocks (see the class)."""
        if self._pid != os.getpid():
            self._start()
        try:
            self._queue.put_nowait(_prepared(record))
        except queue.Full:
            with self._counting:
                self._dropped += 1

    def flush(self) -> None:
        """Wait (up to ``flush_timeout``) until every queued record is written."""
        if self._pid != os.getpid():
            return
        deadline = time.monotonic() + self._flush_timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._queue.unfinished_tasks and self._fd is None:
            self.stream.flush()

    def _start(self) -> None:
        """Start the writing thread of this process (a fork has none of its parent's;
        :meth:`_forked` gave the child its own queue)."""
        with self._counting:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="halomail-log", daemon=True).start()

    def _forked(self) -> None:
        """In a child just forked: a lock or queue the parent's threads held at the fork
        would stay held for ever, so the child gets its own, and its own thread later."""
        self._counting = threading.Lock()
        self._queue = queue.Queue(self._capacity)
        self._dropped = 0
        self._pid = -1

    def _run(self) -> None:
        """The writing thread: each record in turn, after the count of any dropped."""
        while True:
            record = self._queue.get()
            try:
                with self._counting:
                    dropped, self._dropped = self._dropped, 0
                if dropped:
                    self._write(_dropped_record(dropped))
                self._write(record)
            finally:
                self._queue.task_done()

    def _write(self, record: logging.LogRecord) -> None:
        if self._broken:
            return
        text = self.format(record) + "\n"
        try:
            if self._fd is None:
                self.stream.write(text)
                self.stream.flush()
                return
            data = text.encode(
                getattr(self.stream, "encoding", None) or "utf-8", "backslashreplace"
            )
            while data:
                data = data[os.write(self._fd, data) :]
        except (OSError, ValueError):  # the reader is gone, or the stream closed
            self._broken = True


_HANDLERS: weakref.WeakSet[BackgroundHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_HANDLERS):
        handler._forked()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _own_descriptor(stream: TextIO) -> int | None:
    """The file descriptor of ``stream`` when it is the process's own stderr or stdout."""
    if stream is not sys.__stderr__ and stream is not sys.__stdout__:
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return None


_TRACEBACKS = logging.Formatter()


def _prepared(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` holding its text, not its arguments and traceback."""
    prepared = copy.copy(record)
    prepared.msg = record.getMessage()
    prepared.args = None
    if record.exc_info:
        prepared.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
        prepared.exc_info = None
    return prepared


def _dropped_record(count: int) -> logging.LogRecord:
    """The warning that ``count`` records were dropped while the output was blocked."""
    return logging.LogRecord(
        "halomail",
        logging.WARNING,
        __file__,
        0,
        f"{count} log record(s) dropped: the log output was blocked and its queue full",
        None,
        None,
    )


def configure_logging(verbose: int, log_format: str = "text") -> None:
    """Warnings to stderr (``-v`` info, ``-vv`` debug), every line redacted, written by a
    thread of their own (:class:`BackgroundHandler`).

    Args:
        verbose: How many ``-v`` were given.
        log_format: ``text`` (cleaned of terminal controls) or ``json`` (one object a line).
    """
    handler = BackgroundHandler(sys.stderr)
    # A log line can quote a server's reply or an email's Message-ID: both are cleaned
    # of terminal controls (JSON escapes them), and every URL's secrets are masked,
    # whatever logger wrote it.
    handler.addFilter(RedactingFilter(terminal=log_format == "text"))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        handlers=[handler],
    )
