"""Issue 15, points 3 and 4: bounces, delivery reports per recipient, abuse reports.

Each shape of bounce real servers send has one small fixture in ``tests/bounces/`` (our
own bytes, modelled on what the server writes) and a case below saying what it must be
read as. Then, through ``MailProcessor`` on a real Maildir and a real SQLite file, what a
user sees: a delay blocks nothing, a permanent failure blocks only the recipient that
failed and only for a while, a person's reply clears the block, an unmatched bounce is
ignored (or what ``unmatched_bounces`` says), and an abuse report stops mail to whoever
complained.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.config import load_config
from halomail.errors import ConfigError
from halomail.inbound.classify import classify
from halomail.inbound.dsn import MAX_RECIPIENTS, MAX_TEXT_CHARS, read_report, ses_notification
from halomail.inbound.parse import parse_email
from halomail.pipeline.acknowledge import UNDELIVERABLE
from halomail.templates.render import MessageKind
from halomail.tickets.models import ActionKind
from tests.conftest import make_email
from tests.maildesk import Desk

BOUNCES = Path(__file__).parent / "bounces"
ALICE = "Alice Martin <alice@customer.example>"
BOB = "bob@customer.example"

# file → (kind, bounced Message-ID, [(recipient, action, status)])
SHAPES: dict[str, tuple[str, str | None, list[tuple[str, str, str]]]] = {
    "mailer-daemon-null-address.eml": (
        "delivery-report",
        "halomail.31.aa11bb22cc33dd44.ee55ff660011@helpdesk.example",
        [("kim.lee@example.com", "failed", "5.1.1")],
    ),
    "mailer-daemon-without-domain.eml": (
        "delivery-report",
        "halomail.32.0123456789abcdef.fedcba987654@helpdesk.example",
        [("lou.park@example.org", "failed", "5.1.1")],
    ),
    "report-without-report-type.eml": (
        "delivery-report",
        "halomail.33.1122334455667788.99aabbccddee@helpdesk.example",
        [("alice@customer.example", "delivered", "2.0.0"), (BOB, "failed", "5.1.1")],
    ),
    "postfix-delay.eml": (
        "delivery-report",
        "halomail.34.8877665544332211.aabbccddeeff@helpdesk.example",
        [("alice@customer.example", "delayed", "4.4.1")],
    ),
    "exim-delay.eml": (
        "delivery-report",
        "halomail.35.0f0e0d0c0b0a0908.070605040302@helpdesk.example",
        [("max.roe@example.org", "delayed", "4.3.0")],
    ),
    "exchange-ndr-text.eml": (
        "delivery-report",
        "halomail.36.1a2b3c4d5e6f7a8b.9c0d1e2f3a4b@helpdesk.example",
        [("nora.fox@customer.example", "failed", "5.1.1")],
    ),
    "arf-abuse-report.eml": (
        "feedback-report",
        "halomail.37.abcdefabcdef0011.223344556677@helpdesk.example",
        [("pat.kim@mailbox.example", "complained", "")],
    ),
    "mailman-moderation.eml": ("list-error", None, []),
    "listserv-rejected.eml": (
        "list-error",
        "halomail.39.1111222233334444.555566667777@helpdesk.example",
        [],
    ),
    "google-groups-rejected.eml": ("list-error", None, []),
    # Shapes sisimai's set of real bounces showed us missing (our own bytes again).
    "sendmail-local-mailer-daemon-path.eml": (
        "delivery-report",
        "halomail.42.1234abcd5678ef90.aabbccddeeff@helpdesk.example",
        [("ken.ito@carrier.example", "failed", "5.0.0")],
    ),
    "interscan-returned-message.eml": (
        "delivery-report",
        "halomail.43.aa00bb11cc22dd33.ee44ff556677@helpdesk.example",
        [("mia.sato@customer.example", "failed", "5.1.1")],
    ),
    "sms-gateway-post-master.eml": (
        "delivery-report",
        "halomail.44.0011223344556677.8899aabbccdd@helpdesk.example",
        [],
    ),
    "dragonfly-error-delivering.eml": (
        "delivery-report",
        "halomail.45.fedcba9876543210.0123456789ab@helpdesk.example",
        [("rin.abe@example.jp", "failed", "5.0.0")],
    ),
    "sendmail-transcript.eml": (
        "delivery-report",
        "halomail.46.1029384756abcdef.a1b2c3d4e5f6@helpdesk.example",
        [("tom.kay@example.net", "failed", "5.0.0")],
    ),
    "gmx-quoted-recipient.eml": (
        "delivery-report",
        "halomail.47.5566778899aabbcc.ddeeff001122@helpdesk.example",
        [("ida.berg@gmx.example", "failed", "5.1.1")],
    ),
    "aol-dsn-blocks-without-blank-line.eml": (
        "delivery-report",
        "halomail.48.13579bdf2468ace0.0a1b2c3d4e5f@helpdesk.example",
        [("amy.cole@aol.example", "failed", "5.2.2"), ("ben.cole@aol.example", "failed", "5.1.1")],
    ),
    "dsn-final-recipient-not-an-address.eml": (
        "delivery-report",
        "halomail.49.24680ace13579bdf.f0e1d2c3b4a5@helpdesk.example",
        [("lea.moss@example.org", "failed", "5.0.0"), ("max.moss@example.org", "failed", "5.1.1")],
    ),
    "majordomo-non-member.eml": (
        "list-error",
        "halomail.41.abab1212cdcd3434.efef5656a1a1@helpdesk.example",
        [],
    ),
    # Amazon SES's notifications as an SNS topic's email subscription sends them: the
    # JSON alone (folded inside a string by SMTP's line limit), or in SNS's envelope.
    "ses-sns-bounce.eml": (
        "delivery-report",
        "halomail.50.5050505050505050.505050505050@helpdesk.example",
        [("jon.hale@customer.example", "failed", "5.1.1")],
    ),
    "ses-sns-json-complaint.eml": (
        "feedback-report",
        "halomail.51.5151515151515151.515151515151@helpdesk.example",
        [("eva.moss@customer.example", "complained", "")],
    ),
    "ses-sns-delivery.eml": (
        "delivery-report",
        "halomail.52.5252525252525252.525252525252@helpdesk.example",
        [("kai.lund@customer.example", "delivered", "2.0.0")],
    ),
    # KDDI (au) returns the message from no-reply@; fml alerts its admin to a loop.
    "kddi-no-reply-returned-message.eml": (
        "delivery-report",
        "halomail.53.5353535353535353.535353535353@helpdesk.example",
        [("yui.mori@x1234567890.au.example.jp", "failed", "")],
    ),
    "fml-loop-alert.eml": (
        "list-error",
        "halomail.54.5454545454545454.545454545454@helpdesk.example",
        [],
    ),
    # A mail system's subject without a report part: Postfix's delay warning, Exim 3's
    # failure (its "unknown host" a permanent failure).
    "postfix-delayed-mail-subject.eml": (
        "delivery-report",
        "halomail.55.5555555555555555.555555555555@helpdesk.example",
        [("lina.berg@customer.example", "delayed", "4.4.1")],
    ),
    "exim3-mail-failed-returning.eml": (
        "delivery-report",
        "halomail.56.5656565656565656.565656565656@helpdesk.example",
        [("omar.sved@nohost.example", "failed", "5.0.0")],
    ),
}


def test_every_fixture_has_a_case() -> None:
    """Each bounce fixture is named in SHAPES or is the forwarded one (no fixture untested)."""
    names = {p.name for p in BOUNCES.glob("*.eml")}
    assert names == {*SHAPES, "forwarded-by-a-person.eml"}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_of_bounce_is_recognised_and_read_per_recipient(name: str) -> None:
    """The fixture is a bounce of its kind, never acknowledged, naming the returned mail
    and each recipient with its action and status."""
    kind, bounced, recipients = SHAPES[name]
    email = parse_email((BOUNCES / name).read_bytes())
    classification = classify(email)
    assert (classification.bounce, classification.bounce_kind) == (True, kind)
    assert classification.may_acknowledge is False
    assert classification.bounced_message_id == bounced
    report = read_report(email, classification.bounce_kind)
    assert [(r.address, r.action, r.status) for r in report.recipients] == recipients


def test_a_person_forwarding_a_bounce_to_ask_for_help_is_still_a_person() -> None:
    """A forwarded bounce (attached) from a customer is her email, and may be answered."""
    email = parse_email((BOUNCES / "forwarded-by-a-person.eml").read_bytes())
    classification = classify(email)
    assert classification.bounce is False
    assert classification.may_acknowledge is True


def test_a_person_writing_about_a_mailing_list_is_not_a_list_error() -> None:
    """Words like "rejected" and "not a member" from a person do not make a list error."""
    email = parse_email(
        make_email(
            subject="Message rejected by the staff list",
            body="I am not a member of the staff list, so my post was rejected.\n",
        )
    )
    assert classify(email).bounce is False


def test_the_text_scan_of_a_huge_bounce_is_bounded() -> None:
    """A bounce with a million-line text and thousands of addresses is read within its
    bounds: at most MAX_RECIPIENTS recipients, none past MAX_TEXT_CHARS."""
    lines = "".join(f"<user{n}@example.com>:\n550 5.1.1 no such user\n\n" for n in range(20_000))
    raw = make_email(
        sender="MAILER-DAEMON@mx.example",
        subject="failure notice",
        headers={"Return-Path": "<>"},
        body=lines + ("x" * 70 + "\n") * 20_000,
    )
    email = parse_email(raw)
    report = read_report(email)
    assert 0 < len(report.recipients) <= MAX_RECIPIENTS
    last = max(int(r.address[4:].split("@")[0]) for r in report.recipients)
    assert len("".join(f"<user{n}@example.com>:\n" for n in range(last))) < MAX_TEXT_CHARS
    assert all(r.permanent for r in report.recipients)


# -- through the processor ---------------------------------------------------------------


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    """A Maildir processed into a real SQLite file, on a hand-moved clock."""
    desk = Desk(tmp_path)
    yield desk
    desk.close()


def _dsn(our_id: str, *recipients: tuple[str, str, str], sender: str = "") -> bytes:
    """A Postfix-style RFC 3464 report on our mail ``our_id`` with these recipients."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {address}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {status} (as the server said)\r\n\r\n"
        for address, action, status in recipients
    )
    return (
        f"From: {sender or 'Mail Delivery System <MAILER-DAEMON@mx.customer.example>'}\r\n"
        "To: support@helpdesk.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{abs(hash((our_id, recipients)))}@mx.customer.example>\r\n"
        "Return-Path: <>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nDelivery report.\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"{blocks}--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{our_id}>\r\n"
        "Subject: [ID:1] Printer\r\n\r\n--r--\r\n"
    ).encode()


