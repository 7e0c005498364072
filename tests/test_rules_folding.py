"""Body rules search a body without lower-casing it when every needle is ASCII (#18).

``folded_utf8`` lower-cases the ASCII letters of the UTF-8 bytes only; these tests hold
it, and the engine that uses it, to what searching ``text.lower()`` finds.
"""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from halomail.inbound.models import InboundEmail
from halomail.rules import EmailRule, RuleEngine, RuleType
from halomail.rules._automaton import LOWER_CASE_ASCII, Automaton, folded_utf8

# Upper and lower case ASCII, the two characters that lower-case to ASCII, a final
# sigma (whose lower case depends on what follows), other multibyte letters, a newline.
ALPHABET = "aAkKiI \u0130\u212a\u03a3\u03c3\u00e9\u00c9\U0001f600\n"
_ASCII_NEEDLE = st.text(alphabet="akiAKI ", min_size=1, max_size=3).filter(str.strip)
_TEXT = st.text(alphabet=ALPHABET, max_size=20)


def test_only_two_characters_beyond_ascii_lower_case_to_ascii() -> None:
    """Every code point checked: the list the folding relies on is complete."""
    found = [
        chr(code)
        for code in range(128, sys.maxunicode + 1)
        if any(character.isascii() for character in chr(code).lower())
    ]
    assert tuple(found) == LOWER_CASE_ASCII


@settings(max_examples=300, deadline=None)
@given(needles=st.lists(_ASCII_NEEDLE, min_size=1, max_size=5, unique=True), text=_TEXT)
def test_folded_bytes_hold_the_ascii_needles_the_lowered_text_holds(
    needles: list[str], text: str
) -> None:
    """Where folding applies, it finds exactly the needles `in text.lower()` finds."""
    lowered_needles = list(dict.fromkeys(needle.lower() for needle in needles))
    data = folded_utf8(text)
    expected = {i for i, needle in enumerate(lowered_needles) if needle in text.lower()}
    if data is None:
        assert any(character in text for character in LOWER_CASE_ASCII)
    else:
        assert Automaton(lowered_needles).find_data(data) == expected


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(st.lists(_ASCII_NEEDLE, min_size=1, max_size=2), st.booleans()),
        max_size=6,
    ),
    new=_TEXT,
    rest=_TEXT,
)
def test_body_rules_decide_as_the_lowered_text_says_in_every_scan_mode(
    rules: list[tuple[list[str], bool]], new: str, rest: str
) -> None:
    """New text and full body, upper case and multibyte: every mode agrees with `in`."""
    engine_rules = [
        EmailRule(
            name=f"r{index}",
            type=RuleType.HELP_REQUEST,
            sequence=index,
            body=tuple(needles),
            scan_full_body=full,
        )
        for index, (needles, full) in enumerate(rules)
    ]
    email = InboundEmail(
        message_id="m@example",
        sender=None,
        subject="",
        text=new + rest,
        new_text=new,
        size=1,
        sha256="0" * 64,
    )
    expected = next(
        (
            f"r{index}"
            for index, (needles, full) in enumerate(rules)
            if any(needle.lower() in (new + rest if full else new).lower() for needle in needles)
        ),
        None,
    )
    for scan in ("auto", "automaton", "direct"):
        engine = RuleEngine(engine_rules, scan=scan)
        decided = engine.evaluate(email, "Support")
        assert (decided.rule.name if decided else None) == expected, scan
        assert engine.evaluate_sequential(email, "Support") == decided
