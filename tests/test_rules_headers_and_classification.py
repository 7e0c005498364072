"""Rule criteria on any header and on the classification, and where rules run in the
pipeline relative to bounces, loops and the spam policy (issue 15, point 7)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail import parse_email
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import ConfigError
from halomail.inbound.classify import classify
from halomail.inbound.models import Classification, InboundEmail
from halomail.rules import EmailRule, HeaderMatch, RuleEngine, rules_from_config
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.models import TicketStatus
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email


def mail(headers: Mapping[str, str] | None = None, *, subject: str = "Printer") -> InboundEmail:
    """A person's email with the given extra top-level headers, parsed."""
    return parse_email(make_email(subject=subject, headers=dict(headers or {})))


def rule(name: str = "R", sequence: int = 10, **kwargs: Any) -> EmailRule:
    """A help_request rule with the given criteria."""
    return EmailRule(name=name, type=kwargs.pop("type", "help_request"), sequence=sequence,
                     **kwargs)  # fmt: skip


def decided(rules: list[EmailRule], email: InboundEmail, **kwargs: Any) -> str | None:
    """The deciding rule's name, after checking every way of evaluating agrees."""
    names = set()
    for scan in ("auto", "automaton", "direct"):
        engine = RuleEngine(rules, scan=scan)  # type: ignore[arg-type]
        match = engine.evaluate(email, "Support", **kwargs)
        assert match == engine.evaluate_sequential(email, "Support", **kwargs)
        assert engine.explain(email, "Support", **kwargs).decision == match
        names.add(match.rule.name if match else None)
    (name,) = names
    return name


def load_one(**table: Any) -> EmailRule:
    """One [[rules]] table loaded as the configuration loader does."""
    (loaded,) = rules_from_config([{"name": "R", "type": "help_request", "sequence": 1, **table}])
    return loaded


def load_error(**table: Any) -> ConfigError:
    """The error loading one [[rules]] table gives."""
    with pytest.raises(ConfigError) as caught:
        load_one(**table)
    return caught.value


class TestLoading:
    """`header` and `classification` read from halomail.toml tables."""

    def test_a_header_table_and_an_array_of_them(self) -> None:
        """One table, or an array of tables (any holds); names keep their spelling."""
        one = load_one(header={"name": "X-Spam-Flag", "contains": "YES"})
        assert one.header == (HeaderMatch("X-Spam-Flag", ("yes",)),)
        several = load_one(
            header=[
                {"name": "X-Spam-Flag", "contains": ["YES", "TRUE"]},
                {"name": "X-Mailer"},
            ]
        )
        assert several.header == (
            HeaderMatch("X-Spam-Flag", ("yes", "true")),
            HeaderMatch("X-Mailer"),
        )
        assert several.has_criteria

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("spam", ("spam",)),
            (["Bulk", "auto_reply"], ("bulk", "auto-reply")),
            (["auto-reply", "bounce"], ("auto-reply", "bounce")),
        ],
    )
    def test_classification_names(self, value: Any, expected: tuple[str, ...]) -> None:
        """A name or a list of names; `auto_reply` is `auto-reply`; case does not matter."""
        assert load_one(classification=value).classification == expected

    @pytest.mark.parametrize(
        ("table", "key_path", "message"),
        [
            ({"header": {"contains": "YES"}}, "rules[0].header.name", "required"),
            ({"header": [{"name": "X-A"}, {}]}, "rules[0].header[1].name", "required"),
            ({"header": {"name": ""}}, "rules[0].header.name", "must not be empty"),
            ({"header": {"name": "X-Spam-Flag:"}}, "rules[0].header.name", "not a header name"),
            (
                {"header": {"name": "X-A", "contains": ""}},
                "rules[0].header.contains",
                "must not be empty",
            ),
            ({"header": {"name": "X-A", "contain": "x"}}, "rules[0].header.contain", "unknown"),
            ({"header": "X-Spam-Flag"}, "rules[0].header", "expected a table like"),
            ({"header": []}, "rules[0].header", "expected a table like"),
            ({"classification": "spma"}, "rules[0].classification", "did you mean 'spam'"),
            (
                {"classification": ["spam", "newsletter"]},
                "rules[0].classification[1]",
                "unknown classification 'newsletter': expected one of 'auto-reply', 'bounce'",
            ),
            ({"classification": []}, "rules[0].classification", "must not be an empty array"),
            ({"classification": 1}, "rules[0].classification", "expected a string or an array"),
        ],
    )
    def test_mistakes_are_refused_at_their_key(
        self, table: dict[str, Any], key_path: str, message: str
    ) -> None:
        """An unknown classification or a header criterion without a name names its key."""
        error = load_error(**table)
        assert error.key_path == key_path
        assert message in error.message

    def test_python_rules_are_validated_too(self) -> None:
        """EmailRule refuses an unknown classification; HeaderMatch a nameless header."""
        with pytest.raises(ConfigError, match="unknown classification 'ham'"):
            rule(classification="ham")
        with pytest.raises(ConfigError, match="required"):
            HeaderMatch("  ")
        built = rule(header={"name": "X-Spam", "contains": "Yes"}, classification="AUTO_REPLY")
        assert built.header == (HeaderMatch("X-Spam", "yes"),)
        assert built.classification == ("auto-reply",)