def _new(sender: str, n: int) -> bytes:
    """A new request from ``sender``, the n-th of the test."""
    return make_email(sender=sender, subject=f"Request {n}", message_id=f"<req-{n}@c.example>")


def _ticket_with_mail_to_alice_and_bob(desk: Desk) -> tuple[int, str]:
    """A ticket from Alice (Bob in Cc), acknowledged, then an update mailed to both."""
    desk.deliver(make_email(sender=ALICE, headers={"Cc": BOB}))
    ((_, _, ticket_id),) = desk.run()
    assert ticket_id is not None
    notice = desk.processor.notifier.ticket_email(
        ticket_id, MessageKind.TICKET_UPDATE, note="On its way.", to=["alice@customer.example", BOB]
    )
    assert notice.queued is not None
    desk.processor.send_outbox()
    return ticket_id, notice.queued.message_id


def _acknowledged(desk: Desk, sender: str, n: int) -> tuple[bool, str | None]:
    """Deliver a new request from ``sender``: whether it was acknowledged, and why not."""
    before = len(desk.transport.sent)
    desk.deliver(_new(sender, n))
    ((outcome, reason, _),) = desk.run()
    assert outcome == "created"
    return len(desk.transport.sent) > before, reason


def test_a_dsn_delay_blocks_no_acknowledgement(desk: Desk) -> None:
    """A delay for Alice adds a private note to the ticket and blocks nothing: her next
    request is acknowledged."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    desk.deliver(_dsn(ours, ("alice@customer.example", "delayed", "4.4.1")))
    assert desk.run() == [("updated", "bounce", ticket_id)]
    note = desk.repository.list_actions(ticket_id)[-1]
    assert (note.kind, note.public) == (ActionKind.BOUNCE, False)
    assert "alice@customer.example: delayed (4.4.1)" in note.body
    assert "nothing blocked" in note.body
    assert _acknowledged(desk, ALICE, 1) == (True, None)


def test_a_5_1_1_for_one_of_two_recipients_blocks_only_that_one_and_the_block_expires(
    desk: Desk,
) -> None:
    """Bob failed with 5.1.1, Alice got it: Bob's requests go unacknowledged for 30 days,
    Alice's are acknowledged, and after the 30 days Bob's are again."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    desk.deliver(
        _dsn(ours, ("alice@customer.example", "delivered", "2.0.0"), (BOB, "failed", "5.1.1"))
    )
    assert desk.run() == [("updated", "bounce", ticket_id)]
    note = desk.repository.list_actions(ticket_id)[-1].body
    assert f"{BOB}: failed (5.1.1)" in note
    assert "no acknowledgements to it until 2026-12-31" in note
    assert "alice@customer.example: delivered (2.0.0)" in note

    assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
    assert _acknowledged(desk, ALICE, 2) == (True, None)
    desk.clock.now += dt.timedelta(days=29)
    assert _acknowledged(desk, BOB, 3) == (False, "undeliverable-sender")
    desk.clock.now += dt.timedelta(days=1, minutes=1)
    assert _acknowledged(desk, BOB, 4) == (True, None)


