"""Field-mapping patterns run under a time budget (issue 13, item 5).

A pattern such as ``Host: ((\\w+[.-]?)+)\\.example\\.com`` backtracks for hours on a
hostile body under :mod:`re`. The regex module stops it after
:data:`~halomail.rules.PATTERN_BUDGET_MS`: the field is left unset, the rule's name is
logged at WARNING, ``simulate`` says so, and ``check-config`` warns about the pattern.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from halomail import parse_email
from halomail.inbound.models import InboundEmail
from halomail.rules import (
    PATTERN_BUDGET_MS,
    EmailRule,
    FieldMapping,
    RuleEngine,
    extract,
    risky_patterns,
)
from halomail.rules.risk import pattern_risk
from tests.conftest import make_email

#: The pattern of the issue: nested quantifiers, exponential under re.
HOST_PATTERN = r"Host: ((\w+[.-]?)+)\.example\.com"
#: A body it cannot match, long enough that even the regex module's safeguards take
#: seconds on it (about 5 s measured), far past the budget.
HOSTILE_BODY = "Host: " + "a" * 20_000 + "\n"
TIMED_OUT = f"rule Hosts: pattern timed out after {PATTERN_BUDGET_MS} ms (field 'CF_host')"


def email(body: str) -> InboundEmail:
    """A real email with ``body``, parsed like fetched mail."""
    return parse_email(make_email(sender="monitor@corp.example", body=body))


def hosts_rule(*, required: bool = False, sequence: int = 10) -> EmailRule:
    """An alert-like help_request rule reading the host with the issue's pattern."""
    return EmailRule(
        name="Hosts",
        type="help_request",
        sequence=sequence,
        from_="monitor@",
        fields=[
            FieldMapping(target="CF_host", match="regex", pattern=HOST_PATTERN, required=required)
        ],
    )


def test_the_issue_pattern_still_reads_a_normal_body() -> None:
    """On an ordinary email the pattern extracts the host as it always did."""
    found = extract(hosts_rule(), email("Host: web01.prod.example.com is down\n"))
    assert found.custom_fields == {"host": "web01.prod"}
    assert found.timed_out == ()


def test_a_hostile_body_stops_at_the_budget_and_leaves_the_field_unset() -> None:
    """The hostile body takes the timeout path: no value, the timeout recorded as a problem."""
    found = extract(hosts_rule(), email(HOSTILE_BODY))
    assert found.custom_fields == {}
    assert found.timed_out == ("CF_host",)
    assert TIMED_OUT in found.problems


def test_the_timeout_is_logged_with_the_rule_name_and_never_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One WARNING names the rule and the field; the email's text is not in it."""
    with caplog.at_level(logging.WARNING, logger="halomail.rules"):
        extract(hosts_rule(), email(HOSTILE_BODY))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert TIMED_OUT in message
    assert "aaaa" not in message


def test_a_required_field_that_times_out_makes_the_rule_not_match() -> None:
    """The engine moves on to the next rule, as if the pattern had not matched."""
    fallback = EmailRule(name="Everything else", type="help_request", sequence=99)
    engine = RuleEngine([hosts_rule(required=True), fallback])
    decision = engine.evaluate(email(HOSTILE_BODY), "Support")
    assert decision is not None
    assert decision.rule.name == "Everything else"
    assert engine.evaluate_sequential(email(HOSTILE_BODY), "Support") == decision


def test_explain_says_which_rule_timed_out() -> None:
    """simulate's explanation gives the timeout as the reason the rule did not match."""
    engine = RuleEngine([hosts_rule(required=True)])
    explanation = engine.explain(email(HOSTILE_BODY), "Support")
    assert explanation.decision is None
    assert explanation.steps[0].reason == TIMED_OUT
    assert TIMED_OUT in explanation.format()


# Patterns from docs/rules.md and the tests, with texts they match and texts they don't:
# the regex module must read exactly what re reads.
PATTERNS = [
    (r"free space: (\d+)%", "Disk /var free space: 12% left"),
    (r"\[(REF-\d+)\]", "Re: [REF-0042] printer"),
    (r"prn-\d{4}", "PRN-0042 jammed"),
    (r"^DUE DATE:\s*(\S+)$", "intro\nDue date: 2024-05-01\nend"),
    (r"repository (\w+)", "push to repository halomail done"),
    (r"(?P<ticket>#\d+)", "about #1234, thanks"),
    (r"(?<=Serial: )\w+", "Serial: SN-77 (boxed)"),
    (r"(a|b)+c", "xxababc"),
    (r"colou?r: (\w+)", "Colour: RED"),
    (r"[^\W\d_]+(?=\s+is down)", "web is down"),
    (r"(\d{1,2})/(\d{1,2})/(\d{4})", "on 01/05/2024"),
    (r"no such thing (\d+)", "nothing to see"),
]


