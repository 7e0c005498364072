"""Peak memory growth while halomail processes one 50 MB email with one large attachment.

Run it from the checkout::

    python benchmarks/bench_memory.py                # 50 MiB, about 15 seconds
    python benchmarks/bench_memory.py --mib 25       # another size

The email (a short text part and one base64 PDF-like attachment, deterministic bytes)
is written to a temporary file; each measurement runs in a fresh subprocess that reads
it, sets up ``MailProcessor`` with a ``MemoryConnector`` holding it and a
``SQLiteTicketRepository`` in a temporary directory (parse limit raised above the
email's size: the default 25 MB limit would quarantine it), processes one small
email first (imports, caches), and then measures ``run_once()`` over the big one:

- **tracemalloc**: the peak of Python's traced allocations during the run, over the
  traced memory just before it (in its own subprocess: tracing slows the run);
- **RSS**: the peak resident set during the run (the kernel's VmHWM, reset just
  before it through ``/proc/self/clear_refs``) minus the resident set just before it,
  which also sees SQLite's and the C libraries' memory. Where the kernel refuses the
  reset, the row says so: it is then an upper bound, since an earlier peak may count.

Each is printed against the message size (goal: growth < 3x). The email's bytes held
by the connector before the run are the baseline, not growth.

Then **a text body** (#18): one email of 25 MB (the default message limit) that is all
plain text, in ASCII with CRLF and with LF line breaks, in Latin-1, and in UTF-8 (French,
plain and quoted-printable, and Russian), and the tracemalloc peak of ``parse_email``
plus reading its ``text``, and of the whole pipeline (40 rules and one on the body's new
text, the acknowledgement, SQLite), against the body's size (goal: < 2x).

Exit status 1 when the email is not stored as one ticket whose attachment has the
expected size, or the text body's text is not the body.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

_CRLF = b"\r\n"


def build_message(target: int, seed: int = 7) -> tuple[bytes, int]:
    """An email of about ``target`` bytes: a text part and one base64 attachment.

    Returns:
        The raw email and the attachment's decoded size.
    """
    rng = random.Random(seed)
    head = _CRLF.join(
        [
            b"Return-Path: <amy.smith@acme.example>",
            b"Received: from mail1.acme.example (mail1.acme.example [203.0.113.7]) by",
            b"\tmx1.msp.example (Postfix) with ESMTPS id 4F2A1C0B9D for <support@msp.example>;",
            b"\tMon, 06 May 2024 09:12:00 +0000",
            b'From: "Amy Smith" <amy.smith@acme.example>',
            b"To: Support <support@msp.example>",
            b"Subject: Full disk image of the failing laptop",
            b"Date: Mon, 06 May 2024 09:11:58 +0000",
            b"Message-ID: <big-attachment.1@acme.example>",
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/mixed; boundary="==big=="',
        ]
    )
    text = (
        b"--==big==\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hi, here is the export the vendor asked for. Thanks, Amy\r\n"
    )
    overhead = len(head) + len(text) + 300
    # base64 in 76-column lines: 78 bytes on the wire per 57 bytes of data.
    payload_size = (target - overhead) // 78 * 57
    payload = b"%PDF-1.7\n" + rng.randbytes(payload_size - 9)
    encoded = base64.encodebytes(payload).replace(b"\n", _CRLF)
    attachment = (
        b'--==big==\r\nContent-Type: application/pdf; name="disk-export.pdf"\r\n'
        b'Content-Disposition: attachment; filename="disk-export.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    raw = head + _CRLF + _CRLF + text + attachment + encoded + b"--==big==--\r\n"
    return raw, len(payload)


def _num(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def _mib(value: object) -> float:
    return _num(value) / 2**20


def _rss_now() -> int:
    """The resident set size now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) to the current RSS; False where not allowed.

    ``ru_maxrss`` never goes down: a peak reached before the run (reading the email,
    the warm-up) would hide the run's own peak, so the high-water mark is reset first.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    """The peak resident set size since the last reset (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# The steps whose peak the "steps" mode reports: none of them calls another, so
