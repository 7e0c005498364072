"""Classification for loop safety (adversarial group O)."""

from __future__ import annotations

from typing import Any

import pytest

from halomail.inbound.classify import classify, loop_signature
from halomail.inbound.models import Address, Attachment, Classification, InboundEmail
from halomail.inbound.parse import parse_email

TOKEN = "test-loop-token"


def make(
    *,
    subject: str = "Printer on floor 3 is jammed",
    sender: str | None = "alice@example.com",
    headers: tuple[tuple[str, str], ...] = (),
    **fields: Any,
) -> InboundEmail:
    """An InboundEmail as the parser would build it, with the given top-level headers."""
    all_headers = (
        ("From", sender or "undisclosed"),
        ("To", "support@example.net"),
        ("Subject", subject),
        *headers,
    )
    return InboundEmail(
        message_id=fields.pop("message_id", "msg-1@example.com"),
        sender=Address(sender) if sender else None,
        subject=subject,
        text=fields.pop("text", "Hello,\nthe printer is jammed.\n"),
        size=100,
        sha256="0" * 64,
        headers=all_headers,
        **fields,
    )


def test_ordinary_mail_may_be_acknowledged() -> None:
    """A plain mail from a person sets no flag and may be acknowledged."""
    result = classify(make(), loop_token=TOKEN, is_own_message_id=lambda _mid: False)
    assert result == Classification()
    assert result.may_acknowledge


class TestAutoReplies:
    """O1 and O7: RFC 3834 and vendor auto-reply markers."""

    @pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "auto-notified; x=1"])
    def test_o1_auto_submitted_marks_an_auto_reply(self, value: str) -> None:
        """Auto-Submitted with any value but "no" is an automatic reply (RFC 3834)."""
        result = classify(make(headers=(("Auto-Submitted", value),)))
        assert result.auto_reply
        assert not result.may_acknowledge
        assert f"auto-submitted: {value.split(';')[0]}" in result.reasons

    def test_o1_exchange_out_of_office(self) -> None:
        """Exchange's OOF (Automatic reply:, X-Auto-Response-Suppress) is an auto-reply."""
        result = classify(
            make(
                subject="Automatic reply: Printer on floor 3 is jammed",
                headers=(
                    ("X-Auto-Response-Suppress", "All"),
                    ("X-MS-Exchange-Inbox-Rules-Loop", "bob@example.org"),
                ),
            )
        )
        assert result.auto_reply
        assert "subject: automatic reply" in result.reasons

    @pytest.mark.parametrize(
        "subject",
        [
            "Out of Office: Printer",
            "Out of Office AutoReply: Printer",
            "Autoreply: Printer",
            "Auto Reply: Printer",
            "Abwesenheitsnotiz: Drucker",
            "Automatische Antwort: Drucker",
            "Réponse automatique : Imprimante",
            "Respuesta automática: Impresora",
            "Automatisch antwoord: Printer",
        ],
    )
    def test_o1_out_of_office_subjects_mark_an_auto_reply(self, subject: str) -> None:
        """Out-of-office subject prefixes in several languages mark an auto-reply."""
        assert classify(make(subject=subject)).auto_reply

    @pytest.mark.parametrize("name", ["X-Autoreply", "X-Autorespond"])
    def test_o1_vendor_auto_reply_headers(self, name: str) -> None:
        """X-Autoreply and X-Autorespond mark an auto-reply."""
        result = classify(make(headers=((name, "yes"),)))
        assert result.auto_reply
        assert f"auto-reply header: {name}" in result.reasons

    def test_o1_exchange_generated_message(self) -> None:
        """X-MS-Exchange-Generated-Message-Source marks Exchange-generated mail."""
        result = classify(
            make(headers=(("X-MS-Exchange-Generated-Message-Source", "Mailbox Rules Agent"),))
        )
        assert result.auto_reply

    def test_o1_x_auto_response_suppress_with_out_of_office_shape(self) -> None:
        """X-Auto-Response-Suppress with an out-of-office subject is an auto-reply."""
        result = classify(
            make(subject="I am on vacation", headers=(("X-Auto-Response-Suppress", "All"),))
        )
        assert result.auto_reply

    def test_o1_ordinary_outlook_mail_is_not_an_auto_reply(self) -> None:
        """Outlook puts X-Auto-Response-Suppress on normal mail; alone it is no auto-reply."""
        result = classify(
            make(
                headers=(
                    ("X-Auto-Response-Suppress", "All"),
                    ("Thread-Index", "AdqxYZ1234567890abcdefABCDEF=="),
                    ("X-MS-Has-Attach", ""),
                )
            )
        )
        assert not result.auto_reply
        assert result.may_acknowledge

    def test_o1_a_persons_reply_about_an_absence_is_not_an_auto_reply(self) -> None:
        """ "RE: Vacation request" from Outlook is a human answer, not an auto-reply."""
        result = classify(
            make(subject="RE: Vacation request", headers=(("X-Auto-Response-Suppress", "All"),))
        )
        assert not result.auto_reply

    def test_o7_auto_submitted_no_is_a_human(self) -> None:
        """Auto-Submitted: no is sent by a person: no flag, and acknowledging is allowed."""
        result = classify(make(headers=(("Auto-Submitted", "no"),)))
        assert not result.auto_reply
        assert result.may_acknowledge

    def test_read_receipts_are_automatic(self) -> None:
        """A disposition notification (read receipt) is never acknowledged."""
        result = classify(
            make(
                subject="Read: Printer",
                headers=(
                    (
                        "Content-Type",
                        'multipart/report; report-type=disposition-notification; boundary="b"',
                    ),
                ),
            )
        )
        assert result.auto_reply
        assert not result.bounce


