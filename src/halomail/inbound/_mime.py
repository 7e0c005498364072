"""The stdlib MIME parser, bounded, plus the byte-level checks that run before it.

We parse with :class:`email.feedparser.FeedParser` under ``policy.compat32`` (the
fast policy; ``policy.default`` is about 15x slower on headers) and bound it from
the inside, through the message factory it calls for every part:

* :class:`BoundedMessage` counts parts and nesting depth as the parser attaches each
  part, and stops it with :class:`LimitExceeded` past ``max_parts``/``max_depth``,
  so a 100,000-part or 10,000-deep message costs only the first few hundred parts
  and never comes near the recursion limit (the feedparser recurses per level);
* it checks every header field as the parser stores it (size, count, parameters,
  encoded words, addresses, see :mod:`halomail.inbound._headers`), before the
  stdlib or we read a parameter or a word: that is where the super-linear paths are;
* it makes every ``message/*`` part opaque to the parser, which then keeps its
  body as is: an attached email stays one attachment with its exact bytes, its
  headers are never parsed as ours (A7), and nesting through attached emails
  cannot recurse at all.

Before the parser runs, :func:`find_head_end` and :func:`repair_head` measure the
top-level header block and turn each bare CR inside it into a space: the stdlib
splits lines at a bare CR, so ``Subject: hi\\rX-Evil: 1`` would otherwise smuggle an
``X-Evil`` header (M12).
"""

from __future__ import annotations

import binascii
import email.errors
import re
from email.feedparser import FeedParser
from email.message import Message
from email.policy import Policy, compat32
from typing import Any, cast

from halomail.inbound import _headers
from halomail.inbound.models import ParseLimits

__all__ = [
    "BoundedMessage",
    "LimitExceeded",
    "decode_transfer",
    "find_head_end",
    "first_headers",
    "parse",
    "raw_payload",
    "repair_head",
]

