"""The outbox over a real SMTP server: one connection per pass, 451 then 250 sends once."""

from __future__ import annotations

import datetime as dt
import email
from email.policy import compat32

import attrs

from halomail.backends.memory import MemoryConnector
from halomail.backends.smtp import SmtpTransport
from halomail.inbound.classify import loop_signature
from halomail.outbound.outbox import Backoff
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import HELPDESK, make_email
from tests.servers.smtp import SmtpServer


def _transport(server: SmtpServer) -> SmtpTransport:
    return SmtpTransport(
        server.host,
        server.port,
        security="starttls",
        username=server.username,
        password=server.password,
        tls_ca_file=server.ca_file,
        timeout=10,
    )


def test_acknowledgements_leave_through_one_authenticated_tls_connection(
    smtp_server: SmtpServer, settings: ProcessorSettings
) -> None:
    """Three new tickets: three acknowledgements on one STARTTLS+AUTH session, headers intact."""
    repository = SQLiteTicketRepository(":memory:")
    connector = MemoryConnector("Support")
    for n in range(3):
        connector.add(
            make_email(
                sender=f"Customer {n} <c{n}@customer.example>",
                subject=f"Problem {n}",
                message_id=f"<p{n}@customer.example>",
            )
        )
    processor = MailProcessor(
        repository, [Mailbox(connector)], settings, transport=_transport(smtp_server)
    )
    report = processor.run_once()
    assert report.sent.sent == 3
    received = smtp_server.messages
    assert [m.rcpt_tos for m in received] == [
        ("c0@customer.example",),
        ("c1@customer.example",),
        ("c2@customer.example",),
    ]
    assert {m.session for m in received} == {received[0].session}
    assert all(m.tls and m.auth_user == smtp_server.username for m in received)
    assert all(m.mail_from == HELPDESK for m in received)
    first = email.message_from_bytes(received[0].raw, policy=compat32)
    assert first["Subject"].startswith("[ID:1] ")
    assert first["In-Reply-To"] == "<p0@customer.example>"
    assert first["Auto-Submitted"] == "auto-replied"
    assert first["X-Halomail-Loop"] == loop_signature(
        "test-loop-token", first["Message-ID"].strip("<>")
    )
    repository.close()


def test_f9_a_451_then_250_sends_once_with_the_same_message_id(
    smtp_server: SmtpServer, settings: ProcessorSettings
) -> None:
    """F9: the server defers once; the retry delivers exactly one copy, same Message-ID."""
    repository = SQLiteTicketRepository(":memory:")
    connector = MemoryConnector("Support")
    connector.add(make_email())
    now = [dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)]
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        attrs.evolve(settings, backoff=Backoff(base_seconds=60, cap_seconds=60)),
        transport=_transport(smtp_server),
        clock=lambda: now[0],
    )
    smtp_server.fail_next("451 4.3.0 Try again later", at="DATA")
    first = processor.run_once()
    assert (first.sent.sent, first.sent.retrying) == (0, 1)
    assert smtp_server.messages == []
    (queued,) = repository.due_outgoing(now[0] + dt.timedelta(minutes=5), limit=10)
    assert queued.attempts == 1
    assert "451" in (queued.last_error or "")

    now[0] = now[0] + dt.timedelta(minutes=5)
    second = processor.run_once()
    assert second.sent.sent == 1
    assert len(smtp_server.messages) == 1
    delivered = email.message_from_bytes(smtp_server.messages[0].raw, policy=compat32)
    assert delivered["Message-ID"] == f"<{queued.message_id}>"
    assert processor.run_once().sent.sent == 0
    assert len(smtp_server.messages) == 1
    assert repository.due_outgoing(now[0] + dt.timedelta(minutes=60), limit=10) == []
    (ticket,) = repository.list_tickets()
    assert ticket.status.value == "new"
    repository.close()


def test_a_550_is_recorded_on_the_ticket_and_not_retried(
    smtp_server: SmtpServer, settings: ProcessorSettings
) -> None:
    """A refused recipient fails the mail for good and a private note says why."""
    repository = SQLiteTicketRepository(":memory:")
    connector = MemoryConnector("Support")
    connector.add(make_email(sender="Ghost <ghost@customer.example>"))
    smtp_server.refuse["ghost@customer.example"] = "550 5.1.1 No such user"
    processor = MailProcessor(
        repository, [Mailbox(connector)], settings, transport=_transport(smtp_server)
    )
    report = processor.run_once()
    assert (report.sent.sent, report.sent.failed) == (0, 1)
    notes = [a for a in repository.list_actions(1) if a.kind.value == "send_failed"]
    assert len(notes) == 1
    assert "550" in notes[0].body
    assert not notes[0].public
    assert processor.run_once().sent.failed == 0  # not tried again
    assert smtp_server.messages == []
    repository.close()