class TestBounces:
    """O2 and O3: delivery status notifications and their returned Message-ID."""

    DSN = (
        "Content-Type",
        'multipart/report; report-type=delivery-status; boundary="9B095B5ADSN=_01"',
    )

    def test_o2_delivery_status_report_is_a_bounce(self) -> None:
        """multipart/report; report-type=delivery-status is a bounce."""
        result = classify(
            make(
                subject="Undelivered Mail Returned to Sender",
                sender="MAILER-DAEMON@mail.example.net",
                return_path="",
                headers=(self.DSN, ("Auto-Submitted", "auto-replied")),
                embedded_message_ids=("ack-17.abc@helpdesk.example",),
            )
        )
        assert result.bounce
        assert result.no_reply_sender
        assert result.bounced_message_id == "ack-17.abc@helpdesk.example"
        assert not result.may_acknowledge
        assert "bounce: multipart/report; report-type=delivery-status" in result.reasons

    def test_o2_delivery_status_part_is_a_bounce(self) -> None:
        """A message/delivery-status part marks a bounce even without the report type."""
        part = Attachment("", "", "part-2", "message/delivery-status", 10)
        result = classify(make(sender="postmaster@example.org", attachments=(part,)))
        assert result.bounce

    def test_o2_a_bounce_says_what_kind_of_report_it_is(self) -> None:
        """A delivery report, an abuse report and a list error each carry their kind."""
        dsn = make(headers=(self.DSN,))
        arf_type = ("Content-Type", 'multipart/report; report-type=feedback-report; boundary="b"')
        arf = make(sender="fbl@isp.example", headers=(arf_type,))
        held = make(
            sender="staff-bounces@lists.example.org",
            subject="Your message to Staff awaits moderator approval",
            headers=(("X-List-Administrivia", "yes"),),
        )
        kinds = [classify(e).bounce_kind for e in (dsn, arf, held, make())]
        assert kinds == ["delivery-report", "feedback-report", "list-error", ""]

    def test_o2_bounced_id_falls_back_to_the_dsn_threading_headers(self) -> None:
        """Without an embedded message, In-Reply-To names the returned message."""
        result = classify(
            make(
                headers=(self.DSN,),
                in_reply_to=("ack-9@helpdesk.example",),
                references=("orig@example.com", "ack-9@helpdesk.example"),
            )
        )
        assert result.bounced_message_id == "ack-9@helpdesk.example"

    def test_o3_non_standard_bounce_is_found_by_subject_and_sender(self) -> None:
        """A qmail-style "failure notice" from MAILER-DAEMON is a bounce (heuristics)."""
        result = classify(
            make(
                subject="failure notice",
                sender="MAILER-DAEMON@mx.example.org",
                message_id="bounce-1@mx.example.org",
                text=(
                    "Hi. This is the qmail-send program at mx.example.org.\n"
                    "<nobody@example.org>:\nSorry, no mailbox here by that name.\n\n"
                    "--- Below this line is a copy of the message.\n\n"
                    "Return-Path: <support@helpdesk.example>\n"
                    "Message-ID: <ack-33.f00@helpdesk.example>\n"
                    "Subject: [ID:33] We received your request\n"
                ),
            )
        )
        assert result.bounce
        assert result.bounced_message_id == "ack-33.f00@helpdesk.example"

    @pytest.mark.parametrize(
        "subject",
        [
            "Undeliverable: Printer on floor 3",
            "Delivery Status Notification (Failure)",
            "Mail delivery failed: returning message to sender",
            "Returned mail: see transcript for details",
            "Undelivered Mail Returned to Sender",
        ],
    )
    def test_o3_bounce_subjects_from_a_null_return_path(self, subject: str) -> None:
        """Bounce subjects with the null return path <> mark a bounce."""
        assert classify(make(subject=subject, sender="x@example.org", return_path="")).bounce

    def test_o3_a_person_forwarding_a_bounce_is_not_a_bounce(self) -> None:
        """A customer asking about "Undeliverable: ..." is a person, not a bounce."""
        result = classify(make(subject="Undeliverable: my mail to the CEO bounced"))
        assert not result.bounce
        assert result.may_acknowledge

    def test_bounced_id_is_none_when_nothing_names_it(self) -> None:
        """A bounce that quotes no Message-ID has no bounced_message_id."""
        result = classify(make(headers=(self.DSN,), text="Delivery failed."))
        assert result.bounce
        assert result.bounced_message_id is None


