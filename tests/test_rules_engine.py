"""The rule engine: criteria semantics, order, explanations, and the index's exactness."""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail import parse_email
from halomail.inbound.models import Address, Attachment, InboundEmail
from halomail.rules import (
    EmailRule,
    Explanation,
    FieldMapping,
    RuleEngine,
    RuleMatch,
    RuleType,
    extract,
)
from halomail.rules._automaton import Automaton


def mail(
    *,
    sender: str = "Alice Martin <alice@customer.example>",
    to: str = "support@corp.example",
    cc: str | None = None,
    subject: str = "Printer on floor 3 is jammed",
    body: str = "The printer jams on every page.\n",
    attachments: tuple[str, ...] = (),
) -> InboundEmail:
    """A realistic email built as bytes and parsed."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Message-ID"] = "<engine@customer.example>"
    message.set_content(body)
    for filename in attachments:
        message.add_attachment(b"data", maintype="application", subtype="octet-stream",
                               filename=filename)  # fmt: skip
    return parse_email(message.as_bytes())


def rule(
    name: str = "R", sequence: int = 10, type: str = "help_request", **kwargs: Any
) -> EmailRule:
    """A rule with defaults for the required keys."""
    return EmailRule(name=name, type=type, sequence=sequence, **kwargs)


def decide(rules: list[EmailRule], email: InboundEmail, mailbox: str = "Support") -> str | None:
    """The deciding rule's name, after checking that every way of evaluating agrees."""
    names = set()
    for scan in ("auto", "automaton", "direct"):
        engine = RuleEngine(rules, scan=scan)  # type: ignore[arg-type]
        indexed = engine.evaluate(email, mailbox)
        assert indexed == engine.evaluate_sequential(email, mailbox)
        assert engine.explain(email, mailbox).decision == indexed
        names.add(indexed.rule.name if indexed else None)
    assert len(names) == 1
    return names.pop()


def reason(
    rules: list[EmailRule], email: InboundEmail, name: str, mailbox: str = "Support"
) -> str | None:
    """Why rule ``name`` did not match, as explain() words it."""
    explanation = RuleEngine(rules).explain(email, mailbox)
    (step,) = [step for step in explanation.steps if step.rule.name == name]
    return step.reason


class TestOrder:
    """The first matching rule by (sequence, name) decides."""

    def test_lowest_sequence_wins(self) -> None:
        """Of two matching rules the lower sequence decides, whatever the list order."""
        rules = [rule("Late", 20, subject="printer"), rule("Early", 10, subject="jammed")]
        assert decide(rules, mail()) == "Early"

    def test_equal_sequences_are_ordered_by_name(self) -> None:
        """Ties in sequence go to the name that sorts first."""
        rules = [rule("Beta", 10), rule("Alpha", 10), rule("Gamma", 10)]
        assert decide(rules, mail()) == "Alpha"
        assert [r.name for r in RuleEngine(rules).rules] == ["Alpha", "Beta", "Gamma"]

    def test_rule_without_criteria_catches_everything(self) -> None:
        """A catch-all matches any email, but only after earlier rules had their turn."""
        rules = [rule("Catch-all", 99), rule("Printers", 10, subject="printer")]
        assert decide(rules, mail()) == "Printers"
        assert decide(rules, mail(subject="VPN is down")) == "Catch-all"

    def test_no_rule_matches(self) -> None:
        """With nothing matching, evaluation returns None."""
        assert decide([rule(subject="invoice")], mail()) is None
        assert decide([], mail()) is None

    def test_disabled_rules_are_skipped(self) -> None:
        """A disabled rule never matches, and explain says so."""
        rules = [rule("Off", 1, enabled=False), rule("On", 2)]
        assert decide(rules, mail()) == "On"
        assert reason(rules, mail(), "Off") == "disabled"

    def test_mailbox_limits_a_rule(self) -> None:
        """A rule for one mailbox matches only there, compared case-insensitively."""
        rules = [rule("Alerts only", 1, mailbox="Alerts"), rule("Any", 2)]
        assert decide(rules, mail(), mailbox="alerts") == "Alerts only"
        assert decide(rules, mail(), mailbox="Support") == "Any"
        assert reason(rules, mail(), "Alerts only") == "mailbox: rule is for 'Alerts'"

    def test_required_field_missing_moves_on_to_the_next_rule(self) -> None:
        """A rule whose required mapping finds nothing does not match; the next one does."""
        host = FieldMapping(target="CF_host", match="line", label="Host:", required=True)
        rules = [rule("Needs host", 1, type="alert", fields=[host]), rule("Fallback", 2)]
        assert decide(rules, mail()) == "Fallback"
        assert decide(rules, mail(body="Host: web01\n")) == "Needs host"
        assert reason(rules, mail(), "Needs host") == "required field 'CF_host' not found"

    def test_duplicate_names_are_refused(self) -> None:
        """Two rules with one name (any case) cannot be ordered reliably."""
        with pytest.raises(ValueError, match="duplicate rule name 'a'"):
            RuleEngine([rule("A"), rule("a")])

    def test_unknown_scan_mode_is_refused(self) -> None:
        """A misspelt scan mode is an error, not a silent default."""
        with pytest.raises(ValueError, match="scan must be"):
            RuleEngine([], scan="fast")  # type: ignore[arg-type]

    def test_repr(self) -> None:
        """The engine's repr counts its rules."""
        assert repr(RuleEngine([rule("A"), rule("B", enabled=False)])) == (
            "RuleEngine(2 rules, 1 disabled)"
        )


