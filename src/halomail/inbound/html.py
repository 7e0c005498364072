"""HTML: sanitizing what customers send, and reading text out of it.

:func:`sanitize_html` makes an email's HTML safe to show inside a helpdesk page: nh3
(ammonia) with an explicit allowlist, URL checks of our own, a small CSS allowlist, and no
remote loads at all. :func:`html_to_text` lays its text out as a person would read it.

Both stay within a budget on hostile input (X8, #13), with the tools of
:mod:`._html_bounds`. A document past :data:`MAX_HTML_CHARS` characters or
:data:`MAX_HTML_ELEMENTS` start tags never reaches a tree builder: its text comes from a
linear tag stripper instead (the parser records ``html-over-budget`` on the email).
Below the budget, ammonia's and lexbor's tree builders take time proportional to the
number of tags times the nesting depth, so a document with many start tags (or one very
long tag) is first rewritten by a linear tokenizer of ours into well-formed markup no
deeper than :data:`MAX_DEPTH`; nh3 still sanitizes the result, so the rewrite never has
to be right about safety, only about cost.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import html as _html
import logging
import re

import nh3
from selectolax.lexbor import LexborHTMLParser, LexborNode

from halomail.inbound._html_bounds import (
    MAX_ATTRIBUTES,
    MAX_DEPTH,
    MAX_HTML_CHARS,
    MAX_HTML_ELEMENTS,
    bounded,
    over_budget,
    strip_tags,
)

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_HTML_CHARS",
    "MAX_HTML_ELEMENTS",
    "html_over_budget",
    "html_to_text",
    "sanitize_html",
]

log = logging.getLogger(__name__)

_TAGS = frozenset(
    {
        "a", "abbr", "address", "b", "bdi", "big", "blockquote", "br", "caption", "center",
        "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em",
        "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
        "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small",
        "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
        "thead", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

# Removed together with everything inside them: active content, embedded documents,
# and foreign content (SVG/MathML) whose parsing rules differ from HTML's.
_DROP_WITH_CONTENT = frozenset(
    {
        "script", "style", "title", "template", "iframe", "frame", "frameset", "object",
        "applet", "embed", "svg", "math", "noscript", "noembed", "noframes", "xmp",
        "select", "textarea",
    }
)  # fmt: skip

_CELL_ATTRS = {"colspan", "rowspan", "width", "height", "bgcolor", "nowrap", "headers", "scope"}
_ATTRIBUTES: dict[str, set[str]] = {
    # No class or id: the host page's own CSS and anchors must not be reachable.
    "*": {"title", "dir", "lang", "align", "valign", "style"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border"},
    "table": {"border", "cellpadding", "cellspacing", "width", "height", "bgcolor", "summary"},
    "td": _CELL_ATTRS,
    "th": _CELL_ATTRS,
    "tr": {"bgcolor", "height"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"width", "size", "noshade"},
}

_STYLE_PROPERTIES = frozenset(
    {
        "color", "background-color", "font", "font-family", "font-size", "font-style",
        "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
        "text-transform", "line-height", "letter-spacing", "word-spacing", "white-space",
        "vertical-align", "direction", "list-style-type", "border", "border-top",
        "border-right", "border-bottom", "border-left", "border-color", "border-style",
        "border-width", "border-collapse", "border-spacing", "border-radius", "padding",
        "padding-top", "padding-right", "padding-bottom", "padding-left", "width",
        "height", "max-width", "min-width", "table-layout", "caption-side",
    }
)  # fmt: skip
# A value may call only colour functions; anything else that could load, run or
# escape (url(), expression(), CSS escapes, comments, at-rules) drops the declaration.
_STYLE_BAD = re.compile(
    r"[\\@<>{}]|/\*|url|expression|behavio|javascript|vbscript|-moz-binding", re.I
)
_STYLE_FUNCTION = re.compile(r"([a-z-]*)\s*\(", re.I)
_STYLE_FUNCTIONS_OK = frozenset({"rgb", "rgba", "hsl", "hsla"})

_LINK_SCHEMES = ("http://", "https://", "mailto:", "tel:")
_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);base64,[A-Za-z0-9+/=\s]*", re.I)
_CID = re.compile(r"cid:[^\s\"'<>\\]+", re.I)


def _filter_style(value: str) -> str | None:
    """Keep only allowlisted, inert declarations of a ``style`` attribute (X4)."""
    kept: list[str] = []
    for declaration in value.split(";"):
        name, sep, val = declaration.partition(":")
        name = name.strip().lower()
        val = val.strip()
        if not sep or name not in _STYLE_PROPERTIES or not val or _STYLE_BAD.search(val):
            continue
        functions = {f.lower() for f in _STYLE_FUNCTION.findall(val)}
        if functions - _STYLE_FUNCTIONS_OK:
            continue
        kept.append(f"{name}: {val}")
    return "; ".join(kept) or None


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Our URL and style rules, applied after ammonia's own checks.

    ammonia has already decoded entities and rejected unknown schemes; this closes what
    it lets through: relative and protocol-relative URLs, remote images, data URLs.
    It must never raise (nh3 would report the error as unraisable).
    """
    if attr == "href":
        href = value.strip()
        return href if href.lower().startswith(_LINK_SCHEMES) else None
    if attr == "src":
        src = value.strip()
        # No remote loads while showing a ticket (X5): only a cid: reference, which the
        # host maps to its own stored attachment (A9), or an inline data image.
        if _CID.fullmatch(src):
            return "cid:" + src[4:]
        if _DATA_IMAGE.fullmatch(src):
            return src
        return None
    if attr == "style":
        return _filter_style(value)
    return value


