"""Keeping HTML cheap to read: the budget, the depth-bounded rewrite, the tag stripper.

:mod:`.html` hands a document to a DOM (lexbor for text, ammonia for sanitizing) only
when that costs little, and these three tools decide and prepare:

- :func:`over_budget`: a document past :data:`MAX_HTML_CHARS` characters or
  :data:`MAX_HTML_ELEMENTS` start tags never reaches a DOM at all;
- :func:`bounded`: a document with many start tags, or a very long tag, is first rewritten
  by a linear tokenizer of ours into well-formed markup no deeper than :data:`MAX_DEPTH`,
  with at most :data:`MAX_ATTRIBUTES` distinct attributes per element (X8): the DOM
  builders take time proportional to tags times depth, and lexbor's to the square of an
  element's attribute count;
- :func:`strip_tags`: the linear fallback past the budget: text kept, tags dropped,
  entities decoded, block tags made line breaks, and no tree built.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import html as _html
import re

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_HTML_CHARS",
    "MAX_HTML_ELEMENTS",
    "bounded",
    "over_budget",
    "strip_tags",
]

# The budget (#13). Reading a document into a tree and walking it costs about 5 µs and
# 1 KB of memory per element on the reference machine; unbounded, a 25 MB body of
# "<p>x" (6 million elements) took 34 s and 2.3 GB, enough to kill a process under a
# memory cap on every run. Real mail stays far below both limits (a heavy newsletter is
# 200 KB and 5,000 elements), so only hostile or broken documents take the fallback.
MAX_HTML_CHARS = 4_000_000
"""Longest document (in characters) read through a DOM; longer ones are tag-stripped."""
MAX_HTML_ELEMENTS = 100_000
"""Most start tags in a document read through a DOM (about 0.5 s and 100 MB)."""

MAX_DEPTH = 256
"""Deepest element nesting kept when a large document is rewritten before parsing."""
MAX_ATTRIBUTES = 100
"""Most distinct attributes kept on one element when a document is rewritten."""

# Below this many start tags the parsers' worst case (tags x depth) stays well under a
# second, so the document goes to them untouched; above it, _flatten bounds the depth.
_FAST_START_TAGS = 2500
# A tag this long may hold thousands of attributes, which lexbor checks against each
# other (40 s for 100,000 on one element); such a document is rewritten, which keeps
# MAX_ATTRIBUTES of them. A long tag is usually an inline image; the rewrite keeps it.
_LONG_TAG = re.compile(r"<[A-Za-z][^<>]{8192}")
_LONG_TAG_CHARS = 8194  # the fewest characters _LONG_TAG can match


def over_budget(html: str) -> bool:
    """Whether ``html`` is past the budget for a DOM: too many characters or start tags."""
    if len(html) > MAX_HTML_CHARS:
        return True
    if len(html) <= MAX_HTML_ELEMENTS:  # too short to hold that many tags: no counting
        return False
    return html.count("<") - html.count("</") > MAX_HTML_ELEMENTS


def bounded(html: str) -> str:
    """``html`` itself when it is cheap to parse, else its depth-bounded rewrite."""
    # Each test is skipped when it cannot fail: a document with few "<" has few start
    # tags, and one shorter than a long tag holds none.
    opening = html.count("<")
    few_tags = opening <= _FAST_START_TAGS or opening - html.count("</") <= _FAST_START_TAGS
    if few_tags and (len(html) < _LONG_TAG_CHARS or _LONG_TAG.search(html) is None):
        return html
    return _flatten(html, MAX_DEPTH)


_VOID = frozenset(
    {
        "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image",
        "img", "input", "keygen", "link", "meta", "param", "source", "track", "wbr",
    }
)  # fmt: skip
_RAW_TEXT = frozenset(
    {
        "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
        "noscript", "plaintext",
    }
)  # fmt: skip
# A start tag of the key implicitly ends an open element of these names on top of the
# stack, as the HTML parser does; without it, legitimate unclosed <p>/<li>/<td> runs
# would look deep.
_IMPLIED_END: dict[str, frozenset[str]] = {
    "p": frozenset({"p"}),
    "li": frozenset({"li", "p"}),
    "dt": frozenset({"dt", "dd", "p"}),
    "dd": frozenset({"dt", "dd", "p"}),
    "tr": frozenset({"tr", "td", "th"}),
    "td": frozenset({"td", "th"}),
    "th": frozenset({"td", "th"}),
    "option": frozenset({"option"}),
}
_P_ONLY = frozenset({"p"})
_NOTHING: frozenset[str] = frozenset()
_CLOSES_P = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "div", "dl", "fieldset",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "menu", "nav", "ol", "pre", "section", "table", "ul",
    }
)  # fmt: skip
_TAG_OPEN = re.compile(r"<(/?)([A-Za-z][^\t\n\f\r />]*)")
# The common, well-formed tag in one match. Possessive quantifiers: no backtracking, so a
# failed attempt costs at most one scan (the slower _read_attributes then takes over).
_TAG_FULL = re.compile(
    r"""<(/?)([A-Za-z][^\t\n\f\r />]*+)"""
    r"""((?:[\t\n\f\r /]++[^\t\n\f\r />=][^\t\n\f\r />=]*+"""
    r"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|[^\t\n\f\r >"']++))?+)*+)"""
    r"""[\t\n\f\r /]*+>"""
)
_ATTR = re.compile(
    r"""([^\t\n\f\r />=][^\t\n\f\r />=]*)"""
    r"""(?:[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"|'[^']*'|[^\t\n\f\r >"']+))?"""
)
_SKIP_SPACE = re.compile(r"[\t\n\f\r /]*")
_ATTR_NAME = re.compile(r"[^\t\n\f\r />][^\t\n\f\r />=]*")
_UNQUOTED = re.compile(r"[^\t\n\f\r >]*")
_SAFE_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*\Z")
_SAFE_TAG = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")


def _flatten(html: str, max_depth: int) -> str:
    """Rewrite ``html`` as well-formed markup nested at most ``max_depth`` deep.

    A linear, single-pass tokenizer: every search consumes what it scans, and an
    unterminated comment, quote or raw-text element ends the document rather than being
    rescanned (the stdlib ``html.parser`` is quadratic on such input). Comments,
    doctypes and raw-text elements are dropped; text is re-escaped; attributes are
    re-quoted. Tags beyond ``max_depth`` are dropped, their text kept.
    """
    out: list[str] = []
    stack: list[str] = []
    open_count: dict[str, int] = {}
    lower = html.lower()
    n = len(html)
    pos = 0

    def close_top() -> None:
        name = stack.pop()
        open_count[name] -= 1
        if len(stack) < max_depth:
            out.append(f"</{name}>")

    while pos < n:
        lt = html.find("<", pos)
        if lt < 0:
            out.append(html[pos:].replace(">", "&gt;"))
            break
        out.append(html[pos:lt].replace(">", "&gt;"))
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4)
            if end < 0:
                break
            pos = end + 3
            continue
        if html.startswith(("<!", "<?"), lt):
            end = html.find(">", lt + 2)
            if end < 0:
                break
            pos = end + 1
            continue
        full = _TAG_FULL.match(html, lt)
        if full is not None:
            closing = bool(full.group(1))
            name = full.group(2).lower()
            attrs = [
                (key.lower(), _unquote(value) if value else None)
                for key, value in _ATTR.findall(full.group(3))
            ]
            pos = full.end()
        else:
            match = _TAG_OPEN.match(html, lt)
            if match is None:
                out.append("&lt;")
                pos = lt + 1
                continue
            closing = bool(match.group(1))
            name = match.group(2).lower()
            attrs, pos = _read_attributes(html, match.end())
            if pos < 0:
                break  # unterminated tag: the rest of the document is inside it
        if not _SAFE_TAG.match(name):
            continue
        if closing:
            if open_count.get(name, 0) > 0:
                while stack and stack[-1] != name:
                    close_top()
                close_top()
            continue
        if name in _RAW_TEXT:
            end = lower.find("</" + name, pos)
            if end < 0:
                break
            pos = end
            continue
        implied = _IMPLIED_END.get(name, _P_ONLY if name in _CLOSES_P else _NOTHING)
        while stack and stack[-1] in implied:
            close_top()
        if len(stack) < max_depth:
            rendered = "".join(
                f' {key}="{value.replace(chr(34), "&quot;")}"' if value is not None else f" {key}"
                for key, value in _first_attributes(attrs)
            )
            out.append(f"<{name}{rendered}>")
        if name not in _VOID:
            stack.append(name)
            open_count[name] = open_count.get(name, 0) + 1
    while stack:
        close_top()
    return "".join(out)


