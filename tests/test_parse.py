"""parse_email on the shapes real mail takes: bodies, names, addresses, threading headers."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import re
import string

import pytest

from halomail.inbound import _addresses
from halomail.inbound.attachments import clean_filename, extension_for, storage_name
from halomail.inbound.models import Address, InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email

STORAGE_NAME = re.compile(r"^att-\d+-[0-9a-f]{8}\.[a-z0-9]{1,10}$")


def message(*headers: str, body: str | bytes = "Hello.\r\n") -> bytes:
    """A message from header lines and a body, CRLF line endings."""
    head = "".join(f"{line}\r\n" for line in headers).encode("utf-8")
    return head + b"\r\n" + (body.encode("utf-8") if isinstance(body, str) else body)


def multipart(subtype: str, boundary: str, *parts: bytes, headers: tuple[str, ...] = ()) -> bytes:
    """A multipart message (or part, when ``headers`` is empty of From) from raw parts."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return message(
        *headers,
        "MIME-Version: 1.0",
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"',
        body=b"This is a multi-part message in MIME format.\r\n" + body,
    )


def part(*headers: str, body: str | bytes) -> bytes:
    """One MIME part: its headers, a blank line, its body."""
    return message(*headers, body=body)


BASIC = ("From: Alice Martin <alice@customer.example>", "To: support@helpdesk.example")


class TestPlainEmail:
    """A simple text email fills every field a ticket needs."""

    RAW = message(
        "Return-Path: <alice@customer.example>",
        "From: Alice Martin <alice@customer.example>",
        "To: Support <support@helpdesk.example>, bob@customer.example",
        "Cc: Carol <carol@customer.example>",
        "Reply-To: alice.private@customer.example",
        "Subject: Printer is jammed",
        "Date: Tue, 05 Mar 2024 09:15:00 +0100",
        "Message-ID: <msg-1@customer.example>",
        'Content-Type: text/plain; charset="utf-8"',
        body="The printer jams on every page.\r\n\r\n> old quoted text\r\n",
    )

    def test_identity_fields_are_read(self) -> None:
        """Message-ID, sender, subject, date, size and SHA-256 come out as sent."""
        email = parse_email(self.RAW)
        assert isinstance(email, InboundEmail)
        assert email.message_id == "msg-1@customer.example"
        assert email.sender == Address("alice@customer.example", "Alice Martin")
        assert email.sender_unparseable is False
        assert email.subject == "Printer is jammed"
        assert email.date == dt.datetime(2024, 3, 5, 8, 15, tzinfo=dt.UTC)
        assert email.size == len(self.RAW)
        assert email.sha256 == hashlib.sha256(self.RAW).hexdigest()
        assert email.quarantine_reason is None
        assert email.defects == ()

    def test_recipients_are_read_with_display_names(self) -> None:
        """To, Cc, Reply-To and Return-Path are parsed into addr-specs and names."""
        email = parse_email(self.RAW)
        assert email.to == (
            Address("support@helpdesk.example", "Support"),
            Address("bob@customer.example"),
        )
        assert email.cc == (Address("carol@customer.example", "Carol"),)
        assert email.reply_to == (Address("alice.private@customer.example"),)
        assert email.return_path == "alice@customer.example"

    def test_body_is_text_with_lf_line_endings(self) -> None:
        """The text body keeps its content with CRLF turned into LF; no HTML, no files."""
        email = parse_email(self.RAW)
        assert email.text == "The printer jams on every page.\n\n> old quoted text\n"
        assert email.html is None
        assert email.attachments == ()
        assert "old quoted text" not in email.new_text
        assert "The printer jams on every page." in email.new_text

    def test_headers_are_kept_in_order_decoded(self) -> None:
        """Every top-level header is kept, in order, and readable by name."""
        email = parse_email(self.RAW)
        assert [name for name, _ in email.headers] == [
            "Return-Path",
            "From",
            "To",
            "Cc",
            "Reply-To",
            "Subject",
            "Date",
            "Message-ID",
            "Content-Type",
        ]
        assert email.header("subject") == "Printer is jammed"
        assert email.header_all("X-Missing") == []


