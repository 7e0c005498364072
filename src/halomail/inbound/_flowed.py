"""Reading ``format=flowed`` text (RFC 3676) as the paragraphs its sender wrote.

Thunderbird and Apple Mail send plain text as ``format=flowed``: a paragraph goes out as
lines of about 72 characters, each but the last ending in a space (a *soft* break),
and a reader joins them again. Read as fixed lines, a flowed email keeps its sender's
paragraphs broken where the client happened to wrap them (and an attribution wrapped
over two lines). :func:`unflow` joins them as RFC 3676 says:

- a line ending in a space flows into the next line of the same quote depth (with
  ``delsp=yes`` the space was added by the sender's client and goes);
- the quote depth is the number of ``>`` opening a line, and the space after them (or
  opening an unquoted line) is *stuffing*, removed (kept before an unquoted ``>``);
- the signature separator ``-- `` never flows.
"""

from __future__ import annotations

import re

__all__ = ["MAX_FLOWED_CHARS", "unflow"]

#: Longer texts are left as their lines: joining them would hold the text twice more
#: (its lines and the result), and a flowed email is a few kilobytes.
MAX_FLOWED_CHARS = 1 << 20

_SIGNATURE = "-- "

# Both patterns are read on the text with a "\n" put before it, so that its first line
# is found as the others are; each opens with a literal, which the regex engine scans
# for at C speed.
# Space-stuffing opening a line, except before a ">" (see unflow).
_STUFFING = re.compile(r"\n (?!>)")
# A soft line break: a space ending a line (or the text), other than the signature
# separator's.
_SOFT_BREAK = re.compile(r" (?<!\n-- )(?:\n|\Z)")


def unflow(text: str, *, delsp: bool = False) -> str:
    """The text of a ``format=flowed`` body with its soft line breaks joined.

    Args:
        text: The decoded body, with ``\\n`` line breaks.
        delsp: Whether the part said ``delsp=yes`` (the space ending a soft line is
            not part of the text).

    Returns:
        The text, each quoted line written ``> `` (one ``>`` per level, then a space);
        ``text`` itself when it is longer than :data:`MAX_FLOWED_CHARS`.
    """
    if len(text) > MAX_FLOWED_CHARS:
        return text
    if not text.startswith(">") and "\n>" not in text:
        return _unflow_unquoted(text, delsp=delsp)
    return _unflow_lines(text, delsp=delsp)


def _unflow_lines(text: str, *, delsp: bool) -> str:
    """:func:`unflow`, a line at a time: any text, quoted lines and all."""
    out: list[str] = []
    paragraph: list[str] = []  # the pieces of the flowed line being joined
    paragraph_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        # Space-stuffing (RFC 3676, 4.4) goes, except before an unquoted ">": the space
        # is all that tells that line from a quote in fixed text too.
        if content.startswith(" ") and (depth or not content.startswith(" >")):
            content = content[1:]
        if paragraph and depth != paragraph_depth:
            # A soft break before a change of depth is improperly flowed: end it there.
            out.append(_written(paragraph_depth, "".join(paragraph)))
            paragraph = []
        flowed = content.endswith(" ") and content != _SIGNATURE
        if flowed and delsp:
            content = content[:-1]
        paragraph.append(content)
        paragraph_depth = depth
        if not flowed:
            out.append(_written(depth, "".join(paragraph)))
            paragraph = []
    if paragraph:
        out.append(_written(paragraph_depth, "".join(paragraph)))
    return "\n".join(out)


def _unflow_unquoted(text: str, *, delsp: bool) -> str:
    """:func:`unflow` of a text with no quoted line, by two substitutions at C speed
    rather than a loop over its lines: the stuffing goes, then every soft break."""
    unstuffed = _STUFFING.sub("\n", "\n" + text)
    if "\n-- " in unstuffed:  # perhaps a signature separator, which never flows
        return _SOFT_BREAK.sub("" if delsp else " ", unstuffed)[1:]
    joined = unstuffed.replace(" \n", "" if delsp else " ")
    if delsp and unstuffed.endswith(" "):  # the last line is flowed too
        joined = joined[:-1]
    return joined[1:]


def _written(depth: int, content: str) -> str:
    """A line at quote ``depth``, as fixed text writes it."""
    if not depth:
        return content
    return ">" * depth + (" " + content if content else "")