class TestHeaderCriterion:
    """`header`: a top-level header by name contains a string, or is present."""

    def test_name_and_value_are_case_insensitive(self) -> None:
        """`x-spam-flag` contains `yes` matches `X-Spam-Flag: YES`."""
        rules = [rule(header=HeaderMatch("x-spam-flag", "yes"))]
        assert decided(rules, mail({"X-Spam-Flag": "YES"})) == "R"
        assert decided(rules, mail({"X-Spam-Flag": "NO"})) is None
        assert decided(rules, mail()) is None

    def test_presence_without_contains(self) -> None:
        """A header criterion without `contains` holds when the header is there at all."""
        rules = [rule(header=HeaderMatch("X-Mailer"))]
        assert decided(rules, mail({"X-Mailer": "Veeam Backup 12"})) == "R"
        assert decided(rules, mail({"X-Mailer": ""})) == "R"
        assert decided(rules, mail()) is None

    def test_any_of_several_headers(self) -> None:
        """A list of header criteria holds when any of them does."""
        rules = [
            rule(header=[HeaderMatch("X-Spam-Flag", "yes"), HeaderMatch("X-Spam", "yes")]),
        ]
        assert decided(rules, mail({"X-Spam": "Yes"})) == "R"
        assert decided(rules, mail({"X-Spam-Flag": "YES"})) == "R"
        assert decided(rules, mail({"X-Spam": "No"})) is None

    def test_every_value_of_a_repeated_header_is_searched(self) -> None:
        """`Received` appears many times: a match in any of them counts."""
        message = make_email().replace(
            b"From:",
            b"Received: from a.example by mx\r\nReceived: from relay.partner.example by a\r\nFrom:",
            1,
        )
        rules = [rule(header=HeaderMatch("Received", "partner.example"))]
        assert decided(rules, parse_email(message)) == "R"

    def test_with_other_criteria_all_must_hold(self) -> None:
        """A header criterion and a subject criterion on one rule: both must hold."""
        rules = [rule(subject="invoice", header=HeaderMatch("X-Mailer", "sap"))]
        assert decided(rules, mail({"X-Mailer": "SAP ERP"}, subject="Invoice 42")) == "R"
        assert decided(rules, mail({"X-Mailer": "SAP ERP"}, subject="Hello")) is None
        assert decided(rules, mail({"X-Mailer": "Outlook"}, subject="Invoice 42")) is None

    def test_a_forwarded_messages_headers_are_not_read(self) -> None:
        """Only the top-level headers count, never those of an attached message."""
        inner = EmailMessage(policy=SMTP)
        inner["From"] = "spammer@spam.example"
        inner["X-Spam-Flag"] = "YES"
        inner.set_content("buy now")
        outer = EmailMessage(policy=SMTP)
        outer["From"] = "alice@customer.example"
        outer["To"] = "support@helpdesk.example"
        outer["Subject"] = "Is this spam?"
        outer.set_content("See attached.")
        outer.add_attachment(inner)
        rules = [rule(header=HeaderMatch("X-Spam-Flag", "yes"))]
        assert decided(rules, parse_email(outer.as_bytes())) is None

    def test_explain_says_which_header_failed(self) -> None:
        """The explanation names the header and what it should have contained."""
        rules = [rule(header=[HeaderMatch("X-Spam-Flag", "yes"), HeaderMatch("X-Mailer")])]
        (step,) = RuleEngine(rules).explain(mail(), "Support").steps
        assert step.reason == "header: no X-Spam-Flag contains 'yes' or X-Mailer is present"

    def test_a_huge_header_is_searched_within_a_bound(self) -> None:
        """A 200 KB header is searched only in its first MAX_HEADER_CHARS characters."""
        huge = "a" * 200_000
        rules = [rule(header=HeaderMatch("X-Report", "needle"))]

        def with_report(value: str) -> InboundEmail:
            # Built directly: whether the parser keeps such a header is the parser's
            # business; the engine must bound its work whatever it is given.
            email = mail()
            return attrs.evolve(email, headers=(*email.headers, ("X-Report", value)))

        assert decided(rules, with_report("needle " + huge)) == "R"
        assert decided(rules, with_report(huge + " needle")) is None


