"""An agent's reply recorded with its email by `ticket_email(action=…)`: one transaction."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from halomail import ActionKind, NewAction, RepositoryError
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import SendingRestrictedError
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.render import MessageKind
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from halomail.tickets.staff import Agent, Team
from tests.conftest import make_email

AMY = Agent("Amy Pond", "amy@helpdesk.example", team="Service Desk")
RORY = Agent("Rory Williams", "rory@helpdesk.example", team="Sales")
ALICE = "alice@customer.example"
REPLY = "We replaced the toner; please try again."


def _processor(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> MailProcessor:
    mailbox = Mailbox(connector, allowed_teams=("Service Desk",))
    return MailProcessor(
        repository,
        [mailbox],
        settings,
        transport=transport,
        agents=[AMY, RORY],
        teams=[Team("Service Desk"), Team("Sales")],
    )


def _ticket_from_alice(processor: MailProcessor, connector: MemoryConnector) -> int:
    connector.add(make_email())
    processor.run_once()
    (ticket,) = processor.repository.list_tickets()
    return ticket.id


def _reply(ticket_id: int, by: str = "amy@helpdesk.example") -> NewAction:
    return NewAction(ticket_id, ActionKind.EMAIL_OUT, REPLY, from_address=by)


def _emails(repository: TicketRepository, ticket_id: int) -> int:
    """How many emails to Alice about the ticket the outbox holds."""
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return repository.count_outgoing(to=ALICE, since=since, ticket_id=ticket_id)


def _replies(repository: TicketRepository, ticket_id: int) -> list[str]:
    return [a.body for a in repository.list_actions(ticket_id) if a.kind is ActionKind.EMAIL_OUT]


def test_the_reply_and_its_email_are_recorded_together(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """One call records the agent's action and queues the email that carries it."""
    processor = _processor(repository, settings, connector, transport)
    ticket_id = _ticket_from_alice(processor, connector)
    notice = processor.notifier.ticket_email(
        ticket_id, MessageKind.TICKET_UPDATE, note=REPLY, agent=AMY.email, action=_reply(ticket_id)
    )
    assert notice.queued is not None
    assert notice.action is not None
    assert _replies(repository, ticket_id) == [REPLY]
    # The action carries its email's Message-ID: an answer quoting it finds the ticket.
    assert notice.action.message_id == notice.queued.message_id
    found = repository.find_ticket_by_message_ids([notice.queued.message_id])
    assert found is not None
    assert found.id == ticket_id


def test_a_refused_sender_leaves_neither_the_reply_nor_an_email(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """An agent whose team may not send from the mailbox gets an error, and nothing is kept."""
    processor = _processor(repository, settings, connector, transport)
    ticket_id = _ticket_from_alice(processor, connector)
    queued_before = _emails(repository, ticket_id)
    with pytest.raises(SendingRestrictedError):
        processor.notifier.ticket_email(
            ticket_id,
            MessageKind.TICKET_UPDATE,
            note=REPLY,
            agent=RORY.email,
            action=_reply(ticket_id, by=RORY.email),
        )
    assert _replies(repository, ticket_id) == []
    assert _emails(repository, ticket_id) == queued_before


def test_a_reply_with_no_one_to_email_is_kept_and_says_why(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """A throttled address queues nothing, but the agent's words are kept and the reason given."""
    processor = _processor(repository, settings, connector, transport)
    ticket_id = _ticket_from_alice(processor, connector)
    for _ in range(10):  # the throttle: ten mails to one address about one ticket
        processor.notifier.ticket_email(ticket_id, MessageKind.TICKET_UPDATE, note="ping")
    notice = processor.notifier.ticket_email(
        ticket_id, MessageKind.TICKET_UPDATE, note=REPLY, action=_reply(ticket_id)
    )
    assert notice.queued is None
    assert notice.reason == "throttled"
    assert notice.action is not None
    assert notice.action.message_id is None
    assert _replies(repository, ticket_id) == [REPLY]


def test_an_action_about_another_ticket_is_refused(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> None:
    """A reply recorded on one ticket cannot ride on another ticket's email."""
    processor = _processor(repository, settings, connector, transport)
    ticket_id = _ticket_from_alice(processor, connector)
    with pytest.raises(ValueError, match="ticket 99"):
        processor.notifier.ticket_email(
            ticket_id, MessageKind.TICKET_UPDATE, note=REPLY, action=_reply(99)
        )
    assert _replies(repository, ticket_id) == []


def test_an_outbox_the_database_refuses_rolls_the_reply_back(
    tmp_path: Path, settings: ProcessorSettings, connector: MemoryConnector
) -> None:
    """When the email cannot be written, the reply is not either: both or neither, on SQLite."""
    path = tmp_path / "helpdesk.db"
    repository = SQLiteTicketRepository(path)
    try:
        processor = _processor(repository, settings, connector, MemoryTransport())
        ticket_id = _ticket_from_alice(processor, connector)
        queued_before = _emails(repository, ticket_id)
        # A real database fault on the outbox table, from a second connection.
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                "BEGIN SELECT RAISE(ABORT, 'the outbox is closed'); END"
            )
        with pytest.raises(RepositoryError):
            processor.notifier.ticket_email(
                ticket_id, MessageKind.TICKET_UPDATE, note=REPLY, action=_reply(ticket_id)
            )
        assert _replies(repository, ticket_id) == []
        assert _emails(repository, ticket_id) == queued_before
    finally:
        repository.close()
