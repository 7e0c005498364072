"""Hostile and broken input at the parse level (adversarial-cases.md: M, A, L2/L3/L6/L8/L9, F11).

T cases must come back as a good InboundEmail (no quarantine_reason); Q cases with
the stated reason plus the cheap identity (Message-ID, sender, subject, size, hash).
The time-bounded cases assert only correctness; each finishes in well under a second.
"""

from __future__ import annotations

import base64
import bz2
import codecs
import gzip
import hashlib
import io
import lzma
import re
import zipfile
import zlib
from typing import Any

import pytest

from halomail.inbound.models import Address, InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email

STORAGE_NAME = re.compile(r"^att-\d+-[0-9a-f]{8}\.[a-z0-9]{1,10}$")
IDENTITY = (
    b"From: Alice <alice@customer.example>\r\n"
    b"Subject: Hostile\r\n"
    b"Message-ID: <hostile-1@customer.example>\r\n"
)


def message(*headers: str | bytes, body: str | bytes = b"Hello.\r\n") -> bytes:
    """A message from header lines (str or raw bytes) and a body, CRLF line endings."""
    head = b"".join((h if isinstance(h, bytes) else h.encode("utf-8")) + b"\r\n" for h in headers)
    return head + b"\r\n" + (body.encode("utf-8") if isinstance(body, str) else body)


