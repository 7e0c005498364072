"""Shapes of real mail that other parsers' test suites showed halomail reading wrongly.

Running ``parse_email`` against the fixtures and assertions of nodemailer/mailparser,
postalsys/postal-mime, SpamScope/mail-parser, mikel/mail and CPython's ``test_email``
found a part lost when the blank line before the first boundary is missing, ``==``
halved in quoted-printable, 12-hour dates read as 24-hour ones, ``format=flowed`` text
left in its wrapped lines, the HTML of a multipart/mixed cut to its first part, and
comments in Content-Type and Content-Transfer-Encoding read as part of the value. Each
email below is written for this suite; none is copied from those projects.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from halomail.inbound import _flowed
from halomail.inbound._flowed import unflow
from halomail.inbound.parse import parse_email

HEAD = b"From: Alice <alice@customer.example>\r\nMessage-ID: <p-1@customer.example>\r\n"


# --- a multipart without the blank line before its first boundary ---------------------


@pytest.mark.parametrize("text_first", [True, False])
def test_a_first_boundary_right_under_the_headers_keeps_every_part(text_first: bool) -> None:
    """The first part's headers are its own, not the email's: its text and the PDF both
    survive, whichever comes first."""
    text = b"Content-Type: text/plain\r\n\r\nPlease see the invoice.\r\n"
    pdf = b"Content-Type: application/pdf; name=invoice.pdf\r\n\r\n%PDF-1.4\r\n"
    first, second = (text, pdf) if text_first else (pdf, text)
    raw = (
        HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n"
        b"--b\r\n" + first + b"--b\r\n" + second + b"--b--\r\n"
    )  # fmt: skip
    email = parse_email(raw)
    assert email.text.strip() == "Please see the invoice."
    assert [(a.filename, a.payload) for a in email.attachments] == [("invoice.pdf", b"%PDF-1.4")]
    assert email.header("Content-Type") == "multipart/mixed; boundary=b"


# --- quoted-printable ---------------------------------------------------------------


def test_an_unescaped_equals_sign_in_quoted_printable_stands_for_itself() -> None:
    """An encoder that forgot to escape "=" wrote an underline and a comparison: both
    read as sent (binascii alone halves "==") and the defect is recorded."""
    raw = (
        HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Totals\r\n==========\r\nif a==b then caf=C3=A9 =\r\nok\r\n"
    )  # fmt: skip
    email = parse_email(raw)
    assert email.text == "Totals\n==========\nif a==b then café ok\n"
    assert "invalid-quoted-printable" in email.defects


def test_well_formed_quoted_printable_is_decoded_as_before() -> None:
    """Escapes and soft line breaks, "=3D" before a soft break included."""
    raw = HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n1 =3D=\r\n one=\r\n\r\n"
    email = parse_email(raw)
    assert email.text == "1 = one\n"
    assert "invalid-quoted-printable" not in email.defects


# --- dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 6 Jan 2009 4:44:14 PM -0600", "2009-01-06T22:44:14+00:00"),
        ("28 Jun 01 10:05:15 PM", "2001-06-28T22:05:15+00:00"),
        ("03 Jul 01 12:47:50 AM", "2001-07-03T00:47:50+00:00"),
        ("Fri, 5 Mar 2004 12:15 p.m. EST", "2004-03-05T17:15:00+00:00"),
        ("Mon, 27 May 2002 10:28:31 +0200", "2002-05-27T08:28:31+00:00"),
    ],
)
def test_a_date_on_a_12_hour_clock_is_read_as_written(header: str, expected: str) -> None:
    """ "PM" is the afternoon, not a time zone that hides the real one."""
    email = parse_email(HEAD + f"Date: {header}\r\n\r\nHello\r\n".encode())
    assert email.date is not None
    assert email.date.astimezone(dt.UTC).isoformat() == expected


# --- format=flowed ------------------------------------------------------------------


def test_a_flowed_email_reads_as_the_paragraphs_its_sender_wrote() -> None:
    """Soft breaks join, fixed ones stay, the quote keeps its depth, the signature
    separator never flows, and the history under the attribution is still cut."""
    body = (
        b"The printer on the third floor jams on every page since the update \r\n"
        b"of Monday.\r\n"
        b"\r\n"
        b"On Mon, 8 Jan 2024 at 10:00, Support <support@msp.example> \r\n"
        b"wrote:\r\n"
        b"> Please restart the printer and tell us whether the jam \r\n"
        b"> comes back.\r\n"
        b"\r\n"
        b"-- \r\n"
        b"Alice\r\n"
    )
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n\r\n" + body
    email = parse_email(raw)
    assert email.text == (
        "The printer on the third floor jams on every page since the update of Monday.\n"
        "\n"
        "On Mon, 8 Jan 2024 at 10:00, Support <support@msp.example> wrote:\n"
        "> Please restart the printer and tell us whether the jam comes back.\n"
        "\n"
        "-- \n"
        "Alice\n"
    )
    assert email.new_text == (
        "The printer on the third floor jams on every page since the update of Monday."
    )


def test_delsp_yes_joins_a_word_its_client_split() -> None:
    """With delsp=yes the space ending a soft line was the client's, not the sender's."""
    raw = (
        HEAD
        + b"Content-Type: text/plain; format=flowed; delsp=yes\r\n\r\nsupercali \r\nfragilistic\r\n"
    )
    assert parse_email(raw).text == "supercalifragilistic\n"


def test_a_fixed_text_email_keeps_its_trailing_spaces_and_lines() -> None:
    """Without format=flowed a line ending in a space is not joined."""
    raw = HEAD + b"Content-Type: text/plain\r\n\r\nThis is one \r\nparagraph.\r\n"
    assert parse_email(raw).text == "This is one \nparagraph.\n"


@pytest.mark.parametrize(
    ("flowed", "expected"),
    [
        (">> deep \n>> line\n> shallow", ">> deep line\n> shallow"),
        # A soft break before another quote depth is improperly flowed: it ends there.
        ("reply \n> quoted", "reply \n> quoted"),
        # Stuffing goes, but not before an unquoted ">": that would read as a quote.
        (" From here\n >not a quote", "From here\n >not a quote"),
        ("> \n>", ">\n>"),  # the space after ">" was stuffing
        ("", ""),
    ],
)
def test_unflow_follows_rfc_3676(flowed: str, expected: str) -> None:
    """Quote depth, improperly flowed lines and space-stuffing, line by line."""
    assert unflow(flowed) == expected


# Pieces an unquoted flowed text is made of: words, soft and hard breaks, stuffing, the
# signature separator (which never flows) and a stuffed ">" (which is no quote).
_UNQUOTED_PIECES = st.sampled_from(["a", "b", " ", "  ", "\n", " \n", "-", "-- ", " >", "\n-- \n"])


@settings(max_examples=500)
@given(st.lists(_UNQUOTED_PIECES, max_size=20).map("".join), st.booleans())
@example("a  \n ", True)  # a soft space kept before a stuffed empty last line
@example("x \n-- \nsig ", True)
def test_unquoted_flowed_text_unflows_as_the_line_by_line_reading(text: str, delsp: bool) -> None:
    """Text with no quoted line takes two substitutions instead of the loop over its
    lines; they must give what the loop gives, delsp or not."""
    if text.startswith(">") or "\n>" in text:
        return  # a quoted line: only the loop reads those
    assert _flowed._unflow_unquoted(text, delsp=delsp) == _flowed._unflow_lines(text, delsp=delsp)


def test_a_flowed_text_past_the_bound_is_left_as_its_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Joining a text holds it twice more: past MAX_FLOWED_CHARS it stays as sent."""
    monkeypatch.setattr(_flowed, "MAX_FLOWED_CHARS", 10)
    assert unflow("one \ntwo \nthree") == "one \ntwo \nthree"
    assert unflow("one \ntwo") == "one two"