class TestOwnMessages:
    """O5: our own mail fetched back."""

    def test_o5_loop_header_signing_its_own_message_id_is_own_message(self) -> None:
        """A loop marker that signs the email's own Message-ID with our token marks it ours."""
        marker = loop_signature(TOKEN, "msg-1@example.com")
        result = classify(make(loop_markers=(marker,)), loop_token=TOKEN)
        assert result.own_message
        assert "own-message: loop header signs its Message-ID" in result.reasons

    def test_o5_the_signature_is_not_the_token(self) -> None:
        """The loop header's value reveals nothing of the token: it is a 128-bit HMAC."""
        marker = loop_signature(TOKEN, "msg-1@example.com")
        assert TOKEN not in marker
        assert len(marker) == 32
        assert marker != loop_signature(TOKEN, "msg-2@example.com")
        assert marker != loop_signature("another-token", "msg-1@example.com")

    def test_o5_a_copied_loop_header_on_another_message_id_is_not_ours(self) -> None:
        """Our loop header copied from one of our mails onto a new Message-ID proves nothing."""
        copied = loop_signature(TOKEN, "halomail.1.abc.def@helpdesk.example")
        result = classify(
            make(message_id="forged-1@stranger.example", loop_markers=(copied,)),
            loop_token=TOKEN,
        )
        assert not result.own_message
        assert result.may_acknowledge

    def test_o5_the_raw_token_in_the_loop_header_is_not_ours(self) -> None:
        """A header holding the token itself (the old format, or a leak) does not mark our mail."""
        result = classify(make(loop_markers=(TOKEN,)), loop_token=TOKEN)
        assert not result.own_message

    def test_o5_a_foreign_loop_token_is_not_ours(self) -> None:
        """Another instance's signature (or a guessed one) does not mark our message."""
        marker = loop_signature("other-token", "msg-1@example.com")
        result = classify(make(loop_markers=(marker,)), loop_token=TOKEN)
        assert not result.own_message

    def test_o5_a_previous_token_still_marks_our_mail_after_rotation(self) -> None:
        """Mail signed before a rotation is ours while the old token is a previous token."""
        marker = loop_signature("old-token", "msg-1@example.com")
        email = make(loop_markers=(marker,))
        assert not classify(email, loop_token=TOKEN).own_message
        assert classify(email, loop_token=TOKEN, previous_loop_tokens=("old-token",)).own_message

    def test_o5_loop_marker_is_ignored_without_a_token(self) -> None:
        """With no loop token configured, no loop marker can match."""
        marker = loop_signature("", "msg-1@example.com")
        assert not classify(make(loop_markers=(marker,)), loop_token=None).own_message
        assert not classify(make(loop_markers=(marker,)), loop_token="").own_message

    def test_o5_loop_marker_without_a_message_id_is_not_ours(self) -> None:
        """An email without a Message-ID has nothing our loop header could sign."""
        marker = loop_signature(TOKEN, "")
        assert not classify(
            make(message_id=None, loop_markers=(marker,)), loop_token=TOKEN
        ).own_message

    def test_o5_our_message_id_marks_own_message(self) -> None:
        """A Message-ID that is_own_message_id recognises marks our own message."""
        result = classify(
            make(message_id="hm.17.abc@helpdesk.example"),
            is_own_message_id=lambda mid: mid.startswith("hm."),
        )
        assert result.own_message
        assert "own-message: Message-ID is one we generated" in result.reasons