_PARAM_FIELDS = frozenset({"content-type", "content-disposition"})
_ADDRESS_FIELDS = frozenset(
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
# A run of empty parameters ("text/html ; ; ; ;", seen in real spam with 7,000 of
# them) is harmless but quadratic for the stdlib's parameter parser: collapse it.
_EMPTY_PARAMS = re.compile(r";[\s;]*;")
# A field this short cannot exceed any count cap, so it skips those checks.
_SHORT_FIELD = min(_headers.MAX_PARAMS, _headers.MAX_ENCODED_WORDS, _headers.MAX_ADDRESSES)
_ADDRESS_TOKENS = (",", ";", "(", "<", '"', "\\")
_BOUNDARY_HINT = re.compile("boundary", re.IGNORECASE)
_OPAQUE_TYPE = "application/x-halomail-opaque-message"
# The stdlib's own test for a header line (email.feedparser.headerRE), in bytes.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


class LimitExceeded(Exception):
    """A parse limit was crossed; ``reason`` is the quarantine reason.

    Args:
        reason: ``"headers-too-large"``, ``"mime-too-deep"`` or ``"too-many-parts"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Budget:
    """What one parse may still spend, shared by every part it creates."""

    __slots__ = ("limits", "parsing", "parts")

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.parts = 1  # the root
        self.parsing = True


class BoundedMessage(Message):
    """A ``compat32`` message that enforces the parse limits as the parser builds it.

    Args:
        budget: The limits and counters shared by one parse.
        policy: The email policy (always ``compat32`` here).
    """

    # Set by email.message.Message; declared for the type checker.
    _headers: list[tuple[str, str]]
    _payload: Any

    def __init__(self, budget: _Budget, policy: Policy[Any] = compat32) -> None:
        super().__init__(policy)
        self._budget = budget
        self._max_header_bytes = budget.limits.max_header_bytes
        self._depth = 0
        self._header_bytes = 0

    def set_raw(self, name: str, value: str) -> None:
        """Store a header as parsed, unless it crosses a per-header cap.

        Raises:
            LimitExceeded: ``headers-too-large`` for an oversized field or block.
        """
        self._header_bytes += len(name) + len(value) + 2
        if len(value) > _SHORT_FIELD or self._header_bytes > self._max_header_bytes:
            value = self._check_long_field(name.lower(), value)
        if len(self._headers) >= _headers.MAX_FIELDS:
            raise LimitExceeded("headers-too-large")
        # What email.message.Message.set_raw does, without the extra call per header.
        self._headers.append((name, value))

    def _check_long_field(self, lower: str, value: str) -> str:
        """Apply the size caps; only fields longer than every count cap need the rest."""
        if (
            self._header_bytes > self._max_header_bytes
            or len(value) > _headers.MAX_FIELD_BYTES
            or value.count("=?") > _headers.MAX_ENCODED_WORDS
        ):
            raise LimitExceeded("headers-too-large")
        if lower in _PARAM_FIELDS:
            if value.count(";") > _headers.MAX_PARAMS:
                value = _EMPTY_PARAMS.sub(";", value)
                if value.count(";") > _headers.MAX_PARAMS:
                    raise LimitExceeded("headers-too-large")
                self.defects.append(_EmptyParametersDefect())
            if lower == "content-type" and _BOUNDARY_HINT.search(value):
                boundary = _headers.parse_params(value)[1].get("boundary", "")
                if len(boundary) > _headers.MAX_BOUNDARY_CHARS:
                    raise LimitExceeded("headers-too-large")
        elif lower in _ADDRESS_FIELDS and (
            value.count("@") > _headers.MAX_ADDRESSES
            or sum(value.count(token) for token in _ADDRESS_TOKENS) > _headers.MAX_ADDRESS_TOKENS
        ):
            raise LimitExceeded("headers-too-large")
        return value

    def attach(self, payload: Any) -> None:
        """Attach a sub-part, unless that crosses the depth or part-count limit.

        Raises:
            LimitExceeded: ``mime-too-deep`` or ``too-many-parts``.
        """
        budget = self._budget
        depth = self._depth + 1
        if depth > budget.limits.max_depth:
            raise LimitExceeded("mime-too-deep")
        budget.parts += 1
        if budget.parts > budget.limits.max_parts:
            raise LimitExceeded("too-many-parts")
        if isinstance(payload, BoundedMessage):
            payload._depth = depth
        super().attach(payload)

    def get_content_type(self) -> str:
        """The content type; while parsing, ``message/*`` reads as an opaque type.

        The feedparser descends into ``message/*`` bodies (and splits
        ``message/delivery-status`` into header blocks); seeing an opaque type, it
        keeps the body as the part's payload instead.
        """
        content_type = super().get_content_type()
        if self._budget.parsing and content_type.startswith("message/"):
            return _OPAQUE_TYPE
        return content_type


class _EmptyParametersDefect(email.errors.MessageDefect):
    """A parameter list held a long run of empty parameters (collapsed)."""


def parse(data: bytes, limits: ParseLimits, head_end: int) -> BoundedMessage:
    """Parse raw message bytes into a tree of :class:`BoundedMessage`.

    A message that is not multipart has one body, the bytes after its header block,
    so only the header block goes through the parser and the body is attached as
    it is: exactly what the parser would have produced, without its line-by-line
    loop over the body. Multipart messages (and any header block the parser ends
    early, M13) are parsed whole.

    Args:
        data: The raw message (after :func:`repair_head`).
        limits: The limits to enforce.
        head_end: The header block's length (from :func:`find_head_end`).

    Returns:
        The top-level message.

    Raises:
        LimitExceeded: When a limit is crossed; parsing stops at that point.
    """
    if b"multipart" in data[:head_end].lower():
        # Almost every multipart message says so in its header block: parse those
        # whole at once. (The parser has the last word for the rest, below.)
        return _feed(data, limits)
    if data.startswith(b"\r\n", head_end):
        body_start = head_end + 2
    elif data.startswith(b"\n", head_end):
        body_start = head_end + 1
    else:
        return _feed(data, limits)
    root = _feed(data[:body_start], limits)
    if root.get_content_maintype() == "multipart" or any(
        isinstance(defect, email.errors.MissingHeaderBodySeparatorDefect) for defect in root.defects
    ):
        return _feed(data, limits)
    root.set_payload(data[body_start:].decode("ascii", "surrogateescape"))
    return root


def _feed(data: bytes, limits: ParseLimits) -> BoundedMessage:
    budget = _Budget(limits)

    def factory(policy: Policy[Any] = compat32) -> BoundedMessage:
        return BoundedMessage(budget, policy)

    parser = FeedParser(cast(Any, factory), policy=compat32)
    try:
        parser.feed(data.decode("ascii", "surrogateescape"))
        return cast(BoundedMessage, parser.close())
    finally:
        budget.parsing = False


def find_head_end(data: bytes, limit: int) -> int:
    """Where the top-level header block ends (the index just after its last line).

    The block ends at the first empty line; with none within ``limit`` bytes, at the
    first line that is not a header line, as the stdlib parser decides (M13). The
    search never looks further than about ``limit`` bytes into the message.

    Args:
        data: The raw message.
        limit: The largest header block accepted.

    Returns:
        The length of the header block; more than ``limit`` means it is too large.
    """
    if data.startswith((b"\n", b"\r\n")):
        return 0
    blank = _BLANK_LINE.search(data, 0, limit + 3)
    if blank is not None:
        return blank.start() + 1
    position = 0
    length = len(data)
    while position < length:
        if position > limit:
            return position
        if _HEADER_LINE.match(data, position) is None:
            return position
        newline = data.find(b"\n", position, position + limit + 2)
        if newline < 0:
            return min(length, position + limit + 1)
        position = newline + 1
    return length


def repair_head(data: bytes, head_end: int) -> tuple[bytes, bool]:
    """Turn every bare CR in the top-level header block into a space.

    Args:
        data: The raw message.
        head_end: The header block's length (from :func:`find_head_end`).

    Returns:
        The repaired message, and whether anything changed.
    """
    head = data[:head_end]
    if b"\r" not in head:
        return data, False
    fixed = _BARE_CR.sub(b" ", head)
    if fixed == head:
        return data, False
    return fixed + data[head_end:], True


def first_headers(part: BoundedMessage, names: frozenset[str]) -> dict[str, str]:
    """The first stored raw value of each header in ``names`` (lower-case), in one pass.

    Args:
        part: A parsed part.
        names: The lower-cased header names wanted.

    Returns:
        The lower-cased names found, mapped to their raw values as stored.
    """
    found: dict[str, str] = {}
    for key, value in part._headers:
        lower = key.lower()
        if lower in names and lower not in found:
            found[lower] = value
    return found


def raw_payload(part: BoundedMessage) -> bytes:
    """The undecoded body of a leaf part as the bytes that were received.

    Args:
        part: A parsed leaf part.

    Returns:
        Its payload bytes (``b""`` when there is none).
    """
    payload = part._payload
    if isinstance(payload, str):
        return payload.encode("ascii", "surrogateescape")
    if isinstance(payload, bytes):  # pragma: no cover - the parser stores str
        return payload
    return b""


_TRANSFER_ENCODING = re.compile(r"[\s;\"']+")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UUENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_BAD_QP = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r?\n|\r|$))")


def decode_transfer(data: bytes, raw_encoding: str | None, defects: list[str]) -> bytes:
    """Undo a part's Content-Transfer-Encoding, as well as the data allows.

    ``base64`` skips junk and repairs padding, ``quoted-printable`` keeps malformed
    ``=`` sequences, uuencode is decoded line by line; an invalid input records a
    defect (M15). Unknown encodings (``7-bit``, ``plain``, ``text-html``, ...) are
    treated as 8bit (M14).

    Args:
        data: The raw body bytes.
        raw_encoding: The stored raw Content-Transfer-Encoding value, or ``None``.
        defects: Where to record what was wrong.

    Returns:
        The decoded bytes.
    """
    encoding = ""
    if raw_encoding:
        encoding = next(
            (t for t in _TRANSFER_ENCODING.split(_headers.prepare(raw_encoding).lower()) if t), ""
        )
    if encoding in _IDENTITY_ENCODINGS:
        return data
    if encoding == "base64":
        decoded, damaged = _headers.decode_base64(data)
        if damaged:
            defects.append("invalid-base64")
        return decoded
    if encoding == "quoted-printable":
        if _BAD_QP.search(data):
            defects.append("invalid-quoted-printable")
        return binascii.a2b_qp(data)
    if encoding in _UUENCODINGS:
        return _decode_uu(data, defects)
    defects.append("unknown-transfer-encoding")
    return data


def _decode_uu(data: bytes, defects: list[str]) -> bytes:
    """Decode uuencoded data between ``begin`` and ``end``; undecodable lines are skipped."""
    out = bytearray()
    started = False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin")
            continue
        if line.strip() == b"end":
            break
        if not line.strip():
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines wrongly; decode just the bytes the length promises.
            try:
                count = (((line[0] - 32) & 63) * 4 + 5) // 3
                out += binascii.a2b_uu(line[:count])
            except (binascii.Error, IndexError):
                defects.append("invalid-uuencode")
    if not started:
        defects.append("invalid-uuencode")
        return data
    return bytes(out)
