"""``[outgoing]`` and ``[mailboxes.outgoing]``: how mail is sent.

**Outgoing precedence.** A mailbox's ``[mailboxes.outgoing]`` table overrides the
top-level ``[outgoing]`` key by key: a key written in the mailbox's table wins, then a
key written in ``[outgoing]``, then the built-in default. A password and its
``password_env`` count as one key, as do ``client_secret``/``client_secret_env`` and
``token``/``token_env``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import (
    check_keys,
    join_key,
)
from halomail.config._read import (
    Context,
    _bool,
    _choice,
    _env_name,
    _from_env,
    _int,
    _opt_address,
    _opt_file,
    _opt_port,
    _opt_str,
    _positive_number,
    _required_address,
    _secret,
    _str,
    _str_list,
)
from halomail.errors import ConfigError

__all__ = ["AUTH", "SECURITIES", "TRANSPORTS", "OutgoingSettings"]

TRANSPORTS = ("smtp", "graph", "gmail", "ews", "maildir", "memory")


SECURITIES = ("none", "starttls", "tls")


AUTH = ("password", "xoauth2", "oauthbearer", "oauth2-microsoft", "oauth2-google", "oauth2-static")

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
OUTGOING_EXTRA = (
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


# A secret and the name of the environment variable that may hold it are one setting:
# whichever a table writes replaces both from the table below it.
_SECRET_GROUPS = (
    frozenset({"password", "password_env"}),
    frozenset({"client_secret", "client_secret_env"}),
    frozenset({"token", "token_env"}),
    frozenset({"refresh_token", "refresh_token_env"}),
)


_SECRET_EXTRA = frozenset({"client_secret", "token", "refresh_token"})


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


def frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """``value`` as a read-only mapping whose ``repr`` masks secrets."""
    return value if isinstance(value, _Extra) else _Extra(value)


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
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping, hash=False)
    explicit_keys: frozenset[str] = attrs.field(
        default=attrs.Factory(_default_explicit, takes_self=True), repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if self.port is None:
            # Frozen: the derived port is set once, here, the way attrs documents it.
            object.__setattr__(self, "port", _smtp_port(self.transport, self.security))

    def as_table(self) -> dict[str, Any]:
        """These settings as the keys of an ``[outgoing]`` table, secrets read.

        The typed settings of the transport (:mod:`halomail.backends.registry`) are
        validated from this table.
        """
        return settings_table(self, _TABLE_FIELDS)


# The fields a transport's typed settings read, besides ``extra``.
_TABLE_FIELDS = (
    "transport",
    "host",
    "port",
    "security",
    "tls_ca_file",
    "username",
    "password",
    "from_address",
    "path",
    "timeout",
)


def settings_table(settings: Any, fields: Sequence[str]) -> dict[str, Any]:
    """``fields`` of ``settings`` that are set, then its ``extra`` keys."""
    table = {name: getattr(settings, name) for name in fields}
    table.update(settings.extra)
    return {key: value for key, value in table.items() if value is not None}


def merge_outgoing(base: OutgoingSettings, override: OutgoingSettings) -> OutgoingSettings:
    """``override`` over ``base``, key by key (a secret and its ``*_env`` are one key)."""
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


def parse_outgoing(
    table: Mapping[str, Any], kp: str, ctx: Context, *, lenient: bool
) -> OutgoingSettings:
    """``[outgoing]`` or ``[mailboxes.outgoing]``, keeping which keys were written."""
    check_keys(table, kp, (*_OUTGOING_FIELDS, *OUTGOING_EXTRA))
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
    extra = parse_extra(table, kp, OUTGOING_EXTRA, ctx, lenient=lenient)
    return OutgoingSettings(**values, extra=extra, explicit_keys=frozenset(values))


def check_outgoing_complete(outgoing: OutgoingSettings, kp: str) -> None:
    """A present outgoing table must name what its transport needs."""
    if outgoing.transport == "smtp" and not outgoing.host:
        raise ConfigError(f"{kp}.host", "required when transport = 'smtp'")
    if outgoing.transport == "maildir" and outgoing.path is None:
        raise ConfigError(
            f"{kp}.path", "required when transport = 'maildir' (the folder .eml files go to)"
        )


def parse_extra(
    table: Mapping[str, Any],
    kp: str,
    allowed: Collection[str],
    ctx: Context,
    *,
    lenient: bool,
) -> dict[str, Any]:
    """The backend-specific keys of a table, their secrets read from the environment."""
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
        extra["save_copy"] = _bool(table, "save_copy", kp, default=True)
    if "delete_type" in table and "delete_type" in allowed:
        extra["delete_type"] = _choice(
            table,
            "delete_type",
            kp,
            ("HardDelete", "SoftDelete", "MoveToDeletedItems"),
            default="MoveToDeletedItems",
        )
    if "leave_on_server" in table:
        extra["leave_on_server"] = _bool(table, "leave_on_server", kp, default=False)
    if "poll_interval" in table:
        extra["poll_interval"] = _positive_number(table, "poll_interval", kp, default=60.0)
    if "batch_size" in table:
        extra["batch_size"] = _int(table, "batch_size", kp, default=50, minimum=1)
    if "timeout" in table and "timeout" in allowed:
        extra["timeout"] = _positive_number(table, "timeout", kp, default=30.0)
    for key in ("delta", "size_property"):  # office365 mailboxes
        if key in table and key in allowed:
            extra[key] = _bool(table, key, kp, default=True)
    return extra
