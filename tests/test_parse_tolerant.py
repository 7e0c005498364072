"""Real mail as people and machines send it: the sender, the header block and the body
read as a mail client reads them (issue 15, points 1 and 6).

Real bytes go in, the parsed InboundEmail comes out; the last tests run a Maildir of such
emails through MailProcessor into SQLite and find tickets where there were quarantines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halomail.backends.local import MaildirConnector
from halomail.backends.memory import MemoryTransport
from halomail.inbound import _mime
from halomail.inbound.models import Address, ParseLimits
from halomail.inbound.parse import parse_email
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository

ID = b"Message-ID: <t-1@customer.example>\r\nSubject: Printer"


def email_with(*headers: bytes, body: bytes = b"The printer is jammed.\r\n") -> bytes:
    """An email from raw header lines and a body, CRLF line endings."""
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def mixed(*parts: bytes, boundary: bytes = b"b") -> bytes:
    """A multipart/mixed email from a known sender around raw parts."""
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (
        b"From: Alice <alice@customer.example>\r\n" + ID
        + b'\r\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
        + body + b"--" + boundary + b"--\r\n"
    )  # fmt: skip


# --- The sender, found as a mail client would ------------------------------------------


def test_a_utf8_bom_before_the_first_header_is_skipped() -> None:
    """A byte-order mark before From: still gives the From, the subject and the body."""
    email = parse_email(b"\xef\xbb\xbf" + email_with(b"From: bob@customer.example", ID))
    assert email.sender == Address("bob@customer.example")
    assert email.subject == "Printer"
    assert email.text == "The printer is jammed.\n"
    assert "bom-before-headers" in email.defects


@pytest.mark.parametrize(
    ("from_", "expected"),
    [
        (b"Big Bug bb@bug.com", Address("bb@bug.com", "Big Bug")),
        (b"bb@bug.com cc@bug.com", Address("bb@bug.com")),
        (b"=?utf-8?q?Big_Bug_bb=40bug=2Ecom?=", Address("bb@bug.com", "Big Bug")),
        (b"Big Bug <<bb@bug.com>> (sent by the scanner)", Address("bb@bug.com", "Big Bug")),
    ],
    ids=["unquoted-name", "two-without-comma", "encoded-word", "double-angles"],
)
def test_a_from_the_strict_parser_rejects_is_read_leniently(
    from_: bytes, expected: Address
) -> None:
    """An unquoted name, two addresses, an address in an encoded word, junk around an
    angle address: the address a mail client shows, with sender-read-leniently."""
    email = parse_email(email_with(b"From: " + from_, ID))
    assert email.sender == expected
    assert email.sender_unparseable is False
    assert "sender-read-leniently" in email.defects
    assert email.header("From") is not None


def test_an_address_in_a_display_name_never_beats_a_broken_angle_address() -> None:
    """CVE-2023-27043 stays closed: with a bracketed address, only the brackets are read."""
    email = parse_email(email_with(b"From: alice@customer.example <bob@evil..example>", ID))
    assert email.sender is None
    assert email.sender_unparseable is True


@pytest.mark.parametrize(
    ("headers", "expected", "defect"),
    [
        (
            [b"From: Scanner", b"Sender: scanner@customer.example"],
            "scanner@customer.example",
            "sender-from-sender",
        ),
        (
            [b"From: <MAILER-DAEMON>", b"Reply-To: Desk <desk@customer.example>"],
            "desk@customer.example",
            "sender-from-reply-to",
        ),
        (
            [b"Return-Path: <nas@customer.example>", b"From: NAS <nas>"],
            "nas@customer.example",
            "sender-from-return-path",
        ),
        (
            [b"Return-Path: <nas@customer.example>"],
            "nas@customer.example",
            "sender-from-return-path",
        ),
        (
            [b"From: ", b"Sender: first@customer.example", b"Reply-To: second@customer.example"],
            "first@customer.example",
            "sender-from-sender",
        ),
    ],
    ids=["sender", "reply-to", "return-path", "no-from", "sender-before-reply-to"],
)
def test_without_a_usable_from_the_sender_comes_from_the_next_header(
    headers: list[bytes], expected: str, defect: str
) -> None:
    """Sender, then Reply-To, then Return-Path give the sender, and a defect names which."""
    email = parse_email(email_with(*headers, ID))
    assert email.sender is not None
    assert email.sender.addr_spec == expected
    assert email.sender_unparseable is False
    assert defect in email.defects


def test_a_bounce_from_keeps_its_raw_form_and_no_domain_is_invented() -> None:
    """``From: MAILER-DAEMON <>`` with a null Return-Path: no sender, the From readable."""
    email = parse_email(email_with(b"From: MAILER-DAEMON <>", b"Return-Path: <>", ID))
    assert email.sender is None
    assert email.sender_unparseable is True
    assert email.header("From") == "MAILER-DAEMON <>"
    assert email.return_path == ""
    assert "unparseable-sender" in email.defects


def test_an_email_with_no_sender_header_at_all_is_not_unparseable() -> None:
    """No From, Sender, Reply-To or Return-Path: sender None, as before."""
    email = parse_email(email_with(ID))
    assert (email.sender, email.sender_unparseable) == (None, False)


def test_a_quarantined_email_still_gets_its_sender_from_the_fallbacks() -> None:
    """An email over a limit keeps the sender a client would show (cheap head scan)."""
    raw = email_with(b"From: Scanner", b"Reply-To: scanner@customer.example", ID)
    email = parse_email(raw, limits=ParseLimits(max_message_bytes=len(raw) - 1))
    assert email.quarantine_reason == "too-large"
    assert email.sender == Address("scanner@customer.example")


def test_lenient_reading_of_a_long_run_of_address_characters_is_bounded() -> None:
    """A 60 KB From of address characters with no delimiter gives no address, and the
    lenient reader only ever sees its first 4,000 characters."""
    from halomail.inbound import _addresses

    raw = email_with(b"From: " + b"a" * 30_000 + b"@" + b"b" * 30_000, ID)
    email = parse_email(raw)
    assert email.sender is None
    assert _addresses.LENIENT_SCAN_CHARS == 4000
    late = email_with(b"From: " + b"x " * 3000 + b"late@customer.example", ID)
    assert parse_email(late).sender is None  # past the 4,000 characters read


# --- The header block ---------------------------------------------------------------------


def test_a_malformed_line_inside_the_header_block_does_not_end_it() -> None:
    """A line without a colon between header lines is a defect; the headers after it stay
    headers (the stdlib would start the body there and lose From and the Message-ID)."""
    raw = email_with(
        b"Subject: Printer",
        b"X-Mailer Broken 1.0",
        b"From: Bob <bob@customer.example>",
        b"Message-ID: <t-2@customer.example>",
    )
    email = parse_email(raw)
    assert email.sender == Address("bob@customer.example", "Bob")
    assert email.message_id == "t-2@customer.example"
    assert email.text == "The printer is jammed.\n"
    assert "malformed-header-line" in email.defects
    assert "missing-header-body-separator" not in email.defects


def test_a_non_header_line_followed_by_no_header_starts_the_body_as_before() -> None:
    """With no field line after it, the first non-header line starts the body."""
    raw = b"From: bob@customer.example\r\nSubject: hi\r\nHello team,\r\nthe printer.\r\n\r\nBob\r\n"
    email = parse_email(raw)
    assert email.text == "Hello team,\nthe printer.\n\nBob\n"
    assert "missing-header-body-separator" in email.defects
    assert "malformed-header-line" not in email.defects


def test_a_first_line_that_is_not_a_header_is_never_dropped() -> None:
    """Text before any header line is body (a headerless email), whatever follows it."""
    raw = b"Hello team\r\nFrom: bob@customer.example\r\n\r\nbody\r\n"
    email = parse_email(raw)
    assert email.sender is None
    assert email.text.startswith("Hello team")


def test_the_look_ahead_after_a_malformed_line_is_bounded() -> None:
    """Past MALFORMED_LOOKAHEAD_LINES lines of junk, a later field line is not looked for:
    100,000 junk lines cost eight lines of look-ahead, and they start the body."""
    junk = b"junk line\r\n" * 100_000
    raw = b"From: bob@customer.example\r\n" + junk + b"X-Late: 1\r\n\r\nbody\r\n"
    data, dropped = _mime.drop_malformed_lines(raw, ParseLimits().max_header_bytes)
    assert (data, dropped) == (raw, 0)
    email = parse_email(raw)
    assert email.sender == Address("bob@customer.example")
    assert email.header("X-Late") is None
    near = b"From: bob@customer.example\r\n" + b"junk\r\n" * 7 + b"X-Near: 1\r\n\r\nbody\r\n"
    assert parse_email(near).header("X-Near") == "1"


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_a_209_kb_subject_is_truncated_on_a_character_boundary(pad: int) -> None:
    """A 209 KB UTF-8 Subject (under the 256 KB block) is cut between whole characters,
    wherever the cut falls in a three-byte character: no mojibake, no ticket lost."""
    text = "x" * pad + "\u20ac" * 70_000  # the euro sign: three bytes in UTF-8
    assert 200_000 < len(text.encode()) < 256 * 1024
    raw = email_with(b"From: bob@customer.example", b"Subject: " + text.encode())
    email = parse_email(raw)
    assert email.quarantine_reason is None
    assert len(email.subject) > 10_000
    assert text.startswith(email.subject)
    assert "header-truncated:subject" in email.defects


def test_an_encoded_subject_over_the_word_cap_is_cut_between_words() -> None:
    """3,000 encoded words: the first 1,000 decode, none is cut in half."""
    words = b" ".join([b"=?utf-8?b?w7Zr?="] * 3000)  # "ök"
    email = parse_email(email_with(b"From: bob@customer.example", b"Subject: " + words))
    assert email.quarantine_reason is None
    assert email.subject == "ök" * 1000
    assert "header-truncated:subject" in email.defects


def test_a_135_kb_to_keeps_the_whole_addresses_that_fit() -> None:
    """A 135 KB To: (7,000 named addresses) keeps its first 1,000, each one whole."""
    to = b", ".join(b'"User %d" <user%d@customer.example>' % (i, i) for i in range(4000))
    assert 130_000 < len(to) < 256 * 1024
    email = parse_email(email_with(b"From: bob@customer.example", ID, b"To: " + to))
    assert email.quarantine_reason is None
    assert email.to[0] == Address("user0@customer.example", "User 0")
    assert all(a.addr_spec == f"user{i}@customer.example" for i, a in enumerate(email.to))
    assert len(email.to) == 1000
    assert "header-truncated:to" in email.defects
    assert "invalid-address" not in email.defects


def test_a_header_block_over_the_total_limit_is_still_quarantined() -> None:
    """Two 150 KB headers make a block over 256 KB: headers-too-large, as before."""
    raw = email_with(
        b"From: bob@customer.example", b"X-A: " + b"a" * 150_000, b"X-B: " + b"b" * 150_000
    )
    assert parse_email(raw).quarantine_reason == "headers-too-large"


# --- Folded parameters ----------------------------------------------------------------------


def test_a_boundary_folded_over_two_lines_is_unfolded_at_the_top() -> None:
    """``boundary="----=_Part_12<CRLF> 34"``: the parts split on ``------=_Part_12 34``."""
    raw = (
        b"From: bob@customer.example\r\n" + ID
        + b'\r\nContent-Type: multipart/mixed; boundary="----=_Part_12\r\n 34"\r\n\r\n'
        + b"------=_Part_12 34\r\nContent-Type: text/plain\r\n\r\nSee the log.\r\n"
        + b"------=_Part_12 34\r\nContent-Type: text/plain\r\n"
        + b"Content-Disposition: attachment; filename=log.txt\r\n\r\nlog\r\n"
        + b"------=_Part_12 34--\r\n"
    )  # fmt: skip
    email = parse_email(raw)
    assert email.text == "See the log."
    assert [a.filename for a in email.attachments] == ["log.txt"]


def test_a_boundary_wrapped_inside_a_token_is_found_without_the_fold() -> None:
    """A mailer that wrapped a long boundary mid-token: the fold's blank is not part of it."""
    raw = mixed(
        b'Content-Type: multipart/alternative; boundary="=_alt_0123456789\r\n\tabcdef"\r\n\r\n'
        b"--=_alt_0123456789abcdef\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--=_alt_0123456789abcdef\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
        b"--=_alt_0123456789abcdef--"
    )
    email = parse_email(raw)
    assert email.text == "plain"
    assert email.html_source == "<p>html</p>"
    assert email.attachments == ()