_CLEANER = nh3.Cleaner(
    tags=set(_TAGS),
    clean_content_tags=set(_DROP_WITH_CONTENT),
    attributes=_ATTRIBUTES,
    attribute_filter=_attribute_filter,
    strip_comments=True,
    link_rel="noopener noreferrer",
    url_schemes={"http", "https", "mailto", "tel", "cid", "data"},
    filter_style_properties=set(_STYLE_PROPERTIES),
)


def sanitize_html(html: str) -> str:
    """Return ``html`` safe to show: no active content and no remote loads.

    Only an allowlist of tags and attributes survives (text formatting, tables, lists,
    links, images). Scripts, frames, objects, forms, ``<meta>``/``<base>``, SVG and style
    blocks are removed with their content; event handlers go; links keep only
    ``http``/``https``/``mailto``/``tel`` targets and get ``rel="noopener noreferrer"``;
    an image keeps its ``src`` only when it is a ``cid:`` reference or an inline data
    image, so showing the result makes no network request; ``style`` attributes keep
    only allowlisted, inert properties. Fragments (no ``<html>`` tag) are fine.

    Args:
        html: The HTML as sent.

    Returns:
        The sanitized HTML fragment.

    .. versionadded:: 0.1.0
    """
    source = html.replace("\x00", "")
    if over_budget(source):
        # Past the budget only the text survives: never the HTML as sent.
        return _text_only(source)
    source = bounded(source)
    try:
        return str(_CLEANER.clean(source))
    except Exception:  # a sanitizer failure must not lose the email
        log.warning("HTML sanitizer failed; keeping the text only", exc_info=True)
        return _text_only(source)


def _text_only(html: str) -> str:
    """The text of ``html`` as inert HTML: escaped, its lines kept by ``<pre>``."""
    return "<pre>" + _html.escape(strip_tags(html)) + "</pre>"


def html_over_budget(html: str) -> bool:
    """Whether ``html`` is too large to read through a DOM (characters or start tags).

    Past :data:`MAX_HTML_CHARS` characters or :data:`MAX_HTML_ELEMENTS` start tags,
    :func:`html_to_text` and :func:`sanitize_html` give the text of a linear tag
    stripper instead: no layout, no links, but bounded time and memory.

    Args:
        html: The HTML as sent.

    Returns:
        ``True`` when the document takes the tag-stripping fallback.

    .. versionadded:: 0.1.0
    """
    return over_budget(html.replace("\x00", "") if "\x00" in html else html)


# ---------------------------------------------------------------------------------------
# HTML to text

