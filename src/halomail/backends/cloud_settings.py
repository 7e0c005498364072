"""Typed settings of the cloud backends: Microsoft Graph, the Gmail API and Exchange (EWS).

Like :mod:`halomail.backends.settings`, and importing no client library: a configuration
naming ``office365``, ``google`` or ``ews`` is validated even where that backend's extra
is not installed (building the backend then says which extra to install).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import attrs

from halomail._validate import (
    choice,
    flag,
    integer,
    join_key,
    opt_port,
    opt_text,
    positive_number,
    required_text,
)
from halomail.backends.settings import (
    SECURITIES,
    OAuthKeys,
    file_path,
    mailbox_folders,
    oauth_keys,
)
from halomail.errors import ConfigError

__all__ = [
    "EwsMailboxSettings",
    "EwsTransportSettings",
    "GmailMailboxSettings",
    "GmailTransportSettings",
    "GraphMailboxSettings",
    "GraphTransportSettings",
]


def _check_kind(table: Mapping[str, Any], key: str, key_path: str, wanted: str) -> None:
    if key in table and table[key] != wanted:
        raise ConfigError(join_key(key_path, key), f"{table[key]!r} is not {wanted!r}")


def _first(table: Mapping[str, Any], key_path: str, *keys: str) -> str | None:
    """The first of ``keys`` the table gives (``user_id``, else ``username`` …)."""
    for key in keys:
        value = opt_text(table, key, key_path)
        if value:
            return value
    return None


# -- Microsoft Graph ----------------------------------------------------------------


@attrs.frozen
class GraphMailboxSettings:
    """A Microsoft 365 mailbox read through Graph (``connection = "office365"``).

    Args:
        name: The mailbox's name.
        user_id: The mailbox's address or object id (``user_id``, else ``username``).
        host: Graph's root (a national cloud), or ``None`` for the global one.
        folder: The folder read.
        processed: ``move:<folder>`` or ``delete``.
        quarantine_folder: Where quarantined emails go.
        batch_size: The listing page size.
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys (``tenant_id``, ``client_id``, ``client_secret`` or ``token``).
        delta: Read with delta queries (``delta = false`` lists the folder each run, for
            national clouds that offer no delta).
        size_property: Ask for each message's size in the listing (``PidTagMessageSize``).
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    connection: ClassVar[str] = "office365"

    name: str
    user_id: str
    host: str | None = None
    folder: str = "INBOX"
    processed: str = "move:Deleted Items"
    quarantine_folder: str = "Quarantine"
    batch_size: int = 100
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    delta: bool = True
    size_property: bool = True
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with ``connection = "office365"``.

        Raises:
            ConfigError: ``user_id`` (or ``username``) is missing, or a value is invalid.
        """
        _check_kind(table, "connection", key_path, "office365")
        user_id = _first(table, key_path, "user_id", "username")
        if not user_id:
            raise ConfigError(
                join_key(key_path, "user_id"),
                "required for office365: the mailbox's address or object id",
            )
        folder, processed, quarantine = mailbox_folders(
            table, key_path, default_processed="move:Deleted Items"
        )
        return cls(
            name=required_text(table, "name", key_path),
            user_id=user_id,
            host=opt_text(table, "host", key_path),
            folder=folder,
            processed=processed,
            quarantine_folder=quarantine,
            batch_size=integer(table, "batch_size", key_path, default=100, minimum=1),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
            oauth=oauth_keys(table, key_path),
            delta=flag(table, "delta", key_path, default=True),
            size_property=flag(table, "size_property", key_path, default=True),
            key_path=key_path,
        )


@attrs.frozen
class GraphTransportSettings:
    """Sending through Microsoft Graph (``transport = "graph"``).

    Args:
        user_id: The mailbox sent as (``user_id``, else ``from_address``, else ``username``).
        host: Graph's root (a national cloud), or ``None`` for the global one.
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys.
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "graph"

    user_id: str
    host: str | None = None
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "graph"``.

        Raises:
            ConfigError: No mailbox to send as, or a value is invalid.
        """
        _check_kind(table, "transport", key_path, "graph")
        user_id = _first(table, key_path, "user_id", "from_address", "username")
        if not user_id:
            raise ConfigError(
                join_key(key_path, "user_id"),
                "required for transport = 'graph': the mailbox to send as",
            )
        return cls(
            user_id=user_id,
            host=opt_text(table, "host", key_path),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


# -- Gmail API ----------------------------------------------------------------------


@attrs.frozen
class GmailMailboxSettings:
    """A Google Workspace or Gmail mailbox (``connection = "google"``).

    Args:
        name: The mailbox's name.
        user_id: The mailbox (``user_id``, else ``subject``, else ``username``, else ``me``).
        host: The API's root, or ``None`` for Google's.
        folder: The label read.
        processed: ``move:<label>`` or ``delete``.
        quarantine_folder: Where quarantined emails go.
        batch_size: The listing page size.
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys (``credentials_file`` must exist when given).
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    connection: ClassVar[str] = "google"

    name: str
    user_id: str = "me"
    host: str | None = None
    folder: str = "INBOX"
    processed: str = "move:Deleted Items"
    quarantine_folder: str = "Quarantine"
    batch_size: int = 100
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with ``connection = "google"``.

        Raises:
            ConfigError: A credentials file that does not exist, or a value is invalid.
        """
        _check_kind(table, "connection", key_path, "google")
        folder, processed, quarantine = mailbox_folders(
            table, key_path, default_processed="move:Deleted Items"
        )
        return cls(
            name=required_text(table, "name", key_path),
            user_id=_first(table, key_path, "user_id", "subject", "username") or "me",
            host=opt_text(table, "host", key_path),
            folder=folder,
            processed=processed,
            quarantine_folder=quarantine,
            batch_size=integer(table, "batch_size", key_path, default=100, minimum=1),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


@attrs.frozen
class GmailTransportSettings:
    """Sending through the Gmail API (``transport = "gmail"``).

    Args:
        user_id: The mailbox sent as (``user_id``, else ``subject``, else ``me``).
        host: The API's root, or ``None`` for Google's.
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys.
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "gmail"

    user_id: str = "me"
    host: str | None = None
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "gmail"``.

        Raises:
            ConfigError: A credentials file that does not exist, or a value is invalid.
        """
        _check_kind(table, "transport", key_path, "gmail")
        return cls(
            user_id=_first(table, key_path, "user_id", "subject") or "me",
            host=opt_text(table, "host", key_path),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


# -- Exchange Web Services ----------------------------------------------------------

_DELETE_TYPES = ("HardDelete", "SoftDelete", "MoveToDeletedItems")
_ACCESS_TYPES = ("delegate", "impersonation")


@attrs.frozen
class _EwsLogin:
    """The keys both EWS settings share."""

    host: str
    port: int | None
    security: str
    username: str | None
    password: str | None = attrs.field(repr=False)
    access_type: str | None
    tls_ca_file: Path | None

    @classmethod
    def read(cls, table: Mapping[str, Any], key_path: str) -> _EwsLogin:
        host = opt_text(table, "host", key_path)
        if not host:
            raise ConfigError(
                join_key(key_path, "host"), "required when connection = 'ews' (the Exchange server)"
            )
        password = table.get("password")
        if password is not None and not isinstance(password, str):
            raise ConfigError(join_key(key_path, "password"), "expected a string")
        return cls(
            host=host,
            port=opt_port(table, "port", key_path),
            security=choice(table, "security", key_path, SECURITIES, default="tls"),
            username=opt_text(table, "username", key_path),
            password=password,
            # Absent: chosen by the login (impersonation for an app-only token).
            access_type=(
                choice(table, "access_type", key_path, _ACCESS_TYPES, default="delegate")
                if "access_type" in table
                else None
            ),
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
        )


def _ews_address(table: Mapping[str, Any], key_path: str, *keys: str) -> str:
    address = _first(table, key_path, *keys) or ""
    if "@" not in address:
        raise ConfigError(
            join_key(key_path, "user_id"),
            "the mailbox's SMTP address is needed (user_id, or a username like user@domain)",
        )
    return address


@attrs.frozen
class EwsMailboxSettings:
    """An Exchange mailbox read through EWS (``connection = "ews"``).

    Args:
        name: The mailbox's name.
        host: The server name, or the full EWS URL.
        address: The mailbox's SMTP address (``user_id``, else ``username``).
        port: The port, when not the scheme's.
        security: ``none`` (plain HTTP) or ``tls``/``starttls`` (HTTPS).
        username: The login.
        password: The password; never shown.
        access_type: ``delegate`` or ``impersonation``; ``None`` (not set):
            impersonation for an app-only OAuth token, else delegate.
        folder: The folder read.
        processed: ``move:<folder>`` or ``delete``.
        quarantine_folder: Where quarantined emails go.
        delete_type: How ``delete`` deletes: ``MoveToDeletedItems`` (the default),
            ``SoftDelete`` or ``HardDelete``.
        batch_size: Messages fetched per request.
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys, when the login is OAuth2.
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    connection: ClassVar[str] = "ews"

    name: str
    host: str
    address: str
    port: int | None = None
    security: str = "tls"
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    access_type: str | None = None
    folder: str = "INBOX"
    processed: str = "move:Deleted Items"
    quarantine_folder: str = "Quarantine"
    delete_type: str = "MoveToDeletedItems"
    batch_size: int = 50
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with ``connection = "ews"``.

        Raises:
            ConfigError: ``host`` or the mailbox's address is missing, or a value is
                invalid.
        """
        _check_kind(table, "connection", key_path, "ews")
        login = _EwsLogin.read(table, key_path)
        folder, processed, quarantine = mailbox_folders(
            table, key_path, default_processed="move:Deleted Items"
        )
        return cls(
            name=required_text(table, "name", key_path),
            host=login.host,
            address=_ews_address(table, key_path, "user_id", "username"),
            port=login.port,
            security=login.security,
            username=login.username,
            password=login.password,
            access_type=login.access_type,
            folder=folder,
            processed=processed,
            quarantine_folder=quarantine,
            delete_type=choice(
                table, "delete_type", key_path, _DELETE_TYPES, default="MoveToDeletedItems"
            ),
            batch_size=integer(table, "batch_size", key_path, default=50, minimum=1),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=login.tls_ca_file,
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


@attrs.frozen
class EwsTransportSettings:
    """Sending through Exchange Web Services (``transport = "ews"``).

    Args:
        host: The server name, or the full EWS URL.
        address: The mailbox sent as (``user_id``, else ``from_address``, else ``username``).
        security: ``none`` (plain HTTP) or ``tls``/``starttls`` (HTTPS).
        username: The login.
        password: The password; never shown.
        access_type: ``delegate`` or ``impersonation``; ``None`` (not set):
            impersonation for an app-only OAuth token, else delegate.
        save_copy: Keep a copy in Sent Items (the default; it is where a send whose
            outcome was ambiguous is looked for).
        timeout: Network timeout in seconds.
        tls_ca_file: A CA bundle to trust besides the system's.
        oauth: The OAuth2 keys, when the login is OAuth2.
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "ews"

    host: str
    address: str
    security: str = "tls"
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    access_type: str | None = None
    save_copy: bool = True
    timeout: float = 30.0
    tls_ca_file: Path | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "ews"``.

        Raises:
            ConfigError: ``host`` or the address to send as is missing, or a value is
                invalid.
        """
        _check_kind(table, "transport", key_path, "ews")
        login = _EwsLogin.read(table, key_path)
        return cls(
            host=login.host,
            address=_ews_address(table, key_path, "user_id", "from_address", "username"),
            security=login.security,
            username=login.username,
            password=login.password,
            access_type=login.access_type,
            save_copy=flag(table, "save_copy", key_path, default=True),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            tls_ca_file=login.tls_ca_file,
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )
