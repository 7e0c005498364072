"""One writer: mailboxes are read in threads, but a host repository is entered by one at a time.

The host repositories here are written the obvious way a host would (no locks of
their own); each test runs the real composition root over real Maildirs.
"""

from __future__ import annotations

import mailbox as stdlib_mailbox
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from halomail import Outcome, load_config
from halomail.app import build_processor
from halomail.errors import TransientRepositoryError
from halomail.runner import RunReport
from halomail.tickets.memory import InMemoryTicketRepository
from tests.conftest import make_email


class ThreadRecordingHost:
    """A host repository over memory that records how many threads are inside it at once.

    Every method call, and every open transaction, counts its thread as inside; a
    tiny sleep in each call widens the window in which a second thread could enter.

    Args:
        thread_safe: What the host declares (``True`` opts out of the one-writer lock).
        refuse_company: Fail, as a lock-free database connection would, when a second
            thread enters while one is inside.
    """

    def __init__(self, *, thread_safe: bool = False, refuse_company: bool = False) -> None:
        self.thread_safe = thread_safe
        self._inner = InMemoryTicketRepository()
        self._refuse_company = refuse_company
        self._guard = threading.Lock()  # guards the counters only, never the calls
        self._inside: dict[int, int] = {}  # thread id → nesting depth
        self.most_threads_inside = 0
        self.threads_seen: set[int] = set()

    @contextmanager
    def _entered(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._guard:
            others = [t for t in self._inside if t != me]
            self._inside[me] = self._inside.get(me, 0) + 1
            self.most_threads_inside = max(self.most_threads_inside, len(self._inside))
            self.threads_seen.add(me)
        try:
            if others and self._refuse_company:
                raise TransientRepositoryError("database is locked: another thread is inside")
            time.sleep(0.0005)
            yield
        finally:
            with self._guard:
                self._inside[me] -= 1
                if not self._inside[me]:
                    del self._inside[me]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The inner repository's transaction, counted as being inside for its whole span."""
        with self._entered(), self._inner.transaction():
            yield

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._entered():
                return attribute(*args, **kwargs)

        return counted


def sixteen_maildirs(tmp_path: Path, emails_per_mailbox: int) -> Path:
    """A ``halomail.toml`` with 16 Maildir mailboxes read 16 at a time, each holding mail."""
    config = ['[processing]\nconcurrent_mailboxes = 16\nloop_token = "writer-test-token"\n']
    for box in range(16):
        inbox = stdlib_mailbox.Maildir(tmp_path / f"box{box}", create=True)
        for index in range(emails_per_mailbox):
            inbox.add(
                make_email(
                    subject=f"Box {box} problem {index}",
                    sender=f"User {box} <user{box}-{index}@customer.example>",
                    message_id=f"<b{box}-m{index}@customer.example>",
                )
            )
        config.append(
            textwrap.dedent(
                f"""
                [[mailboxes]]
                name = "Box {box}"
                connection = "maildir"
                path = "box{box}"
                send_acknowledgement = false
                """
            )
        )
    path = tmp_path / "halomail.toml"
    path.write_text("".join(config))
    return path


def run(config: Path, host: ThreadRecordingHost) -> RunReport:
    """One cycle of the processor ``build_processor`` makes for ``config`` on ``host``."""
    processor = build_processor(load_config(config), repository=host)  # type: ignore[arg-type]
    with processor:
        return processor.run_once()


def left_in_new(tmp_path: Path) -> int:
    """How many emails are still waiting in the 16 Maildirs."""
    return sum(len(list((tmp_path / f"box{box}" / "new").iterdir())) for box in range(16))


def test_sixteen_mailboxes_make_every_email_a_ticket_with_one_thread_inside_the_host(
    tmp_path: Path,
) -> None:
    """16 Maildirs read 16 at a time: 48 tickets, and the host never has two threads inside."""
    config = sixteen_maildirs(tmp_path, emails_per_mailbox=3)
    host = ThreadRecordingHost()
    report = run(config, host)
    assert [m.error for m in report.mailboxes] == [None] * 16
    assert sorted({o.outcome for o in report.outcomes}) == [Outcome.CREATED]
    assert len(report.outcomes) == 48
    assert len(host.list_tickets(limit=100)) == 48
    assert host.most_threads_inside == 1
    assert len(host.threads_seen) > 1  # the mailboxes were read in threads all the same
    assert left_in_new(tmp_path) == 0


def test_a_host_that_declares_itself_thread_safe_is_entered_by_several_threads(
    tmp_path: Path,
) -> None:
    """The same run with ``thread_safe = True`` sees more than one thread inside the host."""
    config = sixteen_maildirs(tmp_path, emails_per_mailbox=3)
    host = ThreadRecordingHost(thread_safe=True)
    report = run(config, host)
    assert len(host.list_tickets(limit=100)) == 48
    assert sorted({o.outcome for o in report.outcomes}) == [Outcome.CREATED]
    assert host.most_threads_inside > 1


def test_a_lock_free_host_with_forty_emails_leaves_none_for_retry_and_quarantines_none(
    tmp_path: Path,
) -> None:
    """A host that fails when two threads enter at once still gets all 40 emails as tickets."""
    config = sixteen_maildirs(tmp_path, emails_per_mailbox=3)
    # 40 emails: take 8 back out of the first mailboxes.
    for box in range(8):
        inbox = stdlib_mailbox.Maildir(tmp_path / f"box{box}", create=False)
        inbox.remove(next(iter(inbox.keys())))
    host = ThreadRecordingHost(refuse_company=True)
    report = run(config, host)
    outcomes = [o.outcome for o in report.outcomes]
    assert len(outcomes) == 40
    assert outcomes.count(Outcome.RETRY) == 0
    assert outcomes.count(Outcome.QUARANTINED) == 0
    assert len(host.list_tickets(limit=100)) == 40
    assert host.list_quarantine() == []
    assert left_in_new(tmp_path) == 0


@pytest.mark.parametrize("declared", [False, True])
def test_the_outbox_takes_its_turn_as_the_one_writer(tmp_path: Path, declared: bool) -> None:
    """Acknowledgements sent while 16 mailboxes are read: one thread inside unless declared."""
    config = sixteen_maildirs(tmp_path, emails_per_mailbox=2)
    text = config.read_text().replace("send_acknowledgement = false", "send_acknowledgement = true")
    outgoing = tmp_path / "outgoing"
    config.write_text(
        text
        + f'\n[outgoing]\ntransport = "maildir"\npath = "{outgoing}"\n'
        + 'from_address = "support@helpdesk.example"\n'
    )
    host = ThreadRecordingHost(thread_safe=declared)
    processor = build_processor(load_config(config), repository=host)  # type: ignore[arg-type]
    sent: Callable[[], int] = lambda: len(list(outgoing.rglob("*.eml")))  # noqa: E731
    with processor:
        report = processor.run_once()
        # A host's own call while the daemon runs: the same lock, nothing sent twice.
        again = processor.send_outbox()
    assert len(report.outcomes) == 32
    assert report.sent.sent == 32
    assert again.sent == 0
    assert sent() == 32
    assert (host.most_threads_inside == 1) is not declared
