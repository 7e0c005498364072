"""The in-memory repository, and what both bundled repositories offer beyond the Protocol.

The Protocol itself is covered by the shared contract suite (test_repository_contract);
here: seeding methods, input normalisation, times and clocks, and threads, for both
bundled repositories; then what only the in-memory one does.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.errors import RepositoryError
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxStatus,
    ServiceStatus,
    ServiceStatusEntry,
    StoredAttachment,
    StoredFile,
    TicketStatus,
    utcnow,
)
from halomail.tickets.sqlite import SQLiteTicketRepository

Bundled = InMemoryTicketRepository | SQLiteTicketRepository
Clock = Callable[[], dt.datetime]
NOON = dt.datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)


def new_ticket(summary: str = "Printer is jammed") -> NewTicket:
    """A minimal valid ticket."""
    return NewTicket(summary, "details", "Incident", "alice@customer.example")


def outgoing(message_id: str, *to: str) -> NewOutgoing:
    """A minimal outgoing email to ``to`` (Alice by default)."""
    return NewOutgoing(message_id, to or ("alice@customer.example",), "subject", "text")


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Bundled]]:
    """Build a bundled repository of each kind, optionally with a clock."""
    opened: list[SQLiteTicketRepository] = []

    def build(clock: Clock = utcnow) -> Bundled:
        if request.param == "memory":
            return InMemoryTicketRepository(clock=clock)
        repository = SQLiteTicketRepository(tmp_path / f"db{len(opened)}.sqlite", clock=clock)
        opened.append(repository)
        return repository

    yield build
    for repository in opened:
        repository.close()


@pytest.fixture
def repo(make: Callable[..., Bundled]) -> Bundled:
    """A bundled repository of each kind with the real clock."""
    return make()


class TestSeeding:
    def test_customer_domains_are_normalised(self, repo: Bundled) -> None:
        """Domains are stored lower-case without '@', final dot, blanks or repeats, in order."""
        customer = repo.add_customer(
            "Customer Ltd",
            ["Customer.Example.", "@customer.example", " Other.Example ", ""],
            "support@customer.example",
        )
        assert customer.domains == ("customer.example", "other.example")
        assert customer.from_address == "support@customer.example"
        found = repo.find_customer("someone@OTHER.example.")
        assert found == customer

    def test_the_first_customer_added_keeps_a_shared_domain(self, repo: Bundled) -> None:
        """When two customers claim one domain, the first one added owns it."""
        first = repo.add_customer("First", ["shared.example"])
        repo.add_customer("Second", ["shared.example", "second.example"])
        assert repo.find_customer("x@shared.example") == first
        second = repo.find_customer("x@second.example")
        assert second is not None
        assert second.name == "Second"

    def test_users_are_stored_lower_cased_and_unique(self, repo: Bundled) -> None:
        """A user's address is stored lower-case; another user with it in any case is refused."""
        customer = repo.add_customer("Customer Ltd")
        user = repo.add_user("Alice@Customer.Example", "Alice", customer.id, "+1 555", "+1 556")
        assert (user.email, user.name, user.customer_id, user.phone, user.mobile) == (
            "alice@customer.example",
            "Alice",
            customer.id,
            "+1 555",
            "+1 556",
        )
        with pytest.raises(RepositoryError, match="already exists"):
            repo.add_user("ALICE@customer.example", "Impostor")
        assert repo.find_user("alice@customer.example") == user
        assert repo.find_customer("alice@customer.example") == customer

    def test_an_unknown_customer_is_refused(self, repo: Bundled) -> None:
        """A user or asset of a customer that does not exist raises and adds nothing."""
        with pytest.raises(RepositoryError, match="customer 77 does not exist"):
            repo.add_user("bob@x.example", customer_id=77)
        with pytest.raises(RepositoryError, match="customer 77 does not exist"):
            repo.add_asset("PC-1", {"Serial": "S1"}, customer_id=77)
        assert repo.find_user("bob@x.example") is None
        assert repo.find_asset("tag", "PC-1") is None
        assert repo.find_asset("Serial", "S1") is None

    def test_assets_keep_their_fields_and_owner(self, repo: Bundled) -> None:
        """An asset reads back with its tag, fields and customer as added."""
        customer = repo.add_customer("Customer Ltd")
        asset = repo.add_asset("PC-1", {"Serial": "S1", "Host name": "pc1"}, customer.id)
        assert repo.find_asset("Serial", "s1") == asset
        assert asset.customer_id == customer.id
        assert dict(asset.fields) == {"Serial": "S1", "Host name": "pc1"}

    def test_a_field_called_tag_does_not_shadow_the_tag(self, repo: Bundled) -> None:
        """find_asset("tag", …) looks at the asset tag, never at a field named "tag"."""
        repo.add_asset("A-1", {"tag": "B-2"})
        real = repo.add_asset("B-2")
        assert repo.find_asset("tag", "b-2") == real

    def test_the_first_asset_added_wins_a_shared_value(self, repo: Bundled) -> None:
        """When two assets share a field value, the one added first is found."""
        first = repo.add_asset("PC-1", {"Site": "Leeds"})
        repo.add_asset("PC-2", {"Site": "leeds"})
        assert repo.find_asset("Site", "LEEDS") == first

    def test_asset_values_compare_with_unicode_case_folding(self, repo: Bundled) -> None:
        """The value "STRASSE-1" finds an asset whose value is "Straße-1" (full case folding)."""
        asset = repo.add_asset("PC-1", {"Location": "Straße-1"})
        assert repo.find_asset("Location", "STRASSE-1") == asset


