"""``halomail.toml`` → validated, frozen settings (design §3 "Configuration").

:func:`load_config` reads a file; :func:`parse_config` validates an already-parsed
table. Every problem raises :class:`~halomail.errors.ConfigError` naming where it is
(``mailboxes[1].port``, ``outgoing.security``) and what is allowed; nothing else
escapes, so an administrator never sees a traceback for a bad file.

The tables::

    [storage]        url: "sqlite:///path.db" (relative to this file's folder) or "memory://";
                     or repository: "package.module:factory" (the host's repository)
    [outgoing]       how mail is sent by default (OutgoingSettings)
    [[mailboxes]]    one per mailbox read (MailboxSettings); may hold [mailboxes.outgoing]
    [[rules]]        email rules (validated by :func:`halomail.rules.rules_from_config`)
    [[services]]     monitored services (:func:`halomail.services.services_from_config`)
    [[ticket_templates]]  what apply_template rules start tickets from
    [processing]     loop token, bulk mail, acknowledgement throttle, send attempts, domain
    [limits]         parsing bounds (ParseLimits)
    [scale]          Celery workers and the scheduler: the Redis broker, intervals (ScaleSettings)

Each table is read by its own module (:mod:`~halomail.config.outgoing`,
:mod:`~halomail.config.mailboxes`, :mod:`~halomail.config.processing`); every enabled
mailbox and every outgoing table is then validated by its backend's typed settings,
found in :mod:`halomail.backends.registry`, so a file that ``run`` would refuse does
not load.

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

import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from halomail._validate import (
    as_table,
    check_keys,
)
from halomail.backends import registry
from halomail.config._collect import Collector, located
from halomail.config._lines import KeyLines
from halomail.config._read import (
    Context,
    array_of_tables,
    sub_table,
)
from halomail.config.mailboxes import (
    MailboxSettings,
    parse_mailboxes,
)
from halomail.config.outgoing import (
    OutgoingSettings,
    check_outgoing_complete,
    parse_outgoing,
)
from halomail.config.processing import (
    ProcessingSettings,
    StorageSettings,
    check_message_groups,
    parse_agents,
    parse_limits,
    parse_processing,
    parse_sms,
    parse_storage,
    parse_teams,
)
from halomail.config.scale import ScaleSettings, parse_scale
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
    "ScaleSettings",
    "StorageSettings",
    "check_some_mailbox_enabled",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# A configuration file is a few kilobytes; refusing absurd sizes keeps a wrong path
# (a log file, a database) from being read into memory whole.
_MAX_CONFIG_BYTES = 4 * 1024 * 1024


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
    "scale",
)


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
        scale: ``[scale]``: the broker and schedule of ``halomail worker`` and
            ``halomail scheduler``, or ``None``.
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
    scale: ScaleSettings | None = None

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


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    require_mailbox: bool = True,
) -> Config:
    """Read and validate a ``halomail.toml``.

    Args:
        path: The file.
        env: Where ``*_env`` secrets are looked up; ``os.environ`` by default.
        require_mailbox: Refuse a file with no enabled ``[[mailboxes]]`` (an empty or
            truncated file above all: processing it would read nothing and succeed).
            False for what needs only the storage (listing tickets).

    Returns:
        The validated configuration, with ``path`` set to the file's absolute path.

    Raises:
        ConfigError: The file is missing, unreadable, not UTF-8, not TOML, or invalid,
            or (``require_mailbox``) enables no mailbox; the error names the key path
            (``""`` for the file as a whole).
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
        raise ConfigError("", f"{file}: invalid TOML: {_with_position(str(exc), text)}") from exc
    except RecursionError as exc:  # tomllib recurses per nesting level
        raise ConfigError("", f"{file}: invalid TOML: arrays or tables nest too deeply") from exc
    try:
        config = parse_config(table, base_dir=file.parent, env=env)
    except ConfigError as exc:
        # Each problem with its line in the file (tomllib gives values, not positions).
        raise located(exc, KeyLines(text).line) from exc
    if require_mailbox:
        check_some_mailbox_enabled(config, file)
    return attrs.evolve(config, path=file)


