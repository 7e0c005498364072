"""The top-level address, threading and date fields of a parsed email, read on first use.

Parsing reads on every email only what identifies it (Message-ID, sender, subject);
To, Cc, Reply-To, Return-Path, the date, In-Reply-To and References are parsed from
their raw values the first time one of them, or the email's defects, is read
(:class:`~halomail.inbound.models.InboundEmail` reads through :class:`Envelope`). They
are about a tenth of the cost of parsing real mail, and a caller that only needs an
email's identity (deduplication, a quarantine listing) never pays for them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from halomail.inbound import _addresses, _headers
from halomail.inbound.models import Address

__all__ = ["Envelope", "address_list"]


class Envelope:
    """The raw values of the deferred fields, and each field once parsed.

    Args:
        wanted: The raw values of the top-level fields by lower-cased name, in order.
        message_id_invalid: Whether the (eagerly read) Message-ID was invalid: its
            defect sits among these fields' defects, in the order parsing lists them.
    """

    __slots__ = (
        "_defects",
        "_message_id_invalid",
        "_wanted",
        "cc",
        "date",
        "in_reply_to",
        "references",
        "reply_to",
        "return_path",
        "to",
    )

    def __init__(self, wanted: Mapping[str, Sequence[str]], message_id_invalid: bool) -> None:
        self._wanted = wanted
        self._message_id_invalid = message_id_invalid
        self._defects: list[str] | None = None
        self.to: tuple[Address, ...] = ()
        self.cc: tuple[Address, ...] = ()
        self.reply_to: tuple[Address, ...] = ()
        self.return_path: str | None = None
        self.date: dt.datetime | None = None
        self.in_reply_to: tuple[str, ...] = ()
        self.references: tuple[str, ...] = ()

    def parsed(self) -> Envelope:
        """This envelope with every field parsed (once)."""
        if self._defects is None:
            self._parse()
        return self

    def defects(self) -> list[str]:
        """What parsing the fields found wrong, in the order parsing lists it."""
        return self.parsed()._defects or []

    def _parse(self) -> None:
        wanted = self._wanted
        defects: list[str] = []
        self.to = address_list(wanted.get("to", ()), defects)
        self.cc = address_list(wanted.get("cc", ()), defects)
        self.reply_to = address_list(wanted.get("reply-to", ()), defects)
        if "return-path" in wanted:
            self.return_path = _addresses.parse_path(wanted["return-path"][0])
            if self.return_path is None:
                defects.append("invalid-return-path")
        if self._message_id_invalid:
            defects.append("invalid-message-id")
        self.in_reply_to = _id_list(wanted.get("in-reply-to", ()))
        self.references = _id_list(wanted.get("references", ()))
        if "date" in wanted:
            self.date = _headers.parse_date(wanted["date"][0])
            if self.date is None:
                defects.append("invalid-date")
        self._defects = defects


def address_list(raws: Iterable[str], defects: list[str]) -> tuple[Address, ...]:
    """The valid addresses of address-list values, without repeats (``invalid-address``
    recorded in ``defects`` for a value with an entry that is not one)."""
    found: dict[str, Address] = {}
    for raw in raws:
        addresses, rejected = _addresses.parse_addresses(raw)
        if rejected:
            defects.append("invalid-address")
        for address in addresses:
            found.setdefault(address.normalized, address)
    return tuple(found.values())


def _id_list(raws: Iterable[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for raw in raws:
        for mid in _headers.message_ids(raw):
            found.setdefault(mid, None)
    return tuple(found)