class TestOutboxEdges:
    def test_a_duplicate_outgoing_message_id_is_refused(self, repo: Bundled) -> None:
        """Queuing a second email with a Message-ID already queued raises and keeps the first."""
        first = repo.enqueue_outgoing(outgoing("ack@helpdesk.example", "alice@customer.example"))
        with pytest.raises(RepositoryError, match="already queued"):
            repo.enqueue_outgoing(outgoing("ack@helpdesk.example", "bob@customer.example"))
        assert list(repo.due_outgoing(utcnow())) == [first]
        since = utcnow() - dt.timedelta(hours=1)
        assert repo.count_outgoing(to="bob@customer.example", since=since) == 0

    def test_marking_an_unknown_outgoing_email_raises(self, repo: Bundled) -> None:
        """mark_outgoing with an id that was never queued raises RepositoryError."""
        with pytest.raises(RepositoryError, match="outgoing email 404 does not exist"):
            repo.mark_outgoing(404, OutboxStatus.SENT)

    def test_an_address_listed_twice_counts_once(self, repo: Bundled) -> None:
        """One email to the same address twice (in different case) counts as one email."""
        repo.enqueue_outgoing(outgoing("m@h", "alice@customer.example", "ALICE@customer.example"))
        since = utcnow() - dt.timedelta(hours=1)
        assert repo.count_outgoing(to="alice@customer.example", since=since) == 1

    def test_a_retry_that_succeeds_clears_the_error_and_the_retry_time(self, repo: Bundled) -> None:
        """After a transient failure, marking the email sent leaves no error and no next attempt."""
        mail = repo.enqueue_outgoing(outgoing("m@h"))
        retry_at = utcnow() - dt.timedelta(seconds=1)
        repo.mark_outgoing(mail.id, OutboxStatus.PENDING, error="421", next_attempt_at=retry_at)
        sent = repo.mark_outgoing(mail.id, OutboxStatus.SENT)
        assert (sent.last_error, sent.next_attempt_at, sent.attempts) == (None, None, 2)