# each one's peak is its own (plus what was already held when it started).
_STEPS = (
    ("halomail.inbound._mime", "parse", "MIME parse (bodies kept as views)"),
    ("halomail.inbound._mime", "decode_transfer", "base64 decoding"),
    ("halomail.inbound.parse:_Builder", "_attachments", "attachment names, hashes"),
    ("halomail.pipeline.unit", "dedupe_key", "dedupe key (body SHA-256)"),
    ("halomail.pipeline.unit", "decide", "decide (classify, rules, correlate)"),
    ("halomail.tickets.sqlite:SQLiteTicketRepository", "add_action", "repository add_action"),
    ("halomail.tickets.sqlite:SQLiteTicketRepository", "_commit", "repository commit"),
)


def _wrap_steps(base: int, peaks: dict[str, list[int]]) -> None:
    """Record, per step, the memory held at its start and the peak inside it."""
    import functools
    import importlib

    for target, name, label in _STEPS:
        module_name, _, class_name = target.partition(":")
        owner: object = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        original = getattr(owner, name)

        def measured(
            *args: object, _original: object = original, _label: str = label, **kwargs: object
        ) -> object:
            held = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.reset_peak()
            try:
                return _original(*args, **kwargs)  # type: ignore[operator]
            finally:
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.reset_peak()
                entry = peaks.setdefault(_label, [0, 0])
                entry[0], entry[1] = max(entry[0], held), max(entry[1], peak)

        setattr(owner, name, functools.wraps(original)(measured))


