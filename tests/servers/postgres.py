"""A private PostgreSQL cluster on loopback for the repository tests.

One cluster per test session: ``initdb`` into a fresh ``/tmp/halomail-pg-XXXX``, then
``pg_ctl start`` on a free loopback port with its socket in that directory; stopped and
removed at the end of the session, even when tests fail. The binaries are found with
``pg_config --bindir``, else in ``/usr/lib/postgresql/*/bin`` (Debian keeps them off
PATH).

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
unprivileged ``postgres`` user (the Debian package creates it; ``scripts/test`` does
when it is missing), which owns the directory.

``fsync=off`` (with ``full_page_writes=off``) keeps the tests fast. It is safe here
because it only matters when the machine itself crashes: a COMMIT still writes the WAL
to the OS before it returns, so a PostgreSQL killed or stopped with ``-m immediate``
(what the fault tests do) recovers every committed transaction from the page cache;
and the cluster is thrown away after the session anyway. (``synchronous_commit=off``
would not be safe: it acknowledges commits before writing them, and a crash loses them.)

Logins: the superuser ``halomail`` needs no password (``trust``) over the socket and
loopback; every other user needs its password (``scram-sha-256``), so a test can prove
that a password is really sent. :meth:`PostgresServer.new_database` gives each test a
database of its own.

Run alone to see it work: ``python -m tests.servers.postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

__all__ = ["PostgresServer", "find_bindir", "postgres", "postgres_url", "start_postgres"]

SUPERUSER = "halomail"
# The unprivileged account the server runs as when the tests run as root.
SERVER_USER = "postgres"
_START_TIMEOUT = 60

_HBA = f"""\
local all all trust
host all {SUPERUSER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


def find_bindir() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidates.append(found)
    # Debian: the newest version's binaries, off PATH.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class PostgresServer:
    """A running private cluster and what the tests do with it.

    Attributes:
        root: The directory holding the data, socket and log.
        bindir: Where the PostgreSQL binaries are.
        port: The loopback port it listens on.
    """

    root: Path
    bindir: Path
    port: int
    _run_as: str | None = None
    _counter: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str = "") -> str:
        """A ``postgresql://`` URL of a database here (a password only when given)."""
        login = f"{user}:{password}" if password else user
        return f"postgresql://{login}@127.0.0.1:{self.port}/{dbname}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """A superuser connection in autocommit mode, closed when the block ends."""
        with psycopg.connect(self.url(dbname), autocommit=True) as connection:
            yield connection

    def new_database(self) -> str:
        """Create an empty database of its own for one test; return its URL."""
        name = f"test_{next(self._counter)}"
        with self.admin() as connection:
            # FILE_COPY: a plain copy of the tiny template, faster than logging it.
            connection.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY").format(
                    sql.Identifier(name)
                )
            )
        return self.url(name)

    def create_user(self, name: str, password: str) -> None:
        """A login that must give ``password`` (and may use every database)."""
        with self.admin() as connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )

    def terminate_backends(self, dbname: str) -> int:
        """End every session on ``dbname`` from another connection; how many were ended."""
        with self.admin() as connection:
            row = connection.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        return int(row[0]) if row else 0

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, user=self._run_as
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{self.log_tail()}"
            )

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl(
            "-l", str(self.log_file), "-w", "-t", str(_START_TIMEOUT), "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``mode``: ``smart``, ``fast`` or ``immediate``, a crash)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop the cluster (by default as if it crashed) and start it again."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        """Whether the server process is up."""
        return (self.data / "postmaster.pid").exists()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the cluster (when it runs) and remove its directory."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(
            f"user {SERVER_USER!r} is missing (PostgreSQL refuses to run as root): "
            f"useradd --system --user-group {SERVER_USER}"
        ) from None


def start_postgres() -> PostgresServer:
    """``initdb`` a fresh cluster in a temporary directory and start it on loopback.

    Raises:
        RuntimeError: PostgreSQL is missing or did not start; the message says why.
    """
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    account = _server_account()
    root = Path(tempfile.mkdtemp(prefix="halomail-pg-", dir="/tmp"))
    run_as = None
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = account.pw_name
    try:
        done = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--auth=trust",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=run_as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        (root / "data" / "pg_hba.conf").write_text(_HBA)
        error = ""
        for _attempt in range(3):  # a free port is chosen racily; retry when it is taken
            server = PostgresServer(root=root, bindir=bindir, port=_free_port(), run_as=run_as)
            try:
                server.start()
            except RuntimeError as exc:
                error = str(exc)
                continue
            return server
        raise RuntimeError(f"PostgreSQL did not start: {error}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL; fails (never skips) when it cannot run here."""
    if find_bindir() is None:
        pytest.fail(
            "PostgreSQL is not installed; the PostgreSQL tests need it: "
            "apt-get install postgresql (scripts/test does this as root)",
            pytrace=False,
        )
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty database of this test's own (started if it was stopped)."""
    if not postgres.running():
        postgres.start()
    return postgres.new_database()


if __name__ == "__main__":  # pragma: no cover - a manual check
    running = start_postgres()
    try:
        print(f"PostgreSQL on port {running.port}: {running.new_database()}")
    finally:
        running.close()