class TestCriteria:
    """Each criterion, as an administrator reads it."""

    def test_from_contains_is_case_insensitive(self) -> None:
        """`from = "Customer.EXAMPLE"` matches alice@customer.example."""
        assert decide([rule(from_="Customer.EXAMPLE")], mail()) == "R"
        assert decide([rule(from_="vendor.example")], mail()) is None

    def test_from_exact_needs_the_whole_address(self) -> None:
        """from_exact compares the whole addr-spec, ignoring case."""
        assert decide([rule(from_="ALICE@customer.example", from_exact=True)], mail()) == "R"
        assert decide([rule(from_="alice@customer", from_exact=True)], mail()) is None

    def test_display_name_is_never_matched(self) -> None:
        """`"backups@example.com" <evil@x.example>` is not backups@example.com."""
        spoof = mail(sender='"backups@example.com" <evil@x.example>')
        assert spoof.sender == Address("evil@x.example", "backups@example.com")
        rules = [
            rule("Exact", 1, from_="backups@example.com", from_exact=True),
            rule("Contains", 2, from_="backups@"),
            rule("Name", 3, from_="Martin"),
        ]
        assert decide(rules, spoof) is None
        assert decide(rules[2:], mail()) is None  # "Alice Martin" is a display name too
        assert decide([rule(from_="alice")], mail()) == "R"
        assert reason(rules, spoof, "Exact") == "from: no address is 'backups@example.com'"
        assert reason(rules, spoof, "Contains") == "from: no address contains 'backups@'"

    def test_a_list_matches_if_any_entry_matches(self) -> None:
        """`from = ["nagios@", "customer.example"]` holds for either sender."""
        rules = [rule(from_=["nagios@", "customer.example"])]
        assert decide(rules, mail()) == "R"
        assert decide(rules, mail(sender="nagios@mon.example")) == "R"
        assert decide(rules, mail(sender="bob@vendor.example")) is None
        assert reason(rules, mail(sender="bob@vendor.example"), "R") == (
            "from: no address contains any of 'nagios@', 'customer.example'"
        )

    def test_no_sender_fails_a_from_criterion(self) -> None:
        """An email without a usable From never satisfies a from criterion."""
        email = parse_email(b"To: support@corp.example\r\nSubject: hi\r\n\r\nbody\r\n")
        assert email.sender is None
        assert decide([rule(from_="@")], email) is None

    def test_to_matches_any_recipient(self) -> None:
        """A To criterion holds when any To address matches; exact compares addr-specs."""
        email = mail(to='"Sales" <sales@corp.example>, Printers <printers@corp.example>')
        assert decide([rule(to="printers@")], email) == "R"
        assert decide([rule(to="PRINTERS@corp.example", to_exact=True)], email) == "R"
        assert decide([rule(to="Printers", to_exact=True)], email) is None
        assert decide([rule(to="facilities@")], email) is None

    def test_a_contains_needle_does_not_span_two_addresses(self) -> None:
        """Each address is tested on its own: a needle across two never matches."""
        email = mail(to="a@x.example, b@y.example")
        assert decide([rule(to="example b@")], email) is None
        assert decide([rule(to="example, b@")], email) is None

    def test_cc(self) -> None:
        """A Cc criterion looks only at Cc addresses."""
        email = mail(cc="Facilities <facilities@corp.example>")
        assert decide([rule(cc="facilities@")], email) == "R"
        assert decide([rule(cc="facilities@corp.example", cc_exact=True)], email) == "R"
        assert decide([rule(cc="support@")], email) is None  # that one is in To
        assert reason([rule(cc="x@", cc_exact=True)], email, "R") == "cc: no address is 'x@'"

    def test_subject_contains(self) -> None:
        """Subject matching is "contains", case-insensitive."""
        assert decide([rule(subject="FLOOR 3")], mail()) == "R"
        assert decide([rule(subject=["vpn", "jammed"])], mail()) == "R"
        assert reason([rule(subject="vpn")], mail(), "R") == "subject: does not contain 'vpn'"

    def test_body_reads_the_new_text_unless_told_to_scan_the_full_body(self) -> None:
        """A word only in the quoted history matches only with scan_full_body."""
        reply = mail(
            subject="Re: toner",
            body="Thanks, that fixed it.\n\nOn Thu, 30 May 2024 at 16:00, Support wrote:\n"
            "> Please replace the toner cartridge.\n",
        )
        assert reply.new_text == "Thanks, that fixed it."
        assert decide([rule(body="fixed")], reply) == "R"
        assert decide([rule(body="toner")], reply) is None
        assert decide([rule(body="TONER", scan_full_body=True)], reply) == "R"
        assert reason([rule(body="toner")], reply, "R") == (
            "body: the new text does not contain 'toner'"
        )
        assert reason([rule(body="invoice", scan_full_body=True)], reply, "R") == (
            "body: the full body does not contain 'invoice'"
        )

    def test_a_needle_across_the_end_of_the_new_text_is_not_in_it(self) -> None:
        """One walk answers both body criteria, but never counts a needle straddling the cut."""
        email = InboundEmail(
            message_id=None,
            sender=Address("a@corp.example"),
            subject="s",
            text="see the error" + "thanks, the history",
            new_text="see the error",
            size=1,
            sha256="0" * 64,
        )
        rules = [
            rule("Straddles", 1, body="rt"),
            rule("History", 2, body="history", scan_full_body=True),
        ]
        assert decide(rules, email) == "History"
        assert decide([rule("Whole", body="rt", scan_full_body=True)], email) == "Whole"

    def test_attachment_name_contains(self) -> None:
        """An attachment criterion holds when any file name contains the text."""
        email = mail(attachments=("Photo 1.JPG", "notes.txt"))
        assert decide([rule(attachment=".jpg")], email) == "R"
        assert decide([rule(attachment=".pdf")], email) is None
        assert decide([rule(attachment=".pdf")], mail()) is None
        assert reason([rule(attachment=".pdf")], email, "R") == (
            "attachment: no attachment name contains '.pdf'"
        )

    def test_all_criteria_must_hold(self) -> None:
        """Criteria combine with AND; explain names the first that failed."""
        both = rule(from_="customer.example", subject="vpn")
        assert decide([both], mail()) is None
        assert decide([both], mail(subject="VPN drops")) == "R"
        assert reason([both], mail(), "R") == "subject: does not contain 'vpn'"

    def test_same_needle_in_two_criteria_of_one_rule(self) -> None:
        """A needle used by two criteria of one rule counts once for each."""
        email = mail(sender="ops@corp.example", subject="ops report")
        assert decide([rule(from_="ops", subject=["ops", "ops"])], email) == "R"
        assert decide([rule(from_="ops", subject="ops", body="ops")], email) is None


