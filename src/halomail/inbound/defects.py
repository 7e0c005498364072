"""Which defects on a parsed email mean that halomail itself failed, not the email.

:func:`~halomail.inbound.parse.parse_email` never raises: when one of its own steps
throws, it records a defect and carries on with a fallback, so that one email never stops
a mailbox. Those defects are the only trace of a bug that may have cost a part, the text
or the whole email, so tests (and hosts that watch their mail) look for them with
:func:`is_internal_error`: on real mail there must be none.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

__all__ = [
    "BOM_BEFORE_HEADERS",
    "HEADER_TRUNCATED_PREFIX",
    "HTML_OVER_BUDGET",
    "INTERNAL_ERROR_DEFECTS",
    "INTERNAL_ERROR_PREFIXES",
    "MALFORMED_HEADER_LINE",
    "SENDER_FROM_REPLY_TO",
    "SENDER_FROM_RETURN_PATH",
    "SENDER_FROM_SENDER",
    "SENDER_READ_LENIENTLY",
    "UNPARSEABLE_SENDER",
    "is_internal_error",
]

HTML_OVER_BUDGET = "html-over-budget"
"""The HTML body was past the DOM budget; its text came from the tag stripper."""

# --- Real mail read as a mail client reads it (issue 15): flaws repaired, nothing lost ---

BOM_BEFORE_HEADERS = "bom-before-headers"
"""A UTF-8 byte-order mark stood before the first header; it was skipped."""

MALFORMED_HEADER_LINE = "malformed-header-line"
"""A line that is no header line stood inside the top-level header block, with header
lines after it; it was dropped and the headers after it read (the stdlib would have
started the body there)."""

HEADER_TRUNCATED_PREFIX = "header-truncated:"
"""Prefix of the defect naming a header field cut to its own caps
(``header-truncated:subject``): size, encoded words, or addresses (whole ones kept)."""

SENDER_READ_LENIENTLY = "sender-read-leniently"
"""From was read as a mail client reads it (an unquoted name, two addresses without a
comma, an address inside an encoded word, junk around the angle address)."""

SENDER_FROM_SENDER = "sender-from-sender"
"""From held no usable address; the sender came from the Sender header."""

SENDER_FROM_REPLY_TO = "sender-from-reply-to"
"""From and Sender held no usable address; the sender came from Reply-To."""

SENDER_FROM_RETURN_PATH = "sender-from-return-path"
"""No From, Sender or Reply-To address; the sender came from Return-Path (never ``<>``)."""

UNPARSEABLE_SENDER = "unparseable-sender"
"""Headers naming a sender exist, but none holds a usable address (one with a domain)."""

INTERNAL_ERROR_DEFECTS = frozenset({"html-to-text-failed", "strip-reply-failed"})
"""Defects recorded when a body helper raised and its fallback was used instead."""

INTERNAL_ERROR_PREFIXES = ("part-error:", "exception:")
"""Prefixes of the defects that name the exception: a MIME part that could not be read
(``part-error:TypeError``), or the last-resort ``unparseable`` result
(``exception:TypeError``)."""


def is_internal_error(defect: str) -> bool:
    """Whether ``defect`` records an exception inside halomail rather than a flaw of the email.

    Args:
        defect: One entry of :attr:`~halomail.inbound.models.InboundEmail.defects`.

    Returns:
        ``True`` for the defects of :data:`INTERNAL_ERROR_DEFECTS` and those starting with
        one of :data:`INTERNAL_ERROR_PREFIXES`.
    """
    return defect in INTERNAL_ERROR_DEFECTS or defect.startswith(INTERNAL_ERROR_PREFIXES)