def test_a_folded_filename_and_charset_are_read_whole() -> None:
    """A filename folded over two lines and a charset on its own line are read whole."""
    raw = mixed(
        b'Content-Type: text/plain;\r\n\tcharset=\r\n\t"iso-8859-1"\r\n\r\nSch\xf6n',
        b"Content-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="Quarterly report\r\n 2024.pdf"\r\n\r\n%PDF',
    )
    email = parse_email(raw)
    assert email.text == "Schön"
    assert [a.filename for a in email.attachments] == ["Quarterly report 2024.pdf"]


# --- Bodies ------------------------------------------------------------------------------------


def test_successive_inline_text_parts_are_joined_in_order() -> None:
    """Text, an image, more text, then HTML: one body in document order, blank-line
    separated, the image still an attachment (RFC 2046 multipart/mixed)."""
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nThe scanner shows:",
        b"Content-Type: image/png\r\nContent-Disposition: attachment; filename=a.png\r\n\r\nPNG",
        b"Content-Type: text/plain\r\n\r\nand then it stops.\r\n",
        b"Content-Type: text/html\r\n\r\n<p>Sent from the <b>kiosk</b></p>",
    )
    email = parse_email(raw)
    assert email.text == "The scanner shows:\n\nand then it stops.\n\nSent from the kiosk"
    assert [a.filename for a in email.attachments] == ["a.png"]


