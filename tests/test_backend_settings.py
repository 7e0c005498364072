"""Typed backend settings, the registry that finds them, and the backends' independence.

Each backend reads one frozen settings class, validated from a plain table with the key
path in every error; the registry maps every ``connection`` and ``transport`` name to
it; and no backend module imports the configuration loader or a higher layer.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import attrs
import pytest

from halomail import MaildirConnector
from halomail.backends import registry
from halomail.backends.cloud_settings import (
    EwsMailboxSettings,
    EwsTransportSettings,
    GmailMailboxSettings,
    GraphMailboxSettings,
    GraphTransportSettings,
)
from halomail.backends.settings import (
    ImapSettings,
    LocalMailboxSettings,
    OAuthKeys,
    Pop3Settings,
    SmtpSettings,
)
from halomail.backends.smtp import SmtpTransport
from halomail.config.mailboxes import CONNECTIONS
from halomail.config.outgoing import TRANSPORTS
from halomail.errors import ConfigError

SRC = Path(__file__).parent.parent / "src"

_IMAP = {"name": "Support", "connection": "imap", "host": "imap.example.com"}


def test_the_registry_knows_every_name_the_configuration_allows() -> None:
    """Each connection and transport the loader accepts has a settings class and a factory."""
    assert set(registry.CONNECTIONS) == set(CONNECTIONS)
    assert set(registry.TRANSPORTS) == set(TRANSPORTS)
    for name in CONNECTIONS:
        backend = registry.mailbox_backend(name)
        assert callable(backend.settings_type.from_table)
        assert callable(backend.load_factory(f"mailboxes.{name}"))
    for name in TRANSPORTS:
        assert callable(registry.transport_backend(name).load_factory("outgoing.transport"))


def test_an_unknown_name_lists_the_known_ones() -> None:
    """A connection the registry does not know is refused at <key_path>.connection."""
    with pytest.raises(ConfigError) as caught:
        registry.mailbox_backend("carrier-pigeon", "mailboxes[4]")
    assert caught.value.key_path == "mailboxes[4].connection"
    assert "'imap'" in caught.value.message


def test_a_missing_extra_says_how_to_install_it() -> None:
    """A backend whose module cannot be imported names its extra and the pip command."""
    backend = registry.Backend(
        "office365", GraphMailboxSettings, "halomail.backends.no_such_client:X", "office365"
    )
    with pytest.raises(ConfigError) as caught:
        backend.load_factory("mailboxes[0].connection")
    assert caught.value.key_path == "mailboxes[0].connection"
    assert "needs the 'office365' extra: pip install 'halomail[office365]'" in caught.value.message


@pytest.mark.parametrize(
    ("settings_type", "table", "key"),
    [
        (ImapSettings, {"name": "S", "connection": "imap"}, "host"),
        (ImapSettings, {**_IMAP, "port": 70000}, "port"),
        (ImapSettings, {**_IMAP, "batch_size": 0}, "batch_size"),
        (ImapSettings, {**_IMAP, "connection": "pop3"}, "connection"),
        (ImapSettings, {**_IMAP, "processed": "move:Inbox"}, "processed"),
        (ImapSettings, {**_IMAP, "quarantine_folder": "INBOX"}, "quarantine_folder"),
        (Pop3Settings, {"name": "S", "host": "pop", "leave_on_server": "yes"}, "leave_on_server"),
        (SmtpSettings, {"transport": "graph", "host": "smtp"}, "transport"),
        (SmtpSettings, {"host": "smtp", "security": "ssl3"}, "security"),
        (GraphMailboxSettings, {"name": "S", "tenant_id": "t"}, "user_id"),
        (GraphTransportSettings, {"token": "t"}, "user_id"),
        (GmailMailboxSettings, {"name": "S", "credentials_file": "/no.json"}, "credentials_file"),
        (EwsMailboxSettings, {"name": "S", "host": "ews", "username": "CORP\\svc"}, "user_id"),
        (EwsTransportSettings, {"host": "e", "user_id": "a@b.c", "save_copy": 1}, "save_copy"),
        (LocalMailboxSettings, {"name": "S", "connection": "maildir", "path": "/no/dir"}, "path"),
        (LocalMailboxSettings, {"name": "S", "connection": "maildir"}, "path"),
    ],
)  # fmt: skip
def test_a_bad_table_is_refused_at_its_key_path(
    settings_type: Any, table: dict[str, Any], key: str
) -> None:
    """from_table raises ConfigError naming the key under the given path."""
    with pytest.raises(ConfigError) as caught:
        settings_type.from_table(table, "mailboxes[3]")
    assert caught.value.key_path == f"mailboxes[3].{key}"


def test_inbox_is_compared_case_insensitively_other_folders_as_written() -> None:
    """processed = move:inbox reads INBOX again; move:archive from Archive is another folder."""
    with pytest.raises(ConfigError):
        ImapSettings.from_table({**_IMAP, "processed": "move:inbox"}, "mailboxes[0]")
    settings = ImapSettings.from_table(
        {**_IMAP, "folder": "Archive", "processed": "move:archive"}, "mailboxes[0]"
    )
    assert settings.processed == "move:archive"


def test_defaults_follow_the_protocol_and_security() -> None:
    """A blank port is 993 or 143 for IMAP, 995 for POP3, 465 or 25 for SMTP."""
    assert ImapSettings.from_table(_IMAP, "m").port == 993
    assert ImapSettings.from_table({**_IMAP, "security": "starttls"}, "m").port == 143
    assert Pop3Settings.from_table({"name": "S", "host": "pop"}, "m").port == 995
    assert SmtpSettings.from_table({"host": "smtp"}, "outgoing").port == 25
    assert SmtpSettings.from_table({"host": "smtp", "security": "tls"}, "outgoing").port == 465


def test_secrets_never_show_and_settings_are_frozen() -> None:
    """Passwords and OAuth2 secrets are left out of repr; a settings object cannot change."""
    settings = ImapSettings.from_table(
        {**_IMAP, "password": "hunter2", "auth": "xoauth2", "client_secret": "s3cr3t"}, "m"
    )
    assert "hunter2" not in repr(settings)
    assert "s3cr3t" not in repr(settings)
    assert settings.oauth == OAuthKeys({"auth": "xoauth2", "client_secret": "s3cr3t"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.password = "other"  # type: ignore[misc]


def test_a_host_builds_backends_from_settings_written_in_python(tmp_path: Path) -> None:
    """Typed settings made in code, with no configuration file, build through the registry."""
    maildir = registry.open_mailbox(
        LocalMailboxSettings("Support", "maildir", tmp_path), max_message_bytes=1000
    )
    smtp = registry.open_transport(SmtpSettings("smtp.example.com", security="tls"))
    try:
        assert isinstance(maildir, MaildirConnector)
        assert maildir.max_message_bytes == 1000
        assert isinstance(smtp, SmtpTransport)
        assert (smtp.host, smtp.port) == ("smtp.example.com", 465)
    finally:
        maildir.close()
        smtp.close()


# -- the backends do not know the configuration file -------------------------------------

_HIGHER = ("config", "templates", "rules", "tickets", "pipeline", "outbound", "runner", "app")


def _imports(module: str) -> set[str]:
    """The halomail modules ``module`` imports (directly), read from its source."""
    path = SRC / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = SRC / module.replace(".", "/") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("halomail"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("halomail"))
    return found


def _reachable(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(_imports(current))
    return seen - {module}


@pytest.mark.parametrize(
    "module",
    sorted(
        f"halomail.backends.{p.stem}"
        for p in (SRC / "halomail" / "backends").glob("*.py")
        if p.stem != "__init__"
    ),
)
def test_no_backend_reaches_the_configuration_or_a_higher_layer(module: str) -> None:
    """A backend module imports, even indirectly, nothing above the backends."""
    above = {
        name
        for name in _reachable(module)
        if name.split(".")[1] in _HIGHER or name in ("halomail.cli", "halomail.services")
    }
    assert above == set()