def mixed(*parts: bytes, boundary: str = "b", closed: bool = True) -> bytes:
    """A multipart/mixed message with the identity headers around raw parts."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    if closed:
        body += b"--" + boundary.encode() + b"--\r\n"
    return IDENTITY + (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode() + body
    )


def part(*headers: str | bytes, body: str | bytes) -> bytes:
    """One MIME part."""
    return message(*headers, body=body)


def assert_ticket(email: InboundEmail) -> None:
    """The email is good for a ticket (T): no quarantine, identity read."""
    assert email.quarantine_reason is None
    assert email.sender == Address("alice@customer.example", "Alice")
    assert email.message_id == "hostile-1@customer.example"


def assert_quarantined(email: InboundEmail, raw: bytes, reason: str) -> None:
    """The email is quarantined (Q) with ``reason`` and still carries its cheap identity."""
    assert email.quarantine_reason == reason
    assert email.message_id == "hostile-1@customer.example"
    assert email.sender == Address("alice@customer.example", "Alice")
    assert email.subject == "Hostile"
    assert email.size == len(raw)
    assert email.sha256 == hashlib.sha256(raw).hexdigest()
    assert email.text == ""
    assert email.attachments == ()


# --- M: malformed MIME --------------------------------------------------------------


def test_m1_multipart_without_boundary_keeps_whole_body_as_text() -> None:
    """A multipart with no boundary parameter gives the whole body as text and a defect."""
    raw = IDENTITY + b"Content-Type: multipart/mixed\r\n\r\nThe whole body.\r\nLine two.\r\n"
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "The whole body.\nLine two.\n"
    assert "missing-boundary" in email.defects


def test_m2_missing_final_boundary_keeps_the_parts_so_far() -> None:
    """Without the closing boundary the parts already seen are kept, with a defect."""
    raw = mixed(
        part("Content-Type: text/plain", body="First part."),
        part(
            "Content-Type: application/pdf",
            'Content-Disposition: attachment; filename="a.pdf"',
            body=b"%PDF-1.4 partial",
        ),
        closed=False,
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "First part."
    (pdf,) = email.attachments
    assert (pdf.filename, pdf.payload) == ("a.pdf", b"%PDF-1.4 partial")
    assert "close-boundary-not-found" in email.defects


def test_m2_truncated_mid_part_keeps_what_arrived() -> None:
    """A message cut inside its second part keeps the first and the partial second (both
    inline text parts of a multipart/mixed, so both in the body)."""
    raw = mixed(
        part("Content-Type: text/plain", body="Intro."),
        part("Content-Type: text/html", body="<p>never closed"),
        closed=False,
    )
    email = parse_email(raw[:-10])
    assert_ticket(email)
    assert email.text == "Intro.\n\nneve"
    assert email.html is not None
    assert "<p>neve" in email.html


def test_m3_boundary_lookalikes_inside_content_are_content() -> None:
    """Lines that only resemble the boundary stay content; parts are counted correctly."""
    raw = mixed(
        part(
            "Content-Type: text/plain",
            body="--b is our boundary\r\n--bb\r\n-- b\r\n--b-- is not the end",
        ),
        part('Content-Type: text/plain; name="one.txt"', body="--b0\r\nfile one"),
        part(
            'Content-Type: multipart/alternative; boundary="b-inner"',
            body=(
                b"--b-inner\r\nContent-Type: text/plain\r\n\r\ninner\r\n"
                b"--b-inner\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n--b-inner--"
            ),
        ),
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "--b is our boundary\n--bb\n-- b\n--b-- is not the end\n\ninner"
    assert [(a.filename, a.content_type) for a in email.attachments] == [
        ("one.txt", "text/plain"),
        ("", "image/gif"),
    ]
    assert email.attachments[0].payload == b"--b0\r\nfile one"


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/mixed; boundary="b"',
        'multipart/; boundary="b"',
        'multipart/alternative; boundary="b"',
    ],
)
def test_m4_multipart_with_zero_parts_has_an_empty_body(content_type: str) -> None:
    """A multipart with zero parts, or with no subtype, gives an empty body, not a crash."""
    raw = IDENTITY + f"Content-Type: {content_type}\r\n\r\n--b--\r\n".encode()
    email = parse_email(raw)
    assert_ticket(email)
    assert (email.text, email.html, email.attachments) == ("", None, ())


def test_m4_multipart_without_any_body_is_empty() -> None:
    """A multipart header with no body at all gives an empty body."""
    email = parse_email(IDENTITY + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n')
    assert_ticket(email)
    assert email.text == ""


def nested(depth: int) -> bytes:
    """A message whose single text part sits ``depth`` multiparts deep."""
    levels = b"".join(
        b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i)
        for i in range(depth)
    )
    return IDENTITY + levels + b"Content-Type: text/plain\r\n\r\ndeep text\r\n"


def test_m5_nesting_depth_bomb_is_quarantined() -> None:
    """10,000 nested multiparts are quarantined mime-too-deep, with no RecursionError."""
    raw = nested(10_000)
    assert_quarantined(parse_email(raw), raw, "mime-too-deep")


def test_m5_nesting_at_the_limit_is_accepted_and_one_more_is_not() -> None:
    """Nesting exactly max_depth deep parses; one level more is mime-too-deep."""
    limits = ParseLimits(max_depth=32)
    email = parse_email(nested(32), limits=limits)
    assert_ticket(email)
    assert email.text == "deep text"
    assert parse_email(nested(33), limits=limits).quarantine_reason == "mime-too-deep"


def test_m5_attached_email_chains_are_opaque_not_recursed() -> None:
    """10,000 nested message/rfc822 levels stay one opaque attachment: no recursion at all."""
    raw = IDENTITY + b"Content-Type: message/rfc822\r\n\r\n" * 10_000 + b"Subject: core\r\n\r\nx"
    email = parse_email(raw)
    assert_ticket(email)
    (inner,) = email.attachments
    assert inner.content_type == "message/rfc822"
    assert inner.payload.startswith(b"Content-Type: message/rfc822\r\n\r\n")


def many_parts(count: int) -> bytes:
    """A multipart/mixed message with ``count`` small text parts."""
    return mixed(*[part("Content-Type: text/plain", body=b"x")] * count)


def test_m6_part_count_bomb_is_quarantined() -> None:
    """100,000 parts are quarantined too-many-parts (the parser stops at the limit)."""
    raw = many_parts(100_000)
    assert_quarantined(parse_email(raw), raw, "too-many-parts")


def test_m6_part_count_at_the_limit_is_accepted_and_one_more_is_not() -> None:
    """max_parts counts every part including the top level: at the limit passes, above fails."""
    limits = ParseLimits(max_parts=10)
    email = parse_email(many_parts(9), limits=limits)
    assert_ticket(email)
    assert email.text == "\n\n".join(["x"] * 9)  # nine inline text parts, one body
    assert email.attachments == ()
    assert parse_email(many_parts(10), limits=limits).quarantine_reason == "too-many-parts"


@pytest.mark.parametrize(
    ("raw_subject", "raw_name"),
    [
        ("Café crème".encode(), "José Núñez".encode()),
        ("Café crème".encode("latin-1"), "José Núñez".encode("latin-1")),
        ("Café crème".encode("cp1252"), "José Núñez".encode("cp1252")),
    ],
    ids=["utf-8", "latin-1", "cp1252"],
)
def test_m7_raw_8bit_headers_decode_without_mojibake(raw_subject: bytes, raw_name: bytes) -> None:
    """8-bit UTF-8 and Latin-1 headers decode to the same text, never mojibake."""
    raw = message(
        b"From: " + raw_name + b" <alice@customer.example>",
        b"Subject: " + raw_subject,
        "Message-ID: <m7@customer.example>",
    )
    email = parse_email(raw)
    assert email.subject == "Café crème"
    assert email.header("Subject") == "Café crème"
    assert email.sender == Address("alice@customer.example", "José Núñez")


def test_m7_cp1252_punctuation_in_headers() -> None:
    """windows-1252 curly quotes and the euro sign in a raw header decode correctly."""
    raw = message(
        b"From: a@customer.example", "Subject: \u201cQuote\u201d \u20ac5".encode("cp1252")
    )
    assert parse_email(raw).subject == "\u201cQuote\u201d \u20ac5"


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("unknown-8bit", "Café".encode("latin-1"), "Café"),
        ("unknown-8bit", "Café".encode(), "Café"),
        ("x-user-defined", "Café".encode("cp1252"), "Café"),
        ("utf8", "Grüße".encode(), "Grüße"),
        ("UTF_8", "Grüße".encode(), "Grüße"),
        ("iso-8859-8-i", "שלום".encode("iso-8859-8"), "שלום"),
        ("ks_c_5601-1987", "안녕하세요".encode("cp949"), "안녕하세요"),
        ("windows-874", "สวัสดี".encode("cp874"), "สวัสดี"),
        ("cp-850", "Café".encode("cp850"), "Café"),
        ("latin1", "Café".encode("latin-1"), "Café"),
        ("iso-8859-1", "Café".encode(), "Café"),  # mislabelled UTF-8
        ("us-ascii", "Café".encode(), "Café"),  # 8-bit under an ASCII label
        ("us-ascii;", "Café".encode("latin-1"), "Café"),
        ('"us-ascii"', "plain", "plain"),
        ("usascii", "Café".encode(), "Café"),
        ("ansi_x3.4-1968", "Café".encode("cp1252"), "Café"),
        ("default", "Café".encode(), "Café"),
        ("gb2312", "你好".encode("gb18030"), "你好"),
        ("shift_jis", "日本語".encode("cp932"), "日本語"),
        ("koi8-r", "Привет".encode("koi8-r"), "Привет"),
        ("windows-1251", "Привет".encode("cp1251"), "Привет"),
        ("zlib", "Café".encode(), "Café"),  # a codec, but not a charset: refused
        ("rot13", "Café".encode(), "Café"),
        ("idna", "Café".encode(), "Café"),
        ("utf-8", "Café".encode("latin-1"), "Café"),  # declared UTF-8, really Latin-1
    ],
)
def test_m8_unknown_or_invalid_charsets_decode(charset: str, body: bytes, expected: str) -> None:
    """Charset names seen in the wild decode through the alias table; none raises."""
    raw = message(
        "From: Alice <alice@customer.example>",
        "Message-ID: <hostile-1@customer.example>",
        f"Content-Type: text/plain; charset={charset}",
        body=body,
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == expected


def test_m8_truly_unknown_charset_guesses_and_records_a_defect() -> None:
    """An unknown name tries UTF-8 then windows-1252, and records unknown-charset."""
    raw = message(
        *IDENTITY.decode().splitlines(),
        "Content-Type: text/plain; charset=x-no-such-charset",
        body="naïve".encode("cp1252"),
    )
    email = parse_email(raw)
    assert email.text == "naïve"
    assert "unknown-charset" in email.defects


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("=?x-unknown?q?Caf=E9?=", "Café"),
        ("=?unknown-8bit?b?Q2Fmw6k=?=", "Café"),
        ("=?bogus?x?abc?=", "=?bogus?x?abc?="),
        ("=?utf-8?b?!!!?= after", "after"),
    ],
)
def test_m8_unknown_charsets_in_encoded_words(subject: str, expected: str) -> None:
    """Encoded words with unknown charsets or encodings decode or stay literal, never raise."""
    email = parse_email(message("From: a@customer.example", f"Subject: {subject}"))
    assert email.subject == expected


def test_m9_encoded_word_decoding_to_crlf_cannot_inject_a_header() -> None:
    """An encoded word that decodes to CR/LF stays one line: no injected header."""
    raw = message(
        *IDENTITY.decode().splitlines()[:1],
        "Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@x.example=0D=0A=0D=0Abody?=",
        "Message-ID: <hostile-1@customer.example>",
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.subject == "Hi  Bcc: victim@x.example    body"
    assert "\r" not in email.subject
    assert "\n" not in email.subject
    assert email.header("Bcc") is None
    assert all("\n" not in v and "\r" not in v for _, v in email.headers)


def test_m9_controls_from_encoded_words_are_removed() -> None:
    """Decoded NUL, ESC, DEL and C1 controls are removed; tabs become spaces."""
    raw = message("From: a@customer.example", "Subject: =?utf-8?q?a=00b=1Bc=7Fd=C2=85e=09f?=")
    assert parse_email(raw).subject == "abcd e f"


def test_m9_long_encoded_word_run_decodes_within_the_caps() -> None:
    """A run of 900 encoded words decodes (one line, capped); past the cap it is truncated."""
    words = " ".join(["=?utf-8?q?ab?="] * 900)
    email = parse_email(message(*IDENTITY.decode().splitlines(), f"X-Words: {words}"))
    assert_ticket(email)
    assert email.header("X-Words") == "ab" * 900
    over = message(
        *IDENTITY.decode().splitlines(), "X-Words: " + " ".join(["=?utf-8?q?ab?="] * 1500)
    )
    truncated = parse_email(over)
    assert_ticket(truncated)
    assert truncated.header("X-Words") == "ab" * 1000
    assert "header-truncated:x-words" in truncated.defects


def test_m9_encoded_words_in_wrong_places() -> None:
    """Words inside quotes and mid-word decode; words in an addr-spec are never decoded."""
    raw = message(
        'From: "=?utf-8?q?Ren=C3=A9e?=" <=?utf-8?q?evil?=@customer.example>',
        "Subject: pre=?utf-8?q?fix?=ed and (=?utf-8?q?comment?=)",
    )
    email = parse_email(raw)
    assert email.sender == Address("=?utf-8?q?evil?=@customer.example", "Renée")
    assert email.subject == "prefixed and (comment)"


def test_m10_a_one_megabyte_header_is_quarantined() -> None:
    """A single 1 MB header is headers-too-large, found before the stdlib parses it."""
    raw = IDENTITY + b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\nbody"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_m10_a_header_block_over_the_limit_is_quarantined() -> None:
    """A header block over max_header_bytes (300 headers of 1 KB) is headers-too-large."""
    raw = IDENTITY + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(300))
    raw += b"\r\nbody"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_m10_a_header_block_just_under_the_limit_parses() -> None:
    """A 200 KB header block (under 256 KB) parses normally."""
    raw = IDENTITY + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(200))
    email = parse_email(raw + b"\r\nbody")
    assert_ticket(email)
    assert email.text == "body"
    assert len(email.headers) == 203


def test_m10_too_many_header_fields_are_quarantined() -> None:
    """More than 1,000 header fields in one block is headers-too-large."""
    raw = IDENTITY + b"X-H: v\r\n" * 1500 + b"\r\nbody"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_m10_an_oversized_part_header_is_quarantined() -> None:
    """The header limits apply to every MIME part's header block, not only the top."""
    raw = mixed(part("Content-Type: text/plain", b"X-Pad: " + b"p" * 300_000, body="x"))
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_m11_nul_bytes_are_stripped_from_every_field() -> None:
    """NUL bytes in headers, names, addresses and bodies never reach a stored field."""
    raw = mixed(
        part("Content-Type: text/plain", body=b"Body\x00 text"),
        part("Content-Type: text/html", body=b"<p>Ht\x00ml</p>"),
        part(b'Content-Type: application/pdf; name="in\x00voice.pdf"', body=b"%PDF\x00"),
    ).replace(b"Subject: Hostile", b"Subject: Hos\x00tile\r\nX-Nul: a\x00b")
    raw = raw.replace(b"<alice@customer.example>", b"<alice@customer.example\x00>")
    email = parse_email(raw)
    assert_ticket(email)
    assert (email.subject, email.header("X-Nul")) == ("Hostile", "ab")
    assert email.text == "Body text\n\nHtml"
    assert email.html is not None
    assert "\x00" not in email.html
    assert "Html" in email.html
    (pdf,) = email.attachments
    assert (pdf.filename, pdf.original_filename) == ("invoice.pdf", "invoice.pdf")
    assert pdf.payload == b"%PDF\x00"  # bytes are kept as sent
    assert all("\x00" not in value for _, value in email.headers)
    assert "\x00" not in email.new_text


