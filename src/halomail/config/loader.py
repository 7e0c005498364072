"""``halomail.toml`` → validated, frozen settings (design §3 "Configuration").

:func:`load_config` reads a file; :func:`parse_config` validates an already-parsed
table. Every problem raises :class:`~halomail.errors.ConfigError` naming where it is
(``mailboxes[1].port``, ``outgoing.security``) and what is allowed; nothing else
escapes, so an administrator never sees a traceback for a bad file.

The tables::

    [storage]        url: "sqlite:///path.db" (relative to this file's folder) or "memory://"
    [outgoing]       how mail is sent by default (OutgoingSettings)
    [[mailboxes]]    one per mailbox read (MailboxSettings); may hold [mailboxes.outgoing]
    [[rules]]        email rules (validated by :func:`halomail.rules.rules_from_config`)
    [[services]]     monitored services (:func:`halomail.services.services_from_config`)
    [[ticket_templates]]  what apply_template rules start tickets from
    [processing]     loop token, bulk mail, acknowledgement throttle, send attempts, domain
    [limits]         parsing bounds (ParseLimits)

Relative paths (``path``, ``tls_ca_file``, ``credentials_file``, the SQLite file) are
relative to the folder holding the configuration file, never to the working directory.

Secrets: ``password`` may be written inline or, better, named by ``password_env``
(likewise ``client_secret_env`` and ``token_env``); the environment is read once, at
load. Fields holding secrets are left out of every ``repr``, and no error message ever
contains a secret's value.

**Outgoing precedence.** A mailbox's ``[mailboxes.outgoing]`` table overrides the
top-level ``[outgoing]`` key by key: a key written in the mailbox's table wins, then a
key written in ``[outgoing]``, then the built-in default. Derived values follow the
merged result: with ``security = "tls"`` in the mailbox and no ``port`` written in
either table, the port is 465. A password and its ``password_env`` count as one key
(so a mailbox giving ``password_env`` replaces an inline ``password`` above it), as do
``client_secret``/``client_secret_env`` and ``token``/``token_env``. Use
:meth:`MailboxSettings.effective_outgoing` to get the merged settings.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import CONTROL, as_table, check_keys, describe, join_key
from halomail.errors import ConfigError
from halomail.inbound.models import ParseLimits
from halomail.outbound.sms import SmsSettings
from halomail.rules import EmailRule, rules_from_config
from halomail.services import ServiceDefinition, services_from_config
from halomail.templates.render import MessageGroup, message_groups_from_config
from halomail.tickets.staff import Agent, Team
from halomail.tickets.templates import TicketTemplate, ticket_templates_from_config

__all__ = [
    "Config",
    "MailboxSettings",
    "OutgoingSettings",
    "ProcessingSettings",
    "StorageSettings",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)

# A configuration file is a few kilobytes; refusing absurd sizes keeps a wrong path
# (a log file, a database) from being read into memory whole.
_MAX_CONFIG_BYTES = 4 * 1024 * 1024

TRANSPORTS = ("smtp", "graph", "gmail", "ews", "maildir", "memory")
SECURITIES = ("none", "starttls", "tls")
CONNECTIONS = ("office365", "google", "pop3", "imap", "ews", "maildir", "mbox", "eml-dir")
LOCAL_CONNECTIONS = frozenset({"maildir", "mbox", "eml-dir"})
RECORDS = ("ticket", "opportunity")
START_FROM = ("all", "now")
HIJACK = ("new-ticket", "quarantine")
BULK = ("ticket", "ignore")
AUTH = ("password", "xoauth2", "oauthbearer", "oauth2-microsoft", "oauth2-google", "oauth2-static")
RULE_TYPES = (
    "ignore",
    "help_request",
    "service_status",
    "alert",
    "apply_template",
    "formatted_email",
    "file_transfer",
    "inventory",
    "virus",
    "off_alert",
)

_TOP_KEYS = (
    "storage",
    "outgoing",
    "mailboxes",
    "rules",
    "services",
    "ticket_templates",
    "processing",
    "limits",
    "agents",
    "teams",
    "message_groups",
    "sms",
)
_SMS_KEYS = (
    "provider_domain",
    "from_address",
    "password",
    "password_env",
    "pin_placement",
    "display_name",
    "max_length",
    "default_country_code",
    "address_format",
    "ellipsis",
)
_STORAGE_KEYS = ("url",)
_OUTGOING_FIELDS = (
    "transport",
    "host",
    "port",
    "security",
    "tls_ca_file",
    "username",
    "password",
    "password_env",
    "from_address",
    "display_name",
    "reply_address",
    "message_group",
    "path",
    "timeout",
)
# Keys later connectors and transports read (Graph, Gmail, EWS, OAuth2); validated for
# type here and handed over in ``extra``.
_OUTGOING_EXTRA = (
    "tenant_id",
    "client_id",
    "client_secret",
    "client_secret_env",
    "user_id",
    "credentials_file",
    "token_env",
    "auth",
    # OAuth2 (halomail.backends.auth.oauth): Microsoft identity platform and Google.
    "authority",
    "scopes",
    "refresh_token",
    "refresh_token_env",
    "certificate_file",
    "token_cache",
    "subject",
    "token_uri",
    # Exchange (EWS).
    "access_type",
    "save_copy",
)
_MAILBOX_FIELDS = (
    "name",
    "enabled",
    "connection",
    "host",
    "port",
    "security",
    "tls_ca_file",
    "username",
    "password",
    "password_env",
    "path",
    "folder",
    "processed",
    "quarantine_folder",
    "ticket_type",
    "record",
    "send_acknowledgement",
    "subject_tag",
    "start_from",
    "hijack",
    "outgoing",
    "allowed_teams",
    "signature",
    "agent_signatures",
)
_MAILBOX_EXTRA = (
    *_OUTGOING_EXTRA,
    "leave_on_server",
    "poll_interval",
    "batch_size",
    "timeout",
    "delete_type",
    "seen_file",
)
_PROCESSING_KEYS = (
    "loop_token",
    "previous_loop_tokens",
    "bulk",
    "ack_throttle_count",
    "ack_throttle_window_minutes",
    "max_send_attempts",
    "domain",
    "concurrent_mailboxes",
    "ticket_url",
)
_LIMITS_KEYS = ("max_message_bytes", "max_depth", "max_parts", "max_header_bytes")

# A secret and the name of the environment variable that may hold it are one setting:
# whichever a table writes replaces both from the table below it.
_SECRET_GROUPS = (
    frozenset({"password", "password_env"}),
    frozenset({"client_secret", "client_secret_env"}),
    frozenset({"token", "token_env"}),
    frozenset({"refresh_token", "refresh_token_env"}),
)
_SECRET_EXTRA = frozenset({"client_secret", "token", "refresh_token"})

_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- models ---------------------------------------------------------------------


class _Extra(Mapping[str, Any]):
    """A read-only mapping whose ``repr`` shows every key but masks secret values."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr({k: ("***" if k in _SECRET_EXTRA else v) for k, v in self._data.items()})


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value if isinstance(value, _Extra) else _Extra(value)