class TestBulkAndNoReply:
    """O6: list and bulk mail, null return paths and no-reply senders."""

    @pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk"])
    def test_o6_precedence_marks_bulk(self, value: str) -> None:
        """Precedence: bulk, junk or list marks bulk mail."""
        result = classify(make(headers=(("Precedence", value),)))
        assert result.bulk
        assert not result.may_acknowledge

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("List-Id", "<users.lists.example.org>"),
            ("List-Unsubscribe", "<mailto:leave@lists.example.org>"),
            ("List-Post", "<mailto:users@lists.example.org>"),
        ],
    )
    def test_o6_list_headers_mark_bulk(self, name: str, value: str) -> None:
        """Any List-Id, List-Unsubscribe or List-Post header marks list mail."""
        result = classify(make(headers=((name, value),)))
        assert result.bulk
        assert f"list mail: {name}" in result.reasons

    def test_o6_null_return_path_is_a_no_reply_sender(self) -> None:
        """Return-Path: <> means the sender must never be answered."""
        result = classify(make(return_path=""))
        assert result.no_reply_sender
        assert "null return path <>" in result.reasons

    @pytest.mark.parametrize(
        "address",
        [
            "noreply@example.com",
            "no-reply@example.com",
            "do-not-reply@example.com",
            "DoNotReply@example.com",
            "mailer-daemon@example.com",
            "postmaster@example.com",
            "bounces+1234@example.com",
            "bounce-5678@example.com",
            "no-reply-alerts@example.com",
        ],
    )
    def test_o6_no_reply_senders(self, address: str) -> None:
        """noreply, mailer-daemon, postmaster and bounce senders are never answered."""
        result = classify(make(sender=address))
        assert result.no_reply_sender
        assert not result.may_acknowledge

    @pytest.mark.parametrize("address", ["noreen@example.com", "replies@example.com"])
    def test_o6_similar_looking_senders_are_people(self, address: str) -> None:
        """Local parts that merely resemble no-reply names are answered."""
        assert not classify(make(sender=address)).no_reply_sender

    def test_a_normal_return_path_is_fine(self) -> None:
        """A real Return-Path sets no flag."""
        assert classify(make(return_path="alice@example.com")).may_acknowledge

    def test_missing_sender_sets_no_no_reply_flag(self) -> None:
        """An email without a parseable sender is not flagged no-reply by address."""
        assert not classify(make(sender=None)).no_reply_sender


# -- the upstream spam filter's verdict (issue 15, point 7) -------------------------------

