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
from pathlib import Path
from typing import Any, Final

from halomail.errors import ConfigError

__all__ = [
    "CONTROL",
    "as_table",
    "check_keys",
    "choice",
    "describe",
    "existing_path",
    "flag",
    "hint",
    "integer",
    "join_key",
    "opt_port",
    "opt_text",
    "positive_number",
    "required_text",
    "text",
    "text_list",
    "under_key_path",
]

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


# -- value readers: ``table[key]`` checked, or a default when the key is absent --------


def text(
    table: Mapping[str, Any],
    key: str,
    key_path: str,
    *,
    default: str,
    allow_empty: bool = False,
    secret: bool = False,
) -> str:
    """A one-line string (any string when ``secret``: a secret may hold anything).

    Raises:
        ConfigError: Not a string, empty, or holding control characters.
    """
    if key not in table:
        return default
    value = table[key]
    where = join_key(key_path, key)
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value, secret=secret)}")
    if not allow_empty and not value.strip():
        raise ConfigError(where, "must not be empty")
    # Control characters (CR/LF above all) in a name or an address would end up in
    # headers or logs; a secret may hold anything and is never echoed.
    if not secret and CONTROL.search(value):
        raise ConfigError(where, "must not contain control characters (line breaks, NUL …)")
    return value


def opt_text(table: Mapping[str, Any], key: str, key_path: str) -> str | None:
    """:func:`text`, or ``None`` when the key is absent."""
    if key not in table or table[key] is None:
        return None
    return text(table, key, key_path, default="")


def required_text(table: Mapping[str, Any], key: str, key_path: str) -> str:
    """:func:`text`, which must be present."""
    if key not in table:
        raise ConfigError(join_key(key_path, key), "required (a string)")
    return text(table, key, key_path, default="")


def text_list(table: Mapping[str, Any], key: str, key_path: str) -> tuple[str, ...]:
    """An array of non-empty one-line strings."""
    if key not in table:
        return ()
    value = table[key]
    where = join_key(key_path, key)
    if not isinstance(value, list | tuple):
        raise ConfigError(where, f"expected an array of strings, got {describe(value)}")
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or CONTROL.search(item):
            raise ConfigError(f"{where}[{index}]", f"expected a name, got {describe(item)}")
        items.append(item)
    return tuple(items)


def choice(
    table: Mapping[str, Any], key: str, key_path: str, allowed: Collection[str], *, default: str
) -> str:
    """One of ``allowed``, suggesting the closest when it is not."""
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        close = (
            difflib.get_close_matches(value, list(allowed), n=1) if isinstance(value, str) else []
        )
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            join_key(key_path, key), f"expected one of {options}, got {describe(value)}{suggestion}"
        )
    return value


def flag(table: Mapping[str, Any], key: str, key_path: str, *, default: bool) -> bool:
    """``true`` or ``false``."""
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise ConfigError(join_key(key_path, key), f"expected true or false, got {describe(value)}")
    return value


def integer(
    table: Mapping[str, Any], key: str, key_path: str, *, default: int, minimum: int | None
) -> int:
    """An integer, at least ``minimum``."""
    if key not in table:
        return default
    value = table[key]
    # bool is an int in Python; `port = true` is a mistake, not port 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(join_key(key_path, key), f"expected an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(join_key(key_path, key), f"must be at least {minimum}, got {value}")
    return value


def opt_port(table: Mapping[str, Any], key: str, key_path: str) -> int | None:
    """A TCP port from 1 to 65535, or ``None`` when absent."""
    if key not in table or table[key] is None:
        return None
    port = integer(table, key, key_path, default=0, minimum=None)
    if not 1 <= port <= 65535:
        raise ConfigError(join_key(key_path, key), f"expected a port from 1 to 65535, got {port}")
    return port


def positive_number(table: Mapping[str, Any], key: str, key_path: str, *, default: float) -> float:
    """A finite number above zero."""
    if key not in table:
        return float(default)
    value = table[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(join_key(key_path, key), f"expected a number, got {describe(value)}")
    if not value > 0 or value == float("inf"):
        raise ConfigError(join_key(key_path, key), f"expected a positive number, got {value!r}")
    return float(value)


def existing_path(
    table: Mapping[str, Any],
    key: str,
    key_path: str,
    *,
    base_dir: Path | None = None,
    kind: str = "file",
) -> Path | None:
    """A path that must exist now (``kind``: ``file``, ``folder`` or ``any``).

    Relative paths are resolved against ``base_dir`` (the working directory when
    ``None``); the configuration loader hands over absolute paths already.

    Raises:
        ConfigError: Not a string or path, or nothing of that kind is there.
    """
    if key not in table or table[key] is None:
        return None
    value = table[key]
    where = join_key(key_path, key)
    if not isinstance(value, str | Path):
        raise ConfigError(where, f"expected a path, got {describe(value)}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    try:
        found = {"file": path.is_file, "folder": path.is_dir, "any": path.exists}[kind]()
    except OSError as exc:  # e.g. a folder on the way that we may not enter
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from exc
    if not found:
        what = {"file": "file", "folder": "folder", "any": "file or folder"}[kind]
        raise ConfigError(where, f"no such {what}: {path}")
    return path