_SKIP = _DROP_WITH_CONTENT | {"head", "option", "datalist", "button", "input", "map"}
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "center", "dd", "details",
        "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer",
        "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "legend", "li", "main",
        "menu", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    }
)  # fmt: skip
# Blocks set off by a blank line, as paragraphs are in plain-text mail.
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "dl", "hr"}
)
_LISTS = frozenset({"ul", "ol", "menu", "dir"})
_SPACES = re.compile(r"[ \t\n\r\f\v\xa0\u200b\ufeff]+")
_SPACE_CHARS = " \t\n\r\f\v\xa0\u200b\ufeff"  # the characters _SPACES matches
_HIDDEN = re.compile(r"display\s*:\s*none", re.I)


# Elements whose ``style`` can hide them: display:none preheaders and tracking blocks.
_STYLED = frozenset({"div", "span", "td", "table", "p", "tr", "a"})
# Every style _HIDDEN matches contains "none" in some ASCII letter case (no other
# character matches n, o or e under re.I), so one lexbor query over the decoded
# attribute values finds every candidate; _HIDDEN then decides, as before.
_MAY_HIDE = '[style*="none" i]'
_CELL_GAP = re.compile(r" *\t[ \t]*")
_SPACE_RUN = re.compile(r" {2,}")

# What a node does to the layout. The walk classifies each node by one dict lookup on
# its lexbor tag id, instead of testing its name against the sets above on the way in
# and again on the way out. Codes from _PARA to _LINK also act when the element ends;
# _STYLED_CODE is added to the code of an element in _STYLED.
_SKIPPED = -1  # neither it nor anything inside it is text
_INLINE = 0
_BREAK = 1
_CELL = 2
_PARA = 3
_QUOTE = 4
_PRE = 5
_LIST = 6
_ITEM = 7
_LINE = 8
_LINK = 9
_TEXT = 10
_STYLED_CODE = 16


def _action(tag: str) -> int:
    """The layout code of a node named ``tag``; the order of the tests decides overlaps."""
    if tag == "-text":
        return _TEXT
    if tag in _SKIP or tag in {"-comment", "-doctype", "-document"}:
        return _SKIPPED
    if tag == "br":
        code = _BREAK
    elif tag in _PARAGRAPH:
        code = _QUOTE if tag == "blockquote" else _PRE if tag == "pre" else _PARA
    elif tag in _LISTS:
        code = _LIST
    elif tag == "li":
        code = _ITEM
    elif tag in _BLOCK:
        code = _LINE
    elif tag in {"td", "th"}:
        code = _CELL
    elif tag == "a":
        code = _LINK
    else:
        code = _INLINE
    return code + _STYLED_CODE if tag in _STYLED else code


# Every name with a code other than plain _INLINE; any other name is inline.
_CODES: dict[str, int] = {
    tag: _action(tag)
    for tag in _SKIP
    | _BLOCK
    | _PARAGRAPH
    | _LISTS
    | _STYLED
    | {"-text", "-comment", "-doctype", "-document", "br", "td", "th", "a"}
}


