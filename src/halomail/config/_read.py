"""Readers of ``halomail.toml`` values that need the loader's context.

The context is the configuration file's folder (relative paths are resolved against
it) and the environment (``*_env`` secrets are read from it, once, at load). The
plain readers (strings, numbers, choices) live in :mod:`halomail._validate`, shared
with the backends' settings; this module gives them the short names the loader uses.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import (
    CONTROL,
    as_table,
    choice,
    describe,
    flag,
    integer,
    join_key,
    opt_port,
    opt_text,
    positive_number,
    required_text,
    text,
    text_list,
)
from halomail.errors import ConfigError

# The loader's short names for the shared readers.
_str = text
_opt_str = opt_text
_required_str = required_text
_choice = choice
_bool = flag
_int = integer
_opt_port = opt_port
_positive_number = positive_number
_str_list = text_list

_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Context:
    """Where the file is (relative paths start there) and the environment secrets come from."""

    base_dir: Path
    env: Mapping[str, str] = attrs.field(repr=False)


def array_of_tables(root: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """An array of tables (``[[key]]``), each checked to be a table."""
    raw = root.get(key, [])
    if not isinstance(raw, list):
        raise ConfigError(key, f"expected an array of tables ([[{key}]]), got {describe(raw)}")
    return [as_table(item, f"{key}[{index}]") for index, item in enumerate(raw)]


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


def sub_table(table: Mapping[str, Any], key: str, kp: str) -> Mapping[str, Any]:
    """``table[key]`` checked to be a table, or an empty one when absent."""
    if key not in table:
        return {}
    return as_table(table[key], join_key(kp, key))


def _required_choice(table: Mapping[str, Any], key: str, kp: str, allowed: Collection[str]) -> str:
    if key not in table:
        options = ", ".join(repr(a) for a in allowed)
        raise ConfigError(join_key(kp, key), f"required (one of {options})")
    return _choice(table, key, kp, allowed, default="")


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
    table: Mapping[str, Any], key: str, kp: str, ctx: Context, *, must_exist: bool
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


def _from_env(name: str, where: str, ctx: Context, *, lenient: bool) -> str | None:
    value = ctx.env.get(name)
    if value:
        return value
    if lenient:
        return None
    # The name is safe to show; the value (absent or empty here) never is.
    raise ConfigError(where, f"environment variable {name!r} is not set or is empty")


def _secret(
    table: Mapping[str, Any], key: str, kp: str, ctx: Context, *, lenient: bool
) -> tuple[str | None, str | None]:
    """A secret given inline (``key``) or through ``key_env``: (value, variable name)."""
    env_key = f"{key}_env"
    if key in table and env_key in table:
        raise ConfigError(join_key(kp, env_key), f"give either {key!r} or {env_key!r}, not both")
    if key in table:
        return _str(table, key, kp, default="", allow_empty=True, secret=True), None
    name = _env_name(table, env_key, kp)
    return _from_env(name, join_key(kp, env_key), ctx, lenient=lenient), name