def test_m12_bare_cr_inside_a_header_cannot_smuggle_a_header() -> None:
    """'Subject: hi\\rX-Evil: 1' is one Subject; no X-Evil header exists."""
    raw = IDENTITY.replace(b"Subject: Hostile", b"Subject: Hostile\rX-Evil: 1") + b"\r\nbody\r\n"
    email = parse_email(raw)
    assert_ticket(email)
    assert email.header("X-Evil") is None
    assert email.subject == "Hostile X-Evil: 1"
    assert "bare-cr-in-header" in email.defects
    assert [name for name, _ in email.headers] == ["From", "Subject", "Message-ID"]


def test_m12_bare_cr_cannot_end_the_header_block_early() -> None:
    """A bare CR pair in a header cannot end the headers and turn the rest into body."""
    raw = IDENTITY.replace(b"Subject: Hostile", b"Subject: Hostile\r\rIn-Reply-To: <t@x>")
    email = parse_email(raw + b"\r\nreal body")
    assert email.text == "real body"
    assert email.in_reply_to == ()


def test_m12_bare_lf_and_cr_only_line_endings_parse() -> None:
    """Bare-LF mail parses normally; mail with CR-only line endings parses line by line."""
    crlf = IDENTITY + b"\r\nline one\r\nline two\r\n"
    for raw in (crlf.replace(b"\r\n", b"\n"), crlf.replace(b"\r\n", b"\r")):
        email = parse_email(raw)
        assert_ticket(email)
        assert (email.subject, email.text) == ("Hostile", "line one\nline two\n")


