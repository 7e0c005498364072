"""halomail's MIME splitter builds the tree the stdlib's FeedParser builds, on every input.

``_mime.parse`` finds part boundaries in the raw bytes and keeps bodies as views; the
stdlib's ``FeedParser`` (``compat32``, driven with the same bounded message class, as
halomail parsed before) is the oracle. For each input both trees are compared node by
node: envelope line, stored headers, defects, default type and body bytes (the
preamble and epilogue, which halomail never reads, are not kept).
"""

from __future__ import annotations

import os
import random
import tracemalloc
from email.feedparser import FeedParser
from email.policy import compat32
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail.inbound import _mime
from halomail.inbound.models import ParseLimits
from halomail.inbound.parse import parse_email

EMAILS = Path(__file__).parent / "emails"
# Generous limits: the differential tests compare trees, not limits.
WIDE = ParseLimits(
    max_message_bytes=1 << 30, max_depth=200, max_parts=100_000, max_header_bytes=1 << 24
)

Shape = tuple[Any, ...]


def stdlib_tree(data: bytes, limits: ParseLimits = WIDE) -> _mime.BoundedMessage:
    """The oracle: the stdlib FeedParser building BoundedMessage parts, as halomail did."""
    budget = _mime._Budget(limits)

    def factory(policy: Any = compat32) -> _mime.BoundedMessage:
        return _mime.BoundedMessage(budget, policy)

    parser = FeedParser(cast(Any, factory), policy=compat32)
    try:
        parser.feed(data.decode("ascii", "surrogateescape"))
        return cast(_mime.BoundedMessage, parser.close())
    finally:
        budget.parsing = False


def shape(part: _mime.BoundedMessage) -> Shape:
    """Everything halomail reads from a part, as comparable values."""
    payload = part._payload
    if isinstance(payload, list):
        body: Any = [shape(child) for child in payload]
    elif isinstance(payload, str):
        body = payload.encode("ascii", "surrogateescape")
    elif payload is None:
        body = b""
    else:
        body = bytes(payload)
    defects = [(type(defect).__name__, str(defect)) for defect in part.defects]
    return (part.get_unixfrom(), list(part._headers), defects, part.get_default_type(), body)


def assert_same_tree(data: bytes) -> None:
    """halomail's tree equals the stdlib's for ``data``."""
    assert shape(_mime.parse(data, WIDE)) == shape(stdlib_tree(data))


# --- Generated messages: the line structures that boundary handling gets wrong ------

BOUNDARIES = ["b", "b1", "=_x", "a b", "b--", "--", "x:y", "b\t"]
BREAKS = st.sampled_from(["\r\n", "\n", "\r"])


@st.composite
def leaf_lines(draw: st.DrawFn, boundaries: list[str]) -> list[str]:
    """Body lines, some of which look like (but may not be) boundary lines."""
    near = [f"--{b}{tail}" for b in boundaries for tail in ("", "--", "  ", "\t", "x", "---")]
    pool = ["text", "", " ", "From someone", "QUJD", "=3D", "--", *near]
    return draw(st.lists(st.sampled_from(pool), max_size=6))


@st.composite
def header_lines(draw: st.DrawFn, content_type: str | None) -> list[str]:
    """A header block with the odd lines real mail has: envelopes, continuations, junk."""
    pool = ["X-A: 1", " folded", "\tfolded", "From x@y", ":no-name", "Subject: hi", "bad line"]
    lines = draw(st.lists(st.sampled_from(pool), max_size=4))
    if content_type is not None:
        lines.insert(draw(st.integers(0, len(lines))), f"Content-Type: {content_type}")
    return lines


@st.composite
def part_text(draw: st.DrawFn, depth: int, outer: list[str]) -> list[str]:
    """The lines of one part: headers, an optional separator, then a body or sub-parts."""
    kind = draw(
        st.sampled_from(["leaf", "leaf", "multipart", "message"]) if depth else st.just("leaf")
    )
    boundary = draw(st.sampled_from(BOUNDARIES))
    if kind == "multipart":
        sub = draw(st.sampled_from(["mixed", "alternative", "digest"]))
        param = draw(st.sampled_from([f'boundary="{boundary}"', f"boundary={boundary}", ""]))
        content_type: str | None = f"multipart/{sub}; {param}"
    elif kind == "message":
        content_type = draw(st.sampled_from(["message/rfc822", "message/delivery-status"]))
    else:
        content_type = draw(st.sampled_from([None, "text/plain", "text/html; charset=utf-8"]))
    lines = draw(header_lines(content_type))
    if draw(st.booleans()):
        lines.append("")  # the separator; without it the body starts at a non-header
    seen = [*outer, boundary]
    if kind != "multipart":
        return lines + draw(leaf_lines(seen))
    lines += draw(leaf_lines(seen))  # preamble
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"--{boundary}" + draw(st.sampled_from(["", "", " ", "--"])))
        lines += draw(part_text(depth - 1, seen))
    if draw(st.booleans()):
        lines.append(f"--{boundary}--")
        lines += draw(leaf_lines(seen))  # epilogue
    return lines


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A whole message, each line ended by CRLF, LF or a lone CR (or nothing, last)."""
    lines = draw(part_text(3, []))
    out = []
    for line in lines:
        out.append(line + draw(BREAKS))
    if out and draw(st.booleans()):
        out[-1] = out[-1].rstrip("\r\n")
    return "".join(out).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_messages_split_exactly_as_the_stdlib_splits_them(raw: bytes) -> None:
    """Near-boundaries, repeated or missing boundaries, odd headers: FeedParser's tree."""
    assert_same_tree(raw)


