"""HTML: sanitizing what customers send, and reading text out of it.

:func:`sanitize_html` makes an email's HTML safe to show inside a helpdesk page: nh3
(ammonia) with an explicit allowlist, URL checks of our own, a small CSS allowlist, and no
remote loads at all. :func:`html_to_text` reads the HTML with lexbor and lays its text out
as a person would read it.

Both stay fast on hostile input (X8). ammonia's and lexbor's tree builders take time
proportional to the number of tags times the nesting depth, so a document with many start
tags is first rewritten by a linear tokenizer of ours into well-formed markup no deeper
than :data:`MAX_DEPTH` (see :func:`_flatten`); nh3 still sanitizes the result, so the
rewrite never has to be right about safety, only about depth.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import html as _html
import logging
import re

import nh3
from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = ["MAX_DEPTH", "html_to_text", "sanitize_html"]

log = logging.getLogger(__name__)

MAX_DEPTH = 256
"""Deepest element nesting kept when a large document is rewritten before parsing."""

# Below this many start tags the parsers' worst case (tags x depth) stays well under a
# second, so the document goes to them untouched; above it, _flatten bounds the depth.
_FAST_START_TAGS = 2500

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
    source = _bounded(html.replace("\x00", ""))
    try:
        return str(_CLEANER.clean(source))
    except Exception:  # a sanitizer failure must not lose the email
        log.warning("HTML sanitizer failed; keeping the text only", exc_info=True)
        return "<pre>" + _html.escape(_plain_fallback(source)) + "</pre>"


# ---------------------------------------------------------------------------------------
# Bounding the depth of large documents (X8)

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


def _bounded(html: str) -> str:
    """``html`` itself when it is small enough, else its depth-bounded rewrite."""
    start_tags = html.count("<") - html.count("</")
    if start_tags <= _FAST_START_TAGS:
        return html
    return _flatten(html, MAX_DEPTH)


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
                for key, value in attrs
                if _SAFE_NAME.match(key)
            )
            out.append(f"<{name}{rendered}>")
        if name not in _VOID:
            stack.append(name)
            open_count[name] = open_count.get(name, 0) + 1
    while stack:
        close_top()
    return "".join(out)


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


_TAG_STRIP = re.compile(r"<[^>]*>?")


def _plain_fallback(html: str) -> str:
    """Text of ``html`` by stripping tags: the last resort when a parser fails."""
    return _html.unescape(_TAG_STRIP.sub(" ", html))


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
_HIDDEN = re.compile(r"display\s*:\s*none", re.I)


class _TextWriter:
    """Collects lines of text, with quote prefixes, bullets and blank-line control."""

    def __init__(self) -> None:
        self.lines: list[str] = []
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
                self.hard_break()
            first = False
            if piece:
                self._add(piece)

    def _add(self, value: str) -> None:
        if not self.has_text and self.bullet:
            self.parts.append(self.bullet)
            self.bullet = ""
        self.parts.append(value)
        self.has_text = True
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
            line = re.sub(r" *\t[ \t]*", "\t", line).strip(" \t")
            line = re.sub(r" {2,}", " ", line)
        self.lines.append(self._prefix() + line if line else self._prefix().rstrip())
        self.parts = []
        self.has_text = False

    def _prefix(self) -> str:
        return "> " * self.quote + "  " * max(0, self.indent - 1)

    def soft_break(self) -> None:
        if self.has_text:
            self._finish()
        else:
            self.parts = []

    def hard_break(self) -> None:
        self._finish()

    def paragraph(self) -> None:
        self.soft_break()
        if self.lines and self.lines[-1].strip("> "):
            self.lines.append(self._prefix().rstrip())

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


def _enter(node: LexborNode, tag: str, out: _TextWriter) -> bool:
    """Handle an element's start; False when its content must be skipped."""
    if tag in _SKIP:
        return False
    attrs = node.attributes if tag in {"div", "span", "td", "table", "p", "tr", "a"} else {}
    style = attrs.get("style")
    if style and _HIDDEN.search(style):
        return False
    if tag == "br":
        out.hard_break()
    elif tag in _PARAGRAPH:
        out.paragraph()
        if tag == "blockquote":
            out.quote += 1
        elif tag == "pre":
            out.pre += 1
    elif tag in _LISTS:
        if out.indent == 0 and not out.bullet:
            out.paragraph()
        else:
            out.soft_break()
        out.indent += 1
    elif tag == "li":
        out.soft_break()
        out.bullet = "- "
    elif tag in _BLOCK:
        out.soft_break()
    elif tag in {"td", "th"}:
        out.cell()
    elif tag == "a":
        out.links.append((attrs.get("href") or "", []))
    return True


def _exit(tag: str, out: _TextWriter) -> None:
    if tag in _PARAGRAPH:
        if tag == "blockquote":
            out.soft_break()
            out.quote = max(0, out.quote - 1)
        elif tag == "pre":
            out.soft_break()
            out.pre = max(0, out.pre - 1)
        out.paragraph()
    elif tag in _LISTS:
        out.soft_break()
        out.indent = max(0, out.indent - 1)
        if out.indent == 0:
            out.paragraph()
    elif tag in _BLOCK:
        out.soft_break()
        if tag == "li":
            out.bullet = ""
    elif tag == "a" and out.links:
        href, buffer = out.links.pop()
        suffix = _link_suffix(href, "".join(buffer))
        if suffix:
            out.text(suffix)


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
    source = _bounded(html.replace("\x00", ""))
    try:
        root = LexborHTMLParser(source).root
    except Exception:  # an unreadable document still has text
        log.warning("HTML parser failed; stripping tags instead", exc_info=True)
        return _SPACES.sub(" ", _plain_fallback(source)).strip()
    if root is None:
        return ""
    out = _TextWriter()
    # Iterative walk: the tree can be hundreds of levels deep, deeper than the
    # recursion limit would allow.
    stack: list[tuple[LexborNode, str | None]] = [(root, None)]
    while stack:
        node, leaving = stack.pop()
        if leaving is not None:
            _exit(leaving, out)
            continue
        if node.is_text_node:
            out.text(node.text_content or "")
            continue
        if not node.is_element_node:
            continue
        tag = node.tag or ""
        if not _enter(node, tag, out):
            continue
        stack.append((node, tag))
        children: list[LexborNode] = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((c, None) for c in reversed(children))
    return out.result()
