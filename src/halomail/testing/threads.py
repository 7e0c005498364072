"""Threads: the calls halomail makes from threads other than the repository's own.

By default halomail never calls a repository from two threads at once, but it may
call it from a thread other than the one that created it (the runner's committer
thread). A repository that sets ``thread_safe = True`` is also called from several
threads at once; for it, the concurrent cases here really run concurrently.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from halomail.errors import DuplicateKeyError
from halomail.testing._base import CompleteRepository, ContractBase
from halomail.testing._constants import HOUR
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    OutboxMail,
    OutboxStatus,
    utcnow,
)

__all__ = ["ThreadingContract"]

_T = TypeVar("_T")

_THREADS = 8
_KEYS = 24


def _turns(repository: CompleteRepository) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """How the threads enter the repository: all at once when it declares itself
    thread-safe, else one at a time behind a lock the caller owns, as halomail does."""
    if getattr(repository, "thread_safe", False):
        return contextlib.nullcontext
    lock = threading.Lock()

    @contextlib.contextmanager
    def one_at_a_time() -> Iterator[None]:
        with lock:
            yield

    return one_at_a_time


def _on_threads(count: int, work: Callable[[int], _T]) -> list[_T]:
    """Run ``work(index)`` on ``count`` threads started together; return the results."""
    start = threading.Barrier(count)

    def run(index: int) -> _T:
        start.wait()
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


class ThreadingContract(ContractBase):
    """The threading model: another thread one call at a time, and ``thread_safe = True``.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_a_repository_made_on_one_thread_works_from_another(
        self, repository: CompleteRepository
    ) -> None:
        """Created on this thread, the repository reads and writes from a worker thread."""

        def email_on_the_worker() -> int:
            with repository.transaction():
                ticket = repository.create_ticket(self.new_ticket())
                repository.add_action(
                    NewAction(ticket.id, ActionKind.EMAIL_IN, "More details", message_id="a@x")
                )
                repository.record_dedupe(DedupeRecord("k1", "s1", "ticket", ticket.id, utcnow()))
                repository.enqueue_outgoing(self.new_outgoing("ack@x", ticket_id=ticket.id))
            (claimed,) = repository.claim_outgoing(
                utcnow() + HOUR, owner="worker", lease=dt.timedelta(minutes=5)
            )
            repository.mark_outgoing(claimed.id, OutboxStatus.SENT)
            assert repository.acquire_lease("mailbox:Support", "worker", now=utcnow(), ttl=HOUR)
            return ticket.id

        with ThreadPoolExecutor(max_workers=1) as worker:
            ticket_id = worker.submit(email_on_the_worker).result()
            found = worker.submit(repository.find_ticket_by_message_ids, ["a@x"]).result()
        assert found is not None
        assert found.id == ticket_id
        by_ack = repository.find_ticket_by_message_ids(["ack@x"])
        assert by_ack is not None
        assert by_ack.id == ticket_id
        record = repository.get_dedupe("k1")
        assert record is not None
        assert record.ticket_id == ticket_id
        assert list(repository.claim_outgoing(utcnow() + HOUR, owner="main", lease=HOUR)) == []
        assert not repository.acquire_lease("mailbox:Support", "main", now=utcnow(), ttl=HOUR)

    def test_transactions_from_eight_threads_lose_and_double_nothing(
        self, repository: CompleteRepository
    ) -> None:
        """Eight threads handling the same emails make one ticket, one key and one mail each."""
        turn = _turns(repository)
        keys = [f"<email-{n}@sender.example>" for n in range(_KEYS)]

        def handle_every_email(thread: int) -> int:
            made = 0
            # Each thread walks the same emails from its own starting point, so that
            # threads meet on the same key at the same time.
            for key in keys[thread:] + keys[:thread]:
                with turn(), contextlib.suppress(DuplicateKeyError):
                    made += self._handle_once(repository, key)
            return made

        made = _on_threads(_THREADS, handle_every_email)
        tickets = repository.list_tickets(limit=10 * _KEYS)
        assert sum(made) == _KEYS
        assert sorted(t.summary for t in tickets) == sorted(keys)
        for key in keys:
            record = repository.get_dedupe(key)
            assert record is not None
            assert record.ticket_id in {t.id for t in tickets}
        due = repository.due_outgoing(utcnow() + HOUR, limit=10 * _KEYS)
        assert sorted(m.message_id for m in due) == sorted(f"ack-{k}" for k in keys)

    def _handle_once(self, repository: CompleteRepository, key: str) -> int:
        """What the processor does for one email: check the key, then write it all."""
        with repository.transaction():
            if repository.get_dedupe(key) is not None:
                return 0
            ticket = repository.create_ticket(self.new_ticket(summary=key))
            repository.record_dedupe(DedupeRecord(key, "sha", "ticket", ticket.id, utcnow()))
            repository.enqueue_outgoing(self.new_outgoing(f"ack-{key}", ticket_id=ticket.id))
        return 1

    def test_claimers_on_eight_threads_receive_each_mail_once(
        self, repository: CompleteRepository
    ) -> None:
        """Eight owners claiming from eight threads together share out every mail once."""
        turn = _turns(repository)
        queued = {repository.enqueue_outgoing(self.new_outgoing(f"m{n}@x")).id for n in range(40)}
        now = utcnow() + HOUR

        def claim_until_empty(thread: int) -> list[OutboxMail]:
            mine: list[OutboxMail] = []
            while True:
                with turn():
                    batch = repository.claim_outgoing(
                        now, owner=f"owner-{thread}", lease=HOUR, limit=3
                    )
                    for mail in batch:
                        repository.mark_outgoing(mail.id, OutboxStatus.SENT)
                if not batch:
                    return mine
                mine.extend(batch)

        received = [mail.id for batch in _on_threads(_THREADS, claim_until_empty) for mail in batch]
        assert sorted(received) == sorted(queued)
