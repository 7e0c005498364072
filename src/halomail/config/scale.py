"""``[scale]``: many mailboxes on many machines (Celery workers on a Redis broker).

Only ``halomail worker``, ``halomail scheduler`` and :mod:`halomail.celery` read the
broker settings; ``halomail run`` ignores them. A file without ``[scale]`` loads as
before (``Config.scale`` is ``None``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import check_keys, join_key
from halomail.config._read import (
    Context,
    _env_name,
    _from_env,
    _int,
    _opt_port,
    _opt_str,
    _positive_number,
    _str,
)
from halomail.errors import ConfigError

__all__ = ["ScaleSettings", "parse_scale"]

_KEYS = (
    "broker_url",
    "broker_password_env",
    "queue",
    "poll_interval_seconds",
    "outbox_interval_seconds",
    "service_check_interval_seconds",
    "visibility_timeout_seconds",
    "schedule_file",
    "metrics_port",
    "metrics_address",
)
_BROKER_SCHEMES = ("redis", "rediss")
_QUEUE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@attrs.frozen
class ScaleSettings:
    """How workers and the scheduler share the work (``[scale]``).

    Args:
        broker_url: The Redis broker, ``redis://host:port/db`` (``rediss://`` for TLS),
            or ``None`` when the file names none (then ``halomail worker`` and
            ``halomail scheduler`` refuse to start).
        broker_password: The broker's password, from ``broker_password_env``; never shown.
        queue: The Celery queue halomail's tasks travel on.
        poll_interval_seconds: How often the scheduler asks for every enabled mailbox to
            be read. A poll still queued after this long is dropped (a fresher one is on
            its way), so a backlog never piles up.
        outbox_interval_seconds: How often the scheduler asks for due outgoing mail to be
            sent.
        service_check_interval_seconds: How often monitored services are checked.
        visibility_timeout_seconds: How long Redis waits for a worker to acknowledge a
            task before handing it to another worker. Tasks are acknowledged when they
            end, so this is how long the task of a worker that died waits before it runs
            again elsewhere; a task that runs longer is run twice, harmlessly (leases).
        schedule_file: Where the scheduler keeps its last-run times; ``None``: a
            temporary folder removed when it stops.
        metrics_port: The port Prometheus metrics are served on by ``halomail worker``
            and ``halomail run`` (without ``--once``), or ``None`` for none.
        metrics_address: The address the metrics are served on: loopback unless set
            (``"0.0.0.0"`` for a scraper on another machine; keep it off the internet).
    """

    # Left out of repr: a URL may hold a password (broker_display never does).
    broker_url: str | None = attrs.field(default=None, repr=False)
    broker_password: str | None = attrs.field(default=None, repr=False)
    queue: str = "halomail"
    poll_interval_seconds: float = 60.0
    outbox_interval_seconds: float = 10.0
    service_check_interval_seconds: float = 60.0
    visibility_timeout_seconds: int = 600
    schedule_file: Path | None = None
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"

    @property
    def broker_display(self) -> str:
        """The broker's address with no password in it: safe to print and log."""
        if self.broker_url is None:
            return "none"
        parts = urllib.parse.urlsplit(self.broker_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def broker_connection_url(self) -> str | None:
        """The URL Celery connects with: ``broker_url`` with the password put in.

        Never log it: it holds the password.
        """
        if self.broker_url is None or self.broker_password is None:
            return self.broker_url
        parts = urllib.parse.urlsplit(self.broker_url)
        user = urllib.parse.quote(parts.username or "", safe="")
        secret = urllib.parse.quote(self.broker_password, safe="")
        netloc = f"{user}:{secret}@{parts.netloc.rpartition('@')[2]}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def parse_scale(table: Mapping[str, Any], ctx: Context) -> ScaleSettings | None:
    """``[scale]``, or ``None`` when the file has no such table.

    Raises:
        ConfigError: A key is unknown or invalid; the error names it.
    """
    if not table:
        return None
    kp = "scale"
    check_keys(table, kp, _KEYS)
    broker_url = _broker_url(table, kp)
    password = None
    if "broker_password_env" in table:
        if broker_url is None:
            raise ConfigError(join_key(kp, "broker_password_env"), "set broker_url too")
        if urllib.parse.urlsplit(broker_url).password is not None:
            raise ConfigError(
                join_key(kp, "broker_password_env"),
                "broker_url already holds a password; give either, not both",
            )
        name = _env_name(table, "broker_password_env", kp)
        password = _from_env(name, join_key(kp, "broker_password_env"), ctx, lenient=False)
    schedule_file = _opt_str(table, "schedule_file", kp)
    return ScaleSettings(
        broker_url=broker_url,
        broker_password=password,
        queue=_queue(table, kp),
        poll_interval_seconds=_positive_number(table, "poll_interval_seconds", kp, default=60),
        outbox_interval_seconds=_positive_number(table, "outbox_interval_seconds", kp, default=10),
        service_check_interval_seconds=_positive_number(
            table, "service_check_interval_seconds", kp, default=60
        ),
        visibility_timeout_seconds=_int(
            table, "visibility_timeout_seconds", kp, default=600, minimum=30
        ),
        schedule_file=None if schedule_file is None else _resolve(schedule_file, ctx),
        metrics_port=_opt_port(table, "metrics_port", kp),
        metrics_address=_metrics_address(table, kp),
    )


def _metrics_address(table: Mapping[str, Any], kp: str) -> str:
    address = _opt_str(table, "metrics_address", kp)
    if address is None:
        return "127.0.0.1"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(
            join_key(kp, "metrics_address"),
            f"expected an IP address to listen on (127.0.0.1, 0.0.0.0, ::), got {address!r}",
        ) from None
    return address


def _broker_url(table: Mapping[str, Any], kp: str) -> str | None:
    url = _opt_str(table, "broker_url", kp)
    if url is None:
        return None
    where = join_key(kp, "broker_url")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(where, f"not a valid URL: {exc}") from None
    if parts.scheme not in _BROKER_SCHEMES or not parts.hostname:
        # The value may hold a password: the message shows the scheme only.
        raise ConfigError(
            where,
            f"expected 'redis://host:port/db' (or rediss:// for TLS), got a "
            f"{parts.scheme or 'scheme-less'} URL",
        )
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ConfigError(where, f"the database after the port must be a number, got {database!r}")
    del port  # read only to validate it
    return url


def _queue(table: Mapping[str, Any], kp: str) -> str:
    name = _str(table, "queue", kp, default="halomail")
    if not name or not set(name) <= _QUEUE_CHARACTERS:
        raise ConfigError(
            join_key(kp, "queue"), f"expected letters, digits, '.', '_' or '-', got {name!r}"
        )
    return name


def _resolve(value: str, ctx: Context) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else ctx.base_dir / path
