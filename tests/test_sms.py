"""Email to SMS: phone numbers, addresses, shortening, PIN placement, and a real send."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from email import message_from_bytes, policy

import pytest

from halomail.backends.smtp import SmtpTransport
from halomail.outbound.outbox import compose
from halomail.outbound.sms import (
    SmsMessage,
    SmsSettings,
    compose_sms,
    normalize_phone,
    shorten,
    sms_address,
    subscriber_addresses,
)
from halomail.tickets.models import OutboxMail, OutboxStatus
from tests.servers.smtp import (
    SmtpServer,
)

UK = SmsSettings(
    provider_domain="sms.example",
    from_address="alerts@helpdesk.example",
    display_name="Helpdesk",
    default_country_code="44",
)
LONG = (
    "Ticket 4711 (Printer on floor 3 is jammed) was updated by Jo Bloggs: the engineer "
    "replaced the fuser unit and ran fifty test pages without a jam; please confirm that "
    "printing works for you and we will close the ticket."
)


class TestNormalizePhone:
    @pytest.mark.parametrize(
        ("raw", "country", "expected"),
        [
            ("+44 7700 900123", "", "447700900123"),
            ("+44 7700 900123", "1", "447700900123"),
            ("07700 900123", "44", "447700900123"),
            ("07700-900-123", "44", "447700900123"),
            ("+44 (0)7700 900123", "", "447700900123"),
            ("0044 7700 900123", "", "447700900123"),
            ("(555) 010-9999", "1", "15550109999"),
            ("1 (555) 010-9999", "1", "15550109999"),
            ("555.010.9999", "1", "15550109999"),
            ("  +33 6 12 34 56 78 ", "44", "33612345678"),
            ("+49\u00a0151\u00a012345678", "", "4915112345678"),
        ],
    )
    def test_accepted_forms(self, raw: str, country: str, expected: str) -> None:
        """Each usual way of writing a number becomes the same international digits."""
        assert normalize_phone(raw, default_country_code=country) == expected

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("", "the phone number is empty"),
            ("   ", "the phone number is empty"),
            ("07700 9OO123", "contains letters"),
            ("call me", "contains letters"),
            ("+44 7700 900123\r\n", "line break or control character"),
            ("+44 7700\n900123", "line break or control character"),
            ("alice@customer.example", "is an email address, not a phone number"),
            ("+44 1234", "is too short (6 digits with the country code; at least 8)"),
            ("+44 7700 900123 4567", "is too long (16 digits; E.164 allows 15)"),
            ("+44+7700900123", "contains '+', which is not allowed"),
            ("07700#900123", "contains '#', which is not allowed"),
            ("\uff10\uff17\uff17\uff10\uff10 900123", "contains '\uff10', which is not allowed"),
            ("+0 7700 900123", "has no valid country code (it starts with 0)"),
        ],
    )
    def test_refused_with_a_reason(self, raw: str, reason: str) -> None:
        """An invalid number raises ValueError whose message says what is wrong."""
        with pytest.raises(ValueError, match=re.escape(reason)):
            normalize_phone(raw, default_country_code="44")

    def test_a_national_number_needs_a_country_code(self) -> None:
        """Without a default country code a national number is refused, telling how to fix it."""
        with pytest.raises(ValueError, match=r"has no country code: write it as \+<country>"):
            normalize_phone("07700 900123", default_country_code="")


class TestAddresses:
    def test_the_address_is_phone_at_domain(self) -> None:
        """A UK mobile number written nationally becomes 447700900123@sms.example."""
        assert sms_address("07700 900123", UK) == "447700900123@sms.example"

    def test_a_custom_address_format(self) -> None:
        """A provider wanting a prefix gets it from address_format."""
        settings = SmsSettings("gw.example", "a@b.example", address_format="sms+{phone}@{domain}")

        assert sms_address("+1 555 010 9999", settings) == "sms+15550109999@gw.example"

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"provider_domain": "sms example"}, "is not a domain name"),
            ({"provider_domain": "a@sms.example"}, "is not a domain name"),
            ({"address_format": "{domain}"}, "must use {phone}"),
            ({"address_format": "{phone}@{password}"}, "may use only"),
            ({"default_country_code": "+44"}, "1 to 3 digits"),
            ({"pin_placement": "subject"}, "needs the password"),
            ({"pin_placement": "footer", "password": "1"}, "'pin_placement' must be in"),
            ({"max_length": 5}, "'max_length' must be >= 20"),
        ],
    )
    def test_invalid_settings_are_refused(self, fields: dict[str, object], message: str) -> None:
        """Settings that could never make a valid SMS email raise ValueError at once."""
        values: dict[str, object] = {
            "provider_domain": "sms.example",
            "from_address": "alerts@helpdesk.example",
        }
        values.update(fields)
        with pytest.raises(ValueError, match=re.escape(message)):
            SmsSettings(**values)  # type: ignore[arg-type]

    def test_the_pin_is_not_in_the_repr(self) -> None:
        """The provider password never shows in the settings' or the message's repr."""
        settings = SmsSettings(
            "sms.example", "a@b.example", password="8642", pin_placement="subject"
        )
        sms = compose_sms("Hello", "+447700900123", settings)

        assert "8642" not in repr(settings)
        assert "8642" not in repr(sms)

    def test_subscribers_split_into_addresses_and_refusals(self) -> None:
        """Valid numbers become unique addresses in order; invalid ones come back with reasons."""
        addresses, refused = subscriber_addresses(
            ["07700 900123", "+44 7700 900123", "+1 (555) 010-9999", "n/a", "", "0770"], UK
        )

        assert addresses == ("447700900123@sms.example", "15550109999@sms.example")
        assert refused == (
            ("n/a", "the phone number 'n/a' contains letters"),
            ("", "the phone number is empty"),
            (
                "0770",
                "the phone number '0770' is too short (5 digits with the country code; at least 8)",
            ),
        )


class TestShorten:
    def test_short_text_is_only_made_one_line(self) -> None:
        """Whitespace and line breaks collapse to single spaces; nothing is cut."""
        assert shorten("  Printer\r\n\tfixed.\n\nThanks  ", 160) == "Printer fixed. Thanks"

    def test_long_text_is_cut_at_a_word_with_an_ellipsis(self) -> None:
        """Over the limit, the text ends at a word boundary with '…' and fits the limit."""
        result = shorten(LONG, 60)

        assert result == "Ticket 4711 (Printer on floor 3 is jammed) was updated by…"
        assert len(result) <= 60

    def test_a_text_of_exactly_the_limit_is_kept(self) -> None:
        """A text exactly at the limit is not cut."""
        assert shorten("a" * 20, 20) == "a" * 20

    def test_a_long_word_is_cut_mid_word(self) -> None:
        """A text with no space worth cutting at (a long URL) is cut mid-word."""
        assert shorten("see https://example.com/" + "x" * 40, 20) == "see https://example…"

    def test_a_gsm_safe_ellipsis(self) -> None:
        """The cut can be marked with three dots to keep the SMS in the GSM alphabet."""
        assert shorten(LONG, 30, ellipsis="...") == "Ticket 4711 (Printer on..."

    def test_a_limit_too_small_is_refused(self) -> None:
        """A limit that cannot hold the ellipsis and a character raises ValueError."""
        with pytest.raises(ValueError, match="leaves no room"):
            shorten("text", 1)


class TestComposeSms:
    def test_compose_without_pin(self) -> None:
        """The SMS has the gateway address, the subject made one line, and a body within 160."""
        sms = compose_sms(LONG, "07700 900123", UK, subject="Ticket\r\n4711 updated")

        assert sms.phone == "447700900123"
        assert sms.to_address == "447700900123@sms.example"
        assert sms.subject == "Ticket 4711 updated"
        assert sms.body == shorten(LONG, 160)
        assert len(sms.body) <= 160
        assert sms.body.endswith("…")

    def test_pin_as_the_subject(self) -> None:
        """With pin_placement 'subject' the subject is the PIN, the body untouched."""
        settings = SmsSettings(
            "sms.example",
            "a@b.example",
            password="8642",
            pin_placement="subject",
            default_country_code="44",
        )
        sms = compose_sms("Your ticket is closed.", "07700 900123", settings, subject="ignored")

        assert (sms.subject, sms.body) == ("8642", "Your ticket is closed.")

    def test_pin_before_the_body_stays_within_the_limit(self) -> None:
        """With 'body-prefix' the body starts with the PIN and the whole still fits the limit."""
        settings = SmsSettings(
            "sms.example",
            "a@b.example",
            password="8642",
            pin_placement="body-prefix",
            max_length=40,
            default_country_code="44",
        )
        sms = compose_sms(LONG, "07700 900123", settings)

        assert sms.body == "8642 Ticket 4711 (Printer on floor 3 is…"
        assert len(sms.body) <= 40

    def test_an_empty_text_is_refused(self) -> None:
        """An SMS with nothing to say is refused rather than sent blank."""
        with pytest.raises(ValueError, match="the SMS text is empty"):
            compose_sms(" \n\t ", "07700 900123", UK)

    def test_an_invalid_number_is_refused(self) -> None:
        """compose_sms refuses an invalid number with the reason."""
        with pytest.raises(ValueError, match="contains letters"):
            compose_sms("Hello", "ask reception", UK)


def test_an_sms_goes_through_smtp_to_the_gateway_address(
    smtp_server_factory: Callable[..., SmtpServer],
) -> None:
    """An SMS composed with the outbox and sent over SMTP arrives at the gateway, within 160."""
    server = smtp_server_factory("plain")
    sms = compose_sms(LONG, "07700 900123", UK, subject="Ticket 4711")
    assert isinstance(sms, SmsMessage)
    mail = OutboxMail(
        id=7,
        message_id="halomail.4711.0102030405060708.0a0b0c0d0e0f@helpdesk.example",
        to=(sms.to_address,),
        subject=sms.subject,
        text=sms.body,
        status=OutboxStatus.PENDING,
        created_at=dt.datetime(2024, 5, 6, tzinfo=dt.UTC),
        kind="sms",
        ticket_id=4711,
        auto_submitted=False,
    )
    email = compose(mail, UK.sender, loop_token="loop-token")

    SmtpTransport(server.host, server.port, security="none", timeout=5).send(email)

    [got] = server.messages
    assert got.rcpt_tos == ("447700900123@sms.example",)
    assert got.mail_from == "alerts@helpdesk.example"
    parsed = message_from_bytes(got.raw, policy=policy.default)
    assert parsed["To"] == "447700900123@sms.example"
    assert parsed["From"] == "Helpdesk <alerts@helpdesk.example>"
    body = parsed.get_body(("plain",))
    assert body is not None
    text = body.get_content().strip()
    assert text == sms.body
    assert len(text) <= 160
