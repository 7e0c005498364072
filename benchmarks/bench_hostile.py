"""What hostile MIME costs to parse: halomail against bare compat32 on the same bytes.

Run it from the checkout::

    python benchmarks/bench_hostile.py      # about 20 seconds

Each case is a message built to make a MIME parser slow or hungry (3 to 8 MB each):

- **mid-line separators**: every line of a part is the boundary's separator repeated,
  so it occurs 25 times per line but never as a boundary line;
- **near-boundary lines**: 500,000 lines that start like the boundary but do not end
  like one (``--b-x``);
- **flood of tiny parts**: 400,000 one-line parts (past ``max_parts``: quarantined);
- **deep nesting**: 30 nested multiparts around one 4 MB base64 attachment, so every
  level searches the whole body for its own boundary;
- **one long line**: an 8 MB text part without a line break;
- **bare CR line ends**: a multipart whose lines all end with a lone CR.

For each it prints the median time of ``email.message_from_bytes(raw,
policy=compat32)`` (the stdlib parse alone), of halomail's ``parse_email`` (the whole
parse: limits, parts, decoding, text, quote stripping), their ratio, and the outcome
halomail gives. Exit status 1 when ``parse_email`` raises or falls back to its
last-resort ``unparseable`` result, or when a case's outcome is not the expected one.
"""

from __future__ import annotations

import base64
import email
import random
import statistics
import sys
import time
from collections.abc import Callable
from email import policy

from bench_pipeline import pin_one_core

from halomail.inbound.parse import parse_email

ROUNDS = 5
HEAD = b"From: Mallory <m@example.com>\r\nTo: support@example.com\r\nSubject: hostile\r\n"


def _multipart(boundary: str, body: bytes) -> bytes:
    return HEAD + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode() + body


def mid_line_separators() -> bytes:
    """A text part whose lines are the separator (``---``) repeated."""
    line = b"-" * 76 + b"\r\n"
    part = b"--" + b"-" + b"\r\nContent-Type: text/plain\r\n\r\n" + line * 60_000
    return _multipart("-", part + b"----\r\n")


def near_boundary_lines() -> bytes:
    """Lines that start with the separator but are not boundary lines."""
    part = b"--b\r\nContent-Type: text/plain\r\n\r\n" + b"--b-x\r\n" * 500_000
    return _multipart("b", part + b"--b--\r\n")


def tiny_parts() -> bytes:
    """Far more parts than max_parts allows."""
    return _multipart("b", b"--b\r\nx\r\n" * 400_000 + b"--b--\r\n")


def deep_nesting() -> bytes:
    """Thirty nested multiparts around one base64 attachment."""
    payload = base64.encodebytes(random.Random(1).randbytes(3 * 1024 * 1024))
    inner = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n\r\n'
        + payload.replace(b"\n", b"\r\n")
    )
    for level in range(30):
        inner = (
            f'Content-Type: multipart/mixed; boundary="level{level}"\r\n\r\n'
            f"--level{level}\r\n".encode()
            + inner
            + f"\r\n--level{level}--\r\n".encode()
        )
    return HEAD + inner


def long_line() -> bytes:
    """One 8 MB line of text."""
    return HEAD + b"Content-Type: text/plain\r\n\r\n" + b"a" * (8 * 1024 * 1024)


def bare_cr() -> bytes:
    """A multipart whose every line ends with a lone CR."""
    part = b"--b\rContent-Type: text/plain\r\r" + b"some text on a line\r" * 200_000
    return (_multipart("b", part + b"--b--\r")).replace(b"\r\n", b"\r")


CASES: tuple[tuple[str, Callable[[], bytes], str], ...] = (
    ("mid-line separators", mid_line_separators, "ok"),
    ("near-boundary lines", near_boundary_lines, "ok"),
    ("flood of tiny parts", tiny_parts, "too-many-parts"),
    ("deep nesting (30)", deep_nesting, "ok"),
    ("one long line", long_line, "ok"),
    ("bare CR line ends", bare_cr, "ok"),
)


def _median_seconds(function: Callable[[bytes], object], raw: bytes) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        function(raw)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    """Build each case, time both parsers, print the table."""
    pinned = pin_one_core()
    print(f"hostile MIME, median of {ROUNDS} rounds; {pinned}; Python {sys.version.split()[0]}")
    print(f"{'case':<22} {'MB':>5} {'compat32 ms':>12} {'halomail ms':>12} {'ratio':>7}  outcome")
    problems = []
    for name, build, expected in CASES:
        raw = build()
        bare = _median_seconds(
            lambda data: email.message_from_bytes(data, policy=policy.compat32), raw
        )
        ours = _median_seconds(parse_email, raw)
        parsed = parse_email(raw)
        outcome = parsed.quarantine_reason or "ok"
        print(
            f"{name:<22} {len(raw) / 1e6:>5.1f} {bare * 1e3:>12.1f} {ours * 1e3:>12.1f}"
            f" {ours / bare:>6.2f}x  {outcome}"
        )
        if outcome != expected:
            problems.append(f"{name}: outcome {outcome}, expected {expected}")
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