# One header set per filter, as each adds it to mail it lets through tagged.
SPAM_VERDICTS = {
    "spamassassin": (
        ("X-Spam-Checker-Version", "SpamAssassin 3.4.6 (2021-04-09) on mx1.example.net"),
        ("X-Spam-Flag", "YES"),
        ("X-Spam-Level", "********"),
        (
            "X-Spam-Status",
            "Yes, score=8.2 required=5.0 tests=BAYES_99,HTML_MESSAGE,URIBL_BLACK "
            "autolearn=no autolearn_force=no version=3.4.6",
        ),
    ),
    "spamassassin-status-only": (
        ("X-Spam-Status", "Yes, score=6.1 required=5.0 tests=BAYES_80 version=3.4.6"),
    ),
    "rspamd-milter": (
        ("X-Spam", "Yes"),
        ("X-Spamd-Bar", "+++++++++"),
        ("X-Rspamd-Queue-Id", "4F1C2180C51"),
        ("X-Rspamd-Server", "mx2"),
    ),
    "rspamd-action": (
        ("X-Rspamd-Queue-Id", "4F1C2180C51"),
        ("X-Rspamd-Action", "add header"),
        ("X-Rspamd-Server", "mx2"),
    ),
    "rspamd-extended": (
        (
            "X-Spamd-Result",
            "default: True [11.40 / 15.00]; BAYES_SPAM(5.10)[99.99%]; "
            "R_SPF_SOFTFAIL(0.60)[~all]; MIME_GOOD(-0.10)[text/plain]",
        ),
        ("X-Rspamd-Action", "rewrite subject"),
    ),
    "exchange-scl": (
        ("X-MS-Exchange-Organization-SCL", "6"),
        ("X-MS-Exchange-Organization-AuthAs", "Anonymous"),
    ),
    "microsoft-365": (
        (
            "X-Forefront-Antispam-Report",
            "CIP:203.0.113.7;CTRY:RU;LANG:en;SCL:5;SRV:;IPV:NLI;SFV:SPM;"
            "H:mail.spam.example;PTR:mail.spam.example;CAT:SPM;SFS:(13230040)(8096899003);"
            "DIR:INB;",
        ),
        ("X-Microsoft-Antispam", "BCL:0;ARA:13230040|8096899003;"),
    ),
    "microsoft-365-folded": (
        (
            "X-Forefront-Antispam-Report",
            "CIP:203.0.113.7; CTRY:; LANG:en; SCL:9; SRV:; IPV:NLI; SFV:SKS;"
            " H:mail.spam.example; PTR:; CAT:HSPM; DIR:INB;",
        ),
    ),
    "barracuda": (
        ("X-Barracuda-Spam-Score", "6.32"),
        ("X-Barracuda-Spam-Flag", "YES"),
        (
            "X-Barracuda-Spam-Status",
            "Yes, SCORE=6.32 using global scores of TAG_LEVEL=3.5 QUARANTINE_LEVEL=1000.0 "
            "KILL_LEVEL=7.0 tests=BSF_SC0_SA_TO_FROM_DOMAIN_MATCH, HTML_MESSAGE",
        ),
    ),
    "barracuda-status-only": (
        ("X-Barracuda-Spam-Status", "Yes, SCORE=5.10 using per-user scores of TAG_LEVEL=3.5"),
    ),
    "proofpoint": (
        (
            "X-Proofpoint-Spam-Details",
            "rule=spam policy=default score=100 spamscore=100 suspectscore=0 "
            "adultscore=0 bulkscore=0 classifier=spam adjust=0 reason=mlx",
        ),
    ),
    "aol": (("X-AOL-Global-Disposition", "S"),),
    "gmx-web-de": (("X-UI-Out-Filterresults", "junk:10;V03:K0:abc123"),),
}