def test_mail_from_a_blocked_address_clears_its_block(desk: Desk) -> None:
    """Bob's reply on the ticket proves his mailbox works: the mark is cleared and his
    next request is acknowledged."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    desk.deliver(_dsn(ours, (BOB, "failed", "5.1.1")))
    desk.run()
    assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
    desk.deliver(
        make_email(
            sender=BOB,
            subject=f"RE: [ID:{ticket_id}] Printer is jammed",
            message_id="<bob-reply@c.example>",
            headers={"In-Reply-To": f"<{ours}>"},
            body="I can read you again.\n",
        )
    )
    assert desk.run() == [("updated", None, ticket_id)]
    assert desk.repository.get_state(UNDELIVERABLE + BOB) == ""
    assert _acknowledged(desk, BOB, 2) == (True, None)


def test_a_mark_written_by_the_previous_version_expires_the_same_way(desk: Desk) -> None:
    """A 0.2 mark (its value only the time it was set) blocks for 30 days, then not."""
    with desk.repository.transaction():
        set_at = desk.clock.now - dt.timedelta(days=29)
        desk.repository.set_state(UNDELIVERABLE + BOB, set_at.isoformat())
    assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
    desk.clock.now += dt.timedelta(days=2)
    assert _acknowledged(desk, BOB, 2) == (True, None)


def test_undeliverable_days_sets_how_long_a_block_lasts(tmp_path: Path) -> None:
    """With undeliverable_for at 2 days, Bob is acknowledged again on the third day."""
    desk = Desk(tmp_path, undeliverable_for=dt.timedelta(days=2))
    try:
        _, ours = _ticket_with_mail_to_alice_and_bob(desk)
        desk.deliver(_dsn(ours, (BOB, "failed", "5.1.1")))
        desk.run()
        assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
        desk.clock.now += dt.timedelta(days=2)
        assert _acknowledged(desk, BOB, 2) == (True, None)
    finally:
        desk.close()


def test_a_failure_given_up_on_with_a_4xx_status_blocks_nothing(desk: Desk) -> None:
    """A "failed" with 4.4.7 (the queue gave up on a temporary error) is noted, not a
    permanent failure: Bob is still acknowledged."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    desk.deliver(_dsn(ours, (BOB, "failed", "4.4.7")))
    assert desk.run() == [("updated", "bounce", ticket_id)]
    assert f"{BOB}: failed (4.4.7)" in desk.repository.list_actions(ticket_id)[-1].body
    assert _acknowledged(desk, BOB, 1) == (True, None)


