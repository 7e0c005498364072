"""#18: parse_email does only what is read, reads header blocks in one pass, and keeps a
large text body under twice its size in memory.

Laziness is observed, not faked: ``sys.setprofile`` records which functions run while
an email is parsed and while its fields are read, and the results are compared with
what the helpers (HTML to text, quote stripping, header decoding) give when called
directly. Memory is measured with ``tracemalloc`` (a bound on bytes, not on time).
"""

from __future__ import annotations

import email
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable
from email.policy import compat32
from types import FrameType
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail.inbound import _headers, _mime
from halomail.inbound.html import html_to_text
from halomail.inbound.models import InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email
from halomail.inbound.reply import strip_reply
from tests.conftest import TEXT_LINE, big_text_email

HTML_REPLY = (
    b"From: =?utf-8?q?Jos=C3=A9?= <jose@customer.example>\r\n"
    b"To: support@helpdesk.example\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= machine\r\n"
    b"X-Ticket-Note: =?iso-8859-1?q?r=E9sum=E9?=\r\n"
    b"X-Other-Note: =?utf-8?b?w6k=?=\r\n"
    b"Message-ID: <lazy-1@customer.example>\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><body><p>It works now, thanks.</p>"
    b"<p>On Monday, Support wrote:</p>"
    b"<blockquote><p>Please restart the machine.</p></blockquote></body></html>\r\n"
)


