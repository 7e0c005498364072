"""Embed halomail in an application: in-memory mailbox and repository, no servers.

Run: python examples/embed_in_memory.py
"""

from __future__ import annotations

from halomail import (
    InMemoryTicketRepository,
    Mailbox,
    MailProcessor,
    MemoryConnector,
    MemoryTransport,
    ProcessorSettings,
    SenderIdentity,
)

NEW_REQUEST = b"""\
From: Alice Martin <alice@customer.example>
To: support@helpdesk.example
Subject: Cannot log in to the CRM
Message-ID: <login-1@customer.example>
Content-Type: text/plain; charset=utf-8

Since this morning the CRM says my password is wrong.
"""


def main() -> None:
    """Process one new request and its follow-up, then show the ticket and the reply."""
    repository = InMemoryTicketRepository()
    inbox = MemoryConnector("Support", [NEW_REQUEST])
    transport = MemoryTransport()
    processor = MailProcessor(
        repository,
        [Mailbox(inbox, ticket_type="Access")],
        ProcessorSettings(
            loop_token="example-token",
            domain="helpdesk.example",
            default_sender=SenderIdentity("support@helpdesk.example", "Support"),
        ),
        transport=transport,
    )
    first = processor.run_once()
    ticket_id = first.outcomes[0].ticket_id
    print(f"email 1: {first.outcomes[0].outcome.value} ticket {ticket_id}")

    follow_up = NEW_REQUEST.replace(b"<login-1@", b"<login-2@").replace(
        b"Subject: Cannot", f"Subject: Re: [ID:{ticket_id}] Cannot".encode()
    )
    inbox.add(follow_up)
    second = processor.run_once()
    print(f"email 2: {second.outcomes[0].outcome.value} ticket {second.outcomes[0].ticket_id}")

    for ticket in repository.list_tickets():
        actions = repository.list_actions(ticket.id)
        print(
            f"ticket {ticket.id} [{ticket.ticket_type}] {ticket.summary!r}: {len(actions)} actions"
        )
    for sent in transport.sent:
        print(f"acknowledgement to {', '.join(sent.recipients)} ({len(sent.data)} bytes)")


if __name__ == "__main__":
    main()
