"""Real ``halomail worker`` / ``halomail scheduler`` processes, and the mail they share.

:func:`write_setup` makes a folder of Maildir mailboxes full of distinct emails and a
``halomail.toml`` reading them into one SQLite file, acknowledgements written as
``.eml`` files (``[outgoing] transport = "maildir"``), the broker named in ``[scale]``.
:class:`Processes` starts the commands as subprocesses, each in its own process group
(so one SIGKILL reaches a worker and all its pool children), and the ``processes``
fixture stops every one of them when the test ends, however it ends.

:class:`Results` reads what a user would check: the inboxes, the tickets table, the
acknowledgement files and their Message-IDs.
"""

from __future__ import annotations

import contextlib
import email
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from halomail.app import open_repository
from halomail.config.loader import load_config
from halomail.tickets.models import OutboxStatus
from tests.conftest import make_email

if TYPE_CHECKING:  # imported by pytest as a plugin of its own
    from tests.servers.redis import RedisServer

__all__ = [
    "LEASE_WAIT",
    "Processes",
    "Results",
    "assert_exactly_once",
    "halomail_command",
    "postgres_storage",
    "processes",
    "wait_until",
    "write_setup",
]

PASSWORD_ENV = "HALOMAIL_TEST_BROKER_PASSWORD"
# Reading the results needs the storage only, not the broker's password.
_NO_SECRETS = {PASSWORD_ENV: "unused"}

# A SIGKILLed worker keeps its mailbox leases and outbox claims until they expire, so a
# test that kills one waits that long for its mailbox. Short leases keep that wait
# small, but a lease must outlast what its holder does between renewals: a mailbox
# lease is renewed after each email, an outbox claim covers one batch of sends, and a
# lease that expired under a live worker would let a second one in. Each takes well
# under a second here, a few seconds on a loaded machine or while PostgreSQL restarts
# (a connection retry); 10 seconds covers that and keeps the tests quick.
LEASE_SECONDS = 10
#: How long a test waits for a killed worker's leases and claims to expire, at most.
LEASE_WAIT = float(LEASE_SECONDS)


#: The ``[storage]`` of the setups: one SQLite file beside the configuration.
SQLITE_STORAGE = 'url = "sqlite:///tickets.db"'


def postgres_storage(url: str) -> str:
    """The ``[storage]`` of a setup sharing the PostgreSQL database at ``url``."""
    return f'url = "{url}"'


def halomail_command() -> str:
    """The ``halomail`` script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("halomail"))


def write_setup(
    root: Path,
    broker: RedisServer,
    *,
    mailboxes: int,
    emails: int,
    poll_seconds: float = 1,
    outbox_seconds: float = 1,
    storage: str = SQLITE_STORAGE,
) -> Path:
    """Mailboxes ``box00``… holding ``emails`` emails in all, and their ``halomail.toml``.

    Every email has its own sender, Message-ID, subject and body, so each is one new
    ticket and earns one acknowledgement (no throttle, no loop suspicion).

    Returns:
        The configuration file.
    """
    names = [f"box{index:02d}" for index in range(mailboxes)]
    for name in names:
        for folder in ("cur", "new", "tmp"):
            (root / "mail" / name / folder).mkdir(parents=True, exist_ok=True)
    for number in range(emails):
        name = names[number % mailboxes]
        raw = make_email(
            subject=f"Request {number}: the printer in room {number} is jammed",
            sender=f"User {number} <user{number}@customer{number % 7}.example>",
            body=f"Request number {number}: please send someone to room {number}.\n",
            message_id=f"<request-{number}@customer.example>",
        )
        (root / "mail" / name / "new" / f"{number:05d}.request:2,").write_bytes(raw)
    leases = f"mailbox_lease_seconds = {LEASE_SECONDS}\noutbox_claim_seconds = {LEASE_SECONDS}\n"
    tables = [
        f"[storage]\n{storage}\n",
        '[outgoing]\ntransport = "maildir"\npath = "sent"\n'
        'from_address = "support@helpdesk.example"\n',
        f'[processing]\nloop_token = "celery-test-token"\n{leases}',
        f'[scale]\nbroker_url = "{broker.url()}"\nbroker_password_env = "{PASSWORD_ENV}"\n'
        f"poll_interval_seconds = {poll_seconds}\noutbox_interval_seconds = {outbox_seconds}\n"
        "visibility_timeout_seconds = 30\n",
    ]
    tables += [
        f'[[mailboxes]]\nname = "{name}"\nconnection = "maildir"\npath = "mail/{name}"\n'
        'processed = "delete"\nsend_acknowledgement = true\n'
        for name in names
    ]
    config = root / "halomail.toml"
    config.write_text("\n".join(tables))
    return config


def broker_env(broker: RedisServer) -> dict[str, str]:
    """The environment the commands run in: the broker's password in its variable."""
    return {**os.environ, PASSWORD_ENV: broker.password, "PYTHONUNBUFFERED": "1"}


