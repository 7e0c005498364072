"""Property tests: parse_email on generated and mutated input never raises and stays safe."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail.inbound import _headers
from halomail.inbound._headers import _decode_base64_damaged, decode_base64
from halomail.inbound.defects import is_internal_error
from halomail.inbound.models import InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email

SAFE_STORAGE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
REASONS = {None, "too-large", "headers-too-large", "mime-too-deep", "too-many-parts", "unparseable"}
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS = [
    # A multipart with an encoded subject, inline image, RFC 2231 name and forwarded mail.
    b"From: =?utf-8?q?Jos=C3=A9?= <jose@customer.example>\r\n"
    b'To: support@helpdesk.example, "Smith, J" <j@x.example>\r\n'
    b"Subject: =?utf-8?B?w4dhIHZhPw==?= [ID:12]\r\n"
    b"Message-ID: <seed-1@customer.example>\r\n"
    b"In-Reply-To: <ack-12@helpdesk.example>\r\n"
    b"Date: Tue, 05 Mar 2024 09:15:00 +0100\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b'--outer\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 =\r\nnoir\r\n"
    b'--alt\r\nContent-Type: text/html; charset="iso-8859-1"\r\n\r\n'
    b'<p onclick="x()">Caf\xe9 <img src="cid:i1"></p>\r\n--alt--\r\n'
    b"--outer\r\nContent-Type: image/png\r\nContent-ID: <i1>\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
    b"--outer\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n\r\n%PDF\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nMessage-ID: <inner@x.example>\r\n\r\ninner body\r\n--outer--\r\n",
    # A DSN with a headers part and a bare-LF body.
    b"From: MAILER-DAEMON@mx.example\nReturn-Path: <>\nTo: support@helpdesk.example\n"
    b"Subject: Undelivered Mail\nContent-Type: multipart/report; report-type=delivery-status;"
    b' boundary="r"\n\n--r\nContent-Type: text/plain\n\nDelivery failed.\n'
    b"--r\nContent-Type: message/delivery-status\n\nStatus: 5.1.1\n"
    b"--r\nContent-Type: text/rfc822-headers\n\nMessage-ID: <ack@helpdesk.example>\n--r--\n",
    # A plain 8-bit Latin-1 email with odd headers.
    b"From: Ren\xe9 <rene@x.example>\r\nSubject: R\xe9union\r\nX-Halomail-Loop: tok\r\n"
    b"Content-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: 8-bit\r\n"
    b"\r\nBonjour, \xe0 demain.\r\n> cit\xe9\r\n",
]


def check(email: InboundEmail, raw: bytes) -> None:
    """The invariants every parse result keeps, whatever the input."""
    assert isinstance(email, InboundEmail)
    assert email.size == len(raw)
    assert email.sha256 == hashlib.sha256(raw).hexdigest()
    assert email.quarantine_reason in REASONS
    assert email.quarantine_reason != "unparseable", email.defects
    assert not [defect for defect in email.defects if is_internal_error(defect)], email.defects
    assert "\r" not in email.subject
    assert "\n" not in email.subject
    for name, value in email.headers:
        assert "\r" not in value, name
        assert "\n" not in value, name
        assert not name.lower().startswith("x-halomail-")
    for attachment in email.attachments:
        assert SAFE_STORAGE_NAME.match(attachment.storage_name), attachment.storage_name
        assert ".." not in attachment.storage_name
        assert attachment.size == len(attachment.payload)
    if email.date is not None:
        assert email.date.tzinfo is not None
    assert_no_nul(email)


def assert_no_nul(value: object) -> None:
    """No string anywhere in the result (payload bytes aside) holds a NUL."""
    if isinstance(value, str):
        assert "\x00" not in value
    elif isinstance(value, tuple | list):
        for item in value:
            assert_no_nul(item)
    elif attrs.has(type(value)):
        # Fields set at construction; the others are caches of what they derive from.
        for field in attrs.fields(type(value)):
            if field.init:
                assert_no_nul(getattr(value, field.name))
    else:
        assert value is None or isinstance(value, bool | int | bytes | dt.datetime), type(value)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with a few byte flips, insertions, deletions or a truncation."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            tokens = st.sampled_from(
                [
                    b"\r",
                    b"\n",
                    b"\x00",
                    b"\r\n\r\n",
                    b"--outer\r\n",
                    b"--alt--",
                    b"=?",
                    b"?=",
                    b"<",
                    b">",
                    b'"',
                    b";",
                    b"=",
                    b"\xff",
                    b"\xc3",
                    b"Content-Type: multipart/mixed",
                ]
            )
            data[position:position] = draw(st.one_of(tokens, st.binary(max_size=8)))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif operation == "truncate":
            del data[position:]
        else:
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


HEADER_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Date",
        "Return-Path",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "X-Halomail-Loop",
        "X-Halomail-Ticket",
        "X-Custom",
        "MIME-Version",
    ]
)
VALUE_PIECES = st.sampled_from(
    [
        "a@b.example",
        "<x@y.example>",
        '"Name, Q"',
        "=?utf-8?q?Caf=C3=A9?=",
        "=?x?b?////?=",
        "=?utf-8?q?=0D=0AX-Evil:_1?=",
        "\r",
        "\n",
        "\r\n ",
        "\x00",
        "\t",
        ";",
        ",",
        ":",
        "(c)",
        "multipart/mixed; boundary=b",
        "text/html; charset=utf-7",
        "base64",
        "é",
        "\u202e",
        "Mon, 32 Foo 2024 25:61:61 +9999",
        "<>",
        "@",
        " ",
    ]
)


@st.composite
def header_soup(draw: st.DrawFn) -> bytes:
    """Random headers built from hostile pieces, then a random body."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.one_of(HEADER_NAMES, st.from_regex(r"[!-9;-~]{1,12}", fullmatch=True)))
        value = "".join(draw(st.lists(st.one_of(VALUE_PIECES, st.text(max_size=6)), max_size=6)))
        encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
        lines.append(f"{name}: {value}".encode(encoding, "replace"))
    separator = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    body = draw(st.binary(max_size=200))
    return separator.join(lines) + separator + separator + body


@PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(raw: bytes) -> None:
    """Arbitrary bytes always give an InboundEmail that keeps every invariant."""
    check(parse_email(raw), raw)


@PROPERTY
@given(mutated())
def test_mutated_seed_messages_never_raise(raw: bytes) -> None:
    """Real-shaped messages with flipped, inserted, deleted or cut bytes parse safely."""
    check(parse_email(raw), raw)


@PROPERTY
@given(header_soup())
def test_generated_header_soup_never_raises(raw: bytes) -> None:
    """Hostile header soup (CR, LF, NUL, encoded words, 8-bit) parses safely."""
    email = parse_email(raw)
    check(email, raw)
    assert email.quarantine_reason is None


@PROPERTY
@given(st.sampled_from(SEEDS), st.integers(0, 2000))
def test_size_limit_gives_too_large(raw: bytes, limit: int) -> None:
    """A message over max_message_bytes is too-large; at or under it, never."""
    email = parse_email(raw, limits=ParseLimits(max_message_bytes=limit))
    check(email, raw)
    assert (email.quarantine_reason == "too-large") == (len(raw) > limit)


@PROPERTY
@given(st.integers(0, 60), st.integers(1, 40))
def test_depth_limit_gives_mime_too_deep(depth: int, limit: int) -> None:
    """A part nested deeper than max_depth is mime-too-deep; at or under it, never."""
    raw = b"From: a@b.example\r\n" + b"".join(
        b'Content-Type: multipart/mixed; boundary="d%d"\r\n\r\n--d%d\r\n' % (i, i)
        for i in range(depth)
    )
    raw += b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    email = parse_email(raw, limits=ParseLimits(max_depth=limit))
    check(email, raw)
    assert email.quarantine_reason == ("mime-too-deep" if depth > limit else None)


@PROPERTY
@given(st.integers(0, 120), st.integers(1, 100))
def test_part_limit_gives_too_many_parts(parts: int, limit: int) -> None:
    """More parts than max_parts (the top level counts) is too-many-parts; otherwise not."""
    body = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts))
    raw = b'From: a@b.example\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
    raw += body + b"--p--\r\n"
    email = parse_email(raw, limits=ParseLimits(max_parts=limit))
    check(email, raw)
    assert email.quarantine_reason == ("too-many-parts" if parts + 1 > limit else None)


@PROPERTY
@given(st.lists(st.integers(0, 300), max_size=20), st.integers(64, 4000))
def test_header_limit_gives_headers_too_large(sizes: list[int], limit: int) -> None:
    """A top-level header block longer than max_header_bytes is headers-too-large."""
    head = b"From: a@b.example\r\n" + b"".join(b"X-Pad: " + b"p" * n + b"\r\n" for n in sizes)
    raw = head + b"\r\nbody"
    email = parse_email(raw, limits=ParseLimits(max_header_bytes=limit))
    check(email, raw)
    assert (email.quarantine_reason == "headers-too-large") == (len(head) > limit)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"QUJD", b"ZGVm", b"Zw==", b"aGk=", b"\r\n", b"\n", b"=", b" ", b"*", b"x"]
        ),
        max_size=30,
    )
)
def test_the_base64_fast_path_decodes_as_the_careful_one(pieces: list[bytes]) -> None:
    """Clean base64 takes a shortcut; its result is exactly what the careful decoder gives."""
    data = b"".join(pieces)
    assert decode_base64(data) == _decode_base64_damaged(data)


_PIECES = st.lists(
    st.sampled_from([b"QUJD", b"ZGVm", b"Zw==", b"aGk=", b"\r\n", b"\n", b"=", b" ", b"*", b"x"]),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(_PIECES, st.integers(1, 9))
def test_a_view_checked_in_chunks_is_judged_as_the_whole_bytes_are(
    pieces: list[bytes], chunk: int
) -> None:
    """The chunked check of a view says clean exactly when the whole-bytes test does."""
    data = b"".join(pieces)
    whole = not data.rstrip(b"=\r\n").translate(None, _headers._BASE64_LINES)
    original = _headers._CHECK_CHUNK
    _headers._CHECK_CHUNK = chunk  # small chunks, so every boundary case is met
    try:
        assert _headers._is_clean_base64(memoryview(data)) is whole
    finally:
        _headers._CHECK_CHUNK = original
    assert decode_base64(memoryview(data)) == decode_base64(data)


def test_a_large_base64_view_decodes_exactly_and_junk_past_the_first_megabyte_counts() -> None:
    """A 4 MB base64 view decodes to its bytes; one junk byte in its third megabyte is damage."""
    payload = bytes(range(256)) * (3 * 4096)
    encoded = base64.encodebytes(payload)
    assert decode_base64(memoryview(encoded)) == (payload, False)
    broken = encoded[:2_500_000] + b"!" + encoded[2_500_000:]
    decoded, damaged = decode_base64(memoryview(broken))
    assert (decoded, damaged) == (payload, True)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="ab \t\n\r\x0b\x00\x7f\x85\xa0\u200b\u2028é", max_size=40))
def test_one_line_shortcut_for_tabs_gives_what_the_substitutions_give(text: str) -> None:
    """Replacing tabs alone, when that leaves the text printable, equals the two regexes."""
    reference = _headers._CONTROLS.sub("", _headers._LINE_BREAKS.sub(" ", text)).strip()
    assert _headers.one_line(text) == reference
