"""strip_reply: one test per client shape of quoted history and signature."""

# Replies in Russian, Chinese and Japanese are the point: their letters are meant.
# ruff: noqa: RUF001

from __future__ import annotations

import tracemalloc
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halomail.inbound import reply
from halomail.inbound._reply_patterns import MAX_MARKER_LINE
from halomail.inbound.html import html_to_text
from halomail.inbound.reply import _above_quotes, _candidates, _cut, _new_text, strip_reply


def test_gmail_attribution_and_quotes_are_removed() -> None:
    """Gmail's "On <date>, <name> <addr> wrote:" and the quoted lines below it go."""
    text = (
        "Thanks, that fixed it.\n\n"
        "On Mon, 3 Jun 2024 at 10:00, Support <support@example.com> wrote:\n"
        "> Please restart the router.\n>\n> Regards\n"
    )
    assert strip_reply(text) == "Thanks, that fixed it."


def test_gmail_us_date_format_is_recognised() -> None:
    """Gmail's US form "On Mon, Jun 3, 2024 at 10:00 AM Name <addr> wrote:" is cut."""
    text = (
        "Yes, tomorrow works.\n\n"
        "On Mon, Jun 3, 2024 at 10:00 AM Alice Martin <alice@example.com> wrote:\n\n"
        "> Can we meet tomorrow?\n"
    )
    assert strip_reply(text) == "Yes, tomorrow works."


def test_gmail_attribution_wrapped_over_two_lines_is_recognised() -> None:
    """An attribution that Gmail wrapped inside the address is still found."""
    text = (
        "Still broken after the restart.\n\n"
        "On Mon, Jun 3, 2024 at 10:00 AM Support Team <\n"
        "support@example.com> wrote:\n\n"
        "> Please restart.\n"
    )
    assert strip_reply(text) == "Still broken after the restart."


@pytest.mark.parametrize(
    ("reply", "attribution", "quote"),
    [
        (
            "Danke, jetzt geht es.",
            "Am Mo., 3. Juni 2024 um 10:00 Uhr schrieb Support <support@example.com>:",
            "Bitte starten Sie neu.",
        ),
        (
            "Merci, c'est réglé.",
            "Le lun. 3 juin 2024 à 10:00, Support <support@example.com> a écrit :",
            "Veuillez redémarrer.",
        ),
        (
            "Gracias, ya funciona.",
            "El lun, 3 jun 2024 a las 10:00, Support (<support@example.com>) escribió:",
            "Reinicie el equipo.",
        ),
        (
            "Bedankt, het werkt weer.",
            "Op ma 3 jun 2024 om 10:00 schreef Support <support@example.com>:",
            "Start de computer opnieuw op.",
        ),
    ],
    ids=["german", "french", "spanish", "dutch"],
)
def test_gmail_localized_attributions_are_recognised(
    reply: str, attribution: str, quote: str
) -> None:
    """Gmail's German, French, Spanish and Dutch attribution lines start the history."""
    text = f"{reply}\n\n{attribution}\n\n> {quote}\n"
    assert strip_reply(text) == reply


def test_outlook_original_message_separator() -> None:
    """Outlook's "-----Original Message-----" and everything after it go."""
    text = (
        "Works now, thank you.\n\n"
        "-----Original Message-----\n"
        "From: Support <support@example.com>\n"
        "Sent: Monday, June 3, 2024 10:00 AM\n"
        "To: John Smith <john@example.org>\n"
        "Subject: RE: Printer [ID:123]\n\n"
        "Please restart the printer.\n"
    )
    assert strip_reply(text) == "Works now, thank you."


def test_outlook_localized_original_message_separator() -> None:
    """German Outlook's "-----Ursprüngliche Nachricht-----" is a separator too."""
    text = "Erledigt.\n\n-----Ursprüngliche Nachricht-----\nVon: Support\nBitte neu starten.\n"
    assert strip_reply(text) == "Erledigt."


def test_outlook_underscore_rule_followed_by_from() -> None:
    """Outlook's "________________________________" rule before From: starts the history."""
    text = (
        "Works now.\n\nJohn Smith\nIT Manager\n\n"
        "________________________________\n"
        "From: Support <support@example.com>\n"
        "Sent: Monday, June 3, 2024 10:00 AM\n"
        "To: John Smith <john@example.org>\n"
        "Subject: RE: Printer\n\n"
        "Please restart the printer.\n"
    )
    assert strip_reply(text) == "Works now.\n\nJohn Smith\nIT Manager"