def test_a_bounce_from_mailer_daemon_without_an_address_is_attached_not_quarantined(
    desk: Desk,
) -> None:
    """``From: MAILER-DAEMON <>`` has no sender address; as a bounce it needs none."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    desk.deliver(_dsn(ours, (BOB, "failed", "5.1.1"), sender="MAILER-DAEMON <>"))
    assert desk.run() == [("updated", "bounce", ticket_id)]
    assert desk.repository.list_quarantine() == []


def test_an_unmatched_bounce_is_ignored_and_logged_with_the_bounced_message_id(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """Backscatter is ignored as bounce-unmatched: no ticket, no quarantine, no mail, one
    INFO line naming the Message-ID it bounced."""
    caplog.set_level(logging.INFO, logger="halomail.pipeline.decide")
    desk.deliver((BOUNCES / "mailer-daemon-null-address.eml").read_bytes())
    assert desk.run() == [("ignored", "bounce-unmatched", None)]
    assert desk.repository.list_tickets() == []
    assert desk.repository.list_quarantine() == []
    assert desk.transport.sent == []
    assert "halomail.31.aa11bb22cc33dd44.ee55ff660011@helpdesk.example" in caplog.text


def test_unmatched_bounces_may_be_quarantined(tmp_path: Path) -> None:
    """unmatched_bounces = "quarantine" keeps the bounce aside with its reason."""
    desk = Desk(tmp_path, unmatched_bounces="quarantine")
    try:
        desk.deliver((BOUNCES / "mailer-daemon-without-domain.eml").read_bytes())
        assert desk.run() == [("quarantined", "bounce-unmatched", None)]
        (entry,) = desk.repository.list_quarantine()
        assert entry.reason == "bounce-unmatched"
    finally:
        desk.close()


def test_unmatched_bounces_may_open_a_ticket_never_acknowledged(tmp_path: Path) -> None:
    """unmatched_bounces = "ticket" opens a ticket for it, even from ``MAILER-DAEMON <>``,
    and sends nothing."""
    desk = Desk(tmp_path, unmatched_bounces="ticket")
    try:
        desk.deliver((BOUNCES / "mailer-daemon-null-address.eml").read_bytes())
        ((outcome, reason, ticket_id),) = desk.run()
        assert (outcome, reason) == ("created", "bounce-unmatched")
        ticket = desk.repository.get_ticket(ticket_id or 0)
        assert ticket is not None
        assert ticket.summary == "failure notice"
        assert desk.transport.sent == []
        assert desk.outbox() == []
    finally:
        desk.close()


def _arf(our_id: str, complainant: str) -> bytes:
    """An abuse feedback report on our mail ``our_id``, from ``complainant``'s provider."""
    fixture = (BOUNCES / "arf-abuse-report.eml").read_bytes()
    fixture = fixture.replace(b"pat.kim@mailbox.example", complainant.encode())
    old = b"halomail.37.abcdefabcdef0011.223344556677@helpdesk.example"
    return fixture.replace(old, our_id.encode())