@pytest.mark.parametrize(("pattern", "text"), PATTERNS)
def test_the_regex_module_finds_what_re_finds(pattern: str, text: str) -> None:
    """Each pattern gives the value re's case-insensitive multi-line search gives."""
    expected = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
    wanted = None if expected is None else expected.group(1 if expected.re.groups else 0)
    rule = EmailRule(
        name="R",
        type="help_request",
        sequence=1,
        fields=[FieldMapping(target="summary", match="regex", pattern=pattern)],
    )
    body = email(text + "\n")
    assert extract(rule, body).fields.get("summary") == (wanted.strip() if wanted else None)


@pytest.mark.parametrize(
    "pattern",
    [HOST_PATTERN, r"(a+)+$", r"(\w+\s?)*$", r"(a|aa)+b", r"(\w|\d)*x", r"(x{2,})+", r"(a|)+"],
)
def test_risky_shapes_are_recognised(pattern: str) -> None:
    """Nested quantifiers and overlapping alternatives under a quantifier are risky."""
    assert pattern_risk(pattern) is not None


@pytest.mark.parametrize(
    "pattern",
    [p for p, _ in PATTERNS] + [r"(foo|bar)+", r"[(]a+[)]+", r"(a+){3}", r"((ab)+c)"],
)
def test_ordinary_patterns_are_not_warned_about(pattern: str) -> None:
    """The patterns of the documentation and the tests raise no warning."""
    assert pattern_risk(pattern) is None


def test_warnings_carry_the_key_path_of_the_pattern() -> None:
    """The warning names rules[i].fields[j].pattern and the rule."""
    safe = EmailRule(name="Safe", type="help_request", sequence=1)
    rules = [safe, hosts_rule()]
    (warning,) = risky_patterns(rules)
    assert warning.key_path == "rules[1].fields[0].pattern"
    assert warning.rule == "Hosts"
    assert "nested quantifiers" in str(warning)


# -- the command -------------------------------------------------------------------------

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"

[[rules]]
name = "Hosts"
type = "help_request"
sequence = 10
from = "monitor@"

[[rules.fields]]
target = "CF_host"
match = "regex"
pattern = 'Host: ((\\w+[.-]?)+)\\.example\\.com'
"""


def _halomail(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A Maildir configuration whose one rule reads the host with the issue's pattern."""
    path = tmp_path / "halomail.toml"
    path.write_text(CONFIG, encoding="utf-8")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    return path


def test_check_config_warns_about_the_pattern_and_exits_0(config: Path) -> None:
    """check-config names the pattern's key path in a warning; the configuration is OK."""
    result = _halomail("-c", str(config), "check-config", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert "OK (1 mailboxes" in result.stdout
    assert "warning: rules[0].fields[0].pattern: rule 'Hosts': nested quantifiers" in (
        result.stderr
    )
    assert f"stopped after {PATTERN_BUDGET_MS} ms" in result.stderr


def test_check_config_json_reports_the_warning_as_an_event(config: Path) -> None:
    """With --json the warning is one JSON object after the summary."""
    result = _halomail("-c", str(config), "check-config", "--json", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["config", "warning"]
    assert events[1]["key_path"] == "rules[0].fields[0].pattern"
    assert events[1]["rule"] == "Hosts"


def test_simulate_reports_the_timeout(config: Path) -> None:
    """simulate on the hostile email says the rule's pattern timed out, and writes nothing."""
    sample = config.parent / "hostile.eml"
    sample.write_bytes(make_email(sender="monitor@corp.example", body=HOSTILE_BODY))
    result = _halomail("-c", str(config), "simulate", str(sample), cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert f"problem: {TIMED_OUT}" in result.stdout
    assert "CF_host: " not in result.stdout  # no value was read


def test_the_docs_state_the_budget_the_code_applies() -> None:
    """docs/rules.md and docs/security.md give PATTERN_BUDGET_MS."""
    docs = Path(__file__).parent.parent / "docs"
    for name in ("rules.md", "security.md"):
        assert f"{PATTERN_BUDGET_MS} ms" in docs.joinpath(name).read_text("utf-8")