def test_an_underscore_rule_without_headers_is_content() -> None:
    """A rule of underscores not followed by From: is kept (it is part of the text)."""
    text = "Name: ________________________________\nPlease fill in."
    assert strip_reply(text) == text


def test_outlook_header_block_without_separator() -> None:
    """A bare "From: / Sent: / To: / Subject:" block (Outlook HTML as text) is cut."""
    text = (
        "Works now.\r\n\r\n"
        "From: Support <support@example.com>\r\n"
        "Sent: Monday, June 3, 2024 10:00 AM\r\n"
        "To: John Smith <john@example.org>\r\n"
        "Subject: RE: Printer\r\n\r\n"
        "Please restart the printer.\r\n"
    )
    assert strip_reply(text) == "Works now."


def test_outlook_bold_header_block_from_html() -> None:
    """Outlook's "*From:* ... *Sent:* ..." rendering of its HTML header block is cut."""
    text = (
        "Thanks!\n\n*From:* Support <support@example.com>\n*Sent:* Monday, June 3, 2024\n"
        "*To:* John\n*Subject:* RE: Printer\n\nOld text\n"
    )
    assert strip_reply(text) == "Thanks!"


@pytest.mark.parametrize(
    ("reply", "block"),
    [
        (
            "Jetzt geht es.",
            "Von: Support <support@example.com>\nGesendet: Montag, 3. Juni 2024 10:00\n"
            "An: John Smith <john@example.org>\nBetreff: AW: Drucker",
        ),
        (
            "C'est bon.",
            "De : Support <support@example.com>\nEnvoyé : lundi 3 juin 2024 10:00\n"
            "À : John Smith <john@example.org>\nObjet : RE: Imprimante",
        ),
    ],
    ids=["german", "french"],
)
def test_outlook_localized_header_blocks(reply: str, block: str) -> None:
    """German (Von:/Gesendet:) and French (De :/Envoyé :) header blocks are cut."""
    assert strip_reply(f"{reply}\n\n{block}\n\nOld message text\n") == reply


def test_a_single_from_line_in_the_text_is_content() -> None:
    """A lone "From:" line that is not a header block stays in the text."""
    text = "From: the second floor, the printer makes a noise.\nPlease check."
    assert strip_reply(text) == text


def test_apple_mail_attribution() -> None:
    """Apple Mail's "On 3 Jun 2024, at 10:00, Name <addr> wrote:" starts the history."""
    text = (
        "Yes please, go ahead.\n\n"
        "On 3 Jun 2024, at 10:00, Support <support@example.com> wrote:\n\n"
        "> Shall we replace the toner?\n"
    )
    assert strip_reply(text) == "Yes please, go ahead."


def test_apple_mail_us_attribution() -> None:
    """Apple Mail's US form "On Jun 3, 2024, at 10:00 AM, Name wrote:" is cut."""
    text = "Approved.\n\nOn Jun 3, 2024, at 10:00 AM, Support <support@example.com> wrote:\n\n> ?\n"
    assert strip_reply(text) == "Approved."


def test_thunderbird_attribution() -> None:
    """Thunderbird's "On 6/3/24 10:00 AM, Name wrote:" starts the history."""
    text = "Done.\n\nOn 6/3/24 10:00 AM, Support Team wrote:\n> Try again please.\n"
    assert strip_reply(text) == "Done."


def test_thunderbird_name_only_attribution_before_quotes() -> None:
    """An undated "Name wrote:" counts when quoted lines follow it."""
    text = "Done.\n\nSupport Team wrote:\n> Try again please.\n"
    assert strip_reply(text) == "Done."


def test_name_wrote_without_quotes_is_content() -> None:
    """An ordinary sentence ending in "wrote:" with no quote after it stays."""
    text = "This is what my manager wrote:\nWe need three more licences."
    assert strip_reply(text) == text


def test_quoted_lines_are_removed_and_inline_answers_kept() -> None:
    """Lines starting with ">" go; answers written between them stay."""
    text = "> Which printer?\nThe one on floor 3.\n\n> Since when?\nSince Monday.\n"
    assert strip_reply(text) == "The one on floor 3.\n\nSince Monday."


