"""halomail's MIME parser: the stdlib's tree, bounded, found in the bytes.

:func:`parse` builds the tree the stdlib's ``FeedParser`` builds under ``compat32`` (the
fast policy; ``policy.default`` is about 15x slower on headers), with the same header,
boundary and defect rules, but finds part boundaries in the raw bytes and keeps every
body as a view of them: no line-by-line reading, no copy of a large attachment.
tests/test_mime_tree.py holds it to FeedParser's tree on generated and real mail. It
parts from the stdlib on purpose in one place: a boundary parameter folded over two
lines is unfolded (RFC 5322 §2.2.3), where the stdlib finds no boundary at all.

The parts are :class:`BoundedMessage` objects (stdlib messages), which bound the parse
from the inside:

* a part counts parts and nesting depth as it is attached, and stops the parse with
  :class:`LimitExceeded` past ``max_parts``/``max_depth``, so a 100,000-part or
  10,000-deep message costs only the first few hundred parts (and the parse is
  iterative: no depth meets the recursion limit);
* it checks every header field as it is stored (size, count, parameters, encoded
  words, addresses, see :mod:`halomail.inbound._headers`), before the stdlib or we read
  a parameter or a word: that is where the super-linear paths are;
* every ``message/*`` part is opaque: its body is kept as is, so an attached email
  stays one attachment with its exact bytes, its headers are never parsed as ours
  (A7), and nesting through attached emails cannot recurse at all.

Before the parser runs, :func:`find_head_end` and :func:`repair_head` measure the
top-level header block and turn each bare CR inside it into a space: the stdlib
splits lines at a bare CR, so ``Subject: hi\\rX-Evil: 1`` would otherwise smuggle an
``X-Evil`` header (M12).
"""

from __future__ import annotations

import email.errors
import re
from collections.abc import Iterator
from email.message import Message
from email.policy import Policy, compat32
from itertools import chain
from operator import itemgetter
from typing import Any

from halomail.inbound import _field_caps, _headers
from halomail.inbound._transfer import decode_transfer, decode_transfer_view
from halomail.inbound.models import ParseLimits

__all__ = [
    "BoundedMessage",
    "HeaderTruncatedDefect",
    "LimitExceeded",
    "decode_transfer",
    "decode_transfer_view",
    "drop_malformed_lines",
    "find_head_end",
    "first_headers",
    "parse",
    "raw_payload",
    "repair_head",
]