class TestClassificationCriterion:
    """`classification`: the email is one of the named kinds."""

    @pytest.mark.parametrize(
        ("headers", "name"),
        [
            ({"X-Spam-Flag": "YES"}, "spam"),
            ({"Precedence": "bulk"}, "bulk"),
            ({"Auto-Submitted": "auto-replied"}, "auto-reply"),
            ({"X-Failed-Recipients": "bob@x.example"}, "bounce"),
        ],
    )
    def test_each_classification_can_be_named(self, headers: dict[str, str], name: str) -> None:
        """A rule naming a classification matches exactly the emails classified so."""
        rules = [rule(classification=name)]
        email = mail(headers)
        assert decided(rules, email) == "R"
        assert decided(rules, email, classification=classify(email)) == "R"
        assert decided(rules, mail()) is None

    def test_any_of_several(self) -> None:
        """A list of classifications holds when the email is any of them."""
        rules = [rule(classification=["spam", "bulk"])]
        assert decided(rules, mail({"List-Id": "<news.example>"})) == "R"
        assert decided(rules, mail({"Auto-Submitted": "auto-replied"})) is None

    def test_the_callers_classification_is_the_one_used(self) -> None:
        """The engine tests the classification it is given (the pipeline's, which knows
        our loop token), not one of its own."""
        rules = [rule(classification="spam")]
        flagged = Classification(spam=True, reasons=("spam: X-Spam: yes",))
        assert decided(rules, mail(), classification=flagged) == "R"
        assert decided(rules, mail({"X-Spam": "yes"}), classification=Classification()) is None

    def test_explain_names_the_classification_missing(self) -> None:
        """The explanation says which classification the email did not have."""
        steps = (
            RuleEngine(
                [rule("A", classification="spam"), rule("B", 20, classification=["bulk", "bounce"])]
            )
            .explain(mail(), "Support")
            .steps
        )
        assert [step.reason for step in steps] == [
            "classification: not spam",
            "classification: not any of bulk, bounce",
        ]


VERDICT_HEADERS = st.sampled_from(
    [
        {},
        {"X-Spam-Flag": "YES"},
        {"X-Spam-Flag": "NO"},
        {"Precedence": "bulk"},
        {"Auto-Submitted": "auto-replied"},
        {"X-Failed-Recipients": "a@b.example"},
        {"X-Mailer": "Veeam"},
        {"X-Mailer": "Outlook", "X-Spam": "yes"},
    ]
)
HEADER_MATCHES = st.sampled_from(
    [
        HeaderMatch("X-Spam-Flag", "yes"),
        HeaderMatch("x-spam-flag", "no"),
        HeaderMatch("X-Mailer"),
        HeaderMatch("X-MAILER", ("veeam", "outlook")),
        HeaderMatch("X-Spam", "y"),
        HeaderMatch("Subject", "printer"),
    ]
)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[EmailRule]:
    """Rules mixing header, classification and subject criteria."""
    rules = []
    for index in range(draw(st.integers(1, 8))):
        criteria: dict[str, Any] = {}
        if draw(st.booleans()):
            criteria["header"] = draw(st.lists(HEADER_MATCHES, min_size=1, max_size=2))
        if draw(st.booleans()):
            criteria["classification"] = draw(
                st.lists(st.sampled_from(["spam", "bulk", "auto-reply", "bounce"]), min_size=1)
            )
        if draw(st.booleans()):
            criteria["subject"] = draw(st.sampled_from(["printer", "vpn"]))
        rules.append(rule(f"R{index}", draw(st.integers(1, 5)), **criteria))
    return rules


