"""Composing outgoing mail: our Message-IDs, threading and loop headers, no header injection."""

from __future__ import annotations

import email

import pytest

from halomail.inbound.classify import loop_signature
from halomail.outbound.outbox import LOOP_HEADER, Backoff, MessageIdFactory, SenderIdentity, compose
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow

SENDER = SenderIdentity("support@helpdesk.example", "Support Desk", "replies@helpdesk.example")


def _mail(subject: str = "[ID:7] Printer", **changes: object) -> OutboxMail:
    fields: dict[str, object] = {
        "id": 1,
        "message_id": "halomail.7.abc.def@helpdesk.example",
        "to": ("alice@customer.example",),
        "subject": subject,
        "text": "Hello Alice,\n\nlogged.\n",
        "status": OutboxStatus.PENDING,
        "created_at": utcnow(),
        "ticket_id": 7,
        "in_reply_to": "msg-1@customer.example",
        "references": ("msg-0@customer.example", "msg-1@customer.example"),
    }
    fields.update(changes)
    return OutboxMail(**fields)  # type: ignore[arg-type]


def _header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and line[0] not in " \t"]


EXPECTED_HEADERS = [
    "Content-Type",
    "MIME-Version",
    "Content-Transfer-Encoding",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    LOOP_HEADER,
]


def test_an_acknowledgement_carries_thread_loop_and_auto_submitted_headers() -> None:
    """An acknowledgement has our Message-ID, the thread, Auto-Submitted and the loop header."""
    out = compose(_mail(), SENDER, loop_token="tok")
    message = email.message_from_bytes(out.data)
    assert _header_names(out.data) == EXPECTED_HEADERS
    assert message["Message-ID"] == "<halomail.7.abc.def@helpdesk.example>"
    assert message["In-Reply-To"] == "<msg-1@customer.example>"
    assert message["References"] == "<msg-0@customer.example> <msg-1@customer.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message[LOOP_HEADER] == loop_signature("tok", "halomail.7.abc.def@helpdesk.example")
    assert message["From"] == "Support Desk <support@helpdesk.example>"
    assert out.envelope_from == "support@helpdesk.example"
    assert out.recipients == ("alice@customer.example",)
    assert b"\r\n" in out.data
    assert b"\n" not in out.data.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    "subject",
    [
        "Re: hi\r\nBcc: victim@evil.example",
        "Re: hi\nBcc: victim@evil.example",
        "Re: hi\rBcc: victim@evil.example",
        "Re: hi\u2028Bcc: victim@evil.example",
        "Re: caf\u00e9\r\nBcc: victim@evil.example",
    ],
)
def test_l1_crlf_in_an_echoed_subject_cannot_add_a_header(subject: str) -> None:
    """L1: a subject holding CR/LF yields exactly the expected header set and no Bcc."""
    out = compose(_mail(subject=subject), SENDER, loop_token="tok")
    assert _header_names(out.data) == EXPECTED_HEADERS
    message = email.message_from_bytes(out.data)
    assert message["Bcc"] is None
    decoded = str(email.header.make_header(email.header.decode_header(message["Subject"])))
    assert "Bcc: victim@evil.example" in decoded  # kept as text, on the one Subject line


def test_a_mail_with_html_is_multipart_alternative_text_first() -> None:
    """With an HTML body the mail is multipart/alternative: text part, then HTML, both UTF-8."""
    out = compose(
        _mail(text="Hello Zoë,\n", html="<p>Hello Zo&euml;,</p><table><tr><td>7</td></tr></table>"),
        SENDER,
        loop_token="tok",
    )
    message = email.message_from_bytes(out.data)
    assert message.get_content_type() == "multipart/alternative"
    parts = message.get_payload()
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[0].get_payload(decode=True).decode("utf-8") == "Hello Zoë,\r\n"
    assert parts[1].get_payload(decode=True).decode("utf-8").startswith("<p>Hello Zo&euml;,</p>")
    assert message["Auto-Submitted"] == "auto-replied"
    assert "Content-Transfer-Encoding" not in _header_names(out.data)


def test_crlf_in_a_display_name_cannot_add_a_header() -> None:
    """A sender display name with CR/LF stays inside the From header."""
    sender = SenderIdentity("support@helpdesk.example", "Support\r\nBcc: x@evil.example")
    out = compose(_mail(), sender, loop_token="tok")
    assert "Bcc" not in _header_names(out.data)


def test_our_message_ids_are_recognised_and_forgeries_are_not() -> None:
    """Ids we made verify with our token; a look-alike or another token's id does not."""
    ours = MessageIdFactory("secret-token", "helpdesk.example")
    theirs = MessageIdFactory("other-token", "helpdesk.example")
    mid = ours.new(42)
    assert mid.startswith("halomail.42.")
    assert mid.endswith("@helpdesk.example")
    assert ours.is_ours(mid)
    assert not theirs.is_ours(mid)
    assert not ours.is_ours("halomail.42.0000000000000000.000000000000@helpdesk.example")
    assert not ours.is_ours("someone@example.com")
    assert ours.new(42) != mid


def test_backoff_grows_and_is_capped() -> None:
    """Retry delays double from the base and never exceed the cap (jitter within 20%)."""
    backoff = Backoff(base_seconds=60, cap_seconds=600)
    assert 48 <= backoff.delay(1).total_seconds() <= 72
    assert 96 <= backoff.delay(2).total_seconds() <= 144
    assert backoff.delay(20).total_seconds() <= 720


def test_the_body_is_readable_quoted_printable_utf8() -> None:
    """The text body is UTF-8 in quoted-printable and decodes back to the exact text."""
    text = "Hello Zoë,\n\nyour ticket is logged.\n"
    out = compose(_mail(text=text), SENDER, loop_token="tok")
    message = email.message_from_bytes(out.data)
    assert message["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.get_content_charset() == "utf-8"
    assert message.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n") == text