def _with_position(message: str, text: str) -> str:
    """tomllib's message, with the line and column of a file cut short.

    For an error at the very end, tomllib says "(at end of document)" and no more; the
    administrator looking at a truncated file wants to know where that is.
    """
    end = "(at end of document)"
    if not message.endswith(end):
        return message
    lines = text.split("\n")
    where = f"line {len(lines)}, column {len(lines[-1]) + 1}"
    return f"{message[: -len(end)]}(at end of document: {where})"


def check_some_mailbox_enabled(config: Config, file: Path | None = None) -> None:
    """Refuse a configuration that would read no mailbox at all.

    An empty or truncated file is valid TOML and every table has defaults, so without
    this check it would "run" successfully, reading nothing, for ever.

    Raises:
        ConfigError: At ``mailboxes``, with what to add.
    """
    where = f"{file}: " if file is not None else ""
    if not config.mailboxes:
        raise ConfigError(
            "mailboxes",
            f"{where}no [[mailboxes]] table, so there is nothing to read (is the file "
            'empty or cut short?); add one, e.g. [[mailboxes]] name = "Support" '
            'connection = "maildir" path = "inbox" (see docs/configuration.md)',
        )
    if not any(mailbox.enabled for mailbox in config.mailboxes):
        names = ", ".join(repr(m.name) for m in config.mailboxes)
        raise ConfigError(
            "mailboxes",
            f"{where}every mailbox is disabled ({names}), so there is nothing to read; "
            "set enabled = true on at least one",
        )


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
    ctx = Context(Path(base_dir), os.environ if env is None else env)
    root = as_table(data, "")
    # Each table is read even when one before it failed, so that every problem is
    # reported at once; a table that needs a failed one is left out (see _collect).
    found = Collector()
    found.run(lambda: check_keys(root, "", _TOP_KEYS))
    storage = found.run(lambda: parse_storage(sub_table(root, "storage", ""), ctx))
    outgoing = found.run(lambda: _parse_top_outgoing(root, ctx))
    mailboxes = found.run(lambda: parse_mailboxes(root, outgoing, ctx)) if outgoing else None
    services = found.run(
        lambda: services_from_config(array_of_tables(root, "services"), key_path="services")
    )
    ticket_templates = found.run(
        lambda: ticket_templates_from_config(
            array_of_tables(root, "ticket_templates"), key_path="ticket_templates"
        )
    )
    rules = None
    if services is not None and ticket_templates is not None:
        rules = found.run(
            lambda: rules_from_config(
                array_of_tables(root, "rules"),
                key_path="rules",
                services=[service.name for service in services],
                templates=[template.name for template in ticket_templates],
                # Unknown when [[mailboxes]] failed: then a rule's mailbox is not checked.
                mailboxes=None if mailboxes is None else [mailbox.name for mailbox in mailboxes],
            )
        )
    processing = None
    if outgoing is not None and storage is not None:
        processing = found.run(
            lambda: parse_processing(sub_table(root, "processing", ""), outgoing, storage)
        )
    limits = found.run(lambda: parse_limits(sub_table(root, "limits", "")))
    message_groups = found.run(
        lambda: message_groups_from_config(
            array_of_tables(root, "message_groups"), key_path="message_groups"
        )
    )
    teams = found.run(lambda: parse_teams(root))
    agents = None
    if teams is not None:
        team_names = {team.name.casefold() for team in teams}
        agents = found.run(lambda: parse_agents(root, team_names))
    if outgoing is not None and mailboxes is not None:
        if message_groups is not None and teams is not None:
            found.run(lambda: check_message_groups(message_groups, outgoing, mailboxes, teams))
        if teams:
            found.run(lambda: _check_allowed_teams(mailboxes, teams))
        if agents is not None:
            found.run(lambda: _check_departments(mailboxes, agents))
        found.run(lambda: _check_backends(outgoing, mailboxes, outgoing_written="outgoing" in root))
    sms = found.run(lambda: parse_sms(root, ctx))
    scale = found.run(lambda: parse_scale(sub_table(root, "scale", ""), ctx))
    found.raise_any()
    return Config(
        sms=sms,
        scale=scale,
        message_groups=_read(message_groups),
        agents=_read(agents),
        teams=_read(teams),
        storage=_read(storage),
        outgoing=_read(outgoing),
        mailboxes=_read(mailboxes),
        rules=_read(rules),
        services=_read(services),
        ticket_templates=_read(ticket_templates),
        processing=_read(processing),
        limits=_read(limits),
    )


