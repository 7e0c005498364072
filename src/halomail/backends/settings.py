"""Typed settings of the mailbox and transport backends, read from plain tables.

Each backend takes one frozen settings class, built by its ``from_table`` classmethod
from a plain mapping: a ``[[mailboxes]]`` or ``[outgoing]`` table of ``halomail.toml``
as the configuration loader hands it over (secrets already read from their ``*_env``
variables, relative paths already resolved), or a dict a host writes. ``from_table``
checks everything that can be known without connecting (types, required keys, files
that must exist, a processed folder that is the folder read) and raises
:class:`~halomail.errors.ConfigError` with the key path (``mailboxes[2].user_id``).

This module imports no client library, so a configuration is validated whether or not
the extra of its backend is installed; :mod:`halomail.backends.registry` maps each
``connection`` and ``transport`` name to these classes. Backends never import the
configuration loader.

Secrets (passwords, client secrets, tokens) are left out of every ``repr``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

import attrs

from halomail._validate import (
    choice,
    existing_path,
    flag,
    integer,
    join_key,
    opt_port,
    opt_text,
    positive_number,
    required_text,
    text,
    text_list,
)
from halomail.errors import ConfigError

__all__ = [
    "SECURITIES",
    "EmlFileSettings",
    "ImapSettings",
    "LocalMailboxSettings",
    "MemoryTransportSettings",
    "OAuthKeys",
    "Pop3Settings",
    "SettingsTable",
    "SmtpSettings",
    "as_typed",
    "file_path",
    "mailbox_folders",
    "oauth_keys",
    "server_port",
]

SECURITIES = ("none", "starttls", "tls")

#: The keys of an OAuth2 login (:func:`~halomail.backends.auth.oauth.token_provider_from_settings`).
_OAUTH_KEYS = (
    "auth",
    "tenant_id",
    "client_id",
    "client_secret",
    "token",
    "token_env",
    "refresh_token",
    "authority",
    "scopes",
    "certificate_file",
    "token_cache",
    "subject",
    "token_uri",
    "credentials_file",
    "timeout",
)
_SECRET_KEYS = frozenset({"client_secret", "token", "refresh_token"})
# Files a login reads: they must be there before anything connects.
_LOGIN_FILES = ("credentials_file", "certificate_file")


class SettingsTable(Protocol):
    """Anything that can hand over its settings as a plain table.

    :class:`halomail.MailboxSettings` and :class:`halomail.OutgoingSettings` do: a
    backend's ``from_settings`` accepts them too and reads them through its typed class.
    """

    def as_table(self) -> Mapping[str, Any]:
        """The settings as the keys of a ``halomail.toml`` table."""
        ...  # pragma: no cover - a Protocol


class OAuthKeys(Mapping[str, Any]):
    """The OAuth2 keys of a login, read-only; ``repr`` masks secret values."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data)))

    def __repr__(self) -> str:
        return repr({k: ("***" if k in _SECRET_KEYS else v) for k, v in self._data.items()})


def oauth_keys(table: Mapping[str, Any], key_path: str) -> OAuthKeys:
    """The OAuth2 keys of ``table``, their types checked and their files present.

    Raises:
        ConfigError: A value of the wrong type, or a credentials or certificate file
            that does not exist.
    """
    keys: dict[str, Any] = {}
    for key in _OAUTH_KEYS:
        if key not in table or table[key] is None:
            continue
        if key in _LOGIN_FILES and not _signs_in_later(table, key):
            keys[key] = existing_path(table, key, key_path)
        elif key in _LOGIN_FILES:
            keys[key] = file_path(table, key, key_path)
        elif key == "scopes":
            keys[key] = text_list(table, key, key_path)
        elif key == "timeout":
            keys[key] = positive_number(table, key, key_path, default=30.0)
        elif key == "token_cache":
            keys[key] = file_path(table, key, key_path)
        else:
            keys[key] = text(table, key, key_path, default="", secret=key in _SECRET_KEYS)
    return OAuthKeys(keys)