_PARAM_FIELDS = frozenset({"content-type", "content-disposition"})
# A run of empty parameters ("text/html ; ; ; ;", seen in real spam with 7,000 of
# them) is harmless but quadratic for the stdlib's parameter parser: collapse it.
_EMPTY_PARAMS = re.compile(r";[\s;]*;")
# A field this short cannot exceed any count cap, so it skips those checks.
_SHORT_FIELD = min(_headers.MAX_PARAMS, _headers.MAX_ENCODED_WORDS, _headers.MAX_ADDRESSES)
_BOUNDARY_HINT = re.compile("boundary", re.IGNORECASE)
_OPAQUE_TYPE = "application/x-halomail-opaque-message"
# The stdlib's own test for a header line (email.feedparser.headerRE), in bytes.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_NAME = itemgetter(0)
_VALUE = itemgetter(1)


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
        self._index: dict[str, int] = {}
        self._lower: list[str] = []

    def set_raw(self, name: str, value: str) -> None:
        """Store a header as parsed, unless it crosses a per-header cap.

        Raises:
            LimitExceeded: ``headers-too-large`` for an oversized block or parameter list.
        """
        self._header_bytes += len(name) + len(value) + 2
        if len(value) > _SHORT_FIELD or self._header_bytes > self._max_header_bytes:
            value = self._check_long_field(name.lower(), value)
        if len(self._headers) >= _headers.MAX_FIELDS:
            raise LimitExceeded("headers-too-large")
        # What email.message.Message.set_raw does, without the extra call per header.
        self._headers.append((name, value))

    def set_many(self, fields: list[tuple[str, str]]) -> None:
        """Store several headers as parsed, as :meth:`set_raw` one after another would.

        Raises:
            LimitExceeded: as :meth:`set_raw`.
        """
        added = sum(map(len, chain.from_iterable(fields))) + 2 * len(fields)
        if (
            self._header_bytes + added > self._max_header_bytes
            or len(self._headers) + len(fields) > _headers.MAX_FIELDS
        ):
            for name, value in fields:  # a limit is crossed: stop where set_raw would
                self.set_raw(name, value)
            return
        self._header_bytes += added
        if _field_caps.within_count_caps("\x00".join(map(_VALUE, fields))):
            # No field can be over a cap the whole block is within (counted in C): only
            # a long Content-Type still has its boundary to check.
            self._headers.extend(fields)
            for name, value in fields:
                if len(value) > _headers.MAX_BOUNDARY_CHARS and name.lower() == "content-type":
                    self._check_long_field("content-type", value)
            return
        # Within the block's limits, only a field longer than the shortest cap needs its
        # own checks (which may truncate it, in order, as set_raw would).
        short, check = _SHORT_FIELD, self._check_long_field
        self._headers.extend(
            [
                (name, value) if len(value) <= short else (name, check(name.lower(), value))
                for name, value in fields
            ]
        )

    def header_index(self) -> dict[str, int]:
        """Where each field name (lower-cased) is first stored, built in C once.

        Rebuilt when the number of stored fields changes (the parse only appends).
        """
        headers = self._headers
        if len(self._lower) != len(headers):
            self._lower = lower = list(map(str.lower, map(_NAME, headers)))
            self._index = dict(zip(reversed(lower), range(len(lower) - 1, -1, -1), strict=True))
        return self._index

    def lower_names(self) -> list[str]:
        """The stored field names, lower-cased, in order."""
        self.header_index()
        return self._lower

    def first(self, name: str) -> str | None:
        """The first stored raw value of the field ``name`` (lower-case), else ``None``."""
        position = self.header_index().get(name)
        return None if position is None else self._headers[position][1]

    def _check_long_field(self, lower: str, value: str) -> str:
        """Apply the size caps; only fields longer than every count cap need the rest.

        A field over its own size, encoded-word or address caps is truncated (with a
        ``header-truncated:<name>`` defect); only the whole block over
        ``max_header_bytes`` and a parameter list over its caps stop the parse.
        """
        if self._header_bytes > self._max_header_bytes:
            raise LimitExceeded("headers-too-large")
        cut = _field_caps.field_cut(lower, value)
        if cut < len(value):
            value = value[:cut]
            self.defects.append(HeaderTruncatedDefect(lower))
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
        raw = self.first("content-type")
        if raw is None:
            content_type = self.get_default_type()
        elif raw.isascii():
            # Message.get_content_type on a compat32 value, without its scan of the fields.
            content_type = raw.partition(";")[0].strip().lower()
            if content_type.count("/") != 1:
                content_type = "text/plain"
        else:  # 8-bit bytes: compat32 reads the value as a Header first
            content_type = super().get_content_type()
        if self._budget.parsing and content_type.startswith("message/"):
            return _OPAQUE_TYPE
        return content_type


