"""The rule index decides as a naive reference on any text, not only on ASCII (#18).

The automaton searches UTF-8 bytes, and the short fields (From, To, Cc, subject,
attachment names) of an email are walked together, joined by newlines. These tests
draw needles and texts from an alphabet of one-, two- and four-byte characters and the
newline itself, so a needle could only be found wrongly by matching inside a character,
or across the boundary between two values or two fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail.inbound.models import Address, Attachment, InboundEmail
from halomail.rules import EmailRule, RuleEngine, RuleType
from halomail.rules._automaton import WINDOW, Automaton, utf8

# One-byte, two-byte and four-byte characters, and the joining newline.
ALPHABET = "aé😀\n"
_NEEDLE = st.text(alphabet=ALPHABET, min_size=1, max_size=3).filter(lambda s: s.strip() != "")
_TEXT = st.text(alphabet=ALPHABET, max_size=8)
_NEEDLES = st.lists(_NEEDLE, min_size=1, max_size=2)
_FIELDS = ("to", "cc", "subject", "attachment", "body")


@st.composite
def rule_sets(draw: st.DrawFn) -> list[EmailRule]:
    """Up to 12 rules with a contains criterion or two over the alphabet, some catch-alls."""
    rules: list[EmailRule] = []
    for index in range(draw(st.integers(0, 12))):
        values: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=2, unique=True)):
            values[key] = draw(_NEEDLES)
        rules.append(
            EmailRule(
                name=f"r{index}",
                type=RuleType.HELP_REQUEST,
                sequence=draw(st.integers(0, 3)),
                mailbox=draw(st.sampled_from(["*", "*", "Support", "Other"])),
                **values,
            )
        )
    return rules


@st.composite
def emails(draw: st.DrawFn) -> InboundEmail:
    """An email whose To, Cc, subject, attachment names and body use the alphabet."""

    def address(local: str) -> Address:
        return Address(addr_spec=f"{local}@x")

    body = draw(_TEXT)
    return InboundEmail(
        message_id="m@example",
        sender=None,
        subject=draw(_TEXT),
        text=body,
        new_text=body,
        size=1,
        sha256="0" * 64,
        to=tuple(address(local) for local in draw(st.lists(_TEXT, max_size=3))),
        cc=tuple(address(local) for local in draw(st.lists(_TEXT, max_size=2))),
        attachments=tuple(
            Attachment(
                filename=name,
                original_filename=name,
                storage_name="file.bin",
                content_type="application/octet-stream",
                size=0,
            )
            for name in draw(st.lists(_TEXT, max_size=2))
        ),
    )


def reference(rules: list[EmailRule], email: InboundEmail, mailbox: str) -> str | None:
    """The spec, naively: the first rule by (sequence, name) whose every criterion holds."""

    def any_in(values: list[str], needles: tuple[str, ...]) -> bool:
        return any(needle in value.lower() for value in values for needle in needles)

    fields = {
        "to": [a.addr_spec for a in email.to],
        "cc": [a.addr_spec for a in email.cc],
        "subject": [email.subject],
        "attachment": [a.filename for a in email.attachments],
        "body": [email.new_text],
    }
    for candidate in sorted(rules, key=lambda r: (r.sequence, r.name)):
        if candidate.mailbox not in ("*", mailbox):
            continue
        if all(
            any_in(fields[key], getattr(candidate, key))
            for key in _FIELDS
            if getattr(candidate, key)
        ):
            return candidate.name
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), email=emails(), mailbox=st.sampled_from(["Support", "Other"]))
def test_every_scan_mode_decides_as_the_reference_on_multibyte_text(
    rules: list[EmailRule], email: InboundEmail, mailbox: str
) -> None:
    """Random rules and emails over a multibyte alphabet with newlines: all engines agree."""
    expected = reference(rules, email, mailbox)
    for scan in ("auto", "automaton", "direct"):
        engine = RuleEngine(rules, scan=scan)  # type: ignore[arg-type]
        decided = engine.evaluate(email, mailbox)
        assert (decided.rule.name if decided else None) == expected, scan
        assert engine.evaluate_sequential(email, mailbox) == decided


@settings(max_examples=300, deadline=None)
@given(
    needles=st.lists(_NEEDLE, max_size=6, unique=True),
    text=st.text(alphabet=ALPHABET + "\ud800", max_size=12),
    split=st.integers(0, 12),
)
def test_the_automaton_finds_what_in_finds_in_any_characters(
    needles: list[str], text: str, split: int
) -> None:
    """Byte search reports exactly the needles `in` finds, lone surrogates included."""
    automaton = Automaton(needles)
    expected = {i for i, needle in enumerate(needles) if needle in text}
    assert automaton.find(text) == expected
    head = {i for i, needle in enumerate(needles) if needle in text[:split]}
    assert automaton.find_split(text, split) == (head, expected)


def test_a_needle_is_not_found_across_two_recipients() -> None:
    """'a\\nb' is in the joined To values but in neither address: no match, in any mode."""
    email = InboundEmail(
        message_id="m@example",
        sender=None,
        subject="",
        text="",
        new_text="",
        size=1,
        sha256="0" * 64,
        to=(Address(addr_spec="x@a"), Address(addr_spec="b@y")),
    )
    spanning = EmailRule(name="span", type=RuleType.IGNORE, sequence=1, to="a\nb@")
    whole = EmailRule(name="whole", type=RuleType.IGNORE, sequence=2, to="b@y")
    subject = EmailRule(name="subject", type=RuleType.IGNORE, sequence=0, subject="b@y")
    for scan in ("auto", "automaton", "direct"):
        engine = RuleEngine([spanning, whole, subject], scan=scan)  # type: ignore[arg-type]
        decided = engine.evaluate(email, "Support")
        assert decided is not None
        assert decided.rule.name == "whole", scan


# -- long texts are searched a window at a time --------------------------------------------


def test_needles_across_window_boundaries_are_found_where_they_are() -> None:
    """Needles straddling, starting and ending at every window edge: as `in` finds them."""
    needles = ["edge", "é😀x", "zzzz", "q", "nothere"]
    pieces = []
    for window in range(1, 4):
        edge = window * WINDOW
        # "edge" straddles a boundary; "é😀x" (7 bytes) ends just past the next one.
        pieces.append((edge - 2, "edge"))
        pieces.append((edge + WINDOW - 4, "é😀x"))
    text = list("." * (4 * WINDOW))
    for offset, needle in pieces:
        # Offsets count bytes of an ASCII filler, so only the multibyte needle shifts.
        text[offset : offset + len(needle)] = needle
    long_text = "".join(text) + "q"
    automaton = Automaton(needles)
    expected = {i for i, needle in enumerate(needles) if needle in long_text}
    assert expected == {0, 1, 3}
    assert automaton.find(long_text) == expected
    split = WINDOW + 1
    head = {i for i, needle in enumerate(needles) if needle in long_text[:split]}
    assert automaton.find_split(long_text, split) == (head, expected)
    data = utf8(long_text)
    where = {(start, end) for position, start, end in automaton.matches(data) if position == 0}
    starts = [i for i in range(len(data)) if data.startswith(b"edge", i)]
    assert where == {(start, start + 4) for start in starts}
    assert len(starts) == 3


def test_a_repetitive_megabyte_is_searched_in_bounded_memory() -> None:
    """1 MB of 'a' against 'a', 'aa', 'aaa': 3 million matches, never all held at once."""
    # In a fresh process, so that its peak size (ru_maxrss, in KiB) is this search's.
    script = """
import json, resource
from halomail.rules._automaton import Automaton
automaton = Automaton(["a", "aa", "aaa", "b"])
text = "a" * 1_000_000
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
found = automaton.find(text)
head, whole = automaton.find_split(text, 10)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps([sorted(found), sorted(head), sorted(whole), grown * 1024]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    found, head, whole, grown = json.loads(result.stdout)
    assert found == head == whole == [0, 1, 2]
    # Listing every match at once takes over 400 MB; a window's worth is a few MB.
    assert grown < 40_000_000, f"grew {grown / 1e6:.0f} MB"