def test_bottom_posted_reply_keeps_the_answer_below_the_quote() -> None:
    """A reply written under the attribution and quote gives the text below."""
    text = (
        "On Mon, 3 Jun 2024 at 10:00, Support <support@example.com> wrote:\n"
        "> Please restart.\n\nDid that, still broken.\n"
    )
    assert strip_reply(text) == "Did that, still broken."


def test_signature_separator_removes_the_signature() -> None:
    """Everything from the "-- " separator on is the signature."""
    text = "Hello,\nmy printer is broken.\n\n-- \nJohn Smith\nACME Ltd\n+1 555 0100\n"
    assert strip_reply(text) == "Hello,\nmy printer is broken."


@pytest.mark.parametrize(
    "footer",
    [
        "Sent from my iPhone",
        "Sent from my iPad",
        "Get Outlook for iOS",
        "Get Outlook for Android",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Sent from Mail for Windows",
    ],
)
def test_mobile_footers_are_removed(footer: str) -> None:
    """Mobile client footers ("Sent from my iPhone", "Get Outlook for iOS") are cut."""
    text = f"Ok, thanks.\n\n{footer}\n\n> On 3 Jun 2024, at 10:00, Support wrote:\n> Hi\n"
    assert strip_reply(text) == "Ok, thanks."


def test_forwarded_message_is_kept() -> None:
    """A forwarded message is the content the helpdesk needs, so it is not stripped."""
    text = (
        "FYI, see below.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Bob Jones <bob@example.org>\n"
        "Date: Mon, Jun 3, 2024 at 10:00 AM\n"
        "Subject: Broken laptop\n"
        "To: Alice Martin <alice@example.com>\n\n"
        "My laptop does not boot.\n"
    )
    result = strip_reply(text)
    assert result.startswith("FYI, see below.")
    assert result.endswith("My laptop does not boot.")


def test_text_that_is_all_quote_is_returned_trimmed() -> None:
    """When stripping would leave nothing, the text comes back trimmed instead."""
    assert strip_reply("\n> only a quote\n> here\n\n") == "> only a quote\n> here"
    assert strip_reply("-- \nJohn Smith\n") == "-- \nJohn Smith"


def test_plain_text_without_history_is_unchanged() -> None:
    """A mail with no history, even one starting with "On Monday", is kept whole."""
    text = "On Monday the printer broke.\nPlease help."
    assert strip_reply(text) == text


def test_a_reply_line_above_an_attribution_is_not_joined_into_it() -> None:
    """The joined-line case of issue 15: the line above "On … wrote:" is the reply."""
    text = "Thanks, that fixed it!\nOn Mon, Jan 1, 2024 at 10:00 AM, Bob <bob@x.com> wrote:\n> q"
    assert strip_reply(text) == "Thanks, that fixed it!"


@pytest.mark.parametrize(
    "above",
    [
        "On Monday I restarted it twice",  # opens like an attribution
        "Please write to bob@example.org",  # holds an address
        "See <https://status.example.org",  # an open angle bracket
    ],
)
def test_a_reply_line_that_looks_like_a_first_half_is_not_joined_either(above: str) -> None:
    """A reply line is kept even when it opens like an attribution or holds an address."""
    for attribution in (
        "On Mon, 1 Jan 2024 at 10:00, Alice <alice@example.com> wrote:",
        "Alice Martin wrote:",
    ):
        assert strip_reply(f"{above}\n{attribution}\n> q") == above


@pytest.mark.parametrize(
    "attribution",
    [
        "2011/4/7 Alice Martin <alice@example.com>",  # old Gmail, date first
        "On Tue, Dec 1, 2026 at 10:00 AM, Alice <alice@example.com> wrote",
        "On Monday 09 September 2002 09:51 pm, Alice Martin wrote",  # KMail
        "Am 01.12.2026 um 10:00 schrieb Alice Martin",
    ],
)
def test_an_attribution_without_its_colon_above_quoted_lines_is_cut(attribution: str) -> None:
    """A dated attribution that lost its colon starts the history above quoted lines
    (blank lines between or not), and only there: above the same text unquoted it is
    content."""
    for gap in ("\n", "\n\n", "\n\n\n"):
        assert strip_reply(f"Fixed.\n\n{attribution}{gap}> Is it fixed?\n> Alice") == "Fixed."
    unquoted = f"Fixed.\n\n{attribution}\n\nIs it fixed?"
    assert strip_reply(unquoted) == unquoted