def test_an_alternative_inside_mixed_still_gives_one_alternative() -> None:
    """multipart/alternative in mixed, then a footer: the plain alternative and the footer;
    the HTML view shows the alternative's HTML and the footer under it."""
    raw = mixed(
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\nHello in plain\r\n"
        b"--alt\r\nContent-Type: text/html\r\n\r\n<p>Hello in HTML</p>\r\n--alt--",
        b"Content-Type: text/plain\r\n\r\n-- \r\nlist footer",
    )
    email = parse_email(raw)
    assert email.text == "Hello in plain\n\n-- \nlist footer"
    assert "Hello in HTML" not in email.text
    assert email.html_source == (
        '<p>Hello in HTML</p>\n<div style="white-space: pre-wrap">-- \nlist footer</div>'
    )


def test_an_alternative_with_an_empty_plain_part_reads_its_html() -> None:
    """An empty plain alternative beside HTML: the HTML is the text, as before."""
    raw = mixed(
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain\r\n\r\n \r\n"
        b"--alt\r\nContent-Type: text/html\r\n\r\n<p>Only HTML</p>\r\n--alt--",
        b"Content-Type: text/plain\r\n\r\nsecond part",
    )
    assert parse_email(raw).text == "Only HTML\n\nsecond part"


def test_reply_stripping_works_on_the_joined_body() -> None:
    """The quoted history in a later inline part is stripped from new_text."""
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nIt works now, thanks.",
        b"Content-Type: text/plain\r\n\r\n> Did you restart it?\r\n> Support",
    )
    email = parse_email(raw)
    assert email.text == "It works now, thanks.\n\n> Did you restart it?\n> Support"
    assert email.new_text == "It works now, thanks."


