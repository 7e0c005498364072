"""Address lists parsed strictly, with the addr-spec always kept apart from the name.

Python 3.11.7's :func:`email.utils.getaddresses` has CVE-2023-27043: it can take an
address out of a display name (``"alice@example.org" <bob@evil.com>``,
``alice@example.org<bob@evil.com>``), which would let a sender pass a From rule
meant for someone else. The splitter here is our own: one pass over the raw value
that honours quoted strings, comments, angle brackets and group syntax. An entry
with an angle address uses what is inside the brackets, never the name; the name
is decoded (RFC 2047) only after the split, so a decoded name cannot move a
bracket. Every addr-spec is then validated (:func:`valid_addr_spec`).
"""

from __future__ import annotations

import re

from halomail.inbound import _headers
from halomail.inbound.models import Address

__all__ = ["lenient_address", "parse_addresses", "parse_path", "valid_addr_spec"]

#: Longest addr-spec accepted: 64 octets of local part, "@", 255 of domain.
MAX_ADDR_SPEC_CHARS = 320

# A stray ")" or ">" outside a comment or angle address is junk text: it rides along
# in a run (and makes the entry's addr-spec invalid).
_PLAIN_RUN = re.compile(r'[^"(,:;<\\]+')
_QUOTED_RUN = re.compile(r'[^"\\]+')
_COMMENT_RUN = re.compile(r"[^()\\]+")
_ANGLE_RUN = re.compile(r'[^"()>\\]+')
_LOCAL_ATOM = re.compile(r'[^\s<>()\[\],;:"@\\]+')
_QUOTED_LOCAL = re.compile(r'"(?:[^"\\]|\\.)*"')
# A domain's letter: an ASCII letter or digit, or any character above U+00A0 (an IDNA
# label in UTF-8). Each class is written as the ASCII and Latin-1 characters it leaves
# out: spelled as the range up to U+10FFFF, it made ``re`` build a set of a million
# characters, 25 ms of every ``import halomail``.
_LETTER = r"[^\x00-/:-@\[-`{-\xa0]"
_LETTER_OR_HYPHEN = r"[^\x00-,./:-@\[-`{-\xa0]"
_LETTER_HYPHEN_OR_DOT = r"[^\x00-,/:-@\[-`{-\xa0]"
_LABEL = rf"{_LETTER}(?:{_LETTER_OR_HYPHEN}*{_LETTER})?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LITERAL = re.compile(r"\[(?:IPv6:)?[A-Za-z0-9.:-]{1,100}\]", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
# An addr-spec standing alone in free text, for lenient_address: a delimiter (or the
# start) before it and after it, so no address is cut out of a longer word. Bounded
# and possessive on both sides of the "@": a long run of address characters costs a
# bounded amount per position, with no backtracking.
_DELIMITER = r"\s<>()\[\],;:\"'"
_LENIENT_ADDR = re.compile(
    rf"(?<![^{_DELIMITER}])[^{_DELIMITER}@\\]{{1,64}}+@{_LETTER}{_LETTER_HYPHEN_OR_DOT}{{0,254}}+"
    rf"(?![^{_DELIMITER}])"
)
_ANGLED = re.compile(r"<([^<>]*)>")
#: How much of a header value lenient_address reads: a From is a line or two.
LENIENT_SCAN_CHARS = 4000


class _Entry:
    """One comma-separated entry as the splitter saw it."""

    __slots__ = ("angles", "bare", "comments", "phrase")

    def __init__(self) -> None:
        self.angles: list[str] = []
        self.phrase: list[str] = []
        self.bare: list[str] = []
        self.comments: list[str] = []

    def empty(self) -> bool:
        return not (self.angles or "".join(self.bare).strip())


def valid_addr_spec(addr: str) -> bool:
    """Whether ``addr`` is a plausible ``local@domain``.

    Rules: exactly one ``@`` outside a quoted local part; the local part is either
    a quoted string or has no whitespace, control characters or any of
    ``<>()[],;:"@\\``; the domain is dot-separated labels of letters, digits and
    inner hyphens (UTF-8 letters allowed), or an address literal ``[...]``.

    Args:
        addr: A candidate addr-spec, without angle brackets.

    Returns:
        True when the address is acceptable.
    """
    if not addr or len(addr) > MAX_ADDR_SPEC_CHARS or not addr.isprintable():
        return False
    if addr.startswith('"'):
        match = _QUOTED_LOCAL.match(addr)
        if match is None or addr[match.end() : match.end() + 1] != "@":
            return False
        domain = addr[match.end() + 1 :]
    else:
        local, sep, domain = addr.partition("@")
        if not sep or _LOCAL_ATOM.fullmatch(local) is None:
            return False
    if "@" in domain:
        return False
    return bool(_DOMAIN.fullmatch(domain) or _LITERAL.fullmatch(domain))