@pytest.mark.parametrize(
    "line",
    [
        "On Monday 3 I wrote",  # dated, but neither a time nor an address
        "On the 3rd floor, Bob wrote",
        "Alice Martin <alice@example.com>",  # an address, no date
        "2011/4/7 Alice Martin <alice@example.com> wrote to us.",  # a sentence
    ],
)
def test_a_line_above_quoted_lines_without_a_colon_is_content(line: str) -> None:
    """Only an attribution's dated shape counts without its colon."""
    assert strip_reply(f"Fixed.\n{line}\n> quoted\nanswer") == f"Fixed.\n{line}\nanswer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Works now. On Mon, Jan 1, 2024 at 10:00 AM, Bob <bob@x.com> wrote:\n> q",
            "Works now.",
        ),
        (
            "Hi,\n\nSure! On it. On Mon, Jan 1, 2024 at 10:00, Bob <b@x.com> wrote:\n> q",
            "Hi,\n\nSure! On it.",
        ),
        ("Danke! Am 01.12.2026 um 10:00 schrieb Bob <bob@example.com>:\n> q", "Danke!"),
        (
            "Works. On Mon, Jan 1, 2024 at 10:00, Bob <b@x.com> wrote:\n> q\nAnd the fan too.",
            "Works.\n\nAnd the fan too.",
        ),
        ("reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi", "reply"),
        ("reply--- On Wed, Apr 4, 2012 at 3:59 PM, me@domain.com wrote:\n> Hi", "reply"),
        (
            "reply\nbla-bla - bla--- On Wed, Apr 4, 2012 at 3:59 PM, me@domain.com wrote:\n> Hi",
            "reply\nbla-bla - bla",
        ),
        # The Bat! quotes with initials: "EL> On …" is a quoted attribution, no reply.
        (
            "Agreed.\n\nEL> On Sun, 11 Aug 2002 bob@example.com wrote:\n\n>> q\n\nEL> more",
            "Agreed.\n\nEL> more",
        ),
    ],
)
def test_a_reply_sharing_its_line_with_the_attribution_keeps_its_sentences(
    text: str, expected: str
) -> None:
    """Text flattened by another tool runs the reply's last sentence into the
    attribution: the sentences before "On <date> … wrote:" are the reply's."""
    assert strip_reply(text) == expected


@pytest.mark.parametrize(
    "block",
    [
        "From: alice@example.com\nDate: Wed, 16 May 2012 00:15:02 -0600",
        "Date: Wed, 16 May 2012 00:15:02 -0600\nTo: support@helpdesk.example",
        "Von: alice@example.com\nDatum: Mittwoch, 16. Mai 2012 08:15",
    ],
)
def test_a_header_block_of_a_dated_line_and_an_addressed_one_starts_the_history(
    block: str,
) -> None:
    """Two header lines make a block when the date has its time and the sender (or the
    recipient) an address."""
    assert strip_reply(f"Fixed.\n\n{block}\n\nIs it fixed?") == "Fixed."


@pytest.mark.parametrize(
    "block",
    [
        "Date: Wednesday 3, October 2026\nTime: 7:00am",  # an appointment
        "From: the front desk\nDate: Monday at 10:00",  # no address
        "From: alice@example.com\nDate: Monday",  # no time
        "To: bob@example.com\nDate: Wed, 16 May 2012 00:15:02 -0600\nFrom: alice@example.com",
    ],
)
def test_two_header_lines_without_a_time_an_address_or_a_block_of_their_own_are_content(
    block: str,
) -> None:
    """An appointment, a pair missing its address or time, and the end of a block that
    opened with "To:" (a message pasted into the text) stay."""
    text = f"Booked.\n\n{block}\n\nBring your badge."
    assert strip_reply(text) == text


