"""Every backend by name: its typed settings class and the factory that builds it.

The configuration loader validates each ``[[mailboxes]]`` table through the entry of its
``connection`` and each outgoing table through the entry of its ``transport``; the
composition root (:mod:`halomail.app`) builds connectors and transports through the
same entries. Adding a backend is adding a line here.

Cloud backends are imported only when built, so validating a configuration never needs
their client libraries; building one without its extra says which to install.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from halomail._validate import join_key
from halomail.backends.base import MailboxConnector, MailTransport
from halomail.backends.cloud_settings import (
    EwsMailboxSettings,
    EwsTransportSettings,
    GmailMailboxSettings,
    GmailTransportSettings,
    GraphMailboxSettings,
    GraphTransportSettings,
)
from halomail.backends.settings import (
    EmlFileSettings,
    ImapSettings,
    LocalMailboxSettings,
    MemoryTransportSettings,
    Pop3Settings,
    SmtpSettings,
)
from halomail.errors import ConfigError

__all__ = [
    "CONNECTIONS",
    "TRANSPORTS",
    "Backend",
    "mailbox_backend",
    "open_mailbox",
    "open_transport",
    "transport_backend",
]


@attrs.frozen
class Backend:
    """One ``connection`` or ``transport`` name.

    Args:
        name: The name written in ``halomail.toml`` (``imap``, ``graph`` …).
        settings_type: The typed settings class; its ``from_table`` validates a table.
        factory: ``module:attribute`` of the callable that builds the backend from
            those settings (``halomail.backends.imap:ImapConnector.from_settings``).
        extra: The pip extra the module needs, or ``None`` for the core install.
    """

    name: str
    settings_type: type[Any]
    factory: str
    extra: str | None = None

    def settings(self, table: Mapping[str, Any], key_path: str) -> Any:
        """The typed settings of ``table``, validated.

        Raises:
            ConfigError: A value is missing or invalid, at its key path.
        """
        return self.settings_type.from_table(table, key_path)

    def load_factory(self, key_path: str) -> Callable[..., Any]:
        """The factory, imported now.

        Raises:
            ConfigError: Its extra is not installed (the error says how to install it).
        """
        module_name, _, attribute = self.factory.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            extra = self.extra or self.name
            raise ConfigError(
                key_path,
                f"{self.name!r} needs the {extra!r} extra: pip install 'halomail[{extra}]' ({exc})",
            ) from exc
        for part in attribute.split("."):
            target = getattr(target, part)
        factory: Callable[..., Any] = target
        return factory


def _entry(name: str, settings_type: type[Any], factory: str, extra: str | None) -> Backend:
    return Backend(name, settings_type, f"halomail.backends.{factory}", extra)


_MAILBOXES: Mapping[str, Backend] = {
    backend.name: backend
    for backend in (
        _entry("imap", ImapSettings, "imap:ImapConnector.from_settings", None),
        _entry("pop3", Pop3Settings, "pop3:Pop3Connector.from_settings", None),
        _entry(
            "office365", GraphMailboxSettings, "graph:GraphConnector.from_settings", "office365"
        ),
        _entry("google", GmailMailboxSettings, "gmail:GmailConnector.from_settings", "google"),
        _entry("ews", EwsMailboxSettings, "ews:EwsConnector.from_settings", "ews"),
        _entry("maildir", LocalMailboxSettings, "local:open_local_connector", None),
        _entry("mbox", LocalMailboxSettings, "local:open_local_connector", None),
        _entry("eml-dir", LocalMailboxSettings, "local:open_local_connector", None),
    )
}

_TRANSPORTS: Mapping[str, Backend] = {
    backend.name: backend
    for backend in (
        _entry("smtp", SmtpSettings, "smtp:SmtpTransport.from_settings", None),
        _entry("graph", GraphTransportSettings, "graph:GraphTransport.from_settings", "office365"),
        _entry("gmail", GmailTransportSettings, "gmail:GmailTransport.from_settings", "google"),
        _entry("ews", EwsTransportSettings, "ews:EwsTransport.from_settings", "ews"),
        _entry("maildir", EmlFileSettings, "files:EmlFileTransport.from_settings", None),
        _entry("memory", MemoryTransportSettings, "memory:MemoryTransport.from_settings", None),
    )
}

#: The ``connection`` names a mailbox may have, in the order the documentation lists them.
CONNECTIONS = ("office365", "google", "pop3", "imap", "ews", "maildir", "mbox", "eml-dir")
#: The ``transport`` names outgoing settings may have.
TRANSPORTS = ("smtp", "graph", "gmail", "ews", "maildir", "memory")


def mailbox_backend(connection: str, key_path: str = "mailboxes") -> Backend:
    """The backend of a mailbox's ``connection``.

    Raises:
        ConfigError: No backend has that name, at ``<key_path>.connection``.
    """
    return _find(_MAILBOXES, connection, join_key(key_path, "connection"))


def transport_backend(transport: str, key_path: str = "outgoing") -> Backend:
    """The backend of an outgoing ``transport``.

    Raises:
        ConfigError: No backend has that name, at ``<key_path>.transport``.
    """
    return _find(_TRANSPORTS, transport, join_key(key_path, "transport"))


def _find(backends: Mapping[str, Backend], name: str, where: str) -> Backend:
    if name not in backends:
        known = ", ".join(repr(n) for n in backends)
        raise ConfigError(where, f"expected one of {known}, got {name!r}")
    return backends[name]


def open_mailbox(settings: Any, *, max_message_bytes: int | None) -> MailboxConnector:
    """Build the connector of typed mailbox settings (nothing is connected yet).

    Raises:
        ConfigError: A setting only building can check is wrong, or the extra is missing.
    """
    backend = mailbox_backend(settings.connection, settings.key_path)
    connector: MailboxConnector = backend.load_factory(join_key(settings.key_path, "connection"))(
        settings, max_message_bytes=max_message_bytes
    )
    return connector


def open_transport(settings: Any, *, token_provider: Any = None) -> MailTransport:
    """Build the transport of typed outgoing settings (nothing is connected yet).

    Args:
        settings: The transport's typed settings.
        token_provider: A token provider to share (a mailbox that sends with its own
            sign-in hands over its connector's), or ``None`` to build one from settings.

    Raises:
        ConfigError: A setting only building can check is wrong, or the extra is missing.
    """
    backend = transport_backend(settings.transport, settings.key_path)
    factory = backend.load_factory(join_key(settings.key_path, "transport"))
    shared = {} if token_provider is None else {"token_provider": token_provider}
    transport: MailTransport = factory(settings, **shared)
    return transport
