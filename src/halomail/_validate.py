"""Readers shared by every part of ``halomail.toml``: key paths, types, unknown keys.

Each section (mailboxes, rules, services, templates …) is validated by its own module,
and all of them word their errors the same way through these helpers: the key path of
the offending value (``mailboxes[2].outgoing.port``), what was expected, and what was
found, never a secret's value.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from halomail.errors import ConfigError

__all__ = ["CONTROL", "as_table", "check_keys", "describe", "hint", "join_key", "under_key_path"]

#: Control characters that must not appear in a one-line value (CR/LF above all: they
#: would end up in headers or logs). Tab is allowed.
CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def join_key(key_path: str, key: str) -> str:
    """``key`` appended to ``key_path``, quoted the TOML way when it is not a bare key."""
    shown = key if _BARE_KEY.fullmatch(key) else '"' + key.encode("unicode_escape").decode() + '"'
    return f"{key_path}.{shown}" if key_path else shown


@contextmanager
def under_key_path(key_path: str) -> Iterator[None]:
    """Name ``key_path`` in front of a :class:`ConfigError` raised inside, unless it
    already starts there (helpers that know the mailbox's path use it themselves)."""
    try:
        yield
    except ConfigError as exc:
        if exc.key_path == key_path or exc.key_path.startswith(f"{key_path}."):
            raise
        raise ConfigError(f"{key_path}.{exc.key_path}", exc.message) from exc


def describe(value: Any, *, secret: bool = False) -> str:
    """How a wrong value is shown in an error: its type, and its value unless secret."""
    if isinstance(value, bool):
        return "a boolean" if secret else str(value).lower()
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return "a date/time"
    if secret:
        kinds = {str: "a string", int: "an integer", float: "a number"}
        return kinds.get(type(value), f"a {type(value).__name__}")
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def hint(value: str, known: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(value, list(known), n=1)
    if not close:
        folded = {name.casefold(): name for name in known}
        close = [folded[value.casefold()]] if value.casefold() in folded else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def as_table(value: Any, key_path: str) -> Mapping[str, Any]:
    """``value`` if it is a table with string keys.

    Raises:
        ConfigError: Otherwise, at ``key_path``.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(key_path, f"expected a table, got {describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(key_path, f"keys must be strings, got {describe(key)}")
    return value


def check_keys(table: Mapping[str, Any], key_path: str, known: Collection[str]) -> None:
    """Refuse the first key of ``table`` that is not in ``known``, suggesting the closest.

    Raises:
        ConfigError: At the unknown key's path.
    """
    for key in table:
        if key not in known:
            suggestion = hint(key, known) or f"; known keys: {', '.join(known)}"
            raise ConfigError(join_key(key_path, key), f"unknown key {key!r}{suggestion}")