def test_an_abuse_report_is_a_private_note_and_stops_mail_to_the_complainant(
    desk: Desk,
) -> None:
    """An ARF report on our mail to Bob is attached as a private note, is never answered,
    and Bob's requests are no longer acknowledged; Alice's still are."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    sent = len(desk.transport.sent)
    desk.deliver(_arf(ours, BOB))
    assert desk.run() == [("updated", "bounce", ticket_id)]
    assert len(desk.transport.sent) == sent
    note = desk.repository.list_actions(ticket_id)[-1]
    assert (note.kind, note.public) == (ActionKind.BOUNCE, False)
    assert note.body.startswith(f"Abuse report (abuse):\n- {BOB}: complained")
    assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
    assert _acknowledged(desk, ALICE, 2) == (True, None)


def test_an_unmatched_abuse_report_is_ignored_like_an_unmatched_bounce(desk: Desk) -> None:
    """An abuse report on mail we never sent is ignored, and blocks no one."""
    desk.deliver((BOUNCES / "arf-abuse-report.eml").read_bytes())
    assert desk.run() == [("ignored", "bounce-unmatched", None)]
    assert _acknowledged(desk, "pat.kim@mailbox.example", 1) == (True, None)


def _ses(notification: dict[str, object]) -> bytes:
    """``notification`` as an SNS topic's email subscription mails it."""
    return (
        "From: AWS Notifications <no-reply@sns.amazonaws.com>\r\n"
        "To: support@helpdesk.example\r\nSubject: AWS Notification Message\r\n"
        f"Message-ID: <sns-{abs(hash(str(notification)))}@eu-west-1.amazonses.com>\r\n"
        "Content-Type: text/plain; charset=UTF-8\r\n\r\n"
        f"{json.dumps(notification)}\r\n\r\n--\r\nIf you wish to stop receiving notifications"
        " from this topic, please click or visit the link below to unsubscribe:\r\n"
    ).encode()


