"""Classification for loop safety (adversarial group O)."""

from __future__ import annotations

from typing import Any

import pytest

from halomail.inbound.classify import classify, loop_signature
from halomail.inbound.models import Address, Attachment, Classification, InboundEmail

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