class TestExplain:
    """explain() lists every rule, why it did or did not match, and the decision."""

    @pytest.fixture
    def explanation(self) -> Explanation:
        """Four rules around a PROBLEM alert: a miss, a disabled one, the match, and one after."""
        rules = [
            rule("Backups", 5, type="service_status", from_="backups@", service="Nightly"),
            rule("Old alerts", 6, type="ignore", enabled=False),
            rule(
                "Monitoring",
                10,
                type="alert",
                from_="nagios@",
                closure_string="RECOVERY",
                fields=[FieldMapping(target="CF_host", match="line", label="Host:")],
            ),
            rule("Catch-all", 99),
        ]
        email = mail(
            sender="Nagios <nagios@mon.example>",
            subject="** PROBLEM Service Alert: web01/HTTP is CRITICAL **",
            body="Host: web01\nState: CRITICAL\n",
        )
        return RuleEngine(rules).explain(email, "Alerts")

    def test_steps(self, explanation: Explanation) -> None:
        """Every rule appears in order with its outcome."""
        assert [(s.rule.name, s.matched, s.reason) for s in explanation.steps] == [
            ("Backups", False, "from: no address contains 'backups@'"),
            ("Old alerts", False, "disabled"),
            ("Monitoring", True, None),
            ("Catch-all", False, "not evaluated (an earlier rule matched)"),
        ]
        assert explanation.decision is not None
        assert explanation.decision.rule.name == "Monitoring"

    def test_format_is_a_plain_table(self, explanation: Explanation) -> None:
        """format() gives the table a terminal shows, then the decision and its fields."""
        assert explanation.format() == (
            "seq  rule        type            result\n"
            "  5  Backups     service_status  from: no address contains 'backups@'\n"
            "  6  Old alerts  ignore          disabled\n"
            " 10  Monitoring  alert           MATCHED\n"
            " 99  Catch-all   help_request    not evaluated (an earlier rule matched)\n"
            "\n"
            "Decision: Monitoring (alert)\n"
            "  CF_host: web01\n"
            "  alert_key: service alert: web01/http"
        )

    def test_as_dict_is_json_ready(self, explanation: Explanation) -> None:
        """as_dict() carries the same facts as plain JSON types."""
        data = explanation.as_dict()
        assert json.loads(json.dumps(data)) == data
        assert data["mailbox"] == "Alerts"
        assert data["rules"][0] == {
            "name": "Backups",
            "sequence": 5,
            "type": "service_status",
            "matched": False,
            "reason": "from: no address contains 'backups@'",
        }
        assert data["decision"]["rule"] == "Monitoring"
        assert data["decision"]["send_acknowledgement"] is True
        assert data["decision"]["extraction"]["custom_fields"] == {"host": "web01"}
        assert data["decision"]["extraction"]["closing"] is False

    def test_no_decision(self) -> None:
        """With no match the table ends by saying so, and the decision is null."""
        explanation = RuleEngine([rule(subject="vpn")]).explain(mail(), "Support")
        assert explanation.format().endswith("\nDecision: no rule matched in mailbox 'Support'")
        assert explanation.as_dict()["decision"] is None

    def test_long_lists_are_shortened(self) -> None:
        """A criterion with many entries names five and counts the rest."""
        many = [f"w{i}" for i in range(8)]
        assert reason([rule(subject=many)], mail(), "R") == (
            "subject: does not contain any of 'w0', 'w1', 'w2', 'w3', 'w4' and 3 more"
        )


