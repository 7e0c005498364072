"""Transactions across every role: all or nothing, never nested."""

from __future__ import annotations

import pytest

from halomail.errors import RepositoryError
from halomail.testing._base import CompleteRepository, ContractBase, open_and_leave
from halomail.testing._constants import HOUR
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    NewAction,
    NewQuarantine,
    NewServiceStatus,
    OutboxStatus,
    ServiceStatus,
    StoredAttachment,
    TicketStatus,
    utcnow,
)

__all__ = ["TransactionContract"]


class TransactionContract(ContractBase):
    """Transactions across every role: all or nothing, never nested.

    Subclass it with a ``repository`` fixture, as :class:`TicketRepositoryContract`.

    .. versionadded:: 0.1.0
    """

    def test_a_transaction_commits_every_write_together(
        self, repository: CompleteRepository
    ) -> None:
        """Every kind of write made in a transaction is kept once it commits."""
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket())
            repository.add_action(
                NewAction(ticket.id, ActionKind.EMAIL_IN, "hi", message_id="in@customer.example")
            )
            repository.record_dedupe(
                DedupeRecord("Support\x1fid:in", "f" * 64, "created", ticket.id)
            )
            mail = repository.enqueue_outgoing(
                self.new_outgoing("ack@helpdesk.example", ticket_id=ticket.id)
            )
            repository.quarantine(NewQuarantine("Support", "mime-too-deep", b"raw"))
            repository.set_state("onboarded:Support", "yes")
        stored = repository.get_ticket(ticket.id)
        assert stored is not None
        assert (stored.id, stored.summary) == (ticket.id, ticket.summary)
        assert [a.body for a in repository.list_actions(ticket.id)] == ["hi"]
        dedupe = repository.get_dedupe("Support\x1fid:in")
        assert dedupe is not None
        assert dedupe.ticket_id == ticket.id
        assert [m.id for m in repository.due_outgoing(utcnow() + HOUR)] == [mail.id]
        assert [q.reason for q in repository.list_quarantine()] == ["mime-too-deep"]
        assert repository.get_state("onboarded:Support") == "yes"
        found = repository.find_ticket_by_message_ids(["ack@helpdesk.example"])
        assert found is not None
        assert found.id == ticket.id

    def test_an_exception_in_a_transaction_rolls_back_every_write(
        self, repository: CompleteRepository
    ) -> None:
        """An exception in a transaction propagates unchanged and leaves no trace of any write."""
        kept = repository.create_ticket(self.new_ticket(summary="kept"))
        kept_mail = repository.enqueue_outgoing(self.new_outgoing("kept@helpdesk.example"))
        repository.set_state("cursor", "before")
        boom = RuntimeError("the host failed half-way")
        raised: BaseException | None = None
        try:
            with repository.transaction():
                ticket = repository.create_ticket(self.new_ticket(summary="lost"))
                repository.add_action(
                    NewAction(
                        ticket.id, ActionKind.EMAIL_IN, "lost", message_id="lost@customer.example"
                    )
                )
                repository.add_action(NewAction(kept.id, ActionKind.NOTE, "lost note"))
                repository.set_status(kept.id, TicketStatus.CLOSED)
                repository.record_dedupe(
                    DedupeRecord("Support\x1fid:lost", "0" * 64, "created", ticket.id)
                )
                repository.enqueue_outgoing(
                    self.new_outgoing("lost-ack@helpdesk.example", ticket_id=ticket.id)
                )
                repository.mark_outgoing(kept_mail.id, OutboxStatus.SENT)
                repository.quarantine(NewQuarantine("Support", "processing-error", b"lost"))
                repository.set_state("cursor", "after")
                repository.set_state("new-key", "value")
                raise boom
        except RuntimeError as exc:
            raised = exc
        assert raised is boom
        assert repository.get_ticket(ticket.id) is None
        assert [t.summary for t in repository.list_tickets()] == ["kept"]
        assert repository.get_ticket(kept.id) == kept
        assert list(repository.list_actions(kept.id)) == []
        assert list(repository.list_actions(ticket.id)) == []
        assert repository.get_dedupe("Support\x1fid:lost") is None
        assert repository.find_ticket_by_message_ids(["lost@customer.example"]) is None
        assert repository.find_ticket_by_message_ids(["lost-ack@helpdesk.example"]) is None
        assert list(repository.due_outgoing(utcnow() + HOUR)) == [kept_mail]
        assert repository.count_outgoing(to="alice@customer.example", since=utcnow() - HOUR) == 1
        assert list(repository.list_quarantine()) == []
        assert repository.get_state("cursor") == "before"
        assert repository.get_state("new-key") is None

    def test_a_transaction_reads_its_own_writes(self, repository: CompleteRepository) -> None:
        """Inside a transaction, reads see the writes made earlier in the same transaction."""
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket())
            repository.add_action(NewAction(ticket.id, ActionKind.NOTE, "x", message_id="m@x"))
            repository.record_dedupe(DedupeRecord("k", "s", "created", ticket.id))
            repository.set_state("k", "v")
            stored = repository.get_ticket(ticket.id)
            assert stored is not None
            assert (stored.id, stored.summary) == (ticket.id, ticket.summary)
            found = repository.find_ticket_by_message_ids(["m@x"])
            assert found is not None
            assert found.id == ticket.id
            dedupe = repository.get_dedupe("k")
            assert dedupe is not None
            assert dedupe.outcome == "created"
            assert repository.get_state("k") == "v"

    def test_transactions_do_not_nest(self, repository: CompleteRepository) -> None:
        """A transaction inside another raises RepositoryError; the outer one still commits."""
        with repository.transaction():
            first = repository.create_ticket(self.new_ticket(summary="outer"))
            with pytest.raises(RepositoryError):
                open_and_leave(repository)
            second = repository.create_ticket(self.new_ticket(summary="after the refusal"))
        assert repository.get_ticket(first.id) == first
        assert repository.get_ticket(second.id) == second

    def test_writes_outside_a_transaction_are_kept_at_once(
        self, repository: CompleteRepository
    ) -> None:
        """A write outside any transaction is committed; a later rollback does not undo it."""
        ticket = repository.create_ticket(self.new_ticket())
        repository.set_state("k", "v")

        def abort() -> None:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(summary="rolled back"))
                raise KeyError("abort")

        with pytest.raises(KeyError):
            abort()
        assert repository.get_ticket(ticket.id) == ticket
        assert repository.get_state("k") == "v"
        assert [t.id for t in repository.list_tickets()] == [ticket.id]

    def test_a_new_transaction_works_after_a_rollback(self, repository: CompleteRepository) -> None:
        """After a rolled-back transaction, the next one starts and commits normally."""

        def abort() -> None:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(summary="lost"))
                raise ValueError("first")

        with pytest.raises(ValueError, match="first"):
            abort()
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket(summary="kept"))
        assert [t.summary for t in repository.list_tickets()] == ["kept"]
        assert repository.get_ticket(ticket.id) == ticket

    def test_rule_writes_commit_together_and_are_read_inside_the_transaction(
        self, repository: CompleteRepository
    ) -> None:
        """Alert tickets, assignment, assets, files and statuses commit together (seen inside)."""
        customer_id, _ = self._owners(repository)
        files = (StoredAttachment("x.csv", "x.bin", "text/csv", 3, payload=b"1,2"),)
        with repository.transaction():
            ticket = repository.create_ticket(self.new_ticket(alert_key="alert:a:b"))
            repository.assign(ticket.id, agent="eve@helpdesk.example", team=None)
            asset, created = repository.save_asset("NEW-1", {"OS": "Linux"})
            repository.store_files(owner="asset", owner_id=asset.id, attachments=files)
            repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0))
            inside = repository.find_open_ticket(alert_key="alert:a:b")
            assert inside is not None
            assert inside.agent == "eve@helpdesk.example"
            assert repository.find_asset("OS", "linux") == asset
            assert len(repository.list_files(owner="asset", owner_id=asset.id)) == 1
            assert repository.last_service_status("UPS") is not None
        assert created is True
        found = repository.find_open_ticket(alert_key="alert:a:b")
        assert found is not None
        assert (found.id, found.agent) == (ticket.id, "eve@helpdesk.example")
        assert repository.find_asset("tag", "new-1") == asset
        assert [
            f.attachment for f in repository.list_files(owner="asset", owner_id=asset.id)
        ] == list(files)
        assert [e.status for e in repository.service_history("UPS")] == [ServiceStatus.OK]
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []

    def test_an_exception_rolls_back_every_rule_write(self, repository: CompleteRepository) -> None:
        """An exception in a transaction undoes every alert, asset, file and status write."""
        customer_id, asset_id = self._owners(repository)
        kept = repository.create_ticket(self.new_ticket(alert_key="alert:a:kept"))
        existing = repository.find_asset("tag", "NAS-01")
        first_status = repository.record_service_status(NewServiceStatus("UPS", "ok", self._T0))
        files = (StoredAttachment("x.csv", "x.bin", "text/csv", 3, payload=b"1,2"),)
        boom = RuntimeError("the host failed half-way")
        raised: BaseException | None = None
        try:
            with repository.transaction():
                repository.create_ticket(self.new_ticket(alert_key="alert:a:lost"))
                repository.assign(kept.id, agent="eve@helpdesk.example", team="Second line")
                repository.set_status(kept.id, TicketStatus.CLOSED)
                repository.save_asset("LOST-1", {"OS": "Linux"})
                repository.save_asset("nas-01", {"Serial Number": "CHANGED", "Extra": "x"})
                repository.store_files(owner="customer", owner_id=customer_id, attachments=files)
                repository.store_files(owner="asset", owner_id=asset_id, attachments=files)
                repository.record_service_status(NewServiceStatus("UPS", "failed", self._T0 + HOUR))
                repository.record_service_status(NewServiceStatus("New service", "ok", self._T0))
                raise boom
        except RuntimeError as exc:
            raised = exc
        assert raised is boom
        assert repository.find_open_ticket(alert_key="alert:a:lost") is None
        assert repository.find_open_ticket(alert_key="alert:a:kept") == kept
        assert repository.get_ticket(kept.id) == kept
        assert repository.find_asset("tag", "LOST-1") is None
        assert repository.find_asset("OS", "Linux") is None
        assert repository.find_asset("tag", "NAS-01") == existing
        assert repository.find_asset("Serial Number", "NAS-SN-1") == existing
        assert repository.find_asset("Serial Number", "CHANGED") is None
        assert repository.find_asset("Extra", "x") is None
        assert list(repository.list_files(owner="customer", owner_id=customer_id)) == []
        assert list(repository.list_files(owner="asset", owner_id=asset_id)) == []
        assert list(repository.service_history("UPS")) == [first_status]
        assert repository.last_service_status("New service") is None