def test_a_lone_text_part_with_a_filename_is_the_body_and_an_attachment() -> None:
    """A single text/plain part that carries a name is the body, and stays a file."""
    raw = email_with(
        b"From: bob@customer.example", ID, b'Content-Type: text/plain; name="notes.txt"',
        body=b"Serial 4711, room 3.",
    )  # fmt: skip
    email = parse_email(raw)
    assert email.text == "Serial 4711, room 3."
    assert [(a.filename, a.payload) for a in email.attachments] == [
        ("notes.txt", b"Serial 4711, room 3.")
    ]


def test_a_lone_inline_html_part_with_a_filename_is_the_body() -> None:
    """In a mixed with only a named inline HTML part and an image, the HTML is the body."""
    raw = mixed(
        b'Content-Type: text/html; name="message.html"\r\nContent-Disposition: inline\r\n\r\n'
        b"<p>The <i>badge</i> reader</p>",
        b"Content-Type: image/gif\r\nContent-Disposition: attachment; filename=x.gif\r\n\r\nGIF",
    )
    email = parse_email(raw)
    assert email.text == "The badge reader"
    assert [a.filename for a in email.attachments] == ["message.html", "x.gif"]


def test_a_named_text_part_beside_a_body_is_only_an_attachment() -> None:
    """When there is a body, a named text part is an attachment, not part of the body."""
    raw = mixed(
        b"Content-Type: text/plain\r\n\r\nLog attached.",
        b'Content-Type: text/plain; name="log.txt"\r\n\r\nERROR 42',
    )
    email = parse_email(raw)
    assert email.text == "Log attached."
    assert [a.filename for a in email.attachments] == ["log.txt"]


