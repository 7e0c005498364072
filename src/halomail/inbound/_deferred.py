"""The parts of a parsed email worked out on first use: body text, new text, headers.

:func:`~halomail.inbound.parse.parse_email` finds everything in one pass, but three
results cost more than the parse itself and are often never read: the text of an
HTML-only body (HTML to text), the new part of a reply (quote stripping) and the
decoded value of every top-level header (processing asks for a dozen of the thirty a
real email carries). :class:`Deferred` keeps what they are computed from and computes
each on its first read, once; :class:`~halomail.inbound.models.InboundEmail` reads
through it, so the email still looks like a plain immutable value from the outside.

A failure of HTML to text or quote stripping costs only its own field, as before, and
its defect (``html-to-text-failed``, ``strip-reply-failed``) joins the email's defects:
reading ``InboundEmail.defects`` works out both fields first, so the list is the same
whenever it is read.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol, TypeVar

import attrs

from halomail.inbound import _headers
from halomail.inbound.html import html_to_text
from halomail.inbound.reply import strip_reply

__all__ = ["Deferred", "Segment", "has_text"]

log = logging.getLogger(__name__)

#: One inline text part: the index of its multipart/alternative group (``None`` when it
#: is in none), its content type (``text/plain`` or ``text/html``) and its decoded text.
Segment = tuple[int | None, str, str]
_T = TypeVar("_T")
_VALUE = operator.itemgetter(1)


class LazyFields(Protocol):
    """What :class:`Deferred` holds of the fields parsed on first read
    (:class:`halomail.inbound._envelope.Envelope`; not imported: it builds models)."""

    def parsed(self) -> object:
        """Itself, every field parsed."""

    def defects(self) -> list[str]:
        """What parsing the fields found wrong, in order."""


@attrs.define(eq=False, repr=False)
class Deferred:
    """What an email's lazy fields are computed from, and each result once computed.

    Built by :meth:`of`. An attrs class without fields set at construction: what it holds
    is internal (raw header values may still hold NUL), and the email's own fields and
    properties are what callers and tests inspect.
    """

    _segments: Sequence[Segment] = attrs.field(init=False, factory=tuple)
    _raw: Sequence[tuple[str, str]] = attrs.field(init=False, factory=tuple)
    _text: str | None = attrs.field(init=False, default=None)
    _new_text: str | None = attrs.field(init=False, default=None)
    _headers: tuple[tuple[str, str], ...] | None = attrs.field(init=False, default=None)
    # The raw headers' names lower-cased, in order, and where each name is first found;
    # built on the first look-up unless the parser gave them. Then the decoded values.
    _lower: Sequence[str] | None = attrs.field(init=False, default=None)
    _first: Mapping[str, int] = attrs.field(init=False, factory=dict)
    _decoded: dict[str, list[str]] = attrs.field(init=False, factory=dict)
    _failures: list[str] = attrs.field(init=False, factory=list)
    #: The address, threading and date fields, parsed on first read (``None``: given).
    envelope: LazyFields | None = attrs.field(init=False, default=None)
    # Where the envelope's defects go among those parsing found (see defects()).
    _defects_at: int = attrs.field(init=False, default=0)
    _all_defects: tuple[str, ...] | None = attrs.field(init=False, default=None)

    @classmethod
    def of(
        cls,
        segments: Sequence[Segment],
        raw_headers: Sequence[tuple[str, str]],
        envelope: LazyFields | None = None,
        defects_at: int = 0,
        names: tuple[Sequence[str], Mapping[str, int]] | None = None,
    ) -> Deferred:
        """The deferred fields of one parsed email.

        Args:
            segments: The inline text parts, in document order.
            raw_headers: The top-level headers as stored by the parser (name, raw
                value), our internal ``X-Halomail-*`` headers already left out.
            envelope: The address, threading and date fields, parsed on first read.
            defects_at: Where the envelope's defects go among the email's own.
            names: ``raw_headers``' names lower-cased and where each is first found,
                when the parser has them (built in C); else built on first look-up.

        Returns:
            Nothing computed yet.
        """
        deferred = cls()
        deferred._segments = segments
        deferred._raw = raw_headers
        deferred.envelope = envelope
        deferred._defects_at = defects_at
        if names is not None:
            deferred._lower, deferred._first = names
        return deferred

    def defects(self, found: tuple[str, ...], limit: int) -> tuple[str, ...]:
        """The email's defects: ``found`` by parsing, the envelope's in their place, then
        the deferred steps' failures; without repeats, at most ``limit``."""
        if self._all_defects is None:
            failures = self.failures()
            at = self._defects_at
            envelope = self.envelope.defects() if self.envelope is not None else ()
            every = (*found[:at], *envelope, *found[at:], *failures)
            self._all_defects = tuple(dict.fromkeys(every))[:limit]
        return self._all_defects

    def text(self) -> str:
        """The body text: each inline text part in order, one alternative per group."""
        if self._text is None:
            self._text = _join(self._segments, self._failures).replace("\x00", "")
        return self._text

    def new_text(self) -> str:
        """The new part of a reply (the text when stripping fails)."""
        if self._new_text is None:
            text = self.text()
            stripped = _guarded(strip_reply, text, text, "strip-reply-failed", self._failures)
            self._new_text = stripped.replace("\x00", "")
        return self._new_text

    def failures(self) -> tuple[str, ...]:
        """The defects of the deferred steps, after working out both fields."""
        self.new_text()
        return tuple(self._failures)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every top-level header, decoded to one line, in order."""
        if self._headers is None:
            self._headers = tuple((name, _headers.decode_value(raw)) for name, raw in self._raw)
        return self._headers

    def header_names(self) -> AbstractSet[str]:
        """The lower-cased names of the top-level headers."""
        self._names()
        return self._first.keys()

    def _names(self) -> Sequence[str]:
        """The raw headers' names, lower-cased, in order (and ``_first`` built)."""
        names = self._lower
        if names is None:
            names = self._lower = [name.lower() for name, _ in self._raw]
            self._first = {name: at for at, name in reversed(list(enumerate(names)))}
        return names

    def header_values(self, lower: str) -> list[str]:
        """The decoded values of the headers called ``lower`` (lower-cased), in order.

        Only the headers asked for are decoded, each name once, on its first look-up.
        A name is found through the index of first places, so the usual look-up (of a
        name the email does not carry, or carries once) runs no Python loop over the
        dozens of fields real mail has.
        """
        decoded = self._decoded.get(lower)
        if decoded is None:
            names = self._names()
            at = self._first.get(lower)
            if at is None:
                raws: list[str] = []
            elif names.count(lower) == 1:
                raws = [self._raw[at][1]]
            else:
                raws = list(itertools.compress(map(_VALUE, self._raw), map(lower.__eq__, names)))
            decoded = self._decoded[lower] = [_headers.decode_value(raw) for raw in raws]
        return decoded


