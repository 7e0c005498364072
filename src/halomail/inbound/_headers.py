"""Header values: RFC 2047 words, RFC 2231 parameters, Message-IDs and dates.

Everything here works on the raw value the ``compat32`` parser stored: ASCII with
any 8-bit bytes carried as surrogates (``surrogateescape``), folded lines intact.
Each function is linear in its input and never raises; the per-header caps below
are enforced before any of them runs (see :mod:`halomail.inbound._mime`).
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import functools
import hashlib
import re
import urllib.parse

from halomail.inbound import _charsets

__all__ = [
    "MAX_ADDRESSES",
    "MAX_ADDRESS_TOKENS",
    "MAX_BOUNDARY_CHARS",
    "MAX_DECODED_CHARS",
    "MAX_ENCODED_WORDS",
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_PARAMS",
    "SCAN_LIMIT",
    "decode_base64",
    "decode_value",
    "decode_words",
    "message_id",
    "message_ids",
    "one_line",
    "parse_date",
    "parse_params",
    "prepare",
    "scan_head",
]

# --- Per-header caps -------------------------------------------------------------
# The stdlib parses some header shapes in super-linear time (adversarial F11: a
# Content-Type with 8,000 ";" parameters, a To: with 8,000 encoded words or
# addresses). Real mail stays far below every cap: the SpamAssassin corpus peaks at
# 125 fields in one block, 14 KB in one field, 53 encoded words, 311 addresses.

#: Largest raw (folded) header field. Above it the email is ``headers-too-large``.
#: 64 KiB holds a References chain of a thousand ids or a To: of a thousand people.
MAX_FIELD_BYTES = 64 * 1024
#: Most header fields in one header block (top level or one MIME part).
MAX_FIELDS = 1000
#: Most parameters (``;`` separators, runs of empty ones collapsed first) in a
#: Content-Type or Content-Disposition. Real ones carry fewer than ten, and RFC 2231
#: continuations of a long file name a few dozen.
MAX_PARAMS = 100
#: Longest multipart boundary accepted (RFC 2046 allows 70 characters). The stdlib
#: compiles each boundary into a regular expression, at a cost that grows with its
#: length, once per multipart: 500 parts with 60 KB boundaries would take a minute.
MAX_BOUNDARY_CHARS = 200
#: Most RFC 2047 encoded words (``=?``) in one header field.
MAX_ENCODED_WORDS = 1000
#: Most addresses (counted as ``@`` signs) in one address header field.
MAX_ADDRESSES = 1000
#: Most address-list syntax tokens (``,`` ``;`` ``(`` ``<`` ``"`` ``\\``) in one address
#: header field: a real list spends at most four or five per address, while a field
#: of 12,000 ``"x",`` entries or 16,000 ``(c)`` comments would cost the splitter
#: seconds across a few headers.
MAX_ADDRESS_TOKENS = 5 * MAX_ADDRESSES
#: Longest decoded header value kept: sixteen full RFC 5322 lines (998 characters
#: each), enough for any real subject or recipient list, while one hostile header
#: cannot bloat every stored record or rule match.
MAX_DECODED_CHARS = 16 * 998
#: Longest Message-ID kept as is; longer ones keep a prefix plus a hash (L2), so
#: dedupe keys stay bounded and stable.
MAX_MESSAGE_ID_CHARS = 255

# --- Cleaning --------------------------------------------------------------------

# After decoding, anything that could start a new line becomes a space (a decoded
# "=0D=0A" must never inject a header, CVE-2024-6923), and other controls go.
_LINE_BREAKS = re.compile("[\t\n\v\f\r\x85\u2028\u2029]")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_BASE64_LINES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\r\n"
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=\s]")
_MID_PADDING = re.compile(rb"=[=\s]*[A-Za-z0-9+/]")
_PADDED_PIECE = re.compile(rb"[^=]+=*")
_INNER_SPACE = re.compile(rb"\S[ \t]+\S")


def prepare(raw: str) -> str:
    """Turn a stored raw value into text on one logical line, encoded words untouched.

    8-bit bytes (carried as surrogates) decode as UTF-8 when valid, else
    windows-1252; NUL characters and folding line breaks are removed.

    Args:
        raw: The value as the ``compat32`` parser stored it.

    Returns:
        The unfolded text, still holding any RFC 2047 words and control characters.
    """
    if not raw.isascii():
        raw = _charsets.decode_8bit(raw.encode("ascii", "surrogateescape"))
    if "\x00" in raw:
        # NUL is stripped from every stored field (M11), and before addresses are read
        # from the value, so "a@b.example\x00" is still the sender a@b.example.
        raw = raw.replace("\x00", "")
    if "\n" in raw or "\r" in raw:
        # Unfolding removes the line breaks of folded lines; the whitespace after
        # them stays. (Three replace() calls beat one translate() many times over.)
        raw = raw.replace("\r\n", "").replace("\n", "").replace("\r", "")
    return raw


def one_line(text: str, limit: int = MAX_DECODED_CHARS) -> str:
    """``text`` with control characters removed, line breaks as spaces, trimmed and capped.

    Args:
        text: Decoded text.
        limit: The most characters kept.

    Returns:
        A single line with no control characters.
    """
    if not text.isprintable():
        # Most such values are folded headers whose only non-printable characters are
        # tabs: replacing those is all the two substitutions below would do, and 40
        # times cheaper.
        spaced = text.replace("\t", " ")
        if spaced.isprintable():
            text = spaced
        else:
            text = _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text))
    text = text.strip()
    return text[:limit].rstrip() if len(text) > limit else text


def decode_value(raw: str) -> str:
    """Decode a stored raw header value for display: one line, no control characters.

    Args:
        raw: The value as the ``compat32`` parser stored it.

    Returns:
        The decoded value, at most :data:`MAX_DECODED_CHARS` characters.
    """
    if raw.isascii() and raw.isprintable() and "=?" not in raw:
        # The fast path: most header values are plain ASCII on one line.
        raw = raw.strip()
        return raw[:MAX_DECODED_CHARS] if len(raw) > MAX_DECODED_CHARS else raw
    return one_line(decode_words(prepare(raw)))


def decode_words(text: str) -> str:
    """Decode the RFC 2047 encoded words in ``text``, wherever they stand.

    Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2), and
    adjacent words in one charset are joined as bytes before decoding, so a
    multi-byte character split across two words survives. Unknown charsets guess
    (UTF-8, then windows-1252); damaged base64 is repaired as far as it goes.
    Linear in ``len(text)``: the pattern cannot run past a ``?``.

    Args:
        text: Unfolded header text.

    Returns:
        The decoded text (control characters not yet removed).
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0
    previous_was_word = False

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_charsets.decode(bytes(pending), pending_charset)[0])
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        position = match.end()
        data = _decode_word(match.group(2), match.group(3))
        if gap and not (previous_was_word and gap.isspace()):
            flush()
            out.append(gap)
        # RFC 2231 allows a language after "*" in the charset: "utf-8*en".
        charset = match.group(1).split("*", 1)[0].lower()
        if charset != pending_charset:
            flush()
            pending_charset = charset
        pending += data
        previous_was_word = True
    flush()
    out.append(text[position:])
    return "".join(out)


