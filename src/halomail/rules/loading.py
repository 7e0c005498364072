"""``[[rules]]`` tables from ``halomail.toml`` → validated :class:`EmailRule` objects.

Every key a rule table may hold::

    [[rules]]
    name = "Backups"              # required, unique (case-insensitively)
    type = "service_status"       # required: ignore | help_request | service_status | alert |
                                  #   apply_template | formatted_email | file_transfer |
                                  #   inventory | virus | off_alert
    sequence = 20                 # required integer: lower runs first, ties by name
    enabled = true                # false: the rule is skipped
    mailbox = "*"                 # "*" (every mailbox) or one mailbox's name (case-insensitive)

    # Criteria: all those given must hold; a rule with none matches every email.
    # Each takes a string or a list of strings (the list holds if ANY entry does);
    # every comparison is case-insensitive.
    from = "backups@example.com"  # the sender's addr-spec contains this …
    from_exact = false            # … or, when true, equals it (never the display name)
    to = "alerts@"                # some To addr-spec contains (to_exact: equals) it
    to_exact = false
    cc = "noc@"                   # some Cc addr-spec contains (cc_exact: equals) it
    cc_exact = false
    subject = ["Backup", "Job"]   # the subject contains it
    body = "completed"            # the new text (quoted history removed) contains it …
    scan_full_body = false        # … or, when true, the whole text does
    attachment = ".csv"           # some attachment's file name contains it
    header = { name = "X-Spam-Flag", contains = "YES" }   # a top-level header (name
                                  #   case-insensitive) contains it; without contains:
                                  #   the header is present; an array of such tables
                                  #   holds if ANY does
    classification = ["spam", "bulk"]   # the email is one of: spam, bulk, auto-reply
                                  #   (or auto_reply), bounce
    send_acknowledgement = true   # false: never acknowledge emails this rule takes
                                  #   (every type but ignore)

    # Options of some rule types (any other type rejects them):
    ticket_type = "Alert"         # help_request, alert, virus, apply_template
    public = true                 # help_request: the first action is public (false: private)
    template = "Printer"          # apply_template (required): a [[ticket_templates]] name
    service = "Nightly backup"    # service_status (required): a [[services]] name
    closure_string = "RESOLVED"   # alert: in the subject or body, closes instead of opening
    alert_rule = "Monitoring"     # off_alert (required): the alert rule whose tickets it closes
    severity = { critical = "P1", high = "P2" }   # virus: severity word → priority; the
                                  #   first word (in this order) found in the subject or
                                  #   body as a whole word wins

    [rules.asset]                 # help_request, virus, file_transfer, inventory; or an
                                  #   array [[rules.asset]] of several (help_request links
                                  #   every asset any of them finds)
    start = "Asset:"              # required: the asset tag follows this …
    end = ""                      # … up to this (empty: the end of the line)
    field = "tag"                 # the asset field the tag is looked up by (case, spaces
                                  #   and punctuation ignored: "Serial Number")
    source = "body"               # body | subject | ["subject", "body"]; every place the
                                  #   tag appears is read

    [[rules.fields]]              # help_request, alert, formatted_email, virus, off_alert
    target = "priority"           # required: summary, details, priority, category, team,
                                  #   agent, user_email, status (new, open or closed),
                                  #   impact, urgency, site, alert_key (alert, off_alert),
                                  #   or a custom field "CF_<name>" ("CF_Serial Number")
    match = "between"             # required: between | line | regex
    start = "Priority:"           # between (required): the value follows this …
    end = "\\n"                   # … up to this (empty or a line break: end of the line)
    label = "Priority:"           # line (required): the rest of the line after this label
    pattern = "P(\\d)"            # regex (required): group 1, or the whole match
    source = "body"               # body (the whole plain text) | subject
    type = "text"                 # text | number | date | choice
    choices = ["P1", "P2"]        # choice (required): matched case-insensitively
    required = false              # true: the rule does not match without this value

How values are found and converted is described in :mod:`halomail.rules.extract`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from halomail._validate import CONTROL, as_table, check_keys, describe, hint, under_key_path
from halomail.errors import ConfigError
from halomail.rules.models import (
    CLASSIFICATIONS,
    OPTION_TYPES,
    AssetMatch,
    EmailRule,
    FieldMapping,
    FieldSource,
    FieldType,
    HeaderMatch,
    MatchType,
    RuleType,
    not_for_type,
)

__all__ = ["rules_from_config"]

_CRITERIA: Final = ("from", "to", "cc", "subject", "body", "attachment")
_COMMON_FLAGS: Final = ("enabled", "from_exact", "to_exact", "cc_exact", "scan_full_body")
_RULE_KEYS: Final = (
    "name",
    "type",
    "sequence",
    "enabled",
    "mailbox",
    "from",
    "from_exact",
    "to",
    "to_exact",
    "cc",
    "cc_exact",
    "subject",
    "body",
    "scan_full_body",
    "attachment",
    "header",
    "classification",
    "send_acknowledgement",
    "ticket_type",
    "public",
    "template",
    "service",
    "closure_string",
    "alert_rule",
    "severity",
    "asset",
    "fields",
)
_ASSET_KEYS: Final = ("start", "end", "field", "source")
_HEADER_KEYS: Final = ("name", "contains")
_FIELD_KEYS: Final = (
    "target",
    "match",
    "start",
    "end",
    "label",
    "pattern",
    "source",
    "type",
    "choices",
    "required",
)
_OPTIONAL_TEXT: Final = ("ticket_type", "template", "service", "closure_string", "alert_rule")


def rules_from_config(
    tables: Sequence[Mapping[str, Any]],
    *,
    key_path: str = "rules",
    services: Collection[str] = (),
    templates: Collection[str] = (),
    mailboxes: Collection[str] | None = None,
) -> tuple[EmailRule, ...]:
    """Build and validate rules from ``[[rules]]`` tables (the keys are in the module docs).

    Args:
        tables: The ``[[rules]]`` tables as read from TOML.
        key_path: Where the tables sit, for error messages (``rules``).
        services: The names of the configured monitored services.
        templates: The names of the configured ticket templates.
        mailboxes: The names of the configured mailboxes: a rule scoped to another
            (compared case-insensitively) is refused, since it could never match.
            ``None`` (the default) leaves ``mailbox`` unchecked.

    Returns:
        The rules, in file order.

    Raises:
        ConfigError: At the first problem, with its key path (``rules[3].fields[0].pattern``):
            an unknown key (with a suggestion), a wrong type, a missing required key, a
            duplicate name, a bad regular expression, an unknown mailbox, service,
            template or alert rule, or an option the rule's type does not use.
    """
    checked: object = tables  # a TOML file can put anything under "rules"
    if isinstance(checked, str | bytes) or not isinstance(checked, Sequence):
        raise ConfigError(key_path, "expected an array of tables ([[rules]])")
    rules: list[EmailRule] = []
    names: dict[str, int] = {}
    for index, table in enumerate(tables):
        kp = f"{key_path}[{index}]"
        rule = _rule(table, kp, services=services, templates=templates)
        if mailboxes is not None:
            _check_mailbox(rule, f"{kp}.mailbox", mailboxes)
        folded = rule.name.casefold()
        if folded in names:
            raise ConfigError(
                f"{kp}.name",
                f"duplicate rule name {rule.name!r} (also {key_path}[{names[folded]}])",
            )
        names[folded] = index
        rules.append(rule)
    alert_rules = {rule.name: rule for rule in rules if rule.type is RuleType.ALERT}
    for index, rule in enumerate(rules):
        if rule.alert_rule is not None and rule.alert_rule not in alert_rules:
            raise ConfigError(
                f"{key_path}[{index}].alert_rule",
                _unknown("alert rule", rule.alert_rule, alert_rules, "no alert rules exist"),
            )
    return tuple(rules)


def _check_mailbox(rule: EmailRule, kp: str, mailboxes: Collection[str]) -> None:
    """Refuse a rule scoped to a mailbox that does not exist: it would never match."""
    if rule.mailbox == "*" or rule.mailbox.casefold() in {m.casefold() for m in mailboxes}:
        return
    known = ", ".join(repr(name) for name in mailboxes) or "none"
    raise ConfigError(
        kp,
        f"unknown mailbox {rule.mailbox!r}{hint(rule.mailbox, mailboxes)}: the rule would "
        f"never match; the mailboxes are {known} ('*' means every mailbox)",
    )


def _rule(
    table: Any, kp: str, *, services: Collection[str], templates: Collection[str]
) -> EmailRule:
    table = as_table(table, kp)
    check_keys(table, kp, _RULE_KEYS)
    name = _text(table, "name", kp, required=True)
    type_name = _text(table, "type", kp, required=True)
    known_types = [t.value for t in RuleType]
    if type_name not in known_types:
        raise ConfigError(
            f"{kp}.type",
            f"expected one of {', '.join(known_types)}, got {type_name!r}"
            f"{hint(type_name, known_types)}",
        )
    rule_type = RuleType(type_name)
    if "sequence" not in table:
        raise ConfigError(f"{kp}.sequence", "required (an integer; lower runs first)")
    sequence = table["sequence"]
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise ConfigError(f"{kp}.sequence", f"expected an integer, got {describe(sequence)}")
    for key, types in OPTION_TYPES.items():
        if key in table and rule_type not in types:
            raise ConfigError(f"{kp}.{key}", not_for_type(key, rule_type, types))

    values: dict[str, Any] = {"name": name, "type": rule_type, "sequence": sequence}
    for key in (*_COMMON_FLAGS, "send_acknowledgement", "public"):
        if key in table:
            values[key] = _bool(table, key, kp)
    if "mailbox" in table:
        values["mailbox"] = _text(table, "mailbox", kp, required=True)
    for key in _CRITERIA:
        if key in table:
            values["from_" if key == "from" else key] = _needles(table[key], f"{kp}.{key}")
    if "header" in table:
        values["header"] = _headers(table["header"], f"{kp}.header")
    if "classification" in table:
        values["classification"] = _classification(table["classification"], kp)
    for key in _OPTIONAL_TEXT:
        if key in table:
            values[key] = _text(table, key, kp, required=True)
    if "service" in values and values["service"] not in services:
        raise ConfigError(
            f"{kp}.service",
            _unknown("service", values["service"], services, "no [[services]] are configured"),
        )
    if "template" in values and values["template"] not in templates:
        raise ConfigError(
            f"{kp}.template",
            _unknown(
                "ticket template",
                values["template"],
                templates,
                "no [[ticket_templates]] are configured",
            ),
        )
    if "severity" in table:
        values["severity"] = _severity(table["severity"], f"{kp}.severity")
    if "asset" in table:
        values["assets"] = _assets(table["asset"], f"{kp}.asset")
    if "fields" in table:
        values["fields"] = _fields(table["fields"], f"{kp}.fields")
    with under_key_path(kp):
        return EmailRule(**values)


def _assets(value: Any, kp: str) -> tuple[AssetMatch, ...]:
    """``[rules.asset]``, or an array ``[[rules.asset]]`` of several."""
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(kp, "must not be an empty array")
        return tuple(_asset(item, f"{kp}[{index}]") for index, item in enumerate(value))
    return (_asset(value, kp),)


def _asset(value: Any, kp: str) -> AssetMatch:
    table = as_table(value, kp)
    check_keys(table, kp, _ASSET_KEYS)
    # "\n" is a meaningful end tag; control characters are allowed in tags.
    start = _text(table, "start", kp, required=True, allow_control=True)
    end = _text(table, "end", kp, allow_empty=True, allow_control=True)
    field = _text(table, "field", kp, required=True) if "field" in table else "tag"
    sources: tuple[str, ...] = ("body",)
    if "source" in table:
        sources = _needles(table["source"], f"{kp}.source")
        known = [source.value for source in FieldSource]
        for index, source in enumerate(sources):
            if source not in known:
                where = (
                    f"{kp}.source" if isinstance(table["source"], str) else f"{kp}.source[{index}]"
                )
                raise ConfigError(
                    where, f"expected 'body' or 'subject', got {source!r}{hint(source, known)}"
                )
    with under_key_path(kp):
        return AssetMatch(start=start, end=end, field=field, source=sources)


def _headers(value: Any, kp: str) -> tuple[HeaderMatch, ...]:
    """``header = { name = …, contains = … }``, or an array of such tables (any holds)."""
    if isinstance(value, Mapping):
        return (_header(value, kp),)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(
            kp,
            'expected a table like { name = "X-Spam-Flag", contains = "YES" } or an '
            f"array of such tables, got {describe(value)}",
        )
    return tuple(_header(item, f"{kp}[{index}]") for index, item in enumerate(value))


def _header(value: Any, kp: str) -> HeaderMatch:
    table = as_table(value, kp)
    check_keys(table, kp, _HEADER_KEYS)
    if "name" not in table:
        raise ConfigError(f"{kp}.name", "required: the header's name, e.g. 'X-Spam-Flag'")
    name = _text(table, "name", kp, required=True)
    contains = _needles(table["contains"], f"{kp}.contains") if "contains" in table else ()
    with under_key_path(kp):
        return HeaderMatch(name=name, contains=contains)


def _classification(value: Any, kp: str) -> tuple[str, ...]:
    """Classification names, each known (``auto_reply`` is read as ``auto-reply``)."""
    where = f"{kp}.classification"
    names = _needles(value, where)
    known = list(CLASSIFICATIONS)
    for index, name in enumerate(names):
        spelt = name.strip().replace("_", "-")
        if spelt not in known:
            at = where if isinstance(value, str) else f"{where}[{index}]"
            raise ConfigError(
                at,
                f"unknown classification {name!r}: expected one of "
                f"{', '.join(repr(k) for k in known)}{hint(spelt, known)}",
            )
    return names


def _fields(value: Any, kp: str) -> tuple[FieldMapping, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(
            kp, f"expected an array of tables ([[rules.fields]]), got {describe(value)}"
        )
    return tuple(_field(item, f"{kp}[{index}]") for index, item in enumerate(value))


def _field(value: Any, kp: str) -> FieldMapping:
    table = as_table(value, kp)
    check_keys(table, kp, _FIELD_KEYS)
    values: dict[str, Any] = {
        "target": _text(table, "target", kp, required=True),
        "match": _choice(table, "match", kp, MatchType, required=True),
    }
    for key in ("start", "end", "label", "pattern"):
        if key in table:
            # "\n" is a meaningful end tag; control characters are allowed here.
            values[key] = _text(table, key, kp, allow_empty=key == "end", allow_control=True)
    if "source" in table:
        values["source"] = _choice(table, "source", kp, FieldSource)
    if "type" in table:
        values["type"] = _choice(table, "type", kp, FieldType)
    if "choices" in table:
        values["choices"] = _needles(table["choices"], f"{kp}.choices", lower=False)
    if "required" in table:
        values["required"] = _bool(table, "required", kp)
    with under_key_path(kp):
        return FieldMapping(**values)


def _severity(value: Any, kp: str) -> dict[str, str]:
    table = as_table(value, kp)
    if not table:
        raise ConfigError(kp, 'expected at least one severity word, e.g. { high = "P1" }')
    severity: dict[str, str] = {}
    for word, priority in table.items():
        where = f"{kp}.{word}"
        if not str(word).strip():
            raise ConfigError(where, "a severity word must not be empty")
        if not isinstance(priority, str) or not priority.strip():
            raise ConfigError(where, f"expected a priority name, got {describe(priority)}")
        severity[word] = priority
    return severity


# -- value readers ----------------------------------------------------------------


def _unknown(what: str, value: str, known: Collection[str], when_none: str) -> str:
    if not known:
        return f"unknown {what} {value!r}: {when_none}"
    suggestion = hint(value, known)
    if suggestion:
        return f"unknown {what} {value!r}{suggestion}"
    return f"unknown {what} {value!r}; known: {', '.join(repr(k) for k in sorted(known))}"


def _text(
    table: Mapping[str, Any],
    key: str,
    kp: str,
    *,
    required: bool = False,
    allow_empty: bool = False,
    allow_control: bool = False,
) -> str:
    where = f"{kp}.{key}"
    if key not in table:
        if required:
            raise ConfigError(where, "required (a string)")
        return ""
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value)}")
    if not allow_empty and not value.strip():
        raise ConfigError(where, "must not be empty")
    if not allow_control and CONTROL.search(value):
        raise ConfigError(where, "must not contain control characters (line breaks, NUL …)")
    return value


def _bool(table: Mapping[str, Any], key: str, kp: str) -> bool:
    value = table[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{kp}.{key}", f"expected true or false, got {describe(value)}")
    return value


def _choice(
    table: Mapping[str, Any],
    key: str,
    kp: str,
    choices: type[MatchType] | type[FieldSource] | type[FieldType],
    *,
    required: bool = False,
) -> str:
    allowed = [choice.value for choice in choices]
    value = _text(table, key, kp, required=required)
    if value not in allowed:
        options = ", ".join(repr(choice) for choice in allowed)
        raise ConfigError(
            f"{kp}.{key}", f"expected one of {options}, got {value!r}{hint(value, allowed)}"
        )
    return value


def _needles(value: Any, kp: str, *, lower: bool = True) -> tuple[str, ...]:
    """A string or a non-empty array of non-empty strings (control characters refused)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(kp, f"expected a string or an array of strings, got {describe(value)}")
    if not items:
        raise ConfigError(kp, "must not be an empty array")
    found: list[str] = []
    for index, item in enumerate(items):
        where = kp if isinstance(value, str) else f"{kp}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(where, f"expected a string, got {describe(item)}")
        if not item.strip():
            raise ConfigError(where, "must not be empty")
        if CONTROL.search(item):
            raise ConfigError(where, "must not contain control characters (line breaks, NUL …)")
        found.append(item.lower() if lower else item)
    return tuple(found)
