"""What hostile MIME and HTML cost to parse: halomail against bare compat32 on the same bytes.

Run it from the checkout::

    python benchmarks/bench_hostile.py      # a few minutes

Each case is a message built to make a MIME parser or an HTML reader slow or hungry:

- **mid-line separators**: every line of a part is the boundary's separator repeated,
  so it occurs 25 times per line but never as a boundary line;
- **near-boundary lines**: 500,000 lines that start like the boundary but do not end
  like one (``--b-x``);
- **flood of tiny parts**: 400,000 one-line parts (past ``max_parts``: quarantined);
- **deep nesting**: 30 nested multiparts around one 4 MB base64 attachment, so every
  level searches the whole body for its own boundary;
- **one long line**: an 8 MB text part without a line break;
- **bare CR line ends**: a multipart whose lines all end with a lone CR;
- **HTML ``<p>x``** (25 MB) and **HTML ``<b>x</b>``** (24 MB): HTML-only emails of millions
  of elements (past the HTML budget: tag-stripped, ``html-over-budget``);
- **HTML at the budget**: ``<p>x`` repeated just under ``MAX_HTML_ELEMENTS``, the most a
  document can cost through the DOM;
- **HTML deep nesting**: 90,000 nested ``<div>`` (rewritten at most 256 deep);
- **HTML attribute flood**: one element with 200,000 attributes (rewritten with 100).

For each it prints the median CPU time of ``email.message_from_bytes(raw,
policy=compat32)`` (the stdlib parse alone) and of halomail's ``parse_email`` (the whole
parse: limits, parts, decoding, text, quote stripping), timed alternately in each round
so that both see the same machine, the median of the per-round ratios with their spread
(lowest-highest), the peak memory ``parse_email`` added per MB of input (measured in a
fresh child process), and the outcome halomail gives. Exit status 1 when ``parse_email``
raises or falls back to its last-resort ``unparseable`` result, or when a case's outcome
is not the expected one.
"""

from __future__ import annotations

import base64
import email
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from email import policy

from bench_pipeline import pin_one_core

from halomail.inbound.html import MAX_HTML_ELEMENTS
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


def _html(body: str) -> bytes:
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode()


def html_paragraphs() -> bytes:
    """25 MB of ``<p>x``: six million elements."""
    return _html("<p>x" * 6_250_000)


def html_bold() -> bytes:
    """24 MB of ``<b>x</b>``: three million elements, each closed."""
    return _html("<b>x</b>" * 3_000_000)


def html_at_budget() -> bytes:
    """``<p>x`` just under the element budget: the costliest document read through a DOM."""
    return _html("<p>x" * (MAX_HTML_ELEMENTS - 10))


def html_deep() -> bytes:
    """90,000 nested ``<div>`` with a word in each."""
    return _html("<div>x" * 90_000)


def html_attributes() -> bytes:
    """One paragraph with 200,000 distinct attributes."""
    return _html("<p " + " ".join(f"a{i}=v" for i in range(200_000)) + ">x</p>")


CASES: tuple[tuple[str, Callable[[], bytes], str], ...] = (
    ("mid-line separators", mid_line_separators, "ok"),
    ("near-boundary lines", near_boundary_lines, "ok"),
    ("flood of tiny parts", tiny_parts, "too-many-parts"),
    ("deep nesting (30)", deep_nesting, "ok"),
    ("one long line", long_line, "ok"),
    ("bare CR line ends", bare_cr, "ok"),
    ("HTML <p>x", html_paragraphs, "ok, html-over-budget"),
    ("HTML <b>x</b>", html_bold, "ok, html-over-budget"),
    ("HTML at the budget", html_at_budget, "ok"),
    ("HTML deep nesting", html_deep, "ok"),
    ("HTML attribute flood", html_attributes, "ok"),
)


def _cpu_seconds(function: Callable[[bytes], object], raw: bytes) -> float:
    start = time.process_time()
    function(raw)
    return time.process_time() - start


def _bare(raw: bytes) -> object:
    return email.message_from_bytes(raw, policy=policy.compat32)


def _interleaved(raw: bytes) -> tuple[float, float, list[float]]:
    """Median CPU seconds of the stdlib and of halomail, and each round's ratio."""
    bare, ours, ratios = [], [], []
    for _ in range(ROUNDS):
        bare.append(_cpu_seconds(_bare, raw))
        ours.append(_cpu_seconds(parse_email, raw))
        ratios.append(ours[-1] / bare[-1])
    return statistics.median(bare), statistics.median(ours), ratios


def _outcome(raw: bytes) -> str:
    parsed = parse_email(raw)
    outcome = parsed.quarantine_reason or "ok"
    if "html-over-budget" in parsed.defects:
        outcome += ", html-over-budget"
    return outcome


def _peak_mb(index: int) -> float:
    """Peak memory (MB) one parse adds, measured in a child process of its own."""
    child = subprocess.run(
        [sys.executable, __file__, "--peak", str(index)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(child.stdout)


def _peak_in_this_process(index: int) -> int:
    """Child side of _peak_mb: build the case, note the peak, parse, print the growth."""
    raw = CASES[index][1]()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    parse_email(raw)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)  # ru_maxrss is in KiB on Linux
    return 0


def main() -> int:
    """Build each case, time both parsers, print the table."""
    if sys.argv[1:2] == ["--peak"]:
        return _peak_in_this_process(int(sys.argv[2]))
    pinned = pin_one_core()
    print(
        f"hostile MIME and HTML, CPU time, median of {ROUNDS} interleaved rounds; {pinned};"
        f" Python {sys.version.split()[0]}"
    )
    print(
        f"{'case':<21} {'MB':>5} {'compat32 s':>10} {'halomail s':>10} {'ratio':>7}"
        f" {'spread':>14} {'s/MB':>5} {'+MB/MB':>6}  outcome"
    )
    # Measured first: a child inherits its parent's peak across exec on Linux, so the
    # children must start while this process is still small.
    peaks = [_peak_mb(index) for index in range(len(CASES))]
    problems = []
    for (name, build, expected), peak in zip(CASES, peaks, strict=True):
        raw = build()
        megabytes = len(raw) / 1e6
        bare, ours, ratios = _interleaved(raw)
        outcome = _outcome(raw)
        spread = f"{min(ratios):.1f}-{max(ratios):.1f}x"
        print(
            f"{name:<21} {megabytes:>5.1f} {bare:>10.3f} {ours:>10.3f}"
            f" {statistics.median(ratios):>6.1f}x {spread:>14} {ours / megabytes:>5.2f}"
            f" {peak / megabytes:>6.1f}  {outcome}"
        )
        if outcome != expected:
            problems.append(f"{name}: outcome {outcome}, expected {expected}")
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
