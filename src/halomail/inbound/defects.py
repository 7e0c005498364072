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
    "HTML_OVER_BUDGET",
    "INTERNAL_ERROR_DEFECTS",
    "INTERNAL_ERROR_PREFIXES",
    "is_internal_error",
]

HTML_OVER_BUDGET = "html-over-budget"
"""The HTML body was past the DOM budget; its text came from the tag stripper."""

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