class TestAutomaton:
    """The Aho-Corasick automaton finds exactly the needles a naive search finds."""

    def test_textbook_example(self) -> None:
        """he, she, his, hers in "ushers": she, he and hers occur (overlapping)."""
        automaton = Automaton(["he", "she", "his", "hers"])
        assert automaton.find("ushers") == {0, 1, 3}
        assert automaton.find("") == set()
        assert automaton.find("xyz") == set()

    def test_split_answers_for_the_prefix_and_the_whole(self) -> None:
        """find_split reports needles wholly inside the prefix apart from the rest."""
        automaton = Automaton(["ab", "bc", "c"])
        assert automaton.find_split("abc", 2) == ({0}, {0, 1, 2})
        assert automaton.find_split("abc", 0) == (set(), {0, 1, 2})

    def test_empty_needle_is_refused(self) -> None:
        """An empty needle would match everywhere: refused."""
        with pytest.raises(ValueError, match="must not be empty"):
            Automaton(["a", ""])

    def test_repeated_needle_is_refused(self) -> None:
        """A needle listed twice would report only one of its ids: refused."""
        with pytest.raises(ValueError, match="must not be repeated"):
            Automaton(["a", "b", "a"])

    def test_ids_are_reported_instead_of_positions(self) -> None:
        """Given ids, matches report them, so several automata can share one numbering."""
        automaton = Automaton(["disk", "full"], ids=[40, 7])
        assert automaton.find("disk full on nas02") == {40, 7}
        assert automaton.find_split("disk full", 4) == ({40}, {40, 7})

    def test_no_needles_finds_nothing(self) -> None:
        """An automaton without needles is valid and finds nothing."""
        assert Automaton([]).find("anything") == set()
        assert Automaton([]).find_split("anything", 3) == (set(), set())

    @settings(max_examples=300, deadline=None)
    @given(
        needles=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=12, unique=True),
        text=st.text(alphabet="abcd", max_size=40),
        split=st.integers(0, 40),
    )
    def test_matches_naive_search(self, needles: list[str], text: str, split: int) -> None:
        """For random needles and texts, found == {needles that `in` finds}."""
        automaton = Automaton(needles)
        expected = {i for i, needle in enumerate(needles) if needle in text}
        assert automaton.find(text) == expected
        head = {i for i, needle in enumerate(needles) if needle in text[:split]}
        assert automaton.find_split(text, split) == (head, expected)