class _TextWriter:
    """Collects lines of text, with quote prefixes, bullets and blank-line control."""

    __slots__ = ("bullet", "has_text", "indent", "lines", "links", "parts", "pre", "quote")

    def __init__(self) -> None:
        self.lines: list[str] = []
        # Invariant: ``parts`` is empty exactly when ``has_text`` is false.
        self.parts: list[str] = []
        self.has_text = False
        self.quote = 0
        self.indent = 0
        self.pre = 0
        self.bullet = ""
        self.links: list[tuple[str, list[str]]] = []

    def text(self, value: str) -> None:
        if not value:
            return
        if not self.pre:
            value = _SPACES.sub(" ", value)
            if not self.has_text:
                value = value.lstrip(" ")
                if not value:
                    return
            self._add(value)
            return
        first = True
        for piece in value.split("\n"):
            if not first:
                self._finish()
            first = False
            if piece:
                self._add(piece)

    def write(self, run: list[str]) -> None:
        """Add the text the walk collected since the last layout event.

        Adding the pieces one by one with :meth:`text` and :meth:`cell` gives the same
        parts as adding them joined: outside ``<pre>`` the walk has already collapsed
        each piece's whitespace, so no piece holds a tab, and it puts a tab for each
        cell only while no link is open (a link's label must not see it); leading
        spaces and tabs are what text() and cell() would drop before the first text.
        In ``<pre>`` the pieces are as parsed, cells are not in the run, and a joined
        text breaks at the same newlines.
        """
        if self.pre:
            self.text("".join(run))
            return
        value = "".join(run)
        if not self.has_text:
            value = value.lstrip(" \t")
            if not value:
                return
        self._add(value)

    def _add(self, value: str) -> None:
        if not self.has_text:
            if self.bullet:
                self.parts.append(self.bullet)
                self.bullet = ""
            self.has_text = True
        self.parts.append(value)
        for _, buffer in self.links:
            buffer.append(value)

    def cell(self) -> None:
        if self.has_text:
            self.parts.append("\t")

    def _finish(self) -> None:
        line = "".join(self.parts)
        if self.pre:
            line = line.rstrip()
        else:
            # The membership tests skip regex calls that would change nothing.
            if "\t" in line and (" \t" in line or "\t " in line or "\t\t" in line):
                line = _CELL_GAP.sub("\t", line)
            line = line.strip(" \t")
            if "  " in line:
                line = _SPACE_RUN.sub(" ", line)
        prefix = self._prefix()
        self.lines.append(prefix + line if line else prefix.rstrip())
        self.parts = []
        self.has_text = False

    def _prefix(self) -> str:
        if not self.quote and self.indent < 2:
            return ""
        return "> " * self.quote + "  " * (self.indent - 1 if self.indent > 1 else 0)

    def soft_break(self) -> None:
        if self.has_text:
            self._finish()

    def paragraph(self) -> None:
        if self.has_text:
            self._finish()
        if self.lines and self.lines[-1].strip("> "):
            self.lines.append(self._prefix().rstrip())

    def start(self, action: int) -> None:
        """Apply the start of a block, break or list element (layout code ``action``)."""
        if action == _LINE:
            self.soft_break()
        elif action == _PARA:
            self.paragraph()
        elif action == _BREAK:
            self._finish()  # a line even when empty: <br><br> leaves a blank line
        elif action == _ITEM:
            self.soft_break()
            self.bullet = "- "
        elif action == _LIST:
            if self.indent == 0 and not self.bullet:
                self.paragraph()
            else:
                self.soft_break()
            self.indent += 1
        elif action == _QUOTE:
            self.paragraph()
            self.quote += 1
        elif action == _PRE:
            self.paragraph()
            self.pre += 1

    def end(self, action: int) -> None:
        """Apply the end of an element whose layout code is ``action`` (``_PARA`` up)."""
        if action == _LINE:
            self.soft_break()
        elif action == _PARA:
            self.paragraph()
        elif action == _ITEM:
            self.soft_break()
            self.bullet = ""
        elif action == _LINK:
            if self.links:
                href, buffer = self.links.pop()
                suffix = _link_suffix(href, "".join(buffer))
                if suffix:
                    self.text(suffix)
        elif action == _LIST:
            self.soft_break()
            self.indent = max(0, self.indent - 1)
            if self.indent == 0:
                self.paragraph()
        elif action == _QUOTE:
            self.soft_break()
            self.quote = max(0, self.quote - 1)
            self.paragraph()
        elif action == _PRE:
            self.soft_break()
            self.pre = max(0, self.pre - 1)
            self.paragraph()

    def result(self) -> str:
        self.soft_break()
        kept: list[str] = []
        for line in self.lines:
            blank = not line.strip("> ")
            if blank and (not kept or not kept[-1].strip("> ")):
                continue
            kept.append(line)
        while kept and not kept[-1].strip("> "):
            kept.pop()
        return "\n".join(kept).replace("\x00", "")


def _link_suffix(href: str, label: str) -> str:
    url = href.strip()
    if not url.lower().startswith(("http://", "https://", "mailto:")):
        return ""
    label = _SPACES.sub(" ", label).strip()
    if not label:
        return ""

    def norm(value: str) -> str:
        value = value.lower().rstrip("/")
        for prefix in ("mailto:", "https://", "http://", "www."):
            value = value.removeprefix(prefix)
        return value

    return "" if norm(url) == norm(label) else f" ({url})"


def _hidden_elements(root: LexborNode) -> set[int]:
    """The ``mem_id`` of every element under ``root`` that its style hides."""
    hidden: set[int] = set()
    for node in root.css(_MAY_HIDE):
        if node.tag in _STYLED:
            style = node.attributes.get("style")
            if style and _HIDDEN.search(style):
                hidden.add(node.mem_id)
    return hidden