def test_m13_missing_header_body_separator_is_a_ticket() -> None:
    """A body that starts right after the headers, with no blank line, is still the body."""
    raw = IDENTITY + b"This line is body, not a header.\r\nAnd more.\r\n"
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "This line is body, not a header.\nAnd more.\n"
    assert "missing-header-body-separator" in email.defects


def test_m13_first_line_continuation_is_a_ticket() -> None:
    """A message whose first line is a continuation still parses its real headers."""
    raw = b"  continuation first\r\n" + IDENTITY + b"\r\nbody"
    email = parse_email(raw)
    assert_ticket(email)
    assert (email.subject, email.text) == ("Hostile", "body")
    assert "first-header-line-is-continuation" in email.defects


def test_m13_headers_only_and_empty_messages_do_not_crash() -> None:
    """A message of headers only, a blank message and a message of one blank line parse."""
    assert_ticket(parse_email(IDENTITY))
    for raw in (b"", b"\r\n", b"\n\nbody only"):
        email = parse_email(raw)
        assert (email.quarantine_reason, email.sender, email.message_id) == (None, None, None)


@pytest.mark.parametrize(
    "encoding", ["", "7-bit", "plain", "text-html", "8bit;", "7bit (comment)", '"8bit"', "binary "]
)
def test_m14_unknown_transfer_encodings_are_treated_as_8bit(encoding: str) -> None:
    """Bad Content-Transfer-Encoding values pass the body through as 8bit."""
    raw = message(
        *IDENTITY.decode().splitlines(),
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {encoding}",
        body="Grüße, =41 stays literal",
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "Grüße, =41 stays literal"


def test_m14_transfer_encoding_with_parameters_and_case_still_decodes() -> None:
    """'BASE64; x=y' and quoted 'Quoted-Printable' are recognised."""
    b64 = message(
        *IDENTITY.decode().splitlines(),
        "Content-Transfer-Encoding: BASE64; x=y",
        body=base64.b64encode("Grüße".encode()),
    )
    qp = message(
        *IDENTITY.decode().splitlines(),
        'Content-Transfer-Encoding: "Quoted-Printable"',
        "Content-Type: text/plain; charset=utf-8",
        body="Gr=C3=BC=C3=9Fe",
    )
    assert parse_email(b64).text == "Grüße"
    assert parse_email(qp).text == "Grüße"


def test_m14_uuencoded_body_is_decoded() -> None:
    """An x-uuencode body is decoded between its begin and end lines."""
    import binascii

    encoded = b"begin 644 note.txt\r\n" + binascii.b2a_uu(b"uuencoded text") + b"`\r\nend\r\n"
    raw = message(
        *IDENTITY.decode().splitlines(), "Content-Transfer-Encoding: x-uuencode", body=encoded
    )
    assert parse_email(raw).text == "uuencoded text"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"SGVsbG8gd29ybGQ", "Hello world"),  # missing padding
        (b"SGVsbG8g*d29y!bGQ=", "Hello world"),  # junk characters
        (b"SGVsbA==\r\nbyB3b3JsZA==\r\n", "Hello world"),  # concatenated padded chunks
        (b"SGVsbG8gd29ybGQ=\r\n\r\n-- \r\nList footer here\r\n", "Hello world"),
        (b"S", ""),  # one stray character
    ],
)
def test_m15_invalid_base64_decodes_best_effort_with_a_defect(
    payload: bytes, expected: str
) -> None:
    """Broken base64 decodes as far as possible and records invalid-base64."""
    raw = message(
        *IDENTITY.decode().splitlines(), "Content-Transfer-Encoding: base64", body=payload
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == expected
    assert "invalid-base64" in email.defects


def test_m15_invalid_quoted_printable_keeps_bad_sequences_with_a_defect() -> None:
    """Broken quoted-printable keeps malformed '=' sequences literally and records a defect."""
    raw = message(
        *IDENTITY.decode().splitlines(),
        "Content-Transfer-Encoding: quoted-printable",
        "Content-Type: text/plain; charset=utf-8",
        body="100=25 =ZZ ok =C3=A9",
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "100% =ZZ ok é"
    assert "invalid-quoted-printable" in email.defects


@pytest.mark.parametrize(
    ("charset", "data"),
    [
        ("utf-16", codecs.BOM_UTF16_LE + "Grüße aus Köln".encode("utf-16-le")),
        ("utf-16", codecs.BOM_UTF16_BE + "Grüße aus Köln".encode("utf-16-be")),
        ("us-ascii", codecs.BOM_UTF16_LE + "Grüße aus Köln".encode("utf-16-le")),
        ("utf-16le", "Grüße aus Köln".encode("utf-16-le")),
        ("utf-8", codecs.BOM_UTF8 + "Grüße aus Köln".encode()),
    ],
)
def test_m16_utf16_bodies_are_readable(charset: str, data: bytes) -> None:
    """UTF-16 bodies (BOM first, even under a wrong label) and base64 roots are readable."""
    raw = message(
        *IDENTITY.decode().splitlines(),
        f"Content-Type: text/plain; charset={charset}",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(data),
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "Grüße aus Köln"


def test_m16_base64_encoded_html_root() -> None:
    """A base64-encoded text/html root part gives readable text and sanitized HTML."""
    html = "<html><body><p>Bonjour <b>à tous</b></p></body></html>".encode()
    raw = message(
        *IDENTITY.decode().splitlines(),
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(html),
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert "Bonjour" in email.text
    assert "à tous" in email.text
    assert email.html is not None
    assert "<b>à tous</b>" in email.html


# --- A: attachments -----------------------------------------------------------------


def zip_bomb() -> bytes:
    """A small zip holding 20 MB of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\x00" * (20 * 1024 * 1024))
    return buffer.getvalue()


def test_a1_zip_bomb_is_stored_as_is_and_never_extracted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip attachment keeps its exact bytes; no decompressor is touched while parsing."""
    bomb = zip_bomb()

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("parse_email must never decompress")

    for module, name in [
        (zipfile, "ZipFile"),
        (gzip, "decompress"),
        (gzip, "GzipFile"),
        (zlib, "decompress"),
        (zlib, "decompressobj"),
        (bz2, "decompress"),
        (lzma, "decompress"),
    ]:
        monkeypatch.setattr(module, name, forbidden)
    raw = mixed(
        part("Content-Type: text/plain", body="Logs attached."),
        part(
            "Content-Type: application/zip",
            'Content-Disposition: attachment; filename="logs.zip"',
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(bomb),
        ),
    )
    email = parse_email(raw)
    assert_ticket(email)
    (attachment,) = email.attachments
    assert attachment.payload == bomb
    assert attachment.size == len(bomb) < 100_000
    assert attachment.storage_name.endswith(".zip")


def test_a2_zero_byte_attachment_is_kept_with_size_zero() -> None:
    """A 0-byte attachment is kept, with size 0 and an empty payload."""
    raw = mixed(
        part("Content-Type: text/plain", body="Empty file attached."),
        part(
            "Content-Type: text/plain",
            'Content-Disposition: attachment; filename="empty.txt"',
            body=b"",
        ),
    )
    email = parse_email(raw)
    assert_ticket(email)
    (empty,) = email.attachments
    assert (empty.filename, empty.size, empty.payload) == ("empty.txt", 0, b"")


def test_a2_attachment_only_mail_is_a_ticket_with_empty_text() -> None:
    """A mail whose only part is an attachment gives empty text and that attachment."""
    raw = IDENTITY + (
        b'Content-Type: application/pdf; name="scan.pdf"\r\n'
        b'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n%PDF-1.7'
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert (email.text, email.html) == ("", None)
    assert [a.filename for a in email.attachments] == ["scan.pdf"]


def test_a3_message_over_the_size_limit_is_quarantined_unparsed() -> None:
    """A message over 25 MB is too-large with metadata only: no body, no attachments."""
    raw = IDENTITY + b"Content-Type: text/plain\r\n\r\n" + b"x" * (25 * 1024 * 1024 + 1)
    assert_quarantined(parse_email(raw), raw, "too-large")


@pytest.mark.parametrize(
    ("name", "display", "extension"),
    [
        ("../../x", "x", "bin"),
        ("..\\x", "x", "bin"),
        ("/abs", "abs", "bin"),
        ("C:\\x", "x", "bin"),
        ("x\x00.exe", "x.exe", "exe"),
        ("CON", "CON", "bin"),
        (".htaccess", ".htaccess", "htaccess"),
        ("a" * 300 + ".txt", "a" * 251 + ".txt", "txt"),
        ("", "", "bin"),
        ("../../.ssh/authorized_keys", "authorized_keys", "bin"),
        ("..", "", "bin"),
        ("name.tar.gz", "name.tar.gz", "gz"),
    ],
)
def test_a4_hostile_filenames_get_generated_storage_names(
    name: str, display: str, extension: str
) -> None:
    """Path, device, hidden, long and empty names store under a generated safe name."""
    quoted = name.replace("\\", "\\\\").encode("utf-8")
    raw = mixed(
        part("Content-Type: text/plain", body="file"),
        part(
            "Content-Type: application/octet-stream",
            b'Content-Disposition: attachment; filename="' + quoted + b'"',
            body=b"data",
        ),
    )
    email = parse_email(raw)
    assert_ticket(email)
    (attachment,) = email.attachments
    assert attachment.filename == display
    assert attachment.original_filename == name.replace("\x00", "")
    assert STORAGE_NAME.match(attachment.storage_name)
    assert ".." not in attachment.storage_name
    assert attachment.storage_name.endswith("." + extension)


def test_a5_rtl_override_filename_shows_cleanly_and_stores_the_real_extension() -> None:
    """'evil\\u202egpj.exe' displays without the override and is stored as .exe."""
    raw = mixed(
        part("Content-Type: text/plain", body="photo"),
        part(
            "Content-Type: image/jpeg",
            "Content-Disposition: attachment; filename*=utf-8''evil%E2%80%AEgpj.exe",
            body=b"MZ",
        ),
    )
    (attachment,) = parse_email(raw).attachments
    assert attachment.filename == "evilgpj.exe"
    assert attachment.original_filename == "evil\u202egpj.exe"
    assert attachment.storage_name.endswith(".exe")


def test_a6_winmail_dat_is_kept_as_an_attachment() -> None:
    """A TNEF winmail.dat part is kept as an attachment, not parsed, not fatal."""
    tnef = b"\x78\x9f\x3e\x22" + bytes(range(64))
    raw = mixed(
        part("Content-Type: text/plain", body="Outlook sent this."),
        part(
            'Content-Type: application/ms-tnef; name="winmail.dat"',
            'Content-Disposition: attachment; filename="winmail.dat"',
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(tnef),
        ),
    )
    email = parse_email(raw)
    assert_ticket(email)
    (winmail,) = email.attachments
    assert (winmail.filename, winmail.content_type, winmail.payload) == (
        "winmail.dat",
        "application/ms-tnef",
        tnef,
    )


def test_a7_attached_message_headers_never_drive_threading() -> None:
    """An attached message's In-Reply-To, References, Message-ID and Subject stay inside it."""
    inner = (
        b"From: agent@helpdesk.example\r\nSubject: [ID:999] Other customer's ticket\r\n"
        b"Message-ID: <inner@helpdesk.example>\r\nIn-Reply-To: <ticket-999@helpdesk.example>\r\n"
        b"References: <ticket-999@helpdesk.example>\r\nX-Halomail-Loop: forged\r\n\r\nsecret"
    )
    raw = mixed(
        part("Content-Type: text/plain", body="See the forwarded mail."),
        part("Content-Type: message/rfc822", body=inner),
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert (email.in_reply_to, email.references, email.thread_ids) == ((), (), ())
    assert email.subject == "Hostile"
    assert email.loop_markers == ()
    assert email.embedded_message_ids == ("inner@helpdesk.example",)
    assert "[ID:999]" not in repr(email.headers)
    (attached,) = email.attachments
    assert attached.filename == "[ID 999] Other customer's ticket.eml"
    assert attached.payload == inner


def test_a7_base64_encoded_attached_message_is_decoded_to_its_bytes() -> None:
    """A message/rfc822 part sent in base64 still yields the inner message's bytes and id."""
    inner = b"Subject: Encoded\r\nMessage-ID: <enc@x.example>\r\n\r\nhi"
    raw = mixed(
        part("Content-Type: text/plain", body="fwd"),
        part(
            "Content-Type: message/rfc822",
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(inner),
        ),
    )
    email = parse_email(raw)
    assert email.embedded_message_ids == ("enc@x.example",)
    assert [(a.filename, a.payload) for a in email.attachments] == [("Encoded.eml", inner)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "Content-Disposition: attachment; filename*=UTF-8''%D0%9E%D1%82%D1%87%D0%B5%D1%82.docx",
            "Отчет.docx",
        ),
        ("Content-Disposition: attachment; filename*=utf-8''%E6%8A%A5%E5%91%8A.xlsx", "报告.xlsx"),
        ("Content-Disposition: attachment; filename*=iso-8859-1'de'Gr%FC%DFe.txt", "Grüße.txt"),
        (
            'Content-Disposition: attachment; filename="=?UTF-8?B?0J7RgtGH0LXRgi5kb2N4?="',
            "Отчет.docx",
        ),
        (
            'Content-Disposition: attachment; filename="=?utf-8?Q?Gr=C3=BC=C3=9Fe=2Etxt?="',
            "Grüße.txt",
        ),
        (
            'Content-Disposition: attachment; filename="=?utf-8?B?5oql?= =?utf-8?B?5ZGK?=.xlsx"',
            "报告.xlsx",
        ),
        (
            'Content-Type: application/octet-stream; name="=?ISO-8859-1?Q?Gr=FC=DFe.txt?="',
            "Grüße.txt",
        ),
        ('Content-Disposition: attachment; filename="Grüße.txt"', "Grüße.txt"),
    ],
)
def test_a8_non_ascii_filenames_decode_to_reference_values(header: str, expected: str) -> None:
    """RFC 2231 and RFC 2047 names (base64 and quoted) and raw UTF-8 names decode correctly."""
    headers = [header.encode("utf-8")]
    if not header.startswith("Content-Type"):
        headers.insert(0, b"Content-Type: application/octet-stream")
    raw = mixed(part("Content-Type: text/plain", body="file"), part(*headers, body=b"data"))
    (attachment,) = parse_email(raw).attachments
    assert attachment.filename == expected


def test_a9_mhtml_inline_images_are_attachments_and_nothing_is_fetched() -> None:
    """MHTML images (cid and Content-Location) become attachments; no URL is followed."""
    raw = (
        IDENTITY
        + b'Content-Type: multipart/related; boundary="r"; type="text/html"\r\n\r\n'
        + (
            b"--r\r\nContent-Type: text/html\r\nContent-Location: http://tracker.example/page\r\n\r\n"
            b'<img src="cid:img-1@x"><img src="http://tracker.example/pixel.gif">\r\n'
            b"--r\r\nContent-Type: image/png\r\nContent-ID: <img-1@x>\r\n\r\nPNGDATA\r\n"
            b"--r\r\nContent-Type: image/gif\r\nContent-Location: http://tracker.example/a.gif\r\n\r\n"
            b"GIF89a\r\n--r--\r\n"
        )
    )
    email = parse_email(raw)
    assert_ticket(email)
    png, gif = email.attachments
    assert (png.content_id, png.inline, png.payload) == ("img-1@x", True, b"PNGDATA")
    assert (gif.content_id, gif.inline, gif.payload) == (None, False, b"GIF89a")


@pytest.mark.parametrize(
    ("svg", "flagged"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', True),
        (b'<svg onload="alert(1)"/>', True),
        (b"<svg/onload=alert(1)>", True),
        (b'<svg><a xlink:href="javascript:alert(1)">x</a></svg>', True),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', False),
    ],
)
def test_x6_svg_with_script_is_flagged_active_content(svg: bytes, flagged: bool) -> None:
    """An SVG attachment holding script or event handlers carries the active-content flag."""
    raw = mixed(
        part("Content-Type: text/plain", body="image"),
        part(
            "Content-Type: image/svg+xml",
            'Content-Disposition: attachment; filename="a.svg"',
            body=svg,
        ),
    )
    (attachment,) = parse_email(raw).attachments
    assert attachment.flags == (("active-content",) if flagged else ())
    assert attachment.payload == svg


# --- L: headers and threading ---------------------------------------------------------


def test_l2_overlong_message_id_is_bounded_and_stable() -> None:
    """A 2,000-character Message-ID is cut to 255 characters, the same every time."""
    long_id = "x" * 2000 + "@customer.example"
    raw = message("From: a@customer.example", f"Message-ID: <{long_id}>")
    first, second = parse_email(raw), parse_email(raw)
    other = parse_email(raw.replace(b"xxxx@", b"xxxy@"))
    assert first.message_id is not None
    assert len(first.message_id) == 255
    assert first.message_id == second.message_id
    assert first.message_id.startswith("xxxx")
    assert other.message_id != first.message_id
    assert other.message_id is not None
    assert len(other.message_id) == 255


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"<a b c@customer.example>", "abc@customer.example"),
        (b'<"quoted id"@customer.example>', "quotedid@customer.example"),
        (b"<nul\x00id@customer.example>", "nulid@customer.example"),
        (b"<tab\tid@customer.example>", "tabid@customer.example"),
        (b'  "<odd\'id>"  ', "oddid"),
        (b"<>", None),
        (b"", None),
    ],
)
def test_l2_message_id_with_spaces_quotes_or_nul_is_normalized(
    value: bytes, expected: str | None
) -> None:
    """Whitespace, quotes, NUL and control characters are removed from the Message-ID."""
    email = parse_email(message("From: a@customer.example", b"Message-ID: " + value))
    assert email.message_id == expected
    assert email.quarantine_reason is None


def test_l3_missing_message_id_gives_none_and_the_raw_hash() -> None:
    """Without a Message-ID, message_id is None and sha256 is the hash of the raw bytes."""
    raw = message("From: Alice <alice@customer.example>", "Subject: no id")
    email = parse_email(raw)
    assert email.message_id is None
    assert email.sha256 == hashlib.sha256(raw).hexdigest()
    assert parse_email(raw).sha256 == email.sha256


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["In-Reply-To:"], ()),
        (["In-Reply-To: garbage without brackets"], ()),
        (["In-Reply-To: <>"], ()),
        (["In-Reply-To: <no-at-sign>"], ()),
        (["In-Reply-To: <has space@x.example>"], ()),
        (["In-Reply-To: Your message of Monday <a@x.example>"], ("a@x.example",)),
        (["In-Reply-To: <a@x.example>", "In-Reply-To: <b@x>"], ("a@x.example", "b@x")),
        (["In-Reply-To: <bad> junk <c@x.example> (comment) <d@x.example"], ("c@x.example",)),
        (["In-Reply-To: <a@x.example> <a@x.example>"], ("a@x.example",)),
    ],
)
def test_l6_empty_invalid_or_multiple_in_reply_to(
    headers: list[str], expected: tuple[str, ...]
) -> None:
    """Every valid id in any In-Reply-To is used; empty and invalid ones are ignored."""
    email = parse_email(message(*IDENTITY.decode().splitlines(), *headers))
    assert_ticket(email)
    assert email.in_reply_to == expected