def _above_quotes_by_lines(text: str) -> frozenset[int]:
    """What :func:`_above_quotes` finds, the plain way: line by line."""
    lines = text.split("\n")
    quoted = [line.lstrip(" \t").startswith(">") for line in lines]
    found = set()
    for i in range(len(lines)):
        if quoted[i] and (i == 0 or not quoted[i - 1]):
            for j in range(i - 1, max(-1, i - 4), -1):
                if lines[j].strip():
                    if reply._is_colonless_attribution(lines[j]):
                        found.add(j)
                    break
    return frozenset(found)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "2011/4/7 Bob <b@x.example>",
                "On 1 Jan 2024 10:00, Bob <b@x.example> wrote",
                "> q",
                ">",
                "  > indented",
                "",
                " ",
                "text",
            ]
        ),
        max_size=14,
    )
)
def test_the_lines_above_quotes_are_found_by_line_number(lines: list[str]) -> None:
    """The skip-a-block-at-a-time search names the lines a line-by-line walk names."""
    text = "\n".join(lines)
    assert _above_quotes(text) == _above_quotes_by_lines(text)


def test_an_attribution_wrapped_after_its_date_is_joined() -> None:
    """A dated first half and a name-only second half ("Bob <b@x> wrote:") are one."""
    text = "Done.\n\nOn Mon, 09 Sep 2002 12:05:55 PDT,\n\tRick <rick@lin12.example> wrote:\n\n> q"
    assert strip_reply(text) == "Done."


def test_an_attribution_wrapped_over_three_lines_is_found() -> None:
    """Apple Mail's long address on a line of its own between the date and "wrote:"."""
    text = "Done.\n\nOn Nov 30, 2011, at 12:47 PM, Somebody <\nsomebody@example.com>\nwrote:\n\nOld"
    assert strip_reply(text) == "Done."


@pytest.mark.parametrize(
    "block",
    [
        "Date: Monday, 1 January 2024 at 10:00\nFrom: Alice\nTo: Bob\nSubject: Re: Printer",
        "Sent: Monday, January 1, 2024 10:00 AM\nFrom: Alice\nTo: Bob\nSubject: RE: Printer",
        "От: Alice\nОтправлено: 1 января 2024 г. 10:00\nКому: Bob\nТема: RE: Принтер",
        "差出人: Alice\n送信日時: 2024年1月1日 10:00\n宛先: Bob\n件名: RE: プリンター",
        "Feladó: Alice\nElküldve: 2024. január 1. 10:00\nCímzett: Bob\nTárgy: RE: Nyomtató",
    ],
    ids=["date-first", "sent-first", "russian", "japanese", "hungarian"],
)
def test_header_blocks_in_any_order_and_language_start_the_history(block: str) -> None:
    """A header block is history whichever line it begins with and whatever its language."""
    assert strip_reply(f"Works now.\n\n{block}\n\nOld text\n") == "Works now."


def test_a_header_block_among_raw_headers_is_a_pasted_message() -> None:
    """Date/From/To/Subject among Received: or Message-ID: lines is content, not history."""
    text = (
        "The bounce:\n\nReceived: from mx.example.com\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
        "From: MAILER-DAEMON@example.com\nTo: bob@example.org\nSubject: Undelivered\n\nWhy?"
    )
    assert strip_reply(text) == text


def test_a_mutt_forward_keeps_its_header_block() -> None:
    """mutt's "----- Forwarded message from x -----" protects the block under it."""
    text = (
        "FYI.\n\n----- Forwarded message from alice@example.com -----\n\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\nFrom: alice@example.com\nTo: bob@example.org\n"
        "Subject: Laptop\n\nMy laptop does not boot."
    )
    assert strip_reply(text) == text


def test_answers_written_between_quoted_lines_follow_the_text_above() -> None:
    """Under an attribution, the unquoted answers between quotes are the sender's too."""
    text = (
        "Hi Alice,\n\nOn Mon, 1 Jan 2024 at 10:00, Alice <alice@example.com> wrote:\n"
        "> Which floor?\nThe second.\n\n> Since when?\nSince Monday.\n\n-- \nBob\n"
    )
    assert strip_reply(text) == "Hi Alice,\n\nThe second.\n\nSince Monday."


def test_answers_to_several_people_in_turn_are_all_kept() -> None:
    """A mailing-list reply answering two attributions keeps both answers, in order."""
    text = (
        "Hi all,\n\nalice@example.org said:\n> The keyboard crashes Linux.\n\nMine too.\n\n"
        "bob@example.org said:\n> Solaris needs x86 hardware.\nIt runs on x86 already.\n"
    )
    assert strip_reply(text) == "Hi all,\n\nMine too.\n\nIt runs on x86 already."