def oracle(rules: list[EmailRule], email: InboundEmail) -> str | None:
    """The first matching rule by the criteria's plain definitions."""
    flags = set(classify(email).flags)
    for candidate in sorted(rules, key=lambda r: (r.sequence, r.name)):
        headers_hold = not candidate.header or any(
            any(
                not match.contains or any(n in value.lower() for n in match.contains)
                for value in email.header_all(match.name)
            )
            for match in candidate.header
        )
        kinds_hold = not candidate.classification or bool(flags & set(candidate.classification))
        subject_holds = not candidate.subject or any(
            needle in email.subject.lower() for needle in candidate.subject
        )
        if headers_hold and kinds_hold and subject_holds:
            return candidate.name
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), headers=VERDICT_HEADERS, subject=st.sampled_from(["Printer", "VPN"]))
def test_the_index_decides_as_the_plain_definition(
    rules: list[EmailRule], headers: dict[str, str], subject: str
) -> None:
    """For random rule sets with the new criteria, index, loop, explain and spec agree."""
    email = mail(headers, subject=subject)
    assert decided(rules, email) == oracle(rules, email)


# -- where rules run in the pipeline ------------------------------------------------------

Build = Callable[..., MailProcessor]


@pytest.fixture
def build(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> Build:
    """A processor over the Support mailbox with the given rules and `spam` setting."""

    def make(rules: Sequence[Mapping[str, Any]] = (), spam: str = "ticket") -> MailProcessor:
        return MailProcessor(
            repository,
            [Mailbox(connector)],
            attrs.evolve(settings, spam=spam),
            transport=transport,
            rules=rules_from_config(rules),
            clock=lambda: dt.datetime.now(dt.UTC),
        )

    return make


def _process(processor: MailProcessor, connector: MemoryConnector, raw: bytes) -> Any:
    connector.add(raw)
    (outcome,) = processor.run_once().outcomes
    return outcome


UNMATCHED_BOUNCE = make_email(
    sender="MAILER-DAEMON@mx.example",
    subject="Undelivered Mail Returned to Sender",
    message_id="<dsn-9@mx.example>",
)
SPAM = make_email(
    subject="Cheap watches", message_id="<spam-1@spam.example>", headers={"X-Spam-Flag": "YES"}
)


def test_an_ignore_rule_on_the_bounce_classification_ignores_bounces(
    build: Build, connector: MemoryConnector
) -> None:
    """Ignore rules run before bounce handling: `classification = "bounce"` can drop them."""
    processor = build(
        [{"name": "No bounces", "type": "ignore", "sequence": 1, "classification": "bounce"}]
    )
    outcome = _process(processor, connector, UNMATCHED_BOUNCE)
    assert (outcome.outcome, outcome.reason, outcome.rule) == (
        Outcome.IGNORED,
        "rule",
        "No bounces",
    )


def test_a_ticket_rule_naming_bounces_takes_them_and_other_rules_leave_them_alone(
    build: Build, connector: MemoryConnector, transport: MemoryTransport
) -> None:
    """A help_request rule naming `bounce` files bounces; a catch-all rule does not take
    them from bounce handling."""
    processor = build(
        [
            {
                "name": "Bounces",
                "type": "help_request",
                "sequence": 1,
                "classification": "bounce",
                "ticket_type": "Postmaster",
            }
        ]
    )
    outcome = _process(processor, connector, UNMATCHED_BOUNCE)
    assert (outcome.outcome, outcome.rule) == (Outcome.CREATED, "Bounces")
    catch_all = build([{"name": "Everything", "type": "help_request", "sequence": 1}])
    connector.add(UNMATCHED_BOUNCE.replace(b"<dsn-9@", b"<dsn-10@"))
    (second,) = catch_all.run_once().outcomes
    # Bounce handling decided it (what it makes of an unmatched bounce is its own setting).
    assert (second.rule, second.reason) == (None, "bounce-unmatched")
    catch_all.send_outbox()
    assert transport.sent == []


def test_a_rule_on_the_auto_reply_classification_takes_auto_replies_unanswered(
    build: Build, connector: MemoryConnector, transport: MemoryTransport
) -> None:
    """A help_request rule on `auto-reply` files them with its type; none is answered."""
    processor = build(
        [
            {
                "name": "Auto-replies",
                "type": "help_request",
                "sequence": 1,
                "classification": "auto_reply",
                "ticket_type": "Auto-reply",
            }
        ]
    )
    raw = make_email(subject="Out of Office: Printer", headers={"Auto-Submitted": "auto-replied"})
    outcome = _process(processor, connector, raw)
    assert (outcome.outcome, outcome.rule) == (Outcome.CREATED, "Auto-replies")
    processor.send_outbox()
    assert transport.sent == []


@pytest.mark.parametrize(
    ("setting", "outcome"),
    [
        ("ticket", Outcome.CREATED),
        ("ignore", Outcome.IGNORED),
        ("quarantine", Outcome.QUARANTINED),
    ],
)
def test_spam_no_rule_took_ends_as_the_setting_says_and_is_never_acknowledged(
    build: Build,
    connector: MemoryConnector,
    transport: MemoryTransport,
    setting: str,
    outcome: Outcome,
) -> None:
    """`spam = ticket | ignore | quarantine`, reason `spam`, and nothing sent."""
    processor = build(spam=setting)
    result = _process(processor, connector, SPAM)
    assert (result.outcome, result.reason, result.acknowledged) == (outcome, "spam", False)
    processor.send_outbox()
    assert transport.sent == []


def test_an_ignore_rule_on_x_spam_flag_wins_over_the_spam_setting(
    build: Build, connector: MemoryConnector
) -> None:
    """A rule on the X-Spam-Flag header matches and its action (ignore) happens."""
    processor = build(
        [
            {
                "name": "Drop flagged spam",
                "type": "ignore",
                "sequence": 1,
                "header": {"name": "X-Spam-Flag", "contains": "yes"},
            }
        ],
        spam="quarantine",
    )
    outcome = _process(processor, connector, SPAM)
    assert (outcome.outcome, outcome.rule) == (Outcome.IGNORED, "Drop flagged spam")


def test_a_spam_follow_up_from_the_tickets_user_updates_it_without_reopening(
    build: Build, connector: MemoryConnector, repository: TicketRepository
) -> None:
    """A flagged reply to a closed ticket is recorded on it but does not reopen it."""
    processor = build(spam="ignore")
    first = _process(processor, connector, make_email())
    repository.set_status(first.ticket_id, TicketStatus.CLOSED)
    reply = make_email(
        subject=f"RE: [ID:{first.ticket_id}] Printer is jammed",
        message_id="<reply-1@customer.example>",
        headers={"X-Spam-Flag": "YES"},
    )
    outcome = _process(processor, connector, reply)
    assert (outcome.outcome, outcome.ticket_id, outcome.reason) == (
        Outcome.UPDATED,
        first.ticket_id,
        "spam",
    )
    ticket = repository.get_ticket(first.ticket_id)
    assert ticket is not None
    assert ticket.status is TicketStatus.CLOSED


def test_processor_settings_refuse_an_unknown_spam_outcome(settings: ProcessorSettings) -> None:
    """ProcessorSettings(spam=…) accepts ticket, ignore or quarantine only."""
    with pytest.raises(ValueError, match="spam"):
        attrs.evolve(settings, spam="delete")