def test_l8_spoofed_internal_headers_are_removed() -> None:
    """X-Halomail-* headers never reach headers; X-Halomail-Loop values go to loop_markers."""
    raw = message(
        *IDENTITY.decode().splitlines(),
        "X-Halomail-Loop: forged-token",
        "x-halomail-ticket: 42",
        "X-HALOMAIL-LOOP: second",
        "X-Other: kept",
    )
    email = parse_email(raw)
    assert_ticket(email)
    assert email.loop_markers == ("forged-token", "second")
    assert [name for name, _ in email.headers] == ["From", "Subject", "Message-ID", "X-Other"]
    assert email.header("X-Halomail-Ticket") is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not an address",
        "alice",
        "@customer.example",
        "alice@",
        "alice@@customer.example",
        "alice@customer..example",
        "alice@-customer.example",
        "alice@customer_example.com",
        "<>",
        "<MAILER-DAEMON>",
        "MAILER-DAEMON <>",
        "postmaster",
        "a" * 400 + "@customer.example",
    ],
)
def test_l9_unparseable_from_gives_no_sender(value: str) -> None:
    """A From header with no usable address (and no other sender header) gives sender None
    and sender_unparseable; the raw From stays readable."""
    email = parse_email(message(f"From: {value}", "Subject: who?"))
    assert email.sender is None
    assert email.sender_unparseable is True
    assert email.quarantine_reason is None
    assert email.header("From") == value.strip()
    assert "unparseable-sender" in email.defects


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ali ce@customer.example", Address("ce@customer.example", "ali")),
        ("<alice@customer.example> <bob@customer.example>", Address("alice@customer.example")),
        (
            '"unterminated <alice@customer.example>',
            Address("alice@customer.example", "unterminated"),
        ),
    ],
)
def test_l9_a_from_a_mail_client_reads_gives_that_address(value: str, expected: Address) -> None:
    """Shapes the strict parser rejects but a mail client reads (an unquoted name, two angle
    addresses, an unterminated quote) give the address the client shows, with a defect."""
    email = parse_email(message(f"From: {value}", "Subject: who?"))
    assert email.sender == expected
    assert email.sender_unparseable is False
    assert "sender-read-leniently" in email.defects


