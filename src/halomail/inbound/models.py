"""The shape of a parsed email: what every later stage reads.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import attrs

from halomail.inbound.html import sanitize_html

if TYPE_CHECKING:
    from halomail.inbound._deferred import Deferred

__all__ = [
    "Address",
    "Attachment",
    "Classification",
    "InboundEmail",
    "ParseLimits",
]


#: Most defects kept on one email; a hostile one could otherwise produce thousands.
MAX_DEFECTS = 50


@attrs.frozen
class ParseLimits:
    """Bounds past which an email is quarantined instead of parsed (design §4).

    Args:
        max_message_bytes: Largest raw message accepted (default 25 MB).
        max_depth: Deepest MIME nesting accepted.
        max_parts: Most MIME parts accepted.
        max_header_bytes: Largest header block accepted, top level or in any part.
    """

    max_message_bytes: int = 25 * 1024 * 1024
    max_depth: int = 32
    max_parts: int = 500
    max_header_bytes: int = 256 * 1024


@attrs.frozen
class Address:
    """One mailbox address, its addr-spec kept apart from the display name.

    Args:
        addr_spec: ``local@domain`` exactly as the sender wrote it (no angle brackets).
        display_name: The decoded display name, or ``""``.
    """

    addr_spec: str
    display_name: str = ""

    @property
    def normalized(self) -> str:
        """The addr-spec lower-cased, the form every comparison uses."""
        return self.addr_spec.lower()

    def __str__(self) -> str:
        return f"{self.display_name} <{self.addr_spec}>" if self.display_name else self.addr_spec


@attrs.frozen
class Attachment:
    """A file carried by the email (inline images and attached messages included).

    Args:
        filename: The decoded name for display, with control and bidi characters removed;
            ``""`` when the sender gave none.
        original_filename: The decoded name exactly as sent, kept as metadata only.
        storage_name: A generated name that is safe on every filesystem and keeps the
            real extension; storage uses this, never ``filename``.
        content_type: The lower-cased MIME type, e.g. ``image/png``.
        size: The decoded size in bytes.
        content_id: The ``Content-ID`` without angle brackets, or ``None``.
        inline: True for parts meant to be shown inside the body (``cid:`` images).
        payload: The decoded bytes. Never decompressed or interpreted.
        flags: Warnings about the file, e.g. ``"active-content"`` for SVG with script.
    """

    filename: str
    original_filename: str
    storage_name: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    payload: bytes = attrs.field(default=b"", repr=False)
    flags: tuple[str, ...] = ()


@attrs.frozen(eq=False)
class InboundEmail:
    """An email parsed from raw bytes, safe to store and show.

    Built only by :func:`halomail.parse_email`, which never raises: problems land in
    ``defects`` and, when the email must not be processed, in ``quarantine_reason``.

    Args:
        message_id: The Message-ID without angle brackets, normalized and bounded
            (at most 255 characters, no whitespace, quotes or control characters), or ``None``.
        sender: The first usable From address; failing that, Sender, Reply-To, then
            Return-Path (a defect names which); ``None`` when no header holds one.
        sender_unparseable: True when From, Sender, Reply-To or Return-Path exist but none
            holds a usable address (see ``find_sender`` in :mod:`halomail.inbound.parse`).
        reply_to: Reply-To addresses.
        to: To addresses.
        cc: Cc addresses.
        return_path: The Return-Path addr-spec; ``""`` for the null path ``<>``; ``None`` if absent.
        subject: The decoded subject, on one line, with no control characters.
        date: The Date header as an aware datetime, or ``None``.
        text: The whole plain-text body (derived from the HTML when there is no text part).
        html_source: The HTML body as sent (decoded, **not** sanitized), or ``None``.
            A multipart/mixed showing several parts has their HTML joined in order,
            a plain part escaped into a block that keeps its line breaks.
            Never show it: :attr:`html` is the safe version.
        new_text: The new part of a reply: ``text`` without quoted history and signature.
        attachments: Files, in the order they appear.
        in_reply_to: Message-IDs named by In-Reply-To (valid ones only).
        references: Message-IDs named by References (valid ones only).
        embedded_message_ids: Message-IDs of messages carried inside this one
            (``message/rfc822`` or ``text/rfc822-headers`` parts). They never drive
            threading; bounce handling uses them to find the returned message.
        headers: The top-level headers, decoded to one line each, in order, with our own
            internal headers (``X-Halomail-*``) removed.
        loop_markers: Values of our loop header (``X-Halomail-Loop``) as received, kept
            apart so that only classification, which knows our token, reads them.
        size: The raw size in bytes.
        sha256: Hex SHA-256 of the raw bytes.
        defects: Short names of what was wrong and repaired, e.g. ``"missing-boundary"``.
        quarantine_reason: Why the email must not be processed (``"too-large"``,
            ``"mime-too-deep"``, ``"too-many-parts"``, ``"headers-too-large"``), or ``None``.
        deferred: Set by :func:`halomail.parse_email` only: how ``text``, ``new_text`` and
            ``headers`` are worked out on first read when they were passed as ``None``.
    """

    message_id: str | None
    sender: Address | None
    subject: str
    _text: str | None = attrs.field(alias="text", repr=False)
    size: int
    sha256: str
    sender_unparseable: bool = False
    _reply_to: tuple[Address, ...] = attrs.field(default=(), alias="reply_to")
    _to: tuple[Address, ...] = attrs.field(default=(), alias="to")
    _cc: tuple[Address, ...] = attrs.field(default=(), alias="cc")
    _return_path: str | None = attrs.field(default=None, alias="return_path")
    _date: dt.datetime | None = attrs.field(default=None, alias="date")
    html_source: str | None = attrs.field(default=None, repr=False)
    _new_text: str | None = attrs.field(default="", alias="new_text", repr=False)
    attachments: tuple[Attachment, ...] = ()
    _in_reply_to: tuple[str, ...] = attrs.field(default=(), alias="in_reply_to")
    _references: tuple[str, ...] = attrs.field(default=(), alias="references")
    embedded_message_ids: tuple[str, ...] = ()
    _headers: tuple[tuple[str, str], ...] | None = attrs.field(
        default=(), alias="headers", repr=False
    )
    loop_markers: tuple[str, ...] = ()
    _defects: tuple[str, ...] = attrs.field(default=(), alias="defects")
    quarantine_reason: str | None = None
    _deferred: Deferred | None = attrs.field(default=None, alias="deferred", eq=False, repr=False)
    # What is worked out on first use and then kept: the sanitized HTML (sanitizing
    # costs about as much as parsing the whole email ten times, and processing never
    # needs it) and the headers indexed by lower-cased name (classification and rules
    # ask for a dozen headers per email).
    _lazy: dict[str, Any] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    # The address, threading and date fields of a parsed email are parsed on first read
    # (see halomail.inbound._envelope); the others were given as they are.

    @property
    def to(self) -> tuple[Address, ...]:
        """To addresses."""
        envelope = self._envelope()
        value: tuple[Address, ...] = self._to if envelope is None else envelope.to
        return value

    @property
    def cc(self) -> tuple[Address, ...]:
        """Cc addresses."""
        envelope = self._envelope()
        value: tuple[Address, ...] = self._cc if envelope is None else envelope.cc
        return value

    @property
    def reply_to(self) -> tuple[Address, ...]:
        """Reply-To addresses."""
        envelope = self._envelope()
        value: tuple[Address, ...] = self._reply_to if envelope is None else envelope.reply_to
        return value

    @property
    def return_path(self) -> str | None:
        """The Return-Path addr-spec; ``""`` for the null path ``<>``; ``None`` if absent."""
        envelope = self._envelope()
        value: str | None = self._return_path if envelope is None else envelope.return_path
        return value

    @property
    def date(self) -> dt.datetime | None:
        """The Date header as an aware datetime, or ``None``."""
        envelope = self._envelope()
        value: dt.datetime | None = self._date if envelope is None else envelope.date
        return value

    @property
    def in_reply_to(self) -> tuple[str, ...]:
        """Message-IDs named by In-Reply-To (valid ones only)."""
        envelope = self._envelope()
        value: tuple[str, ...] = self._in_reply_to if envelope is None else envelope.in_reply_to
        return value

    @property
    def references(self) -> tuple[str, ...]:
        """Message-IDs named by References (valid ones only)."""
        envelope = self._envelope()
        value: tuple[str, ...] = self._references if envelope is None else envelope.references
        return value

    def _envelope(self) -> Any:
        """The parsed :class:`~halomail.inbound._envelope.Envelope`, or ``None``."""
        deferred = self._deferred
        if deferred is None or deferred.envelope is None:
            return None
        return deferred.envelope.parsed()

    @property
    def text(self) -> str:
        """The whole plain-text body (derived from the HTML when there is no text part)."""
        if self._text is not None:
            return self._text
        return self._deferred.text() if self._deferred is not None else ""

    @property
    def new_text(self) -> str:
        """The new part of a reply: ``text`` without quoted history and signature."""
        if self._new_text is not None:
            return self._new_text
        return self._deferred.new_text() if self._deferred is not None else ""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The top-level headers, decoded to one line each, in order (``X-Halomail-*`` left out)."""
        if self._headers is not None:
            return self._headers
        return self._deferred.headers() if self._deferred is not None else ()

    @property
    def defects(self) -> tuple[str, ...]:
        """Short names of what was wrong and repaired, e.g. ``"missing-boundary"``.

        Complete whenever read: the deferred fields are worked out first, since a step
        of theirs that fails leaves a defect (``html-to-text-failed``).
        """
        if self._deferred is None:
            return self._defects
        return self._deferred.defects(self._defects, MAX_DEFECTS)

    @property
    def html(self) -> str | None:
        """The HTML body sanitized for display (nh3), or ``None`` when there is none.

        Sanitized on first access, then kept: the ingest path never pays for it.
        See :func:`halomail.inbound.html.sanitize_html` for what is removed.
        """
        if self.html_source is None:
            return None
        if "html" not in self._lazy:
            self._lazy["html"] = sanitize_html(self.html_source)
        html: str = self._lazy["html"]
        return html

    def header(self, name: str) -> str | None:
        """The first top-level header called ``name`` (case-insensitive), or ``None``."""
        values = self._header_values(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """Every top-level header called ``name`` (case-insensitive), in order."""
        return list(self._header_values(name.lower()))

    def _header_names(self) -> AbstractSet[str]:
        """The lower-cased names of the top-level headers the email carries: the cheap
        way for classification to ask whether a header is there (nothing is decoded)."""
        if self._headers is None and self._deferred is not None:
            return self._deferred.header_names()
        return self._headers_by_name().keys()

    def _header_values(self, lower: str) -> list[str]:
        if self._headers is None and self._deferred is not None:
            # Decodes only the headers asked for: processing reads a dozen of thirty.
            return self._deferred.header_values(lower)
        return self._headers_by_name().get(lower, [])

    def _headers_by_name(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] | None = self._lazy.get("headers")
        if index is None:
            index = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), []).append(value)
            self._lazy["headers"] = index
        return index

    def __repr__(self) -> str:
        # Every shown field as read from outside: a deferred one is worked out, never
        # shown as the empty value the parser left in its place.
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _SHOWN)
        return f"InboundEmail({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, InboundEmail)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def _compared(self) -> tuple[Any, ...]:
        """Every compared field's value as read from outside, deferred ones worked out."""
        return tuple(getattr(self, name) for name in _COMPARED)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """In-Reply-To then References, without repeats: the ids threading looks up."""
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        return tuple(seen)


