"""Mailbox health in the ledger: a failing mailbox backs off for every processor sharing it.

Two processors share one SQLite file (two repository objects, as two workers would
have) and a clock the test moves by hand. One mailbox refuses the login until the
test repairs it; its error names a URL with a password, which must never be stored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.base import Disposition, FetchedMessage
from halomail.backends.memory import MemoryConnector
from halomail.errors import AuthenticationError
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

SECRET = "S3cr3t-imap-password"
HEALTH_KEY = "mailbox:Support:health"


class Server:
    """The mailbox server both processors' connectors talk to: refuses logins until repaired."""

    def __init__(self) -> None:
        self.broken = True
        self.logins = 0
        self.inbox = MemoryConnector("Support", [make_email()])


class Connector:
    """One processor's connection to :class:`Server`."""

    def __init__(self, server: Server) -> None:
        self.name = "Support"
        self.server = server

    def fetch(self) -> Iterator[FetchedMessage]:
        """Log in (refused while the server is broken), then read its inbox."""
        self.server.logins += 1
        if self.server.broken:
            raise AuthenticationError(
                f"login refused by imaps://support:{SECRET}@mail.example: check the password"
            )
        return self.server.inbox.fetch()

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Dispose through the server's inbox."""
        self.server.inbox.ack(ref, disposition)

    def close(self) -> None:
        """Nothing to close."""


class Clock:
    """A clock the test moves by hand, shared by both processors."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def make(
    tmp_path: Path, settings: ProcessorSettings
) -> Iterator[Callable[[Server, Clock], MailProcessor]]:
    """Make processors on one shared SQLite file; closed afterwards."""
    made: list[MailProcessor] = []

    def build(server: Server, clock: Clock) -> MailProcessor:
        processor = MailProcessor(
            SQLiteTicketRepository(tmp_path / "halomail.db"),
            [Mailbox(Connector(server))],  # type: ignore[arg-type]
            settings,
            clock=clock,
            owns_repository=True,
        )
        made.append(processor)
        return processor

    yield build
    for processor in made:
        processor.close()


def test_a_mailbox_refusing_its_password_backs_off_in_another_processor_too(
    make: Callable[[Server, Clock], MailProcessor],
) -> None:
    """Two failures in A: B, which never read the mailbox, waits as A's backoff says."""
    server, clock = Server(), Clock()
    a, b = make(server, clock), make(server, clock)
    a.run_once()
    clock.now += dt.timedelta(minutes=1)
    a.run_once()
    (a_health,) = a.health()
    assert a_health.consecutive_failures == 2
    assert a_health.next_attempt_at is not None
    assert server.logins == 2

    (report,) = b.run_once().mailboxes

    assert report.skipped
    assert report.error is not None
    assert "2 failures in a row" in report.error
    assert server.logins == 2  # B did not try the server
    (b_health,) = b.health()
    assert b_health.consecutive_failures == 2
    assert b_health.next_attempt_at == a_health.next_attempt_at


def test_a_success_in_one_processor_clears_the_failures_for_the_other(
    make: Callable[[Server, Clock], MailProcessor],
) -> None:
    """B reads the repaired mailbox; A's next failure then counts as the first, not the third."""
    server, clock = Server(), Clock()
    a, b = make(server, clock), make(server, clock)
    a.run_once()
    clock.now += dt.timedelta(minutes=1)
    a.run_once()
    (a_health,) = a.health()
    assert a_health.next_attempt_at is not None
    server.broken = False
    clock.now = a_health.next_attempt_at

    assert [o.outcome for o in b.run_once().outcomes] == [Outcome.CREATED]
    assert b.health()[0].consecutive_failures == 0

    server.broken = True  # broken again: A fails once more
    clock.now += dt.timedelta(seconds=1)
    (report,) = a.run_once().mailboxes
    assert not report.skipped
    (again,) = a.health()
    assert again.consecutive_failures == 1  # B's success cleared the two before
    assert again.next_attempt_at is None  # one failure is retried on the next cycle
    assert again.last_success == a_health.next_attempt_at  # B's success, seen by A


def test_the_stored_health_never_holds_the_password(
    make: Callable[[Server, Clock], MailProcessor],
) -> None:
    """The error kept in the ledger has the URL's password masked; a success writes nothing."""
    server, clock = Server(), Clock()
    processor = make(server, clock)
    processor.run_once()

    stored = processor.repository.get_state(HEALTH_KEY)

    assert stored is not None
    assert SECRET not in stored
    health = json.loads(stored)
    assert health["consecutive_failures"] == 1
    assert "imaps://support:***@mail.example" in health["last_error"]
    server.broken = False
    processor.run_once()
    cleared = processor.repository.get_state(HEALTH_KEY)
    assert cleared is not None
    assert json.loads(cleared)["consecutive_failures"] == 0
    clock.now += dt.timedelta(minutes=1)
    processor.run_once()
    assert processor.repository.get_state(HEALTH_KEY) == cleared  # healthy again: no write