def calls_during(action: Callable[[], Any]) -> Counter[str]:
    """The names of the Python functions that ran during ``action()``, with their counts."""
    seen: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            seen[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return seen


def test_html_to_text_and_quote_stripping_run_only_when_their_field_is_read() -> None:
    """Parsing converts no HTML and strips no quotes; the first read does, once."""
    parsed: list[InboundEmail] = []
    during_parse = calls_during(lambda: parsed.append(parse_email(HTML_REPLY)))
    assert during_parse["html_to_text"] == 0
    assert during_parse["strip_reply"] == 0
    (email,) = parsed

    reading_text = calls_during(lambda: email.text)
    assert reading_text["html_to_text"] == 1
    assert reading_text["strip_reply"] == 0
    reading_new_text = calls_during(lambda: email.new_text)
    assert reading_new_text["strip_reply"] == 1
    again = calls_during(lambda: (email.text, email.new_text, email.defects))
    assert again["html_to_text"] == again["strip_reply"] == 0

    assert email.html_source is not None
    assert email.text == html_to_text(email.html_source)
    assert email.new_text == strip_reply(email.text)
    assert "restart the machine" in email.text
    assert email.new_text.startswith("It works now, thanks.")
    assert "restart the machine" not in email.new_text


def test_reading_defects_works_out_the_deferred_fields_first() -> None:
    """``defects`` is complete whenever it is read: it runs the deferred steps first."""
    email = parse_email(HTML_REPLY)
    reading = calls_during(lambda: email.defects)
    assert reading["html_to_text"] == 1
    assert reading["strip_reply"] == 1
    assert email.defects == ()


ENVELOPE = (
    b"From: Ann <ann@customer.example>\r\n"
    b"To: support@helpdesk.example, not an address\r\n"
    b"Cc: Bob <bob@customer.example>\r\n"
    b"Return-Path: <bounces@customer.example>\r\n"
    b"Message-ID: <>\r\n"
    b"In-Reply-To: <a@x.example>\r\n"
    b"References: <b@x.example> <a@x.example>\r\n"
    b"Date: the day after tomorrow\r\n"
    b"Content-Type: multipart/mixed\r\n\r\n"
    b"No boundary, so the body is all there is.\r\n"
)


def test_addresses_thread_ids_and_the_date_are_parsed_on_first_read_once() -> None:
    """Parsing reads only the sender; the first read of another field parses them all once."""
    parsed: list[InboundEmail] = []
    during_parse = calls_during(lambda: parsed.append(parse_email(ENVELOPE)))
    assert during_parse["parse_addresses"] == 1  # the sender only
    assert during_parse["parse_date"] == 0
    assert during_parse["message_ids"] == 0
    (email,) = parsed

    reading = calls_during(lambda: email.cc)
    assert reading["parse_addresses"] == 3  # To, Cc and Return-Path
    assert reading["parse_date"] == 1
    assert reading["message_ids"] == 2
    again = calls_during(lambda: (email.to, email.date, email.references, email.defects))
    assert again["parse_addresses"] == again["parse_date"] == again["message_ids"] == 0

    assert [a.addr_spec for a in email.to] == ["support@helpdesk.example"]
    assert [a.addr_spec for a in email.cc] == ["bob@customer.example"]
    assert email.return_path == "bounces@customer.example"
    assert email.in_reply_to == ("a@x.example",)
    assert email.references == ("b@x.example", "a@x.example")
    assert email.date is None


def test_the_deferred_fields_defects_are_listed_where_parsing_found_them() -> None:
    """Read first or last, the defects come in the order of the headers, then the body's."""
    expected = (
        "invalid-address",
        "invalid-message-id",
        "invalid-date",
        "missing-boundary",
        "multipart-invariant-violation",
    )
    assert parse_email(ENVELOPE).defects == expected
    email = parse_email(ENVELOPE)
    assert (email.to, email.date) == (email.to, None)
    assert email.defects == expected
    assert attrs.evolve(email, subject="changed").defects == expected


def test_the_repr_shows_the_deferred_fields_as_read() -> None:
    """A parsed email's repr shows its addresses, date and thread ids, not placeholders."""
    shown = repr(parse_email(ENVELOPE))
    assert "to=(Address(addr_spec='support@helpdesk.example'" in shown
    assert "references=('b@x.example', 'a@x.example')" in shown
    assert "return_path='bounces@customer.example'" in shown
    assert "defects=('invalid-address', 'invalid-message-id', 'invalid-date'" in shown
    assert ", _" not in shown  # no stored placeholder (`_to=()`) shown


def test_header_lookups_decode_only_the_headers_asked_for() -> None:
    """Parsing decodes the subject and sender; a look-up decodes its own name only."""
    parsed: list[InboundEmail] = []
    during_parse = calls_during(lambda: parsed.append(parse_email(HTML_REPLY)))
    (email,) = parsed
    without_notes = b"".join(
        line for line in HTML_REPLY.splitlines(keepends=True) if not line.startswith(b"X-")
    )
    # Two more encoded headers cost the parse no decoding: they wait for a look-up.
    assert during_parse["decode_words"] > 0
    assert (
        during_parse["decode_words"]
        == calls_during(lambda: parse_email(without_notes))["decode_words"]
    )
    assert email.subject == "Café machine"
    assert email.sender is not None
    assert email.sender.display_name == "José"

    lookup = calls_during(lambda: email.header("x-ticket-note"))
    assert lookup["decode_words"] == 1
    assert email.header("X-Ticket-Note") == "résumé"
    assert email.header_all("x-other-note") == ["é"]
    assert email.header("X-Missing") is None
    assert email.headers == tuple(
        (name, _headers.decode_value(raw)) for name, raw in _raw_top_headers(HTML_REPLY)
    )


def _raw_top_headers(raw: bytes) -> list[tuple[str, str]]:
    """The top-level headers as the MIME parser stores them."""
    return list(_mime.parse(raw, ParseLimits())._headers)


def test_a_parsed_email_compares_hashes_and_evolves_like_one_built_by_hand() -> None:
    """Deferred fields take part in ==, hash and attrs.evolve as their values."""
    email = parse_email(HTML_REPLY)
    by_hand = InboundEmail(
        message_id=email.message_id,
        sender=email.sender,
        subject=email.subject,
        text=email.text,
        size=email.size,
        sha256=email.sha256,
        to=email.to,
        html_source=email.html_source,
        new_text=email.new_text,
        headers=email.headers,
        defects=email.defects,
    )
    assert parse_email(HTML_REPLY) == by_hand
    assert hash(parse_email(HTML_REPLY)) == hash(by_hand)
    changed = attrs.evolve(parse_email(HTML_REPLY), subject="Other")
    assert changed.text == email.text
    assert changed.header("X-Ticket-Note") == "résumé"
    assert changed != email


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header_value=st.binary(max_size=60),
    body=st.binary(max_size=300),
    html=st.booleans(),
)
def test_deferred_fields_hold_no_nul(header_value: bytes, body: bytes, html: bool) -> None:
    """Text, new text and every decoded header are free of NUL, however they are read."""
    kind = b"text/html" if html else b"text/plain"
    raw = (
        b"From: a@customer.example\r\nX-Note: " + header_value.replace(b"\n", b" ") + b"\r\n"
        b"Content-Type: " + kind + b"; charset=utf-8\r\n\r\n" + b"\x00" + body
    )
    email = parse_email(raw)
    assert "\x00" not in email.text
    assert "\x00" not in email.new_text
    assert all("\x00" not in name + value for name, value in email.headers)
    assert all("\x00" not in value for value in email.header_all("X-Note"))


# -- header blocks read in one pass ------------------------------------------------

BLOCKS = [
    "Subject: plain\r\nFrom: a@b.example\r\n",
    "Subject:\r\nX-Empty:   \r\nX-Tab:\tvalue\r\n",
    "Subject: folded\r\n  across\r\n\tthree lines\r\nTo: x@y.example\r\n",
    "Subject:   \r\n  value on the next line\r\n",
    "Received: from a\n by b\n with c; Mon, 1 Jan 2024 00:00:00 +0000\nX-A: 1\n",
    "Subject: old mac\rX-B: lone CR\r  folded\r",
    "Subject: trailing blanks   \r\n \r\nX-C: after a blank continuation\r\n",
    "X-8bit: caf\udcc3\udca9\r\nX-Last: no line break",
    "X-Colons: a:b:c\r\nX-Empty-Name-Later: x\r\n",
]