# --- addresses in RFC 5322's obsolete syntax --------------------------------------------


@pytest.mark.parametrize(
    ("from_", "address", "name"),
    [
        ("Joe <joe @ example.org>", "joe@example.org", "Joe"),
        ("joe@ example.org", "joe@example.org", ""),
        ('"Joe Bloggs" <joe . bloggs @ example . org>', "joe.bloggs@example.org", "Joe Bloggs"),
    ],
)
def test_a_sender_in_obsolete_syntax_is_read_as_the_stdlib_reads_it(
    from_: str, address: str, name: str
) -> None:
    """Spaces around the "@" and the dots of an address (RFC 5322 §4.4): the sender,
    never an unparseable-sender quarantine."""
    raw = (
        f"From: {from_}\r\nMessage-ID: <obs@example.org>\r\n"
        "Content-Type: text/plain\r\n\r\nHello\r\n"
    ).encode()
    email = parse_email(raw)
    assert email.sender is not None
    assert (email.sender.addr_spec, email.sender.display_name) == (address, name)
    assert not email.sender_unparseable


# --- the HTML of a multipart/mixed ----------------------------------------------------


def _mixed(*parts: bytes) -> bytes:
    body = b"".join(b"--m\r\n" + part + b"\r\n" for part in parts)
    return HEAD + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n' + body + b"--m--\r\n"


