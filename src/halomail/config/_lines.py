"""Where a key path is in ``halomail.toml``: its line, for error messages.

tomllib gives values, not positions, so the source is scanned once, line by line: table
headers (``[outgoing]``, ``[[mailboxes]]``, ``[mailboxes.outgoing]``) set the current
table, each ``key = value`` line is recorded under its full key path
(``mailboxes[1].port``), and a key path is then looked up, falling back to its nearest
recorded parent (a missing key points at its table's header; ``allowed_teams[2]`` at the
``allowed_teams`` line). Multi-line strings are skipped, so their text is never taken
for keys.

The scan is linear in the file's size (which the loader bounds), and its patterns have
no nested repetition: a hostile file costs no more than a long one.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re

__all__ = ["KeyLines", "line_of"]

# One key segment: a bare key, a "basic" quoted key or a 'literal' one, then a dot or the end.
_SEGMENT = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*(\.|$)""")
_ARRAY_HEADER = re.compile(r"\s*\[\[([^\[\]]+)\]\]\s*(?:#.*)?")
_TABLE_HEADER = re.compile(r"\s*\[([^\[\]]+)\]\s*(?:#.*)?")
_KEY = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
# A key, dotted or not, then "=": each segment starts with its own character, so a line
# of spaces or quotes that never reaches "=" fails in one pass, not by backtracking.
_KEY_LINE = re.compile(rf"\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
_INDEX = re.compile(r"\[\d+\]$")


def _segments(dotted: str) -> list[str] | None:
    """``a."b.c".d`` → ``["a", "b.c", "d"]``; ``None`` when it is not a key."""
    parts: list[str] = []
    position = 0
    while position < len(dotted):
        match = _SEGMENT.match(dotted, position)
        if match is None or match.end() == position:
            return None
        basic, literal, bare, _ = match.groups()
        parts.append(basic if basic is not None else literal if literal is not None else bare)
        position = match.end()
    return parts or None


class KeyLines:
    """The line of every table header and key of one TOML text.

    Args:
        text: The configuration file's text.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._arrays: dict[str, int] = {}  # an array of tables' path -> entries so far
        table: list[str] = []
        closing: str | None = None  # the quotes that end the multi-line string we are in
        for number, line in enumerate(text.splitlines(), start=1):
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            if (header := _ARRAY_HEADER.fullmatch(line)) is not None:
                table = self._array_entry(header.group(1), number)
            elif (header := _TABLE_HEADER.fullmatch(line)) is not None:
                table = self._resolve(_segments(header.group(1)) or [])
                self._lines.setdefault(".".join(table), number)
            elif (key := _KEY_LINE.match(line)) is not None:
                self._key(table, key.group(1), number)
                closing = _opened_string(line[key.end() :])

    def _array_entry(self, dotted: str, number: int) -> list[str]:
        """A ``[[name]]`` header: the next entry of that array of tables."""
        segments = _segments(dotted) or [""]
        path = self._resolve(segments[:-1])
        plain = ".".join([*path, segments[-1]])
        index = self._arrays.get(plain, 0)
        self._arrays[plain] = index + 1
        path.append(f"{segments[-1]}[{index}]")
        self._lines.setdefault(".".join(path), number)
        self._lines.setdefault(plain, number)
        return path

    def _resolve(self, segments: list[str]) -> list[str]:
        """Header segments with each array of tables on the way given its current entry."""
        path: list[str] = []
        for segment in segments:
            plain = ".".join([*path, segment])
            count = self._arrays.get(plain)
            path.append(f"{segment}[{count - 1}]" if count else segment)
        return path

    def _key(self, table: list[str], dotted: str, number: int) -> None:
        segments = _segments(dotted)
        if segments is not None:
            self._lines.setdefault(".".join([*table, *segments]), number)

    def line(self, key_path: str) -> int | None:
        """The line of ``key_path``, else of its nearest parent found; ``None`` if none is."""
        path = key_path
        while path:
            if path in self._lines:
                return self._lines[path]
            if _INDEX.search(path):
                path = _INDEX.sub("", path)
            elif "." in path:
                path = path.rsplit(".", 1)[0]
            else:
                return None
        return None


def _opened_string(value: str) -> str | None:
    """The closing quotes when ``value`` opens a multi-line string it does not close."""
    for quotes in ('"""', "'''"):
        start = value.find(quotes)
        if start != -1 and value.find(quotes, start + 3) == -1:
            return quotes
    return None


def line_of(text: str, key_path: str) -> int | None:
    """The line of ``key_path`` in the TOML ``text`` (or of its nearest parent).

    Args:
        text: The file's text.
        key_path: As a :class:`~halomail.errors.ConfigError` names it, e.g.
            ``mailboxes[1].port`` or ``outgoing.security``.

    Returns:
        The 1-based line, or ``None`` when neither it nor a parent is written there.
    """
    return KeyLines(text).line(key_path)
