"""The caps on one header field, counted in C: where a field over them is cut.

A field over its size, encoded-word or address caps
(:mod:`halomail.inbound._headers`) is truncated where the stdlib's parsers would
otherwise meet super-linear work; :func:`within_count_caps` tells, for a whole header
block at once, that no field in it can be over a count cap.
"""

from __future__ import annotations

import re

from halomail.inbound._headers import (
    MAX_ADDRESS_TOKENS,
    MAX_ADDRESSES,
    MAX_ENCODED_WORDS,
    MAX_FIELD_BYTES,
    MAX_PARAMS,
)

__all__ = ["ADDRESS_FIELDS", "field_cut", "within_count_caps"]

#: The fields holding addresses (lower-case), whose address counts are capped.
ADDRESS_FIELDS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "sender",
        "return-path",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-sender",
    }
)
_ADDRESS_TOKEN = re.compile(r'[,;(<"\\]')
_ADDRESS_TOKENS = tuple(',;(<"\\')
_AT_SIGN = re.compile("@")
_ENCODED_WORD_START = re.compile(re.escape("=?"))


def within_count_caps(values: str) -> bool:
    """Whether ``values`` (fields joined by NUL) is within every count cap of one field."""
    return (
        len(values) <= MAX_FIELD_BYTES
        and values.count(";") <= MAX_PARAMS
        and values.count("=?") <= MAX_ENCODED_WORDS
        and values.count("@") <= MAX_ADDRESSES
        and sum(map(values.count, _ADDRESS_TOKENS)) <= MAX_ADDRESS_TOKENS
    )


def field_cut(lower: str, value: str) -> int:
    """Where a field over its caps is cut (``len(value)`` when it is within them).

    The cut keeps at most ``MAX_FIELD_BYTES`` and ``MAX_ENCODED_WORDS`` encoded words;
    an address field keeps the whole addresses within ``MAX_ADDRESSES`` and
    ``MAX_ADDRESS_TOKENS``. It never splits an encoded word or a UTF-8 character.
    """
    if (
        len(value) <= MAX_FIELD_BYTES
        and value.count("=?") <= MAX_ENCODED_WORDS
        and (
            lower not in ADDRESS_FIELDS
            or (
                value.count("@") <= MAX_ADDRESSES
                and len(_ADDRESS_TOKEN.findall(value)) <= MAX_ADDRESS_TOKENS
            )
        )
    ):
        return len(value)  # within every cap: the usual case, counted in C
    cut = min(len(value), MAX_FIELD_BYTES)
    cut = min(cut, _nth(_ENCODED_WORD_START, value, MAX_ENCODED_WORDS + 1, cut))
    if lower in ADDRESS_FIELDS:
        cut = min(cut, _nth(_AT_SIGN, value, MAX_ADDRESSES + 1, cut))
        cut = min(cut, _nth(_ADDRESS_TOKEN, value, MAX_ADDRESS_TOKENS + 1, cut))
        if cut < len(value):
            cut = max(value.rfind(",", 0, cut), 0)  # whole addresses only
    if cut < len(value):
        if value.rfind("=?", 0, cut) > value.rfind("?=", 0, cut):
            cut = value.rfind("=?", 0, cut)  # no half encoded word
        while cut > 0 and "\udc80" <= value[cut] <= "\udcbf":
            cut -= 1  # a UTF-8 continuation byte (as a surrogate): back to its lead byte
    return cut


def _nth(pattern: re.Pattern[str], value: str, count: int, end: int) -> int:
    """Where the ``count``-th match of ``pattern`` in ``value[:end]`` starts, else ``end``."""
    for number, match in enumerate(pattern.finditer(value, 0, end), start=1):
        if number == count:
            return match.start()
    return end