class TestTimes:
    def test_naive_datetimes_are_refused(self, repo: Bundled) -> None:
        """A naive datetime is a ValueError wherever a time is passed in, never a guess."""
        naive = dt.datetime(2024, 5, 1, 12, 0)
        mail = repo.enqueue_outgoing(outgoing("m@h"))
        with pytest.raises(ValueError, match="naive"):
            repo.due_outgoing(naive)
        with pytest.raises(ValueError, match="naive"):
            repo.count_outgoing(to="alice@customer.example", since=naive)
        with pytest.raises(ValueError, match="naive"):
            repo.mark_outgoing(mail.id, OutboxStatus.PENDING, next_attempt_at=naive)
        with pytest.raises(ValueError, match="naive"):
            repo.record_dedupe(DedupeRecord("k", "s", "created", None, naive))
        with pytest.raises(ValueError, match="naive"):
            repo.record_service_status(NewServiceStatus("Nightly backup", "ok", naive))
        assert repo.get_dedupe("k") is None
        assert repo.due_outgoing(utcnow()) == [mail]
        assert repo.service_history("Nightly backup") == []

    def test_times_in_other_zones_come_back_in_utc(self, repo: Bundled) -> None:
        """A time given in +02:00 reads back as the same instant, in UTC."""
        paris = dt.datetime(
            2024, 5, 1, 14, 0, 0, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=2))
        )
        repo.record_dedupe(DedupeRecord("k", "s", "created", None, paris))
        stored = repo.get_dedupe("k")
        assert stored is not None
        assert stored.created_at == paris
        assert stored.created_at.tzinfo is dt.UTC
        assert stored.created_at.hour == 12

    def test_a_fixed_clock_stamps_every_time_the_repository_sets(
        self, make: Callable[..., Bundled]
    ) -> None:
        """Every time the repository stamps itself comes from its clock, exactly."""
        repo = make(clock=lambda: NOON)
        ticket = repo.create_ticket(new_ticket())
        action = repo.add_action(NewAction(ticket.id, ActionKind.NOTE, "x"))
        closed = repo.set_status(ticket.id, TicketStatus.CLOSED)
        mail = repo.enqueue_outgoing(outgoing("m@h"))
        sent = repo.mark_outgoing(mail.id, OutboxStatus.SENT)
        entry = repo.quarantine(NewQuarantine("Support", "r", b""))
        assigned = repo.assign(ticket.id, agent="eve@helpdesk.example", team=None)
        asset, _ = repo.save_asset("SRV-01", {})
        (stored,) = repo.store_files(
            owner="asset",
            owner_id=asset.id,
            attachments=(StoredAttachment("a", "a", "text/plain", 0),),
        )
        stamps = [ticket.created_at, action.created_at, closed.closed_at, closed.updated_at]
        stamps += [mail.created_at, sent.sent_at, entry.created_at, assigned.updated_at]
        stamps += [stored.created_at]
        assert stamps == [NOON] * 9
        assert repo.get_ticket(ticket.id) == assigned
        assert list(repo.list_quarantine()) == [entry]
        assert list(repo.list_files(owner="asset", owner_id=asset.id)) == [stored]

    def test_closing_a_closed_ticket_keeps_its_first_closed_at(
        self, make: Callable[..., Bundled]
    ) -> None:
        """Closing a ticket again moves updated_at on but keeps the time it was first closed."""
        ticks = (NOON + dt.timedelta(minutes=n) for n in itertools.count())
        repo = make(clock=lambda: next(ticks))
        ticket = repo.create_ticket(new_ticket())
        first = repo.set_status(ticket.id, TicketStatus.CLOSED)
        again = repo.set_status(ticket.id, TicketStatus.CLOSED)
        assert first.closed_at == NOON + dt.timedelta(minutes=1)
        assert again.closed_at == first.closed_at
        assert again.updated_at == NOON + dt.timedelta(minutes=2)

    def test_negative_paging_is_refused(self, repo: Bundled) -> None:
        """A negative limit or offset raises ValueError in both implementations alike."""
        with pytest.raises(ValueError, match="negative"):
            repo.list_tickets(offset=-1)
        with pytest.raises(ValueError, match="negative"):
            repo.due_outgoing(utcnow(), limit=-1)
        with pytest.raises(ValueError, match="negative"):
            repo.service_history("Nightly backup", limit=-1)

    def test_a_service_status_keeps_the_time_it_was_given_not_the_clock(
        self, make: Callable[..., Bundled]
    ) -> None:
        """A status's time is the one passed in (an injected check time), not the repository's."""
        repo = make(clock=lambda: NOON)
        earlier = NOON - dt.timedelta(days=3)
        entry = repo.record_service_status(NewServiceStatus("UPS", ServiceStatus.UNKNOWN, earlier))
        assert entry.at == earlier
        assert repo.last_service_status("UPS") == entry


class TestNewModels:
    def test_a_service_status_accepts_the_enum_or_its_value(self) -> None:
        """ "failed" and ServiceStatus.FAILED make equal statuses; the field holds the enum."""
        by_value = NewServiceStatus("UPS", "failed", NOON)
        by_enum = NewServiceStatus("UPS", ServiceStatus.FAILED, NOON)
        assert by_value == by_enum
        assert by_value.status is ServiceStatus.FAILED
        assert ServiceStatusEntry(1, "UPS", "unknown", NOON).status is ServiceStatus.UNKNOWN

    def test_an_unknown_service_status_is_refused(self) -> None:
        """A status other than ok, failed or unknown raises ValueError when the model is made."""
        with pytest.raises(ValueError, match="'warning'"):
            NewServiceStatus("UPS", "warning", NOON)
        with pytest.raises(ValueError, match="'OK'"):
            NewServiceStatus("UPS", "OK", NOON)

    def test_a_stored_file_belongs_to_a_customer_or_an_asset(self) -> None:
        """A StoredFile with any other owner raises ValueError naming it."""
        stored = StoredFile(1, "asset", 7, "a.txt", "s.bin", "text/plain", 2, payload=b"hi")
        assert stored.owner == "asset"
        assert stored.attachment == StoredAttachment(
            "a.txt", "s.bin", "text/plain", 2, payload=b"hi"
        )
        with pytest.raises(ValueError, match="'ticket'"):
            StoredFile(1, "ticket", 7, "a.txt", "s.bin", "text/plain", 2)