@attrs.define
class Started:
    """One started command: its process (leader of its own group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """What it wrote so far (stdout and stderr together)."""
        return self.log.read_text(errors="replace")


class Processes:
    """The commands a test started; :meth:`stop_all` ends every one of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Started:
        """Start ``argv`` in a process group of its own, its output in ``<name>.log``."""
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        started = Started(name, process, log)
        self.started.append(started)
        return started

    def worker(self, name: str, config: Path, env: dict[str, str], concurrency: int) -> Started:
        """``halomail worker`` with a node name of its own."""
        argv = [halomail_command(), "-c", str(config), "worker", "--concurrency", str(concurrency)]
        return self.start(name, [*argv, "--hostname", f"{name}@%h"], env)

    def scheduler(self, config: Path, env: dict[str, str]) -> Started:
        """``halomail scheduler``."""
        return self.start("scheduler", [halomail_command(), "-c", str(config), "scheduler"], env)

    @staticmethod
    def kill(started: Started) -> None:
        """SIGKILL the command's whole process group: the worker and its pool children."""
        _kill_group(started)
        started.process.wait(30)

    @staticmethod
    def terminate(started: Started, timeout: float = 60) -> int:
        """SIGTERM (a warm shutdown) and wait; SIGKILL the group if it does not end."""
        try:
            started.process.terminate()
            return started.process.wait(timeout)
        except subprocess.TimeoutExpired:
            Processes.kill(started)
            raise
        finally:
            # A pool child left behind by a failed shutdown must not outlive the test.
            _kill_group(started)

    def stop_all(self) -> None:
        """End everything started, however the test ended."""
        for started in self.started:
            if started.process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):  # killed then
                    Processes.terminate(started, timeout=30)
            _kill_group(started)


def _kill_group(started: Started) -> None:
    """SIGKILL whatever is left of the command's process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.process.pid, signal.SIGKILL)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts commands for a test; every one is stopped when it ends (also on failure)."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


class Results:
    """What a user checks after a run in a :func:`write_setup` folder.

    Tickets and the outbox are read through the repository the configuration's
    ``[storage]`` names, so the same checks hold whatever the storage.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def emails_left(self) -> int:
        """Emails still in the inboxes."""
        return sum(
            1
            for folder in (self.root / "mail").glob("*/*")
            if folder.name in ("new", "cur")
            for _ in folder.iterdir()
        )

    @contextlib.contextmanager
    def repository(self) -> Iterator[Any]:
        """The configuration's repository, open until the block ends."""
        repository = open_repository(load_config(self.root / "halomail.toml", env=_NO_SECRETS))
        try:
            yield repository
        finally:
            repository.close()

    def ticket_summaries(self) -> Counter[str]:
        """How many tickets carry each summary."""
        with self.repository() as repository:
            return Counter(t.summary for t in repository.list_tickets(limit=1_000_000))

    def tickets(self) -> int:
        """Tickets made."""
        return sum(self.ticket_summaries().values())

    def unsent(self) -> set[str]:
        """Message-IDs of acknowledgements the outbox has not marked sent."""
        with self.repository() as repository:
            return {
                mail.message_id
                for status in (OutboxStatus.PENDING, OutboxStatus.FAILED)
                for mail in repository.list_outgoing(status=status, limit=1_000_000)
            }

    def all_done(self, emails: int) -> bool:
        """Every inbox empty, every ticket made, every acknowledgement marked sent."""
        return (
            self.emails_left() == 0
            and self.tickets() == emails
            and sum(self.delivered().values()) >= emails
            and not self.unsent()
        )

    def delivered(self) -> Counter[str]:
        """How many ``.eml`` files hold each Message-ID (an acknowledgement's delivery)."""
        folder = self.root / "sent"
        if not folder.exists():
            return Counter()
        ids: Counter[str] = Counter()
        for path in folder.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes())
            ids[str(message["Message-ID"]).strip("<>")] += 1
        return ids


def assert_exactly_once(results: Results, emails: int) -> None:
    """What a user checks: one ticket per email, one delivered file per acknowledgement."""
    assert results.emails_left() == 0
    subjects = results.ticket_summaries()
    assert len(subjects) == emails
    assert set(subjects.values()) == {1}, "an email became two tickets"
    delivered = results.delivered()
    assert len(delivered) == emails, "acknowledgements with distinct Message-IDs"
    doubled = {message_id: n for message_id, n in delivered.items() if n > 1}
    assert doubled == {}, "an acknowledgement was delivered twice"
    assert results.unsent() == set()


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    *watched: Started,
    every: float = 0.2,
) -> None:
    """Wait until ``check()`` is true, asking every ``every`` seconds; fail naming
    ``what`` after ``timeout`` seconds, with the end of each ``watched`` process's output."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            outputs = "".join(f"\n--- {one.name}:\n{one.output()[-3000:]}" for one in watched)
            pytest.fail(f"not within {timeout:.0f} s: {what}{outputs}")
        time.sleep(every)