def child(path: Path, mode: str) -> int:
    """Measure one run in this (fresh) process; prints one JSON line."""
    import corpus
    from bench_pipeline import make_processor

    from halomail import ParseLimits, SQLiteTicketRepository

    raw = path.read_bytes()
    limits = ParseLimits(max_message_bytes=len(raw) + 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="halomail-mem-") as tmp:
        # Warm-up: the code paths, regexes and SQLite statements, on a small email.
        warm = SQLiteTicketRepository(Path(tmp) / "warm.db")
        processor, _ = make_processor(warm, corpus.generate(5), limits=limits)
        processor.run_once()
        warm.close()

        repository = SQLiteTicketRepository(Path(tmp) / "memory.db")
        processor, connector = make_processor(repository, [raw], limits=limits)
        del raw  # the connector holds it: the baseline
        gc.collect()
        result: dict[str, object] = {}
        if mode in ("tracemalloc", "steps"):
            tracemalloc.start()
            before, _peak = tracemalloc.get_traced_memory()
            peaks: dict[str, list[int]] = {}
            if mode == "steps":
                _wrap_steps(before, peaks)
            tracemalloc.reset_peak()
            start = time.perf_counter()
            report = processor.run_once()
            result["seconds"] = time.perf_counter() - start
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            result["growth"] = peak - before
            result["steps"] = peaks
        else:
            # Where the peak cannot be reset, an earlier peak may count: an upper bound.
            result["peak_reset"] = _reset_peak_rss()
            rss_before = _rss_now()
            start = time.perf_counter()
            report = processor.run_once()
            result["seconds"] = time.perf_counter() - start
            result["growth"] = _peak_rss() - rss_before
        outcomes = report.outcomes
        result["outcomes"] = [o.outcome.value for o in outcomes]
        ticket_id = outcomes[0].ticket_id if outcomes else None
        del report, outcomes, processor, connector
        sizes: list[int] = []
        if ticket_id is not None:
            actions = repository.list_actions(ticket_id)
            sizes = [a.size for action in actions for a in action.attachments]
        result["attachment_sizes"] = sizes
        repository.close()
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Build the email, measure in subprocesses, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mib", type=float, default=50.0, help="message size in MiB (50)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("tracemalloc", "rss", "steps"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.mode)

    raw, payload_size = build_message(int(args.mib * 1024 * 1024))
    size = len(raw)
    print(
        f"one email of {size / 2**20:.1f} MiB ({size:,} bytes) with one attachment of "
        f"{payload_size / 2**20:.1f} MiB; MailProcessor, MemoryConnector -> SQLite; "
        f"Python {sys.version.split()[0]}"
    )
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="halomail-mem-") as tmp:
        path = Path(tmp) / "big.eml"
        path.write_bytes(raw)
        del raw
        script = Path(__file__).resolve()
        for mode in ("rss", "tracemalloc", "steps"):
            completed = subprocess.run(
                [sys.executable, str(script), "--child", str(path), "--mode", mode],
                capture_output=True,
                text=True,
                check=False,
                cwd=script.parent,
            )
            if completed.returncode != 0:
                print(completed.stdout + completed.stderr, file=sys.stderr)
                return 1
            results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])

    print()
    print(f"{'measure':<36} {'growth MiB':>11} {'x message':>10} {'run s':>7}")
    rss, traced = results["rss"], results["tracemalloc"]
    rows = [
        (
            "peak RSS (VmHWM) - RSS before the run"
            if rss["peak_reset"]
            else "peak RSS, not reset (upper bound)",
            rss["growth"],
            rss["seconds"],
        ),
        ("tracemalloc peak - traced before", traced["growth"], traced["seconds"]),
    ]
    for name, growth, seconds in rows:
        print(
            f"{name:<36} {_mib(growth):>11.1f} {_num(growth) / size:>9.2f}x {_num(seconds):>7.2f}"
        )
    worst = max(_num(rss["growth"]), _num(traced["growth"]))
    print()
    print(f"peak growth / message size: {worst / size:.2f}x (goal < 3x; the larger of the two)")
    print()
    print("where the peak is (tracemalloc, Python allocations over the baseline, per step):")
    print(f"{'step':<36} {'held at start MiB':>18} {'peak inside MiB':>16} {'x message':>10}")
    steps = results["steps"]["steps"]
    assert isinstance(steps, dict)
    for _target, _name, label in _STEPS:
        if label in steps:
            held, peak = steps[label]
            print(f"{label:<36} {_mib(held):>18.1f} {_mib(peak):>16.1f} {peak / size:>9.2f}x")

    problems = []
    for mode, result in results.items():
        if result["outcomes"] != ["created"]:
            problems.append(f"{mode}: outcomes {result['outcomes']}, expected ['created']")
        if result["attachment_sizes"] != [payload_size]:
            problems.append(
                f"{mode}: stored attachment sizes {result['attachment_sizes']}, "
                f"expected [{payload_size}]"
            )
    problems += text_body_peaks()
    for problem in problems:
        print(f"DISAGREEMENT: {problem}", file=sys.stderr)
    return 1 if problems else 0


_TEXT_LINES = {
    # label: (one line of the body, its charset, its transfer encoding)
    "ASCII, CRLF line breaks": (
        b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n",
        "us-ascii",
        None,
    ),
    "ASCII, LF line breaks": (
        b"The quick brown fox jumps over the lazy dog, again and again and again.\n",
        "us-ascii",
        None,
    ),
    "Latin-1 (French), 8bit": (
        "Le c\u0153ur d\u00e9\u00e7u mais l'\u00e2me plut\u00f4t na\u00efve, Lou\u00ffs "
        "r\u00eava de crapa\u00fcter en cano\u00eb.\r\n".replace("\u0153", "oe").encode("latin-1"),
        "iso-8859-1",
        None,
    ),
    "UTF-8 (French), 8bit": (
        "Le c\u0153ur d\u00e9\u00e7u mais l'\u00e2me plut\u00f4t na\u00efve, Lou\u00ffs "
        "r\u00eava de crapa\u00fcter en cano\u00eb.\r\n".encode(),
        "utf-8",
        None,
    ),
    "UTF-8 (French), quoted-printable": (
        b"Le c=C5=93ur d=C3=A9=C3=A7u mais l'=C3=A2me plut=C3=B4t na=C3=AFve, Lou=C3=BFs "
        b"r=C3=AAva de crapa=C3=BCter en cano=C3=AB.\r\n",
        "utf-8",
        "quoted-printable",
    ),
    "UTF-8 (Russian), 8bit": (
        "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 "
        "\u043c\u044f\u0433\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a.\r\n".encode(),
        "utf-8",
        None,
    ),
}