def _ses_bounce(ours: str, address: str, bounce_type: str, status: str) -> dict[str, object]:
    """An SES bounce notification of our mail ``ours`` to ``address``."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bouncedRecipients": [{"emailAddress": address, "status": status}],
        },
        "mail": {"headers": [{"name": "Message-ID", "value": f"<{ours}>"}]},
    }


def test_an_ses_bounce_from_sns_blocks_the_address_it_names(desk: Desk) -> None:
    """An SES permanent bounce of our mail to Bob, emailed by SNS, is a private note on
    the ticket and stops acknowledgements to Bob; a transient one to Alice blocks
    nothing, and a complaint stops mail to whoever complained."""
    ticket_id, ours = _ticket_with_mail_to_alice_and_bob(desk)
    sent = len(desk.transport.sent)
    desk.deliver(_ses(_ses_bounce(ours, BOB, "Permanent", "5.1.1")))
    desk.deliver(_ses(_ses_bounce(ours, "alice@customer.example", "Transient", "")))
    assert desk.run() == [("updated", "bounce", ticket_id)] * 2
    assert len(desk.transport.sent) == sent  # never answered
    notes = [a.body for a in desk.repository.list_actions(ticket_id)[-2:]]
    assert f"{BOB}: failed (5.1.1)" in notes[0]
    assert "alice@customer.example: failed (4.0.0)" in notes[1]
    assert _acknowledged(desk, BOB, 1) == (False, "undeliverable-sender")
    assert _acknowledged(desk, ALICE, 2) == (True, None)

    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "alice@customer.example"}]},
        "mail": {"commonHeaders": {"messageId": f"<{ours}>"}},
    }
    desk.deliver(_ses(complaint))
    assert desk.run() == [("updated", "bounce", ticket_id)]
    assert _acknowledged(desk, ALICE, 3) == (False, "undeliverable-sender")


@pytest.mark.parametrize(
    "text",
    [
        "You have chosen to subscribe to the topic arn:aws:sns:eu-west-1:1:helpdesk.",
        '{"notificationType": "Bounce", "bounce": ',  # cut short
        '{"notificationType": "Received", "mail": {}}',  # not a delivery report
        '{"Type": "Notification", "Message": "not json"}',
        "[" * 100_000,  # deeper than the JSON parser goes
        '{"notificationType": "Bounce", "x": "' + "a" * 300_000 + '"}',  # past the cap
    ],
)
def test_other_mail_from_sns_is_no_bounce(text: str) -> None:
    """SNS's subscription confirmation, or JSON that is cut, of another kind, nested too
    deep or longer than :data:`MAX_SES_CHARS`, is an ordinary email from a no-reply
    sender, read within its bound."""
    email = parse_email(
        "From: no-reply@sns.amazonaws.com\r\nTo: support@helpdesk.example\r\n"
        f"Subject: AWS Notification Message\r\n\r\n{text}\r\n".encode()
    )
    assert ses_notification(email) is None
    classification = classify(email)
    assert (classification.bounce, classification.no_reply_sender) == (False, True)


def test_an_ses_notification_from_another_sender_is_no_bounce() -> None:
    """The JSON counts only from SNS: a person pasting one asks for help."""
    notification = _ses_bounce("halomail.1.x@helpdesk.example", BOB, "Permanent", "5.1.1")
    raw = _ses(notification).replace(b"no-reply@sns.amazonaws.com", b"ops@customer.example")
    email = parse_email(raw)
    assert ses_notification(email) is None
    assert classify(email).bounce is False


def test_a_list_managers_error_is_never_acknowledged(desk: Desk) -> None:
    """Mailman's "awaits moderator approval" opens nothing and answers nothing."""
    desk.deliver((BOUNCES / "mailman-moderation.eml").read_bytes())
    assert desk.run() == [("ignored", "bounce-unmatched", None)]
    assert desk.transport.sent == []


