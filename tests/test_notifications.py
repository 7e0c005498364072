"""Mail about tickets: message groups per mailbox and team, signatures, restrictions, throttle."""

from __future__ import annotations

import email
from email.policy import compat32

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import SendingRestrictedError
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.render import MessageGroup, MessageKind, Template, TemplateRenderer
from halomail.tickets.repository import TicketRepository
from halomail.tickets.staff import Agent, Team
from tests.conftest import make_email

FRIENDLY = MessageGroup(
    "Friendly",
    {
        MessageKind.NEW_TICKET_LOGGED: Template(
            subject="$tag Got it, $username!",
            text="We logged ticket $ticketid: $summary\n-- \n$signature\n",
        ),
        MessageKind.TICKET_UPDATE: Template(
            subject="$tag News on $summary",
            text="$actionnote\n\n-- \n$signature\n",
            html="<p>$actionnote</p><p>$signature</p>",
        ),
    },
)
SALES = MessageGroup(
    "Sales voice",
    {MessageKind.TICKET_UPDATE: Template(subject="$tag Sales: $summary", text="$actionnote\n")},
)
AMY = Agent("Amy Pond", "amy@helpdesk.example", team="Service Desk", signature="Amy Pond")
RORY = Agent("Rory Williams", "rory@helpdesk.example", team="Sales")


def _processor(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
    **mailbox: object,
) -> MailProcessor:
    return MailProcessor(
        repository,
        [Mailbox(connector, **mailbox)],  # type: ignore[arg-type]
        settings,
        transport=transport,
        renderer=TemplateRenderer([FRIENDLY, SALES]),
        agents=[AMY, RORY],
        teams=[Team("Service Desk"), Team("Sales", message_group="Sales voice")],
        ticket_url="https://desk.example/tickets/{id}",
    )


def _sent(transport: MemoryTransport, index: int = -1) -> email.message.Message:
    return email.message_from_bytes(transport.sent[index].data, policy=compat32)


def _body(message: email.message.Message) -> str:
    part = message.get_payload()[0] if message.is_multipart() else message
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8").replace("\r\n", "\n")


def test_the_acknowledgement_comes_from_the_mailbox_message_group(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """A mailbox on the Friendly group acknowledges in its words, with its signature."""
    processor = _processor(
        repository,
        settings,
        connector,
        transport,
        message_group="Friendly",
        signature="The Service Desk",
    )
    connector.add(make_email())
    processor.run_once()
    message = _sent(transport)
    assert message["Subject"] == "[ID:1] Got it, Alice Martin!"
    assert _body(message) == "We logged ticket 1: Printer is jammed\n-- \nThe Service Desk\n"


def test_a_template_that_fails_sends_nothing_and_the_ticket_is_still_created(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """V4: a render that raises (division by zero on a value) logs why; no mail, one ticket."""
    broken = MessageGroup(
        "Broken",
        {
            MessageKind.NEW_TICKET_LOGGED: Template(
                subject="$tag {{ 1 // (ticketid|int - 1) }}", text="never"
            )
        },
    )
    processor = MailProcessor(
        repository,
        [Mailbox(connector, message_group="Broken")],
        settings,
        transport=transport,
        renderer=TemplateRenderer([broken]),
    )
    connector.add(make_email())
    report = processor.run_once()
    (outcome,) = report.outcomes
    assert outcome.outcome.value == "created"
    assert outcome.acknowledged is False
    assert transport.sent == []
    assert len(repository.list_tickets()) == 1
    assert "failed, nothing sent" in caplog.text


def test_an_agent_update_carries_the_agent_signature_thread_and_url(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """ticket_email renders the update with the agent's signature, threaded, no Auto-Submitted."""
    processor = _processor(
        repository,
        settings,
        connector,
        transport,
        message_group="Friendly",
        agent_signatures={"amy@helpdesk.example": "Amy, Service Desk, ext. 204"},
    )
    connector.add(make_email(message_id="<first@customer.example>"))
    processor.run_once()
    notice = processor.notifier.ticket_email(
        1, MessageKind.TICKET_UPDATE, note="The part arrives {{ monday }}.", agent=AMY.email
    )
    assert notice.sent
    processor.send_outbox()
    message = _sent(transport)
    assert message["Subject"] == "[ID:1] News on Printer is jammed"
    assert message["Auto-Submitted"] is None  # a person wrote it
    assert message["In-Reply-To"] == "<first@customer.example>"
    text = _body(message)
    assert text == "The part arrives {{ monday }}.\n\n-- \nAmy, Service Desk, ext. 204\n"


def test_the_ticket_team_group_wins_over_the_mailbox_group(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """A ticket of the Sales team is written in the Sales team's message group."""
    processor = _processor(repository, settings, connector, transport, message_group="Friendly")
    connector.add(make_email())
    processor.run_once()
    repository.assign(1, agent=RORY.email, team="Sales")
    processor.notifier.ticket_email(1, "ticket_update", note="Quote attached.", agent=RORY.email)
    processor.send_outbox()
    assert _sent(transport)["Subject"] == "[ID:1] Sales: Printer is jammed"


def test_a_team_that_may_not_send_from_the_mailbox_is_refused(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """Sending restrictions: Rory (Sales) may not send from a Service Desk-only mailbox."""
    processor = _processor(
        repository, settings, connector, transport, allowed_teams=("Service Desk",)
    )
    connector.add(make_email())
    processor.run_once()
    with pytest.raises(SendingRestrictedError, match="may not send from mailbox 'Support'"):
        processor.notifier.ticket_email(1, MessageKind.TICKET_UPDATE, note="x", agent=RORY.email)
    assert processor.notifier.ticket_email(
        1, MessageKind.TICKET_UPDATE, note="y", agent=AMY.email
    ).sent


def test_mail_about_one_ticket_to_one_address_is_throttled(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """No more than the throttle's N mails per ticket and recipient in the window."""
    processor = _processor(repository, settings, connector, transport)
    connector.add(make_email())
    processor.run_once()  # the acknowledgement is the first of the ten
    notices = [
        processor.notifier.ticket_email(1, MessageKind.NOTE_ADDED, note=f"note {n}")
        for n in range(12)
    ]
    assert [n.sent for n in notices] == [True] * 9 + [False] * 3
    assert {n.reason for n in notices[9:]} == {"throttled"}