def test_l9_missing_from_is_not_unparseable() -> None:
    """No From header at all gives sender None without the unparseable flag."""
    email = parse_email(message("Subject: anonymous"))
    assert (email.sender, email.sender_unparseable) == (None, False)


def test_l9_from_with_several_addresses_uses_the_first_valid() -> None:
    """A list From uses its first valid address; invalid entries before it are skipped."""
    email = parse_email(message("From: junk, Bob <bob@customer.example>, carol@customer.example"))
    assert email.sender == Address("bob@customer.example", "Bob")


# --- F11: header-parse denial of service ----------------------------------------------


def test_f11_content_type_with_8000_parameters_is_quarantined() -> None:
    """A Content-Type with 8,000 ';' parameters is headers-too-large before parsing."""
    raw = IDENTITY + b"Content-Type: multipart/mixed" + b";a=b" * 8000 + b'; boundary="x"\r\n\r\n'
    raw += b"--x\r\n\r\nhi\r\n--x--\r\n"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_f11_to_with_8000_encoded_words_is_quarantined() -> None:
    """A To: with 8,000 encoded words and addresses is headers-too-large before parsing."""
    to = b", ".join(b"=?utf-8?q?User_%d?= <u%d@customer.example>" % (i, i) for i in range(8000))
    raw = IDENTITY + b"To: " + to + b"\r\n\r\nhi"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_f11_to_with_8000_plain_addresses_keeps_the_first_thousand() -> None:
    """A To: with 8,000 plain addresses (136 KB, under the block limit) is truncated to the
    first 1,000 whole addresses before any address is parsed; the email is a ticket."""
    raw = IDENTITY + b"To: " + b", ".join(b"u%d@x.example" % i for i in range(8000)) + b"\r\n\r\n."
    email = parse_email(raw)
    assert_ticket(email)
    assert [a.addr_spec for a in email.to] == [f"u{i}@x.example" for i in range(1000)]
    assert "header-truncated:to" in email.defects


