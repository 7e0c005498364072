"""The text a connector's sync state travels in (:class:`~halomail.backends.base.SyncState`).

One JSON object: what kind of state it is (``graph-delta``, ``gmail-history``,
``imap-mark``), a version, the scope it belongs to (the account and folder read, so a
state kept for another folder is never taken over), and the connector's own fields.
A text that cannot be read, of another kind, version or scope, is ignored with a log
line: the connector then starts from a full listing, which dedupe makes safe.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["STATE_VERSION", "StateFormat"]

log = logging.getLogger("halomail.backends")

#: The version every connector writes; a text of another version is not read.
STATE_VERSION = 1

T = TypeVar("T")


class StateFormat:
    """How one connector writes and reads its state text.

    Args:
        kind: What state this is, e.g. ``"graph-delta"``.
        mailbox: The mailbox's name, for the log.
        scope: Whose state it is: the account and folder read (strings).
    """

    def __init__(self, kind: str, mailbox: str, **scope: str) -> None:
        self.kind = kind
        self.mailbox = mailbox
        self.scope = scope

    def dump(self, **fields: Any) -> str:
        """The state as compact JSON text, with the connector's own ``fields`` (JSON values)."""
        data = {"kind": self.kind, "version": STATE_VERSION, "scope": self.scope, **fields}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    def load(self, text: str | None, read: Callable[[Mapping[str, Any]], T]) -> T | None:
        """The state ``text`` holds, through ``read``; ``None`` when there is none to use.

        Args:
            text: What :meth:`dump` wrote, or ``None`` (nothing stored).
            read: Turns the decoded object into the connector's state; may raise
                ``KeyError``, ``TypeError`` or ``ValueError`` on a malformed one.
        """
        if text is None:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("kind") != self.kind:
                why = f"it is not a {self.kind} state"
            elif data.get("version") != STATE_VERSION:
                why = f"its version {data.get('version')!r} is not {STATE_VERSION}"
            elif data.get("scope") != self.scope:
                why = "it belongs to another account or folder"
            else:
                return read(data)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"it cannot be read ({type(exc).__name__})"
        log.warning(
            "mailbox %s: the stored sync state is ignored: %s; listing in full", self.mailbox, why
        )
        return None
