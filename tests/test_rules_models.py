"""Rule models and ``[[rules]]`` validation: every error carries its exact key path."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from halomail.errors import ConfigError
from halomail.rules import (
    AssetMatch,
    EmailRule,
    FieldMapping,
    FieldSource,
    FieldType,
    MatchType,
    RuleType,
    rules_from_config,
)

SERVICES = ("Nightly backup", "Mail relay")
TEMPLATES = ("Printer fault", "New starter")

FULL_CONFIG = """
[[rules]]
name = "Monitoring"
type = "alert"
sequence = 10
mailbox = "Alerts"
from = ["nagios@", "Zabbix@"]
subject = "PROBLEM"
ticket_type = "Alert"
closure_string = "RECOVERY"
send_acknowledgement = false
[[rules.fields]]
target = "CF_host"
match = "line"
label = "Host:"
required = true
[[rules.fields]]
target = "priority"
match = "between"
start = "Priority:"
end = "\\n"
type = "choice"
choices = ["P1", "P2"]

[[rules]]
name = "Monitoring cleared"
type = "off_alert"
sequence = 9
subject = "cleared"
alert_rule = "Monitoring"

[[rules]]
name = "Backups"
type = "service_status"
sequence = 20
from = "Backups@Example.com"
from_exact = true
service = "Nightly backup"

[[rules]]
name = "Printers"
type = "help_request"
sequence = 30
to = "printers@"
cc = "facilities@"
cc_exact = false
body = "toner"
scan_full_body = true
attachment = ".JPG"
public = false
[rules.asset]
start = "Asset:"
field = "serial"

[[rules]]
name = "Defender"
type = "virus"
sequence = 15
severity = { critical = "P1", high = "P2" }

