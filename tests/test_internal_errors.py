"""#13 item 10: the defects that mean halomail failed, not the email, are named in one place.

The corpus, golden and property tests assert that none of them occurs on real mail, so a
bug the parser swallows (every attachment lost to a ``TypeError``) fails the suite.
"""

from __future__ import annotations

import pytest

from halomail.inbound.defects import (
    HTML_OVER_BUDGET,
    INTERNAL_ERROR_DEFECTS,
    is_internal_error,
)
from halomail.inbound.parse import parse_email


@pytest.mark.parametrize(
    "defect",
    [
        "part-error:TypeError",
        "part-error:UnicodeDecodeError",
        "exception:RecursionError",
        "html-to-text-failed",
        "strip-reply-failed",
    ],
)
def test_an_exception_inside_the_parser_is_an_internal_error(defect: str) -> None:
    """Each defect the parser records for an exception of its own counts as internal."""
    assert is_internal_error(defect)


@pytest.mark.parametrize(
    "defect",
    [HTML_OVER_BUDGET, "missing-boundary", "unknown-charset", "invalid-base64", "nul-in-body"],
)
def test_a_flaw_of_the_email_is_not_an_internal_error(defect: str) -> None:
    """Defects that describe the email itself, or a budget, are not internal errors."""
    assert not is_internal_error(defect)
    assert defect not in INTERNAL_ERROR_DEFECTS


def test_a_broken_email_gives_defects_but_no_internal_error() -> None:
    """Damaged base64, an unknown charset and a missing boundary are the email's flaws."""
    raw = (
        b"From: a@example.com\r\nSubject: broken\r\n"
        b'Content-Type: multipart/mixed; boundary="never"\r\n\r\n'
        b"--other\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=!!\r\n"
    )
    email = parse_email(raw)
    assert email.defects
    assert [defect for defect in email.defects if is_internal_error(defect)] == []
