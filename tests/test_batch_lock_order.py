"""Two batches that record some of the same dedupe keys never deadlock.

Two runners reading two mailboxes that hold the same emails in opposite orders (one
email sent to support@ and sales@, see ``[processing] copies``) commit batches that
record the same copy keys in opposite orders. Written in that order, each transaction
would hold a row lock the other waits for, and PostgreSQL would abort one with
"deadlock detected", which stops that runner's pass. The batch writes its keys in key
order, so the second transaction waits for the first and then finds the keys taken: a
:class:`DuplicateKeyError`, which the processor turns into one email at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from halomail.errors import DuplicateKeyError
from halomail.tickets.models import BatchKeys, DedupeRecord
from halomail.tickets.postgres import PostgreSQLTicketRepository

KEYS = [f"\x1fcopy\x1f{n:064x}" for n in range(2000)]
"""Enough shared keys that two unordered writers would all but surely interleave."""


def _batch(
    repository: PostgreSQLTicketRepository,
    keys: list[str],
    ready: threading.Barrier,
    outcome: dict[int, str],
    index: int,
) -> Callable[[], None]:
    def run() -> None:
        try:
            with repository.transaction():
                repository.prepare_batch(BatchKeys(dedupe=tuple(keys)))
                for key in keys:
                    repository.record_dedupe(DedupeRecord(key, "f" * 64, "created", index))
                ready.wait(timeout=30)  # both commit (and flush) at the same moment
            outcome[index] = "committed"
        except DuplicateKeyError:
            outcome[index] = "duplicate"
        except Exception as exc:  # noqa: BLE001 - the failure guarded against, reported
            outcome[index] = f"{type(exc).__name__}: {exc}"

    return run


def test_two_batches_recording_the_same_keys_in_opposite_orders_never_deadlock(
    postgres_url: str,
) -> None:
    """One batch commits every key; the other finds them recorded (DuplicateKeyError),
    never a deadlock, and the ledger holds the first batch's records only. (SQLite's
    batch holds the write lock from its first statement: batches never overlap there.)"""
    repositories = [PostgreSQLTicketRepository(postgres_url) for _ in range(2)]
    ready = threading.Barrier(2)
    outcome: dict[int, str] = {}
    orders = [KEYS, KEYS[::-1]]
    threads = [
        threading.Thread(target=_batch(repo, keys, ready, outcome, n))
        for n, (repo, keys) in enumerate(zip(repositories, orders, strict=True))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(outcome.values()) == ["committed", "duplicate"], outcome
        winner = next(n for n, said in outcome.items() if said == "committed")
        records = [repositories[0].get_dedupe(key) for key in (KEYS[0], KEYS[-1])]
        assert [r.ticket_id if r else None for r in records] == [winner, winner]
    finally:
        for repo in repositories:
            repo.close()