@attrs.frozen
class StorageSettings:
    """Where tickets are kept (``[storage]``).

    Args:
        url: ``sqlite:///relative/or/abs/path.db`` or ``memory://``.
        sqlite_path: The SQLite file, resolved against the configuration file's folder;
            ``None`` for ``memory://``. When not given it is derived from ``url``
            (relative to the working directory).

    Raises:
        ConfigError: ``url`` is neither form.
    """

    url: str = "sqlite:///halomail.db"
    sqlite_path: Path | None = attrs.field(
        default=attrs.Factory(lambda self: _sqlite_path(self.url, Path.cwd()), takes_self=True)
    )


def _sqlite_path(url: str, base_dir: Path) -> Path | None:
    if url == "memory://":
        return None
    prefix = "sqlite:///"
    if url.startswith(prefix) and len(url) > len(prefix):
        rest = url[len(prefix) :]
        # sqlite:////abs/x.db is absolute (the fourth slash starts the path), as in SQLAlchemy.
        path = Path(rest).expanduser()
        return path if path.is_absolute() else base_dir / path
    raise ConfigError(
        "storage.url",
        f"unsupported storage url {url!r}; use 'sqlite:///path/to/file.db' or 'memory://'",
    )


def _default_explicit(self: Any) -> frozenset[str]:
    """For settings built in Python: every field that differs from its default."""
    names = set()
    for field in attrs.fields(type(self)):
        if field.name in ("extra", "explicit_keys"):
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            continue
        if getattr(self, field.name) != default:
            names.add(field.name)
    return frozenset(names)


def _smtp_port(transport: str, security: str) -> int | None:
    if transport != "smtp":
        return None
    # HaloPSA leaves a blank SMTP port at 25; implicit TLS has its own port.
    return 465 if security == "tls" else 25


