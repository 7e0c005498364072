"""The reply corpus: replies as mail clients write them, each with the new text expected.

``tests/replies/<language>-<client>-<shape>.txt`` holds one reply as a client sends it,
then the line ``=== expected new text ===``, then what :func:`strip_reply` should keep.
The cases were written for this project; they cover the attribution lines, header
blocks and mobile footers of the major clients in twenty-one languages, and the traps
(text that only looks like history, forwards, answers written below the quote).

The agreement is printed at the end of the pytest run (``reply corpus: 196/196 agree
(100.0%)``) and the suite fails below 90%.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from halomail.inbound.reply import strip_reply

CORPUS = Path(__file__).parent / "replies"
SEPARATOR = "\n=== expected new text ===\n"
#: The agreement below which the suite fails (issue 15 asks for at least 90%).
REQUIRED = 0.90

#: The languages the corpus must cover, by the prefix of its file names.
LANGUAGES = {
    "en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi",
    "pl", "cs", "ru", "uk", "vi", "tr", "ja", "zh", "ko", "hu",
}  # fmt: skip
#: The clients and shapes it must cover, by a word of its file names.
SHAPES = {
    "gmail", "outlook", "apple-mail", "thunderbird", "ios", "android", "samsung",
    "yahoo", "yandex", "mail-ru", "zoho", "lotus-notes", "mobile-footer",
    "header-block", "original-message", "date-first", "sent-first", "wrapped",
    "signature", "trap-sentence-on-wrote", "trap-inline-quote", "trap-forward",
    "trap-bottom-posting", "trap-empty-reply", "joined-line",
}  # fmt: skip


@attrs.frozen
class Case:
    """One reply of the corpus and the new text expected from it."""

    name: str
    reply: str
    expected: str


def load_cases() -> list[Case]:
    """Every case of ``tests/replies``, by file name."""
    cases = []
    for path in sorted(CORPUS.glob("*.txt")):
        reply, expected = path.read_text(encoding="utf-8").split(SEPARATOR)
        cases.append(Case(path.stem, reply, expected.removesuffix("\n")))
    return cases


class _Summary:
    """A pytest plugin that prints the corpus agreement in the terminal summary."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print the agreement line under the test results."""
        terminalreporter.write_line(self.line)


def test_every_case_file_holds_one_reply_and_its_expected_text() -> None:
    """Each corpus file splits into a reply and an expected text at one separator line."""
    paths = sorted(CORPUS.glob("*.txt"))
    assert len(paths) >= 150
    for path in paths:
        assert path.read_text(encoding="utf-8").count(SEPARATOR) == 1, path.name


def test_the_corpus_covers_every_language_client_and_trap() -> None:
    """Twenty-one languages and every client, shape and trap of issue 15 have cases."""
    names = [case.name for case in load_cases()]
    assert {name.split("-")[0] for name in names} >= LANGUAGES
    missing = {shape for shape in SHAPES if not any(shape in name for name in names)}
    assert not missing
    for language in LANGUAGES:  # each language: an attribution, a header block, a footer
        own = [name for name in names if name.startswith(f"{language}-")]
        for shape in ("attribution", "header-block", "footer"):
            assert any(shape in name for name in own), (language, shape)


def test_quote_stripping_agrees_with_the_reply_corpus(request: pytest.FixtureRequest) -> None:
    """strip_reply gives the expected new text on at least 90% of the corpus."""
    cases = load_cases()
    disagree = [case.name for case in cases if strip_reply(case.reply) != case.expected]
    agree = len(cases) - len(disagree)
    line = f"reply corpus: {agree}/{len(cases)} agree ({100 * agree / len(cases):.1f}%)"
    if not request.config.pluginmanager.has_plugin("halomail-reply-corpus"):
        request.config.pluginmanager.register(_Summary(line), "halomail-reply-corpus")
    assert agree / len(cases) >= REQUIRED, f"{line}; disagree: {', '.join(disagree)}"


#: Shapes that other reply parsers' fixtures (github/email_reply_parser and its ports,
#: mailgun/talon) showed halomail missing, written again for this corpus: each must agree,
#: whatever the agreement of the whole.
SHAPES_FROM_OTHER_PARSERS = (
    "da-outlook-oprindelig-besked",
    "en-apple-mail-attribution-date-split",
    "en-gmail-date-first-attribution-no-colon",
    "en-gmail-joined-line-same-line",
    "en-gmail-rewrapped-quote",
    "en-gmail-wrapped-address-attribution",
    "en-gmail-wrapped-address-wrote",
    "en-kmail-attribution-no-colon-bottom-posted",
    "en-mailman-list-footer",
    "en-mailman3-list-footer",
    "en-outlook-dash-rule-header-block",
    "en-thunderbird-rewrapped-link",
    "en-trap-inline-lowercase-answer",
    "en-typeapp-mobile-footer",
    "en-webmail-header-block-date-to",
    "en-webmail-header-block-from-date",
    "en-yahoo-joined-line-dashes",
    "fr-outlook-com-header-block",
    "fr-webmail-message-du-header-block",
)


@pytest.mark.parametrize("name", SHAPES_FROM_OTHER_PARSERS)
def test_shapes_other_parsers_fixtures_showed_are_stripped(name: str) -> None:
    """Outlook.com's "Envoyé le :" and "Objet :x", French webmail's "Message du :", a
    Gmail attribution wrapped before its ">", one wrapped after the comma of its date, a
    rule of dashes above a header block, Danish "Oprindelig besked", TypeApp's footer,
    Mailman's list footer, quoted lines a client wrapped again without their ">", an
    attribution without its colon above the quote (old Gmail's "2011/4/7 Name <a@b>",
    "On <date>, Name wrote"), one sharing its line with the end of the reply, and a
    header block of two lines (a dated "Date:" with an addressed "From:" or "To:") are
    all cut; an answer in lower case between quoted lines is kept."""
    (case,) = [case for case in load_cases() if case.name == name]
    assert strip_reply(case.reply) == case.expected


def test_the_python_block_of_the_new_text_section_of_docs_rules_runs() -> None:
    """docs/rules.md's example of the new text of a reply runs as written."""
    doc = (Path(__file__).parent.parent / "docs" / "rules.md").read_text(encoding="utf-8")
    section = doc.split("### The new text of a reply", 1)[1].split("\n#", 1)[0]
    (block,) = re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/rules.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["email"].new_text == "Danke, jetzt geht es."  # type: ignore[attr-defined]
