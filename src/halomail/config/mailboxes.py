"""``[[mailboxes]]``: the mailboxes read, validated into :class:`MailboxSettings`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import (
    as_table,
    check_keys,
    describe,
    join_key,
)
from halomail.config._collect import Collector
from halomail.config._read import (
    _ADDRESS,
    Context,
    _bool,
    _choice,
    _multiline,
    _opt_file,
    _opt_port,
    _opt_str,
    _required_choice,
    _required_str,
    _secret,
    _str,
    _str_list,
    sub_table,
)
from halomail.config.outgoing import (
    OUTGOING_EXTRA,
    SECURITIES,
    OutgoingSettings,
    check_outgoing_complete,
    frozen_mapping,
    merge_outgoing,
    parse_extra,
    parse_outgoing,
    settings_table,
)
from halomail.errors import ConfigError

__all__ = [
    "CONNECTIONS",
    "HIJACK",
    "LOCAL_CONNECTIONS",
    "OWN_TRANSPORTS",
    "RECORDS",
    "SEND_WITH",
    "START_FROM",
    "MailboxSettings",
]

log = logging.getLogger(__name__)

CONNECTIONS = ("office365", "google", "pop3", "imap", "ews", "maildir", "mbox", "eml-dir")


LOCAL_CONNECTIONS = frozenset({"maildir", "mbox", "eml-dir"})


RECORDS = ("ticket", "opportunity")


START_FROM = ("all", "now")


HIJACK = ("new-ticket", "quarantine")


#: ``send_with``: the mailbox's own sign-in, or the top-level ``[outgoing]`` table.
SEND_WITH = ("mailbox", "outgoing")


#: The connections that can send with their own sign-in, and the transport they use:
#: one Microsoft 365 (or Google) sign-in reads the mailbox and sends as it.
OWN_TRANSPORTS = {"office365": "graph", "google": "gmail"}

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
    "send_with",
    "allowed_teams",
    "allowed_departments",
    "signature",
    "agent_signatures",
)


_MAILBOX_EXTRA = (
    *OUTGOING_EXTRA,
    "leave_on_server",
    "poll_interval",
    "batch_size",
    "timeout",
    "delete_type",
    "seen_file",
    "delta",  # office365: false where delta is not offered (national clouds)
    "size_property",  # office365: false to list without PidTagMessageSize
)


def _mailbox_port(connection: str, security: str) -> int | None:
    tls = security == "tls"
    if connection == "imap":
        return 993 if tls else 143
    if connection == "pop3":
        return 995 if tls else 110
    return None


def _default_send_with(settings: MailboxSettings) -> str:
    if settings.outgoing is None and settings.connection in OWN_TRANSPORTS:
        return "mailbox"
    return "outgoing"


# Keys only a connector reads: they stay out of the settings a mailbox sends with.
_READING_ONLY = frozenset(_MAILBOX_EXTRA) - frozenset(OUTGOING_EXTRA)
# What the top-level [outgoing] still decides for a mailbox sending with its own sign-in.
_IDENTITY_KEYS = ("display_name", "reply_address", "message_group")


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
        send_with: ``mailbox``: send through the mailbox's own API with its own sign-in
            (``office365`` through Graph, ``google`` through the Gmail API), as the
            mailbox's address; ``outgoing``: send with ``[outgoing]`` (merged with
            ``outgoing`` when given). Defaults to ``mailbox`` for ``office365`` and
            ``google`` mailboxes without an ``outgoing`` override, else ``outgoing``.
        allowed_teams: Sending restriction: only agents of these teams may send from
            this mailbox (empty: everyone may).
        allowed_departments: Sending restriction by department: agents of these
            departments may send from this mailbox too (with ``allowed_teams``, an agent
            in either may; both empty: everyone may).
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
    send_with: str = attrs.field(default=attrs.Factory(_default_send_with, takes_self=True))
    allowed_teams: tuple[str, ...] = ()
    allowed_departments: tuple[str, ...] = ()
    signature: str = ""
    agent_signatures: Mapping[str, str] = attrs.field(
        factory=dict, converter=frozen_mapping, hash=False
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, hash=False)
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

        With ``send_with = "mailbox"``: the mailbox's own API and sign-in (see
        :meth:`own_outgoing`). Otherwise, key by key: this mailbox's
        ``[mailboxes.outgoing]``, then ``defaults`` (the top-level ``[outgoing]``), then
        the built-in defaults; the SMTP port is derived from the merged transport and
        security when neither wrote one.

        Args:
            defaults: The top-level outgoing settings (``Config.outgoing``).

        Returns:
            The mailbox's own settings, ``defaults`` itself when the mailbox has no
            override, else the merge.
        """
        if self.send_with == "mailbox":
            return self.own_outgoing(defaults)
        if self.outgoing is None:
            return defaults
        return merge_outgoing(defaults, self.outgoing)

    def own_outgoing(self, defaults: OutgoingSettings) -> OutgoingSettings:
        """Sending through this mailbox's own API with its own sign-in, as its address.

        The transport is ``graph`` for ``office365`` and ``gmail`` for ``google``; the
        credentials, ``host`` and ``tls_ca_file`` are the mailbox's; the From address is
        the mailbox's (``user_id``, ``subject`` or ``username``). Only the display name,
        Reply-To and message group come from ``defaults``.

        Raises:
            ConfigError: This connection has no API to send with.

        .. versionadded:: 0.1.0
        """
        transport = OWN_TRANSPORTS.get(self.connection)
        if transport is None:
            raise ConfigError(
                f"{self.key_path}.send_with",
                f"a {self.connection!r} mailbox cannot send with its own sign-in: "
                "use send_with = 'outgoing'",
            )
        extra = {k: v for k, v in self.extra.items() if k not in _READING_ONLY}
        named = (extra.get("user_id"), extra.get("subject"), self.username)
        address = next((a for a in named if a and "@" in a), None)
        values: dict[str, Any] = {
            key: getattr(defaults, key) for key in _IDENTITY_KEYS if key in defaults.explicit_keys
        }
        values.update(transport=transport, from_address=address or defaults.from_address)
        values.update(host=self.host, tls_ca_file=self.tls_ca_file, username=self.username)
        if "timeout" in self.extra:
            values["timeout"] = self.extra["timeout"]
        values = {key: value for key, value in values.items() if value is not None}
        return OutgoingSettings(**values, extra=extra, explicit_keys=frozenset(values))

    def as_table(self) -> dict[str, Any]:
        """This mailbox's connection keys as a ``[[mailboxes]]`` table, secrets read.

        The typed settings of its backend (:mod:`halomail.backends.registry`) are
        validated from this table.
        """
        return settings_table(self, _TABLE_FIELDS)