@pytest.mark.parametrize("first", ["To: support@example.org", "Subject: Laptop"])
def test_a_block_opening_with_to_or_subject_is_a_pasted_message(first: str) -> None:
    """A header block that opens with To: or Subject: (a draft, an article) is content."""
    block = f"{first}\nDate: Mon, 1 Jan 2024 10:00:00 +0000\nFrom: alice@example.com\n"
    text = f"The draft that bounced:\n\n{block}\nMy laptop does not boot."
    assert strip_reply(text) == text


def test_yahoo_history_without_quote_marks_is_all_history() -> None:
    """Yahoo indents its history instead of quoting it: everything below the line goes."""
    text = (
        "Thanks.\n\n    On Monday, January 1, 2024, 10:00:00 AM GMT, Alice <a@example.com>"
        " wrote:\n\n    Please restart.\n"
    )
    assert strip_reply(text) == "Thanks."


def test_hostile_bodies_are_bounded_by_the_candidate_filter_and_the_line_cap() -> None:
    """Floods of quotes, dashes and "On" give no candidates, or lines over the cap."""
    quotes = ">\n" * 100_000
    assert _candidates(quotes) == []
    assert strip_reply(quotes) == quotes.strip()
    dashes = ("-" * 76 + "\n--b-x\n") * 50_000
    assert _candidates(dashes) == []
    # A flood of quote blocks: each block's line above is looked at once, and kept.
    blocks = "x\n>\n" * 100_000
    assert _above_quotes(blocks) == frozenset()
    assert strip_reply(blocks) == "\n".join(["x"] * 100_000)
    ons = ("On " * 10_000 + "\n") * 10
    assert _candidates(ons) == []
    assert strip_reply(ons) == "\n".join(line.rstrip() for line in ons.splitlines())
    # A line over the cap is never a marker, however it ends: its cost stays bounded.
    long_attribution = "On 1 Jan 2024 10:00 " + "On " * MAX_MARKER_LINE + "Bob <b@x.example> wrote:"
    text = f"Reply.\n{long_attribution}\n> quoted"
    assert strip_reply(text) == f"Reply.\n{long_attribution}"


def test_many_attributions_in_a_row_come_back_whole() -> None:
    """100,000 attribution lines (each the history of the last) leave the text whole."""
    text = "On Mon, 1 Jan 2024 at 10:00, Bob <b@x.example> wrote:\n" * 100_000
    assert strip_reply(text) == text.strip()


def test_a_long_chain_of_answers_under_attributions_keeps_every_answer() -> None:
    """20,000 attributions each answered below its quote give the 20,000 answers."""
    unit = "On Mon, 1 Jan 2024 at 10:00, Bob <b@x.example> wrote:\n> q\nanswer\n"
    assert strip_reply(unit * 20_000) == "\n\n".join(["answer"] * 20_000)


def test_long_lines_are_handled_in_linear_time() -> None:
    """A 2 MB single line and 100,000 short lines give no line to test: one pass reads them."""
    long_line = "On " + "x" * 2_000_000
    many_lines = "On Monday wrote\n" * 100_000
    # No candidate line means no marker pattern runs: the cost is the one filter pass.
    assert _candidates(long_line) == []
    assert _candidates(many_lines) == []
    assert strip_reply(long_line) == long_line
    assert strip_reply(many_lines).startswith("On Monday wrote")


def test_thunderbird_original_message_header() -> None:
    """Thunderbird's "-------- Original Message --------" header starts the history."""
    text = (
        "Fixed, thanks.\n\n-------- Original Message --------\n"
        "Subject: Printer\nDate: Mon, 3 Jun 2024 10:00:00 +0200\nFrom: Support\n\nOld text\n"
    )
    assert strip_reply(text) == "Fixed, thanks."


def test_gmail_html_reply_read_as_text_is_stripped() -> None:
    """A Gmail HTML-only reply, turned into text, loses its gmail_quote history."""
    html = (
        '<div dir="ltr">Works now, thanks!</div><br><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">On Mon, 3 Jun 2024 at 10:00, Support &lt;'
        '<a href="mailto:support@example.net">support@example.net</a>&gt; wrote:<br></div>'
        '<blockquote class="gmail_quote">Please restart the router.</blockquote></div>'
    )
    assert strip_reply(html_to_text(html)) == "Works now, thanks!"