@attrs.frozen
class OutgoingSettings:
    """How mail is sent (``[outgoing]``, or a mailbox's ``[mailboxes.outgoing]``).

    Args:
        transport: ``smtp``, ``graph``, ``gmail``, ``ews``, ``maildir`` (writes ``.eml``
            files to ``path``) or ``memory``.
        host: The SMTP server.
        port: The SMTP port; when not given, 25, or 465 with ``security = "tls"``.
        security: ``none``, ``starttls`` (required, never downgraded) or ``tls``.
        tls_ca_file: A CA bundle to trust besides the system's (certificates are
            always verified).
        username: The login.
        password: The password (from ``password`` or ``password_env``); never shown.
        password_env: The environment variable the password was read from.
        from_address: The address mail is sent from.
        display_name: The From display name.
        reply_address: A Reply-To address, when replies go elsewhere.
        message_group: The template group used for outgoing mail.
        path: For the ``maildir`` transport: the folder ``.eml`` files are written to.
        timeout: Network timeout in seconds.
        extra: Transport-specific keys (``tenant_id``, ``client_id``, ``client_secret``,
            ``user_id``, ``credentials_file``, ``token``, ``auth`` …); secret values are
            masked in ``repr``.
        explicit_keys: The keys written in the configuration table. Merging
            (:meth:`MailboxSettings.effective_outgoing`) uses it so that a value written
            on purpose wins even when it equals the default. Built in Python, it
            defaults to the fields that differ from their defaults; ``attrs.evolve``
            keeps it as it was, so pass it too when changing an override that way.
    """

    transport: str = "smtp"
    host: str | None = None
    port: int | None = None
    security: str = "starttls"
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    password_env: str | None = None
    from_address: str | None = None
    display_name: str | None = None
    reply_address: str | None = None
    message_group: str = "Default"
    path: Path | None = None
    timeout: float = 30.0
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    explicit_keys: frozenset[str] = attrs.field(
        default=attrs.Factory(_default_explicit, takes_self=True), repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if self.port is None:
            # Frozen: the derived port is set once, here, the way attrs documents it.
            object.__setattr__(self, "port", _smtp_port(self.transport, self.security))


def _mailbox_port(connection: str, security: str) -> int | None:
    tls = security == "tls"
    if connection == "imap":
        return 993 if tls else 143
    if connection == "pop3":
        return 995 if tls else 110
    return None


def _default_processed(connection: str) -> str:
    if connection == "mbox":
        return "keep"  # an mbox is usually an import: leave the file as it was
    if connection == "pop3":
        return "delete"  # POP3 has no folders to move to
    return "move:Deleted Items"


@attrs.frozen
class MailboxSettings:
    """One mailbox to read (``[[mailboxes]]``).

    Args:
        name: Unique (case-insensitively) name; tickets and logs refer to it.
        connection: ``office365``, ``google``, ``pop3``, ``imap``, ``ews``, ``maildir``,
            ``mbox`` or ``eml-dir``.
        enabled: False leaves the mailbox unread (and tolerates its unset secrets).
        host: The server, for ``imap``, ``pop3`` and ``ews``.
        port: The port; when not given, IMAP 993/143 and POP3 995/110 by ``security``.
        security: ``none``, ``starttls`` or ``tls`` (the default).
        tls_ca_file: A CA bundle to trust besides the system's.
        username: The login.
        password: The password (from ``password`` or ``password_env``); never shown.
        password_env: The environment variable the password was read from.
        path: The Maildir, mbox file or ``.eml`` folder (local connections), resolved
            against the configuration file's folder.
        folder: The folder read (``INBOX``).
        processed: What happens to a handled email: ``move:<folder>``
            (default ``move:Deleted Items``), ``delete``, or for mbox ``keep`` (its default).
            POP3 defaults to, and allows only, ``delete``.
        quarantine_folder: Where quarantined emails are moved.
        ticket_type: The ticket type new tickets get.
        record: ``ticket`` or ``opportunity``.
        send_acknowledgement: Whether new tickets are acknowledged by email.
        subject_tag: The threading tag opening ``[ID:123]``.
        start_from: ``all``, or ``now`` to leave mail already there alone.
        hijack: A follow-up from an unrelated address: ``new-ticket`` or ``quarantine``.
        outgoing: The ``[mailboxes.outgoing]`` override, or ``None``; see
            :meth:`effective_outgoing`.
        allowed_teams: Sending restriction: only agents of these teams may send from
            this mailbox (empty: everyone may).
        signature: The signature of mail sent from this mailbox.
        agent_signatures: Per-agent signatures (by the agent's email, lower-case) that
            replace the agent's own and the mailbox's on mail from this mailbox.
        extra: Connector-specific keys (``tenant_id``, ``client_id``, ``client_secret``,
            ``user_id``, ``credentials_file``, ``token``, ``auth``, ``leave_on_server``,
            ``poll_interval``, ``batch_size``, ``timeout``); secrets masked in ``repr``.
        key_path: Where this mailbox is in the file (``mailboxes[2]``), for later errors.
    """

    name: str
    connection: str
    enabled: bool = True
    host: str | None = None
    port: int | None = None
    security: str = "tls"
    tls_ca_file: Path | None = None
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    password_env: str | None = None
    path: Path | None = None
    folder: str = "INBOX"
    processed: str = attrs.field(
        default=attrs.Factory(lambda self: _default_processed(self.connection), takes_self=True)
    )
    quarantine_folder: str = "Quarantine"
    ticket_type: str = "Incident"
    record: str = "ticket"
    send_acknowledgement: bool = True
    subject_tag: str = "[ID:"
    start_from: str = "all"
    hijack: str = "new-ticket"
    outgoing: OutgoingSettings | None = None
    allowed_teams: tuple[str, ...] = ()
    signature: str = ""
    agent_signatures: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_mapping, hash=False
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    key_path: str = attrs.field(default="mailboxes", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.port is None:
            object.__setattr__(self, "port", _mailbox_port(self.connection, self.security))

    @property
    def processed_folder(self) -> str | None:
        """The folder handled email moves to, or ``None`` for ``delete``/``keep``."""
        action, _, folder = self.processed.partition(":")
        return folder if action == "move" else None

    def effective_outgoing(self, defaults: OutgoingSettings) -> OutgoingSettings:
        """The outgoing settings this mailbox sends with.

        Precedence, key by key: this mailbox's ``[mailboxes.outgoing]``, then
        ``defaults`` (the top-level ``[outgoing]``), then the built-in defaults; the SMTP
        port is derived from the merged transport and security when neither wrote one.

        Args:
            defaults: The top-level outgoing settings (``Config.outgoing``).

        Returns:
            ``defaults`` itself when the mailbox has no override, else the merge.
        """
        if self.outgoing is None:
            return defaults
        return _merge_outgoing(defaults, self.outgoing)


def _merge_outgoing(base: OutgoingSettings, override: OutgoingSettings) -> OutgoingSettings:
    written = override.explicit_keys | frozenset(override.extra)
    values: dict[str, Any] = {k: getattr(base, k) for k in base.explicit_keys}
    extra = dict(base.extra)
    for group in _SECRET_GROUPS:
        if written & group:
            for key in group:
                values.pop(key, None)
                extra.pop(key, None)
    values.update({k: getattr(override, k) for k in override.explicit_keys})
    extra.update(override.extra)
    return OutgoingSettings(**values, extra=extra, explicit_keys=frozenset(values))


@attrs.frozen
class ProcessingSettings:
    """How emails are processed (``[processing]``).

    Args:
        loop_token: Marks our own mail so it is recognised when fetched back; never
            shown. Defaults to a value derived from the outgoing from-address and the
            storage url, stable across runs.
        previous_loop_tokens: Tokens used before the last rotation: mail they signed is
            still recognised as ours; never shown.
        bulk: What list and bulk mail becomes: ``ticket`` or ``ignore``.
        ack_throttle_count: At most this many acknowledgements to one address …
        ack_throttle_window_minutes: … in this many minutes.
        max_send_attempts: Attempts before an outgoing email is given up.
        domain: The right-hand side of our Message-IDs.
        concurrent_mailboxes: At most this many mailboxes are read at once (each holds
            one connection to its server while it is read).
        ticket_url: The address of a ticket in the helpdesk, with ``{id}`` where the
            ticket's number goes (``$ticketurl`` in templates); empty when there is none.
    """

    loop_token: str = attrs.field(repr=False)
    previous_loop_tokens: tuple[str, ...] = attrs.field(default=(), repr=False, kw_only=True)
    bulk: str = "ticket"
    ack_throttle_count: int = 10
    ack_throttle_window_minutes: float = 10.0
    max_send_attempts: int = 8
    domain: str = "halomail.invalid"
    concurrent_mailboxes: int = 16
    ticket_url: str = ""


@attrs.frozen
class Config:
    """A whole, validated ``halomail.toml``.

    Args:
        storage: ``[storage]``.
        outgoing: ``[outgoing]``, the default for every mailbox.
        mailboxes: ``[[mailboxes]]`` in file order.
        rules: ``[[rules]]``, validated, in file order (the engine sorts by sequence).
        processing: ``[processing]``.
        limits: ``[limits]``.
        path: The file read, or ``None`` when built by :func:`parse_config`.
        services: ``[[services]]``: the monitored services.
        ticket_templates: ``[[ticket_templates]]``: starting points for apply_template rules.
        agents: ``[[agents]]``: who sends mail, with their teams and signatures.
        teams: ``[[teams]]``.
        message_groups: ``[[message_groups]]``: the administrators' templates of
            outgoing mail (the built-in ``Default`` group fills in what they leave out).
        sms: ``[sms]``: the email-to-SMS provider, or ``None``.
    """

    storage: StorageSettings
    outgoing: OutgoingSettings
    mailboxes: tuple[MailboxSettings, ...]
    rules: tuple[EmailRule, ...] = attrs.field(hash=False)
    processing: ProcessingSettings
    limits: ParseLimits = attrs.field(factory=ParseLimits)
    path: Path | None = None
    services: tuple[ServiceDefinition, ...] = ()
    ticket_templates: tuple[TicketTemplate, ...] = ()
    agents: tuple[Agent, ...] = ()
    teams: tuple[Team, ...] = ()
    message_groups: tuple[MessageGroup, ...] = ()
    sms: SmsSettings | None = None

    def mailbox(self, name: str) -> MailboxSettings:
        """The mailbox called ``name`` (case-insensitive).

        Raises:
            ConfigError: No mailbox has that name.
        """
        wanted = name.casefold()
        for mailbox in self.mailboxes:
            if mailbox.name.casefold() == wanted:
                return mailbox
        known = ", ".join(repr(m.name) for m in self.mailboxes) or "none"
        raise ConfigError("mailboxes", f"no mailbox named {name!r} (configured: {known})")


# -- loading --------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a ``halomail.toml``.

    Args:
        path: The file.
        env: Where ``*_env`` secrets are looked up; ``os.environ`` by default.

    Returns:
        The validated configuration, with ``path`` set to the file's absolute path.

    Raises:
        ConfigError: The file is missing, unreadable, not UTF-8, not TOML, or invalid;
            the error names the key path (``""`` for the file as a whole).
    """
    file = Path(path).expanduser().absolute()
    try:
        size = file.stat().st_size
        if size > _MAX_CONFIG_BYTES:
            raise ConfigError("", f"{file}: {size} bytes is too large for a configuration file")
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError("", f"{file}: no such configuration file") from exc
    except IsADirectoryError as exc:
        raise ConfigError("", f"{file}: is a folder, not a configuration file") from exc
    except OSError as exc:
        raise ConfigError("", f"{file}: cannot read: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not an error.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "", f"{file}: not UTF-8 text (invalid byte at line {line}, byte offset {exc.start})"
        ) from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{file}: invalid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses per nesting level
        raise ConfigError("", f"{file}: invalid TOML: arrays or tables nest too deeply") from exc
    config = parse_config(table, base_dir=file.parent, env=env)
    return attrs.evolve(config, path=file)


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a configuration already parsed from TOML (or built as a dict).

    Args:
        data: The top-level table.
        base_dir: The folder relative paths are resolved against.
        env: Where ``*_env`` secrets are looked up; ``os.environ`` by default.

    Returns:
        The validated configuration (``path`` is ``None``).

    Raises:
        ConfigError: Anything is invalid; the error names the key path.
    """
    ctx = _Context(Path(base_dir), os.environ if env is None else env)
    root = as_table(data, "")
    check_keys(root, "", _TOP_KEYS)
    storage = _parse_storage(_sub_table(root, "storage", ""), ctx)
    outgoing_table = _sub_table(root, "outgoing", "")
    outgoing = _parse_outgoing(outgoing_table, "outgoing", ctx, lenient=False)
    if "outgoing" in root:
        # Without an [outgoing] table nothing is configured to send with, which is fine
        # (simulate, dry runs); a table that is present must be complete.
        _check_outgoing_complete(outgoing, "outgoing")
    mailboxes = _parse_mailboxes(root, outgoing, ctx)
    services = services_from_config(_array(root, "services"), key_path="services")
    ticket_templates = ticket_templates_from_config(
        _array(root, "ticket_templates"), key_path="ticket_templates"
    )
    rules = rules_from_config(
        _array(root, "rules"),
        key_path="rules",
        services=[service.name for service in services],
        templates=[template.name for template in ticket_templates],
    )
    processing = _parse_processing(_sub_table(root, "processing", ""), outgoing, storage)
    limits = _parse_limits(_sub_table(root, "limits", ""))
    message_groups = message_groups_from_config(
        _array(root, "message_groups"), key_path="message_groups"
    )
    teams = _parse_teams(root)
    _check_message_groups(message_groups, outgoing, mailboxes, teams)
    team_names = {team.name.casefold() for team in teams}
    agents = _parse_agents(root, team_names)
    if teams:
        for mailbox in mailboxes:
            for index, team in enumerate(mailbox.allowed_teams):
                if team.casefold() not in team_names:
                    raise ConfigError(
                        f"{mailbox.key_path}.allowed_teams[{index}]",
                        f"no [[teams]] named {team!r}",
                    )
    return Config(
        sms=_parse_sms(root, ctx),
        message_groups=message_groups,
        agents=agents,
        teams=teams,
        storage=storage,
        outgoing=outgoing,
        mailboxes=mailboxes,
        rules=rules,
        services=services,
        ticket_templates=ticket_templates,
        processing=processing,
        limits=limits,
    )


# -- sections -------------------------------------------------------------------


@attrs.frozen
class _Context:
    base_dir: Path
    env: Mapping[str, str] = attrs.field(repr=False)


def _parse_storage(table: Mapping[str, Any], ctx: _Context) -> StorageSettings:
    check_keys(table, "storage", _STORAGE_KEYS)
    url = _str(table, "url", "storage", default="sqlite:///halomail.db")
    return StorageSettings(url=url, sqlite_path=_sqlite_path(url, ctx.base_dir))


def _parse_outgoing(
    table: Mapping[str, Any], kp: str, ctx: _Context, *, lenient: bool
) -> OutgoingSettings:
    check_keys(table, kp, (*_OUTGOING_FIELDS, *_OUTGOING_EXTRA))
    values: dict[str, Any] = {}
    if "transport" in table:
        values["transport"] = _choice(table, "transport", kp, TRANSPORTS, default="smtp")
    if "host" in table:
        values["host"] = _opt_str(table, "host", kp)
    if "port" in table:
        values["port"] = _opt_port(table, "port", kp)
    if "security" in table:
        values["security"] = _choice(table, "security", kp, SECURITIES, default="starttls")
    if "tls_ca_file" in table:
        values["tls_ca_file"] = _opt_file(table, "tls_ca_file", kp, ctx, must_exist=True)
    if "username" in table:
        values["username"] = _opt_str(table, "username", kp)
    for key in ("from_address", "reply_address"):
        if key in table:
            values[key] = _opt_address(table, key, kp)
    if "display_name" in table:
        values["display_name"] = _str(table, "display_name", kp, default="", allow_empty=True)
    if "message_group" in table:
        values["message_group"] = _str(table, "message_group", kp, default="Default")
    if "path" in table:
        values["path"] = _opt_file(table, "path", kp, ctx, must_exist=False)
    if "timeout" in table:
        values["timeout"] = _positive_number(table, "timeout", kp, default=30.0)
    if "password" in table or "password_env" in table:
        secret, env_name = _secret(table, "password", kp, ctx, lenient=lenient)
        values["password"], values["password_env"] = secret, env_name
    extra = _parse_extra(table, kp, _OUTGOING_EXTRA, ctx, lenient=lenient)
    return OutgoingSettings(**values, extra=extra, explicit_keys=frozenset(values))


def _check_outgoing_complete(outgoing: OutgoingSettings, kp: str) -> None:
    if outgoing.transport == "smtp" and not outgoing.host:
        raise ConfigError(f"{kp}.host", "required when transport = 'smtp'")
    if outgoing.transport == "maildir" and outgoing.path is None:
        raise ConfigError(
            f"{kp}.path", "required when transport = 'maildir' (the folder .eml files go to)"
        )


def _parse_extra(
    table: Mapping[str, Any],
    kp: str,
    allowed: Collection[str],
    ctx: _Context,
    *,
    lenient: bool,
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key in ("tenant_id", "client_id", "user_id"):
        if key in table:
            extra[key] = _str(table, key, kp, default="")
    if "credentials_file" in table:
        extra["credentials_file"] = _opt_file(table, "credentials_file", kp, ctx, must_exist=False)
    if "auth" in table:
        extra["auth"] = _choice(table, "auth", kp, AUTH, default="password")
    if "client_secret" in table or "client_secret_env" in table:
        secret, env_name = _secret(table, "client_secret", kp, ctx, lenient=lenient)
        extra["client_secret"] = secret
        if env_name is not None:
            extra["client_secret_env"] = env_name
    if "token_env" in table:
        # token_env names a variable holding an OAuth2 token; kept beside its value so a
        # connector may read it again when the token rotates.
        env_name = _env_name(table, "token_env", kp)
        extra["token_env"] = env_name
        extra["token"] = _from_env(env_name, f"{join_key(kp, 'token_env')}", ctx, lenient=lenient)
    if "refresh_token" in table or "refresh_token_env" in table:
        secret, env_name = _secret(table, "refresh_token", kp, ctx, lenient=lenient)
        extra["refresh_token"] = secret
        if env_name is not None:
            extra["refresh_token_env"] = env_name
    for key in ("authority", "token_uri"):
        if key in table:
            url = _str(table, key, kp, default="")
            if not url.startswith("https://"):
                raise ConfigError(join_key(kp, key), f"expected an https:// address, got {url!r}")
            extra[key] = url
    if "subject" in table:
        extra["subject"] = _required_address(table, "subject", kp)
    if "scopes" in table:
        extra["scopes"] = _str_list(table, "scopes", kp)
    for key in ("certificate_file", "token_cache", "seen_file"):
        if key in table:
            extra[key] = _opt_file(table, key, kp, ctx, must_exist=key == "certificate_file")
    if "access_type" in table:
        extra["access_type"] = _choice(
            table, "access_type", kp, ("delegate", "impersonation"), default="delegate"
        )
    if "save_copy" in table:
        extra["save_copy"] = _bool(table, "save_copy", kp, default=False)
    if "delete_type" in table and "delete_type" in allowed:
        extra["delete_type"] = _choice(
            table,
            "delete_type",
            kp,
            ("HardDelete", "SoftDelete", "MoveToDeletedItems"),
            default="HardDelete",
        )
    if "leave_on_server" in table:
        extra["leave_on_server"] = _bool(table, "leave_on_server", kp, default=False)
    if "poll_interval" in table:
        extra["poll_interval"] = _positive_number(table, "poll_interval", kp, default=60.0)
    if "batch_size" in table:
        extra["batch_size"] = _int(table, "batch_size", kp, default=50, minimum=1)
    if "timeout" in table and "timeout" in allowed:
        extra["timeout"] = _positive_number(table, "timeout", kp, default=30.0)
    return extra


def _parse_mailboxes(
    root: Mapping[str, Any], outgoing: OutgoingSettings, ctx: _Context
) -> tuple[MailboxSettings, ...]:
    raw = root.get("mailboxes", [])
    if not isinstance(raw, list):
        raise ConfigError(
            "mailboxes", f"expected an array of tables ([[mailboxes]]), got {describe(raw)}"
        )
    mailboxes: list[MailboxSettings] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        kp = f"mailboxes[{index}]"
        mailbox = _parse_mailbox(as_table(item, kp), kp, outgoing, ctx)
        folded = mailbox.name.casefold()
        if folded in seen:
            raise ConfigError(
                f"{kp}.name",
                f"duplicate mailbox name {mailbox.name!r} (also mailboxes[{seen[folded]}]); "
                "names must be unique, ignoring case",
            )
        seen[folded] = index
        mailboxes.append(mailbox)
    return tuple(mailboxes)


def _parse_mailbox(
    table: Mapping[str, Any], kp: str, top_outgoing: OutgoingSettings, ctx: _Context
) -> MailboxSettings:
    check_keys(table, kp, (*_MAILBOX_FIELDS, *_MAILBOX_EXTRA))
    enabled = _bool(table, "enabled", kp, default=True)
    # A disabled mailbox is often one whose credentials are gone: its unset secret
    # variables are tolerated (the secret stays None) so the rest of the file loads.
    lenient = not enabled
    name = _required_str(table, "name", kp)
    connection = _required_choice(table, "connection", kp, CONNECTIONS)
    security = _choice(table, "security", kp, SECURITIES, default="tls")
    host = _opt_str(table, "host", kp)
    if connection in ("imap", "pop3") and not host:
        raise ConfigError(f"{kp}.host", f"required when connection = {connection!r}")
    if security == "none" and connection in ("imap", "pop3", "ews"):
        log.warning("%s: security = 'none': the password is sent unencrypted", kp)
    path = _opt_file(table, "path", kp, ctx, must_exist=False)
    if connection in LOCAL_CONNECTIONS and path is None:
        raise ConfigError(
            f"{kp}.path", f"required when connection = {connection!r} (relative to this file)"
        )
    local = connection in LOCAL_CONNECTIONS
    processed = _processed(table, kp, connection, local=local)
    quarantine_folder = _str(table, "quarantine_folder", kp, default="Quarantine")
    if local:
        _check_local_folder(quarantine_folder, f"{kp}.quarantine_folder")
    subject_tag = _str(table, "subject_tag", kp, default="[ID:")
    if not subject_tag.rstrip(":#- ").strip():
        raise ConfigError(
            f"{kp}.subject_tag", f"{subject_tag!r} has no text to recognise, e.g. '[ID:'"
        )
    password: str | None = None
    password_env: str | None = None
    if "password" in table or "password_env" in table:
        password, password_env = _secret(table, "password", kp, ctx, lenient=lenient)
    mailbox_outgoing: OutgoingSettings | None = None
    if "outgoing" in table:
        okp = f"{kp}.outgoing"
        mailbox_outgoing = _parse_outgoing(
            as_table(table["outgoing"], okp), okp, ctx, lenient=lenient
        )
        merged = _merge_outgoing(top_outgoing, mailbox_outgoing)
        _check_outgoing_complete(merged, okp)
    return MailboxSettings(
        name=name,
        connection=connection,
        enabled=enabled,
        host=host,
        port=_opt_port(table, "port", kp),
        security=security,
        tls_ca_file=_opt_file(table, "tls_ca_file", kp, ctx, must_exist=True),
        username=_opt_str(table, "username", kp),
        password=password,
        password_env=password_env,
        path=path,
        folder=_str(table, "folder", kp, default="INBOX"),
        processed=processed,
        quarantine_folder=quarantine_folder,
        ticket_type=_str(table, "ticket_type", kp, default="Incident"),
        record=_choice(table, "record", kp, RECORDS, default="ticket"),
        send_acknowledgement=_bool(table, "send_acknowledgement", kp, default=True),
        subject_tag=subject_tag,
        start_from=_choice(table, "start_from", kp, START_FROM, default="all"),
        hijack=_choice(table, "hijack", kp, HIJACK, default="new-ticket"),
        outgoing=mailbox_outgoing,
        allowed_teams=_str_list(table, "allowed_teams", kp),
        signature=_multiline(table, "signature", kp),
        agent_signatures=_agent_signatures(table, kp),
        extra=_parse_extra(table, kp, _MAILBOX_EXTRA, ctx, lenient=lenient),
        key_path=kp,
    )


def _processed(table: Mapping[str, Any], kp: str, connection: str, *, local: bool) -> str:
    default = _default_processed(connection)
    value = _str(table, "processed", kp, default=default)
    key = f"{kp}.processed"
    allowed = "'move:<folder>', 'delete'" + (", 'keep'" if connection == "mbox" else "")
    if connection == "pop3":
        if value != "delete":
            raise ConfigError(key, f"POP3 has no folders to move to: use 'delete', not {value!r}")
        return value
    if value == "delete" or (value == "keep" and connection == "mbox"):
        return value
    action, sep, folder = value.partition(":")
    if action == "move" and sep and folder.strip():
        if local:
            _check_local_folder(folder, key)
        return value
    raise ConfigError(key, f"expected one of {allowed}, got {value!r}")


def _check_local_folder(folder: str, key: str) -> None:
    """Folder names of local mailboxes become file names: keep them inside the mailbox."""
    if folder in (".", "..") or folder.startswith(".") or "/" in folder or "\\" in folder:
        raise ConfigError(
            key,
            f"folder name {folder!r} must not contain '/' or '\\' or start with '.'",
        )


def _array(root: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """An array of tables (``[[key]]``), each checked to be a table."""
    raw = root.get(key, [])
    if not isinstance(raw, list):
        raise ConfigError(key, f"expected an array of tables ([[{key}]]), got {describe(raw)}")
    return [as_table(item, f"{key}[{index}]") for index, item in enumerate(raw)]


def _parse_processing(
    table: Mapping[str, Any], outgoing: OutgoingSettings, storage: StorageSettings
) -> ProcessingSettings:
    kp = "processing"
    check_keys(table, kp, _PROCESSING_KEYS)
    from_address = outgoing.from_address or ""
    if "loop_token" in table:
        loop_token = _str(table, "loop_token", kp, default="", secret=True)
    else:
        # Stable across runs and restarts, different between installations, so our own
        # mail is recognised when fetched back without anyone choosing a token.
        seed = f"halomail-loop\n{from_address.lower()}\n{storage.url}".encode()
        loop_token = hashlib.sha256(seed).hexdigest()[:32]
    previous = table.get("previous_loop_tokens", [])
    if not isinstance(previous, list) or not all(isinstance(t, str) and t for t in previous):
        # The values are secrets: the message names the key, never the value.
        raise ConfigError(f"{kp}.previous_loop_tokens", "expected an array of non-empty strings")
    derived_domain = from_address.rpartition("@")[2].lower()
    if not _DOMAIN.fullmatch(derived_domain):
        derived_domain = "halomail.invalid"
    domain = _str(table, "domain", kp, default=derived_domain)
    if not _DOMAIN.fullmatch(domain):
        raise ConfigError(
            f"{kp}.domain", f"expected a domain name like 'example.com', got {domain!r}"
        )
    return ProcessingSettings(
        loop_token=loop_token,
        previous_loop_tokens=tuple(previous),
        bulk=_choice(table, "bulk", kp, BULK, default="ticket"),
        ack_throttle_count=_int(table, "ack_throttle_count", kp, default=10, minimum=1),
        ack_throttle_window_minutes=_positive_number(
            table, "ack_throttle_window_minutes", kp, default=10
        ),
        max_send_attempts=_int(table, "max_send_attempts", kp, default=8, minimum=1),
        domain=domain.lower(),
        concurrent_mailboxes=_int(table, "concurrent_mailboxes", kp, default=16, minimum=1),
        ticket_url=_ticket_url(table, kp),
    )


def _ticket_url(table: Mapping[str, Any], kp: str) -> str:
    url = _str(table, "ticket_url", kp, default="")
    if url and (not url.startswith(("https://", "http://")) or "{id}" not in url):
        raise ConfigError(
            join_key(kp, "ticket_url"),
            f"expected an http(s) address with {{id}} for the ticket number, got {url!r}",
        )
    return url


def _parse_limits(table: Mapping[str, Any]) -> ParseLimits:
    kp = "limits"
    check_keys(table, kp, _LIMITS_KEYS)
    defaults = ParseLimits()
    return ParseLimits(
        **{
            key: _int(table, key, kp, default=getattr(defaults, key), minimum=1)
            for key in _LIMITS_KEYS
        }
    )


def _parse_sms(root: Mapping[str, Any], ctx: _Context) -> SmsSettings | None:
    if "sms" not in root:
        return None
    kp = "sms"
    table = _sub_table(root, "sms", "")
    check_keys(table, kp, _SMS_KEYS)
    password: str | None = None
    if "password" in table or "password_env" in table:
        password, _env = _secret(table, "password", kp, ctx, lenient=False)
    from_address = _opt_address(table, "from_address", kp)
    if from_address is None:
        raise ConfigError(join_key(kp, "from_address"), "required (the address the provider knows)")
    try:
        return SmsSettings(
            provider_domain=_required_str(table, "provider_domain", kp),
            from_address=from_address,
            password=password,
            pin_placement=_choice(
                table, "pin_placement", kp, ("none", "subject", "body-prefix"), default="none"
            ),
            display_name=_str(table, "display_name", kp, default=""),
            max_length=_int(table, "max_length", kp, default=160, minimum=20),
            default_country_code=_str(table, "default_country_code", kp, default=""),
            address_format=_str(table, "address_format", kp, default="{phone}@{domain}"),
            ellipsis=_str(table, "ellipsis", kp, default="…"),
        )
    except ValueError as exc:
        raise ConfigError(kp, str(exc)) from exc


def _check_message_groups(
    groups: Sequence[MessageGroup],
    outgoing: OutgoingSettings,
    mailboxes: Sequence[MailboxSettings],
    teams: Sequence[Team],
) -> None:
    """Every message group named by [outgoing], a mailbox or a team must exist."""
    known = {"default"} | {group.name.casefold() for group in groups}
    names = ", ".join(["Default", *(group.name for group in groups)])
    wanted: list[tuple[str, str]] = [("outgoing.message_group", outgoing.message_group)]
    for mailbox in mailboxes:
        if mailbox.outgoing is not None:
            where = f"{mailbox.key_path}.outgoing.message_group"
            wanted.append((where, mailbox.effective_outgoing(outgoing).message_group))
    for index, team in enumerate(teams):
        if team.message_group is not None:
            wanted.append((f"teams[{index}].message_group", team.message_group))
    for where, name in wanted:
        if name.casefold() not in known:
            raise ConfigError(where, f"no message group {name!r} (known: {names})")


def _agent_signatures(table: Mapping[str, Any], kp: str) -> dict[str, str]:
    signatures = _sub_table(table, "agent_signatures", kp)
    where = join_key(kp, "agent_signatures")
    result: dict[str, str] = {}
    for agent in signatures:
        if not _ADDRESS.fullmatch(agent):
            raise ConfigError(
                join_key(where, agent), "expected an agent's email address as the key"
            )
        result[agent.lower()] = _multiline(signatures, agent, where)
    return result


def _parse_agents(root: Mapping[str, Any], teams: Collection[str]) -> tuple[Agent, ...]:
    agents: list[Agent] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(_array(root, "agents")):
        kp = f"agents[{index}]"
        check_keys(table, kp, ("name", "email", "team", "signature"))
        email = _required_str(table, "email", kp).strip().lower()
        if not _ADDRESS.fullmatch(email):
            raise ConfigError(join_key(kp, "email"), f"expected an email address, got {email!r}")
        if email in seen:
            raise ConfigError(
                join_key(kp, "email"), f"duplicate agent {email!r} (also agents[{seen[email]}])"
            )
        seen[email] = index
        team = _opt_str(table, "team", kp)
        if team is not None and team.casefold() not in teams:
            known = ", ".join(sorted(teams)) or "none"
            raise ConfigError(join_key(kp, "team"), f"no [[teams]] named {team!r} (known: {known})")
        agents.append(
            Agent(
                name=_str(table, "name", kp, default=email),
                email=email,
                team=team,
                signature=_multiline(table, "signature", kp),
            )
        )
    return tuple(agents)


def _parse_teams(root: Mapping[str, Any]) -> tuple[Team, ...]:
    teams: list[Team] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(_array(root, "teams")):
        kp = f"teams[{index}]"
        check_keys(table, kp, ("name", "message_group"))
        name = _required_str(table, "name", kp)
        if name.casefold() in seen:
            raise ConfigError(
                join_key(kp, "name"),
                f"duplicate team {name!r} (also teams[{seen[name.casefold()]}])",
            )
        seen[name.casefold()] = index
        teams.append(Team(name, _opt_str(table, "message_group", kp)))
    return tuple(teams)


# -- value readers ----------------------------------------------------------------


def _multiline(table: Mapping[str, Any], key: str, kp: str) -> str:
    """Text that may span lines (a signature): line breaks allowed, other controls not."""
    if key not in table:
        return ""
    value = table[key]
    where = join_key(kp, key)
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value)}")
    if CONTROL.search(value.replace("\r\n", "\n").replace("\n", "").replace("\t", "")):
        raise ConfigError(where, "must not contain control characters other than line breaks")
    return value.replace("\r\n", "\n").strip("\n")


def _str_list(table: Mapping[str, Any], key: str, kp: str) -> tuple[str, ...]:
    if key not in table:
        return ()
    value = table[key]
    where = join_key(kp, key)
    if not isinstance(value, list):
        raise ConfigError(where, f"expected an array of strings, got {describe(value)}")
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or CONTROL.search(item):
            raise ConfigError(f"{where}[{index}]", f"expected a name, got {describe(item)}")
        items.append(item)
    return tuple(items)


def _sub_table(table: Mapping[str, Any], key: str, kp: str) -> Mapping[str, Any]:
    if key not in table:
        return {}
    return as_table(table[key], join_key(kp, key))


def _str(
    table: Mapping[str, Any],
    key: str,
    kp: str,
    *,
    default: str,
    allow_empty: bool = False,
    secret: bool = False,
) -> str:
    if key not in table:
        return default
    value = table[key]
    where = join_key(kp, key)
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value, secret=secret)}")
    if not allow_empty and not value.strip():
        raise ConfigError(where, "must not be empty")
    # Control characters (CR/LF above all) in a name or an address would end up in
    # headers or logs; a secret may hold anything and is never echoed.
    if not secret and CONTROL.search(value):
        raise ConfigError(where, "must not contain control characters (line breaks, NUL …)")
    return value