def _decode_word(encoding: str, encoded: str) -> bytes:
    """The bytes of one encoded word's text (missing padding is normal, not a defect)."""
    data = encoded.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        # header=True turns "_" into a space; a2b_qp keeps malformed "=" sequences.
        return binascii.a2b_qp(data, header=True)
    return decode_base64(data)[0]


def decode_base64(data: bytes | memoryview) -> tuple[bytes, bool]:
    """Decode base64 leniently: junk characters skipped, padding repaired.

    Python's decoder stops at the first padding, so text made of separately encoded
    chunks (``aGVsbA==aGVsbG8=``) would lose all but the first; each chunk that still
    looks like base64 is decoded in turn instead.

    Args:
        data: Base64 text, possibly with line breaks, junk or bad padding. A view of
            a large body is decoded without being copied.

    Returns:
        The decoded bytes and whether the input was damaged.
    """
    if _is_clean_base64(memoryview(data)):
        try:
            return binascii.a2b_base64(data), False
        except binascii.Error:
            return _lenient_base64(bytes(data)), True
    return _decode_base64_damaged(bytes(data))


# Clean base64 is checked this many bytes at a time, so a view is never copied whole.
_CHECK_CHUNK = 1 << 20


def _is_clean_base64(view: memoryview) -> bool:
    """Only the alphabet and line breaks, padding only at the end (the usual body).

    One C-level pass of ``bytes.translate`` per chunk, far cheaper than the two regex
    scans of the damaged path.
    """
    size = len(view)
    tail_start = max(size - _CHECK_CHUNK, 0)
    tail = bytes(view[tail_start:]).rstrip(b"=\r\n")
    if not tail and tail_start:
        # A megabyte of padding and line breaks at the end: junk, checked in one go.
        return not bytes(view).rstrip(b"=\r\n").translate(None, _BASE64_LINES)
    if tail.translate(None, _BASE64_LINES):
        return False
    return not any(
        bytes(view[start : min(start + _CHECK_CHUNK, tail_start)]).translate(None, _BASE64_LINES)
        for start in range(0, tail_start, _CHECK_CHUNK)
    )