def test_repeated_headers_read_by_name_in_order_whatever_the_case() -> None:
    """header() gives the first of a repeated header, header_all() every one, in order."""
    email = parse_email(
        b"Received: from a\r\nFrom: amy@example.com\r\nreceived: from b\r\n"
        b"RECEIVED: from c\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    assert email.header("RECEIVED") == "from a"
    assert email.header_all("Received") == ["from a", "from b", "from c"]
    email.header_all("received").clear()  # the caller's list, not the email's
    assert email.header_all("received") == ["from a", "from b", "from c"]


def test_bare_lf_email_parses_like_crlf() -> None:
    """An email with bare LF line endings parses exactly like its CRLF twin."""
    crlf = message(*BASIC, "Subject: Hello there", "Message-ID: <lf@x.example>", body="a\r\nb\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    one, two = parse_email(crlf), parse_email(lf)
    assert (two.subject, two.text, two.message_id) == ("Hello there", "a\nb\n", "lf@x.example")
    assert (one.subject, one.text, one.sender) == (two.subject, two.text, two.sender)


def test_multipart_alternative_gives_text_and_sanitized_html() -> None:
    """multipart/alternative yields the text part as text and the HTML part sanitized."""
    raw = multipart(
        "alternative",
        "alt-1",
        part("Content-Type: text/plain; charset=utf-8", body="Plain body"),
        part(
            "Content-Type: text/html; charset=utf-8",
            body='<p onclick="x()">Rich <b>body</b></p><script>alert(1)</script>',
        ),
        headers=(*BASIC, "Subject: Both"),
    )
    email = parse_email(raw)
    assert email.text == "Plain body"
    assert email.html is not None
    assert "Rich" in email.html
    assert "<b>body</b>" in email.html
    assert "script" not in email.html
    assert "onclick" not in email.html
    assert email.attachments == ()


def test_the_html_is_kept_as_sent_and_sanitized_once_when_asked_for() -> None:
    """html_source is the HTML as sent; html is its sanitized form, computed once."""
    source = '<p onclick="x()">Rich <b>body</b></p><script>alert(1)</script>'
    raw = multipart(
        "alternative",
        "alt-2",
        part("Content-Type: text/plain; charset=utf-8", body="Plain body"),
        part("Content-Type: text/html; charset=utf-8", body=source),
        headers=(*BASIC, "Subject: Both"),
    )
    email = parse_email(raw)
    assert email.html_source == source
    first = email.html
    assert first == "<p>Rich <b>body</b></p>"
    assert email.html is first
    assert "html_source" not in repr(email)  # unsafe markup stays out of logs


def test_html_only_email_gets_text_from_the_html() -> None:
    """An HTML-only email (no <html> tag) keeps its body as text derived from the HTML."""
    raw = message(
        *BASIC,
        "Subject: HTML only",
        "Content-Type: text/html; charset=utf-8",
        body="<div>The VPN <b>drops</b> every hour.</div>",
    )
    email = parse_email(raw)
    assert email.html is not None
    assert "drops" in email.html
    assert "The VPN" in email.text
    assert "drops" in email.text
    assert "every hour." in email.text
    assert "<b>" not in email.text


def test_inline_image_referenced_by_cid_is_an_inline_attachment() -> None:
    """An image in multipart/related referenced by cid: is an inline attachment, id unbracketed."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    raw = multipart(
        "related",
        "rel",
        part("Content-Type: text/html; charset=utf-8", body='<p>Logo: <img src="cid:logo@x"></p>'),
        part(
            "Content-Type: image/png",
            "Content-Transfer-Encoding: base64",
            "Content-ID: <logo@x>",
            body=base64.encodebytes(png),
        ),
        part(
            "Content-Type: image/gif",
            "Content-ID: <unused@x>",
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(b"GIF89a"),
        ),
        headers=(*BASIC, "Subject: Logo"),
    )
    email = parse_email(raw)
    logo, unused = email.attachments
    assert (logo.content_id, logo.inline, logo.payload, logo.size) == (
        "logo@x",
        True,
        png,
        len(png),
    )
    assert logo.content_type == "image/png"
    assert logo.filename == ""
    assert logo.storage_name.endswith(".png")
    assert (unused.content_id, unused.inline) == ("unused@x", False)


def test_a_cid_reference_matches_whatever_its_case_and_percent_encoding() -> None:
    """``CID:Logo%40X`` in the HTML refers to the image whose Content-ID is ``<logo@x>``."""
    raw = multipart(
        "related",
        "rel",
        part("Content-Type: text/html", body='<img SRC="CID:Logo%40X"><img src="cid:other">'),
        part("Content-Type: image/png", "Content-ID: <logo@x>", body="png"),
        part("Content-Type: image/png", "Content-ID: <logo@y>", body="png"),
        headers=(*BASIC, "Subject: Logo"),
    )
    email = parse_email(raw)
    assert [(a.content_id, a.inline) for a in email.attachments] == [
        ("logo@x", True),
        ("logo@y", False),
    ]


def test_inline_disposition_with_content_id_is_inline() -> None:
    """Content-Disposition: inline with a Content-ID marks an attachment inline."""
    raw = multipart(
        "mixed",
        "m",
        part("Content-Type: text/plain", body="see picture"),
        part(
            "Content-Type: image/jpeg",
            'Content-Disposition: inline; filename="photo.jpg"',
            "Content-ID: <photo-1>",
            body=b"\xff\xd8\xff\xe0",
        ),
        headers=BASIC,
    )
    (photo,) = parse_email(raw).attachments
    assert (photo.filename, photo.inline, photo.content_id) == ("photo.jpg", True, "photo-1")


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf", "naïve résumé.pdf"),
        ("attachment; filename*=UTF-8'en'%E2%82%AC%20rates.pdf", "€ rates.pdf"),
        ("attachment; filename*=iso-8859-1''caf%E9.pdf", "café.pdf"),
        (
            "attachment; filename*0*=utf-8''%E6%97%A5%E6%9C%AC; filename*1*=%E8%AA%9E.pdf",
            "日本語.pdf",
        ),
        ('attachment; filename*0="long"; filename*1="-name.pdf"', "long-name.pdf"),
        ('attachment; filename="=?utf-8?B?w6l0w6kgMjAyNC5wZGY=?="', "été 2024.pdf"),
        ('attachment; filename="=?iso-8859-1?Q?r=E9sum=E9.pdf?="', "résumé.pdf"),
        ("attachment; filename=\"plain.pdf\"; filename*=utf-8''pr%C3%A9cis.pdf", "précis.pdf"),
        ('attachment; filename="semi;colon.pdf"', "semi;colon.pdf"),
        ('attachment; filename="quoted \\"name\\".pdf"', 'quoted "name".pdf'),
    ],
)
def test_attachment_names_are_decoded(disposition: str, expected: str) -> None:
    """RFC 2231 (charsets, languages, continuations) and RFC 2047 names decode to the sent name."""
    raw = multipart(
        "mixed",
        "m",
        part("Content-Type: text/plain", body="attached"),
        part("Content-Type: application/pdf", f"Content-Disposition: {disposition}", body=b"%PDF"),
        headers=BASIC,
    )
    (attachment,) = parse_email(raw).attachments
    assert attachment.filename == expected
    assert attachment.original_filename == expected
    assert STORAGE_NAME.match(attachment.storage_name)
    assert attachment.storage_name.endswith(".pdf")


def test_name_parameter_of_content_type_names_the_file() -> None:
    """Without Content-Disposition, the Content-Type name (RFC 2047 encoded) names the file."""
    raw = multipart(
        "mixed",
        "m",
        part("Content-Type: text/plain", body="attached"),
        part('Content-Type: application/pdf; name="=?utf-8?Q?Rechnung_M=C3=A4rz.pdf?="', body=b"x"),
        headers=BASIC,
    )
    (attachment,) = parse_email(raw).attachments
    assert attachment.filename == "Rechnung März.pdf"


def test_attachments_keep_order_types_sizes_and_payloads() -> None:
    """Each attachment keeps its decoded payload, size, lower-cased type and position."""
    csv = b"a,b\r\n1,2\r\n"
    raw = multipart(
        "mixed",
        "m",
        part("Content-Type: text/plain", body="two files"),
        part(
            "Content-Type: Text/CSV",
            'Content-Disposition: attachment; filename="data.csv"',
            "Content-Transfer-Encoding: base64",
            body=base64.encodebytes(csv),
        ),
        part(
            "Content-Type: application/octet-stream",
            'Content-Disposition: attachment; filename="blob"',
            body=b"\x00\x01binary",
        ),
        headers=BASIC,
    )
    first, second = parse_email(raw).attachments
    assert (first.filename, first.content_type, first.payload, first.size) == (
        "data.csv",
        "text/csv",
        csv,
        len(csv),
    )
    assert first.storage_name == f"att-1-{hashlib.sha256(csv).hexdigest()[:8]}.csv"
    assert (second.filename, second.payload) == ("blob", b"\x00\x01binary")
    assert second.storage_name.startswith("att-2-")
    assert second.storage_name.endswith(".bin")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("=?utf-8?q?Caf=C3=A9_ouvert?=", "Café ouvert"),
        ("=?UTF-8?B?w4dhIHZhIGJpZW4gPw==?=", "Ça va bien ?"),
        ("=?utf-8?q?Hello?= =?utf-8?q?_World?=", "Hello World"),
        ("=?utf-8?q?Hello?=\r\n =?utf-8?q?World?=", "HelloWorld"),
        ("Re: =?iso-8859-1?q?R=E9union?= demain", "Re: Réunion demain"),
        # A character split across two encoded words survives (bytes joined first).
        ("=?utf-8?B?5pel?= =?utf-8?B?5pys6Kqe?=", "日本語"),
        ("=?utf-8?q?=E6=97?= =?utf-8?q?=A5?=", "日"),
        ("=?utf-8?b?aGVsbG8?=", "hello"),  # missing padding
        ("=?koi8-r?b?8NLJ18XU?=", "Привет"),
        ("=?utf-8*en?q?Language_tag?=", "Language tag"),
        ("plain =?utf-8?q?and?= plain", "plain and plain"),
        ("Folded\r\n subject line", "Folded subject line"),
        ("Tab\tseparated", "Tab separated"),
    ],
)
def test_encoded_subjects_are_decoded(subject: str, expected: str) -> None:
    """RFC 2047 subjects in Q and B forms, folded, adjacent or mixed decode to one line."""
    email = parse_email(message(*BASIC, f"Subject: {subject}"))
    assert email.subject == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Tue, 05 Mar 2024 09:15:00 +0100", dt.datetime(2024, 3, 5, 8, 15, tzinfo=dt.UTC)),
        ("5 Mar 2024 09:15 -0500", dt.datetime(2024, 3, 5, 14, 15, tzinfo=dt.UTC)),
        ("Tue, 05 Mar 2024 09:15:00 +0000 (UTC)", dt.datetime(2024, 3, 5, 9, 15, tzinfo=dt.UTC)),
        ("Tue, 05 Mar 2024 09:15:00 -0000", dt.datetime(2024, 3, 5, 9, 15, tzinfo=dt.UTC)),
        ("Tue, 05 Mar 2024 09:15:00 GMT", dt.datetime(2024, 3, 5, 9, 15, tzinfo=dt.UTC)),
        ("Tue, 05 Mar 24 09:15:00 EST", dt.datetime(2024, 3, 5, 14, 15, tzinfo=dt.UTC)),
        ("Tue, 05 Mar 2024 09:15:00", dt.datetime(2024, 3, 5, 9, 15, tzinfo=dt.UTC)),
    ],
)
def test_dates_parse_to_aware_datetimes(date: str, expected: dt.datetime) -> None:
    """Dates in every common form become aware datetimes; no zone at all means UTC."""
    email = parse_email(message(*BASIC, f"Date: {date}"))
    assert email.date == expected
    assert email.date is not None
    assert email.date.tzinfo is not None


@pytest.mark.parametrize("date", ["yesterday", "Tue, 35 Mar 2024 09:15:00 +0100", "", "99:99"])
def test_garbage_dates_become_none_with_a_defect(date: str) -> None:
    """A Date header that is not a date gives date None and an invalid-date defect."""
    email = parse_email(message(*BASIC, f"Date: {date}"))
    assert email.date is None
    assert "invalid-date" in email.defects
    assert email.quarantine_reason is None


def test_forwarded_message_is_one_attachment_whose_headers_stay_inside() -> None:
    """A message/rfc822 part is one .eml attachment; its headers never reach the outer email."""
    inner = message(
        "From: Mallory <mallory@evil.example>",
        "Subject: Quarterly numbers",
        "Message-ID: <inner-1@evil.example>",
        "In-Reply-To: <ticket-42@helpdesk.example>",
        "References: <ticket-42@helpdesk.example>",
        "X-Inner-Only: yes",
        body="Inner body.\r\n",
    )
    raw = multipart(
        "mixed",
        "fwd",
        part("Content-Type: text/plain", body="FYI, see attached."),
        part("Content-Type: message/rfc822", "Content-Disposition: attachment", body=inner),
        headers=(*BASIC, "Subject: Fwd: numbers", "Message-ID: <outer-1@customer.example>"),
    )
    email = parse_email(raw)
    (forwarded,) = email.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "Quarterly numbers.eml"
    assert forwarded.storage_name.endswith(".eml")
    assert forwarded.payload == inner
    assert email.message_id == "outer-1@customer.example"
    assert email.in_reply_to == ()
    assert email.references == ()
    assert email.embedded_message_ids == ("inner-1@evil.example",)
    assert email.header("X-Inner-Only") is None
    assert email.text == "FYI, see attached."


def test_dsn_rfc822_headers_part_gives_the_embedded_message_id() -> None:
    """A DSN's text/rfc822-headers part yields the bounced Message-ID, not a thread id."""
    report = part(
        "Content-Type: message/delivery-status", body="Reporting-MTA: dns; mx.example\r\n"
    )
    headers = part(
        "Content-Type: text/rfc822-headers",
        body="From: support@helpdesk.example\r\nMessage-ID: <ack-7@helpdesk.example>\r\n"
        "Subject: [ID:7] We got your email\r\n",
    )
    raw = multipart(
        "report; report-type=delivery-status",
        "dsn",
        part("Content-Type: text/plain", body="Delivery failed."),
        report,
        headers,
        headers=("From: MAILER-DAEMON@mx.example", "To: support@helpdesk.example"),
    )
    email = parse_email(raw)
    assert email.embedded_message_ids == ("ack-7@helpdesk.example",)
    assert email.in_reply_to == ()
    assert email.references == ()
    assert email.text == "Delivery failed."
    assert [a.content_type for a in email.attachments] == [
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert email.attachments[0].payload == b"Reporting-MTA: dns; mx.example\r\n"


@pytest.mark.parametrize(
    ("header", "addr_spec", "display_name"),
    [
        # CVE-2023-27043: the real addr-spec is the one in angle brackets.
        ('"alice@example.org" <bob@evil.com>', "bob@evil.com", "alice@example.org"),
        ("alice@example.org<bob@evil.com>", "bob@evil.com", "alice@example.org"),
        ("alice@example.org)<bob@evil.com>", "bob@evil.com", "alice@example.org)"),
        ('"Bob <bob@evil.com>" <alice@real.example>', "alice@real.example", "Bob <bob@evil.com>"),
        ('"Smith, John" <john@x.example>', "john@x.example", "Smith, John"),
        ("john@x.example (John Smith)", "john@x.example", "John Smith"),
        ("=?utf-8?q?Jos=C3=A9?= <jose@x.example>", "jose@x.example", "José"),
        ('"=?utf-8?q?Jos=C3=A9?=" <jose@x.example>', "jose@x.example", "José"),
        (
            "=?utf-8?q?=3Cceo=40x.example=3E?= <eve@evil.example>",
            "eve@evil.example",
            "<ceo@x.example>",
        ),
        ('"john doe"@x.example', '"john doe"@x.example', ""),
        ("<@relay.example:route@x.example>", "route@x.example", ""),
        ("user@[192.0.2.1]", "user@[192.0.2.1]", ""),
        ("Team: ann@x.example, ben@x.example;", "ann@x.example", ""),
    ],
)
def test_from_addresses_keep_addr_spec_and_name_apart(
    header: str, addr_spec: str, display_name: str
) -> None:
    """From is parsed strictly: the addr-spec is the real one, the name only decoration."""
    email = parse_email(message(f"From: {header}", "Subject: x"))
    assert email.sender == Address(addr_spec, display_name)
    assert email.sender_unparseable is False


def test_utf8_addresses_and_idn_domains_are_accepted() -> None:
    """Raw UTF-8 (SMTPUTF8) local parts and IDN domains are valid addresses."""
    email = parse_email(message("From: Jörg <jörg@bücher.example>", "To: 用户@例子.广告"))
    assert email.sender == Address("jörg@bücher.example", "Jörg")
    assert email.to == (Address("用户@例子.广告"),)


def test_a_domain_letter_is_an_ascii_letter_or_digit_or_any_character_past_latin_1() -> None:
    """The domain classes, written as what they leave out, take exactly their characters:
    every code point is tried, and each class also takes the hyphen (and the dot) it
    names."""
    letters = set(string.ascii_letters + string.digits)
    classes = {
        _addresses._LETTER: "",
        _addresses._LETTER_OR_HYPHEN: "-",
        _addresses._LETTER_HYPHEN_OR_DOT: "-.",
    }
    for pattern, extra in classes.items():
        each = re.compile(pattern + "+")
        everything = "".join(map(chr, range(0x110000)))
        taken = "".join(match.group() for match in each.finditer(everything))
        expected = "".join(c for c in everything if c in letters or c in extra or ord(c) > 0xA0)
        assert taken == expected, pattern
    sender = parse_email(message("From: a@ex-ample.bücher.example")).sender
    assert sender == Address("a@ex-ample.bücher.example")
    assert parse_email(message("From: a@ex_ample.example")).sender_unparseable


def test_recipient_headers_repeat_and_merge_without_duplicates() -> None:
    """Several To/Cc/Reply-To headers merge in order, without repeating an address."""
    email = parse_email(
        message(
            *BASIC,
            "To: Bob <bob@x.example>, support@helpdesk.example",
            "Cc: ann@x.example",
            "Cc: ANN@x.example, undisclosed-recipients:;",
            "Reply-To: a@x.example, b@x.example",
        )
    )
    assert [a.addr_spec for a in email.to] == ["support@helpdesk.example", "bob@x.example"]
    assert email.cc == (Address("ann@x.example"),)
    assert [a.addr_spec for a in email.reply_to] == ["a@x.example", "b@x.example"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("<>", ""), ("< >", ""), ("<bounce@x.example>", "bounce@x.example"), ("garbage", None)],
)
def test_return_path_null_is_empty_string(value: str, expected: str | None) -> None:
    """Return-Path <> is the empty string; a valid path is its addr-spec; junk is None."""
    assert parse_email(message(f"Return-Path: {value}", *BASIC)).return_path == expected


def test_missing_return_path_is_none() -> None:
    """With no Return-Path header, return_path is None."""
    assert parse_email(message(*BASIC)).return_path is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@x.example>", "abc@x.example"),
        ("  <abc@x.example>  (comment)", "abc@x.example"),
        ("abc@x.example", "abc@x.example"),
        ('<"quoted"@x.example>', "quoted@x.example"),
    ],
)
def test_message_id_is_normalized(value: str, expected: str) -> None:
    """Message-ID loses its brackets, whitespace, quotes and comments."""
    assert parse_email(message(*BASIC, f"Message-ID: {value}")).message_id == expected