def _opt_str(table: Mapping[str, Any], key: str, kp: str) -> str | None:
    if key not in table:
        return None
    return _str(table, key, kp, default="")


def _required_str(table: Mapping[str, Any], key: str, kp: str) -> str:
    if key not in table:
        raise ConfigError(join_key(kp, key), "required (a string)")
    return _str(table, key, kp, default="")


def _choice(
    table: Mapping[str, Any], key: str, kp: str, allowed: Collection[str], *, default: str
) -> str:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            join_key(kp, key), f"expected one of {options}, got {describe(value)}{hint}"
        )
    return value


def _required_choice(table: Mapping[str, Any], key: str, kp: str, allowed: Collection[str]) -> str:
    if key not in table:
        options = ", ".join(repr(a) for a in allowed)
        raise ConfigError(join_key(kp, key), f"required (one of {options})")
    return _choice(table, key, kp, allowed, default="")


def _bool(table: Mapping[str, Any], key: str, kp: str, *, default: bool) -> bool:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise ConfigError(join_key(kp, key), f"expected true or false, got {describe(value)}")
    return value


def _int(table: Mapping[str, Any], key: str, kp: str, *, default: int, minimum: int | None) -> int:
    if key not in table:
        return default
    value = table[key]
    # bool is an int in Python; `port = true` is a mistake, not port 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(join_key(kp, key), f"expected an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(join_key(kp, key), f"must be at least {minimum}, got {value}")
    return value