# -- the index decides exactly as the sequential loop: a property test ---------------------

ADDRESSES = (
    "alice@corp.example",
    "bob@corp.example",
    "backups@example.com",
    "nagios@mon.example",
    "ops@mon.example",
)
ADDRESS_NEEDLES = ("alice", "@corp", "backups@", "mon.ex", "ops@", "example.com", "b", "xyz")
DISPLAY_NAMES = ("", "Alice", "backups@example.com", "ops@mon.example")
SUBJECT_WORDS = ("backup", "failed", "OK", "Problem", "recovery", "printer", "Re:", "jammed")
SUBJECT_NEEDLES = ("backup", "failed", "ok", "problem", "print", "re", "backup failed", "jam")
BODY_WORDS = ("toner", "disk", "full", "error", "Host: web01", "thanks", "Disk full")
# "rt" and "rd" can straddle the end of the new text when the history follows it directly.
BODY_NEEDLES = ("toner", "disk", "full", "error", "host:", "disk full", "web01", "rt", "rd")
FILENAMES = ("report.csv", "scan.PDF", "photo.jpg", "")
FILE_NEEDLES = (".csv", ".pdf", "scan", ".jpg", "report", "o")
MAILBOXES = ("Support", "alerts", "Other")


def _some(pool: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=2)


# Strategies built once: constructing them inside each draw costs more than the test.
_EXACT_OR_CONTAINS = {True: _some(ADDRESSES), False: _some(ADDRESS_NEEDLES)}
_TEXT_CRITERIA = (
    ("subject", _some(SUBJECT_NEEDLES)),
    ("body", _some(BODY_NEEDLES)),
    ("attachment", _some(FILE_NEEDLES)),
)
_ONE_IN_FOUR = st.integers(0, 3)
_KINDS = st.sampled_from(["help_request", "ignore", "alert"])
_NAMES = st.sampled_from("abc")
_SEQUENCES = st.integers(0, 3)
_ENABLED = st.integers(0, 5)
_RULE_MAILBOXES = st.sampled_from(["*", "*", "*", "Support", "ALERTS"])
_HOST = FieldMapping(target="CF_host", match="line", label="Host:", required=True)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[EmailRule]:
    """Random rules over a small vocabulary, so that matches actually happen."""
    rules: list[EmailRule] = []
    count = draw(st.integers(0, 14))
    for index in range(count):
        values: dict[str, Any] = {}
        for key in ("from_", "to", "cc"):
            if draw(_ONE_IN_FOUR) == 0:
                exact = draw(st.booleans())
                values[key] = draw(_EXACT_OR_CONTAINS[exact])
                values[f"{key.rstrip('_')}_exact"] = exact
        for key, needles in _TEXT_CRITERIA:
            if draw(_ONE_IN_FOUR) == 0:
                values[key] = draw(needles)
        values["scan_full_body"] = draw(st.booleans())
        kind = draw(_KINDS)
        if kind != "ignore" and draw(st.booleans()):
            values["fields"] = [_HOST]
        rules.append(
            EmailRule(
                name=f"{draw(_NAMES)}{index}",
                type=kind,
                sequence=draw(_SEQUENCES),
                enabled=draw(_ENABLED) > 0,
                mailbox=draw(_RULE_MAILBOXES),
                **values,
            )
        )
    return rules


_ADDRESS = st.builds(Address, st.sampled_from(ADDRESSES), st.sampled_from(DISPLAY_NAMES))
_SENDER = st.one_of(st.none(), _ADDRESS)
_TO = st.lists(_ADDRESS, max_size=3)
_CC = st.lists(_ADDRESS, max_size=2)
_SHAPES = st.sampled_from(["plain", "reply", "glued", "indented"])
_FILENAMES = st.lists(st.sampled_from(FILENAMES), max_size=2)
_SUBJECT_WORDS = st.lists(st.sampled_from(SUBJECT_WORDS), max_size=4)
_BODY_WORDS = st.lists(st.sampled_from(BODY_WORDS), max_size=4)