def test_f11_parameter_dos_inside_a_part_is_quarantined() -> None:
    """The parameter cap applies to part headers too, before the stdlib reads them."""
    raw = mixed(part(b"Content-Type: text/plain" + b";a=b" * 8000, body="x"))
    assert_quarantined(parse_email(raw), raw, "headers-too-large")


def test_f11_long_run_of_empty_parameters_is_collapsed_not_quarantined() -> None:
    """'text/html ; ; ; …' (7,000 empty parameters, seen in real spam) parses quickly."""
    raw = IDENTITY + b"Content-Type: text/html" + b" ;" * 7000 + b" charset=utf-8\r\n\r\n<p>hi</p>"
    email = parse_email(raw)
    assert_ticket(email)
    assert email.text == "hi"
    assert "empty-parameters" in email.defects


def test_f11_address_list_of_12000_junk_entries_is_truncated_before_parsing() -> None:
    """A To: of 12,000 junk entries (no '@' at all) is cut to the token cap before the
    splitter reads it: no To address, a truncation defect, and still a ticket."""
    raw = IDENTITY + b"To: " + b'"x",' * 12_000 + b"\r\n\r\nhi"
    email = parse_email(raw)
    assert_ticket(email)
    assert email.to == ()
    assert "header-truncated:to" in email.defects
    assert email.header("To") is not None
    assert len(email.header("To") or "") < 5 * 1000 * 2


def test_f11_overlong_multipart_boundary_is_quarantined() -> None:
    """A 60 KB boundary (RFC 2046 allows 70 characters) is headers-too-large."""
    boundary = b"b" * 60_000
    raw = IDENTITY + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    raw += b"--" + boundary + b"\r\n\r\nx\r\n--" + boundary + b"--\r\n"
    assert_quarantined(parse_email(raw), raw, "headers-too-large")