def _signs_in_later(table: Mapping[str, Any], key: str) -> bool:
    """A credentials file beside an OAuth client's id and secret is the authorized-user
    file ``halomail authorize`` writes: before the first sign-in it does not exist yet."""
    return key == "credentials_file" and bool(table.get("client_id") and table.get("client_secret"))


def server_port(kind: str, security: str) -> int | None:
    """The usual port of a server protocol, by its security."""
    tls = security == "tls"
    ports = {"imap": (993, 143), "pop3": (995, 110), "smtp": (465, 25)}
    if kind not in ports:
        return None
    return ports[kind][0] if tls else ports[kind][1]


def file_path(table: Mapping[str, Any], key: str, key_path: str) -> Path | None:
    """A path, not checked here: a file halomail writes, or a CA bundle, whose
    absence the configuration loader reports and a connection reports again."""
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(join_key(key_path, key), "expected a path")
    return Path(value).expanduser()


def _check_kind(table: Mapping[str, Any], key: str, key_path: str, wanted: tuple[str, ...]) -> None:
    """``connection`` (or ``transport``), when the table names one, is one of ``wanted``."""
    if key in table and table[key] not in wanted:
        expected = " or ".join(repr(w) for w in wanted)
        raise ConfigError(join_key(key_path, key), f"{table[key]!r} is not {expected}")


def mailbox_folders(
    table: Mapping[str, Any], key_path: str, *, default_processed: str
) -> tuple[str, str, str]:
    """``folder``, ``processed`` and ``quarantine_folder`` of a mailbox with folders.

    Raises:
        ConfigError: ``processed`` or ``quarantine_folder`` is the folder being read
            (``INBOX`` compared case-insensitively, as RFC 3501 says), which would read
            every handled email again.
    """
    folder = text(table, "folder", key_path, default="INBOX")
    processed = text(table, "processed", key_path, default=default_processed)
    quarantine = text(table, "quarantine_folder", key_path, default="Quarantine")
    action, _, target = processed.partition(":")
    if action == "move" and _same_folder(target, folder):
        raise ConfigError(
            join_key(key_path, "processed"),
            f"cannot move processed email into {folder!r}, the folder being read",
        )
    if _same_folder(quarantine, folder):
        raise ConfigError(
            join_key(key_path, "quarantine_folder"),
            f"cannot quarantine into {folder!r}, the folder being read",
        )
    return folder, processed, quarantine


def _same_folder(a: str, b: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 §5.1); other names are compared as written.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


_Typed = TypeVar("_Typed")


def as_typed(
    settings_type: type[_Typed], settings: _Typed | SettingsTable, key_path: str
) -> _Typed:
    """``settings`` itself when it is already typed, else read through ``from_table``.

    Lets a backend's ``from_settings`` take its typed class or anything with
    ``as_table()`` (a :class:`halomail.MailboxSettings`).
    """
    if isinstance(settings, settings_type):
        return settings
    read = getattr(settings_type, "from_table")  # noqa: B009 - every typed class has it
    typed: _Typed = read(settings.as_table(), key_path)  # type: ignore[union-attr]
    return typed


# -- server mailboxes ---------------------------------------------------------------


