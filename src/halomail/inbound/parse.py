"""Raw email bytes to :class:`~halomail.inbound.models.InboundEmail`, bounded and never raising.

The steps, each linear in the input:

1. the cheap limits, on bytes, before any parsing: the size (``too-large``) and the
   top-level header block (``headers-too-large``); a UTF-8 BOM before it is skipped,
   bare CRs in it become spaces so they cannot start a smuggled header (M12), and a
   malformed line inside it is dropped when header lines follow (a bounded look-ahead);
2. our MIME parser (:mod:`._mime`), which builds the stdlib's ``compat32`` tree but finds
   boundaries in the bytes and keeps bodies as views, bounded from inside: a field over
   its own caps is truncated (``header-truncated:<name>``), while the header block
   (``headers-too-large``), nesting (``mime-too-deep``) and part count
   (``too-many-parts``) stop it the moment they are crossed;
3. our own decoding of what it found: headers (RFC 2047, 8-bit, one line each),
   addresses (strict, CVE-2023-27043-proof), the sender as a mail client finds it
   (:func:`find_sender`), Message-IDs, the date, the body (every inline text part of a
   multipart/mixed in order, one alternative of each multipart/alternative; charset alias
   table, lenient transfer decoding) and the attachments (safe names).

Whatever goes wrong is recorded in ``defects``; a crossed limit sets
``quarantine_reason``; and a last-resort handler turns any exception into a result
quarantined as ``unparseable``, so one hostile email never stops a mailbox.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import html as _html
import logging
import operator
import re
import urllib.parse
from collections.abc import Iterable
from itertools import compress, groupby

from halomail.inbound import _addresses, _charsets, _headers, _mime
from halomail.inbound._deferred import Deferred, Segment, has_text
from halomail.inbound._envelope import Envelope
from halomail.inbound._flowed import unflow
from halomail.inbound.attachments import make_attachment
from halomail.inbound.defects import (
    BOM_BEFORE_HEADERS,
    HEADER_TRUNCATED_PREFIX,
    HTML_OVER_BUDGET,
    MALFORMED_HEADER_LINE,
    SENDER_FROM_REPLY_TO,
    SENDER_FROM_RETURN_PATH,
    SENDER_FROM_SENDER,
    SENDER_READ_LENIENTLY,
    UNPARSEABLE_SENDER,
)
from halomail.inbound.html import html_over_budget
from halomail.inbound.models import MAX_DEFECTS, Address, Attachment, InboundEmail, ParseLimits

__all__ = ["SENDER_FALLBACKS", "find_sender", "parse_email"]

log = logging.getLogger(__name__)

_DEFAULT_LIMITS = ParseLimits()
#: Headers with this prefix are ours; a received copy is spoofed and never stored (L8).
INTERNAL_HEADER_PREFIX = "x-halomail-"
#: Our loop header; its values go to ``loop_markers`` for classification only.
LOOP_HEADER = "x-halomail-loop"

_PART_FIELDS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
)
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "message/news"})
_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_CID_REFERENCE = re.compile(r"""cid:([^\s"'<>)]+)""")  # in lower-cased HTML
_ANGLE = re.compile(r"<([^<>]*)>")
_CONTENT_ID_JUNK = re.compile(r"[\s<>\"\x00-\x1f\x7f]")
_FILENAME_JUNK = re.compile(r"[\\/:*?\"<>|\x00-\x1f\x7f]+")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_DEFECT_NAMES = {"NoBoundaryInMultipartDefect": "missing-boundary"}
_UTF8_BOM = b"\xef\xbb\xbf"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_VALUE = operator.itemgetter(1)


def parse_email(raw: bytes, *, limits: ParseLimits = _DEFAULT_LIMITS) -> InboundEmail:
    """Parse raw email bytes into an :class:`~halomail.inbound.models.InboundEmail`.

    Never raises. Problems that were repaired are listed in ``defects``; an email
    that crosses a limit, or that could not be parsed at all, comes back with a
    ``quarantine_reason`` (``too-large``, ``headers-too-large``, ``mime-too-deep``,
    ``too-many-parts``, ``unparseable``) and whatever was cheap to read: Message-ID,
    sender, subject, size and SHA-256.

    Args:
        raw: The message exactly as fetched (``bytearray``/``memoryview`` are copied
            to bytes; anything else is ``unparseable``).
        limits: The bounds past which the email is quarantined instead of parsed.

    Returns:
        The parsed email.

    .. versionadded:: 0.1.0
    """
    try:
        return _parse(raw, limits)
    except Exception as exc:  # the contract: never raise, quarantine instead
        log.exception("could not parse a message; quarantined as unparseable")
        return _unparseable(raw, exc)


def _parse(raw: object, limits: ParseLimits) -> InboundEmail:
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        log.warning("parse_email needs bytes, got %s; quarantined", type(raw).__name__)
        return InboundEmail(
            message_id=None,
            sender=None,
            subject="",
            text="",
            size=0,
            sha256=_EMPTY_SHA256,
            defects=(f"not-bytes:{type(raw).__name__}",),
            quarantine_reason="unparseable",
        )
    size = len(raw)
    sha256 = hashlib.sha256(raw).hexdigest()
    defects: list[str] = []
    if size > limits.max_message_bytes:
        return _quarantined(raw, size, sha256, "too-large", defects)
    data = raw
    if b"\n" not in data and b"\r" in data:
        # Old Mac line endings: with no LF anywhere, CR is the line terminator.
        data = data.replace(b"\r", b"\n")
        defects.append("cr-line-endings")
    if data.startswith(_UTF8_BOM):
        # Some mailers and exports write a byte-order mark before the first header.
        data = data[len(_UTF8_BOM) :]
        defects.append(BOM_BEFORE_HEADERS)
    head_end = _mime.find_head_end(data, limits.max_header_bytes)
    if head_end > limits.max_header_bytes:
        return _quarantined(data, size, sha256, "headers-too-large", defects)
    data, repaired = _mime.repair_head(data, head_end)
    if repaired:
        defects.append("bare-cr-in-header")
    data, dropped = _mime.drop_malformed_lines(data, limits.max_header_bytes)
    if dropped:
        defects.append(MALFORMED_HEADER_LINE)
    try:
        root = _mime.parse(data, limits)
    except _mime.LimitExceeded as exc:
        return _quarantined(data, size, sha256, exc.reason, defects)
    return _Builder(root, defects).build(size, sha256)


class _File:
    """An attachment found by the walk, before names and flags are worked out."""

    __slots__ = ("content_id", "content_type", "disposition", "name", "payload")

    def __init__(
        self, name: str, content_type: str, payload: bytes, content_id: str | None, disposition: str
    ) -> None:
        self.name = name
        self.content_type = content_type
        self.payload = payload
        self.content_id = content_id
        self.disposition = disposition


class _Builder:
    """Turns one parsed tree into an InboundEmail; each part is visited once."""

    def __init__(self, root: _mime.BoundedMessage, defects: list[str]) -> None:
        self.root = root
        self.defects = defects
        self.html: str | None = None
        # Inline text parts in document order, each with the id() of its
        # multipart/alternative ancestor (the outermost), if any: one alternative of a
        # group is the body. An id, not the part, so the deferred text does not keep the
        # tree (and the raw bytes its bodies are views of) alive; ids are unique while
        # the tree lives, which is all the grouping needs.
        self.segments: list[Segment] = []
        # The first text part that carries a file name: the body when there is no other.
        self.named_text: tuple[str, bytes, str | None] | None = None
        self.files: list[_File] = []
        self.embedded: dict[str, None] = {}

    def build(self, size: int, sha256: str) -> InboundEmail:
        top = _TopHeaders(self.root, self.defects)
        envelope_defects_at = len(self.defects)
        self._walk()
        if not any(has_text(text) for _group, _kind, text in self.segments):
            self._use_named_text()
        self.html = _html_view(self.segments)
        # The HTML is kept as sent; InboundEmail.html sanitizes it when asked for.
        if self.html is not None and html_over_budget(self.html):
            self.defects.append(HTML_OVER_BUDGET)  # its text and sanitized form: tags stripped
        return InboundEmail(
            message_id=top.message_id,
            sender=top.sender,
            subject=top.subject,
            text=None,  # these three are worked out on first read (see _deferred)
            new_text=None,
            headers=None,
            deferred=Deferred.of(
                self.segments, top.raw_headers, top.envelope, envelope_defects_at, top.names
            ),
            size=size,
            sha256=sha256,
            sender_unparseable=top.sender_unparseable,
            html_source=self.html.replace("\x00", "") if self.html is not None else None,
            attachments=self._attachments(),
            embedded_message_ids=tuple(self.embedded),
            loop_markers=top.loop_markers,
            defects=tuple(dict.fromkeys(self.defects)),  # cut to MAX_DEFECTS when read
        )

    def _walk(self) -> None:
        # Iterative and in document order: depth is already bounded by the parser,
        # but no recursion here means no RecursionError whatever the limits are.
        stack: list[tuple[_mime.BoundedMessage, _mime.BoundedMessage | None]] = [(self.root, None)]
        while stack:
            part, group = stack.pop()
            self.defects.extend(_defect_name(defect) for defect in part.defects)
            payload = part._payload
            if isinstance(payload, list):
                if group is None and part.get_content_type() == "multipart/alternative":
                    group = part
                children = [p for p in reversed(payload) if isinstance(p, _mime.BoundedMessage)]
                stack.extend((child, group) for child in children)
                continue
            try:
                self._leaf(part, group)
            except Exception as exc:  # one broken part must not cost the email
                log.warning("skipped a MIME part that could not be read", exc_info=True)
                self.defects.append(f"part-error:{type(exc).__name__}")  # see inbound.defects

    def _leaf(self, part: _mime.BoundedMessage, group: _mime.BoundedMessage | None) -> None:
        fields = _mime.first_headers(part, _PART_FIELDS)
        content_type, params = _content_type(part, fields.get("content-type"))
        disposition, disposition_params = _headers.parse_params(fields.get("content-disposition"))
        name = disposition_params.get("filename") or params.get("name") or ""
        encoding = fields.get("content-transfer-encoding")
        if content_type.startswith("multipart/"):
            # Declared multipart, but the parser found no parts: no boundary (M1),
            # or a boundary that never appears (M4). The body is all there is.
            content_type = "text/plain"
        is_file = disposition == "attachment" or bool(name.strip())
        if content_type in _BODY_TYPES and not is_file:
            text = self._read_text(part, encoding, params.get("charset"))
            if content_type == "text/plain" and params.get("format", "").lower() == "flowed":
                text = unflow(text, delsp=params.get("delsp", "").lower() == "yes")
            group_id = id(group) if group is not None else None
            self.segments.append((group_id, content_type, text))
            return
        payload = _mime.decode_transfer(_mime.raw_payload(part), encoding, self.defects)
        if content_type in _BODY_TYPES and disposition != "attachment" and self.named_text is None:
            self.named_text = (content_type, payload, params.get("charset"))
        if content_type in _MESSAGE_TYPES or content_type in _HEADERS_TYPES:
            # Only the carried message's Message-ID (for bounce handling) and subject
            # (for a file name) are read; none of its headers reach ours (A7).
            inner = _headers.scan_head(payload.lstrip(b"\r\n"))
            if "message-id" in inner:
                embedded = _headers.message_id(inner["message-id"])
                if embedded:
                    self.embedded.setdefault(embedded, None)
            if not name and content_type in _MESSAGE_TYPES:
                name = _eml_name(_headers.decode_value(inner.get("subject", "")))
        content_id = _content_id(fields["content-id"]) if "content-id" in fields else None
        self.files.append(_File(name, content_type, payload, content_id, disposition))

    def _use_named_text(self) -> None:
        """Make the first text part with a file name the body (it stays an attachment).

        A lone ``text/plain; name="notes.txt"`` is what the sender wrote: the body
        would otherwise be empty.
        """
        if self.named_text is None:
            return
        content_type, payload, charset = self.named_text
        text = self._decode_text(payload, charset)
        self.segments.append((None, content_type, text))

    def _read_text(
        self, part: _mime.BoundedMessage, encoding: str | None, charset: str | None
    ) -> str:
        """An inline text part's text, its transfer encoding and charset undone.

        A body with no transfer encoding is decoded straight from its view of the raw
        message; otherwise this frame holds the only reference to the decoded bytes and
        drops it once the text exists. Either way a large body peaks at twice its size
        (the text and its copy with normalized line breaks), not three times.
        """
        payload = _mime.decode_transfer_view(_mime.raw_payload(part), encoding, self.defects)
        text, unknown = _charsets.decode(payload, charset)
        del payload
        return self._clean_text(text, unknown)

    def _decode_text(self, payload: bytes, charset: str | None) -> str:
        text, unknown = _charsets.decode(payload, charset)
        return self._clean_text(text, unknown)

    def _clean_text(self, text: str, unknown_charset: bool) -> str:
        """``text`` without NUL and with LF line breaks; one copy alive at a time."""
        if unknown_charset:
            self.defects.append("unknown-charset")
        if "\x00" in text:
            text = text.replace("\x00", "")
            self.defects.append("nul-in-body")
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        if "\r" in text:
            text = text.replace("\r", "\n")
        return text

    def _attachments(self) -> tuple[Attachment, ...]:
        referenced: set[str] | None = None  # read from the HTML only when a file needs it
        attachments = []
        for index, file in enumerate(self.files, start=1):
            cid = file.content_id
            inline = cid is not None and file.disposition == "inline"
            if cid is not None and not inline and file.content_type.startswith("image/"):
                if referenced is None:
                    referenced = self._cid_references()
                inline = cid.lower() in referenced
            attachments.append(
                make_attachment(
                    index=index,
                    original_filename=file.name,
                    content_type=file.content_type,
                    payload=file.payload,
                    content_id=cid,
                    inline=inline,
                )
            )
        return tuple(attachments)

    def _cid_references(self) -> set[str]:
        """The content ids the HTML shows as images (its ``cid:`` URLs), lower-cased."""
        if self.html is None:
            return set()
        # Searched in the lower-cased text: a case-insensitive pattern cannot skip ahead
        # to its literal prefix, which made this scan cost 0.25 ms on a 40 KB email.
        lowered = self.html.lower()
        return {urllib.parse.unquote(m.group(1)).lower() for m in _CID_REFERENCE.finditer(lowered)}


class _TopHeaders:
    """The top-level headers and the fields read from them; other values stay raw.

    Only the subject and the fields the model holds are decoded here: the rest are
    decoded when they are read (:class:`~halomail.inbound._deferred.Deferred`).
    """

    def __init__(self, root: _mime.BoundedMessage, defects: list[str]) -> None:
        headers = tuple(root._headers)
        lower = root.lower_names()
        if any(map(_IS_INTERNAL, lower)):
            # Our own headers (X-Halomail-*) never reach the email's headers; they are rare.
            wanted = _wanted_fields(headers)
            headers = tuple(
                h for h in headers if not h[0].lower().startswith(INTERNAL_HEADER_PREFIX)
            )
            self.names: tuple[list[str], dict[str, int]] | None = None
        else:
            wanted = _wanted_fields_indexed(root, lower)
            self.names = (lower, root.header_index())
        first = {name: raws[0] for name, raws in wanted.items()}
        self.raw_headers = headers
        self.loop_markers = tuple(_headers.decode_value(raw) for raw in wanted.get(LOOP_HEADER, ()))
        subject = first.get("subject")
        self.subject = _headers.decode_value(subject) if subject is not None else ""

        self.sender, self.sender_unparseable = find_sender(first, defects)
        self.message_id: str | None = None
        if "message-id" in first:
            self.message_id = _headers.message_id(first["message-id"])
        # To, Cc, Reply-To, Return-Path, the threading ids and the date wait for their
        # first read, and so do their defects (placed where these are listed).
        self.envelope = Envelope(wanted, "message-id" in first and self.message_id is None)


_WANTED_FIELDS = frozenset(
    {
        "subject",
        "from",
        "sender",
        "message-id",
        "date",
        "return-path",
        "to",
        "cc",
        "reply-to",
        "in-reply-to",
        "references",
    }
)
_IS_INTERNAL = operator.methodcaller("startswith", INTERNAL_HEADER_PREFIX)


def _wanted_fields(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The raw values of the wanted and internal fields, by lower-case name, in order."""
    wanted: dict[str, list[str]] = {}
    for name, raw in headers:
        lower = name.lower()
        if lower in _WANTED_FIELDS or lower.startswith(INTERNAL_HEADER_PREFIX):
            wanted.setdefault(lower, []).append(raw)
    return wanted


def _wanted_fields_indexed(root: _mime.BoundedMessage, lower: list[str]) -> dict[str, list[str]]:
    """:func:`_wanted_fields` without a Python loop over every field (real mail has dozens).

    Each wanted name is found by the part's name index; the rare name that occurs more
    than once has its values picked out in C.
    """
    index = root.header_index()
    headers = root._headers
    wanted: dict[str, list[str]] = {}
    for name in _WANTED_FIELDS & index.keys():
        if lower.count(name) == 1:
            wanted[name] = [headers[index[name]][1]]
        else:
            wanted[name] = list(compress(map(_VALUE, headers), map(name.__eq__, lower)))
    return wanted


#: Where the sender is looked for once From holds no usable address, in order, with the
#: defect that says it came from there. A mail client shows the same address.
SENDER_FALLBACKS = (
    ("sender", SENDER_FROM_SENDER),
    ("reply-to", SENDER_FROM_REPLY_TO),
    ("return-path", SENDER_FROM_RETURN_PATH),
)


def find_sender(first: dict[str, str], defects: list[str]) -> tuple[Address | None, bool]:
    """The sender, found as a mail client finds it, and whether none could be found.

    From first, strictly, then leniently (an unquoted name, two addresses without a
    comma, an address in an encoded word: ``sender-read-leniently``); then Sender,
    Reply-To and Return-Path (never the null path ``<>``), with a defect naming the
    header used. The raw From stays in the headers whatever happens, so
    ``From: MAILER-DAEMON <>`` is still recognisable as a bounce.

    Args:
        first: The first raw value of each wanted top-level header, by lower-case name.
        defects: Where to record how the sender was found.

    Returns:
        The sender (or ``None``) and ``True`` when headers naming a sender exist but
        none holds a usable address (``unparseable-sender``).
    """
    if "from" in first:
        senders, _rejected = _addresses.parse_addresses(first["from"])
        if senders:
            return senders[0], False
        lenient = _addresses.lenient_address(first["from"])
        if lenient is not None:
            defects.append(SENDER_READ_LENIENTLY)
            return lenient, False
    for name, defect in SENDER_FALLBACKS:
        if name not in first:
            continue
        if name == "return-path":
            path = _addresses.parse_path(first[name])
            found = Address(path) if path else None
        else:
            found = _first_address(first[name])
        if found is not None:
            defects.append(defect)
            return found, False
    if any(name in first for name in ("from", *(name for name, _ in SENDER_FALLBACKS))):
        defects.append(UNPARSEABLE_SENDER)
        return None, True
    return None, False


def _first_address(raw: str) -> Address | None:
    addresses, _rejected = _addresses.parse_addresses(raw)
    return addresses[0] if addresses else _addresses.lenient_address(raw)


def _html_view(segments: list[Segment]) -> str | None:
    """The HTML that shows the whole body, or ``None`` when no inline part is HTML.

    Usually one part's HTML: that of the email, or of its multipart/alternative. When a
    multipart/mixed shows several parts one after another (Apple Mail's HTML, image,
    HTML; an antivirus banner in HTML above a plain-text message), their HTML is joined
    in order, a plain part escaped into a block that keeps its line breaks, as the text
    joins them (see :func:`halomail.inbound._deferred._join`).
    """
    if not any(kind == "text/html" for _group, kind, _text in segments):
        return None  # most mail: no HTML part, nothing to join
    pieces: list[tuple[bool, str]] = []  # (is HTML, content), in document order
    for group, block in groupby(segments, key=operator.itemgetter(0)):
        found = [(kind == "text/html", text) for _group, kind, text in block]
        if group is not None and any(is_html for is_html, _text in found):
            found = [piece for piece in found if piece[0]]  # of an alternative, its HTML
        pieces.extend(piece for piece in found if piece[0] or has_text(piece[1]))
    if len(pieces) == 1:
        return pieces[0][1]
    return "\n".join(text if is_html else _plain_as_html(text) for is_html, text in pieces)


def _plain_as_html(text: str) -> str:
    """A plain-text part as HTML that shows it as written."""
    shown = _html.escape(text.strip("\n"))
    return f'<div style="white-space: pre-wrap">{shown}</div>'


def _content_type(part: _mime.BoundedMessage, raw: str | None) -> tuple[str, dict[str, str]]:
    """The lower-cased content type and parameters, decided as the stdlib parser did."""
    if raw is None:
        return part.get_default_type(), {}
    content_type, params = _headers.parse_params(raw)
    # RFC 2045 §5.2, as email.message.Message.get_content_type: invalid means text/plain.
    if content_type.count("/") != 1:
        return "text/plain", params
    return content_type, params


def _content_id(raw: str) -> str | None:
    text = _headers.prepare(raw).strip()
    match = _ANGLE.search(text)
    if match is not None:
        text = match.group(1)
    cleaned = _CONTENT_ID_JUNK.sub("", text)[:255]
    return cleaned or None


def _eml_name(subject: str) -> str:
    """A file name for an attached email, from its subject."""
    stem = " ".join(_FILENAME_JUNK.sub(" ", subject).split()).strip(" .")[:100].strip()
    return f"{stem or 'message'}.eml"


def _defect_name(defect: object) -> str:
    """``StartBoundaryNotFoundDefect`` → ``start-boundary-not-found``."""
    if isinstance(defect, _mime.HeaderTruncatedDefect):
        return f"{HEADER_TRUNCATED_PREFIX}{defect.name}"
    name = type(defect).__name__.lstrip("_")
    if name in _DEFECT_NAMES:
        return _DEFECT_NAMES[name]
    return _CAMEL.sub("-", name.removesuffix("Defect")).lower()


def _unique(defects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(defects))[:MAX_DEFECTS]


def _identity(data: bytes) -> tuple[str | None, Address | None, bool, str]:
    """Message-ID, sender, sender-unparseable and subject, read cheaply from the head."""
    fields = _headers.scan_head(data)
    message_id = _headers.message_id(fields["message-id"]) if "message-id" in fields else None
    sender, unparseable = find_sender(fields, [])
    subject = _headers.decode_value(fields.get("subject", ""))
    return message_id, sender, unparseable, subject


def _quarantined(
    data: bytes, size: int, sha256: str, reason: str, defects: list[str]
) -> InboundEmail:
    log.debug("message of %d bytes quarantined: %s", size, reason)
    message_id, sender, unparseable, subject = _identity(data)
    return InboundEmail(
        message_id=message_id,
        sender=sender,
        subject=subject,
        text="",
        size=size,
        sha256=sha256,
        sender_unparseable=unparseable,
        defects=_unique(defects),
        quarantine_reason=reason,
    )


def _unparseable(raw: object, exc: Exception) -> InboundEmail:
    """The last-resort result: as much identity as can still be read, never raising."""
    data = bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else b""
    defects = (f"exception:{type(exc).__name__}",)  # see inbound.defects
    try:
        message_id, sender, unparseable, subject = _identity(data)
    except Exception:  # noqa: BLE001 - the head itself may be what broke the parse
        message_id, sender, unparseable, subject = None, None, False, ""
    return InboundEmail(
        message_id=message_id,
        sender=sender,
        subject=subject,
        text="",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        sender_unparseable=unparseable,
        defects=defects,
        quarantine_reason="unparseable",
    )