def _fresh_part() -> _mime.BoundedMessage:
    return _mime.BoundedMessage(_mime._Budget(ParseLimits()))


def _held(part: _mime.BoundedMessage) -> tuple[list[Any], list[str]]:
    """The headers and the defect types a part holds."""
    return list(part._headers), [type(defect).__name__ for defect in part.defects]


def _store_in_one_pass(block: str) -> tuple[list[Any], list[str]]:
    part = _fresh_part()
    part.set_many(_mime._FIELD.findall(block))
    return _held(part)


def _store_line_by_line(block: str) -> tuple[list[Any], list[str]]:
    part = _fresh_part()
    _mime._store_headers(part, _mime._TEXT_LINE.findall(block))
    return _held(part)


def test_a_plain_header_block_is_stored_exactly_as_line_by_line() -> None:
    """The one-regex reading of a plain block stores what the line-by-line reading does."""
    for block in BLOCKS:
        assert _mime._plain_block(block), block
        assert _store_in_one_pass(block) == _store_line_by_line(block), block


def test_an_mbox_envelope_line_first_is_kept_and_the_fields_read_as_the_stdlib_does() -> None:
    """A block opening with ``From `` (mbox) gives the stdlib's envelope and fields."""
    raw = (
        b"From rssfeeds@example.com  Mon Sep 23 12:00:00 2002\r\n"
        b"Return-Path: <a@example.com>\r\nSubject: folded\r\n  twice\r\nX-A:\r\n\r\nbody\r\n"
    )
    ours = _mime.parse(raw, ParseLimits())
    stdlib = email.message_from_bytes(raw, policy=compat32)
    assert ours.get_unixfrom() == stdlib.get_unixfrom()
    assert ours.get_unixfrom() == "From rssfeeds@example.com  Mon Sep 23 12:00:00 2002"
    assert ours._headers == stdlib._headers  # type: ignore[attr-defined]
    assert ours.defects == stdlib.defects == []


def test_blocks_the_one_pass_reading_cannot_take_go_line_by_line() -> None:
    """From lines, nameless fields and a leading continuation keep the line-by-line path."""
    for block in (
        "From sender@example Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n",
        "Subject: x\r\nFrom here on\r\n",
        ":no name\r\nSubject: x\r\n",
        " leading continuation\r\nSubject: x\r\n",
    ):
        assert not _mime._plain_block(block), block


def test_a_huge_folded_header_block_is_read_in_one_pass_and_truncated_as_before() -> None:
    """A 200 KB block of folded fields (a block may hold 256 KB) is stored alike."""
    block = "".join(f"X-F{n}: start\r\n" + " more\r\n" * 25 for n in range(900))
    block += "Subject: " + "=?utf-8?q?a?= " * 5000 + "\r\n"
    assert 200_000 < len(block) < ParseLimits().max_header_bytes
    fast = _store_in_one_pass(block)
    assert fast == _store_line_by_line(block)
    assert "HeaderTruncatedDefect" in fast[1]  # the long Subject went through the caps
    assert len(fast[0]) == 901


def test_too_many_fields_stop_both_readings_alike() -> None:
    """One field more than a block may hold is headers-too-large either way."""
    block = "".join(f"X-F{n}: v\r\n" for n in range(_headers.MAX_FIELDS + 1))
    for store in (_store_in_one_pass, _store_line_by_line):
        with pytest.raises(_mime.LimitExceeded, match="headers-too-large"):
            store(block)


# -- memory ------------------------------------------------------------------------


def test_a_25_mb_text_body_peaks_at_under_twice_its_size() -> None:
    """Parsing a 25 MB CRLF text body and reading its text allocate < 2x the body."""
    raw, size = big_text_email(b"\r\n")
    tracemalloc.start()
    try:
        email = parse_email(raw)
        text = email.text
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert email.quarantine_reason is None
    assert len(text) == size - size // len(TEXT_LINE)  # every CRLF became one LF
    assert text.startswith("The quick brown fox")
    assert "\r" not in text
    assert peak < 2 * size, f"peak {peak / size:.2f}x the body"


def test_a_25_mb_text_body_with_lf_line_breaks_is_never_copied() -> None:
    """With LF line breaks the text is the only copy: the peak stays near its size."""
    raw, size = big_text_email(b"\n")
    tracemalloc.start()
    try:
        email = parse_email(raw)
        text = email.text
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) == size
    assert peak < 1.1 * size, f"peak {peak / size:.2f}x the body"
