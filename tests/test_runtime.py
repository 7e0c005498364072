"""From halomail.toml to running objects: every mailbox type and transport is wired."""

from __future__ import annotations

import tomllib
from pathlib import Path

from halomail.app import build_processor
from halomail.backends.ews import EwsConnector, EwsTransport
from halomail.backends.gmail import GmailConnector, GmailTransport
from halomail.backends.graph import GraphConnector
from halomail.backends.imap import ImapConnector
from halomail.backends.pop3 import Pop3Connector
from halomail.backends.smtp import SmtpTransport
from halomail.config.loader import parse_config
from halomail.tickets.memory import InMemoryTicketRepository

CONFIG = """
[outgoing]
transport = "smtp"
host = "smtp.example.com"
security = "starttls"
username = "support@example.com"
password = "smtp-secret"
from_address = "support@example.com"

[[mailboxes]]
name = "Office"
connection = "office365"
user_id = "support@contoso.com"
auth = "oauth2-static"
token_env = "GRAPH_TOKEN"
[mailboxes.outgoing]
transport = "graph"
user_id = "support@contoso.com"
auth = "oauth2-static"
token_env = "GRAPH_TOKEN"

[[mailboxes]]
name = "Exchange"
connection = "ews"
host = "mail.example.com"
username = "helpdesk@example.com"
password = "ews-secret"
[mailboxes.outgoing]
transport = "ews"
host = "mail.example.com"
username = "helpdesk@example.com"
password = "ews-secret"

[[mailboxes]]
name = "Workspace"
connection = "google"
user_id = "support@example.org"
auth = "oauth2-static"
token_env = "GRAPH_TOKEN"
[mailboxes.outgoing]
transport = "gmail"
user_id = "support@example.org"
auth = "oauth2-static"
token_env = "GRAPH_TOKEN"

[[mailboxes]]
name = "Imap"
connection = "imap"
host = "imap.example.com"
username = "imap@example.com"
password = "imap-secret"

[[mailboxes]]
name = "Legacy"
connection = "pop3"
host = "pop.example.com"
username = "legacy@example.com"
password = "pop-secret"
"""


def test_each_connection_and_transport_type_gets_its_backend(tmp_path: Path) -> None:
    """Every connection type gets its connector, and overrides their transports."""
    config = parse_config(
        tomllib.loads(CONFIG), base_dir=tmp_path, env={"GRAPH_TOKEN": "graph-token"}
    )
    processor = build_processor(config, InMemoryTicketRepository())
    office, exchange, workspace, imap, legacy = processor.mailboxes
    assert isinstance(processor.transport, SmtpTransport)
    assert isinstance(office.connector, GraphConnector)
    assert type(office.transport).__name__ == "GraphTransport"
    assert isinstance(exchange.connector, EwsConnector)
    assert isinstance(exchange.transport, EwsTransport)
    assert isinstance(workspace.connector, GmailConnector)
    assert isinstance(workspace.transport, GmailTransport)
    assert isinstance(imap.connector, ImapConnector)
    assert isinstance(legacy.connector, Pop3Connector)
    assert legacy.transport is None  # no override: it sends through [outgoing]
    assert "secret" not in repr(processor.transport)
    assert "graph-token" not in repr(office.connector)