def test_outlook_html_reply_read_as_text_is_stripped() -> None:
    """An Outlook HTML reply (divRplyFwdMsg with bold From:/Sent:) read as text is cut."""
    html = (
        '<div><p class="MsoNormal">Works now.</p></div><hr><div id="divRplyFwdMsg">'
        "<b>From:</b> Support &lt;support@example.net&gt;<br><b>Sent:</b> Monday, June 3,"
        " 2024 10:00 AM<br><b>To:</b> Bob<br><b>Subject:</b> Printer</div>"
        "<div>Please restart the printer.</div>"
    )
    assert strip_reply(html_to_text(html)) == "Works now."


# Lines from every kind of marker, and ordinary text, to shuffle into bodies.
_LINES = st.sampled_from(
    [
        "",
        "Hello team,",
        "The printer jams again: see below.",
        "Note:",
        "On Thu, 30 May 2024 at 16:00, Support <support@corp.example>",
        "wrote:",
        "On Thu, 30 May 2024 at 16:00, Support <support@corp.example> wrote:",
        "Alice Martin wrote:",
        "> quoted",
        "  > indented quote",
        "-- ",
        "--",
        "--  ",
        " -- ",
        "---",
        "--b-x",
        "-" * 76,
        "-----Original Message-----",
        "  -- Ursprüngliche Nachricht --",
        "-----ORIGINAL MESSAGE-----",
        "----- Reply message -----",
        "--Original Message",
        "________________________________",
        "From: Alice <alice@customer.example>",
        "*From:* Alice",
        "\u00a0From: Alice",
        "Sent: Thursday, 30 May 2024 16:00",
        "To: Support",
        "Subject: Printer",
        "---------- Forwarded message ---------",
        "Sent from my iPhone",
        "\u00a0Sent from my iPhone",
        "Get Outlook for iOS",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Le jeu. 30 mai 2024 à 16:00, Support a écrit :",
        "Regards,",
        "Thanks, that fixed it!",
        "On Mon, Jan 1, 2024 at 10:00 AM, Bob <bob@x.com> wrote:",
        "Support Team <",
        "support@corp.example> wrote:",
        "2016-03-03 17:21 GMT+01:00 Name <a@b.example>:",
        "пн, 1 янв. 2024 г. в 10:00, Alice <alice@corp.example>:",
        "Alice <alice@corp.example> 于2024年1月1日周一 10:00写道：",
        "---- On Mon, 01 Jan 2024 10:00:00 +0000 Alice <a@b.example> wrote ----",
        "-----Alice Martin/ACME wrote: -----",
        "Alice Martin/ACME@ACME wrote on 01/01/2024 10:00:00 AM:",
        "Date: Monday, 1 January 2024 at 10:00",
        "Von: Alice",
        "Gesendet: Montag, 1. Januar 2024 10:00",
        "Betreff: Drucker",
        "От: Alice",
        "Отправлено: 1 января 2024 г.",
        "发件人：Alice",
        "主题：打印机",
        "Delivered-To: support@corp.example",
        "-----Исходное сообщение-----",
        "---------- Weitergeleitete Nachricht ---------",
        "Отправлено с iPhone",
        "iPhoneから送信",
        "Get Outlook for Android",
        "Sent from my laptop, but it failed.",
        "On Nov 30, 2011, at 12:47 PM, Somebody <",
        "somebody@corp.example>",
        "Op 1 jan. 2024 om 10:00 heeft Alice <a@b.example> het volgende geschreven:",
        "On Mon, 8 Jan 2024 at 10:00, Alice <alice@corp.example",
        ">:",
        "> wrote:",
        "De : Alice <alice@corp.example>",
        "Envoyé le : jeudi 15 décembre 2016 09:35",
        "Objet :Facture",
        "Message du : 12/12/2016 13:20",
        "Sujet : Facture",
        "-------- Oprindelig besked --------",
        "Sent from TypeApp<http://www.typeapp.com/r>",
        "_" * 47,
        "cluster-users mailing list",
        "> View ticket (http://helpdesk.example/tickets/50?action=view",
        "_nonce=3dd518)",
        " (http://helpdesk.example/c/YzOTYzMmE) >",
        "> Could you check the invoice number on the PDF we sent you on Fri and",
        "day?",
        "port 8080",
        "On Nov 21, 2014,",
        "at 10:18,",
    ]
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINES, max_size=14), newline=st.sampled_from(["\n", "\r\n"]))
def test_testing_only_candidate_lines_cuts_where_testing_every_line_does(
    lines: list[str], newline: str
) -> None:
    """The one-pass candidate filter never changes where the history starts."""
    text = newline.join(lines)
    normalized = text.replace("\r\n", "\n")
    split = normalized.split("\n")
    assert _cut(split, _candidates(normalized)) == _cut(split)


