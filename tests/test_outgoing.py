"""Outgoing settings: per-mailbox transports and senders, per-customer From and Reply-To."""

from __future__ import annotations

import email
import tomllib
from email.policy import compat32
from pathlib import Path

from halomail.app import build_processor
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.config.loader import parse_config
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email


def _headers(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=compat32)


def test_a_mailbox_with_its_own_transport_sends_through_it(settings: ProcessorSettings) -> None:
    """Mail of a mailbox that overrides the transport leaves through it; the others' do not."""
    default, sales_transport = MemoryTransport(), MemoryTransport()
    support, sales = MemoryConnector("Support"), MemoryConnector("Sales")
    support.add(make_email(message_id="<s-1@customer.example>"))
    sales.add(make_email(subject="Quote for 40 laptops", message_id="<q-1@customer.example>"))
    processor = MailProcessor(
        InMemoryTicketRepository(),
        [
            Mailbox(support),
            Mailbox(
                sales,
                transport=sales_transport,
                sender=SenderIdentity("sales@helpdesk.example", "Sales Team"),
            ),
        ],
        settings,
        transport=default,
    )
    report = processor.run_once()
    assert report.sent.sent == 2
    assert [_headers(m.data)["From"] for m in default.sent] == [
        "Support <support@helpdesk.example>"
    ]
    assert [_headers(m.data)["From"] for m in sales_transport.sent] == [
        "Sales Team <sales@helpdesk.example>"
    ]
    assert "Quote for 40 laptops" in _headers(sales_transport.sent[0].data)["Subject"]


def test_mail_of_a_mailbox_without_any_transport_stays_queued(
    settings: ProcessorSettings,
) -> None:
    """With no transport for its mailbox the acknowledgement waits, and is sent once one exists."""
    repository = InMemoryTicketRepository()
    connector = MemoryConnector("Support")
    connector.add(make_email())
    processor = MailProcessor(repository, [Mailbox(connector)], settings)
    assert processor.run_once().sent.sent == 0
    transport = MemoryTransport()
    later = MailProcessor(repository, [Mailbox(connector)], settings, transport=transport)
    assert later.run_once().sent.sent == 1
    assert len(transport.sent) == 1


def test_a_customer_overrides_from_and_reply_to(
    settings: ProcessorSettings, tmp_path: Path
) -> None:
    """A customer's own From and Reply-To replace the mailbox's on mail about its tickets."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    repository.add_customer(
        "Contoso",
        ["contoso.example"],
        from_address="contoso-desk@helpdesk.example",
        reply_address="contoso-replies@helpdesk.example",
    )
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    connector.add(
        make_email(sender="Ann <ann@contoso.example>", message_id="<c-1@contoso.example>")
    )
    connector.add(make_email(sender="Bo <bo@other.example>", message_id="<o-1@other.example>"))
    processor = MailProcessor(repository, [Mailbox(connector)], settings, transport=transport)
    processor.run_once()
    by_recipient = {m.recipients[0]: m for m in transport.sent}
    contoso = by_recipient["ann@contoso.example"]
    assert _headers(contoso.data)["From"] == "Support <contoso-desk@helpdesk.example>"
    assert _headers(contoso.data)["Reply-To"] == "contoso-replies@helpdesk.example"
    assert contoso.envelope_from == "contoso-desk@helpdesk.example"
    other = _headers(by_recipient["bo@other.example"].data)
    assert other["From"] == "Support <support@helpdesk.example>"
    assert other["Reply-To"] is None
    repository.close()


def test_config_mailbox_outgoing_override_gets_its_own_transport(tmp_path: Path) -> None:
    """A [mailboxes.outgoing] override builds a transport for that mailbox only."""
    for inbox in ("support", "sales"):
        (tmp_path / inbox).mkdir()
    config = parse_config(
        tomllib.loads(
            f"""
        [outgoing]
        transport = "maildir"
        path = "{tmp_path / "default-out"}"
        from_address = "support@helpdesk.example"

        [[mailboxes]]
        name = "Support"
        connection = "maildir"
        path = "{tmp_path / "support"}"

        [[mailboxes]]
        name = "Sales"
        connection = "maildir"
        path = "{tmp_path / "sales"}"
        [mailboxes.outgoing]
        path = "{tmp_path / "sales-out"}"
        from_address = "sales@helpdesk.example"
        """
        ),
        base_dir=tmp_path,
    )
    processor = build_processor(config, InMemoryTicketRepository())
    support, sales = processor.mailboxes
    assert support.transport is None
    assert sales.transport is not None
    assert sales.sender is not None
    assert sales.sender.from_address == "sales@helpdesk.example"