# What the same filters add to mail they let through as clean: never spam.
CLEAN_VERDICTS = {
    "spamassassin": (
        ("X-Spam-Flag", "NO"),
        ("X-Spam-Status", "No, score=-1.9 required=5.0 tests=BAYES_00 version=3.4.6"),
        ("X-Spam-Level", ""),
    ),
    "rspamd": (
        ("X-Spam", "No"),
        ("X-Rspamd-Action", "no action"),
        ("X-Spamd-Result", "default: False [0.84 / 15.00]; MID_CONTAINS_FROM(1.00)[]"),
    ),
    "rspamd-greylist": (("X-Rspamd-Action", "greylist"),),
    "exchange-trusted": (("X-MS-Exchange-Organization-SCL", "-1"),),
    "exchange-low": (("X-MS-Exchange-Organization-SCL", "1"),),
    "microsoft-365": (
        (
            "X-Forefront-Antispam-Report",
            "CIP:255.255.255.255;CTRY:;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM;"
            "H:PH0PR10MB4759.namprd10.prod.outlook.com;PTR:;CAT:NONE;SFS:(136003);DIR:OUT;",
        ),
    ),
    "microsoft-365-allowed": (
        ("X-Forefront-Antispam-Report", "CIP:192.0.2.1;CTRY:US;SCL:-1;SFV:SKA;DIR:INB;"),
    ),
    "barracuda": (
        ("X-Barracuda-Spam-Flag", "NO"),
        ("X-Barracuda-Spam-Status", "No, SCORE=0.00 using global scores of TAG_LEVEL=3.5"),
    ),
    "proofpoint": (("X-Proofpoint-Spam-Details", "rule=notspam policy=default score=0"),),
    "aol": (("X-AOL-Global-Disposition", "G"),),
    "malformed": (
        ("X-MS-Exchange-Organization-SCL", "five"),
        ("X-Forefront-Antispam-Report", "SCL:;SFV:;CAT:"),
        ("X-Spam-Flag", ""),
    ),
}


class TestSpamVerdicts:
    """Issue 15, point 7: the verdict of the spam filter upstream, read from its headers."""

    @pytest.mark.parametrize("filter_name", sorted(SPAM_VERDICTS))
    def test_each_filters_spam_verdict_marks_spam(self, filter_name: str) -> None:
        """Every filter's own headers for spam set the flag, with the header as the reason."""
        result = classify(make(headers=SPAM_VERDICTS[filter_name]))
        assert result.spam
        assert not result.may_acknowledge
        assert "spam" in result.flags
        verdicts = [r for r in result.reasons if r.startswith("spam: ")]
        assert verdicts
        assert all(
            any(r.startswith(f"spam: {name}: ") for name, _ in SPAM_VERDICTS[filter_name])
            for r in verdicts
        )

    @pytest.mark.parametrize("filter_name", sorted(CLEAN_VERDICTS))
    def test_each_filters_clean_verdict_is_not_spam(self, filter_name: str) -> None:
        """A filter's "not spam" (NO, SCL:1, SFV:NSPM, no action …) sets no flag at all."""
        result = classify(make(headers=CLEAN_VERDICTS[filter_name]))
        assert result == Classification()
        assert result.may_acknowledge

    def test_the_spamassassin_reason_names_the_header_and_its_value(self) -> None:
        """The reason shows what the filter said, shortened to one line."""
        result = classify(make(headers=SPAM_VERDICTS["spamassassin"]))
        assert "spam: X-Spam-Flag: YES" in result.reasons
        status = next(r for r in result.reasons if r.startswith("spam: X-Spam-Status"))
        assert status.startswith("spam: X-Spam-Status: Yes, score=8.2")
        assert len(status) <= len("spam: X-Spam-Status: ") + 60

    def test_a_no_never_clears_another_filters_yes(self) -> None:
        """An X-Spam-Flag: NO (forged, or a second filter's) leaves a Microsoft SFV:SPM spam."""
        result = classify(
            make(
                headers=(
                    ("X-Spam-Flag", "NO"),
                    ("X-Spam-Status", "No, score=0.1"),
                    ("X-Forefront-Antispam-Report", "SCL:5;SFV:SPM;DIR:INB;"),
                )
            )
        )
        assert result.spam
        assert [r for r in result.reasons if r.startswith("spam")] == [
            "spam: X-Forefront-Antispam-Report: SCL:5;SFV:SPM;DIR:INB;"
        ]

    @pytest.mark.parametrize(
        ("scl", "spam"), [("-1", False), ("0", False), ("4", False), ("5", True), ("9", True)]
    )
    def test_the_exchange_scl_threshold_is_five(self, scl: str, spam: bool) -> None:
        """SCL 5 to 9 is spam; -1 (trusted) and 0 to 4 are not."""
        for header in (
            ("X-MS-Exchange-Organization-SCL", scl),
            ("X-Forefront-Antispam-Report", f"CIP:192.0.2.1;SCL:{scl};SFV:NSPM;CAT:NONE;"),
        ):
            assert classify(make(headers=(header,))).spam is spam, header

    @pytest.mark.parametrize(
        "subject",
        ["*****SPAM***** Cheap watches", "*** SPAM *** Cheap watches", "[SPAM] Cheap watches"],
    )
    def test_a_subject_rewritten_by_a_filter_is_spam(self, subject: str) -> None:
        """SpamAssassin's and rspamd's subject tags, at the very start, mark spam."""
        result = classify(make(subject=subject))
        assert result.spam
        assert "spam: subject tagged by a spam filter" in result.reasons

    @pytest.mark.parametrize(
        "subject", ["Fwd: [SPAM] is this phishing?", "Why was my mail tagged [SPAM]?"]
    )
    def test_a_person_writing_about_spam_is_not_spam(self, subject: str) -> None:
        """A forwarded tagged subject, or the word in a question, is a person writing."""
        assert not classify(make(subject=subject)).spam

    def test_a_forwarded_messages_verdict_is_not_this_emails(self) -> None:
        """Only top-level headers count: a verdict inside a quoted text is not read."""
        text = "Forwarded:\nX-Spam-Flag: YES\nX-Spam-Status: Yes, score=9\n"
        assert not classify(make(text=text)).spam

    def test_a_huge_verdict_header_is_read_within_a_bound(self) -> None:
        """A 200 KB report header is classified reading only its start (bounded work)."""
        hostile = "SCL:1;" + "X:" + "a;" * 100_000 + "SFV:SPM;"
        result = classify(make(headers=(("X-Forefront-Antispam-Report", hostile),)))
        # The spam verdict lies past the bound: not read, so not spam.
        assert not result.spam
        early = "SFV:SPM;" + "X:" + "a;" * 100_000
        assert classify(make(headers=(("X-Forefront-Antispam-Report", early),))).spam

    def test_spam_flags_are_named_as_rules_name_them(self) -> None:
        """`flags` lists each flag set by the name rules use for it."""
        result = classify(
            make(headers=(("X-Spam-Flag", "YES"), ("Precedence", "bulk"), ("X-Autoreply", "yes")))
        )
        assert result.flags == ("auto-reply", "bulk", "spam")