def test_a_forwarded_bounce_from_a_person_is_a_new_acknowledged_ticket(desk: Desk) -> None:
    """Alice forwarding a bounce to ask for help gets a ticket and an acknowledgement."""
    desk.deliver((BOUNCES / "forwarded-by-a-person.eml").read_bytes())
    assert [o for o, _, _ in desk.run()] == ["created"]
    assert desk.sent_to() == ["alice@customer.example"]


def test_the_processing_keys_load_and_bad_values_name_their_key(tmp_path: Path) -> None:
    """[processing] unmatched_bounces and undeliverable_days load; a wrong value is an
    error naming the key."""
    path = tmp_path / "halomail.toml"
    (tmp_path / "Maildir").mkdir()
    base = """
        [outgoing]
        transport = "memory"
        from_address = "support@helpdesk.example"

        [[mailboxes]]
        name = "Support"
        connection = "maildir"
        path = "Maildir"

        [processing]
        """
    path.write_text(
        textwrap.dedent(base) + 'unmatched_bounces = "ticket"\nundeliverable_days = 7\n'
    )
    processing = load_config(path).processing
    assert (processing.unmatched_bounces, processing.undeliverable_days) == ("ticket", 7)
    path.write_text(textwrap.dedent(base) + 'unmatched_bounces = "drop"\n')
    with pytest.raises(ConfigError, match=r"processing\.unmatched_bounces"):
        load_config(path)


def test_a_report_part_folded_over_thousands_of_lines_is_read_within_its_bound() -> None:
    """A delivery-status part of 20,000 folded lines is read (only its first
    MAX_REPORT_BYTES), the recipient found and the diagnostic cut short."""
    folded = "".join(" more\r\n" for _ in range(20_000))
    raw = _dsn("x@helpdesk.example", (BOB, "failed", "5.1.1")).replace(
        b"(as the server said)\r\n", b"(as the server said)\r\n" + folded.encode(), 1
    )
    report = read_report(parse_email(raw))
    ((recipient),) = report.recipients
    assert (recipient.address, recipient.action, recipient.status) == (BOB, "failed", "5.1.1")
    assert len(recipient.diagnostic) <= 300


