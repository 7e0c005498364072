"""A web form sends for someone else: the ticket is the requester's, not the form's.

With ``user_email`` mapped, the requester's user and customer are looked up again, so
the ticket carries their name and customer, the acknowledgement leaves with their
customer's From, and only they (and their customer's people) may update the ticket.
"""

from __future__ import annotations

import email
import email.policy

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.rules import rules_from_config
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email

FORM_RULE = {
    "name": "Contact form",
    "type": "formatted_email",
    "sequence": 50,
    "from": "forms@site.example",
    "fields": [
        {"target": "user_email", "match": "line", "label": "Email:"},
        {"target": "summary", "match": "line", "label": "Subject:"},
    ],
}


def _form(requester: str) -> bytes:
    return make_email(
        sender="Website Forms <forms@site.example>",
        subject="New submission: Contact us",
        message_id="<form-1@site.example>",
        body=f"Name: Someone\nEmail: {requester}\nSubject: VPN drops every hour\n"
        "Message: Since Monday the VPN disconnects.\n",
    )


def _directory(repository: TicketRepository) -> None:
    """Customer A owns the form's domain; customer B is the requester's, with its own From."""
    add_customer = repository.add_customer  # type: ignore[attr-defined]
    add_user = repository.add_user  # type: ignore[attr-defined]
    site = add_customer("Site Owner A", domains=("site.example",))
    bravo = add_customer(
        "Bravo Ltd", domains=("bravo.example",), from_address="helpdesk@bravo-support.example"
    )
    add_user("forms@site.example", "Website Forms", site.id)
    add_user("webmaster@site.example", "Webmaster", site.id)
    add_user("Beth.Jones@bravo.example", "Beth Jones", bravo.id)


def _processor(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> MailProcessor:
    return MailProcessor(
        repository,
        [Mailbox(connector)],
        settings,
        transport=transport,
        rules=rules_from_config([FORM_RULE], mailboxes=["Support"]),
    )


def test_a_form_for_a_known_user_opens_their_ticket_with_their_name_and_customer(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> None:
    """The ticket is Beth's at Bravo; the acknowledgement goes to her from Bravo's From."""
    _directory(repository)
    processor = _processor(repository, connector, transport, settings)
    connector.add(_form("beth.jones@BRAVO.example"))
    (outcome,) = processor.run_once().outcomes
    assert outcome.outcome is Outcome.CREATED
    ticket = repository.get_ticket(outcome.ticket_id)
    assert ticket is not None
    assert (ticket.user_email, ticket.user_name, ticket.customer) == (
        "beth.jones@bravo.example",
        "Beth Jones",
        "Bravo Ltd",
    )
    assert ticket.summary == "VPN drops every hour"
    (sent,) = transport.sent
    assert sent.recipients == ("beth.jones@bravo.example",)
    message = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert "helpdesk@bravo-support.example" in str(message["From"])


def test_only_the_requester_and_her_customer_may_update_the_form_ticket(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> None:
    """Beth's reply updates her ticket; the form owner's webmaster replying does not."""
    _directory(repository)
    processor = _processor(repository, connector, transport, settings)
    connector.add(_form("beth.jones@bravo.example"))
    (created,) = processor.run_once().outcomes
    ticket = repository.get_ticket(created.ticket_id)
    assert ticket is not None
    subject = f"Re: [ID:{ticket.id}] VPN drops every hour"
    connector.add(
        make_email(
            sender="Webmaster <webmaster@site.example>",
            subject=subject,
            message_id="<intruder-1@site.example>",
            body="I am not the requester.\n",
        )
    )
    (intruder,) = processor.run_once().outcomes
    assert intruder.ticket_id != ticket.id
    connector.add(
        make_email(
            sender="Beth Jones <beth.jones@bravo.example>",
            subject=subject,
            message_id="<reply-1@bravo.example>",
            body="It dropped again at 10:00.\n",
        )
    )
    (reply,) = processor.run_once().outcomes
    assert (reply.outcome, reply.ticket_id) == (Outcome.UPDATED, ticket.id)
    bodies = [action.body for action in repository.list_actions(ticket.id)]
    assert any("dropped again" in body for body in bodies)
    assert not any("not the requester" in body for body in bodies)


def test_a_form_for_an_unknown_requester_carries_neither_the_forms_name_nor_customer(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> None:
    """An address nobody knows gets no customer and no name, never the form's."""
    _directory(repository)
    processor = _processor(repository, connector, transport, settings)
    connector.add(_form("stranger@elsewhere.example"))
    (outcome,) = processor.run_once().outcomes
    ticket = repository.get_ticket(outcome.ticket_id)
    assert ticket is not None
    assert (ticket.user_email, ticket.user_name, ticket.customer) == (
        "stranger@elsewhere.example",
        "",
        None,
    )