def _collapse(value: str) -> str:
    """What :meth:`_TextWriter.text` does to a piece outside ``<pre>``, done early.

    A printable piece without a double space has nothing to collapse; most other
    pieces are the newline between two tags, which collapses to one space.
    """
    if value.isprintable() and "  " not in value:
        return value
    return _SPACES.sub(" ", value) if value.strip(_SPACE_CHARS) else " "


def _walk(root: LexborNode, out: _TextWriter) -> None:
    """Write the text of ``root``'s subtree to ``out``, in document order.

    Iterative, with an explicit stack: the tree can be hundreds of levels deep, deeper
    than the recursion limit would allow. This loop runs once per node (about 700 in a
    20 KB email), so it keeps the Python work per node small: a node is classified by
    one lookup of its tag id, hidden elements are found beforehand by one lexbor query
    rather than by reading every element's attributes, the text (and cell tabs)
    between two layout events goes to ``out`` in one call (see
    :meth:`_TextWriter.write`), and an element holding just one text reads it without
    a trip down and up the stack.
    """
    hidden = _hidden_elements(root)
    # Tag id -> code, for this document: ids of unknown tags are per document.
    codes: dict[int, int] = {}
    stack: list[tuple[LexborNode, int]] = []
    pending: list[str] = []  # text since the last layout event
    node = root
    while True:
        tag_id = node.tag_id
        action = codes.get(tag_id)
        if action is None:
            tag = node.tag
            if tag is None:  # an element without a name, or a node of another kind
                action = _INLINE if node.is_element_node else _SKIPPED
            else:
                action = codes[tag_id] = _CODES.get(tag, _INLINE)
        if action == _TEXT:
            value = node.text_content
            if value:
                pending.append(value if out.pre else _collapse(value))
        elif action != _SKIPPED:
            if action >= _STYLED_CODE:
                action -= _STYLED_CODE
                if hidden and node.mem_id in hidden:
                    action = _SKIPPED
            if action > _INLINE:
                if action == _CELL and not out.pre and not out.links:
                    pending.append("\t")  # see _TextWriter.write
                else:
                    if pending:
                        out.write(pending)
                        pending.clear()
                    if action == _CELL:
                        out.cell()
                    elif action == _LINK:
                        out.links.append((node.attributes.get("href") or "", []))
                    else:
                        out.start(action)
            if action != _SKIPPED:
                child = node.first_child
                if child is not None:
                    if child.next is not None or not child.is_text_node:
                        stack.append((node, action))
                        node = child
                        continue
                    # The usual table cell or paragraph: one text inside.
                    value = child.text_content
                    if value:
                        pending.append(value if out.pre else _collapse(value))
                if action >= _PARA:
                    if pending:
                        out.write(pending)
                        pending.clear()
                    out.end(action)
        # On to the next node in document order, ending the elements left behind.
        while True:
            if not stack:
                if pending:
                    out.write(pending)
                return
            following = node.next
            if following is not None:
                node = following
                break
            node, action = stack.pop()
            if action >= _PARA:
                if pending:
                    out.write(pending)
                    pending.clear()
                out.end(action)


def html_to_text(html: str) -> str:
    """Return the readable text of ``html``.

    Block elements and ``<br>`` start new lines, paragraphs are set off by one blank
    line, list items start with ``- ``, table rows take one line with their cells
    separated by tabs, quoted blocks (``<blockquote>``) are prefixed with ``> ``, and
    links read ``text (url)`` when the url is not the text itself. Scripts, styles, the
    head and hidden elements are dropped; entities are decoded, whitespace collapsed
    and NUL characters removed.

    Args:
        html: The HTML as sent (a full document or a fragment).

    Returns:
        The text, with at most one blank line in a row and no leading or trailing
        blank lines.

    .. versionadded:: 0.1.0
    """
    source = html.replace("\x00", "") if "\x00" in html else html
    if over_budget(source):
        return strip_tags(source)
    source = bounded(source)
    try:
        root = LexborHTMLParser(source).root
    except Exception:  # an unreadable document still has text
        log.warning("HTML parser failed; stripping tags instead", exc_info=True)
        return strip_tags(source)
    if root is None:
        return ""
    out = _TextWriter()
    _walk(root, out)
    return out.result()