def test_a_list_managers_request_to_its_administrator_is_not_a_list_error() -> None:
    """Mailman asking the list's administrator to approve a post is work for a person,
    not an answer to our mail: it is not a bounce."""
    email = parse_email(
        make_email(
            sender="staff-admin@lists.customer.example",
            subject="Staff post from someone@else.example requires approval",
            headers={"List-Id": "<staff.lists.customer.example>"},
            body="As list administrator, your authorization is requested for the\n"
            "following mailing list posting:\n\n    Reason:  Post to moderated list\n",
        )
    )
    assert classify(email).bounce is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "Unable to find user: <sam@example.net>\nPlease make sure the address is correct.\n",
            ("sam@example.net", "failed", ""),
        ),
        (
            "Your message\n\n  Subject: Hello\n\ndid not reach the following recipient(s):\n\n"
            "ann@example.net on Mon, 1 Dec 2026 10:00:00 +0100\n"
            "    The recipient name is not recognized\n",
            ("ann@example.net", "failed", "5.0.0"),
        ),
        (
            "Sorry, we were unable to deliver your message to the following address.\n\n"
            "<ola@example.net>:\n550: <ola@example.net>: User unknown\n",
            ("ola@example.net", "failed", "5.0.0"),
        ),
        ("   * kai@example.net\n   mailbox is full\n", ("kai@example.net", "failed", "")),
        ("kai@example.net [User unknown]\n", ("kai@example.net", "failed", "5.0.0")),
        ("Unknown user: kai@example.net\n", ("kai@example.net", "failed", "5.0.0")),
        (
            "<kai@example.net> (expanded from\n    <sales@example.net>): host mx said: 550 5.1.1\n",
            ("kai@example.net", "failed", "5.1.1"),
        ),
        (
            "This is a warning message only.\n\nMessage delivery to 'joe@example.net' delayed\n"
            "SMTP module(domain example.net) reports:\n relay.example.net: no response\n",
            ("joe@example.net", "delayed", ""),
        ),
        (
            "<eve@example.net>: host mx.example.net[192.0.2.7] said: 550 5.1.1\n"
            "    <eve@example.net>: Recipient address rejected (in reply to RCPT TO command)\n",
            ("eve@example.net", "failed", "5.1.1"),
        ),
    ],
)
def test_the_text_of_older_bounces_names_the_recipient(
    body: str, expected: tuple[str, str, str]
) -> None:
    """Text-only bounces of older servers name their recipient, its action and status."""
    raw = make_email(sender="MAILER-DAEMON@mx.example", subject="Returned mail", body=body)
    email = parse_email(raw)
    assert classify(email).bounce is True
    (recipient,) = read_report(email).recipients
    assert (recipient.address, recipient.action, recipient.status) == expected


def test_every_complainant_of_an_abuse_report_is_named() -> None:
    """A feedback report may repeat Original-Rcpt-To, once per person who complained."""
    raw = _arf("halomail.50.aa@helpdesk.example", "pat.kim@mailbox.example").replace(
        b"Original-Rcpt-To: <pat.kim@mailbox.example>",
        b"Original-Rcpt-To: <pat.kim@mailbox.example>\r\n"
        b"Original-Rcpt-To: <lou.kim@mailbox.example>",
    )
    email = parse_email(raw)
    report = read_report(email, classify(email).bounce_kind)
    assert [(r.address, r.action) for r in report.recipients] == [
        ("pat.kim@mailbox.example", "complained"),
        ("lou.kim@mailbox.example", "complained"),
    ]


def test_a_mail_admin_writing_from_postmaster_about_a_failure_is_a_person() -> None:
    """ "550" in a new email from postmaster@ is a question for the helpdesk, not a bounce:
    only in reply to our mail does a daemon's failure text make one."""
    raw = make_email(
        sender="postmaster@customer.example",
        subject="Our mail to you fails",
        body="Hello,\n550 5.7.1 is what your server answers us since Monday. Can you check?\n",
    )
    assert classify(parse_email(raw)).bounce is False


def test_an_action_written_failure_reads_as_failed() -> None:
    """Some servers write "Action: failure": it is RFC 3464's "failed"."""
    raw = _dsn("x@helpdesk.example", (BOB, "Failure", "5.7.1"))
    (recipient,) = read_report(parse_email(raw)).recipients
    assert (recipient.action, recipient.permanent) == ("failed", True)


def test_the_postmaster_named_in_a_bounces_text_is_not_a_recipient() -> None:
    """ "Write to <postmaster@…>" on a line of its own is advice, not a failed recipient."""
    raw = make_email(
        sender="MAILER-DAEMON@mx.example",
        subject="failure notice",
        body="<dan@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "For help, write to\n<postmaster@mx.example>\n",
    )
    report = read_report(parse_email(raw))
    assert [(r.address, r.status) for r in report.recipients] == [("dan@example.net", "5.1.1")]
