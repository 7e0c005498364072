"""Helpers both bundled repositories share, so that they normalise values identically.

The contract suite compares what the two implementations return field by field;
keeping the normalisation (times, addresses, case folding, paging) in one place
is what keeps them from drifting apart.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Final, Literal

__all__ = [
    "TIMED_STATE_PREFIXES",
    "address_key",
    "check_page",
    "domain_key",
    "domain_of",
    "field_key",
    "file_owner",
    "fold",
    "merge_fields",
    "state_time",
    "to_utc",
]

#: The state keys whose rows ledger retention forgets once their time has passed: the
#: loop guard's counts (``"<count> <ISO start of the window>"``) and the marks of sends
#: begun through a cloud API (``"<ISO time>"``). The time is what follows the value's
#: first space, or the whole value.
TIMED_STATE_PREFIXES = ("loop:", "outbox-sending:")


def state_time(value: str) -> str:
    """The ISO time a timed state value holds (see :data:`TIMED_STATE_PREFIXES`)."""
    return value.partition(" ")[2] if " " in value else value


def to_utc(value: dt.datetime) -> dt.datetime:
    """The same instant as an aware datetime in UTC.

    Args:
        value: An aware datetime in any zone.

    Returns:
        ``value`` converted to UTC (microseconds kept).

    Raises:
        ValueError: When ``value`` is naive: guessing its zone would silently shift
            throttle windows and retry times by hours.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()}: halomail stores aware UTC times only"
        )
    return value.astimezone(dt.UTC)


def address_key(address: str) -> str:
    """An email address as it is compared: surrounding space removed, lower-cased."""
    return address.strip().lower()


def domain_of(address: str) -> str | None:
    """The lower-cased domain of an address (after the last ``@``), or ``None`` if it has none."""
    local, at, domain = address_key(address).rpartition("@")
    if not at or not local or not domain:
        return None
    # A fully qualified "example.com." names the same domain as "example.com".
    return domain.rstrip(".") or None


def domain_key(domain: str) -> str:
    """A customer's domain as stored and compared: lower-cased, without ``@`` or a final dot."""
    return domain.strip().lower().lstrip("@").rstrip(".")


def fold(value: str) -> str:
    """A value as compared case-insensitively (Unicode case folding, so "Straße" == "STRASSE")."""
    return value.casefold()


# Runs of spaces, punctuation and underscores in a field name: they do not tell fields apart.
_FIELD_SEPARATORS: Final = re.compile(r"[\W_]+")


def field_key(name: str) -> str:
    """An asset field's name as it is compared: case, spaces and punctuation ignored.

    ``Serial Number``, ``serial number`` and ``SERIAL_NUMBER`` are one field, the one an
    inventory report writes as ``serial_number``; an asset rule's ``field`` finds it
    whichever way the administrator spelt it.
    """
    return _FIELD_SEPARATORS.sub("_", fold(name)).strip("_")


def merge_fields(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """``old`` with ``new`` over it, a field given again in another spelling replaced."""
    given = {field_key(name) for name in new}
    kept = {name: value for name, value in old.items() if field_key(name) not in given}
    return {**kept, **new}


def check_page(limit: int, offset: int) -> None:
    """Refuse a negative ``limit`` or ``offset``.

    SQLite reads ``LIMIT -1`` as "no limit" while a Python slice reads it as "all but
    the last"; refusing both keeps the implementations in agreement.

    Raises:
        ValueError: When either is negative.
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative (got {limit}, {offset})")


def file_owner(value: str) -> Literal["customer", "asset"]:
    """The owner kind of a stored file, checked (``models.FileOwner``).

    Raises:
        ValueError: When ``value`` is neither ``"customer"`` nor ``"asset"``; a typo
            would otherwise store files nobody can list again.
    """
    if value == "customer":
        return "customer"
    if value == "asset":
        return "asset"
    raise ValueError(f"a file belongs to a 'customer' or an 'asset', not {value!r}")