[[rules]]
name = "Starter"
type = "apply_template"
sequence = 40
template = "New starter"
enabled = false
"""


def load(tables: list[dict[str, Any]]) -> tuple[EmailRule, ...]:
    """Validate tables against the shared service and template names."""
    return rules_from_config(tables, services=SERVICES, templates=TEMPLATES)


def error_of(tables: list[dict[str, Any]]) -> ConfigError:
    """The ConfigError that loading ``tables`` raises."""
    with pytest.raises(ConfigError) as caught:
        load(tables)
    return caught.value


def rule(**extra: Any) -> dict[str, Any]:
    """A valid help_request table with ``extra`` keys added."""
    return {"name": "R", "type": "help_request", "sequence": 1, **extra}


class TestLoading:
    """A full halomail.toml rule set loads into the models it describes."""

    def test_every_key_of_a_realistic_file_loads(self) -> None:
        """Every documented key reaches its attribute, criteria lower-cased once."""
        rules = load(tomllib.loads(FULL_CONFIG)["rules"])
        monitoring, cleared, backups, printers, defender, starter = rules
        assert monitoring.type is RuleType.ALERT
        assert monitoring.mailbox == "Alerts"
        assert monitoring.from_ == ("nagios@", "zabbix@")
        assert monitoring.subject == ("problem",)
        assert monitoring.send_acknowledgement is False
        assert monitoring.closure_string == "RECOVERY"
        assert monitoring.fields == (
            FieldMapping(target="CF_host", match=MatchType.LINE, label="Host:", required=True),
            FieldMapping(
                target="priority",
                match=MatchType.BETWEEN,
                start="Priority:",
                end="\n",
                type=FieldType.CHOICE,
                choices=("P1", "P2"),
            ),
        )
        assert cleared.alert_rule == "Monitoring"
        assert backups.from_ == ("backups@example.com",)
        assert backups.from_exact is True
        assert backups.service == "Nightly backup"
        assert printers.to == ("printers@",)
        assert printers.cc == ("facilities@",)
        assert printers.body == ("toner",)
        assert printers.scan_full_body is True
        assert printers.attachment == (".jpg",)
        assert printers.public is False
        assert printers.asset == AssetMatch(start="Asset:", end="", field="serial")
        assert defender.severity == {"critical": "P1", "high": "P2"}
        assert starter.enabled is False
        assert starter.template == "New starter"

    def test_defaults(self) -> None:
        """A minimal rule gets the documented defaults."""
        (only,) = load([rule()])
        assert only.enabled is True
        assert only.mailbox == "*"
        assert only.send_acknowledgement is True
        assert only.public is True
        assert only.has_criteria is False
        assert only.fields == ()

    def test_choices_keep_their_spelling(self) -> None:
        """Choices are canonical spellings, so they are not lower-cased like criteria."""
        (only,) = load(
            [
                rule(
                    fields=[
                        {"target": "priority", "match": "line", "label": "P:", "type": "choice"}
                        | {"choices": ["P1-Critical", "P2"]}
                    ]
                )
            ]
        )
        assert only.fields[0].choices == ("P1-Critical", "P2")

    def test_an_empty_list_of_rules_is_fine(self) -> None:
        """No [[rules]] at all loads as no rules."""
        assert load([]) == ()


ERRORS: list[tuple[Any, str, str]] = [
    # unknown keys, with a suggestion
    ([rule(sbject="x")], "rules[0].sbject", "unknown key 'sbject' (did you mean 'subject'?)"),
    (
        [
            rule(),
            rule(
                name="S",
                fields=[{"target": "summary", "match": "line", "label": "x", "lable": "y"}],
            ),
        ],
        "rules[1].fields[0].lable",
        "did you mean 'label'?",
    ),
    (
        [rule(asset={"start": "A:", "feild": "tag"})],
        "rules[0].asset.feild",
        "did you mean 'field'?",
    ),
    # missing required keys
    ([{"type": "ignore", "sequence": 1}], "rules[0].name", "required"),
    ([{"name": "R", "sequence": 1}], "rules[0].type", "required"),
    ([{"name": "R", "type": "ignore"}], "rules[0].sequence", "required"),
    ([{"name": "R", "type": "service_status", "sequence": 1}], "rules[0].service", "required"),
    ([{"name": "R", "type": "apply_template", "sequence": 1}], "rules[0].template", "required"),
    ([{"name": "R", "type": "off_alert", "sequence": 1}], "rules[0].alert_rule", "required"),
    ([rule(asset={"end": ","})], "rules[0].asset.start", "required"),
    ([rule(fields=[{"match": "line", "label": "x"}])], "rules[0].fields[0].target", "required"),
    ([rule(fields=[{"target": "summary", "label": "x"}])], "rules[0].fields[0].match", "required"),
    (
        [rule(fields=[{"target": "summary", "match": "between"}])],
        "rules[0].fields[0].start",
        "required for match = 'between'",
    ),
    (
        [rule(fields=[{"target": "summary", "match": "regex"}])],
        "rules[0].fields[0].pattern",
        "required for match = 'regex'",
    ),
    (
        [rule(fields=[{"target": "priority", "match": "line", "label": "P:", "type": "choice"}])],
        "rules[0].fields[0].choices",
        "required for type = 'choice'",
    ),
    # wrong types
    ([rule(sequence="10")], "rules[0].sequence", "expected an integer, got '10'"),
    ([rule(sequence=True)], "rules[0].sequence", "expected an integer, got true"),
    ([rule(enabled="yes")], "rules[0].enabled", "expected true or false, got 'yes'"),
    ([rule(subject=["ok", 3])], "rules[0].subject[1]", "expected a string, got 3"),
    ([rule(subject=[])], "rules[0].subject", "must not be an empty array"),
    ([rule(subject="  ")], "rules[0].subject", "must not be empty"),
    ([rule(body=["a", ""])], "rules[0].body[1]", "must not be empty"),
    ([rule(to={"a": 1})], "rules[0].to", "expected a string or an array of strings, got a table"),
    ([rule(mailbox="")], "rules[0].mailbox", "must not be empty"),
    ([rule(name="A\nB")], "rules[0].name", "control characters"),
    ([rule(type="alrt")], "rules[0].type", "got 'alrt' (did you mean 'alert'?)"),
    (["not a table"], "rules[0]", "expected a table, got 'not a table'"),
    ([rule(asset="Asset:")], "rules[0].asset", "expected a table"),
    ([rule(fields={"target": "x"})], "rules[0].fields", "expected an array of tables"),
    (
        [rule(fields=[{"target": "summary", "match": "word", "label": "x"}])],
        "rules[0].fields[0].match",
        "got 'word'",
    ),
    (
        [rule(fields=[{"target": "summary", "match": "line", "label": "x", "type": "numbr"}])],
        "rules[0].fields[0].type",
        "(did you mean 'number'?)",
    ),
    (
        [rule(fields=[{"target": "summary", "match": "line", "label": "x", "source": "header"}])],
        "rules[0].fields[0].source",
        "expected one of 'body', 'subject'",
    ),
    (
        [{"name": "V", "type": "virus", "sequence": 1, "severity": {"high": 1}}],
        "rules[0].severity.high",
        "expected a priority name, got 1",
    ),
    # bad values
    (
        [
            rule(),
            rule(name="Bad", fields=[{"target": "summary", "match": "regex", "pattern": "(a"}]),
        ],
        "rules[1].fields[0].pattern",
        "invalid regular expression: missing ), unterminated subpattern at position 0",
    ),
    (
        [rule(fields=[{"target": "colour", "match": "line", "label": "x"}])],
        "rules[0].fields[0].target",
        "unknown target 'colour'",
    ),
    (
        [rule(fields=[{"target": "summary", "match": "line", "label": "x", "start": "y"}])],
        "rules[0].fields[0].start",
        "not used by match = 'line'",
    ),
    (
        [rule(fields=[{"target": "summary", "match": "line", "label": "x", "choices": ["a"]}])],
        "rules[0].fields[0].choices",
        "only used with type = 'choice'",
    ),
    (
        [rule(fields=[{"target": "alert_key", "match": "line", "label": "Key:"}])],
        "rules[0].fields[0].target",
        "alert_key is only used by alert and off_alert rules",
    ),
    # duplicates and references
    (
        [rule(name="Backups"), rule(name="backups")],
        "rules[1].name",
        "duplicate rule name 'backups'",
    ),
    (
        [{"name": "B", "type": "service_status", "sequence": 1, "service": "Nightly backups"}],
        "rules[0].service",
        "unknown service 'Nightly backups' (did you mean 'Nightly backup'?)",
    ),
    (
        [{"name": "B", "type": "service_status", "sequence": 1, "service": "Payroll"}],
        "rules[0].service",
        "unknown service 'Payroll'; known: 'Mail relay', 'Nightly backup'",
    ),
    (
        [{"name": "T", "type": "apply_template", "sequence": 1, "template": "Printer"}],
        "rules[0].template",
        "unknown ticket template 'Printer' (did you mean 'Printer fault'?)",
    ),
    (
        [
            {"name": "Mon", "type": "help_request", "sequence": 1},
            {"name": "Off", "type": "off_alert", "sequence": 2, "alert_rule": "Mon"},
        ],
        "rules[1].alert_rule",
        "unknown alert rule 'Mon': no alert rules exist",
    ),
    # keys that make no sense for the type
    ([rule(service="Nightly backup")], "rules[0].service", "'service' is not used by help_request"),
    (
        [{"name": "I", "type": "ignore", "sequence": 1, "send_acknowledgement": True}],
        "rules[0].send_acknowledgement",
        "is not used by ignore rules",
    ),
    (
        [{"name": "A", "type": "alert", "sequence": 1, "public": True}],
        "rules[0].public",
        "only by: help_request",
    ),
    ([rule(closure_string="OK")], "rules[0].closure_string", "only by: alert"),
    ([rule(severity={"high": "P1"})], "rules[0].severity", "only by: virus"),
    ([rule(template="Printer fault")], "rules[0].template", "only by: apply_template"),
    (
        [
            {"name": "S", "type": "service_status", "sequence": 1, "service": "Mail relay"},
            {"name": "A", "type": "ignore", "sequence": 2, "asset": {"start": "x"}},
        ],
        "rules[1].asset",
        "only by: file_transfer, help_request, inventory, virus",
    ),
    (
        [{"name": "I", "type": "inventory", "sequence": 1, "fields": []}],
        "rules[0].fields",
        "'fields' is not used by inventory rules",
    ),
    (
        [{"name": "F", "type": "file_transfer", "sequence": 1, "ticket_type": "Files"}],
        "rules[0].ticket_type",
        "only by: alert, apply_template, help_request, virus",
    ),
]


@pytest.mark.parametrize(
    ("tables", "key_path", "message"), ERRORS, ids=[path for _, path, _ in ERRORS]
)
def test_validation_error_names_the_exact_key(tables: Any, key_path: str, message: str) -> None:
    """Each invalid table raises a ConfigError at its exact key path, saying what is wrong."""
    error = error_of(tables)
    assert error.key_path == key_path
    assert message in error.message
    assert str(error) == f"{key_path}: {error.message}"


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    """An unknown key nothing resembles is answered with the list of known keys."""
    error = error_of([rule(zzzzzz=1)])
    assert error.key_path == "rules[0].zzzzzz"
    assert error.message.startswith("unknown key 'zzzzzz'; known keys: name, type, sequence")


def test_unknown_service_when_none_are_configured() -> None:
    """A service_status rule with no [[services]] configured says so."""
    with pytest.raises(ConfigError) as caught:
        rules_from_config([{"name": "B", "type": "service_status", "sequence": 1, "service": "X"}])
    assert caught.value.key_path == "rules[0].service"
    assert caught.value.message == "unknown service 'X': no [[services]] are configured"


def test_key_path_prefix_is_configurable() -> None:
    """Rules read from somewhere else report errors under that path."""
    with pytest.raises(ConfigError) as caught:
        rules_from_config([rule(sbject="x")], key_path="profiles[2].rules")
    assert caught.value.key_path == "profiles[2].rules[0].sbject"


def test_rules_must_be_an_array() -> None:
    """`rules = "x"` is not an array of tables."""
    with pytest.raises(ConfigError) as caught:
        rules_from_config("rules")  # type: ignore[arg-type]
    assert caught.value.key_path == "rules"


class TestPythonConstruction:
    """Rules built in Python get the same checks, keyed by their TOML names."""

    def test_criteria_accept_a_string_or_a_list_and_are_lower_cased(self) -> None:
        """`from_="A@X"` and `subject=["Ab", "CD"]` are stored as lower-cased tuples."""
        built = EmailRule(
            name="R", type="help_request", sequence=1, from_="A@X", subject=["Ab", "CD"]
        )
        assert built.from_ == ("a@x",)
        assert built.subject == ("ab", "cd")
        assert built.type is RuleType.HELP_REQUEST

    def test_repr_shows_what_differs_from_the_defaults(self) -> None:
        """The repr is short: the identity, then only non-default attributes."""
        built = EmailRule(
            name="Backups",
            type=RuleType.SERVICE_STATUS,
            sequence=20,
            from_="backups@example.com",
            from_exact=True,
            service="Nightly backup",
        )
        assert repr(built) == (
            "EmailRule(name='Backups', type='service_status', sequence=20, "
            "from_=('backups@example.com',), from_exact=True, service='Nightly backup')"
        )
        mapping = FieldMapping(target="CF_host", match="line", label="Host:", required=True)
        assert repr(mapping) == (
            "FieldMapping(target='CF_host', match='line', label='Host:', required=True)"
        )

    def test_rules_are_frozen_and_hashable(self) -> None:
        """A rule cannot be changed after it is built, and can be put in a set."""
        built = EmailRule(name="R", type="ignore", sequence=1, subject="x")
        with pytest.raises(AttributeError):
            built.name = "S"  # type: ignore[misc]
        assert len({built, EmailRule(name="R", type="ignore", sequence=1, subject="X")}) == 1

    @pytest.mark.parametrize(
        ("kwargs", "key_path"),
        [
            ({"type": "ignore", "subject": ""}, "subject"),
            ({"type": "ignore", "subject": ["a", " "]}, "subject[1]"),
            ({"type": "service_status"}, "service"),
            ({"type": "ignore", "service": "x"}, "service"),
            ({"type": "help_request", "name": " "}, "name"),
            ({"type": "virus", "severity": {"high": ""}}, "severity.high"),
            (
                {
                    "type": "help_request",
                    "fields": [FieldMapping(target="alert_key", match="line", label="k")],
                },
                "fields[0].target",
            ),
        ],
    )
    def test_invalid_python_rules_raise_config_error(
        self, kwargs: dict[str, Any], key_path: str
    ) -> None:
        """A nonsensical rule built in Python raises ConfigError keyed like the TOML."""
        values = {"name": "R", "sequence": 1} | kwargs
        with pytest.raises(ConfigError) as caught:
            EmailRule(**values)
        assert caught.value.key_path == key_path

    def test_bad_regex_in_python_names_the_pattern(self) -> None:
        """A FieldMapping with a broken pattern fails at construction, not at match time."""
        with pytest.raises(ConfigError, match=re.escape("pattern: invalid regular expression")):
            FieldMapping(target="summary", match="regex", pattern="[a-")

    def test_field_mapping_defaults(self) -> None:
        """A mapping reads the body as text, optional, unless told otherwise."""
        mapping = FieldMapping(target="CF_site", match=MatchType.LINE, label="Site:")
        assert mapping.source is FieldSource.BODY
        assert mapping.type is FieldType.TEXT
        assert mapping.required is False
        assert mapping.custom_field == "site"
        assert FieldMapping(target="summary", match="line", label="x").custom_field is None
