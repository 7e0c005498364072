"""The unit of work: each email ends in exactly one outcome, committed before it is disposed of."""

from __future__ import annotations

import datetime as dt
import email
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.base import Disposition, FetchedMessage
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import ConnectorError, RepositoryError, TransientRepositoryError
from halomail.inbound.classify import loop_signature
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import ActionKind, OutboxStatus, TicketStatus, utcnow
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email

Build = Callable[..., MailProcessor]


def _only(processor: MailProcessor) -> list[Outcome]:
    return [o.outcome for o in processor.run_once().outcomes]


class TestNewTickets:
    def test_a_new_email_becomes_a_ticket_with_its_sender_and_text(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A plain email creates one ticket carrying its subject, sender, body and type."""
        connector.add(make_email(headers={"Cc": "Bob <bob@customer.example>"}))
        report = make_processor(ticket_type="Service Request").run_once()
        (outcome,) = report.outcomes
        assert outcome.outcome is Outcome.CREATED
        ticket = repository.get_ticket(outcome.ticket_id or 0)
        assert ticket is not None
        assert ticket.summary == "Printer is jammed"
        assert ticket.user_email == "alice@customer.example"
        assert ticket.user_name == "Alice Martin"
        assert ticket.ticket_type == "Service Request"
        assert ticket.cc == ("bob@customer.example",)
        assert "floor 3 jams" in ticket.details
        (action,) = repository.list_actions(ticket.id)
        assert action.kind is ActionKind.EMAIL_IN
        assert action.message_id == "msg-1@customer.example"

    def test_the_email_is_disposed_of_only_as_processed_after_its_ticket_exists(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """The source email is acked PROCESSED, and at that moment the ticket is committed."""
        seen_at_ack: list[int] = []
        original_ack = connector.ack

        def ack(ref: str, disposition: Disposition) -> None:
            seen_at_ack.append(len(repository.list_tickets()))
            original_ack(ref, disposition)

        connector.ack = ack  # type: ignore[method-assign]
        ref = connector.add(make_email())
        make_processor().run_once()
        assert seen_at_ack == [1]
        assert connector.acks == [(ref, Disposition.PROCESSED)]

    def test_an_acknowledgement_is_queued_and_sent_once_with_our_headers(
        self, make_processor: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """A new ticket's acknowledgement carries the tag, thread and loop headers."""
        connector.add(make_email())
        report = make_processor().run_once()
        assert report.sent.sent == 1
        (sent,) = transport.sent
        message = email.message_from_bytes(sent.data)
        ticket_id = report.outcomes[0].ticket_id
        assert sent.recipients == ("alice@customer.example",)
        assert message["Subject"] == f"[ID:{ticket_id}] Received: Printer is jammed"
        assert message["In-Reply-To"] == "<msg-1@customer.example>"
        assert message["Auto-Submitted"] == "auto-replied"
        assert message["X-Halomail-Loop"] == loop_signature(LOOP_TOKEN, sent.message_id)
        assert message["Message-ID"] == f"<{sent.message_id}>"

    def test_acknowledgements_can_be_turned_off_per_mailbox(
        self, make_processor: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """A mailbox with send_acknowledgement off creates the ticket and sends nothing."""
        connector.add(make_email())
        assert _only(make_processor(send_acknowledgement=False)) == [Outcome.CREATED]
        assert transport.sent == []

    def test_an_opportunity_mailbox_records_opportunities(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A mailbox set to record opportunities creates an opportunity, not a ticket."""
        from halomail.tickets.models import RecordKind

        connector.add(make_email())
        make_processor(record=RecordKind.OPPORTUNITY).run_once()
        assert repository.list_tickets()[0].record is RecordKind.OPPORTUNITY

    def test_attachments_are_kept_on_the_first_action(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """An attachment arrives on the ticket's first action byte for byte."""
        raw = (
            b"From: alice@customer.example\r\nTo: support@helpdesk.example\r\n"
            b"Subject: log\r\nMessage-ID: <att-1@customer.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\n\r\nSee the log.\r\n--b\r\n"
            b'Content-Type: text/plain; name="vpn.log"\r\n'
            b'Content-Disposition: attachment; filename="vpn.log"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\ndHVubmVsIGRvd24K\r\n--b--\r\n"
        )
        connector.add(raw)
        make_processor().run_once()
        (action,) = repository.list_actions(repository.list_tickets()[0].id)
        (attachment,) = action.attachments
        assert attachment.filename == "vpn.log"
        assert attachment.payload == b"tunnel down\n"


class TestExactlyOnce:
    def test_a_second_fetch_of_the_same_email_is_skipped_as_duplicate_and_disposed(
        self,
        make_processor: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
        transport: MemoryTransport,
    ) -> None:
        """L4: the same bytes fetched twice make one ticket, one acknowledgement, two disposals."""
        raw = make_email()
        connector.add(raw)
        processor = make_processor()
        processor.run_once()
        connector.add(raw)  # the server kept it (a crash before the move), or redelivered it
        outcome = processor.run_once().outcomes[0]
        assert outcome.outcome is Outcome.SKIPPED
        assert outcome.reason == "duplicate"
        assert len(repository.list_tickets()) == 1
        assert len(transport.sent) == 1
        assert [d for _, d in connector.acks] == [Disposition.PROCESSED, Disposition.PROCESSED]

    def test_an_email_without_message_id_is_deduplicated_by_its_bytes(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """L3: without a Message-ID, the body's fingerprint keeps a re-fetch from doubling."""
        raw = make_email(message_id=None)
        processor = make_processor()
        connector.add(raw)
        processor.run_once()
        connector.add(raw)
        assert _only(processor) == [Outcome.SKIPPED]
        assert len(repository.list_tickets()) == 1

    def test_the_same_email_with_different_trace_headers_is_still_a_duplicate(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """One email delivered twice via two aliases (different Received lines) makes one ticket."""
        raw = make_email()
        processor = make_processor()
        connector.add(b"Received: from a.example by mx; Mon, 1 Jan 2026 00:00:00 +0000\r\n" + raw)
        connector.add(b"Received: from b.example by mx; Mon, 1 Jan 2026 00:00:01 +0000\r\n" + raw)
        assert _only(processor) == [Outcome.CREATED, Outcome.SKIPPED]
        assert len(repository.list_tickets()) == 1

    def test_a_different_email_reusing_a_message_id_is_a_new_ticket_not_dropped(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """L7: a second email with a known Message-ID but another body is a new email."""
        processor = make_processor()
        connector.add(make_email(body="Attacker pre-sends the id.\n"))
        connector.add(make_email(body="The real email the attacker wanted dropped.\n"))
        outcomes = processor.run_once().outcomes
        assert [(o.outcome, o.reason) for o in outcomes] == [
            (Outcome.CREATED, None),
            (Outcome.CREATED, None),
        ]
        assert sorted(t.details.strip() for t in repository.list_tickets()) == [
            "Attacker pre-sends the id.",
            "The real email the attacker wanted dropped.",
        ]
        assert repository.list_quarantine() == []
        assert connector.acks[-1][1] is Disposition.PROCESSED

    def test_a_transient_repository_failure_leaves_the_email_for_a_retry(
        self, settings: ProcessorSettings, connector: MemoryConnector
    ) -> None:
        """F4: a locked or full database gives RETRY, and the source email is not disposed of."""

        class FullDisk(InMemoryTicketRepository):
            def create_ticket(self, new):  # type: ignore[no-untyped-def]
                raise TransientRepositoryError("database or disk is full")

        repo = FullDisk()
        ref = connector.add(make_email())
        processor = MailProcessor(repo, [Mailbox(connector)], settings)
        (outcome,) = processor.run_once().outcomes
        assert outcome.outcome is Outcome.RETRY
        assert connector.acks == []
        assert repo.list_tickets() == []
        assert [m.ref for m in connector.fetch()] == [ref]

    def test_a_bug_on_one_email_quarantines_it_and_the_next_email_goes_on(
        self, settings: ProcessorSettings, connector: MemoryConnector
    ) -> None:
        """An email that makes the processor fail is quarantined; the next one is processed."""

        class Picky(InMemoryTicketRepository):
            def create_ticket(self, new):  # type: ignore[no-untyped-def]
                if "poison" in new.summary:
                    raise ValueError("host rejected the ticket")
                return super().create_ticket(new)

        repo = Picky()
        connector.add(make_email(subject="poison", message_id="<p@x.example>"))
        connector.add(make_email(subject="fine", message_id="<f@x.example>"))
        outcomes = MailProcessor(repo, [Mailbox(connector)], settings).run_once().outcomes
        assert [(o.outcome, o.reason) for o in outcomes] == [
            (Outcome.QUARANTINED, "processing-error"),
            (Outcome.CREATED, None),
        ]
        assert "host rejected the ticket" in repo.list_quarantine()[0].detail


class TestThreading:
    def _ticket(self, processor: MailProcessor, connector: MemoryConnector) -> int:
        connector.add(make_email(message_id="<first@customer.example>"))
        ticket_id = processor.run_once().outcomes[0].ticket_id
        assert ticket_id is not None
        return ticket_id

    @pytest.mark.parametrize("tag", ["[ID:{n}]", "[ID {n}]", "[id:{n}]", "[ID: {n}]"])
    def test_a_reply_with_the_subject_tag_updates_that_ticket(
        self,
        tag: str,
        make_processor: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
    ) -> None:
        """A reply whose subject carries [ID:n] or the bare [ID n] adds an action to ticket n."""
        processor = make_processor()
        n = self._ticket(processor, connector)
        connector.add(
            make_email(
                subject=f"RE: {tag.format(n=n)} Printer",
                message_id="<r@customer.example>",
                body="Still jammed.\n\nOn Mon, Alice wrote:\n> old text\n",
            )
        )
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.ticket_id) == (Outcome.UPDATED, n)
        actions = repository.list_actions(n)
        assert len(actions) == 2
        assert "Still jammed." in actions[1].body
        assert len(repository.list_tickets()) == 1

    def test_the_tag_is_configurable_per_mailbox(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """A mailbox with subject_tag "[Ticket#" threads on [Ticket#n] and not on [ID:n]."""
        processor = make_processor(subject_tag="[Ticket#")
        n = self._ticket(processor, connector)
        connector.add(make_email(subject=f"Re: [Ticket#{n}] x", message_id="<a@customer.example>"))
        connector.add(make_email(subject=f"Re: [ID:{n}] x", message_id="<b@customer.example>"))
        outcomes = processor.run_once().outcomes
        assert [o.outcome for o in outcomes] == [Outcome.UPDATED, Outcome.CREATED]

    def test_a_reply_to_our_acknowledgement_threads_by_in_reply_to(
        self, make_processor: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """A reply with no tag whose In-Reply-To names our acknowledgement updates the ticket."""
        processor = make_processor()
        n = self._ticket(processor, connector)
        ours = transport.sent[0].message_id
        connector.add(
            make_email(
                subject="Re: your ticket",
                message_id="<r2@customer.example>",
                headers={"In-Reply-To": f"<{ours}>", "References": f"<{ours}>"},
            )
        )
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.ticket_id) == (Outcome.UPDATED, n)

    def test_a_reply_all_naming_the_original_email_threads_onto_its_ticket(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """L6: among junk and several ids in References, any valid known id threads the email."""
        processor = make_processor()
        n = self._ticket(processor, connector)
        connector.add(
            make_email(
                subject="Re: Printer",
                message_id="<r3@customer.example>",
                headers={
                    "In-Reply-To": "garbage <",
                    "References": "<unknown@x.example> <first@customer.example>",
                },
            )
        )
        assert processor.run_once().outcomes[0].ticket_id == n

    def test_a_tag_from_an_unrelated_sender_opens_a_new_ticket_instead(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """L5: a guessed [ID:n] from a stranger does not touch ticket n; it becomes a new ticket."""
        processor = make_processor()
        n = self._ticket(processor, connector)
        connector.add(
            make_email(
                subject=f"Re: [ID:{n}] give me the data",
                sender="mallory@evil.example",
                message_id="<m@evil.example>",
            )
        )
        (outcome,) = processor.run_once().outcomes
        assert outcome.outcome is Outcome.CREATED
        assert outcome.ticket_id != n
        assert outcome.reason == "unrelated-sender"
        assert len(repository.list_actions(n)) == 1

    def test_a_forged_reference_is_quarantined_when_the_mailbox_says_so(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """L5: with hijack="quarantine", a stranger's forged In-Reply-To is quarantined."""
        processor = make_processor(hijack="quarantine")
        n = self._ticket(processor, connector)
        connector.add(
            make_email(
                subject="Re: Printer",
                sender="mallory@evil.example",
                message_id="<m2@evil.example>",
                headers={"In-Reply-To": "<first@customer.example>"},
            )
        )
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.QUARANTINED, "thread-hijack-suspected")
        assert len(repository.list_actions(n)) == 1

    def test_a_person_copied_on_the_ticket_may_reply_to_it(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """A CC of the original email is related to the ticket, so their reply updates it."""
        processor = make_processor()
        connector.add(
            make_email(message_id="<cc@customer.example>", headers={"Cc": "bob@customer.example"})
        )
        n = processor.run_once().outcomes[0].ticket_id
        connector.add(
            make_email(
                subject=f"Re: [ID:{n}]",
                sender="bob@customer.example",
                message_id="<bob@customer.example>",
            )
        )
        assert processor.run_once().outcomes[0].ticket_id == n

    def test_a_reply_to_a_closed_ticket_reopens_it(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A customer's reply to a closed ticket reopens it."""
        processor = make_processor()
        n = self._ticket(processor, connector)
        repository.set_status(n, TicketStatus.CLOSED)
        connector.add(make_email(subject=f"Re: [ID:{n}]", message_id="<again@customer.example>"))
        processor.run_once()
        ticket = repository.get_ticket(n)
        assert ticket is not None
        assert ticket.status is TicketStatus.OPEN

    def test_a_tag_naming_no_ticket_creates_a_new_one(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """A subject tag for a ticket that does not exist is treated as a new email."""
        connector.add(make_email(subject="Re: [ID:999999] hello"))
        assert _only(make_processor()) == [Outcome.CREATED]


class TestLoops:
    def test_o1_an_out_of_office_on_a_thread_is_recorded_without_reply_or_state_change(
        self,
        make_processor: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
        transport: MemoryTransport,
    ) -> None:
        """O1: an auto-reply to a closed ticket is added to it; no acknowledgement, no reopen."""
        processor = make_processor()
        connector.add(make_email(message_id="<o1@customer.example>"))
        n = processor.run_once().outcomes[0].ticket_id or 0
        repository.set_status(n, TicketStatus.CLOSED)
        connector.add(
            make_email(
                subject=f"Automatic reply: [ID:{n}] Printer",
                message_id="<ooo@c.example>",
                headers={"Auto-Submitted": "auto-replied"},
            )
        )
        (outcome,) = processor.run_once().outcomes
        assert outcome.outcome is Outcome.UPDATED
        ticket = repository.get_ticket(n)
        assert ticket is not None
        assert ticket.status is TicketStatus.CLOSED
        assert len(transport.sent) == 1  # only the first email's acknowledgement

    def test_o1_a_new_auto_reply_makes_a_ticket_but_no_acknowledgement(
        self, make_processor: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """An auto-reply that follows up nothing becomes a ticket and gets no acknowledgement."""
        connector.add(make_email(headers={"Auto-Submitted": "auto-replied"}))
        assert _only(make_processor()) == [Outcome.CREATED]
        assert transport.sent == []

    def test_o7_auto_submitted_no_is_a_human_and_is_acknowledged(
        self, make_processor: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """O7: `Auto-Submitted: no` is a person writing, so the acknowledgement is sent."""
        connector.add(make_email(headers={"Auto-Submitted": "no"}))
        make_processor().run_once()
        assert len(transport.sent) == 1

    @pytest.mark.parametrize(
        ("sender", "headers"),
        [
            ("news@vendor.example", {"Precedence": "bulk"}),
            ("news@vendor.example", {"List-Id": "<news.vendor.example>"}),
            ("list@vendor.example", {"List-Unsubscribe": "<mailto:u@vendor.example>"}),
            ("noreply@vendor.example", {}),
            ("MAILER-DAEMON@vendor.example", {}),
            ("someone@vendor.example", {"Return-Path": "<>"}),
        ],
    )
    def test_o6_bulk_and_no_reply_senders_get_a_ticket_but_no_acknowledgement(
        self,
        sender: str,
        headers: dict[str, str],
        make_processor: Build,
        connector: MemoryConnector,
        transport: MemoryTransport,
    ) -> None:
        """O6: list mail, bulk mail and no-reply senders make tickets and are never answered."""
        connector.add(make_email(sender=sender, headers=headers))
        assert _only(make_processor()) == [Outcome.CREATED]
        assert transport.sent == []

    def test_o6_bulk_mail_can_be_ignored_by_configuration(
        self,
        repository: TicketRepository,
        settings: ProcessorSettings,
        connector: MemoryConnector,
    ) -> None:
        """With bulk = "ignore", list mail is ignored and still disposed of."""
        import attrs

        connector.add(make_email(headers={"Precedence": "list"}))
        processor = MailProcessor(
            repository, [Mailbox(connector)], attrs.evolve(settings, bulk="ignore")
        )
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.IGNORED, "bulk")
        assert connector.acks[0][1] is Disposition.PROCESSED
        assert repository.list_tickets() == []

    def test_o5_our_own_acknowledgement_fetched_back_is_skipped(
        self,
        make_processor: Build,
        connector: MemoryConnector,
        transport: MemoryTransport,
        repository: TicketRepository,
    ) -> None:
        """O5: when our own acknowledgement lands in the mailbox, it is skipped as own-message."""
        processor = make_processor()
        connector.add(make_email())
        processor.run_once()
        connector.add(transport.sent[0].data)
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
        assert len(repository.list_tickets()) == 1
        assert len(transport.sent) == 1

    def test_o2_a_bounce_of_our_acknowledgement_is_attached_to_the_ticket(
        self,
        make_processor: Build,
        connector: MemoryConnector,
        transport: MemoryTransport,
        repository: TicketRepository,
    ) -> None:
        """O2: a DSN naming our acknowledgement becomes a private bounce action on its ticket."""
        processor = make_processor()
        connector.add(make_email())
        n = processor.run_once().outcomes[0].ticket_id or 0
        ours = transport.sent[0].message_id
        dsn = (
            "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\r\n"
            "To: support@helpdesk.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            "Message-ID: <dsn-1@mx.customer.example>\r\nAuto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
            "--r\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your "
            "message could not be delivered.\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            "Final-Recipient: rfc822; alice@customer.example\r\nAction: failed\r\n"
            "Status: 5.1.1\r\n\r\n"
            f"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{ours}>\r\n"
            "Subject: [ID:1] Printer is jammed\r\n\r\n--r--\r\n"
        ).encode()
        connector.add(dsn)
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.ticket_id, outcome.reason) == (
            Outcome.UPDATED,
            n,
            "bounce",
        )
        kinds = [a.kind for a in repository.list_actions(n)]
        assert kinds == [ActionKind.EMAIL_IN, ActionKind.BOUNCE]
        assert len(repository.list_tickets()) == 1
        assert len(transport.sent) == 1

    def test_o2_a_bounced_address_gets_no_further_acknowledgements(
        self,
        make_processor: Build,
        connector: MemoryConnector,
        transport: MemoryTransport,
    ) -> None:
        """After our mail to an address failed for good, new tickets from it are not
        acknowledged."""
        processor = make_processor()
        connector.add(make_email())
        processor.run_once()
        ours = transport.sent[0].message_id
        connector.add(
            make_email(
                sender="MAILER-DAEMON@mx.example",
                subject="Delivery Status Notification",
                message_id="<dsn@mx.example>",
                headers={"In-Reply-To": f"<{ours}>", "Auto-Submitted": "auto-replied"},
                body="Delivery to the following recipient failed permanently:\n\n"
                "     alice@customer.example\n\n550 5.1.1 No such user\n",
            )
        )
        connector.add(make_email(message_id="<later@customer.example>", subject="Another"))
        outcomes = processor.run_once().outcomes
        assert [o.outcome for o in outcomes] == [Outcome.UPDATED, Outcome.CREATED]
        assert outcomes[1].reason == "undeliverable-sender"
        assert len(transport.sent) == 1

    def test_a_bounce_naming_none_of_our_mail_is_ignored(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """Backscatter: a bounce naming none of our mail is ignored as bounce-unmatched."""
        connector.add(
            make_email(
                sender="MAILER-DAEMON@mx.example", subject="Undelivered Mail Returned to Sender"
            )
        )
        (outcome,) = make_processor().run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.IGNORED, "bounce-unmatched")
        assert repository.list_quarantine() == []
        assert repository.list_tickets() == []

    def test_o4_two_helpdesks_answering_each_other_are_stopped_by_the_throttle(
        self,
        repository: TicketRepository,
        settings: ProcessorSettings,
        connector: MemoryConnector,
        transport: MemoryTransport,
    ) -> None:
        """O4: another helpdesk that answers every mail of ours gets at most N acknowledgements."""
        import attrs

        limit = 5
        processor = MailProcessor(
            repository,
            [Mailbox(connector)],
            attrs.evolve(settings, ack_throttle_count=limit),
            transport=transport,
        )
        for round_ in range(30):
            # The other helpdesk opens a new ticket of its own for each of our mails,
            # and answers with a fresh, non-automatic email.
            connector.add(
                make_email(
                    sender="helpdesk@other.example",
                    subject=f"[Case {round_}] Re: ticket",
                    message_id=f"<loop-{round_}@other.example>",
                )
            )
            processor.run_once()
        assert len(transport.sent) == limit
        assert len(repository.list_tickets()) == 30

    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    def test_a_storm_from_one_sender_warns_of_the_throttle_once_per_window(
        self,
        kind: str,
        tmp_path: Path,
        settings: ProcessorSettings,
        connector: MemoryConnector,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """30 alerts from one sender: 25 throttled, one WARNING; past the window, one more."""
        import attrs

        now = [utcnow()]
        repository: TicketRepository = (
            InMemoryTicketRepository(clock=lambda: now[0])
            if kind == "memory"
            else SQLiteTicketRepository(tmp_path / "storm.db", clock=lambda: now[0])
        )
        processor = MailProcessor(
            repository,
            [Mailbox(connector)],
            attrs.evolve(settings, ack_throttle_count=5),
            clock=lambda: now[0],
        )

        def storm(count: int, start: int) -> list[str | None]:
            for n in range(start, start + count):
                connector.add(
                    make_email(
                        sender="alerts@monitor.example",
                        subject=f"CPU high on host {n}",
                        message_id=f"<alert-{n}@monitor.example>",
                    )
                )
            return [o.reason for o in processor.run_once().outcomes]

        def warnings() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.WARNING and "throttled" in r.getMessage()
            ]

        with caplog.at_level(logging.DEBUG, logger="halomail"):
            reasons = storm(30, 0)
            assert reasons.count("acknowledgement-throttled") == 25
            assert len(warnings()) == 1
            assert "alerts@monitor.example" in warnings()[0]
            now[0] += settings.ack_throttle_window + dt.timedelta(minutes=1)
            reasons = storm(6, 30)
        assert reasons.count("acknowledgement-throttled") == 1
        assert len(warnings()) == 2
        if isinstance(repository, SQLiteTicketRepository):
            repository.close()


class TestQuarantineAndLimits:
    def test_an_unparseable_sender_is_quarantined_with_the_original_bytes(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """L9: a From that holds no address is quarantined; the stored bytes are the original."""
        raw = make_email(sender="not an address at all")
        connector.add(raw)
        (outcome,) = make_processor().run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.QUARANTINED, "unparseable-sender")
        assert repository.list_quarantine()[0].raw == raw
        assert connector.acks[0][1] is Disposition.QUARANTINED

    def test_a_message_over_the_size_limit_is_quarantined_from_its_metadata(
        self, repository: TicketRepository, settings: ProcessorSettings
    ) -> None:
        """A3: a message the connector reports as too large is quarantined without being read."""
        connector = MemoryConnector("Support", max_message_bytes=1000)
        connector.add(make_email(body="x" * 5000))
        processor = MailProcessor(repository, [Mailbox(connector)], settings)
        (outcome,) = processor.run_once().outcomes
        assert (outcome.outcome, outcome.reason) == (Outcome.QUARANTINED, "too-large")
        assert repository.list_quarantine()[0].raw == b""

    def test_a_nesting_bomb_is_quarantined_and_the_run_exits_problems(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """M5 end to end: a MIME depth bomb is quarantined as mime-too-deep; the run is not ok."""
        depth = 60
        head = b"From: a@customer.example\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n"
        parts = b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(depth)
        )
        connector.add(head + parts + b"Content-Type: text/plain\r\n\r\nx\r\n")
        report = make_processor().run_once()
        assert [(o.outcome, o.reason) for o in report.outcomes] == [
            (Outcome.QUARANTINED, "mime-too-deep")
        ]
        assert not report.ok


class TestMailboxes:
    def test_a_broken_mailbox_does_not_stop_the_others(
        self, repository: TicketRepository, settings: ProcessorSettings
    ) -> None:
        """A mailbox whose server is down is reported failed; the next mailbox is processed."""
        broken = MemoryConnector("Broken", fail_fetch=ConnectorError("connection refused"))
        working = MemoryConnector("Working", [make_email()])
        processor = MailProcessor(repository, [Mailbox(broken), Mailbox(working)], settings)
        report = processor.run_once()
        assert report.mailboxes[0].error is not None
        assert "connection refused" in report.mailboxes[0].error
        assert [o.outcome for o in report.mailboxes[1].outcomes] == [Outcome.CREATED]
        health = {h.name: h for h in processor.health()}
        assert health["Broken"].consecutive_failures == 1
        assert health["Broken"].last_success is None
        assert health["Working"].last_success is not None

    def test_a_fetch_that_breaks_midway_keeps_what_was_done_and_leaves_the_rest(
        self, repository: TicketRepository, settings: ProcessorSettings
    ) -> None:
        """A connection lost after the first email leaves the second untouched for later."""

        class Dropping(MemoryConnector):
            def fetch(self) -> Iterator[FetchedMessage]:
                for index, message in enumerate(super().fetch()):
                    if index == 1:
                        raise ConnectorError("connection reset")
                    yield message

        connector = Dropping(
            "Support",
            [make_email(message_id="<1@c.example>"), make_email(message_id="<2@c.example>")],
        )
        processor = MailProcessor(repository, [Mailbox(connector)], settings)
        first = processor.run_once()
        assert [o.outcome for o in first.outcomes] == [Outcome.CREATED]
        assert first.mailboxes[0].error is not None
        assert len(connector.acks) == 1
        plain = MemoryConnector("Support", [m.raw for m in connector.fetch()])
        second = MailProcessor(repository, [Mailbox(plain)], settings).run_once()
        assert [o.outcome for o in second.outcomes] == [Outcome.CREATED]
        assert len(repository.list_tickets()) == 2

    def test_start_from_now_leaves_existing_mail_alone_and_takes_new_mail(
        self, make_processor: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """start_from="now": mail already there is untouched; mail arriving later is processed."""
        old = connector.add(make_email(message_id="<old@c.example>"))
        processor = make_processor(start_from="now")
        first = processor.run_once()
        assert first.outcomes == ()
        assert first.mailboxes[0].left_alone == 1
        connector.add(make_email(message_id="<new@c.example>", subject="New"))
        second = processor.run_once()
        assert [o.outcome for o in second.outcomes] == [Outcome.CREATED]
        assert [t.summary for t in repository.list_tickets()] == ["New"]
        assert old in [m.ref for m in connector.fetch()]

    def test_a_disabled_mailbox_is_not_read(
        self, make_processor: Build, connector: MemoryConnector
    ) -> None:
        """A mailbox with enabled=False is skipped by run_once."""
        connector.add(make_email())
        assert make_processor(enabled=False).run_once().outcomes == ()
        assert connector.acks == []

    def test_simulate_writes_nothing(
        self, make_processor: Build, repository: TicketRepository, transport: MemoryTransport
    ) -> None:
        """simulate() tells what would happen and leaves the repository and outbox empty."""
        processor = make_processor()
        outcome = processor.simulate(make_email())
        assert outcome.outcome is Outcome.CREATED
        assert outcome.acknowledged
        assert repository.list_tickets() == []
        assert repository.due_outgoing(utcnow()) == []
        assert transport.sent == []


class TestOutbox:
    def test_f9_a_transient_send_failure_is_retried_with_the_same_message_id(
        self, repository: TicketRepository, settings: ProcessorSettings, connector: MemoryConnector
    ) -> None:
        """F9: a 451 then a 250 sends the acknowledgement once, under one Message-ID."""
        from halomail.errors import TransientTransportError

        attempts: list[str] = []

        def flaky(mail):  # type: ignore[no-untyped-def]
            attempts.append(mail.message_id)
            if len(attempts) == 1:
                raise TransientTransportError("451 try again later")

        transport = MemoryTransport(flaky)
        now = [utcnow()]
        processor = MailProcessor(
            repository, [Mailbox(connector)], settings, transport=transport, clock=lambda: now[0]
        )
        connector.add(make_email())
        first = processor.run_once()
        assert (first.sent.sent, first.sent.retrying) == (0, 1)
        assert processor.send_outbox().sent == 0  # not due yet
        now[0] += dt.timedelta(hours=2)
        assert processor.send_outbox().sent == 1
        assert len(attempts) == 2
        assert attempts[0] == attempts[1]
        assert len(transport.sent) == 1
        assert processor.send_outbox().sent == 0

    def test_a_permanent_send_failure_is_recorded_on_the_ticket(
        self, repository: TicketRepository, settings: ProcessorSettings, connector: MemoryConnector
    ) -> None:
        """A 550 is not retried; the ticket gets a private note saying the mail failed."""
        from halomail.errors import PermanentTransportError

        def refuse(mail):  # type: ignore[no-untyped-def]
            raise PermanentTransportError("550 no such user")

        processor = MailProcessor(
            repository, [Mailbox(connector)], settings, transport=MemoryTransport(refuse)
        )
        connector.add(make_email())
        report = processor.run_once()
        assert report.sent.failed == 1
        n = report.outcomes[0].ticket_id or 0
        note = repository.list_actions(n)[-1]
        assert note.kind is ActionKind.SEND_FAILED
        assert "550 no such user" in note.body
        assert not note.public

    def test_without_a_transport_mail_stays_queued(
        self, repository: TicketRepository, settings: ProcessorSettings, connector: MemoryConnector
    ) -> None:
        """A processor with no transport queues acknowledgements and sends nothing."""
        processor = MailProcessor(repository, [Mailbox(connector)], settings)
        connector.add(make_email())
        processor.run_once()
        (queued,) = repository.due_outgoing(utcnow())
        assert queued.status is OutboxStatus.PENDING


def test_close_releases_connectors_and_the_repository_it_owns(tmp_path: Path) -> None:
    """close() closes every connector and an owned repository, once, however often called."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector = MemoryConnector("Support")
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        ProcessorSettings(loop_token=LOOP_TOKEN),
        owns_repository=True,
    )
    with processor:
        pass
    processor.close()
    assert connector.closes == 1
    with pytest.raises(RepositoryError, match="closed"):
        repository.list_tickets()


def test_close_leaves_a_host_repository_open(tmp_path: Path) -> None:
    """A repository the host passed in stays open after close(): the host owns it."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        MailProcessor(
            repository, [Mailbox(MemoryConnector("Support"))], ProcessorSettings(LOOP_TOKEN)
        ).close()
        assert list(repository.list_tickets()) == []