def test_a_multipart_report_without_report_type_or_status_part_is_a_delivery_report() -> None:
    """A mail system's multipart/report naming no report-type is a bounce; a person's is not."""
    report = parse_email(
        b"From: Mail Delivery System <Mail.Delivery.System@mx.example>\r\n"
        b"Subject: Delivery status notification\r\nMessage-ID: <r1@mx.example>\r\n"
        b'Content-Type: multipart/report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n550 5.1.1 <gone@x.example>\r\n--b--\r\n"
    )
    receipt = parse_email(
        b"From: Bob <bob@x.example>\r\nSubject: Read: help\r\nMessage-ID: <r2@x.example>\r\n"
        b'Content-Type: multipart/report; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nRead.\r\n"
        b"--b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Disposition: manual-action/MDN-sent-manually; displayed\r\n--b--\r\n"
    )
    assert classify(report).bounce_kind == "delivery-report"
    assert classify(receipt).bounce_kind == ""


def test_hotmails_complaint_without_report_type_is_a_feedback_report() -> None:
    """Hotmail's older complaint shape (multipart/mixed, our message inside) is an ARF report."""

    def complaint(subject: bytes) -> bytes:
        return (
            b"From: staff@hotmail.com\r\nSubject: " + subject + b"\r\n"
            b'Message-ID: <c1@hotmail.com>\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nA user marked this as junk.\r\n"
            b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: support@helpdesk.example\r\nMessage-ID: <ack-1@helpdesk.example>\r\n"
            b"Subject: We received your request\r\n\r\nThanks.\r\n--b--\r\n"
        )

    reported = classify(parse_email(complaint(b"complaint about message from 198.51.100.24")))
    assert reported.bounce_kind == "feedback-report"
    assert reported.bounced_message_id == "ack-1@helpdesk.example"
    assert classify(parse_email(complaint(b"Fwd: our newsletter"))).bounce_kind == ""