def _decode_base64_damaged(data: bytes) -> tuple[bytes, bool]:
    """:func:`decode_base64` for any input: junk, inner padding and chunks handled."""
    damaged = _BASE64_JUNK.search(data) is not None
    if _MID_PADDING.search(data):
        out = bytearray()
        for index, piece in enumerate(_PADDED_PIECE.findall(data)):
            if index and (_BASE64_JUNK.search(piece) or _INNER_SPACE.search(piece)):
                break  # trailing prose after the data, not another chunk
            out += _lenient_base64(piece)
        return bytes(out), True
    try:
        # Non-strict mode skips characters outside the alphabet, in C.
        return binascii.a2b_base64(data), damaged
    except binascii.Error:
        return _lenient_base64(data), True


def _lenient_base64(data: bytes) -> bytes:
    cleaned = _NOT_BASE64.sub(b"", data)
    if len(cleaned) % 4 == 1:
        # One stray character cannot encode anything: drop it.
        cleaned = cleaned[:-1]
    return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


# --- Parameters (RFC 2045 + RFC 2231 + RFC 2047 in the wrong place) ---------------

_RFC2231_NAME = re.compile(r"([^*]+)\*(?:(\d{1,3})\*?|)$")
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)


_COMMENT = re.compile(r"\([^()]*\)")


def without_comments(value: str) -> str:
    """``value`` without its RFC 5322 comments (``(…)``, nested ones from the inside
    out, a bounded number of passes), stripped."""
    for _ in range(8):
        value, found = _COMMENT.subn(" ", value)
        if not found:
            break
    return value.strip()