# --- The SpamAssassin corpus -------------------------------------------------------------------


@pytest.mark.slow
def test_the_corpus_loses_no_sender_and_gains_some() -> None:
    """Over the 5,983 real emails, every email has a sender but the few with none in any
    header, and none is quarantined for its headers."""
    folder = os.environ.get("HALOMAIL_CORPUS", "")
    if not folder or not Path(folder).is_dir():
        message = f"HALOMAIL_CORPUS is not set to the SpamAssassin corpus folder (got {folder!r})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    without_sender = []
    from_fallback = []
    quarantined = []
    for path in sorted(Path(folder).glob("*.eml")):
        email = parse_email(path.read_bytes())
        if email.sender is None:
            without_sender.append(path.name)
        if any(d.startswith("sender-from-") for d in email.defects):
            from_fallback.append(path.name)
        if email.quarantine_reason is not None:
            quarantined.append(path.name)
    print(f"no sender: {len(without_sender)}, sender from a fallback header: {len(from_fallback)}")
    assert len(without_sender) == 2  # "From:" with nothing usable, and no other header
    assert len(from_fallback) >= 2
    assert quarantined == []


# --- End to end: a Maildir into SQLite ---------------------------------------------------------


def _deliver(maildir: Path, name: str, raw: bytes) -> None:
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / name).write_bytes(raw)


def _run(maildir: Path, database: Path) -> list[tuple[str, str]]:
    transport = MemoryTransport()
    with SQLiteTicketRepository(database) as repository:
        processor = MailProcessor(
            repository,
            [Mailbox(MaildirConnector("Support", maildir))],
            ProcessorSettings(
                loop_token="test-loop-token",
                domain="helpdesk.example",
                default_sender=SenderIdentity("support@helpdesk.example", "Support"),
            ),
            transport=transport,
        )
        with processor:
            report = processor.run_once()
        return sorted((o.outcome.value, o.reason or "") for o in report.outcomes)


def test_real_world_shapes_become_tickets_through_the_processor(tmp_path: Path) -> None:
    """A Maildir of emails the stdlib-strict reader quarantined (BOM, unquoted name, no
    usable From but a Reply-To, a malformed header line, a 209 KB Subject, a 135 KB To)
    gives six tickets in SQLite; only the email with no address anywhere is quarantined,
    and a second run changes nothing."""
    maildir = tmp_path / "Maildir"
    long_to = b", ".join(b"user%d@customer.example" % i for i in range(6000))
    emails = {
        "1.bom": b"\xef\xbb\xbf" + email_with(b"From: bob@customer.example", b"Subject: bom"),
        "2.name": email_with(b"From: Big Bug bb@bug.example", b"Subject: unquoted"),
        "3.reply": email_with(b"From: <MAILER-DAEMON>", b"Reply-To: r@customer.example"),
        "4.line": email_with(b"Subject: line", b"broken line", b"From: carol@customer.example"),
        "5.subject": email_with(
            b"From: dave@customer.example", b"Subject: " + "Ärger ".encode() * 30_000
        ),
        "6.to": email_with(b"From: erin@customer.example", b"Subject: to", b"To: " + long_to),
        "7.nobody": email_with(b"From: Nobody", b"Subject: who"),
    }
    for name, raw in emails.items():
        _deliver(maildir, name, raw)
    database = tmp_path / "halomail.db"
    outcomes = _run(maildir, database)
    assert outcomes == sorted([("created", "")] * 6 + [("quarantined", "unparseable-sender")])
    with SQLiteTicketRepository(database) as repository:
        users = sorted(t.user_email for t in repository.list_tickets())
        (entry,) = repository.list_quarantine()
    assert users == sorted(
        [
            "bob@customer.example",
            "bb@bug.example",
            "r@customer.example",
            "carol@customer.example",
            "dave@customer.example",
            "erin@customer.example",
        ]
    )
    assert entry.raw == emails["7.nobody"]
    assert _run(maildir, database) == []