class TestSavedAssets:
    def test_save_asset_matches_a_seeded_tag_by_unicode_case_folding(self, repo: Bundled) -> None:
        """An asset seeded by add_asset is updated by save_asset with its tag case-folded."""
        seeded = repo.add_asset("STRASSE-1", {"Ort": "Köln"})
        updated, created = repo.save_asset("straße-1", {"Ort": "KÖLN", "Etage": "2"})
        assert created is False
        assert (updated.id, updated.tag) == (seeded.id, "STRASSE-1")
        assert dict(updated.fields) == {"Ort": "KÖLN", "Etage": "2"}
        assert repo.find_asset("Ort", "köln") == updated

    def test_the_first_of_two_assets_with_one_tag_is_the_one_updated(self, repo: Bundled) -> None:
        """Of two assets seeded under one tag, save_asset updates the first (the one found)."""
        first = repo.add_asset("DUP-1", {"n": "1"})
        second = repo.add_asset("dup-1", {"n": "2"})
        updated, created = repo.save_asset("Dup-1", {"n": "3"})
        assert (updated.id, created) == (first.id, False)
        assert repo.find_asset("n", "2") == second
        assert repo.find_asset("tag", "DUP-1") == updated


class TestThreads:
    def test_a_transaction_makes_other_threads_wait_rather_than_join_it(
        self, repo: Bundled
    ) -> None:
        """Another thread's write waits for the transaction, and survives its rollback."""
        inside = threading.Event()
        done: list[str] = []

        def other_thread() -> None:
            inside.wait(5)
            done.append(repo.create_ticket(new_ticket("from the other thread")).summary)

        worker = threading.Thread(target=other_thread)
        worker.start()

        def transaction() -> None:
            with repo.transaction():
                repo.create_ticket(new_ticket("rolled back"))
                inside.set()
                time.sleep(0.2)  # the other thread is blocked on the repository now
                assert done == []
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            transaction()
        worker.join(5)
        assert done == ["from the other thread"]
        assert [t.summary for t in repo.list_tickets()] == ["from the other thread"]

    def test_a_transaction_in_another_thread_waits_instead_of_refusing_to_nest(
        self, repo: Bundled
    ) -> None:
        """Two threads' transactions run one after the other; neither is refused as nested."""
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                barrier.wait(5)
                for n in range(20):
                    with repo.transaction():
                        ticket = repo.create_ticket(new_ticket(f"{name}-{n}"))
                        repo.add_action(NewAction(ticket.id, ActionKind.NOTE, name))
            except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert errors == []
        tickets = repo.list_tickets(limit=100)
        assert len(tickets) == 40
        assert all(len(repo.list_actions(t.id)) == 1 for t in tickets)


class TestInMemoryOnly:
    def test_close_keeps_the_data_readable(self) -> None:
        """close() and the with block release nothing: an in-memory repository stays usable."""
        with InMemoryTicketRepository() as repository:
            ticket = repository.create_ticket(new_ticket())
        repository.close()
        assert repository.get_ticket(ticket.id) == ticket
        assert "1 tickets" in repr(repository)

    def test_a_rollback_hands_the_rolled_back_ids_out_again(self) -> None:
        """Ids taken inside a rolled-back transaction are free again, as in SQLite."""
        repository = InMemoryTicketRepository()

        def abort() -> int:
            with repository.transaction():
                taken = repository.create_ticket(new_ticket("lost")).id
                raise KeyError(taken)

        with pytest.raises(KeyError) as raised:
            abort()
        assert repository.create_ticket(new_ticket("kept")).id == raised.value.args[0]

    def test_a_long_transaction_rolls_back_to_the_exact_prior_state(self) -> None:
        """Hundreds of mixed writes, some to the same keys, roll back to exactly what was there."""
        repository = InMemoryTicketRepository()
        base = repository.create_ticket(new_ticket("base"))
        repository.set_state("k", "v0")
        mail = repository.enqueue_outgoing(outgoing("m@h"))
        before = (
            list(repository.list_tickets()),
            list(repository.list_actions(base.id)),
            repository.get_state("k"),
            list(repository.due_outgoing(utcnow())),
        )

        def abort() -> None:
            with repository.transaction():
                for n in range(200):
                    repository.add_action(
                        NewAction(base.id, ActionKind.NOTE, f"n{n}", message_id=f"{n}@x")
                    )
                    repository.set_state("k", f"v{n + 1}")
                    repository.set_status(
                        base.id, TicketStatus.CLOSED if n % 2 else TicketStatus.OPEN
                    )
                    repository.mark_outgoing(
                        mail.id, OutboxStatus.SENT if n % 2 else OutboxStatus.PENDING
                    )
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            abort()
        after = (
            list(repository.list_tickets()),
            list(repository.list_actions(base.id)),
            repository.get_state("k"),
            list(repository.due_outgoing(utcnow())),
        )
        assert after == before
        assert repository.find_ticket_by_message_ids(["0@x", "199@x"]) is None