def _text_email(line: bytes, charset: str, encoding: str | None) -> tuple[bytes, int]:
    """An email of the default 25 MB limit whose one plain-text body repeats ``line``."""
    from halomail.inbound.models import ParseLimits

    head = (
        "From: Alice <alice@customer.example>\r\nTo: support@helpdesk.example\r\n"
        "Subject: Log file\r\nMessage-ID: <big-text@customer.example>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset={charset}\r\n"
        + (f"Content-Transfer-Encoding: {encoding}\r\n" if encoding else "")
        + "\r\n"
    ).encode()
    body = line * ((ParseLimits().max_message_bytes - len(head)) // len(line))
    return head + body, len(body)


def _pipeline_peak(raw: bytes, *, body_rule: bool) -> tuple[int, list[str]]:
    """The tracemalloc peak of one ``run_once`` over ``raw`` into SQLite (the 40 rules
    of ``bench_pipeline.py``, and with ``body_rule`` one more on the body's new text),
    and the outcomes."""
    import corpus
    from bench_pipeline import bench_rules, make_processor

    from halomail import EmailRule, RuleType, SQLiteTicketRepository

    rules = bench_rules()
    if body_rule:
        rules.append(
            EmailRule(name="outage", type=RuleType.IGNORE, sequence=1, body=("service outage",))
        )
    with tempfile.TemporaryDirectory(prefix="halomail-mem-") as tmp:
        repository = SQLiteTicketRepository(Path(tmp) / "text.db")
        warm, _ = make_processor(repository, corpus.generate(3), rules=rules)
        warm.run_once()  # code paths, regexes and statements
        processor, _ = make_processor(repository, [raw], rules=rules)
        gc.collect()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        report = processor.run_once()
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        repository.close()
    return peak - before, [o.outcome.value for o in report.outcomes]


def text_body_peaks() -> list[str]:
    """Print the peaks of a 25 MB text body, parsed and through the whole pipeline, for
    several charsets; return problems."""
    from halomail import parse_email

    print()
    print(
        "a 25 MB plain-text email (tracemalloc peak over the body's size): parse_email + "
        ".text, and the whole pipeline (40 rules), then with a rule on the new text too"
    )
    print(f"{'body':<34} {'body MiB':>9} {'parse + text':>13} {'pipeline':>9} {'+ body rule':>12}")
    problems = []
    for label, (line, charset, encoding) in _TEXT_LINES.items():
        raw, size = _text_email(line, charset, encoding)
        gc.collect()
        tracemalloc.start()
        text = parse_email(raw).text
        _current, parsed = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        chars = len(text)
        del text
        peak, outcomes = _pipeline_peak(raw, body_rule=False)
        ruled, ruled_outcomes = _pipeline_peak(raw, body_rule=True)
        print(
            f"{label:<34} {_mib(size):>9.1f} {parsed / size:>12.2f}x {peak / size:>8.2f}x "
            f"{ruled / size:>11.2f}x"
        )
        if outcomes != ["created"] or ruled_outcomes != ["created"] or chars < size // 4:
            problems.append(f"text body ({label}): {outcomes}, {chars} characters of text")
    print("(goal < 2x: see docs/performance.md for what holds the rest beyond ASCII)")
    return problems


if __name__ == "__main__":
    sys.exit(main())
