"""Email to SMS: a text message sent as an email to ``{phone}@{provider-domain}``.

Most SMS providers run an email gateway: mail to ``447700900123@sms.example`` from an
authorised sender arrives on that phone as a text. This module turns a phone number as
people write it into that address, and a text into an SMS-sized body; the outbox sends
the result like any other email (``kind = "sms"``).

* :func:`normalize_phone` accepts the usual ways of writing a number (``+44 7700
  900123``, ``0044 7700 900123``, ``07700 900123`` with a default country code,
  ``+44 (0)7700 900123``, ``(555) 010-9999`` with country ``1``) and refuses anything
  else with a reason: letters, an ``@``, line breaks, and lengths outside E.164's
  8 to 15 digits (country code included).
* :func:`shorten` makes the text one line and cuts it at a word boundary to the
  provider's limit, marking the cut with an ellipsis.
* :func:`sms_address` writes the number in the form the provider wants: international
  (``447772817814@…``, the default) or national (``07772817814@…``, with
  ``number_format = "national"``: the country code replaced by the trunk prefix).
* :func:`compose_sms` builds the address, subject and body, with the provider's
  password (PIN) in the subject or at the start of the body when the provider wants it.
* :func:`subscriber_addresses` turns a list of subscribers' numbers into the addresses
  to send to and the numbers refused, each with its reason.

The limit is counted in characters. A character outside the GSM 03.38 alphabet (the
``…`` used to mark a cut, accented letters, emoji) makes the provider send the SMS as
UCS-2, whose segments hold 70 characters; pass ``ellipsis="..."`` to stay in GSM.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

import attrs

from halomail.outbound.outbox import SenderIdentity, header_safe

__all__ = [
    "ADDRESS_FIELDS",
    "NUMBER_FORMATS",
    "PIN_PLACEMENTS",
    "SmsMessage",
    "SmsSettings",
    "compose_sms",
    "normalize_phone",
    "shorten",
    "sms_address",
    "subscriber_addresses",
]

#: Where the provider wants the password (PIN): nowhere, as the subject, or before the text.
PIN_PLACEMENTS = ("none", "subject", "body-prefix")
#: How the number is written in the address: ``447772817814`` or ``07772817814``.
NUMBER_FORMATS = ("international", "national")
#: The fields an ``address_format`` may use.
ADDRESS_FIELDS = frozenset({"phone", "domain"})
#: E.164: at most 15 digits with the country code; fewer than 8 is no real mobile number.
MIN_DIGITS = 8
MAX_DIGITS = 15

# What may separate the digits of a written number; anything else is refused.
_SEPARATORS = frozenset(" -./()")
_TRUNK_ZERO = re.compile(r"\(0\)")
_DOMAIN = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
# A conservative addr-spec: dot-atom local part and a domain; nothing that needs quoting.
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@" + _DOMAIN.pattern)
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _check_domain(_instance: object, _attribute: object, value: str) -> None:
    if not _DOMAIN.fullmatch(value):
        raise ValueError(f"provider_domain {value!r} is not a domain name like sms.example.com")


def _check_country(_instance: object, _attribute: object, value: str) -> None:
    if value and not (value.isascii() and value.isdigit() and len(value) <= 3 and value[0] != "0"):
        raise ValueError(
            f"default_country_code {value!r} must be 1 to 3 digits without '+' or a leading 0"
        )


def _check_trunk(_instance: object, _attribute: object, value: str) -> None:
    if not (value == "" or (value.isascii() and value.isdigit() and len(value) <= 2)):
        raise ValueError(f"trunk_prefix {value!r} must be empty or 1 to 2 digits (0 mostly)")


def _check_format(_instance: object, _attribute: object, value: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"address_format {value!r} is not a valid format: {exc}") from exc
    if "phone" not in fields or not fields <= ADDRESS_FIELDS:
        raise ValueError(
            f"address_format {value!r} must use {{phone}} and may use only {{phone}} and {{domain}}"
        )


@attrs.frozen
class SmsSettings:
    """An SMS provider's email gateway.

    Args:
        provider_domain: The gateway's domain (``sms.example.com``).
        from_address: The address the provider accepts SMS mail from.
        password: The account password or PIN, for providers that want it in each
            email; never shown.
        pin_placement: ``none``, ``subject`` (the whole subject is the PIN) or
            ``body-prefix`` (the body starts with the PIN and a space).
        display_name: The From display name.
        max_length: The provider's limit in characters; the body never exceeds it,
            PIN prefix included.
        default_country_code: The country code (``44``) for numbers written without
            one (``07700 900123``); empty to require international numbers.
        address_format: How the address is built from ``{phone}`` and ``{domain}``.
        ellipsis: What marks a shortened text (``…``, or ``...`` to stay in GSM 03.38).
        number_format: ``international`` (``447772817814@…``) or ``national``
            (``07772817814@…``: the ``default_country_code`` replaced by the trunk
            prefix; numbers of other countries are refused).
        trunk_prefix: What a national number starts with instead of the country code
            (``0`` in most countries; empty for North America).

    Raises:
        ValueError: An invalid domain, country code, format, placement, number format
            or limit; a PIN placement without a password, or a password without a
            placement (it would never be sent); the national form without a
            ``default_country_code``.

    .. versionadded:: 0.1.0
    """

    provider_domain: str = attrs.field(validator=_check_domain)
    from_address: str
    password: str | None = attrs.field(default=None, repr=False)
    pin_placement: str = attrs.field(default="none", validator=attrs.validators.in_(PIN_PLACEMENTS))
    display_name: str = ""
    max_length: int = attrs.field(default=160, validator=attrs.validators.ge(20))
    default_country_code: str = attrs.field(default="", validator=_check_country)
    address_format: str = attrs.field(default="{phone}@{domain}", validator=_check_format)
    ellipsis: str = "…"
    number_format: str = attrs.field(
        default="international", validator=attrs.validators.in_(NUMBER_FORMATS)
    )
    trunk_prefix: str = attrs.field(default="0", validator=_check_trunk)

    def __attrs_post_init__(self) -> None:
        if self.pin_placement != "none" and not self.password:
            raise ValueError(f"pin_placement {self.pin_placement!r} needs the password (PIN)")
        if self.password and self.pin_placement == "none":
            # A PIN the provider never sees means every SMS is silently refused by it.
            raise ValueError(
                "the password (PIN) is never sent with pin_placement 'none': "
                "set pin_placement to 'subject' or 'body-prefix'"
            )
        if self.number_format == "national" and not self.default_country_code:
            raise ValueError(
                "number_format 'national' needs default_country_code: the country whose "
                "numbers are written nationally"
            )
        if self.password and _CONTROL.search(self.password):
            raise ValueError("the password (PIN) must not contain line breaks")
        if self.pin_placement == "body-prefix" and len(self.password or "") > self.max_length // 2:
            raise ValueError("the password (PIN) leaves no room for the text")
        if len(self.ellipsis) >= self.max_length // 2:
            raise ValueError("the ellipsis is longer than half the limit")

    @property
    def sender(self) -> SenderIdentity:
        """Who SMS mail is sent as (for :func:`halomail.outbound.outbox.compose`)."""
        return SenderIdentity(from_address=self.from_address, display_name=self.display_name)


@attrs.frozen
class SmsMessage:
    """One SMS as the email to send.

    Args:
        phone: The normalized number (international digits, no ``+``).
        to_address: The gateway address, e.g. ``447700900123@sms.example``.
        subject: The email's subject (the PIN, with ``pin_placement = "subject"``).
        body: The text, one line, within the provider's limit.

    .. versionadded:: 0.1.0
    """

    phone: str
    to_address: str
    subject: str = attrs.field(repr=False)
    body: str


def normalize_phone(raw: str, *, default_country_code: str = "") -> str:
    """A phone number as international digits without ``+`` (``447700900123``).

    Spaces, ``-``, ``.``, ``/`` and parentheses are ignored, and so is a trunk ``(0)``
    after the country code. A number that starts with ``+`` or ``00`` carries its
    country code; any other number gets ``default_country_code``, after its national
    trunk ``0`` is dropped. For country ``1`` (North America) an 11-digit national
    number starting with ``1`` already carries it.

    Args:
        raw: The number as written.
        default_country_code: The country code for numbers written without one.

    Returns:
        8 to 15 digits, the first not ``0``.

    Raises:
        ValueError: The number is empty, holds letters, an ``@``, a line break or
            another character that is not part of a phone number, has no country code
            and there is no default, or is too short or too long.

    .. versionadded:: 0.1.0
    """
    if not isinstance(raw, str):
        raise TypeError(f"a phone number is a str, not {type(raw).__name__}")
    shown = repr(raw[:40])
    if _CONTROL.search(raw):
        # Even a trailing one: the number came from somewhere that let a line break in.
        raise ValueError(f"the phone number {shown} contains a line break or control character")
    text = raw.strip()
    if not text:
        raise ValueError("the phone number is empty")
    if "@" in text:
        raise ValueError(f"{shown} is an email address, not a phone number")
    international = text.startswith("+")
    body = _TRUNK_ZERO.sub(" ", text[1:] if international else text)
    for char in body:
        if char.isascii() and char.isdigit():
            continue
        if char in _SEPARATORS or char.isspace():
            continue
        if char.isalpha():
            raise ValueError(f"the phone number {shown} contains letters")
        raise ValueError(f"the phone number {shown} contains {char!r}, which is not allowed")
    digits = "".join(c for c in body if c.isascii() and c.isdigit())
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]
    if not international:
        if not default_country_code:
            raise ValueError(
                f"the phone number {shown} has no country code: write it as +<country> …, "
                "or set a default country code"
            )
        if default_country_code == "1" and len(digits) == 11 and digits.startswith("1"):
            pass  # North American "1 555 010 9999": the 1 is the country code already
        else:
            # The national trunk prefix (0 in most of the world) is not dialled from abroad.
            digits = default_country_code + digits.removeprefix("0")
    if not digits:
        raise ValueError(f"the phone number {shown} has no digits")
    if digits.startswith("0"):
        raise ValueError(f"the phone number {shown} has no valid country code (it starts with 0)")
    if len(digits) < MIN_DIGITS:
        raise ValueError(
            f"the phone number {shown} is too short ({len(digits)} digits with the country "
            f"code; at least {MIN_DIGITS})"
        )
    if len(digits) > MAX_DIGITS:
        raise ValueError(
            f"the phone number {shown} is too long ({len(digits)} digits; E.164 allows "
            f"{MAX_DIGITS})"
        )
    return digits


def sms_address(phone: str, settings: SmsSettings) -> str:
    """The gateway address for ``phone`` (``447700900123@sms.example``).

    The number is international (``447700900123``) unless the provider takes the
    national form (``number_format = "national"``: ``07700900123``).

    Args:
        phone: The number as written (normalized with the settings' country code).
        settings: The provider.

    Returns:
        The address.

    Raises:
        ValueError: The number is invalid (see :func:`normalize_phone`) or, for a
            provider of national numbers, of another country; or the format makes an
            address that is not a plain addr-spec.

    .. versionadded:: 0.1.0
    """
    digits = normalize_phone(phone, default_country_code=settings.default_country_code)
    return _format_address(digits, settings)


def _as_written(digits: str, settings: SmsSettings) -> str:
    """``digits`` (international) in the form the provider wants them."""
    if settings.number_format == "international":
        return digits
    country = settings.default_country_code
    if not digits.startswith(country):
        raise ValueError(
            f"the phone number +{digits} is not a +{country} number, and the provider "
            "takes national numbers only"
        )
    return settings.trunk_prefix + digits.removeprefix(country)


def _format_address(digits: str, settings: SmsSettings) -> str:
    written = _as_written(digits, settings)
    address = settings.address_format.format(phone=written, domain=settings.provider_domain)
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"address_format made {address!r}, which is not an email address")
    return address


def shorten(text: str, limit: int, *, ellipsis: str = "…") -> str:
    """``text`` on one line, whitespace collapsed, cut at a word boundary to ``limit``.

    A text over the limit ends with ``ellipsis``, the whole within ``limit``
    characters. It is cut at the last space that keeps at least half of the room; a
    text with no such space (a long URL) is cut mid-word.

    Args:
        text: Any text.
        limit: The most characters the result may have.
        ellipsis: What marks the cut.

    Returns:
        The shortened text (empty when ``text`` holds only whitespace).

    Raises:
        ValueError: ``limit`` is too small to hold the ellipsis and a character.

    .. versionadded:: 0.1.0
    """
    if limit <= len(ellipsis):
        raise ValueError(f"limit {limit} leaves no room for text before {ellipsis!r}")
    line = _WHITESPACE.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(line) <= limit:
        return line
    room = limit - len(ellipsis)
    head = line[: room + 1]  # one more, to see whether the cut falls on a space
    cut = head.rfind(" ")
    if cut < room // 2:
        cut = room  # no word boundary worth keeping: cut mid-word
    return line[:cut].rstrip(" ,;:-") + ellipsis


def compose_sms(text: str, phone: str, settings: SmsSettings, *, subject: str = "") -> SmsMessage:
    """The email that sends ``text`` to ``phone`` as an SMS.

    The body is ``text`` shortened to the provider's limit (less the PIN and a space
    with ``pin_placement = "body-prefix"``). The subject is ``subject`` made one line,
    or the PIN with ``pin_placement = "subject"`` (a provider that reads the PIN from
    the subject does not show it).

    Args:
        text: The message.
        phone: The number as written.
        settings: The provider.
        subject: An optional subject.

    Returns:
        The SMS, ready to be queued (``kind = "sms"``).

    Raises:
        ValueError: The number is invalid, or the text is empty.

    .. versionadded:: 0.1.0
    """
    digits = normalize_phone(phone, default_country_code=settings.default_country_code)
    to_address = _format_address(digits, settings)
    limit = settings.max_length
    prefix = ""
    if settings.pin_placement == "body-prefix":
        prefix = f"{settings.password} "
        limit -= len(prefix)
    body = shorten(text, limit, ellipsis=settings.ellipsis)
    if not body:
        raise ValueError("the SMS text is empty")
    if settings.pin_placement == "subject":
        assert settings.password is not None
        subject = settings.password
    return SmsMessage(
        phone=digits,
        to_address=to_address,
        subject=header_safe(subject, limit=200),
        body=prefix + body,
    )


def subscriber_addresses(
    phones: Iterable[str], settings: SmsSettings
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The SMS addresses for a service's subscribers, and the numbers refused.

    A number written twice (or two ways) yields one address, in first-seen order.

    Args:
        phones: The subscribers' numbers as written.
        settings: The provider.

    Returns:
        ``(addresses, refused)``: the addresses to send to, and each refused number
        with the reason.

    .. versionadded:: 0.1.0
    """
    addresses: list[str] = []
    seen: set[str] = set()
    refused: list[tuple[str, str]] = []
    for phone in phones:
        try:
            address = sms_address(phone, settings)
        except (TypeError, ValueError) as exc:
            refused.append((phone, str(exc)))
            continue
        if address not in seen:
            seen.add(address)
            addresses.append(address)
    return tuple(addresses), tuple(refused)
