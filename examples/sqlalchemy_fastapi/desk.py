"""The helpdesk's halomail setup: one Maildir mailbox, its agents, and where mail goes."""

from __future__ import annotations

from pathlib import Path

from halomail import (
    Agent,
    Mailbox,
    MaildirConnector,
    MailProcessor,
    MailTransport,
    ProcessorSettings,
    SenderIdentity,
)

from .repository import SQLAlchemyTicketRepository, sqlite_engine

SUPPORT = "support@helpdesk.example"

#: The agents who may answer tickets; a real helpdesk reads them from its users table.
AGENTS = (
    Agent("Amy Agent", "amy@helpdesk.example", team="Service Desk"),
    Agent("Sam Sales", "sam@helpdesk.example", team="Sales"),
)


def open_repository(database: Path) -> SQLAlchemyTicketRepository:
    """The repository on an SQLite file (tables made if missing)."""
    return SQLAlchemyTicketRepository(sqlite_engine(str(database)))


def make_processor(
    repository: SQLAlchemyTicketRepository,
    maildir: Path,
    transport: MailTransport | None = None,
) -> MailProcessor:
    """halomail over the host's repository: the Support Maildir, answered by the Service Desk.

    Args:
        repository: The host's repository.
        maildir: The Support mailbox, a Maildir folder.
        transport: How queued mail is sent (``SmtpTransport`` in production).
    """
    support = Mailbox(
        MaildirConnector("Support", maildir),
        ticket_type="Incident",
        # Only the Service Desk answers from the support address.
        allowed_teams=("Service Desk",),
        signature="The Helpdesk team",
    )
    settings = ProcessorSettings(
        loop_token="sqlalchemy-fastapi-example",
        domain="helpdesk.example",
        default_sender=SenderIdentity(SUPPORT, "Helpdesk"),
    )
    return MailProcessor(repository, [support], settings, transport=transport, agents=AGENTS)
