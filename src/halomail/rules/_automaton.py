"""Which of many needles occur in a text, in one pass: Aho-Corasick.

The rule index puts the "contains" needles of each email field (From, To, CC, subject,
body, attachment names) into an automaton, so finding the needles a field holds costs
one walk over the field, however many rules there are.

The walk runs in Rust (ahocorasick-rs, the ``aho-corasick`` crate) over the text's
UTF-8 bytes. Measured on CPython 3.11 on the SpamAssassin corpus with 500 body needles:
about 1 ns per character, encoding included, where pyahocorasick's walk over ``str``
cost about 27 ns, which made the body walk most of the cost of evaluating 10,000 rules.
Searching bytes finds exactly what searching characters finds: UTF-8 is
self-synchronising, so an encoded needle can only match where a whole character
starts. Lone surrogates (which undecodable input can leave in a ``str``) are encoded
as they are (``surrogatepass``), on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import ahocorasick_rs

__all__ = ["LOWER_CASE_ASCII", "WINDOW", "Automaton", "folded_utf8", "utf8"]

#: How many bytes of a text one call into the crate searches (see Automaton._windows).
WINDOW = 1 << 14

_ENCODING = "utf-8"
_ERRORS = "surrogatepass"


#: The only characters beyond ASCII whose lower case holds an ASCII letter ("\u0130",
#: capital I with a dot, lower-cases to "i" and a combining dot; the Kelvin sign to "k").
LOWER_CASE_ASCII = ("\u0130", "\u212a")


def utf8(text: str) -> bytes:
    """``text`` as the automaton searches it: UTF-8, lone surrogates kept."""
    return text.encode(_ENCODING, _ERRORS)


def folded_utf8(text: str) -> bytes | None:
    """What ASCII needles find in ``utf8(text.lower())``, without ``str.lower``.

    ``bytes.lower`` lower-cases the ASCII letters only and leaves every byte of a
    multibyte character alone, so an ASCII needle matches in ``utf8(text).lower()``
    exactly where it matches in ``utf8(text.lower())``: the runs of ASCII characters are
    the same in both. That holds unless a character outside ASCII lower-cases to an
    ASCII letter (:data:`LOWER_CASE_ASCII`); then this returns ``None``. Lower-casing a
    ``str`` that is not ASCII looks every character up in the Unicode tables; this
    costs a copy and a pass in C.
    """
    if LOWER_CASE_ASCII[0] in text or LOWER_CASE_ASCII[1] in text:
        return None
    return utf8(text).lower()


class Automaton:
    """An Aho-Corasick automaton over a fixed list of needles.

    Args:
        needles: The strings to look for.
        ids: The id reported for each needle (default: its index in ``needles``). Several
            automata can then share one numbering.

    Raises:
        ValueError: When a needle is empty (it would match everywhere) or repeated, or
            ``ids`` and ``needles`` differ in length.
    """

    __slots__ = ("_automaton", "_ids", "_reach", "needles")

    def __init__(self, needles: Sequence[str], ids: Sequence[int] | None = None) -> None:
        self.needles: tuple[str, ...] = tuple(needles)
        if len(set(self.needles)) != len(self.needles):
            raise ValueError("an automaton needle must not be repeated")
        if any(not needle for needle in self.needles):
            raise ValueError("an automaton needle must not be empty")
        numbers = range(len(self.needles)) if ids is None else ids
        if len(numbers) != len(self.needles):
            raise ValueError("ids and needles differ in length")
        # The crate reports a needle by its position in the list; _ids maps it back
        # (None: the positions are the ids).
        self._ids: tuple[int, ...] | None = None if ids is None else tuple(ids)
        # How far a match starting in one window may reach into the next.
        self._reach = max((len(utf8(needle)) for needle in self.needles), default=1) - 1
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick([utf8(needle) for needle in self.needles])
            if self.needles
            else None
        )

    def __repr__(self) -> str:
        return f"Automaton({len(self.needles)} needles)"

    def _windows(self, data: bytes) -> Iterator[tuple[int, list[tuple[int, int, int]]]]:
        """The matches in ``data`` one window at a time: ``(offset, matches in it)``.

        A short text is one window. A long one is searched :data:`WINDOW` bytes at a
        time, each window reaching one needle's length into the next so that no match
        is lost (one in the overlap is reported by both windows: every caller collects
        sets). The crate lists every overlapping match, and a repetitive text (a
        megabyte of ``a`` against the needles ``a`` and ``aa``) would otherwise make a
        list of millions of tuples.
        """
        automaton = self._automaton
        if automaton is None:
            return
        if len(data) <= WINDOW + self._reach:
            yield 0, automaton.find_matches_as_indexes(data, overlapping=True)
            return
        view = memoryview(data)
        for offset in range(0, len(data), WINDOW):
            window = view[offset : offset + WINDOW + self._reach]
            yield offset, automaton.find_matches_as_indexes(window, overlapping=True)

    def find(self, text: str) -> set[int]:
        """The ids of the needles that occur in ``text``.

        Args:
            text: The text to search (already lower-cased by the caller when the search
                must be case-insensitive).

        Returns:
            A set of needle ids.
        """
        return self.find_data(text.encode(_ENCODING, _ERRORS))

    def find_data(self, data: bytes) -> set[int]:
        """The ids of the needles that occur in UTF-8 ``data`` (see :meth:`find`)."""
        ids = self._ids
        found: set[int] = set()
        for _offset, matches in self._windows(data):
            if ids is None:
                found.update([match[0] for match in matches])
            else:
                found.update([ids[match[0]] for match in matches])
        return found

    def matches(self, data: bytes) -> Iterator[tuple[int, int, int]]:
        """Every match in UTF-8 ``data``: ``(needle position, start byte, end byte)``.

        For callers that search several texts joined into one. Overlapping matches are
        all reported; positions index :attr:`needles` (not ``ids``).

        Args:
            data: The text to search, encoded with :func:`utf8`.

        Yields:
            The matches, a window at a time (one in the overlap of two windows twice).
        """
        for offset, matches in self._windows(data):
            if not offset:
                yield from matches
            else:
                for position, start, end in matches:
                    yield position, start + offset, end + offset

    def find_split(self, text: str, split: int) -> tuple[set[int], set[int]]:
        """One walk that answers for ``text[:split]`` and for the whole of ``text``.

        Args:
            text: The text to search.
            split: Where the prefix ends (a character index).

        Returns:
            The ids found in ``text[:split]`` and the ids found in ``text``.
        """
        return self.find_split_data(utf8(text), len(utf8(text[:split])))

    def find_split_data(self, data: bytes, split_byte: int) -> tuple[set[int], set[int]]:
        """:meth:`find_split` over UTF-8 ``data``, the prefix ending at ``split_byte``."""
        ids = self._ids or range(len(self.needles))
        head: set[int] = set()
        whole: set[int] = set()
        for offset, matches in self._windows(data):
            whole.update([ids[position] for position, _start, _end in matches])
            if offset < split_byte:
                bound = split_byte - offset
                head.update([ids[position] for position, _start, end in matches if end <= bound])
        return head, whole