@attrs.frozen
class ImapSettings:
    """An IMAP mailbox (``connection = "imap"``).

    Args:
        name: The mailbox's name.
        host: The server.
        port: The port; 993 with ``security = "tls"``, else 143, when not given.
        security: ``none``, ``starttls`` or ``tls``.
        tls_ca_file: A CA bundle to trust besides the system's.
        username: The login.
        password: The password; never shown.
        folder: The folder read.
        processed: ``move:<folder>`` or ``delete``.
        quarantine_folder: Where quarantined emails go.
        batch_size: Messages fetched per command.
        timeout: Network timeout in seconds.
        poll_interval: Seconds between checks while waiting in IDLE.
        oauth: The OAuth2 keys (``auth``, ``token`` …), when the login is OAuth2.
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    connection: ClassVar[str] = "imap"

    name: str
    host: str
    port: int | None = None
    security: str = "tls"
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    folder: str = "INBOX"
    processed: str = "move:Deleted Items"
    quarantine_folder: str = "Quarantine"
    batch_size: int = 50
    timeout: float = 30.0
    poll_interval: float = 60.0
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with ``connection = "imap"``.

        Raises:
            ConfigError: A value is missing or invalid, at its key path.
        """
        _check_kind(table, "connection", key_path, ("imap",))
        login = _ServerLogin.read(table, key_path, "imap")
        folder, processed, quarantine = mailbox_folders(
            table, key_path, default_processed="move:Deleted Items"
        )
        return cls(
            name=required_text(table, "name", key_path),
            host=login.host,
            port=login.port,
            security=login.security,
            tls_ca_file=login.tls_ca_file,
            username=login.username,
            password=login.password,
            folder=folder,
            processed=processed,
            quarantine_folder=quarantine,
            batch_size=integer(table, "batch_size", key_path, default=50, minimum=1),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            poll_interval=positive_number(table, "poll_interval", key_path, default=60.0),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


@attrs.frozen
class Pop3Settings:
    """A POP3 mailbox (``connection = "pop3"``); handled email is always deleted.

    Args:
        name: The mailbox's name.
        host: The server.
        port: The port; 995 with ``security = "tls"``, else 110, when not given.
        security: ``none``, ``starttls`` or ``tls``.
        tls_ca_file: A CA bundle to trust besides the system's.
        username: The login.
        password: The password; never shown.
        leave_on_server: Keep messages on the server (remembered in ``seen_file``).
        seen_file: Where the UIDLs already read are remembered.
        timeout: Network timeout in seconds.
        oauth: The OAuth2 keys, when the login is OAuth2.
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    connection: ClassVar[str] = "pop3"

    name: str
    host: str
    port: int | None = None
    security: str = "tls"
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    leave_on_server: bool = False
    seen_file: Path | None = None
    timeout: float = 30.0
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with ``connection = "pop3"``.

        Raises:
            ConfigError: A value is missing or invalid, at its key path.
        """
        _check_kind(table, "connection", key_path, ("pop3",))
        login = _ServerLogin.read(table, key_path, "pop3")
        return cls(
            name=required_text(table, "name", key_path),
            host=login.host,
            port=login.port,
            security=login.security,
            tls_ca_file=login.tls_ca_file,
            username=login.username,
            password=login.password,
            leave_on_server=flag(table, "leave_on_server", key_path, default=False),
            seen_file=file_path(table, "seen_file", key_path),
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


@attrs.frozen
class _ServerLogin:
    """The keys every server login shares: host, port, security, CA file, username."""

    host: str
    port: int | None
    security: str
    tls_ca_file: Path | None
    username: str | None
    password: str | None = attrs.field(repr=False)

    @classmethod
    def read(cls, table: Mapping[str, Any], key_path: str, kind: str) -> _ServerLogin:
        host = opt_text(table, "host", key_path)
        if not host:
            where = "transport" if kind == "smtp" else "connection"
            raise ConfigError(join_key(key_path, "host"), f"required when {where} = {kind!r}")
        security = choice(
            table, "security", key_path, SECURITIES, default="starttls" if kind == "smtp" else "tls"
        )
        port = opt_port(table, "port", key_path) or server_port(kind, security)
        password = table.get("password")
        if password is not None and not isinstance(password, str):
            raise ConfigError(join_key(key_path, "password"), "expected a string")
        return cls(
            host=host,
            port=port,
            security=security,
            tls_ca_file=file_path(table, "tls_ca_file", key_path),
            username=opt_text(table, "username", key_path),
            password=password,
        )


# -- SMTP ---------------------------------------------------------------------------


@attrs.frozen
class SmtpSettings:
    """Sending through an SMTP server (``transport = "smtp"``).

    Args:
        host: The server.
        port: The port; 465 with ``security = "tls"``, else 25, when not given.
        security: ``none``, ``starttls`` (required, never downgraded) or ``tls``.
        tls_ca_file: A CA bundle to trust besides the system's.
        username: The login, when the server wants one.
        password: The password; never shown.
        timeout: Network timeout in seconds.
        local_hostname: The name given in EHLO, when not this host's.
        oauth: The OAuth2 keys, when the login is OAuth2 (XOAUTH2).
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "smtp"

    host: str
    port: int | None = None
    security: str = "starttls"
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    timeout: float = 30.0
    local_hostname: str | None = None
    oauth: OAuthKeys = attrs.field(factory=OAuthKeys)
    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "smtp"``.

        Raises:
            ConfigError: A value is missing or invalid, at its key path.
        """
        _check_kind(table, "transport", key_path, ("smtp",))
        login = _ServerLogin.read(table, key_path, "smtp")
        return cls(
            host=login.host,
            port=login.port,
            security=login.security,
            tls_ca_file=login.tls_ca_file,
            username=login.username,
            password=login.password,
            timeout=positive_number(table, "timeout", key_path, default=30.0),
            local_hostname=opt_text(table, "local_hostname", key_path),
            oauth=oauth_keys(table, key_path),
            key_path=key_path,
        )


# -- local mailboxes and files ------------------------------------------------------

_LOCAL = ("maildir", "mbox", "eml-dir")


@attrs.frozen
class LocalMailboxSettings:
    """A mailbox on this machine: a Maildir, an mbox file or a folder of ``.eml`` files.

    Args:
        name: The mailbox's name.
        connection: ``maildir``, ``mbox`` or ``eml-dir``.
        path: The Maildir, mbox file or folder; it must exist.
        processed: ``move:<folder>``, ``delete``, or for mbox ``keep``.
        quarantine_folder: Where quarantined emails go (a sub-folder of ``path``).
        key_path: Where the mailbox is in ``halomail.toml``, for errors.
    """

    name: str
    connection: str
    path: Path
    processed: str = "move:Deleted Items"
    quarantine_folder: str = "Quarantine"
    key_path: str = attrs.field(default="mailboxes", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[[mailboxes]]`` table with a local ``connection``.

        Raises:
            ConfigError: ``path`` is missing or is not there (a missing Maildir would
                otherwise fail at every run), or another value is invalid.
        """
        if "connection" not in table:
            raise ConfigError(join_key(key_path, "connection"), "required")
        connection = choice(table, "connection", key_path, _LOCAL, default="maildir")
        if "path" not in table:
            raise ConfigError(
                join_key(key_path, "path"), f"required when connection = {connection!r}"
            )
        path = existing_path(
            table, "path", key_path, kind="file" if connection == "mbox" else "folder"
        )
        assert path is not None  # the key is present
        default_processed = "keep" if connection == "mbox" else "move:Deleted Items"
        return cls(
            name=required_text(table, "name", key_path),
            connection=connection,
            path=path,
            processed=text(table, "processed", key_path, default=default_processed),
            quarantine_folder=text(table, "quarantine_folder", key_path, default="Quarantine"),
            key_path=key_path,
        )


@attrs.frozen
class EmlFileSettings:
    """Sending by writing each email as an ``.eml`` file (``transport = "maildir"``).

    Args:
        path: The folder the files go to (created when missing).
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "maildir"

    path: Path
    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "maildir"``.

        Raises:
            ConfigError: ``path`` is missing.
        """
        _check_kind(table, "transport", key_path, ("maildir",))
        path = file_path(table, "path", key_path)
        if path is None:
            raise ConfigError(
                join_key(key_path, "path"),
                "required when transport = 'maildir' (the folder .eml files go to)",
            )
        return cls(path=path, key_path=key_path)


@attrs.frozen
class MemoryTransportSettings:
    """Sending into memory (``transport = "memory"``): for tests and dry runs.

    Args:
        key_path: Where the settings are in ``halomail.toml``, for errors.
    """

    transport: ClassVar[str] = "memory"

    key_path: str = attrs.field(default="outgoing", eq=False)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key_path: str) -> Self:
        """Validate an ``[outgoing]`` table with ``transport = "memory"``."""
        _check_kind(table, "transport", key_path, ("memory",))
        return cls(key_path=key_path)
