"""Finding the new text of a reply: quoted history and signature removed.

Mail clients mark where the quoted history starts in a handful of shapes, none of them
standard. :func:`strip_reply` looks for the earliest of them, line by line:

- an attribution line: ``On <date>, <name> wrote:`` as Gmail, Apple Mail, Thunderbird,
  iOS and Android mail and Yahoo write it, in twenty languages ("Am … schrieb …:",
  "Le … a écrit :", "… napisał(a):", "… пишет:", "…写道:"), wrapped over two lines
  or not; the forms without a "wrote" (Gmail's date-first ``2016-03-03 17:21 GMT+01:00
  Name <a@b>:``, Russian, Japanese and Korean Gmail, Yandex, mail.ru); Thunderbird's
  undated ``<name> wrote:`` before quoted lines; Zoho's ``---- On … wrote ----`` and
  Lotus Notes' ``Name/Org wrote on <date>:``; and, above quoted lines, the same
  dated forms without their colon (old Gmail's ``2011/4/7 Name <a@b>``, ``On <date>,
  <name> <a@b> wrote``);
- Outlook's ``-----Original Message-----`` (and its translations), its
  ``________________________________`` rule followed by ``From:``, and its header block
  ``From: … Sent: … To: … Subject: …`` in any order and in any of those languages
  (``Von:/Gesendet:``, ``De :/Envoyé :``, ``От:/Отправлено:``, ``差出人:/送信日時:`` …);
- the ``-- `` signature separator, mobile footers ("Sent from my iPhone", "Von
  meinem iPhone gesendet", "Get Outlook for Android", "iPhoneから送信" …) and a
  mailing list's footer (Mailman's rule over "users mailing list");

and drops every ``>`` quoted line, and the end of a quoted line that a client wrapped
again without its ``>`` (see :func:`_continues_quote`). Forwarded messages are not
history: the forwarded text is what the helpdesk needs, so forward markers and the
header block under them are left alone. The words of every language live in
:mod:`halomail.inbound._reply_patterns`.

Every test runs on one line of bounded length and its few neighbours, and a one-pass
filter picks the lines worth testing, so the cost stays linear in the text. A long text
is never split into a list of its lines: it is lower-cased a chunk at a time, its lines
are cut out one by one where a test looks at them (:class:`_Lines`), and a new text with
nothing to remove is the text itself, so a 25 MB body costs no copy of itself here.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Sequence
from typing import overload

from halomail.inbound import _reply_patterns as p

__all__ = ["strip_reply"]

_QUOTED = re.compile(r"\s*>")
_DIGIT = re.compile(r"\d")
_COLONS = (":", "\uff1a")  # Chinese and Japanese write a fullwidth one
#: Where the text after a wrote word is looked for: no attribution puts more after it.
_TAIL = 200
#: Texts longer than this (in characters) are read through :class:`_Lines`; shorter
#: ones are split into a list.
_LONG_TEXT = 1 << 20
#: How much of a text (in characters, whole lines) :func:`_candidates` lower-cases at once.
_CHUNK = 1 << 18
_NEWLINE = re.compile("\n")


class _Lines(Sequence[str]):
    """The lines of a long text (split at ``\\n``), each cut out when it is read.

    A list of the lines of a 25 MB text would cost about twice the text; this keeps the
    offsets where lines start (4 bytes a line) and the text itself.
    """

    __slots__ = ("_starts", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts = array("I" if len(text) < 1 << 32 else "q", [0])
        self._starts.extend(match.end() for match in _NEWLINE.finditer(text))

    def __len__(self) -> int:
        return len(self._starts)

    def _line(self, index: int) -> str:
        after = index + 1
        end = self._starts[after] - 1 if after < len(self._starts) else len(self._text)
        return self._text[self._starts[index] : end]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._line(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("line index out of range")
        return self._line(index)

    def joined(self, start: int, stop: int) -> str:
        """``"\\n".join(self[start:stop])``, cut from the text in one piece (the text
        itself for all of it)."""
        if start >= stop:
            return ""
        end = self._starts[stop] - 1 if stop < len(self._starts) else len(self._text)
        return self._text[self._starts[start] : end]


def _lines(text: str) -> Sequence[str]:
    """The lines of ``text``: a list, or for a long text a :class:`_Lines`."""
    return _Lines(text) if len(text) > _LONG_TEXT else text.split("\n")


def _quotes_follow(lines: Sequence[str], start: int) -> bool:
    """True when the first non-blank line of the next three from ``start`` is quoted."""
    following = [x for x in lines[start : start + 3] if x.strip()]
    return bool(following) and bool(_QUOTED.match(following[0]))


def _is_attribution(candidate: str, quotes_follow: bool) -> bool:
    """True when ``candidate`` (one line, or two joined) is an attribution line.

    A "wrote" word near the end with a name before it makes one when quoted lines
    follow (Thunderbird's "Bob wrote:"), when the line opens like one ("On", "Am",
    "Le" …) and has a digit, or when it has a time and opens with a date, names an
    address or names before it dates ("Bob kirjoitti 1.1.2024 klo 10.00:"). Without a
    "wrote" word, a time and an address ending the line make one when quoted lines
    follow or the line opens with a date (Gmail's date-first forms, Yandex, mail.ru).
    Webmail's "Quoting Bob:" makes one above quoted lines. A sentence ending in
    "wrote:" has neither a time nor quoted lines below it.
    """
    line = candidate.rstrip()
    if len(line) > p.MAX_MARKER_LINE or not line.endswith(_COLONS):
        return False
    if quotes_follow and p.QUOTING.match(line):
        return True
    tail_start = max(0, len(line) - _TAIL)
    wrote = _wrote(line[tail_start:])
    if wrote is not None:
        if not (line[:tail_start].strip() or wrote[0].strip()):
            return False  # "wrote:" alone is the second half of a wrapped attribution
        if quotes_follow or (p.LEAD.match(line) and _DIGIT.search(line)):
            return True
        opens_like_one = bool(p.DATE_FIRST.match(line) or p.ADDRESS.search(line))
        named_then_dated = wrote[1]  # "Bob kirjoitti 1.1.2024 klo 10.00:"
        return bool(p.TIME.search(line)) and (opens_like_one or named_then_dated)
    return bool(
        p.TIME.search(line)
        and p.ADDRESS_AT_END.search(line, tail_start)
        and (quotes_follow or p.DATE_FIRST.match(line))
    )


def _is_colonless_attribution(line: str) -> bool:
    """True when ``line``, which ends without a colon, is an attribution that lost it.

    Only a dated one counts, and only above quoted lines (the caller checks): old
    Gmail's date-first ``2011/4/7 Bob <bob@example.com>``, closed by its address, or
    ``On <date>, Bob <bob@example.com> wrote``, whose "wrote" word ends it after a name
    and with a time or an address. "On Monday I wrote" above a quote is a sentence.
    """
    stripped = line.rstrip()
    if len(stripped) > p.MAX_MARKER_LINE or not _opens_dated(stripped):
        return False
    tail = stripped[-_TAIL:]
    if p.ADDRESS_CLOSES_LINE.search(tail):
        return True
    wrote = _wrote(tail)
    if wrote is None or not (stripped[:-_TAIL].strip() or wrote[0].strip()):
        return False
    return bool(p.TIME.search(stripped) or p.ADDRESS.search(stripped))


def _wrote(tail: str) -> tuple[str, bool] | None:
    """The text before the "wrote" word in ``tail``, and whether a name or date follows.

    None when ``tail`` (the end of a line, at most a few hundred characters) has no
    "wrote" word where attributions put one.
    """
    lowered = tail.lower()
    match = p.WROTE_AT_END.search(lowered, max(0, len(lowered) - p.WROTE_AT_END_REACH))
    if match:
        return lowered[: match.start()], False
    match = p.WROTE_THEN_NAME.search(lowered)
    return (lowered[: match.start()], True) if match else None


def _is_dashed_attribution(stripped: str) -> bool:
    """True for Zoho's ``---- On … wrote ----`` and Lotus' ``-----Bob wrote: -----``."""
    if not (stripped.startswith("--") and stripped.endswith("--")):
        return False
    inner = stripped.strip("-").strip()
    if not inner:
        return False
    wrote = _wrote(inner[-_TAIL:])
    if wrote is None:
        return False
    before, named_then_dated = wrote
    if named_then_dated:  # Zoho in German: "---- Am Mo, 01 Jan 2024 … schrieb Bob ----"
        return bool(_DIGIT.search(inner))
    return bool(inner[:-_TAIL].strip() or before.strip())


def _may_wrap(line: str) -> bool:
    """True when ``line`` may be the first half of an attribution wrapped in two.

    It must open like one ("On …", a date) or hold the start of an address, and not
    end a sentence: a reply line above an attribution ("Thanks, that fixed it!") does
    neither, and is never joined to it.
    """
    stripped = line.rstrip()
    return (
        len(stripped) <= p.MAX_MARKER_LINE // 2
        and not stripped.endswith((".", "!", "?"))
        and ("@" in stripped or "<" in stripped or _opens_dated(stripped))
    )


def _opens_dated(line: str) -> bool:
    """True when ``line`` opens like a dated attribution ("On …", a date) with a digit."""
    return bool((p.LEAD.match(line) or p.DATE_FIRST.match(line)) and _DIGIT.search(line))


def _attribution(lines: Sequence[str], i: int, colonless: frozenset[int]) -> int:
    """How many lines (1 to 3) an attribution at ``lines[i]`` spans; 0 if none.

    ``colonless`` holds the lines above quoted lines that are attributions without
    their colon (:func:`_above_quotes`).
    """
    line = lines[i]
    if line.rstrip().endswith(_COLONS):
        if _is_attribution(line, _quotes_follow(lines, i + 1)):
            return 1
    elif i in colonless:
        return 1
    # A wrapped attribution ends with a colon on the next line or the one after: a
    # cheap test before the others.
    if not any(x.rstrip().endswith(_COLONS) for x in lines[i + 1 : i + 3]):
        return 0
    if not _may_wrap(line):
        return 0
    second = lines[i + 1]
    if not second.strip() or len(second) > p.MAX_MARKER_LINE // 2:
        return 0
    if _QUOTED.match(second):
        # Gmail wraps before the ">" closing the address: "… Bob <bob@example.com" over
        # ">:" or "> wrote:". Any other quoted line is the history, not its attribution.
        if not _closes_address(line, second):
            return 0
        joined = line.rstrip() + second.strip()
        return 2 if _is_attribution(joined, _quotes_follow(lines, i + 2)) else 0
    if second.rstrip().endswith(_COLONS) and _is_attribution(second, _quotes_follow(lines, i + 2)):
        # An attribution complete on its own line (it opens with its date) is not the
        # end of a wrapped one: the line above it is the reply's last line. A name-only
        # one ("Support Team wrote:") ends a wrapped one only under a line that opens
        # like a dated attribution, or that the second line's address closes
        # ("… Support Team <" above "support@example.com> wrote:").
        open_address = line.rfind("<") > line.rfind(">") and ">" in second.split("<")[0]
        complete = _opens_dated(second) and not open_address
        if complete or not (_opens_dated(line) or open_address):
            return 0
    joined = line.rstrip() + " " + second.strip()
    if _is_attribution(joined, _quotes_follow(lines, i + 2)):
        return 2
    # Apple Mail wraps a long address onto a line of its own: "On …, Somebody <",
    # "somebody@example.com>", "wrote:" (Gmail: "somebody@example.com", "> wrote:").
    if i + 2 < len(lines):
        third = lines[i + 2].strip()
        closing = _closes_address(joined, third)
        # Only a short third line counts: the candidate filter looks no further.
        if (
            third
            and len(lines[i + 2].rstrip()) <= _SHORT_LAST_LINE
            and (joined.rstrip().endswith(">") or closing)
        ):
            joined = joined.rstrip() + ("" if closing else " ") + third
            return 3 if _is_attribution(joined, _quotes_follow(lines, i + 3)) else 0
    return 0


def _closes_address(line: str, following: str) -> bool:
    """True when ``following`` opens with the ``>`` of an address ``line`` left open
    ("… Bob <bob@example.com" over ">:"), and is short and ends with a colon."""
    rest = following.strip()
    return (
        rest.startswith(">")
        and len(rest) <= _SHORT_LAST_LINE
        and rest.endswith(_COLONS)
        and line.rfind("<") > line.rfind(">")
    )


def _header_kind(line: str) -> str | None:
    """The kind of Outlook header line ``line`` is ("from", "date", "to", "subject")."""
    # A label is a word or two: a line without a colon near its start is no header.
    if len(line) > p.MAX_MARKER_LINE or (
        line.find(":", 0, 40) < 0 and line.find("\uff1a", 0, 40) < 0
    ):
        return None
    match = p.HEADER_LINE.match(line.lower())
    return match.lastgroup if match else None


def _forwarded(lines: Sequence[str], i: int, window: list[str]) -> bool:
    """True when the header block at ``lines[i]`` is a forwarded or pasted message.

    It is one under a forward marker ("---------- Forwarded message ---------"), or
    when raw RFC 5322 header lines (``Delivered-To:``, ``Message-ID:`` …) sit around
    it: no client writes those into the header block of a reply.
    """
    if any(p.RAW_HEADER.match(x) for x in window if len(x) <= p.MAX_MARKER_LINE):
        return True
    for j in range(i - 1, max(-1, i - 9), -1):
        line = lines[j]
        if not line.strip() or _header_kind(line):
            continue
        if len(line) > p.MAX_MARKER_LINE:
            return False
        return bool(p.FORWARD.match(line) or p.RAW_HEADER.match(line))
    return False


def _header_block(lines: Sequence[str], i: int) -> bool:
    """True when ``lines[i]`` starts an Outlook-style header block.

    The block begins with its sender or its date (Outlook writes ``From:`` first,
    other clients ``Date:`` or ``Sent:``) and holds both, and a recipient or subject,
    within a few lines; long ``To:`` lines wrap. A block opening with ``To:`` or
    ``Subject:`` is a message pasted into the text (a draft, a quoted article).
    """
    first = _header_kind(lines[i])
    if first not in ("from", "date"):
        return False
    window = [x for x in lines[i + 1 : i + 9] if x.strip()][:6]
    kinds = {first} | {_header_kind(x) for x in window}
    if not ({"from", "date"} <= kinds and kinds & {"to", "subject"}) and not _dated_pair(
        lines, i, window
    ):
        return False
    # A forwarded message's header block is content, not history.
    return not _forwarded(lines, i, window)


def _dated_pair(lines: Sequence[str], i: int, window: Sequence[str]) -> bool:
    """True when ``lines[i]`` and the next line make a two-line header block on their
    own: a date with its time, and the sender or the recipient with an address ("From:
    bob@example.com" over "Date: Wed, 16 May 2012 00:15:02 -0600", or "Date: …" over
    "To: …"). An appointment's "Date: Wednesday 3, October 2011" over "Time: 7:00" is
    not one, nor the end of a longer block that opened with "To:" or "Subject:" (a
    message pasted into the text)."""
    if not window or (i > 0 and _header_kind(lines[i - 1])):
        return False
    line = lines[i]
    pair = {_header_kind(line): line, _header_kind(window[0]): window[0]}
    date, other = pair.get("date"), pair.get("from") or pair.get("to")
    return (
        len(pair) == 2
        and date is not None
        and other is not None
        and p.TIME.search(date) is not None
        and p.ADDRESS.search(other) is not None
    )


def _is_footer(stripped: str) -> bool:
    """True when the line ``stripped`` is a mobile footer ("Sent from my iPhone")."""
    lowered = stripped.lower()
    return bool(p.FOOTER_GATE.match(lowered) and p.FOOTER.match(lowered))


def _marker(lines: Sequence[str], i: int, colonless: frozenset[int]) -> tuple[bool, int]:
    """Whether history or a signature starts at ``lines[i]``, and the attribution span."""
    line = lines[i]
    stripped = line.strip()
    if not stripped or len(line) > p.MAX_MARKER_LINE or _QUOTED.match(line):
        return False, 0
    if p.SIGNATURE.match(line) or _is_footer(stripped):
        return True, 0
    if p.ORIGINAL_MESSAGE.match(stripped) or _is_dashed_attribution(stripped):
        return True, 0
    if p.RULE.match(stripped):
        # Outlook's rule above its header block, or a mailing list's footer under it.
        following = [x for x in lines[i + 1 : i + 4] if x.strip()]
        if not following or len(following[0]) > p.MAX_MARKER_LINE:
            return False, 0
        return _header_kind(following[0]) == "from" or bool(p.LIST_FOOTER.match(following[0])), 0
    if _header_block(lines, i):
        return True, 0
    span = _attribution(lines, i, colonless)
    return span > 0, span


# Every marker above (quoted lines aside, which _cut skips) begins its line with one of
# these, or ends it (or one of the next two, for a wrapped attribution) with a colon. The
# filter runs on the lowercased text with a trie of literal words, so the regex engine
# dismisses an ordinary line after a character or two: on a 4 KB body without markers
# that is several times faster than testing every line. Dashes count only as a
# signature separator, before the words of an original-message line or in a line that
# also ends with dashes (Zoho, Lotus), so a body of dashed lines (ASCII art, MIME-like
# junk) is not half a million candidates; the possessive quantifiers keep a long run of
# dashes from being backtracked through.
_LABEL_THEN_COLON = r"[^\S\n]?[:\uff1a]"
_STARTS_MARKER = re.compile(
    r"\n[^\S\n]*(?:--(?:\ ?(?=\n|\Z)|-*+[^\S\n]*+(?:"
    + p.starts_any((phrase, "") for phrase in p.ORIGINAL_PHRASES)
    + r"|[^\s-][^\n]*--[^\S\n]*(?=\n|\Z)))|_|\*|"
    + p.starts_any(
        [(label, _LABEL_THEN_COLON) for labels in p.HEADER_LABELS.values() for label in labels]
        + [(start, "") for start in p.FOOTER_STARTS]
    )
    + ")"
)
# A literal first character lets the engine skip to each colon in C.
#: The longest last line of an attribution wrapped over three lines ("\twrote:").
_SHORT_LAST_LINE = 40
_ENDS_WITH_COLON = re.compile(r":[^\S\n]*(?=\n|\Z)")


def _candidates(text: str, colonless: frozenset[int] = frozenset()) -> list[int]:
    """The indexes of the lines of ``text`` where :func:`_cut` may find something
    (``colonless``, from :func:`_above_quotes`, among them)."""
    found: set[int] = set(colonless)
    first_line, start = 0, 0
    # Whole lines a chunk at a time: a marker starts a line, and a line ending in
    # dashes is read to its end, so no match needs more than its own line.
    while start < len(text):
        stop = len(text)
        if stop - start > _CHUNK:
            stop = text.rfind("\n", start, start + _CHUNK) + 1
        if stop <= start:  # one line longer than a chunk: the chunk is that line
            stop = text.find("\n", start + _CHUNK) + 1 or len(text)
        # A newline in front makes the first line start like every other. Lowercasing
        # never adds or removes a newline, so line numbers are those of ``text``.
        lowered = "\n" + text[start:stop].lower()
        line, position = first_line, 0
        for match in _STARTS_MARKER.finditer(lowered):
            line += lowered.count("\n", position, match.start())
            position = match.start()
            found.add(line)
        first_line += text.count("\n", start, stop)
        start = stop
    line, position = 0, 0
    if "\uff1a" in text:  # a fullwidth colon (Chinese, Japanese)
        text = text.replace("\uff1a", ":")
    for match in _ENDS_WITH_COLON.finditer(text):
        line += text.count("\n", position, match.start())
        position = match.start()
        # The line itself, and the first line of an attribution wrapped over two, or
        # over three when this line is short ("wrote:").
        short = match.start() - text.rfind("\n", 0, match.start()) <= _SHORT_LAST_LINE
        found.update(range(max(0, line - (2 if short else 1)), line + 1))
    return sorted(found)


# The start of a quoted line, and of a line that is not quoted: the literal newline
# lets the engine skip from line to line in C, a block of quotes at a time.
_QUOTE_START = re.compile(r"\n[^\S\n]*>")
_QUOTE_END = re.compile(r"\n(?![^\S\n]*>)")
_QUOTED_FIRST = re.compile(r"[^\S\n]*>")


def _above_quotes(text: str) -> frozenset[int]:
    """The index of the last line above each block of quoted lines in ``text`` (blank
    lines between skipped, at most two), when it is an attribution that lost its colon
    (:func:`_is_colonless_attribution`): at most one line per block."""
    if ">" not in text:
        return frozenset()
    above: set[int] = set()
    line, position = 0, 0
    if _QUOTED_FIRST.match(text):  # the text opens with a quote: no line above it
        found = _QUOTE_END.search(text)
        position = found.start() if found else len(text)
        line = text.count("\n", 0, position)
    while (match := _QUOTE_START.search(text, position)) is not None:
        line += text.count("\n", position, match.start()) + 1  # the block's first line
        end = match.start()
        for j in range(line - 1, max(-1, line - 4), -1):
            begin = text.rfind("\n", 0, end) + 1
            if begin < end and not text[begin:end].isspace():
                if end - begin <= p.MAX_MARKER_LINE and _is_colonless_attribution(text[begin:end]):
                    above.add(j)
                break
            end = begin - 1
        found = _QUOTE_END.search(text, match.end())
        position = found.start() if found else len(text)
        line += text.count("\n", match.end(), position)
    return frozenset(above)


def _cut(
    lines: Sequence[str],
    candidates: list[int] | None = None,
    start: int = 0,
    colonless: frozenset[int] = frozenset(),
) -> tuple[int, int]:
    """Where quoted history or the signature starts, and the attribution's span.

    Only the lines in ``candidates`` (all lines when ``None``) from ``start`` on are
    tested. Returns ``(len(lines), 0)`` when there is nothing to cut; the span is 0
    unless the cut is an attribution line.
    """
    if candidates is None:
        candidates = list(range(len(lines)))
    for k in range(bisect.bisect_left(candidates, start), len(candidates)):
        found, span = _marker(lines, candidates[k], colonless)
        if found:
            if not span and _header_kind(lines[candidates[k]]):
                return _rule_above(lines, candidates[k], start), 0
            if span and candidates[k] > start and _begins_above(lines, candidates[k], span):
                return candidates[k] - 1, span + 1
            return candidates[k], span
    return len(lines), 0


# Where an attribution may begin inside a line: at the space before a letter ("Works
# now. On Wed, …", "reply On Wed, …"), or where a run of dashes begins ("reply--- On").
_ATTRIBUTION_INSIDE = re.compile(r"[^\S\n]+(?=[^\W\d_])|(?<=[^\s-])(?=--)")
# A quote prefix of initials (The Bat!, some mailing list archives): "EL>", "bmn>>".
_QUOTE_PREFIX = re.compile(r"[^\W\d_]{0,4}>+")


def _joined_reply(lines: Sequence[str], cut: int, span: int) -> str:
    """The end of the reply when it shares its line with the attribution at ``cut``.

    Text flattened from HTML by some tools runs the answer into the attribution:
    ``Works now. On Mon, Jan 1, 2024 at 10:00 AM, Bob <b@x> wrote:``, ``reply On …``,
    ``reply--- On … wrote:``. The attribution is the last part of the line that opens
    like one (a capitalised "On", "Am", "Le" …, dashes allowed before it), holds a digit
    and is one on its own; what comes before it is returned on its own line (``"\n"``
    first), and ``""`` when the line is all attribution.
    """
    if span != 1 or cut >= len(lines):
        return ""
    line = lines[cut]
    if p.LEAD.match(line) or p.DATE_FIRST.match(line):
        return ""  # an attribution from its start
    quotes_follow = _quotes_follow(lines, cut + 1)
    before = ""
    for match in _ATTRIBUTION_INSIDE.finditer(line):
        rest = line[match.end() :]
        word = rest.lstrip("- ")
        if (
            word[:1].isupper()
            and p.LEAD.match(rest)
            and _DIGIT.search(rest)
            and _is_attribution(rest, quotes_follow)
        ):
            before = line[: match.start()].strip().rstrip("-").rstrip()
    if not before or _QUOTE_PREFIX.fullmatch(before):  # The Bat!'s quoted "EL> On …"
        return ""
    return ("\n\n" if cut and not lines[cut - 1].strip() else "\n") + before


def _begins_above(lines: Sequence[str], i: int, span: int) -> bool:
    """True when the attribution at ``lines[i]`` (``span`` lines) began on the line above,
    cut after a comma ("On Nov 21, 2014," over "at 10:18," over "Bob <b@x> wrote:").

    The line above must open like a dated attribution and end with a comma, and the
    attribution found must not open like one itself: a reply's last line is never taken.
    """
    above = lines[i - 1]
    if not above.rstrip().endswith(",") or len(above) > p.MAX_MARKER_LINE // 2:
        return False
    if not _opens_dated(above) or p.LEAD.match(lines[i]):
        return False
    joined = " ".join([above.strip(), *(line.strip() for line in lines[i : i + span])])
    return _is_attribution(joined, _quotes_follow(lines, i + span))


def _rule_above(lines: Sequence[str], i: int, start: int) -> int:
    """Where the header block at ``lines[i]`` begins: the rule of dashes or underscores
    above it (blank lines between), which belongs to the history, else ``i`` itself."""
    for j in range(i - 1, max(start, i - 3) - 1, -1):
        line = lines[j]
        if line.strip():
            return j if len(line) <= p.MAX_MARKER_LINE and p.RULE_ABOVE.match(line) else i
    return i


_BLANK_RUNS = re.compile(r"\n{3,}")
# A quoted line with its line break, and the whitespace that ends a line (\s is
# str.isspace's whitespace, as lstrip's and rstrip's).
_QUOTED_LINE = re.compile(r"^[^\S\n]*>[^\n]*(?:\n|\Z)", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[^\S\n]+(?=\n|\Z)")


def _part(lines: Sequence[str], start: int, stop: int) -> str:
    """The new text of ``lines[start:stop]`` (see :func:`_new_text`)."""
    if isinstance(lines, _Lines):
        return _new_text_long(lines.joined(start, stop))
    return _new_text(lines[start:stop])


def _new_text(lines: Sequence[str]) -> str:
    """The lines without quoted ones (nor the ends of quoted lines a client wrapped
    again, see :func:`_continues_quote`), each right-trimmed, as one trimmed text."""
    # The quote test runs only when some line may be quoted, and the blank-run
    # substitution only when there is a run: both are rare outside replies.
    if ">" in "\n".join(lines):
        quoted = [line.lstrip().startswith(">") for line in lines]
        lines = [
            line
            for k, line in enumerate(lines)
            if not quoted[k]
            and not (
                0 < k < len(lines) - 1
                and quoted[k - 1]
                and quoted[k + 1]
                and _continues_quote(lines[k - 1], line)
            )
        ]
    text = "\n".join([line.rstrip() for line in lines]).strip()
    return _fewer_blank_lines(text)


# An unquoted line between two quoted ones, with the line above it.
_BETWEEN_QUOTES = re.compile(r"^([^\S\n]*>[^\n]*\n)([^\n]*)\n(?=[^\S\n]*>)", re.MULTILINE)
_SENTENCE_END = (".", "!", "?", ":", ";", ",")
#: A quoted line at least this long may have been wrapped again by the client.
_WRAPPED_QUOTE = 70


def _continues_quote(above: str, line: str) -> bool:
    """True when ``line``, unquoted between two quoted lines, is the end of the quoted
    line ``above`` that a client wrapped again without its ``>``.

    That is a link's end ("> View ticket (http://example.com/a" over "_b=1)"), a link
    whose quote marker went to the end of the line ("(http://example.com/c) >"), or a
    few words in lower case after a long quoted line that ends no sentence ("> … Nullam
    pharetra d" over "ignissim odio?"). An answer written between quoted lines is none
    of these: it starts a sentence, or sits under a line that ends one.
    """
    stripped = line.strip()
    if not stripped or len(stripped) > _WRAPPED_QUOTE or stripped.startswith(">"):
        return False
    if " " not in stripped and above.count("(") > above.count(")"):
        return True  # the rest of a link
    if stripped.endswith(" >") and "://" in stripped:
        return True
    above = above.rstrip()
    return (
        len(above) >= _WRAPPED_QUOTE
        and not above.endswith(_SENTENCE_END)
        and stripped[0].islower()
        and len(stripped.split()) <= 4
    )


def _new_text_long(text: str) -> str:
    """:func:`_new_text` of ``text``'s lines, by substitutions over the whole text: no
    list of its lines, and ``text`` itself when there is nothing to remove. (Slower than
    the lines of a short text: a run of spaces between two words is tried too.)"""
    if ">" in text:
        text = _BETWEEN_QUOTES.sub(_without_continuation, text)
        # A quoted last line leaves its line break behind; the strip removes it.
        text = _QUOTED_LINE.sub("", text)
    return _fewer_blank_lines(_TRAILING_SPACE.sub("", text).strip())


def _without_continuation(match: re.Match[str]) -> str:
    """The match of :data:`_BETWEEN_QUOTES` without its second line when that line
    :func:`continues the quote <_continues_quote>` above it."""
    above, line = match.group(1), match.group(2)
    return above if _continues_quote(above, line) else match.group(0)


def _fewer_blank_lines(text: str) -> str:
    # Interleaved quotes leave runs of blank lines behind; keep at most one.
    return _BLANK_RUNS.sub("\n\n", text) if "\n\n\n" in text else text


def strip_reply(text: str) -> str:
    """Return the part of ``text`` the sender wrote, without quoted history or signature.

    Args:
        text: The plain-text body of an email.

    Returns:
        The new text, trimmed. A bottom-posted reply (attribution and quotes first, the
        answer below) gives the answer, and answers written between the quoted lines
        under an attribution follow the text above it. When stripping would leave
        nothing (a reply that is only a quote, or a mail that starts with a signature),
        the whole text trimmed.

    .. versionadded:: 0.1.0
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = _lines(text)
    colonless = _above_quotes(text)
    candidates = _candidates(text, colonless)
    cut, span = _cut(lines, candidates, 0, colonless)
    parts = [_part(lines, 0, cut) + _joined_reply(lines, cut, span)]
    # Under an attribution, unquoted text is the sender's: the answer of a
    # bottom-posted reply, or answers written between the quoted lines. Without
    # quoted lines below it (Yahoo indents its history), the rest is all history.
    if span and (not parts[0] or _quotes_follow(lines, cut + span)):
        while True:
            start = cut + span
            cut, span = _cut(lines, candidates, start, colonless)
            parts.append(_part(lines, start, cut) + _joined_reply(lines, cut, span))
            # Mailing lists answer several people in turn, each under their own
            # attribution: go on past every one that quoted lines follow.
            if not (span and _quotes_follow(lines, cut + span)):
                break
    return "\n\n".join(part.strip() for part in parts if part.strip()) or text.strip()