#: The names compared, as read from outside (``text``, not the stored ``_text``).
_COMPARED = tuple(field.name.lstrip("_") for field in attrs.fields(InboundEmail) if field.eq)
#: The names ``repr`` shows, as read from outside.
_SHOWN = tuple(field.name.lstrip("_") for field in attrs.fields(InboundEmail) if field.repr)


@attrs.frozen
class Classification:
    """What kind of email this is, as far as loops and replies are concerned.

    Args:
        auto_reply: An automatic reply (RFC 3834 ``Auto-Submitted`` other than ``no``,
            ``X-Autoreply``, out-of-office shapes).
        bounce: A delivery status notification or another bounce: an abuse feedback
            report (ARF) or a mailing list manager's error reply counts too.
        bounced_message_id: For a bounce, the Message-ID of the returned message, if found.
        bounce_kind: For a bounce, what kind of report it is: ``"delivery-report"``,
            ``"feedback-report"`` or ``"list-error"`` (:class:`halomail.inbound.dsn.ReportKind`);
            ``""`` otherwise.
        bulk: Bulk or list mail (``Precedence: bulk/junk/list``, ``List-*``).
        own_message: Our own mail fetched back (our Message-ID token or loop header).
        no_reply_sender: The sender must never be answered (``<>`` return path,
            ``mailer-daemon``, ``postmaster``, ``noreply`` …).
        reasons: Human-readable reasons behind each flag, for logs and ``simulate``.
        spam: The spam filter upstream called it spam
            (:func:`~halomail.inbound.classify.spam_verdict`); never answered, whatever
            ``[processing] spam`` makes of it.
    """

    auto_reply: bool = False
    bounce: bool = False
    bounced_message_id: str | None = None
    bounce_kind: str = ""
    bulk: bool = False
    own_message: bool = False
    no_reply_sender: bool = False
    reasons: tuple[str, ...] = ()
    spam: bool = False

    @property
    def may_acknowledge(self) -> bool:
        """True when an automatic acknowledgement may be sent to the sender."""
        return not (
            self.auto_reply
            or self.bounce
            or self.bulk
            or self.spam
            or self.own_message
            or self.no_reply_sender
        )

    @property
    def flags(self) -> tuple[str, ...]:
        """The names of the flags set, as rules name them (``auto-reply``, ``spam`` …)."""
        named = (
            ("auto-reply", self.auto_reply),
            ("bounce", self.bounce),
            ("bulk", self.bulk),
            ("spam", self.spam),
            ("own-message", self.own_message),
            ("no-reply-sender", self.no_reply_sender),
        )
        return tuple(name for name, is_set in named if is_set)