# The fields a connector's typed settings read, besides ``extra``.
_TABLE_FIELDS = (
    "name",
    "connection",
    "host",
    "port",
    "security",
    "tls_ca_file",
    "username",
    "password",
    "path",
    "folder",
    "processed",
    "quarantine_folder",
)


def parse_mailboxes(
    root: Mapping[str, Any], outgoing: OutgoingSettings, ctx: Context
) -> tuple[MailboxSettings, ...]:
    """``[[mailboxes]]``: every mailbox, names unique ignoring case."""
    raw = root.get("mailboxes", [])
    if not isinstance(raw, list):
        raise ConfigError(
            "mailboxes", f"expected an array of tables ([[mailboxes]]), got {describe(raw)}"
        )
    mailboxes: list[MailboxSettings] = []
    seen: dict[str, int] = {}
    found = Collector()  # every mailbox's problems, not only the first mailbox's
    for index, item in enumerate(raw):
        kp = f"mailboxes[{index}]"
        table = found.run(functools.partial(as_table, item, kp))
        if table is None:
            continue
        mailbox = found.run(functools.partial(_parse_mailbox, table, kp, outgoing, ctx))
        if mailbox is None:
            continue
        folded = mailbox.name.casefold()
        if folded in seen:
            found.errors.append(
                ConfigError(
                    f"{kp}.name",
                    f"duplicate mailbox name {mailbox.name!r} (also mailboxes[{seen[folded]}]); "
                    "names must be unique, ignoring case",
                )
            )
        seen[folded] = index
        mailboxes.append(mailbox)
    found.raise_any()
    return tuple(mailboxes)


def _parse_mailbox(
    table: Mapping[str, Any], kp: str, top_outgoing: OutgoingSettings, ctx: Context
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
        mailbox_outgoing = parse_outgoing(
            as_table(table["outgoing"], okp), okp, ctx, lenient=lenient
        )
        merged = merge_outgoing(top_outgoing, mailbox_outgoing)
        check_outgoing_complete(merged, okp)
    send_with = _send_with(table, kp, connection, has_override=mailbox_outgoing is not None)
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
        send_with=send_with,
        allowed_teams=_str_list(table, "allowed_teams", kp),
        allowed_departments=_str_list(table, "allowed_departments", kp),
        signature=_multiline(table, "signature", kp),
        agent_signatures=_agent_signatures(table, kp),
        extra=parse_extra(table, kp, _MAILBOX_EXTRA, ctx, lenient=lenient),
        key_path=kp,
    )


def _send_with(table: Mapping[str, Any], kp: str, connection: str, *, has_override: bool) -> str:
    """``send_with``, defaulting to the mailbox's own sign-in where it has an API to send."""
    own = connection in OWN_TRANSPORTS and not has_override
    value = _choice(table, "send_with", kp, SEND_WITH, default="mailbox" if own else "outgoing")
    if value == "mailbox" and connection not in OWN_TRANSPORTS:
        raise ConfigError(
            f"{kp}.send_with",
            f"a {connection!r} mailbox has no API to send with: only office365 and google "
            "mailboxes can send with their own sign-in",
        )
    if value == "mailbox" and has_override:
        raise ConfigError(
            f"{kp}.send_with",
            "send_with = 'mailbox' sends with the mailbox's own sign-in: "
            "remove it, or the [mailboxes.outgoing] table",
        )
    return value


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


def _agent_signatures(table: Mapping[str, Any], kp: str) -> dict[str, str]:
    signatures = sub_table(table, "agent_signatures", kp)
    where = join_key(kp, "agent_signatures")
    result: dict[str, str] = {}
    for agent in signatures:
        if not _ADDRESS.fullmatch(agent):
            raise ConfigError(
                join_key(where, agent), "expected an agent's email address as the key"
            )
        result[agent.lower()] = _multiline(signatures, agent, where)
    return result
