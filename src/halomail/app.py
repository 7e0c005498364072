"""From a :class:`~halomail.Config` to running objects: repository, mailboxes, processor.

The command line uses this; a host application usually builds its own
:class:`~halomail.MailProcessor` with its own repository instead.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Iterator
from typing import Any

import attrs

from halomail.backends.base import (
    Disposition,
    FetchedMessage,
    MailboxConnector,
    MailTransport,
    OutgoingEmail,
)
from halomail.backends.files import EmlFileTransport
from halomail.backends.local import open_local_connector
from halomail.backends.memory import MemoryTransport
from halomail.config.loader import Config, MailboxSettings, OutgoingSettings
from halomail.errors import ConfigError, ConnectorError
from halomail.outbound.outbox import Backoff, MessageIdFactory, SenderIdentity, compose, header_safe
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.render import MessageKind, TemplateRenderer, TemplateValues
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import OutboxMail, OutboxStatus, RecordKind
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

log = logging.getLogger(__name__)

_LOCAL = frozenset({"maildir", "mbox", "eml-dir"})


def open_repository(config: Config) -> TicketRepository:
    """The repository named by ``[storage] url``."""
    path = config.storage.sqlite_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteTicketRepository(path)
    return InMemoryTicketRepository()


# The extra that installs each cloud backend's client library.
_EXTRAS = {
    "office365": "office365",
    "graph": "office365",
    "ews": "ews",
    "google": "google",
    "gmail": "google",
}


def _backend(module: str, kind: str) -> Any:
    """Import ``halomail.backends.<module>``, saying which extra to install if it fails."""
    try:
        return importlib.import_module(f"halomail.backends.{module}")
    except ImportError as exc:
        extra = _EXTRAS.get(kind, kind)
        raise ConfigError(
            kind,
            f"{kind!r} needs the {extra!r} extra: pip install 'halomail[{extra}]' ({exc})",
        ) from exc


def open_transport(
    outgoing: OutgoingSettings, *, key_path: str = "outgoing"
) -> MailTransport | None:
    """The transport named by ``transport`` in these settings.

    Args:
        outgoing: ``[outgoing]``, or a mailbox's merged override.
        key_path: Where the settings are in the file, for errors.

    Returns:
        The transport, or ``None`` for one this build cannot send through yet (the mail
        then stays queued, and a warning says so).

    Raises:
        ConfigError: The settings are incomplete, or the backend's extra is missing.
    """
    kind = outgoing.transport
    if kind == "maildir":
        if outgoing.path is None:
            raise ConfigError(f"{key_path}.path", "the maildir transport needs a folder")
        return EmlFileTransport(outgoing.path)
    if kind == "memory":
        return MemoryTransport()
    if kind == "smtp":
        transport: MailTransport = _backend("smtp", kind).SmtpTransport.from_settings(
            outgoing, key_path=key_path
        )
        return transport
    if kind == "graph":
        transport = _backend("graph", kind).GraphTransport.from_settings(outgoing)
        return transport
    if kind == "ews":
        transport = _backend("ews", kind).EwsTransport.from_settings(outgoing)
        return transport
    if kind == "gmail":
        transport = _backend("gmail", kind).GmailTransport.from_settings(outgoing)
        return transport
    log.warning("outgoing transport %r is not available yet; mail stays queued", kind)
    return None


def _open_remote_connector(config: Config, settings: MailboxSettings) -> MailboxConnector | None:
    """The connector of a mailbox on a server, or ``None`` for a type not supported yet."""
    limit = config.limits.max_message_bytes
    kind = settings.connection
    connector: MailboxConnector
    if kind == "imap":
        connector = _backend("imap", kind).ImapConnector.from_settings(
            settings, max_message_bytes=limit
        )
        return connector
    if kind == "pop3":
        connector = _backend("pop3", kind).Pop3Connector.from_settings(
            settings, max_message_bytes=limit
        )
        return connector
    if kind == "office365":
        connector = _backend("graph", kind).GraphConnector.from_settings(
            settings, max_message_bytes=limit
        )
        return connector
    if kind == "google":
        connector = _backend("gmail", kind).GmailConnector.from_settings(
            settings, max_message_bytes=limit
        )
        return connector
    if kind == "ews":
        connector = _backend("ews", kind).EwsConnector.from_settings(
            settings, max_message_bytes=limit
        )
        return connector
    return None


def sender_identity(outgoing: OutgoingSettings) -> SenderIdentity:
    """Who mail sent with these settings is from."""
    return SenderIdentity(
        from_address=outgoing.from_address or "helpdesk@halomail.invalid",
        display_name=outgoing.display_name or "",
        reply_address=outgoing.reply_address,
    )


@attrs.define
class _UnavailableConnector:
    """Stands in for a mailbox whose connection type this build cannot read yet.

    Reading it fails with a clear error, so the mailbox shows as failed while the
    others are processed.
    """

    name: str
    connection: str

    def fetch(self) -> Iterator[FetchedMessage]:
        raise ConnectorError(
            f"connection type {self.connection!r} is not supported by this version of halomail",
            mailbox=self.name,
        )

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Nothing was fetched, so there is nothing to dispose of."""

    def close(self) -> None:
        """Nothing to close."""


