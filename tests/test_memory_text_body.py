"""#18, point 3: the loop count hashes a body without copying it."""

from __future__ import annotations

import hashlib

import pytest

from halomail.inbound.models import ParseLimits
from halomail.pipeline.loops import _hash_stripped, repeat_key
from tests.conftest import make_email

pytestmark = pytest.mark.slow

LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"


def _big_text_email() -> tuple[bytes, int]:
    """An email whose plain-text body fills the default 25 MB message limit."""
    head = (
        b"From: Alice <alice@customer.example>\r\nTo: support@helpdesk.example\r\n"
        b"Subject: Log file\r\nMessage-ID: <big-log@customer.example>\r\n"
        b"Content-Type: text/plain\r\n\r\n"
    )
    body = LINE * ((ParseLimits().max_message_bytes - len(head)) // len(LINE))
    return head + body, len(body)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \n\t ",
        "  Hello,\r\n the printer jams.  \n\n",
        "\u3000全角スペース\u3000",  # ideographic spaces are whitespace too
        "\xa0non-breaking\u2028separators\x1c",
        "lone \ud800 surrogate and a pair \ud83d\ude00",
        " " * 70_000 + "x" + "\n" * 70_000,  # whitespace runs longer than a chunk
        "a" * 200_000 + " \ud800",  # a surrogate on a chunk's edge
    ],
)
def test_the_loop_key_hashes_the_stripped_text_as_one_piece_would(text: str) -> None:
    """Hashed a chunk at a time, the text gives the digest of ``text.strip()`` encoded at
    once: loop counts recorded before keep counting."""
    chunked = hashlib.sha256()
    _hash_stripped(chunked, text)
    whole = hashlib.sha256(text.strip().encode("utf-8", "replace"))
    assert chunked.hexdigest() == whole.hexdigest()


def test_the_loop_key_is_the_one_earlier_versions_wrote() -> None:
    """A key recorded before this change, for the same content, is found again."""
    email = make_email(
        sender="Alice <alice@customer.example>", subject="  Printer   JAMS ", body="  Help!\n\n"
    )
    from halomail.inbound.parse import parse_email

    digest = hashlib.sha256()
    for part in ("Support", "alice@customer.example", "printer jams", "Help!"):
        digest.update(part.encode() + b"\x00")
    assert repeat_key("Support", parse_email(email)) == "loop:" + digest.hexdigest()