def test_a_boundary_folded_over_two_lines_matches_no_line() -> None:
    """A boundary parameter holding a line break can equal no line: the start is not found."""
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n folded\r\n--b\r\n folded\r\n"
    assert_same_tree(raw)
    assert isinstance(_mime.parse(raw, WIDE)._payload, memoryview)


@pytest.mark.parametrize("fold", [b"\r\n ", b"\r\n\t"])
def test_a_folded_boundary_is_unfolded_where_the_stdlib_finds_none(fold: bytes) -> None:
    """The one intended difference from FeedParser: a boundary folded over two lines is
    unfolded (RFC 5322 §2.2.3) and splits the parts, where the stdlib finds no start."""
    raw = (
        b'Content-Type: multipart/mixed; boundary="=_a' + fold + b'b"\r\n\r\n'
        b"--=_a" + fold[2:] + b"b\r\nContent-Type: text/plain\r\n\r\none\r\n"
        b"--=_a" + fold[2:] + b"b--\r\n"
    )
    ours = _mime.parse(raw, WIDE)
    assert [bytes(child._payload) for child in ours._payload] == [b"one"]
    assert not stdlib_tree(raw).is_multipart()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_split_exactly_as_the_stdlib_splits_them(raw: bytes) -> None:
    """Any bytes at all give the same tree as FeedParser (a one-part message, mostly)."""
    assert_same_tree(raw)


# --- Real mail ----------------------------------------------------------------------


GOLDEN = sorted(EMAILS.glob("*.eml"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda path: path.name)
def test_golden_emails_split_exactly_as_the_stdlib_splits_them(path: Path) -> None:
    """Every email of tests/emails gives the same tree as FeedParser."""
    assert_same_tree(path.read_bytes())


@pytest.mark.slow
def test_spamassassin_corpus_splits_exactly_as_the_stdlib_splits_it() -> None:
    """All 5,983 real messages of the SpamAssassin corpus give the same tree as FeedParser."""
    folder = os.environ.get("HALOMAIL_CORPUS", "")
    if not folder or not Path(folder).is_dir():
        message = f"HALOMAIL_CORPUS is not set to the SpamAssassin corpus folder (got {folder!r})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    files = sorted(Path(folder).glob("*.eml"))
    assert len(files) == 5983
    different = [
        path.name
        for path in files
        if shape(_mime.parse(data := path.read_bytes(), WIDE)) != shape(stdlib_tree(data))
    ]
    assert different == []


# --- No copies of bodies --------------------------------------------------------------


def test_a_large_attachment_body_is_a_view_of_the_message_not_a_copy() -> None:
    """A 4 MB base64 attachment's undecoded body is a memoryview into the received bytes."""
    rng = random.Random(3)
    encoded = __import__("base64").encodebytes(rng.randbytes(3 * 1024 * 1024))
    raw = (
        b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="disk.img"\r\n\r\n'
        + encoded.replace(b"\n", b"\r\n")
        + b"--XX--\r\n"
    )
    root = _mime.parse(raw, WIDE)
    attachment = root._payload[1]
    body = _mime.raw_payload(attachment)
    assert isinstance(body, memoryview)
    assert body.obj is raw
    assert bytes(body) == encoded.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    parsed = parse_email(raw)
    assert [a.size for a in parsed.attachments] == [3 * 1024 * 1024]
    assert parsed.text == "see attached"


def test_a_flood_of_tiny_parts_is_stopped_at_the_limit_without_listing_them_all() -> None:
    """200,000 one-line parts are quarantined as too-many-parts; parsing holds far less
    memory than the email (listing every part's position would take about 15x its size)."""
    raw = (
        b"From: a@example.com\r\nSubject: flood\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"--b\r\nx\r\n" * 200_000
        + b"--b--\r\n"
    )
    tracemalloc.start()
    try:
        parsed = parse_email(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.quarantine_reason == "too-many-parts"
    assert parsed.subject == "flood"
    assert peak < len(raw) / 2


def test_a_part_header_block_of_junk_lines_counts_against_the_header_limit() -> None:
    """300 KB of nameless header lines in a part (never stored as fields) is still too large."""
    raw = (
        b"From: a@example.com\r\nSubject: junk\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n" + b":junk\r\n" * 50_000 + b"\r\nbody\r\n--b--\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.quarantine_reason == "headers-too-large"
    assert parsed.subject == "junk"


def test_limits_still_stop_the_splitter_where_they_stopped_the_stdlib() -> None:
    """Parts past max_parts and nesting past max_depth raise the same reasons as before."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(20))
    flat = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    few = ParseLimits(max_parts=10)
    for parser in (_mime.parse, stdlib_tree):
        with pytest.raises(_mime.LimitExceeded) as caught:
            parser(flat, few)
        assert caught.value.reason == "too-many-parts"
    deep = b""
    for level in range(12):
        deep += (
            f'--{level - 1}\r\nContent-Type: multipart/mixed; boundary="{level}"\r\n\r\n'.encode()
        )
    deep = deep.removeprefix(b"---1\r\n")
    shallow = ParseLimits(max_depth=5)
    for parser in (_mime.parse, stdlib_tree):
        with pytest.raises(_mime.LimitExceeded) as caught:
            parser(deep, shallow)
        assert caught.value.reason == "mime-too-deep"