def test_the_html_of_a_mixed_email_shows_every_part_in_order() -> None:
    """Apple Mail's HTML, inline image, HTML: both HTML parts are shown, in order."""
    raw = _mixed(
        b"Content-Type: text/html\r\n\r\n<p>Before the photo</p>",
        b'Content-Type: image/png; name="jam.png"\r\nContent-Disposition: inline\r\n\r\nPNG',
        b"Content-Type: text/html\r\n\r\n<p>After the photo</p>",
    )
    email = parse_email(raw)
    assert email.html_source == "<p>Before the photo</p>\n<p>After the photo</p>"
    shown = email.html or ""
    assert "Before the photo" in shown
    assert "After the photo" in shown


def test_a_plain_part_beside_an_html_banner_is_shown_escaped() -> None:
    """An antivirus banner in HTML above the sender's plain text: the HTML view holds the
    text too, escaped, with its line breaks."""
    raw = _mixed(
        b"Content-Type: text/html\r\n\r\n<p>Scanned by AV</p>",
        b"Content-Type: text/plain\r\n\r\nPlease call me about invoice <42>.\r\nAlice",
    )
    email = parse_email(raw)
    assert email.text == "Scanned by AV\n\nPlease call me about invoice <42>.\nAlice"
    assert email.html_source == (
        '<p>Scanned by AV</p>\n<div style="white-space: pre-wrap">'
        "Please call me about invoice &lt;42&gt;.\nAlice</div>"
    )
    assert "&lt;42&gt;" in (email.html or "")


def test_an_alternative_shows_its_html_alone() -> None:
    """Of a multipart/alternative the HTML is the view; its plain twin is not added."""
    raw = (
        HEAD + b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n--a--\r\n"
    )  # fmt: skip
    assert parse_email(raw).html_source == "<p>Hello</p>"


# --- comments in MIME headers ---------------------------------------------------------


def test_comments_in_content_type_and_transfer_encoding_are_not_read_as_values() -> None:
    """ "text/plain (comment)" is text/plain, "(comment) base64" is base64, and a charset
    followed by a comment is that charset; a file name keeps its parentheses."""
    raw = (
        HEAD + b"Content-Type: text/plain (body text); charset=iso-8859-1 (Latin)\r\n"
        b"Content-Transfer-Encoding: (sent as) base64\r\n\r\n"
        + b"Q2Fm6SBvcGVu\r\n"
    )  # fmt: skip
    email = parse_email(raw)
    assert email.text == "Café open"
    assert email.attachments == ()
    named = _mixed(
        b"Content-Type: text/plain\r\n\r\nSee attached.",
        b"Content-Type: application/pdf; name=report(1).pdf\r\n\r\n%PDF",
    )
    assert [a.filename for a in parse_email(named).attachments] == ["report(1).pdf"]