def _join(segments: Sequence[Segment], failures: list[str]) -> str:
    """The body text from its segments (see :meth:`Deferred.text`).

    RFC 2046 multipart/mixed shows its inline text parts one after another, so they
    are joined, separated by a blank line. Of a multipart/alternative, the plain text
    is read, or its HTML converted when the plain text is empty.
    """
    pieces: list[str] = []
    for group, block in itertools.groupby(segments, key=lambda segment: segment[0]):
        found = [(kind, text) for _group, kind, text in block]
        if group is None:
            pieces.extend(_as_text(kind, text, failures) for kind, text in found)
            continue
        plain = [text for kind, text in found if kind == "text/plain" and has_text(text)]
        html = [text for kind, text in found if kind == "text/html"]
        pieces.extend(plain or [_as_text("text/html", text, failures) for text in html])
    pieces = [piece for piece in pieces if has_text(piece)]
    if len(pieces) == 1:
        return pieces[0]
    return "\n\n".join(piece.strip("\n") for piece in pieces)


def has_text(text: str) -> bool:
    """Whether ``text`` holds more than whitespace: ``bool(text.strip())`` without its copy
    (of a 25 MB body, 25 MB more at the peak)."""
    return bool(text) and not text.isspace()


def _as_text(content_type: str, text: str, failures: list[str]) -> str:
    if content_type != "text/html":
        return text
    return _guarded(html_to_text, text, "", "html-to-text-failed", failures)


def _guarded(
    function: Callable[[str], str],
    argument: str,
    fallback: _T,
    defect: str,
    defects: list[str],
) -> str | _T:
    """Call a body helper (HTML to text, reply stripping) safely.

    These live in their own modules; a failure in one must cost only its own
    field, never the email.
    """
    try:
        return function(argument)
    except Exception:  # see the docstring
        log.warning("%s failed; using a fallback", function.__name__, exc_info=True)
        defects.append(defect)
        return fallback
