"""What the network connectors share: TLS trust, ``Retry-After``, logins from settings."""

from __future__ import annotations

import datetime as dt
import email.parser
import email.utils
import functools
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from halomail.backends.auth.oauth import TokenProvider, token_provider_from_settings
from halomail.backends.settings import ImapSettings, Pop3Settings
from halomail.errors import ConfigError

__all__ = [
    "ServerLogin",
    "chosen_token_provider",
    "login_from_settings",
    "retry_after_seconds",
    "shared_tls_context",
    "tls_context",
    "with_bcc",
]


def tls_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, plus ``ca_file`` when given.

    A private CA for an internal server is trusted in addition to the system's, never
    instead of them, and certificates and host names are always checked.

    Raises:
        OSError, ssl.SSLError: ``ca_file`` cannot be read.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=os.fspath(ca_file))
    return context


def shared_tls_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """:func:`tls_context`, made once per CA file and reused; callers must not change it.

    Loading the system's CAs costs most of a fresh TLS login's CPU (about 46 of 49 ms
    measured for IMAP), and a worker logs in to many mailboxes. The CA file's
    modification time is part of the key, so a replaced file is read again.

    Raises:
        OSError, ssl.SSLError: ``ca_file`` cannot be read.
    """
    if ca_file is None:
        return _cached_tls_context(None, None)
    path = os.fspath(ca_file)
    return _cached_tls_context(path, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached_tls_context(ca_file: str | None, _modified: int | None) -> ssl.SSLContext:
    return tls_context(ca_file)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait per a ``Retry-After`` value (delta-seconds or an HTTP date).

    Returns:
        The wait (0 for a date already past), or ``None`` when the value is absent or
        unreadable.
    """
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


@attrs.frozen
class ServerLogin:
    """How a server mailbox logs in, as its settings say.

    Args:
        host: The server.
        username: The login.
        password: The password, or ``None`` for an OAuth2 login.
        token_provider: The OAuth2 token source, or ``None`` for a password login.
        mechanism: ``XOAUTH2`` or ``OAUTHBEARER`` for an OAuth2 login, else ``None``.
    """

    host: str
    username: str
    password: str | None = attrs.field(repr=False)
    token_provider: TokenProvider | Callable[[], str] | None
    mechanism: str | None


def login_from_settings(
    settings: ImapSettings | Pop3Settings,
    connection: str,
    token_provider: TokenProvider | Callable[[], str] | None,
    *,
    what: str,
) -> ServerLogin:
    """Check a server mailbox's settings and choose how it logs in.

    Args:
        settings: The mailbox's settings.
        connection: The connection type the caller reads (``imap``, ``pop3``).
        token_provider: A provider given by the caller, which wins over the settings.
        what: The kind of login, for the error when the password is missing
            (``an IMAP login``).

    Returns:
        The login: OAuth2 when a token provider is given or configured (``OAUTHBEARER``
        when ``auth`` says so, else ``XOAUTH2``), else the password.

    Raises:
        ConfigError: Another connection type, or ``host``, ``username``, the password or
            an OAuth2 key missing, at its key path.
    """
    kp = settings.key_path
    if settings.connection != connection:
        raise ConfigError(f"{kp}.connection", f"{settings.connection!r} is not {connection!r}")
    host, username = settings.host, settings.username
    if not host:
        raise ConfigError(f"{kp}.host", f"required when connection = {connection!r}")
    if not username:
        raise ConfigError(f"{kp}.username", f"required when connection = {connection!r}")
    if token_provider is None:
        token_provider = token_provider_from_settings(settings.oauth, kp, mailbox=settings.name)
    if token_provider is None:
        if settings.password is None:
            raise ConfigError(f"{kp}.password", f"required (or password_env) for {what}")
        return ServerLogin(host, username, settings.password, None, None)
    auth = str(settings.oauth.get("auth", "")).lower()
    mechanism = "OAUTHBEARER" if auth == "oauthbearer" else "XOAUTH2"
    return ServerLogin(host, username, None, token_provider, mechanism)


def chosen_token_provider(
    values: Mapping[str, Any], key_path: str, name: str, ca_file: str | os.PathLike[str] | None
) -> TokenProvider:
    """The provider of ``values``, whose ``auth`` the connector has set to an OAuth2 kind.

    Raises:
        ConfigError: A key the chosen provider needs is missing.
    """
    provider = token_provider_from_settings(
        values, key_path, mailbox=name, verify=str(ca_file) if ca_file else True
    )
    if provider is None:  # pragma: no cover - the caller set an OAuth2 "auth"
        raise ConfigError("auth", "no token provider")
    return provider


def with_bcc(data: bytes, recipients: Sequence[str]) -> bytes:
    """``data`` with a Bcc header for envelope recipients its To and Cc do not name."""
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    named = {
        address.lower()
        for _, address in email.utils.getaddresses(
            [str(v) for key in ("To", "Cc", "Bcc") for v in headers.get_all(key, [])]
        )
    }
    missing = [r for r in recipients if r.lower() not in named]
    if not missing:
        return data
    return b"Bcc: " + ", ".join(missing).encode("ascii", "replace") + b"\r\n" + data