class HeaderTruncatedDefect(email.errors.MessageDefect):
    """A header field was over its own caps and was truncated; ``name`` is its name.

    Args:
        name: The field's lower-cased name.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name[:60]


class _EmptyParametersDefect(email.errors.MessageDefect):
    """A parameter list held a long run of empty parameters (collapsed)."""


def parse(data: bytes, limits: ParseLimits) -> BoundedMessage:
    """Parse raw message bytes into a tree of :class:`BoundedMessage`.

    The tree is the one the stdlib's ``FeedParser`` builds under ``compat32``: the same
    header semantics, part boundaries, defects and default types (the differential
    tests hold us to that on thousands of real emails). What differs is how bodies are
    found: a part's boundary lines are located with ``bytes.find`` and every leaf body
    is kept as a zero-copy :class:`memoryview` of ``data``, where the stdlib splits the
    whole message into lines, one Python call each, and joins them back into a string.
    A 2 MB base64 attachment is one search instead of 27,000 ``readline`` calls, and a
    50 MB one costs no copy at all until its transfer encoding is undone.

    Args:
        data: The raw message (after :func:`repair_head`).
        limits: The limits to enforce.

    Returns:
        The top-level message; each leaf's ``_payload`` is a memoryview of its body
        (see :func:`raw_payload`), each multipart's a list of parts.

    Raises:
        LimitExceeded: When a limit is crossed; parsing stops at that point.
    """
    budget = _Budget(limits)
    root = BoundedMessage(budget)
    # Depth first and in document order, as the stdlib attaches parts, without
    # recursion: the depth limit is configurable and must never meet the stack's.
    pending: list[_Pending] = [_Pending(None, data, 0, len(data))]
    try:
        while pending:
            job = pending.pop()
            if job.parent is None:
                part = root
            else:
                part = BoundedMessage(budget)
                if job.in_digest:
                    part.set_default_type("message/rfc822")
                job.parent.attach(part)
            buffer, body, end = _read_head(part, job.buffer, job.start, job.end, limits)
            content_type = part.get_content_type()
            if not content_type.startswith("multipart/"):
                if job.parent is not None:
                    # RFC 2046: the line break before a boundary belongs to the boundary.
                    end = _strip_eol(buffer, body, end)
                part._payload = memoryview(buffer)[body:end]
                continue
            children = _split_multipart(part, buffer, body, end)
            digest = content_type == "multipart/digest"
            pending.extend(reversed([_Pending(part, buffer, s, e, digest) for s, e in children]))
        if root.get_content_maintype() == "multipart" and not root.is_multipart():
            root.defects.append(email.errors.MultipartInvariantViolationDefect())
        return root
    finally:
        budget.parsing = False


class _Pending:
    """A part still to be read: its parent, where its bytes are, and whether the parent
    is a ``multipart/digest`` (whose parts default to ``message/rfc822``)."""

    __slots__ = ("buffer", "end", "in_digest", "parent", "start")

    def __init__(
        self,
        parent: BoundedMessage | None,
        buffer: bytes,
        start: int,
        end: int,
        in_digest: bool = False,
    ) -> None:
        self.parent = parent
        self.buffer = buffer
        self.start = start
        self.end = end
        self.in_digest = in_digest


# One line, with its line break (CRLF, lone CR or LF, as the stdlib splits lines).
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")
_TEXT_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
# As many complete header lines as follow one another: the stdlib's test for a header
# line (headerRE), run by the regex engine over the whole block instead of per line.
# One field of a plain block (see _plain_block), as _store_headers stores it: the name up
# to the first colon; the value without the blanks after the colon, with its continuation
# lines (and the breaks between them) and without its last line break. Linear: each
# character is matched by one branch only (a break is followed by a blank only inside
# the repetition).
_FIELD = re.compile(r"([^:\r\n]*):[ \t]*([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)(?:\r\n|\r|\n)?")
_HEADER_LINES = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n))*")


def _read_head(
    part: BoundedMessage, buffer: bytes, start: int, end: int, limits: ParseLimits
) -> tuple[bytes, int, int]:
    """Store the header block of ``buffer[start:end]`` on ``part``; find where its body is.

    The block ends at an empty line (which is dropped) or at the first line that is not
    a header line (which starts the body, with a MissingHeaderBodySeparatorDefect).

    Returns:
        The buffer holding the body, and the body's start and end in it. The buffer is
        ``buffer`` except in the rare case where the stdlib moves a trailing ``From ``
        line from the headers into the body.

    Raises:
        LimitExceeded: ``headers-too-large`` for a block over ``max_header_bytes``.
    """
    # _HEADER_LINES and _LINE match everywhere (even the empty string).
    block_end = _HEADER_LINES.match(buffer, start, end).end()  # type: ignore[union-attr]
    body = end
    if block_end < end:
        if buffer[block_end] in _EOL_BYTES:
            body = _LINE.match(buffer, block_end, end).end()  # type: ignore[union-attr]
        elif _HEADER_LINE.match(buffer, block_end, end) is not None:
            block_end = end  # a last header line that ends the part without a line break
        else:
            part.defects.append(email.errors.MissingHeaderBodySeparatorDefect())
            body = block_end
    if block_end - start > limits.max_header_bytes:
        raise LimitExceeded("headers-too-large")
    if block_end == start:
        return buffer, body, end
    block = buffer[start:block_end].decode("ascii", "surrogateescape")
    # An mbox "From " line first is the envelope (as in _store_headers); the fields follow.
    envelope = _TEXT_LINE.match(block).end() if block.startswith("From ") else 0  # type: ignore[union-attr]
    if _plain_block(block, envelope):
        if envelope:
            part.set_unixfrom(block[:envelope].rstrip("\r\n"))
        part.set_many(_FIELD.findall(block, envelope))
        return buffer, body, end
    pushed_back = _store_headers(part, _TEXT_LINE.findall(block))
    if pushed_back is not None:
        # The stdlib reads a "From " line that ends the headers as the body's first.
        return (
            pushed_back.encode("ascii", "surrogateescape") + buffer[body:end],
            0,
            (len(pushed_back) + end - body),
        )
    return buffer, body, end


def _plain_block(block: str, start: int = 0) -> bool:
    """Whether ``block[start:]`` holds only fields: no ``From `` line, no field without a
    name, no continuation line first. Nearly every block does (after an mbox envelope
    line), and :data:`_FIELD` then reads it in one call with the result of
    :func:`_store_headers`."""
    return (
        not block.startswith(("From ", ":", " ", "\t"), start)
        and block.find("\nFrom ", start) < 0
        and block.find("\rFrom ", start) < 0
        and block.find("\n:", start) < 0
        and block.find("\r:", start) < 0
    )


def _store_headers(part: BoundedMessage, lines: list[str]) -> str | None:
    """Turn header lines into stored fields, exactly as the stdlib's ``_parse_headers``
    with ``compat32.header_source_parse``: the name as is, the value unfolded.

    Returns:
        A ``From `` line that ends the block, which belongs to the body, or ``None``.
    """
    name = ""
    first = ""  # the field's first line, after the colon
    more: list[str] = []  # its continuation lines
    last = len(lines) - 1
    for number, line in enumerate(lines):
        if line[0] in " \t":
            if not name:
                part.defects.append(email.errors.FirstHeaderLineIsContinuationDefect(line))
            else:
                more.append(line)
            continue
        if name:
            part.set_raw(name, _unfold(first, more))
            name, more = "", []
        if line.startswith("From "):
            if number == 0:
                part.set_unixfrom(line.rstrip("\r\n"))
            elif number == last:
                return line
            else:
                part.defects.append(email.errors.MisplacedEnvelopeHeaderDefect(line))
            continue
        colon = line.find(":")
        if colon == 0:
            part.defects.append(email.errors.InvalidHeaderDefect("Missing header name."))
            continue
        name, first = line[:colon], line[colon + 1 :]
    if name:
        part.set_raw(name, _unfold(first, more))
    return None


def _unfold(first: str, more: list[str]) -> str:
    """A field's value as ``compat32`` stores it: leading blanks and the last break gone."""
    return (first.lstrip(" \t") + "".join(more)).rstrip("\r\n")


