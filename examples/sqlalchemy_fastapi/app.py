"""The helpdesk's web API: list tickets, and let an agent reply to one.

An agent's reply is two writes: the reply on the ticket (the host's table) and the
email that carries it (halomail's outbox). They happen in one
:meth:`~.repository.SQLAlchemyTicketRepository.unit_of_work`, so both commit or
neither does: a reply the notifier cannot email (the agent may not send from the
mailbox, the ticket has no address, the customer is throttled) is not recorded.

Run it with ``uvicorn --factory sqlalchemy_fastapi.app:app_from_environment`` (see
README.md).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel

from halomail import (
    ActionKind,
    MailProcessor,
    MessageKind,
    NewAction,
    RepositoryError,
    SendingRestrictedError,
)

from .desk import make_processor, open_repository
from .repository import SQLAlchemyTicketRepository


class TicketOut(BaseModel):
    """A ticket as the API shows it."""

    id: int
    summary: str
    status: str
    user_email: str
    created_at: dt.datetime


class ReplyIn(BaseModel):
    """An agent's reply to a ticket's user."""

    agent: str
    text: str


class ReplyOut(BaseModel):
    """The reply as recorded, and the email queued for it."""

    action_id: int
    message_id: str
    to: list[str]


class ReplyNotSentError(Exception):
    """The notifier queued nothing for a reply: the reply is rolled back with it."""


def create_app(repository: SQLAlchemyTicketRepository, processor: MailProcessor) -> FastAPI:
    """The API over the repository; ``processor.notifier`` emails agents' replies.

    Args:
        repository: The helpdesk's repository (the one ``processor`` writes in).
        processor: halomail's processor, for its notifier.
    """
    app = FastAPI(title="Helpdesk")

    @app.get("/tickets")
    def list_tickets(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[TicketOut]:
        """Tickets, newest first."""
        return [
            TicketOut(
                id=t.id,
                summary=t.summary,
                status=t.status.value,
                user_email=t.user_email,
                created_at=t.created_at,
            )
            for t in repository.list_tickets(limit=limit, offset=offset)
        ]

    @app.post("/tickets/{ticket_id}/replies", status_code=201)
    def reply(ticket_id: int, body: ReplyIn) -> ReplyOut:
        """Record an agent's reply and queue its email: both in one transaction, or neither."""
        if repository.get_ticket(ticket_id) is None:
            raise HTTPException(404, f"no ticket {ticket_id}")
        try:
            with repository.unit_of_work():
                action = repository.add_action(
                    NewAction(ticket_id, ActionKind.EMAIL_OUT, body.text, from_address=body.agent)
                )
                # The notifier's own transaction joins ours as a savepoint.
                notice = processor.notifier.ticket_email(
                    ticket_id, MessageKind.TICKET_UPDATE, note=body.text, agent=body.agent
                )
                if notice.queued is None:
                    raise ReplyNotSentError(notice.reason)  # leaving the block rolls back
        except SendingRestrictedError as exc:
            raise HTTPException(403, str(exc)) from exc
        except ReplyNotSentError as exc:
            raise HTTPException(409, f"the reply was not sent: {exc}") from exc
        except RepositoryError as exc:
            raise HTTPException(409, str(exc)) from exc
        queued = notice.queued
        return ReplyOut(action_id=action.id, message_id=queued.message_id, to=list(queued.to))

    return app


def app_from_environment() -> FastAPI:
    """The app on ``HELPDESK_DATABASE`` and ``HELPDESK_MAILDIR`` (for uvicorn's ``--factory``)."""
    repository = open_repository(Path(os.environ.get("HELPDESK_DATABASE", "helpdesk.db")))
    maildir = Path(os.environ.get("HELPDESK_MAILDIR", "inbox"))
    return create_app(repository, make_processor(repository, maildir))