def test_in_reply_to_and_references_feed_thread_ids() -> None:
    """In-Reply-To and References yield every valid id; thread_ids puts In-Reply-To first."""
    email = parse_email(
        message(
            *BASIC,
            "In-Reply-To: <c@x.example>",
            "References: <a@x.example>\r\n <b@x.example> <c@x.example>",
        )
    )
    assert email.in_reply_to == ("c@x.example",)
    assert email.references == ("a@x.example", "b@x.example", "c@x.example")
    assert email.thread_ids == ("c@x.example", "b@x.example", "a@x.example")


def test_charset_declared_on_the_text_part_is_used() -> None:
    """A body in a declared non-UTF-8 charset decodes to the right characters."""
    raw = message(
        *BASIC,
        "Content-Type: text/plain; charset=iso-8859-2",
        body="Dzie\xf1 dobry, za\xbf\xf3\xb3\xe6".encode("latin-1"),
    )
    assert parse_email(raw).text == "Dzień dobry, zażółć"


def test_quoted_printable_body_is_decoded() -> None:
    """A quoted-printable UTF-8 body decodes, soft line breaks joined."""
    raw = message(
        *BASIC,
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        body="Caf=C3=A9 au lait, tr=C3=A8s long=\r\n line.\r\n",
    )
    email = parse_email(raw)
    assert email.text == "Café au lait, très long line.\n"
    assert email.defects == ()