def build_mailbox(config: Config, settings: MailboxSettings) -> Mailbox:
    """A processor :class:`Mailbox` for one ``[[mailboxes]]`` entry."""
    if settings.connection in _LOCAL:
        connector = open_local_connector(
            settings, max_message_bytes=config.limits.max_message_bytes
        )
    else:
        remote = _open_remote_connector(config, settings)
        connector = remote or _UnavailableConnector(settings.name, settings.connection)
    outgoing = settings.effective_outgoing(config.outgoing)
    # Only a mailbox that overrides [outgoing] gets a transport of its own.
    transport = (
        open_transport(outgoing, key_path=f"{settings.key_path}.outgoing")
        if settings.outgoing is not None
        else None
    )
    return Mailbox(
        connector=connector,
        name=settings.name,
        ticket_type=settings.ticket_type,
        record=RecordKind(settings.record),
        send_acknowledgement=settings.send_acknowledgement,
        subject_tag=settings.subject_tag,
        start_from=settings.start_from,
        hijack=settings.hijack,
        sender=sender_identity(outgoing),
        enabled=settings.enabled,
        transport=transport,
        message_group=outgoing.message_group,
        signature=settings.signature,
        agent_signatures=settings.agent_signatures,
        allowed_teams=settings.allowed_teams,
    )


def build_processor(
    config: Config, repository: TicketRepository, *, transport: MailTransport | None = None
) -> MailProcessor:
    """A :class:`MailProcessor` for every mailbox of ``config``."""
    mailboxes = [build_mailbox(config, m) for m in config.mailboxes if m.enabled]
    processing = config.processing
    settings = ProcessorSettings(
        loop_token=processing.loop_token,
        previous_loop_tokens=processing.previous_loop_tokens,
        domain=processing.domain,
        default_sender=sender_identity(config.outgoing),
        limits=config.limits,
        bulk=processing.bulk,
        ack_throttle_count=processing.ack_throttle_count,
        ack_throttle_window=dt.timedelta(minutes=processing.ack_throttle_window_minutes),
        backoff=Backoff(max_attempts=processing.max_send_attempts),
        concurrent_mailboxes=processing.concurrent_mailboxes,
    )
    if transport is None and config.outgoing.explicit_keys:
        # Without an [outgoing] table nothing is configured to send with: mail waits.
        transport = open_transport(config.outgoing)
    return MailProcessor(
        repository,
        mailboxes,
        settings,
        transport=transport,
        rules=config.rules,
        services=config.services,
        ticket_templates=config.ticket_templates,
        renderer=TemplateRenderer(config.message_groups),
        agents=config.agents,
        teams=config.teams,
        ticket_url=config.processing.ticket_url,
        sms=config.sms,
    )


def send_test_email(config: Config, mailbox_name: str, to: str) -> tuple[OutgoingEmail, str]:
    """Send the Test Email template from ``mailbox_name``'s outgoing settings to ``to``, now.

    Nothing is queued: the mail goes straight through the mailbox's transport (its
    ``[mailboxes.outgoing]``, else ``[outgoing]``) so that the administrator sees at once
    whether sending works.

    Returns:
        The mail as sent, and a description of the route (``smtp to host:port``).

    Raises:
        ConfigError: No such mailbox, the address is not one, or the settings name no
            transport that can send.
        TransportError: The server refused or could not be reached.
    """
    settings = config.mailbox(mailbox_name)
    address = to.strip()
    if not address or "@" not in address or header_safe(address) != address or " " in address:
        raise ConfigError("--to", f"expected one email address, got {to!r}")
    outgoing = settings.effective_outgoing(config.outgoing)
    where = f"{settings.key_path}.outgoing" if settings.outgoing is not None else "outgoing"
    transport = open_transport(outgoing, key_path=where)
    if transport is None:
        raise ConfigError(f"{where}.transport", f"cannot send with {outgoing.transport!r} here")
    renderer = TemplateRenderer(config.message_groups)
    values = TemplateValues({"mailboxname": settings.name, "useremail": address})
    rendered = renderer.render(MessageKind.TEST_EMAIL, values, group=outgoing.message_group)
    ids = MessageIdFactory(config.processing.loop_token, config.processing.domain)
    mail = OutboxMail(
        id=0,
        message_id=ids.new(None),
        to=(address,),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        status=OutboxStatus.PENDING,
        created_at=dt.datetime.now(dt.UTC),
        mailbox=settings.name,
        kind="test",
        auto_submitted=True,
    )
    outgoing_email = compose(
        mail, sender_identity(outgoing), loop_token=config.processing.loop_token
    )
    transport.send(outgoing_email)
    route = outgoing.transport
    if outgoing.host:
        route += f" to {outgoing.host}:{outgoing.port}"
    elif outgoing.path is not None:
        route += f" to {outgoing.path}"
    return outgoing_email, route