def _new_text_line_by_line(lines: list[str]) -> str:
    """The plain definition of the new text: unquoted lines, right-trimmed, trimmed,
    without those between two quoted lines that continue the quoted line above."""

    def quoted(k: int) -> bool:
        return 0 <= k < len(lines) and lines[k].lstrip().startswith(">")

    kept = [
        line.rstrip()
        for k, line in enumerate(lines)
        if not quoted(k)
        and not (quoted(k - 1) and quoted(k + 1) and reply._continues_quote(lines[k - 1], line))
    ]
    text = "\n".join(kept).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            _LINES,
            st.text(alphabet=" \t>x\u00a0\u2028\x0b:", max_size=8),
        ),
        max_size=14,
    )
)
def test_the_new_text_is_what_the_line_by_line_definition_gives(lines: list[str]) -> None:
    """Whole-text substitutions keep exactly the unquoted, right-trimmed lines."""
    assert _new_text(lines) == _new_text_line_by_line(lines)
    assert reply._new_text_long("\n".join(lines)) == _new_text_line_by_line(lines)


# -- long texts ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.one_of(_LINES, st.text(alphabet=" \t>x:-\u00a0\u2028\u03a3\uff1a", max_size=8)),
        max_size=14,
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
    chunk=st.integers(min_value=0, max_value=40),
)
def test_a_long_text_is_stripped_as_a_short_one_is(
    lines: list[str], newline: str, chunk: int
) -> None:
    """Read through _Lines and lower-cased a chunk at a time (the length where that
    starts set down to a few characters), a text gives the same new text, candidate
    lines and cut as split into a list."""
    text = newline.join(lines)
    normalized = text.replace("\r\n", "\n")
    expected = (strip_reply(text), _candidates(normalized))
    split = normalized.split("\n")
    with mock.patch.object(reply, "_LONG_TEXT", chunk), mock.patch.object(reply, "_CHUNK", chunk):
        assert (strip_reply(text), _candidates(normalized)) == expected
        lines_read = reply._lines(normalized)
        assert isinstance(lines_read, reply._Lines) or len(normalized) <= chunk
        assert list(lines_read) == split
        assert _cut(lines_read, expected[1]) == _cut(split, expected[1])
        if isinstance(lines_read, reply._Lines):
            for start in range(len(split) + 1):
                for stop in range(start, len(split) + 1):
                    assert lines_read.joined(start, stop) == "\n".join(split[start:stop])


def test_the_lines_of_a_long_text_index_as_a_list_does() -> None:
    """Negative indexes, slices with steps and an index past the end behave as a list's."""
    text = "first\n\nthird\nlast"
    lines, split = reply._Lines(text), text.split("\n")
    assert len(lines) == len(split)
    for index in range(-len(split), len(split)):
        assert lines[index] == split[index]
    assert lines[1:3] == split[1:3]
    assert lines[::-2] == split[::-2]
    with pytest.raises(IndexError):
        lines[len(split)]


def test_a_25_mb_text_without_history_is_its_own_new_text_with_no_copy() -> None:
    """A long body with nothing to strip comes back as the same string, and reading it
    costs a small part of its size (the line offsets, a chunk lower-cased at a time);
    one that ends with a line break costs its trimmed copy, once."""
    text = "The quick brown fox jumps over the lazy dog, again and again.\n" * 400_000
    for body, most in ((text.rstrip(), 0.25), (text, 1.25)):
        tracemalloc.start()
        try:
            new = strip_reply(body)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert new == body.strip()
        assert peak < most * len(body), f"peak {peak / len(body):.2f}x the text"
    body = text.rstrip()
    assert strip_reply(body) is body


def test_history_under_a_25_mb_answer_is_still_cut() -> None:
    """The attribution and quote after a long answer are found in a later chunk."""
    answer = "Here is the full log you asked for, line by line.\n" * 500_000
    history = "On Mon, 7 Dec 2026 at 09:00, Support <support@helpdesk.example> wrote:\n> Hi\n"
    assert strip_reply(answer + history) == answer.strip()