def _read(value: T | None) -> T:
    """A table the collector read: ``None`` only for a failed one, and then it raised."""
    assert value is not None, "a failed table was not reported"
    return value


def _parse_top_outgoing(root: Mapping[str, Any], ctx: Context) -> OutgoingSettings:
    outgoing = parse_outgoing(sub_table(root, "outgoing", ""), "outgoing", ctx, lenient=False)
    if "outgoing" in root:
        # Without an [outgoing] table nothing is configured to send with, which is fine
        # (simulate, dry runs); a table that is present must be complete.
        check_outgoing_complete(outgoing, "outgoing")
    return outgoing


def _check_allowed_teams(mailboxes: Sequence[MailboxSettings], teams: Sequence[Team]) -> None:
    """Every team a mailbox allows is a ``[[teams]]`` entry."""
    team_names = {team.name.casefold() for team in teams}
    for mailbox in mailboxes:
        for index, team in enumerate(mailbox.allowed_teams):
            if team.casefold() not in team_names:
                raise ConfigError(
                    f"{mailbox.key_path}.allowed_teams[{index}]",
                    f"no [[teams]] named {team!r}",
                )


def _check_departments(mailboxes: Sequence[MailboxSettings], agents: Sequence[Agent]) -> None:
    """With ``[[agents]]`` in the file, each allowed department is some agent's (a typo)."""
    if not agents:
        return  # the host application supplies its agents: nothing to check against
    known = {agent.department.casefold(): agent.department for agent in agents if agent.department}
    shown = ", ".join(sorted(known.values())) or "none: give [[agents]] a department"
    for mailbox in mailboxes:
        for index, department in enumerate(mailbox.allowed_departments):
            if department.casefold() not in known:
                raise ConfigError(
                    f"{mailbox.key_path}.allowed_departments[{index}]",
                    f"no agent is in department {department!r} (known: {shown})",
                )


def _check_backends(
    outgoing: OutgoingSettings,
    mailboxes: Sequence[MailboxSettings],
    *,
    outgoing_written: bool,
) -> None:
    """Validate every enabled mailbox and every outgoing table through its backend's
    typed settings, so that a file ``run`` would refuse does not load."""
    if outgoing_written:
        _transport_settings(outgoing, "outgoing")
    for mailbox in mailboxes:
        if not mailbox.enabled:
            continue  # its secrets may be unset on purpose: it is not read
        backend = registry.mailbox_backend(mailbox.connection, mailbox.key_path)
        backend.settings(mailbox.as_table(), mailbox.key_path)
        if mailbox.outgoing is not None:
            merged = mailbox.effective_outgoing(outgoing)
            _transport_settings(merged, f"{mailbox.key_path}.outgoing")
        elif mailbox.send_with == "mailbox":  # its own sign-in sends, as its own address
            _transport_settings(mailbox.effective_outgoing(outgoing), mailbox.key_path)


def _transport_settings(outgoing: OutgoingSettings, key_path: str) -> None:
    backend = registry.transport_backend(outgoing.transport, key_path)
    backend.settings(outgoing.as_table(), key_path)