def _words(draw: st.DrawFn, words: st.SearchStrategy[list[str]]) -> str:
    shout = draw(st.booleans())
    return " ".join(word.upper() if shout else word for word in draw(words))


@st.composite
def emails(draw: st.DrawFn) -> InboundEmail:
    """Random emails over the same vocabulary, display-name traps included."""
    new_text = _words(draw, _BODY_WORDS)
    quoted = _words(draw, _BODY_WORDS)
    # Four shapes: no history; history after the new text (one walk answers both body
    # criteria), on a new line or glued to it so needles can straddle the boundary; and
    # a new text that is not a prefix of the whole (two walks).
    text = {
        "plain": new_text,
        "reply": f"{new_text}\n> {quoted}",
        "glued": f"{new_text}{quoted}",
        "indented": f"  {new_text}\n> {quoted}",
    }[draw(_SHAPES)]
    return InboundEmail(
        message_id="m@example",
        sender=draw(_SENDER),
        subject=_words(draw, _SUBJECT_WORDS),
        text=text,
        new_text=new_text,
        size=1,
        sha256="0" * 64,
        to=tuple(draw(_TO)),
        cc=tuple(draw(_CC)),
        attachments=tuple(
            Attachment(
                filename=name,
                original_filename=name,
                storage_name="file.bin",
                content_type="application/octet-stream",
                size=0,
            )
            for name in draw(_FILENAMES)
        ),
    )


def oracle(rules: list[EmailRule], email: InboundEmail, mailbox: str) -> RuleMatch | None:
    """The semantics written down independently of the engine: a plain loop over the spec."""

    def addresses(values: tuple[Address, ...], needles: tuple[str, ...], exact: bool) -> bool:
        specs = [value.addr_spec.lower() for value in values]
        if exact:
            return any(spec == needle for spec in specs for needle in needles)
        return any(needle in spec for spec in specs for needle in needles)

    def contains(text: str, needles: tuple[str, ...]) -> bool:
        return any(needle in text.lower() for needle in needles)

    for candidate in sorted(rules, key=lambda r: (r.sequence, r.name)):
        if not candidate.enabled:
            continue
        if candidate.mailbox != "*" and candidate.mailbox.lower() != mailbox.lower():
            continue
        senders = (email.sender,) if email.sender else ()
        checks = [
            not candidate.from_ or addresses(senders, candidate.from_, candidate.from_exact),
            not candidate.to or addresses(email.to, candidate.to, candidate.to_exact),
            not candidate.cc or addresses(email.cc, candidate.cc, candidate.cc_exact),
            not candidate.subject or contains(email.subject, candidate.subject),
            not candidate.body
            or contains(email.text if candidate.scan_full_body else email.new_text, candidate.body),
            not candidate.attachment
            or any(contains(a.filename, candidate.attachment) for a in email.attachments),
        ]
        if all(checks):
            extraction = extract(candidate, email)
            if not extraction.missing_required:
                return RuleMatch(candidate, extraction)
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), batch=st.lists(emails(), min_size=1, max_size=4),
       mailbox=st.sampled_from(MAILBOXES))  # fmt: skip
def test_index_decides_exactly_as_the_sequential_loop(
    rules: list[EmailRule], batch: list[InboundEmail], mailbox: str
) -> None:
    """For random rule sets and emails, every scan mode, the loop, explain and the spec agree."""
    engines = [RuleEngine(rules, scan=scan) for scan in ("auto", "automaton", "direct")]
    for email in batch:
        expected = oracle(rules, email, mailbox)
        assert engines[0].evaluate_sequential(email, mailbox) == expected
        for engine in engines:
            assert engine.evaluate(email, mailbox) == expected
        explanation = engines[0].explain(email, mailbox)
        assert explanation.decision == expected
        matched = [step.rule.name for step in explanation.steps if step.matched]
        assert matched == ([expected.rule.name] if expected else [])


def test_rule_type_is_kept_on_the_decision() -> None:
    """The decision carries the rule object itself, type and options included."""
    backups = rule(
        "Backups",
        type="service_status",
        from_="backups@example.com",
        from_exact=True,
        service="Nightly backup",
    )
    match = RuleEngine([backups]).evaluate(mail(sender="backups@example.com"), "Support")
    assert match is not None
    assert match.rule is backups
    assert match.rule.type is RuleType.SERVICE_STATUS
