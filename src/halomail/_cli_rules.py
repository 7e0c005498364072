"""``halomail rules``: the rules in the order the engine evaluates them, what each
matches and what it does, and what becomes of an email no rule takes.

Read from the rule model itself (:class:`~halomail.rules.EmailRule`), so a setting
added to rules later is shown without changing this command.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs

from halomail.config.loader import Config, load_config
from halomail.rules import EmailRule, RuleType

__all__ = ["register", "rule_json"]

EXIT_OK = 0

# The settings of a rule that decide whether it matches; every other setting (beyond
# its name, type, sequence and switch) says what it does.
_MATCHES = (
    "mailbox",
    "from_",
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
)
_IDENTITY = ("name", "type", "sequence", "enabled")


def register(commands: Any) -> None:
    """Add ``rules`` to the command's subparsers.

    Args:
        commands: The ``halomail`` parser's subparsers.
    """
    rules = commands.add_parser(
        "rules", help="the rules in evaluation order: what each matches and does"
    )
    rules.add_argument("--json", action="store_true", help="one JSON object per line")
    rules.set_defaults(handler=_cmd_rules)


def _cmd_rules(args: argparse.Namespace) -> int:
    config = load_config(args.config, require_mailbox=False)
    ordered = sorted(config.rules, key=lambda rule: rule.order_key)
    if args.json:
        for position, rule in enumerate(ordered, start=1):
            print(json.dumps({"event": "rule", "position": position, **rule_json(rule)}))
        print(json.dumps({"event": "unmatched", **_unmatched(config)}))
        return EXIT_OK
    if not ordered:
        print("no rules: every email is threaded or becomes a ticket")
    else:
        print("Rules in evaluation order (by sequence, then name); the first match decides.")
    for position, rule in enumerate(ordered, start=1):
        _print_rule(position, rule)
    _print_unmatched(config, has_ignore=any(r.type is RuleType.IGNORE for r in ordered))
    return EXIT_OK


def _print_rule(position: int, rule: EmailRule) -> None:
    off = "" if rule.enabled else "  (disabled: never matches)"
    print(f"\n{position:>3}. [{rule.sequence}] {rule.name} ({rule.type.value}){off}")
    matches = _described(rule, _MATCHES)
    print(f"     matches: {', '.join(matches) if matches else 'every email'}")
    does = _described(rule, _does(rule))
    if does:
        print(f"     does:    {', '.join(does)}")


def _print_unmatched(config: Config, *, has_ignore: bool) -> None:
    unmatched = _unmatched(config)
    print("\nAn email no rule takes:")
    print(f"  spam (an upstream filter's mark): {unmatched['spam']}  ([processing] spam)")
    print(f"  bulk and list mail: {unmatched['bulk']}  ([processing] bulk)")
    print("  anything else: threaded onto its ticket, or a new ticket of its mailbox's type")
    if has_ignore:
        print(
            "A matching ignore rule wins before threading and bounces; the other types "
            "apply after a follow-up is recognised."
        )


def _unmatched(config: Config) -> dict[str, str]:
    return {"spam": config.processing.spam, "bulk": config.processing.bulk}


def _does(rule: EmailRule) -> tuple[str, ...]:
    return tuple(
        field.name
        for field in attrs.fields(type(rule))
        if field.init
        and not field.name.startswith("_")
        and field.name not in _MATCHES
        and field.name not in _IDENTITY
    )


def _described(rule: EmailRule, names: tuple[str, ...]) -> list[str]:
    """A phrase for each of ``names`` the rule sets to other than its default."""
    fields = {field.name: field for field in attrs.fields(type(rule))}
    shown: list[str] = []
    for name in names:
        value = getattr(rule, name)
        if name in _FLAGS or value == _default(fields[name]) or value in ((), {}, None, ""):
            continue  # a flag is told with the setting it qualifies
        shown.append(_phrase(rule, name, value))
    return shown


def _phrase(rule: EmailRule, name: str, value: Any) -> str:
    if name in ("from_", "to", "cc"):
        verb = "is" if getattr(rule, f"{name.rstrip('_')}_exact") else "contains"
        return f"{name.rstrip('_')} {verb} {_text(value)}"
    if name == "body":
        where = "full body" if rule.scan_full_body else "new text"
        return f"{where} contains {_text(value)}"
    if name in ("subject", "attachment"):
        return f"{name} contains {_text(value)}"
    if name == "header":
        return " and ".join(_header(match) for match in value)
    if name == "classification":
        return f"classified {_text(value)}"
    if name == "fields":
        return "sets " + "; ".join(_mapping(mapping) for mapping in value)
    if name == "asset":
        return f"asset by {value.field} after {value.start!r}" + (
            f" up to {value.end!r}" if value.end else ""
        )
    return f"{name.replace('_', ' ')} {_text(value)}"


# Qualifiers, told with the setting they qualify.
_FLAGS = frozenset({"from_exact", "to_exact", "cc_exact", "scan_full_body"})


def _header(match: Any) -> str:
    if not match.contains:
        return f"header {match.name} present"
    return f"header {match.name} contains {_text(match.contains)}"


def _mapping(mapping: Any) -> str:
    how = {
        "between": f"between {mapping.start!r} and {mapping.end or 'the end of the line'!r}",
        "line": f"on the line of {mapping.label!r}",
        "regex": f"by regex {mapping.pattern!r}",
    }.get(_text(mapping.match).strip("'"), _text(mapping.match))
    required = ", required" if mapping.required else ""
    return f"{mapping.target} from the {_text(mapping.source)} {how}{required}"


def _default(field: Any) -> object:
    """The value a rule has when its file does not set this setting (as models.py reads it)."""
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    if field.converter is not None and default is not attrs.NOTHING:
        return field.converter(default)
    return default


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return " or ".join(_text(item) for item in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_text(item)}" for key, item in value.items())
    return repr(value)


def rule_json(rule: EmailRule) -> dict[str, Any]:
    """A rule as JSON: its identity, then every setting it has (``matches`` and ``does``)."""
    fields = {field.name: field for field in attrs.fields(type(rule))}
    matches = {
        name.rstrip("_"): _json_value(getattr(rule, name))
        for name in _MATCHES
        if getattr(rule, name) != _default(fields[name])
    }
    does = {
        name: _json_value(getattr(rule, name))
        for name in _does(rule)
        if getattr(rule, name) != _default(fields[name])
    }
    return {
        "name": rule.name,
        "type": rule.type.value,
        "sequence": rule.sequence,
        "enabled": rule.enabled,
        "matches": matches,
        "does": does,
    }


def _json_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if attrs.has(type(value)):
        kind: Any = type(value)
        return {
            field.name: _json_value(getattr(value, field.name))
            for field in attrs.fields(kind)
            if field.init and not field.name.startswith("_")
        }
    return value
