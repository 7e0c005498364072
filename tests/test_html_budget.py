"""#13 item 1: HTML is read within a budget, past it by a linear tag stripper, never by a DOM.

A document past ``MAX_HTML_CHARS`` characters or ``MAX_HTML_ELEMENTS`` start tags keeps its
text (tags dropped, entities decoded, blocks as lines) and the email records
``html-over-budget``; the sanitized form past the budget is that text, escaped, and never
the HTML as sent. The last test runs the real command on a 25 MB HTML-only email under a
512 MB address-space limit, which killed it before the budget existed.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from halomail.inbound._html_bounds import MAX_ATTRIBUTES, bounded, strip_tags
from halomail.inbound.defects import HTML_OVER_BUDGET
from halomail.inbound.html import (
    MAX_HTML_CHARS,
    MAX_HTML_ELEMENTS,
    html_over_budget,
    html_to_text,
    sanitize_html,
)
from halomail.inbound.parse import parse_email
from halomail.tickets.sqlite import SQLiteTicketRepository

MEMORY_LIMIT = 512 * 1024 * 1024
HEAD = b"From: Mallory <m@example.com>\r\nTo: support@example.com\r\nSubject: HTML only\r\n"


def _html_email(body: str) -> bytes:
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode()


def _too_many_elements(prefix: str = "") -> str:
    return prefix + "<p>x" * (MAX_HTML_ELEMENTS + 1)


def test_the_budget_counts_start_tags_and_characters() -> None:
    """Past either limit the document is over budget; at both limits it is not."""
    assert not html_over_budget("<p>x" * MAX_HTML_ELEMENTS)
    assert html_over_budget(_too_many_elements())
    assert not html_over_budget("a" * MAX_HTML_CHARS)
    assert html_over_budget("a" * (MAX_HTML_CHARS + 1))
    # End tags cost nothing of the element budget: they open no element.
    assert not html_over_budget("<b>x</b>" * MAX_HTML_ELEMENTS)


def test_the_budget_and_the_rewrite_decide_exactly_at_their_limits() -> None:
    """Each limit holds at its edge, where the checks skip counting what cannot pass it."""
    # As many "<" as the element budget allows, the document no longer than that: within.
    assert not html_over_budget("<" * MAX_HTML_ELEMENTS)
    assert html_over_budget("<" * (MAX_HTML_ELEMENTS + 1))
    # Up to 2,500 start tags go to the parser untouched; one more and it is rewritten
    # (closed, so it no longer equals what came in).
    assert bounded("<b>" * 2500) == "<b>" * 2500
    assert bounded("<b>" * 2501) != "<b>" * 2501
    many_ends = "</b>" * 3000 + "<b>" * 2500  # end tags open nothing
    assert bounded(many_ends) == many_ends
    # The shortest long tag: "<", a letter and 8,192 characters, the whole document. It
    # never ends, so the rewrite drops it; one character shorter, it goes untouched.
    assert bounded("<a" + "b" * 8192) == ""
    assert bounded("<a" + "b" * 8191) == "<a" + "b" * 8191


def test_text_past_the_budget_keeps_words_lines_and_entities() -> None:
    """Past the budget the text is still all there: blocks are lines, entities decoded."""
    html = (
        "<html><head><title>Newsletter</title><style>p { color: red }</style></head><body>"
        "<div>Printer on <b>fire</b> &amp; smoking</div><!-- tracking -->"
        "<script>alert(1)</script><p>Room&nbsp;12<br>Second floor"
        + "<span>.</span>"
        * (MAX_HTML_ELEMENTS + 1)
    )
    text = html_to_text(html)
    assert text.splitlines() == [
        "Printer on fire & smoking",
        "Room 12",
        "Second floor" + "." * (MAX_HTML_ELEMENTS + 1),
    ]
    assert "<" not in text
    for hidden in ("Newsletter", "color", "tracking", "alert"):
        assert hidden not in text


def test_the_stripper_drops_the_rest_of_an_unterminated_script_or_comment() -> None:
    """An unterminated script or comment hides what follows it, as a browser would."""
    assert strip_tags("<p>before<script>steal()") == "before"
    assert strip_tags("<p>before<!-- never closed <p>after") == "before"
    assert strip_tags("<P>one</P><STYLE>x{}</STYLE><P>two") == "one\ntwo"
    assert strip_tags("1 < 2 and 3 > 2") == "1 < 2 and 3 > 2"


def test_sanitized_html_past_the_budget_is_its_escaped_text_only() -> None:
    """Past the budget sanitize_html gives the text in <pre>: no tag of the source survives."""
    hostile = (
        '<img src="https://tracker.example/p.gif" onerror="alert(1)">'
        "<a href=\"javascript:alert(2)\">click</a> 1 &lt; 2 <iframe src='x'></iframe>"
    )
    cleaned = sanitize_html(_too_many_elements(hostile))
    assert cleaned.startswith("<pre>click 1 &lt; 2")
    assert cleaned.endswith("</pre>")
    inner = cleaned.removeprefix("<pre>").removesuffix("</pre>")
    assert "<" not in inner
    assert ">" not in inner
    for gone in ("tracker.example", "onerror", "javascript", "iframe"):
        assert gone not in cleaned


def test_an_email_past_the_budget_records_it_and_keeps_its_text() -> None:
    """parse_email records html-over-budget; the text and the sanitized HTML are the text."""
    email = parse_email(_html_email(_too_many_elements("<p>Printer on fire in room 12")))
    assert HTML_OVER_BUDGET in email.defects
    assert email.quarantine_reason is None
    assert email.text.startswith("Printer on fire in room 12\nx\nx\n")
    assert email.html is not None
    assert email.html.startswith("<pre>Printer on fire in room 12")


def test_an_ordinary_email_is_read_through_the_dom_without_the_defect() -> None:
    """Under the budget nothing changes: layout (lists, links) and no defect."""
    email = parse_email(
        _html_email('<ul><li>one</li><li><a href="https://x.example/a">two</a></li></ul>')
    )
    assert HTML_OVER_BUDGET not in email.defects
    assert email.text == "- one\n- two (https://x.example/a)"


def test_a_text_part_beside_html_past_the_budget_is_kept_and_the_defect_recorded() -> None:
    """With a text part the text is the text part; the over-budget HTML is still recorded."""
    raw = (
        HEAD + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe plain text.\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n" + _too_many_elements().encode() + b"\r\n--b--\r\n"
    )
    email = parse_email(raw)
    assert email.text.strip() == "The plain text."
    assert HTML_OVER_BUDGET in email.defects


def test_an_attribute_flood_keeps_the_first_of_each_name_up_to_the_cap() -> None:
    """A tag with thousands of attributes is rewritten with the first MAX_ATTRIBUTES names."""
    attributes = " ".join(f'a{i}="v"' for i in range(5000))
    rewritten = bounded(f'<td title="first" title="second" {attributes}>cell</td>')
    tag = rewritten[: rewritten.index(">") + 1]
    assert tag.count('="') == MAX_ATTRIBUTES
    assert 'title="first"' in tag
    assert "second" not in tag
    assert html_to_text(f"<p {attributes}>Hello</p>") == "Hello"


def _maildir_with(root: Path, raw: bytes) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / "inbox" / sub).mkdir(parents=True)
    (root / "inbox" / "new" / "1700000000.M1P1.big").write_bytes(raw)
    config = root / "halomail.toml"
    config.write_text(
        '[storage]\nurl = "sqlite:///halomail.db"\n\n'
        '[outgoing]\ntransport = "maildir"\npath = "outbox"\n'
        'from_address = "support@helpdesk.example"\n\n'
        '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n'
        'processed = "move:Deleted Items"\n',
        encoding="utf-8",
    )
    return config


def _limit_address_space() -> None:
    """In the child, before exec: at most 512 MB of virtual memory (``ulimit -v``)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.slow
def test_a_25_mb_html_only_email_becomes_a_ticket_under_a_512_mb_memory_limit(
    tmp_path: Path,
) -> None:
    """`halomail run --once` under RLIMIT_AS 512 MB turns the 25 MB <p>x email into a ticket.

    ``halomail run --once`` itself needs under 64 MB of address space on an empty
    mailbox; before the budget this email cost 2.3 GB and the child died of MemoryError.
    """
    body = "<p>Printer on fire in room 12" + "<p>x" * 6_250_000
    config = _maildir_with(tmp_path, _html_email(body))
    ran = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        preexec_fn=_limit_address_space,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "MemoryError" not in ran.stderr
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    tickets = repository.list_tickets()
    repository.close()
    assert [ticket.summary for ticket in tickets] == ["HTML only"]
    assert tickets[0].details.startswith("Printer on fire in room 12")
    assert list((tmp_path / "inbox" / "new").iterdir()) == []