def parse_params(raw: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type or Content-Disposition value into its value and parameters.

    Parameter names are lower-cased. RFC 2231 forms (``name*=utf-8''...``, the
    continuations ``name*0*=``/``name*1=``) are joined and decoded with the charset
    alias table; RFC 2047 words inside a quoted value (``name="=?utf-8?B?...?="``,
    wrong but common) are decoded too. 8-bit values decode as UTF-8 or windows-1252.

    Args:
        raw: The stored raw header value, or ``None``.

    Returns:
        The lower-cased first element (``"text/plain"``, ``"attachment"``, or ``""``)
        and the decoded parameters.
    """
    if not raw:
        return "", {}
    segments = _split_semicolons(prepare(raw))
    head = segments[0].strip().lower()
    if "(" in head:  # "text/plain (comment)": an RFC 5322 comment is no part of the type
        head = without_comments(head)
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for segment in segments[1:]:
        name, sep, value = segment.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        value = _unquote(value.strip())
        match = _RFC2231_NAME.match(name)
        if match is None:
            plain.setdefault(name, value)
            continue
        index = int(match.group(2)) if match.group(2) is not None else 0
        encoded = name.endswith("*")
        extended.setdefault(match.group(1), {}).setdefault(index, (value, encoded))
    params = {name: decode_words(value) for name, value in plain.items()}
    for name, pieces in extended.items():
        decoded = _join_rfc2231(pieces)
        if decoded is not None:
            # The RFC 2231 form is the precise one when a sender gives both.
            params[name] = decoded
    if "(" in params.get("charset", ""):  # charset=utf-8 (comment); a name may hold "("
        params["charset"] = without_comments(params["charset"])
    return head, params


def _split_semicolons(text: str) -> list[str]:
    """Split at ``;`` outside quoted strings (linear: it jumps from quote to quote)."""
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    start = index = 0
    while True:
        semi = text.find(";", index)
        quote = text.find('"', index)
        if semi < 0:
            break
        if quote < 0 or semi < quote:
            parts.append(text[start:semi])
            start = index = semi + 1
            continue
        # Skip the quoted string (backslash escapes included, unterminated allowed).
        match = _QUOTED_STRING.match(text, quote)
        index = match.end() if match else quote + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 1 and value[0] == '"':
        value = value[1:-1] if len(value) >= 2 and value.endswith('"') else value[1:]
        if "\\" in value:
            value = re.sub(r"\\(.)", r"\1", value)
    return value


def _join_rfc2231(pieces: dict[int, tuple[str, bool]]) -> str | None:
    """Join RFC 2231 continuation pieces in index order and decode them."""
    charset: str | None = None
    data = bytearray()
    for position, index in enumerate(sorted(pieces)):
        value, encoded = pieces[index]
        if position == 0 and encoded and value.count("'") >= 2:
            charset, _language, value = value.split("'", 2)
        if encoded:
            data += urllib.parse.unquote_to_bytes(value)
        else:
            data += value.encode("utf-8", "surrogateescape")
    if not data:
        return None
    return _charsets.decode(bytes(data), charset)[0]


# --- Message-IDs -----------------------------------------------------------------

_ANGLE_ID = re.compile(r"<([^<>]*)>")
_ID_JUNK = re.compile(r"[\s\"'<>\x00-\x1f\x7f\x80-\x9f]")


def message_id(raw: str) -> str | None:
    """Normalize a Message-ID header value into a bounded dedupe-safe id.

    The first ``<...>`` id is taken (the whole value when there are no brackets);
    whitespace, quotes, angle brackets and control characters are removed; ids
    longer than :data:`MAX_MESSAGE_ID_CHARS` keep a prefix plus a SHA-256, so the
    same long id always gives the same key (L2).

    Args:
        raw: The stored raw header value.

    Returns:
        The normalized id, or ``None`` when nothing is left.
    """
    text = prepare(raw)
    match = _ANGLE_ID.search(text)
    candidate = match.group(1) if match and match.group(1).strip() else text
    return _bound_id(_ID_JUNK.sub("", candidate))


def message_ids(raw: str) -> list[str]:
    """Every valid ``<id>`` in an In-Reply-To or References value, in order.

    A valid id is non-empty, holds an ``@`` and no whitespace; comments, phrases
    (``Your message of ...``) and junk around them are ignored (L6).

    Args:
        raw: The stored raw header value.

    Returns:
        The normalized ids, without repeats.
    """
    found: dict[str, None] = {}
    for match in _ANGLE_ID.finditer(prepare(raw)):
        candidate = match.group(1).strip()
        if "@" not in candidate or _ID_JUNK.search(candidate.replace('"', "")):
            continue
        bounded = _bound_id(candidate.replace('"', ""))
        if bounded:
            found.setdefault(bounded, None)
    return list(found)


def _bound_id(candidate: str) -> str | None:
    if not candidate:
        return None
    if len(candidate) <= MAX_MESSAGE_ID_CHARS:
        return candidate
    digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{candidate[: MAX_MESSAGE_ID_CHARS - len(digest) - 1]}~{digest}"


# --- Dates -----------------------------------------------------------------------


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# The shape nearly every Date header has ("Mon, 27 May 2002 10:28:31 +0200"), parsed
# directly; anything else goes to the stdlib's forgiving parser.
_RFC5322_DATE = re.compile(
    r"(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s+([+-])(\d{2})(\d{2})(?:\s*\([^()]*\))?"
)


# A time on a 12-hour clock ("4:44:14 PM"), which the stdlib's parser would read as a
# 24-hour time in the zone "PM".
_TWELVE_HOUR = re.compile(r"\b(\d{1,2})(:\d{2}(?::\d{2})?)\s*([AaPp])\.?[Mm]\.?(?!\w)")


def _to_24_hours(match: re.Match[str]) -> str:
    """The time :data:`_TWELVE_HOUR` matched, on a 24-hour clock ("16:44:14")."""
    hour = int(match.group(1))
    if not 1 <= hour <= 12:
        return match.group(0)
    hour %= 12
    if match.group(3) in "Pp":
        hour += 12
    return f"{hour:02d}{match.group(2)}"


@functools.lru_cache(maxsize=64)
def _zone(sign: str, hours: int, minutes: int) -> dt.tzinfo:
    if sign == "-" and hours == minutes == 0:
        return dt.UTC  # "-0000": the zone is unknown; RFC 5322 says treat it as UTC
    offset = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-offset if sign == "-" else offset)


def parse_date(raw: str) -> dt.datetime | None:
    """Parse a Date header into an aware datetime (no zone or ``-0000`` means UTC).

    Args:
        raw: The stored raw header value.

    Returns:
        The datetime, or ``None`` when the value is not a date.
    """
    text = one_line(prepare(raw), 200)
    if not text:
        return None
    match = _RFC5322_DATE.fullmatch(text)
    if match is not None:
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        month_number = _MONTHS.get(month.lower())
        if month_number is not None and int(zone_h) < 24 and int(zone_m) < 60:
            try:
                return dt.datetime(
                    int(year),
                    month_number,
                    int(day),
                    int(hour),
                    int(minute),
                    int(second or 0),
                    tzinfo=_zone(sign, int(zone_h), int(zone_m)),
                )
            except ValueError:
                return None
    text = _TWELVE_HOUR.sub(_to_24_hours, text)
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


# --- Reading a few headers without the parser -------------------------------------

#: How much of a message's head :func:`scan_head` reads.
SCAN_LIMIT = 64 * 1024
#: How much of each scanned value it keeps, so decoding it stays cheap.
_SCAN_VALUE_LIMIT = 2000
_SCAN_FIELD = re.compile(
    rb"^(message-id|from|sender|reply-to|return-path|subject)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def scan_head(data: bytes) -> dict[str, str]:
    """Read Message-ID, the sender's headers and Subject from the head of raw message bytes.

    The sender's headers are From, Sender, Reply-To and Return-Path.

    Used where the full parser must not or need not run: quarantined emails
    (too large, too deep) and messages carried inside this one. Reads at most
    :data:`SCAN_LIMIT` bytes and keeps the first occurrence of each field, as a
    raw value ready for :func:`decode_value`.

    Args:
        data: Raw message bytes (or their first part).

    Returns:
        Lower-cased field names mapped to their raw values.
    """
    head = data[:SCAN_LIMIT]
    if head.startswith((b"\n", b"\r\n")):
        return {}
    end = _BLANK_LINE.search(head)
    if end is not None:
        head = head[: end.start() + 1]
    found: dict[str, str] = {}
    for match in _SCAN_FIELD.finditer(head):
        name = match.group(1).decode("ascii").lower()
        if name not in found:
            value = match.group(2)[:_SCAN_VALUE_LIMIT]
            found[name] = value.decode("ascii", "surrogateescape").replace("\r", " ")
    return found