def _opt_port(table: Mapping[str, Any], key: str, kp: str) -> int | None:
    if key not in table:
        return None
    port = _int(table, key, kp, default=0, minimum=None)
    if not 1 <= port <= 65535:
        raise ConfigError(join_key(kp, key), f"expected a port from 1 to 65535, got {port}")
    return port


def _positive_number(table: Mapping[str, Any], key: str, kp: str, *, default: float) -> float:
    if key not in table:
        return float(default)
    value = table[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(join_key(kp, key), f"expected a number, got {describe(value)}")
    if not value > 0 or value == float("inf"):
        raise ConfigError(join_key(kp, key), f"expected a positive number, got {value!r}")
    return float(value)


def _required_address(table: Mapping[str, Any], key: str, kp: str) -> str:
    value = _opt_address(table, key, kp)
    if value is None:
        raise ConfigError(join_key(kp, key), "required (an email address)")
    return value


def _opt_address(table: Mapping[str, Any], key: str, kp: str) -> str | None:
    value = _opt_str(table, key, kp)
    if value is not None and not _ADDRESS.fullmatch(value):
        raise ConfigError(
            join_key(kp, key),
            f"expected an email address like 'support@example.com', got {value!r}",
        )
    return value


def _opt_file(
    table: Mapping[str, Any], key: str, kp: str, ctx: _Context, *, must_exist: bool
) -> Path | None:
    value = _opt_str(table, key, kp)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = ctx.base_dir / path
    if must_exist:
        try:
            found = path.is_file()
        except OSError as exc:  # e.g. a folder on the way that we may not enter
            raise ConfigError(
                join_key(kp, key), f"cannot read {path}: {exc.strerror or exc}"
            ) from exc
        if not found:
            raise ConfigError(join_key(kp, key), f"no such file: {path}")
    return path


def _env_name(table: Mapping[str, Any], key: str, kp: str) -> str:
    name = _str(table, key, kp, default="")
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(
            join_key(kp, key),
            f"expected an environment variable name like 'IMAP_PASSWORD', got {name!r}",
        )
    return name


def _from_env(name: str, where: str, ctx: _Context, *, lenient: bool) -> str | None:
    value = ctx.env.get(name)
    if value:
        return value
    if lenient:
        return None
    # The name is safe to show; the value (absent or empty here) never is.
    raise ConfigError(where, f"environment variable {name!r} is not set or is empty")


def _secret(
    table: Mapping[str, Any], key: str, kp: str, ctx: _Context, *, lenient: bool
) -> tuple[str | None, str | None]:
    """A secret given inline (``key``) or through ``key_env``: (value, variable name)."""
    env_key = f"{key}_env"
    if key in table and env_key in table:
        raise ConfigError(join_key(kp, env_key), f"give either {key!r} or {env_key!r}, not both")
    if key in table:
        return _str(table, key, kp, default="", allow_empty=True, secret=True), None
    name = _env_name(table, env_key, kp)
    return _from_env(name, join_key(kp, env_key), ctx, lenient=lenient), name