def _first_attributes(attrs: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The first of each name, as HTML keeps them, up to :data:`MAX_ATTRIBUTES` of them."""
    kept: dict[str, str | None] = {}
    for key, value in attrs:
        if key not in kept and _SAFE_NAME.match(key):
            kept[key] = value
            if len(kept) == MAX_ATTRIBUTES:
                break
    return list(kept.items())


def _read_attributes(html: str, pos: int) -> tuple[list[tuple[str, str | None]], int]:
    """Attributes of the tag whose name ends at ``pos``, and the index after its ``>``.

    Returns ``-1`` as the index when the document ends inside the tag.
    """
    attrs: list[tuple[str, str | None]] = []
    n = len(html)
    while True:
        space = _SKIP_SPACE.match(html, pos)
        pos = space.end() if space else pos
        if pos >= n:
            return attrs, -1
        if html[pos] == ">":
            return attrs, pos + 1
        name_match = _ATTR_NAME.match(html, pos)
        if name_match is None:  # pragma: no cover - _SKIP_SPACE left a name character
            return attrs, -1
        key = name_match.group().lower()
        pos = name_match.end()
        while pos < n and html[pos] in "\t\n\f\r ":
            pos += 1
        value: str | None = None
        if pos < n and html[pos] == "=":
            pos += 1
            while pos < n and html[pos] in "\t\n\f\r ":
                pos += 1
            if pos < n and html[pos] in "\"'":
                end = html.find(html[pos], pos + 1)
                if end < 0:
                    return attrs, -1
                value = html[pos + 1 : end]
                pos = end + 1
            else:
                unquoted = _UNQUOTED.match(html, pos)
                value = unquoted.group() if unquoted else ""
                pos = unquoted.end() if unquoted else pos
        attrs.append((key, value))


def _unquote(value: str) -> str:
    if value[:1] in {'"', "'"}:
        return value[1:-1]
    return value


# ---------------------------------------------------------------------------------------
# The fallback past the budget: a tag stripper, linear and without a tree


def _names(names: str) -> str:
    """A pattern matching exactly ``names``, grouped by first letter.

    Python's ``re`` tries the branches of an alternation one by one at every ``<``;
    grouped, a tag that is none of them fails after one or two comparisons.
    """
    by_letter: dict[str, list[str]] = {}
    for name in sorted(names.split(), key=lambda n: (-len(n), n)):
        by_letter.setdefault(name[0], []).append(re.escape(name[1:]))
    return "(?:" + "|".join(f"{c}(?:{'|'.join(r)})" for c, r in sorted(by_letter.items())) + ")"


# Elements dropped with their content, as html_to_text drops them. Each is skipped by
# one search for its end tag; an unterminated one ends the document (no rescanning).
_HIDDEN_CONTENT = re.compile(
    "<(?:!--|("
    + _names(
        "script style title head template iframe object applet svg math noscript noembed"
        " noframes xmp select textarea"
    )
    + r"))(?=[\t\n\f\r />])",
    re.I,
)
_END_TAGS: dict[str, re.Pattern[str]] = {}
_BLOCK_TAG = re.compile(
    "</?"
    + _names(
        "address article aside blockquote br caption center dd details dialog dir div dl dt"
        " fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 header hr legend li main"
        " menu nav ol p pre section summary table tbody td tfoot th thead tr ul"
    )
    + r"(?=[\t\n\f\r />])[^>]*+>?",
    re.I,
)
_ANY_TAG = re.compile(r"<(?:/?[A-Za-z]|[!?/])[^>]*+>?")
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")
_LINE_SPACE = re.compile(r"[ \t\r\f\v\xa0\u200b\ufeff]+")
_LINE_END = re.compile(r" ?\n ?")
_LINE_BREAKS = re.compile(r"\n{2,}")


def strip_tags(html: str) -> str:
    """The text of ``html`` without building a tree: tags dropped, blocks made lines.

    Linear in the length of ``html``: every pattern here matches without backtracking
    into text it has already passed, and elements whose content is not text (scripts,
    styles, the head, SVG, comments) are each skipped by one forward search. Entities
    are decoded; whitespace collapses as in HTML; block tags and ``<br>`` become line
    breaks, and no line is blank (a block's end and the next one's start are one break).
    """
    text = _WHITESPACE.sub(" ", _without_hidden_content(html))
    text = _ANY_TAG.sub("", _BLOCK_TAG.sub("\n", text))
    text = _LINE_SPACE.sub(" ", _html.unescape(text))
    return _LINE_BREAKS.sub("\n", _LINE_END.sub("\n", text)).strip(" \n").replace("\x00", "")


def _without_hidden_content(html: str) -> str:
    """``html`` without comments and the elements whose content is never text."""
    if _HIDDEN_CONTENT.search(html) is None:
        return html
    kept: list[str] = []
    pos = 0
    while (match := _HIDDEN_CONTENT.search(html, pos)) is not None:
        kept.append(html[pos : match.start()])
        name = match.group(1)
        if name is None:  # a comment
            end = html.find("-->", match.end())
            pos = end + 3 if end >= 0 else len(html)
            continue
        closing = _END_TAGS.get(name.lower())
        if closing is None:
            closing = _END_TAGS[name.lower()] = re.compile(f"</{name}", re.I)
        found = closing.search(html, match.end())
        end = html.find(">", found.end()) if found is not None else -1
        pos = end + 1 if end >= 0 else len(html)
    kept.append(html[pos:])
    return "".join(kept)