def _split_multipart(
    part: BoundedMessage, buffer: bytes, start: int, end: int
) -> list[tuple[int, int]]:
    """Where each sub-part of a multipart body is, as the stdlib's parser decides.

    Records on ``part`` the defects the stdlib records (no boundary, start or close
    boundary not found, an encoded multipart) and, when it keeps no sub-parts, its
    body as the payload.

    Returns:
        The ``(start, end)`` of each sub-part in ``buffer``, in order.
    """
    boundary = part.get_boundary()
    if boundary is None:
        part.defects.append(email.errors.NoBoundaryInMultipartDefect())
        part._payload = memoryview(buffer)[start:end]
        return []
    if str(part.get("content-transfer-encoding", "8bit")).lower() not in _IDENTITY_MULTIPART:
        part.defects.append(email.errors.InvalidMultipartContentTransferEncodingDefect())
    lines: Iterator[tuple[int, int, bool]] = iter(())
    first = None
    for candidate in _unfolded(boundary):
        try:
            separator = b"--" + candidate.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            continue  # a decoded RFC 2231 boundary that no line of bytes can equal
        lines = _boundary_lines(buffer, start, end, separator)
        first = next(lines, None)
        if first is not None:
            break
    if first is None or first[2]:
        # No boundary at all, or only a close boundary: what came before it is the body.
        part.defects.append(email.errors.StartBoundaryNotFoundDefect())
        part._payload = memoryview(buffer)[start : end if first is None else first[0]]
        return []
    children: list[tuple[int, int]] = []
    limit = part._budget.limits.max_parts
    line_end = first[1]
    while True:
        following = next(lines, None)
        # Boundary lines that follow one another delimit no part (the stdlib's reading
        # of RFC 2046); they are skipped, a close boundary among them included.
        while following is not None and following[0] == line_end:
            line_end = following[1]
            following = next(lines, None)
        if following is None:
            children.append((line_end, end))
            part.defects.append(email.errors.CloseBoundaryNotFoundDefect())
            return children
        children.append((line_end, following[0]))
        if following[2]:
            return children  # the close boundary; the epilogue is not kept
        if len(children) > limit:
            # Attaching this many parts must cross max_parts (or another limit first):
            # the parse stops before it reads any part past these, so none is listed.
            return children
        line_end = following[1]