def test_bytearray_and_memoryview_inputs_are_accepted() -> None:
    """bytearray and memoryview inputs parse like the same bytes."""
    raw = message(*BASIC, "Subject: copy")
    assert parse_email(bytearray(raw)).subject == "copy"
    assert parse_email(memoryview(raw)).sha256 == hashlib.sha256(raw).hexdigest()


def test_a_non_bytes_input_is_unparseable_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A str (or None) is quarantined as unparseable with a defect naming its type."""
    with caplog.at_level(logging.WARNING, logger="halomail.inbound.parse"):
        email = parse_email("From: a@b.example\r\n\r\nhi")  # type: ignore[arg-type]
        nothing = parse_email(None)  # type: ignore[arg-type]
    assert (email.quarantine_reason, email.defects) == ("unparseable", ("not-bytes:str",))
    assert nothing.defects == ("not-bytes:NoneType",)
    assert email.sha256 == hashlib.sha256(b"").hexdigest()
    assert email.size == 0
    assert "needs bytes" in caplog.text


def test_an_internal_error_becomes_an_unparseable_result(caplog: pytest.LogCaptureFixture) -> None:
    """Any exception inside parsing is logged and returned as quarantine 'unparseable'."""
    raw = message(*BASIC, "Subject: kept", "Message-ID: <kept@x.example>")
    with caplog.at_level(logging.ERROR, logger="halomail.inbound.parse"):
        email = parse_email(raw, limits="not limits")  # type: ignore[arg-type]
    assert email.quarantine_reason == "unparseable"
    assert email.defects == ("exception:AttributeError",)
    assert (email.message_id, email.subject) == ("kept@x.example", "kept")
    assert email.sender == Address("alice@customer.example", "Alice Martin")
    assert (email.size, email.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert "could not parse" in caplog.text


def test_custom_limits_are_honoured() -> None:
    """Smaller limits quarantine what the defaults accept."""
    raw = message(*BASIC, "Subject: small limits", body="x" * 2000)
    assert parse_email(raw).quarantine_reason is None
    tight = ParseLimits(max_message_bytes=1000)
    assert parse_email(raw, limits=tight).quarantine_reason == "too-large"


class TestAttachmentNames:
    """The attachments module's naming helpers, used for every file."""

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Windows\\evil.exe", "evil.exe"),
            ("evil\u202egpj.exe", "evilgpj.exe"),
            ("a\u2066b\u2069c\u200e\u200f\u061c.txt", "abc.txt"),
            ("tab\tand\x00nul.txt", "tabandnul.txt"),
            ("trailing.exe. . ", "trailing.exe"),
            ("..", ""),
            ("", ""),
        ],
    )
    def test_clean_filename(self, name: str, expected: str) -> None:
        """Display names lose directories, controls, bidi marks and trailing dots."""
        assert clean_filename(name) == expected

    def test_long_names_are_cut_keeping_the_extension(self) -> None:
        """A 300-character name is cut to 255 characters and keeps its extension."""
        cleaned = clean_filename("a" * 300 + ".docx")
        assert len(cleaned) == 255
        assert cleaned.endswith("a.docx")

    @pytest.mark.parametrize(
        ("filename", "content_type", "expected"),
        [
            ("photo.JPG", "image/jpeg", "jpg"),
            ("archive.tar.gz", "application/gzip", "gz"),
            ("noext", "image/png", "png"),
            ("noext", "application/x-unknown", "bin"),
            ("weird.ext-with-dash", "text/plain", "txt"),
            ("toolong.abcdefghijk", "application/pdf", "pdf"),
            (".htaccess", "text/plain", "htaccess"),
            ("", "image/heic", "heic"),
        ],
    )
    def test_extension_for(self, filename: str, content_type: str, expected: str) -> None:
        """The stored extension is the real last one, or one guessed from the type."""
        assert extension_for(filename, content_type) == expected

    def test_storage_name_is_stable_and_safe(self) -> None:
        """The storage name depends only on position, payload and extension."""
        name = storage_name(3, "../x.PDF", "application/pdf", b"abc")
        assert name == f"att-3-{hashlib.sha256(b'abc').hexdigest()[:8]}.pdf"
        assert STORAGE_NAME.match(name)