def parse_addresses(raw: str) -> tuple[list[Address], int]:
    """Parse an address-list header value.

    Args:
        raw: The stored raw header value (8-bit bytes as surrogates, folded).

    Returns:
        The valid addresses in order (display names decoded), and how many entries
        were rejected as invalid.
    """
    text = _headers.prepare(raw)
    simple = _parse_simple(text)
    if simple is not None:
        return simple, 0
    addresses: list[Address] = []
    rejected = 0
    for entry in _split(text):
        if entry.empty():
            continue
        address = _to_address(entry)
        if address is None:
            rejected += 1
        else:
            addresses.append(address)
    return addresses, rejected


# The shapes nearly all real headers take, parsed by one regex each: a bare ASCII
# addr-spec, or an optional plain or quoted name before one in angle brackets. A
# name here holds no "@", so the CVE-2023-27043 shapes never take this path. The
# local part is atext and dots, the domain ASCII labels: both pass valid_addr_spec.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~]+"
_ASCII_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_ADDR = rf"({_ATEXT}@{_ASCII_LABEL}(?:\.{_ASCII_LABEL})*)"
_SIMPLE_ENTRY = re.compile(
    rf'\s*(?:{_SIMPLE_ADDR}|(?:"([^"\\@]*)"|([^"(),:;<>\\@]*?))\s*<{_SIMPLE_ADDR}>)\s*'
)


def _parse_simple(text: str) -> list[Address] | None:
    """The addresses of a plain-shaped list, or ``None`` to use the full splitter."""
    if '"' in text and "," in text:
        return None  # a quoted name may hold a comma
    addresses: list[Address] = []
    for piece in text.split(",") if "," in text else (text,):
        match = _SIMPLE_ENTRY.fullmatch(piece)
        if match is None:
            if piece.strip():
                return None
            continue
        addr, quoted, plain, angle = match.groups()
        address = _named(addr, "") if addr is not None else _named(angle, quoted or plain or "")
        if address is None:
            return None
        addresses.append(address)
    return addresses


def _named(addr: str, name: str) -> Address | None:
    if len(addr) > MAX_ADDR_SPEC_CHARS:
        return None
    if not name:
        return Address(addr)
    display = _headers.one_line(_headers.decode_words(_SPACES.sub(" ", name)), 500)
    return Address(addr, display.strip(" \"'"))


def parse_path(raw: str) -> str | None:
    """Parse a Return-Path value: ``""`` for the null path ``<>``, else the addr-spec.

    Args:
        raw: The stored raw header value.

    Returns:
        ``""`` for ``<>``, the addr-spec when valid, ``None`` otherwise.
    """
    text = _headers.one_line(_headers.prepare(raw), 2000)
    if _SPACES.sub("", text) == "<>":
        return ""
    addresses, _rejected = parse_addresses(raw)
    return addresses[0].addr_spec if addresses else None


def _split(text: str) -> list[_Entry]:
    """Split an address list into entries (one pass, linear)."""
    entries = [_Entry()]
    position = 0
    length = len(text)
    in_angle = False
    angle: list[str] = []
    while position < length:
        char = text[position]
        entry = entries[-1]
        if char == '"':
            end, content = _quoted(text, position)
            if in_angle:
                # A quoted local part keeps its quotes: '<"john doe"@example.com>'.
                angle.append(text[position:end])
            else:
                entry.phrase.append(content)
                entry.bare.append(text[position:end])
            position = end
        elif char == "(":
            end, content = _comment(text, position)
            entry.comments.append(content)
            position = end
        elif char == "<":
            if in_angle:
                angle.append(char)
            in_angle = True
            position += 1
        elif char == ">" and in_angle:
            entry.angles.append("".join(angle))
            angle.clear()
            in_angle = False
            position += 1
        elif in_angle:
            # Inside brackets every other character belongs to the address: a comma
            # there is junk to be rejected by validation, not an entry boundary.
            match = _ANGLE_RUN.match(text, position)
            end = match.end() if match else position + 1
            angle.append(text[position:end])
            position = end
        elif char in ",;":
            entries.append(_Entry())
            position += 1
        elif char == ":":
            # Group syntax "Name: a@b, c@d;": the group name is not an address.
            entry.phrase.clear()
            entry.bare.clear()
            position += 1
        elif char == "\\":
            entry.bare.append(text[position : position + 2])
            entry.phrase.append(text[position + 1 : position + 2])
            position += 2
        else:
            match = _PLAIN_RUN.match(text, position)
            end = match.end() if match else position + 1
            entry.phrase.append(text[position:end])
            entry.bare.append(text[position:end])
            position = end
    if in_angle:
        # An unclosed "<" keeps what followed it as the angle address.
        entries[-1].angles.append("".join(angle))
    return entries