_FOLD = re.compile(r"\r\n|\r|\n")
_FOLD_AND_BLANKS = re.compile(r"(?:\r\n|\r|\n)[ \t]*")


def _unfolded(boundary: str) -> tuple[str, ...]:
    """The boundaries a parameter folded over lines may mean, most likely first.

    RFC 5322 §2.2.3 unfolds by removing the line break and keeping the blank after it;
    mailers that wrap a long token mean it without the blank: the first of the two
    that some line of the body holds is the boundary (at most two searches).
    """
    if "\r" not in boundary and "\n" not in boundary:
        return (boundary,)
    return (_FOLD.sub("", boundary), _FOLD_AND_BLANKS.sub("", boundary))


def _boundary_lines(
    buffer: bytes, start: int, end: int, separator: bytes
) -> Iterator[tuple[int, int, bool]]:
    """Each boundary line in ``buffer[start:end]``: its start, its end, and whether it closes.

    A boundary line is the separator at the start of a line, then ``--`` for the close
    boundary, then spaces or tabs only (the stdlib's ``boundaryre``). Only line starts
    are searched (the separator after a LF or a lone CR), so a body full of the
    separator in mid-line costs one C-level search, not a Python step per occurrence.
    """
    size = len(separator)
    after_lf, after_cr = b"\n" + separator, b"\r" + separator
    next_lf = buffer.find(after_lf, start, end)
    next_cr = buffer.find(after_cr, start, end)
    candidate = start if buffer.startswith(separator, start, end) else -1
    while True:
        if candidate < 0:
            if next_lf < 0 and next_cr < 0:
                return
            if next_cr < 0 or 0 <= next_lf < next_cr:
                candidate = next_lf + 1
                next_lf = buffer.find(after_lf, candidate, end)
            else:
                candidate = next_cr + 1
                next_cr = buffer.find(after_cr, candidate, end)
        found, candidate = candidate, -1
        after = found + size
        closing = buffer.startswith(b"--", after, end)
        match = _BOUNDARY_TAIL.match(buffer, after + 2 if closing else after, end)
        if match is not None:
            yield found, match.end(), closing


