"""Testing a channel ("test this channel"): build a backend, probe it, say what happened.

``halomail check-config --connect`` lists its channels (each enabled mailbox, the
default ``[outgoing]`` and each mailbox's override) and hands each to
:func:`probe_channel`, which builds the backend, calls its
:meth:`~halomail.backends.base.Probeable.probe`, closes it, and turns the result or the
error into a :class:`ProbeResult`: one line for a person, or one JSON object.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import attrs

from halomail.backends.base import Probeable
from halomail.errors import AuthenticationError, HalomailError

__all__ = ["Channel", "ProbeResult", "probe_channel"]

log = logging.getLogger(__name__)


@attrs.frozen
class Channel:
    """One mailbox or outgoing server to test.

    Args:
        label: What it is, e.g. ``"mailbox Support"`` or ``"outgoing"``.
        kind: Its connection or transport type (``imap``, ``smtp``, ``maildir`` …).
        where: Its server or path as configured, shown when the backend cannot be built.
        build: Builds the backend without connecting; may raise ``ConfigError``.
    """

    label: str
    kind: str
    where: str
    build: Callable[[], object] = attrs.field(repr=False)


@attrs.frozen
class ProbeResult:
    """What testing one channel found.

    Args:
        label: The channel's label.
        kind: Its connection or transport type.
        where: ``host:port`` or the path.
        ok: True when the probe succeeded, False when it failed, ``None`` when the
            backend cannot be probed (not a failure).
        summary: What the probe found, or why it failed; never a secret.
        messages: How many emails the mailbox holds, when known.
    """

    label: str
    kind: str
    where: str
    ok: bool | None
    summary: str
    messages: int | None = None

    def line(self) -> str:
        """One line for a person, e.g. ``mailbox Support (imap host:993): ok, …``."""
        where = f" {self.where}" if self.where else ""
        status = {True: "ok, ", False: "FAILED: ", None: "not tested: "}[self.ok]
        return f"{self.label} ({self.kind}{where}): {status}{self.summary}"

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "channel": self.label,
            "kind": self.kind,
            "where": self.where,
            "ok": self.ok,
            "summary": self.summary,
            "messages": self.messages,
        }


def probe_channel(channel: Channel) -> ProbeResult:
    """Build ``channel``'s backend, probe it, close it; never raises a halomail error.

    Args:
        channel: The channel to test.

    Returns:
        What was found, or the error that stopped it (refused credentials read
        ``authentication failed: …``).
    """
    where = channel.where

    def result(ok: bool | None, summary: str, messages: int | None = None) -> ProbeResult:
        return ProbeResult(channel.label, channel.kind, where, ok, summary, messages)

    try:
        backend = channel.build()
    except HalomailError as exc:
        return result(False, f"cannot be built: {exc}")
    if backend is None:
        return result(None, f"{channel.kind!r} is not available in this version")
    where = _where(backend) or where
    try:
        if not isinstance(backend, Probeable):
            return result(None, f"{type(backend).__name__} cannot be tested")
        report = backend.probe()
    except AuthenticationError as exc:
        return result(False, f"authentication failed: {exc}")
    except HalomailError as exc:
        return result(False, str(exc))
    finally:
        _close(backend)
    return result(True, report.summary, report.messages)


def _where(backend: object) -> str:
    host, port = getattr(backend, "host", None), getattr(backend, "port", None)
    if isinstance(host, str) and host:
        return f"{host}:{port}" if isinstance(port, int) else host
    path = getattr(backend, "path", None)
    return str(path) if path is not None else ""


def _close(backend: object) -> None:
    close = getattr(backend, "close", None)
    if callable(close):
        with contextlib.suppress(HalomailError, OSError):
            close()