def _quoted(text: str, start: int) -> tuple[int, str]:
    """End index and unescaped content of the quoted string starting at ``start``."""
    pieces: list[str] = []
    position = start + 1
    length = len(text)
    while position < length:
        match = _QUOTED_RUN.match(text, position)
        if match is not None:
            pieces.append(match.group())
            position = match.end()
            continue
        if text[position] == "\\":
            pieces.append(text[position + 1 : position + 2])
            position += 2
            continue
        return position + 1, "".join(pieces)  # the closing quote
    return length, "".join(pieces)


def _comment(text: str, start: int) -> tuple[int, str]:
    """End index and content of the (nestable) comment starting at ``start``."""
    depth = 0
    pieces: list[str] = []
    position = start
    length = len(text)
    while position < length:
        char = text[position]
        if char == "(":
            depth += 1
            if depth > 1:
                pieces.append(char)
            position += 1
        elif char == ")":
            depth -= 1
            position += 1
            if depth == 0:
                return position, "".join(pieces)
            pieces.append(char)
        elif char == "\\":
            pieces.append(text[position + 1 : position + 2])
            position += 2
        else:
            match = _COMMENT_RUN.match(text, position)
            end = match.end() if match else position + 1
            pieces.append(text[position:end])
            position = end
    return length, "".join(pieces)


def _to_address(entry: _Entry) -> Address | None:
    """The address of one entry, or ``None`` when it holds no single valid addr-spec."""
    if entry.angles:
        if len(entry.angles) > 1:
            # Two angle addresses in one entry: there is no telling which is meant.
            return None
        addr = _strip_route(entry.angles[0].strip())
        name = "".join(entry.phrase)
    else:
        addr = "".join(entry.bare).strip()
        name = " ".join(entry.comments)
    if not valid_addr_spec(addr):
        # RFC 5322's obsolete syntax (section 4.4) allows spaces around the "@" and the
        # dots of an addr-spec: "joe @ example.org" is joe@example.org, as the stdlib
        # and mail clients read it.
        addr = _OBSOLETE_SPACES.sub(r"\1", addr)
        if not valid_addr_spec(addr):
            return None
    return _named(addr, name)


_OBSOLETE_SPACES = re.compile(r"\s*([@.])\s*")


def _strip_route(addr: str) -> str:
    """Drop an obsolete source route: ``<@relay.example:user@host>`` → ``user@host``."""
    if addr.startswith("@") and ":" in addr:
        return addr.split(":", 1)[1]
    return addr


def lenient_address(raw: str) -> Address | None:
    """The first usable address in a header value, read as a mail client reads it.

    For values the strict parser rejects: ``Big Bug bb@bug.com`` (an unquoted name),
    ``a@x.example b@y.example`` (two addresses with no comma), an address inside an
    encoded word, an angle address with junk around it. An address without a domain
    (``<MAILER-DAEMON>``) is not usable: no domain is ever invented. When the value
    holds angle brackets, only what is inside them is read, so an address in a display
    name never wins over the bracketed one (CVE-2023-27043).

    Args:
        raw: The stored raw header value.

    Returns:
        The address, with the text before it as the display name, or ``None``.
    """
    text = _headers.prepare(raw)[:LENIENT_SCAN_CHARS]
    if "<" not in text:
        text = _headers.decode_words(text)[:LENIENT_SCAN_CHARS]
    regions = _regions(text)
    for start, region in regions:
        for match in _LENIENT_ADDR.finditer(region):
            addr = match.group().rstrip(".-")
            if valid_addr_spec(addr):
                before = text[:start] if "<" in text else region[: match.start()]
                return _named(addr, _headers.decode_words(before).strip(" \t\"'<>()"))
    return None


def _regions(text: str) -> list[tuple[int, str]]:
    """Where :func:`lenient_address` may look: inside each ``<...>``, after an unclosed
    ``<``, or the whole text when it has no bracket; each with its start in ``text``."""
    if "<" not in text:
        return [(0, text)]
    regions = [(m.start(), m.group(1)) for m in _ANGLED.finditer(text)]
    if not regions:
        last = text.rfind("<")
        regions = [(last, text[last + 1 :])]
    return regions
