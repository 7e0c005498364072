"""A private ``redis-server`` on loopback: the broker of the Celery workers' tests.

One server per test session (the ``redis_server`` fixture), on a free port of
``127.0.0.1``, in its own temporary folder, with a password (``requirepass``) so that the
tests see the broker's password travel from ``broker_password_env`` and never reach a
log. Persistence is on as a production broker must have it: ``appendonly yes`` with
``appendfsync always`` (every queued task is on disk before Redis answers), so the tasks
queued when Redis stops are still there when it starts again. :meth:`RedisServer.stop`
and :meth:`RedisServer.start` let a fault test do exactly that, on the same port and
folder. The ``redis_broker`` fixture empties it for each test.

Ready means a real round-trip: ``AUTH`` then ``PING`` answered ``PONG``.

Run alone to see it work: ``python -m tests.servers.redis``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

__all__ = ["RedisServer", "redis_broker", "redis_server", "start_redis"]

PASSWORD = "broker-pw-7f3a"  # a test fixture, not a secret
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 20.0


class RedisServer:
    """A running private ``redis-server``; made by :func:`start_redis`.

    Attributes:
        host: ``"127.0.0.1"``.
        port: Its port (kept across :meth:`stop` and :meth:`start`).
        password: What ``AUTH`` needs.
        root: Its folder: the configuration, the append-only file, the log.
    """

    def __init__(self, root: Path, port: int, password: str) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.password = password
        self.root = root
        self.log_path = root / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        (root / "redis.conf").write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {port}",
                    f"dir {root}",
                    f"logfile {self.log_path}",
                    f"requirepass {password}",
                    "daemonize no",
                    # The broker keeps what it was given: every write is on disk first.
                    "appendonly yes",
                    "appendfsync always",
                    'save ""',
                    "protected-mode yes",
                ]
            )
            + "\n"
        )

    def url(self, db: int = 0) -> str:
        """The broker URL without its password (halomail takes it from the environment)."""
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self) -> redis.Redis:
        """A client of database 0."""
        return redis.Redis(
            host=self.host, port=self.port, password=self.password, socket_timeout=10
        )

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (again) and wait until it answers ``PING``.

        Raises:
            RuntimeError: It exited or did not answer within the deadline.
        """
        if self.running:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            # CI installs it (scripts/test): a missing binary is a broken setup, never a skip.
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._process = subprocess.Popen(
            [binary, str(self.root / "redis.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self._log_tail()}")
            with contextlib.suppress(redis.RedisError, OSError):
                client = self.client()
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING in time: {self._log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM: it writes its append-only file and exits)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def flush(self) -> None:
        """Empty every database (what one test queued is not the next test's)."""
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def start_redis(password: str = PASSWORD) -> Iterator[RedisServer]:
    """A private Redis for the block, stopped and removed afterwards (also on failure)."""
    root = Path(tempfile.mkdtemp(prefix="halomail-redis-"))
    server = RedisServer(root, _free_port(), password)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's private Redis."""
    with start_redis() as server:
        yield server


@pytest.fixture
def redis_broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, running and empty for this test (a fault test may stop it)."""
    redis_server.start()
    redis_server.flush()
    yield redis_server
    redis_server.start()  # a test that stopped it leaves it running for the next


if __name__ == "__main__":
    with start_redis() as demo:
        print(f"redis-server on {demo.url()} (password {demo.password}) in {demo.root}")
        client = demo.client()
        client.rpush("queue", b"task")
        demo.stop()
        demo.start()
        print("after a restart the queue holds", demo.client().lrange("queue", 0, -1))
        client.close()