_EOL_BYTES = b"\r\n"
_IDENTITY_MULTIPART = ("7bit", "8bit", "binary")
# What may follow a boundary on its line: blanks, then the line break or the end.
_BOUNDARY_TAIL = re.compile(rb"[ \t]*(?:\r\n|\r|\n|\Z)")


def _strip_eol(buffer: bytes, start: int, end: int) -> int:
    """The end of ``buffer[start:end]`` without one trailing line break."""
    if end - start >= 2 and buffer[end - 2 : end] == b"\r\n":
        return end - 2
    if end > start and buffer[end - 1] in _EOL_BYTES:
        return end - 1
    return end


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


#: How many lines after a malformed header line are read to decide whether the header
#: block goes on (a field line among them) or the body has begun (none).
MALFORMED_LOOKAHEAD_LINES = 8
# A field line, strictly: a non-empty name, then the colon.
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


def drop_malformed_lines(data: bytes, limit: int) -> tuple[bytes, int]:
    """Drop the malformed lines inside the top-level header block that fields follow.

    The stdlib ends the header block at the first line that is not a header line, so in
    ``From: a@b.example / broken / Subject: hi`` the Subject lands in the body. Mail
    clients read on. A malformed line is dropped when a header line precedes it and a
    field line follows it within :data:`MALFORMED_LOOKAHEAD_LINES` lines, before the
    blank line that ends the block; otherwise it starts the body, as before. A line
    opening with ``--`` is never dropped: it is the first boundary of a multipart whose
    sender left out the blank line, and the field lines after it are its first part's
    (reading on would lose that part). Each decision reads a bounded number of lines of
    a block of at most ``limit`` bytes.

    Args:
        data: The raw message (after :func:`repair_head`).
        limit: The largest header block accepted.

    Returns:
        The message without those lines, and how many were dropped.
    """
    blank = _BLANK_LINE.search(data, 0, limit + 3)
    region_end = blank.start() + 1 if blank is not None else min(len(data), limit)
    kept: list[bytes] = []
    position = 0
    while True:
        # _HEADER_LINES and _LINE match everywhere (even the empty string).
        malformed = _HEADER_LINES.match(data, position, region_end).end()  # type: ignore[union-attr]
        if malformed == 0 or malformed >= region_end or data.startswith(b"--", malformed):
            break
        line_end = _LINE.match(data, malformed, region_end).end()  # type: ignore[union-attr]
        if not _field_follows(data, line_end, region_end):
            break
        kept.append(data[position:malformed])
        position = line_end
    if not kept:
        return data, 0
    kept.append(data[position:])
    return b"".join(kept), len(kept) - 1


def _field_follows(data: bytes, start: int, end: int) -> bool:
    """Whether a field line starts within the next few lines of ``data[start:end]``."""
    position = start
    for _ in range(MALFORMED_LOOKAHEAD_LINES):
        if position >= end:
            return False
        if _FIELD_LINE.match(data, position, end) is not None:
            return True
        position = _LINE.match(data, position, end).end()  # type: ignore[union-attr]
    return False


def first_headers(part: BoundedMessage, names: frozenset[str]) -> dict[str, str]:
    """The first stored raw value of each header in ``names`` (lower-case), in one pass.

    Args:
        part: A parsed part.
        names: The lower-cased header names wanted.

    Returns:
        The lower-cased names found, mapped to their raw values as stored.
    """
    index = part.header_index()
    headers = part._headers
    return {name: headers[index[name]][1] for name in names & index.keys()}


def raw_payload(part: BoundedMessage) -> bytes | memoryview:
    """The undecoded body of a leaf part, as received, without a copy.

    Args:
        part: A parsed leaf part.

    Returns:
        A view of its body in the raw message (``b""`` when there is none).
    """
    payload = part._payload
    if isinstance(payload, memoryview | bytes):
        return payload
    if isinstance(payload, str):  # pragma: no cover - parse stores views
        return payload.encode("ascii", "surrogateescape")
    return b""
