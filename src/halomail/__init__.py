"""halomail: turn mailboxes into helpdesk tickets, exactly once.

The names a host application imports live here; everything else is an
implementation detail. Start with :func:`load_config` and :func:`build_processor`
(a ``halomail.toml`` and, optionally, your own :class:`TicketRepository`), or build a
:class:`MailProcessor` yourself from a repository and a connector per mailbox.
"""

import importlib
import typing

from halomail import _moved
from halomail._text import RedactingFilter
from halomail._version import __version__
from halomail.app import build_processor
from halomail.backends.base import (
    Disposition,
    FetchedMessage,
    MailboxConnector,
    MailTransport,
    OutgoingEmail,
)
from halomail.backends.files import EmlFileTransport
from halomail.backends.local import EmlDirConnector, MaildirConnector, MboxConnector
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.config.loader import (
    Config,
    MailboxSettings,
    OutgoingSettings,
    load_config,
    parse_config,
)
from halomail.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigError,
    ConnectorError,
    DuplicateKeyError,
    HalomailError,
    PermanentTransportError,
    RepositoryError,
    SendingRestrictedError,
    TemplateError,
    TransientConnectorError,
    TransientRepositoryError,
    TransientTransportError,
    TransportError,
)
from halomail.inbound.classify import classify
from halomail.inbound.models import Address, Attachment, Classification, InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email
from halomail.outbound.notifier import MailboxProfile, Notice, Notifier
from halomail.outbound.outbox import SenderIdentity
from halomail.pipeline.results import Outcome, ProcessingOutcome, Reason, Simulation
from halomail.pipeline.settings import Mailbox, ProcessorSettings
from halomail.rules import (
    EmailRule,
    Explanation,
    RuleEngine,
    RuleMatch,
    RuleType,
    rules_from_config,
)
from halomail.runner import MailboxHealth, MailProcessor, RunReport, ServiceCheck
from halomail.services import ServiceCriteria, ServiceDefinition, services_from_config
from halomail.templates.render import (
    MessageGroup,
    MessageKind,
    RenderedMessage,
    Template,
    TemplateRenderer,
    TemplateValues,
    expand_text,
    message_groups_from_config,
)
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import (
    Action,
    ActionKind,
    Asset,
    Customer,
    DedupeRecord,
    FileOwner,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxMail,
    OutboxStatus,
    QuarantineEntry,
    RecordKind,
    ServiceStatus,
    ServiceStatusEntry,
    StoredAttachment,
    StoredFile,
    Ticket,
    TicketStatus,
    User,
)
from halomail.tickets.repository import (
    Browsing,
    Directory,
    IngestLedger,
    OutboxStore,
    ServiceLog,
    TicketRepository,
    TicketStore,
    Transactional,
)
from halomail.tickets.sqlite import SQLiteTicketRepository
from halomail.tickets.staff import Agent, Team
from halomail.tickets.templates import TicketTemplate

if typing.TYPE_CHECKING:
    from halomail.tickets.postgres import PostgreSQLTicketRepository

__all__ = [
    "Action",
    "ActionKind",
    "Address",
    "Agent",
    "AmbiguousSendError",
    "Asset",
    "Attachment",
    "AuthenticationError",
    "Browsing",
    "Classification",
    "Config",
    "ConfigError",
    "ConnectorError",
    "Customer",
    "DedupeRecord",
    "Directory",
    "Disposition",
    "DuplicateKeyError",
    "EmailRule",
    "EmlDirConnector",
    "EmlFileTransport",
    "Explanation",
    "FetchedMessage",
    "FileOwner",
    "HalomailError",
    "InMemoryTicketRepository",
    "InboundEmail",
    "IngestLedger",
    "MailProcessor",
    "MailTransport",
    "Mailbox",
    "MailboxConnector",
    "MailboxHealth",
    "MailboxProfile",
    "MailboxSettings",
    "MaildirConnector",
    "MboxConnector",
    "MemoryConnector",
    "MemoryTransport",
    "MessageGroup",
    "MessageKind",
    "NewAction",
    "NewOutgoing",
    "NewQuarantine",
    "NewServiceStatus",
    "NewTicket",
    "Notice",
    "Notifier",
    "OutboxMail",
    "OutboxStatus",
    "OutboxStore",
    "Outcome",
    "OutgoingEmail",
    "OutgoingSettings",
    "ParseLimits",
    "PermanentTransportError",
    "PostgreSQLTicketRepository",
    "ProcessingOutcome",
    "ProcessorSettings",
    "QuarantineEntry",
    "Reason",
    "RecordKind",
    "RedactingFilter",
    "RenderedMessage",
    "RepositoryError",
    "RuleEngine",
    "RuleMatch",
    "RuleType",
    "RunReport",
    "SQLiteTicketRepository",
    "SenderIdentity",
    "SendingRestrictedError",
    "ServiceCheck",
    "ServiceCriteria",
    "ServiceDefinition",
    "ServiceLog",
    "ServiceStatus",
    "ServiceStatusEntry",
    "Simulation",
    "StoredAttachment",
    "StoredFile",
    "Team",
    "Template",
    "TemplateError",
    "TemplateRenderer",
    "TemplateValues",
    "Ticket",
    "TicketRepository",
    "TicketStatus",
    "TicketStore",
    "TicketTemplate",
    "Transactional",
    "TransientConnectorError",
    "TransientRepositoryError",
    "TransientTransportError",
    "TransportError",
    "User",
    "__version__",
    "build_processor",
    "classify",
    "expand_text",
    "load_config",
    "message_groups_from_config",
    "parse_config",
    "parse_email",
    "rules_from_config",
    "services_from_config",
]

_moved.install()

#: Names imported on first use, because their module needs an extra: ``import halomail``
#: must work without it (the PostgreSQL repository needs psycopg, ``halomail[postgres]``).
_LAZY = {"PostgreSQLTicketRepository": "halomail.tickets.postgres"}


def __getattr__(name: str) -> object:
    """Import a lazily exported name (see ``_LAZY``) on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'halomail' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
