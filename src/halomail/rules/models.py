"""Email rules as data: :class:`EmailRule` and the parts it is built from.

Rules are usually read from ``halomail.toml`` by
:func:`~halomail.rules.rules_from_config`, which documents every key, but they are plain
frozen objects that Python code can build directly::

    EmailRule(
        name="Backups",
        type=RuleType.SERVICE_STATUS,
        sequence=20,
        from_="backups@example.com",
        from_exact=True,
        service="Nightly backup",
    )

Every criterion (``from_``, ``to``, ``cc``, ``subject``, ``body``, ``attachment``) takes
a string or a list of strings and is stored lower-cased, once, as a tuple. Two more
test what is not text the sender typed: ``header`` (:class:`HeaderMatch`: a top-level
header by name, and what it contains) and ``classification`` (what
:func:`~halomail.inbound.classify.classify` found: ``spam``, ``bulk``, ``auto-reply``,
``bounce``; see :data:`CLASSIFICATIONS`). A model that
makes no sense raises :class:`~halomail.errors.ConfigError` whose ``key_path`` names the
offending attribute by its ``halomail.toml`` key (``pattern``, ``fields[0].pattern``), so
the loader can prefix it with where the rule sits in the file.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import regex

from halomail.errors import ConfigError

__all__ = [
    "CLASSIFICATIONS",
    "MAX_ASSET_TAGS",
    "TICKET_FIELDS",
    "TICKET_STATUSES",
    "AssetMatch",
    "EmailRule",
    "FieldMapping",
    "FieldSource",
    "FieldType",
    "HeaderMatch",
    "MatchType",
    "RuleType",
]


class RuleType(enum.StrEnum):
    """What a matching rule does with the email (design §3; ``docs/rules.md``)."""

    IGNORE = "ignore"
    HELP_REQUEST = "help_request"
    SERVICE_STATUS = "service_status"
    ALERT = "alert"
    APPLY_TEMPLATE = "apply_template"
    FORMATTED_EMAIL = "formatted_email"
    FILE_TRANSFER = "file_transfer"
    INVENTORY = "inventory"
    VIRUS = "virus"
    OFF_ALERT = "off_alert"


class MatchType(enum.StrEnum):
    """How a field mapping finds its value.

    ``between``: the text after ``start`` up to ``end`` (end of line when ``end`` is
    empty); ``line``: the rest of the line after ``label``; ``regex``: group 1 of
    ``pattern``, or the whole match when it has no group.
    """

    BETWEEN = "between"
    LINE = "line"
    REGEX = "regex"


class FieldType(enum.StrEnum):
    """What a mapped value is converted to."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    CHOICE = "choice"


class FieldSource(enum.StrEnum):
    """Where a field mapping looks: the whole plain-text body or the subject."""

    BODY = "body"
    SUBJECT = "subject"


#: Ticket fields a mapping may target, besides custom fields written ``CF_<name>``.
TICKET_FIELDS: Final = (
    "summary",
    "details",
    "priority",
    "category",
    "team",
    "agent",
    "user_email",
    "alert_key",
    "status",
    "impact",
    "urgency",
    "site",
)

#: The statuses a ``status`` mapping may set (a ticket's :class:`~halomail.TicketStatus`).
TICKET_STATUSES: Final = ("new", "open", "closed")

# Rule types that read field mappings, an asset tag, or a given option; anything else
# given to a rule of another type is a mistake worth an error, not a silent no-op.
FIELD_TYPES: Final = frozenset(
    {
        RuleType.HELP_REQUEST,
        RuleType.ALERT,
        RuleType.FORMATTED_EMAIL,
        RuleType.VIRUS,
        RuleType.OFF_ALERT,
    }
)
ASSET_TYPES: Final = frozenset(
    {RuleType.HELP_REQUEST, RuleType.VIRUS, RuleType.FILE_TRANSFER, RuleType.INVENTORY}
)
TICKET_TYPE_TYPES: Final = frozenset(
    {RuleType.HELP_REQUEST, RuleType.ALERT, RuleType.VIRUS, RuleType.APPLY_TEMPLATE}
)
ALERT_KEY_TYPES: Final = frozenset({RuleType.ALERT, RuleType.OFF_ALERT})
#: The options only some rule types use, and which.
OPTION_TYPES: Final[Mapping[str, frozenset[RuleType]]] = {
    "ticket_type": TICKET_TYPE_TYPES,
    "public": frozenset({RuleType.HELP_REQUEST}),
    "template": frozenset({RuleType.APPLY_TEMPLATE}),
    "service": frozenset({RuleType.SERVICE_STATUS}),
    "closure_string": frozenset({RuleType.ALERT}),
    "alert_rule": frozenset({RuleType.OFF_ALERT}),
    "severity": frozenset({RuleType.VIRUS}),
    "asset": ASSET_TYPES,
    "fields": FIELD_TYPES,
    # An ignore rule sends nothing, so "don't acknowledge" would be a no-op.
    "send_acknowledgement": frozenset(RuleType) - {RuleType.IGNORE},
}

#: The classifications a rule's ``classification`` criterion may name. ``auto_reply`` is
#: accepted for ``auto-reply``.
CLASSIFICATIONS: Final = ("auto-reply", "bounce", "bulk", "spam")

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A header field name (RFC 5322 §3.6.8): printable ASCII but the colon.
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,200}")
# A custom field's name may hold spaces ("CF_Serial Number"), not at its ends.
_CF_NAME = re.compile(r"CF_\S(?:.*\S)?")


#: How many tags one asset match reads from one email, at most (each search is linear,
#: so this bounds the work as well as the tickets' links).
MAX_ASSET_TAGS: Final = 20


def _sources(value: str | Iterable[str]) -> tuple[FieldSource, ...]:
    """Where an asset match looks, each place once: ``"body"``, ``"subject"`` or both."""
    items = (value,) if isinstance(value, str) else tuple(value)
    known = {source.value for source in FieldSource}
    for item in items:
        if item not in known:
            raise ConfigError("source", f"expected 'body' or 'subject', got {item!r}")
    return tuple(dict.fromkeys(FieldSource(item) for item in items))


def _needles(value: str | Iterable[str]) -> tuple[str, ...]:
    """A criterion as a tuple of lower-cased needles (lower-cased here, once)."""
    if isinstance(value, str):
        return (value.lower(),)
    return tuple(str(item).lower() for item in value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _severity(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    return dict(value)


def _opt_text(value: str | None, key: str) -> None:
    if value is not None and not value.strip():
        raise ConfigError(key, "must not be empty")


def _compile_literal(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text), re.IGNORECASE)


def _compile_pattern(pattern: str) -> regex.Pattern[str]:
    """An administrator's pattern, compiled by the regex module to run under a timeout.

    The syntax accepted is :mod:`re`'s, checked by compiling it with :mod:`re` first
    (and its messages are the ones administrators get); only the regex module can
    stop a search that backtracks for too long.
    """
    try:
        re.compile(pattern)
        return regex.compile(pattern, regex.IGNORECASE | regex.MULTILINE)
    except (re.error, regex.error) as exc:
        raise ConfigError("pattern", f"invalid regular expression: {exc}") from exc


@attrs.frozen
class AssetMatch:
    """Where an asset tag sits in the body or subject: between ``start`` and ``end``.

    Every place the tag appears is read (up to :data:`MAX_ASSET_TAGS` per match), so
    an email that names three machines links all three.

    Args:
        start: The text just before the tag (case-insensitive), e.g. ``"Asset:"``.
        end: The text just after it; empty (the default) means the end of the line.
        field: The asset field the tag is looked up by (the processor does the lookup;
            case, spaces and punctuation in the name do not matter).
        source: Where to look: ``body``, ``subject``, or both (in the order given).

    Raises:
        ConfigError: When ``start`` or ``field`` is empty, or ``source`` is.
    """

    start: str
    end: str = ""
    field: str = "tag"
    source: tuple[FieldSource, ...] = attrs.field(default=("body",), converter=_sources)
    _start_re: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False, hash=False)
    _end_re: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if not self.start.strip():
            raise ConfigError("start", "must not be empty")
        if not self.field.strip():
            raise ConfigError("field", "must not be empty")
        if not self.source:
            raise ConfigError("source", "must name 'body', 'subject' or both")
        object.__setattr__(self, "_start_re", _compile_literal(self.start))
        object.__setattr__(self, "_end_re", _end_pattern(self.end))


def _end_pattern(end: str) -> re.Pattern[str] | None:
    """None when the value runs to the end of the line (an empty or line-break end)."""
    if not end.strip(" \t\r\n"):
        return None
    return _compile_literal(end)


@attrs.frozen
class HeaderMatch:
    """A top-level header, by name, that contains one of some strings.

    Args:
        name: The header's name, compared case-insensitively (``X-Spam-Flag``).
        contains: Some value of the header contains one of these (case-insensitive);
            empty: the header is present, whatever its value.

    Raises:
        ConfigError: When ``name`` is empty or not a header name, or a string in
            ``contains`` is empty.
    """

    name: str
    contains: tuple[str, ...] = attrs.field(default=(), converter=_needles)

    def __attrs_post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("name", "required: the header's name, e.g. 'X-Spam-Flag'")
        if not _HEADER_NAME.fullmatch(self.name):
            raise ConfigError(
                "name", f"{self.name!r} is not a header name (printable ASCII, no colon)"
            )
        for index, needle in enumerate(self.contains):
            if not needle.strip():
                where = "contains" if len(self.contains) == 1 else f"contains[{index}]"
                raise ConfigError(where, "must not be empty")

    @property
    def key(self) -> str:
        """The lower-cased name headers are looked up by."""
        return self.name.lower()

    def describe(self) -> str:
        """The criterion in words, e.g. ``X-Spam-Flag contains 'yes'``."""
        if not self.contains:
            return f"{self.name} is present"
        return f"{self.name} contains {_listed(self.contains)}"


def _listed(needles: tuple[str, ...]) -> str:
    if len(needles) == 1:
        return repr(needles[0])
    return "any of " + ", ".join(repr(needle) for needle in needles)


def _header_matches(value: Any) -> tuple[HeaderMatch, ...]:
    """One header criterion or several (any of them), as HeaderMatch objects; mappings
    with ``name`` and ``contains`` are accepted too."""
    items = [value] if isinstance(value, HeaderMatch | Mapping) else list(value)
    return tuple(
        item if isinstance(item, HeaderMatch) else HeaderMatch(**dict(item)) for item in items
    )


def _classifications(value: str | Iterable[str]) -> tuple[str, ...]:
    """Classification names, ``auto_reply`` spelt ``auto-reply``, lower-cased."""
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(str(item).strip().lower().replace("_", "-") for item in items)


@attrs.frozen(repr=False)
class FieldMapping:
    """One value read out of the email into a ticket field.

    Args:
        target: A ticket field (see :data:`TICKET_FIELDS`) or a custom field ``CF_<name>``.
        match: How the value is found (:class:`MatchType`).
        start: For ``between``: the text just before the value (case-insensitive).
        end: For ``between``: the text just after it; empty means the end of the line.
        label: For ``line``: the label whose line holds the value (case-insensitive);
            a line that starts with the label wins over one that merely contains it.
        pattern: For ``regex``: a regular expression in Python :mod:`re` syntax, run by
            the ``regex`` module under a time budget
            (:data:`~halomail.rules.extract.PATTERN_BUDGET_MS`), compiled once,
            case-insensitive and multi-line; group 1 is the value, or the whole match
            when there is no group.
        source: Where to look: ``body`` (the whole plain text) or ``subject``.
        type: What the value is converted to (:class:`FieldType`).
        choices: For ``choice``: the allowed values; a value matches one
            case-insensitively and takes its spelling.
        required: When True, a rule whose value is not found (or does not convert)
            does not match, and evaluation moves on to the next rule.

    Raises:
        ConfigError: When the mapping is inconsistent (``key_path`` is the offending key).
    """

    target: str
    match: MatchType = attrs.field(converter=MatchType)
    start: str = ""
    end: str = ""
    label: str = ""
    pattern: str = ""
    source: FieldSource = attrs.field(default=FieldSource.BODY, converter=FieldSource)
    type: FieldType = attrs.field(default=FieldType.TEXT, converter=FieldType)
    choices: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    required: bool = False
    # A literal search (re) for between/line; the administrator's pattern (regex) for regex.
    _find: re.Pattern[str] | regex.Pattern[str] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _find_anywhere: re.Pattern[str] | None = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _end_re: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __repr__(self) -> str:
        return _short_repr(self, ("target", "match"))

    def __attrs_post_init__(self) -> None:
        if self.target not in TICKET_FIELDS and not _CF_NAME.fullmatch(self.target):
            raise ConfigError(
                "target",
                f"unknown target {self.target!r}: expected one of "
                f"{', '.join(TICKET_FIELDS)}, or CF_<custom field name>",
            )
        given = {"start": self.start, "end": self.end, "label": self.label, "pattern": self.pattern}
        wanted = {
            MatchType.BETWEEN: ("start", "end"),
            MatchType.LINE: ("label",),
            MatchType.REGEX: ("pattern",),
        }[self.match]
        for key, value in given.items():
            if value and key not in wanted:
                raise ConfigError(key, f"not used by match = {str(self.match)!r}")
        required_key = wanted[0]
        if not given[required_key].strip():
            raise ConfigError(required_key, f"required for match = {str(self.match)!r}")
        if self.type is FieldType.CHOICE:
            if not self.choices:
                raise ConfigError("choices", "required for type = 'choice'")
            for index, choice in enumerate(self.choices):
                if not choice.strip():
                    raise ConfigError(f"choices[{index}]", "must not be empty")
        elif self.choices:
            raise ConfigError("choices", "only used with type = 'choice'")
        find_anywhere: re.Pattern[str] | None = None
        find: re.Pattern[str] | regex.Pattern[str]
        if self.match is MatchType.BETWEEN:
            find = _compile_literal(self.start)
        elif self.match is MatchType.LINE:
            find = re.compile(r"^[ \t]*" + re.escape(self.label), re.IGNORECASE | re.MULTILINE)
            find_anywhere = _compile_literal(self.label)
        else:
            find = _compile_pattern(self.pattern)
        object.__setattr__(self, "_find", find)
        object.__setattr__(self, "_find_anywhere", find_anywhere)
        object.__setattr__(self, "_end_re", _end_pattern(self.end))

    @property
    def custom_field(self) -> str | None:
        """The custom field's name without ``CF_`` when the target is one, else None."""
        return self.target[3:] if self.target.startswith("CF_") else None


def _criterion(key: str) -> Any:
    return attrs.field(default=(), converter=_needles, metadata={"key": key})


@attrs.frozen(repr=False)
class EmailRule:
    """One rule: criteria that select emails, and what its type does with them.

    All the criteria given must hold; a rule without criteria matches every email.
    Addresses are compared on the addr-spec only, never the display name.

    Args:
        name: Unique among the rules; shown by ``simulate`` and recorded on outcomes.
        type: What the rule does (:class:`RuleType`, or its string value).
        sequence: Lower runs first; equal sequences are ordered by name.
        enabled: A disabled rule is skipped.
        mailbox: ``"*"`` for every mailbox, or one mailbox's name (case-insensitive).
        from_: The sender's address contains (or, with ``from_exact``, equals) one of these.
        from_exact: Compare ``from_`` for equality with the addr-spec instead of "contains".
        to: Some To address contains (or equals) one of these.
        to_exact: Exact comparison for ``to``.
        cc: Some Cc address contains (or equals) one of these.
        cc_exact: Exact comparison for ``cc``.
        subject: The subject contains one of these (case-insensitive).
        body: The new text of the email (quoted history removed) contains one of these.
        scan_full_body: Search ``body`` in the whole text, quoted history included.
        attachment: Some attachment's file name contains one of these.
        header: Some of these :class:`HeaderMatch` holds: a top-level header by name
            (case-insensitive) contains its string (or, without one, is present).
        classification: The email is one of these (:data:`CLASSIFICATIONS`: ``spam``,
            ``bulk``, ``auto-reply``, ``bounce``), as
            :func:`~halomail.inbound.classify.classify` found.
        send_acknowledgement: False: never acknowledge an email this rule matched.
        ticket_type: The ticket type (``help_request``, ``alert``, ``virus``,
            ``apply_template``).
        public: ``help_request``: whether the first action is visible to the user.
        template: ``apply_template``: the ticket template's name (required).
        service: ``service_status``: the monitored service's name (required).
        closure_string: ``alert``: found in the subject or body, the email closes the
            alert's ticket instead of opening one.
        alert_rule: ``off_alert``: the name of the ``alert`` rule whose tickets it closes
            (required).
        severity: ``virus``: severity word → priority; the first word (in this order)
            found in the subject or body, as a whole word, sets the priority.
        asset: Where the asset tag is (``help_request``, ``virus``, ``file_transfer``,
            ``inventory``): the first of ``assets``.
        assets: Every asset match (``help_request``: a ticket links every asset
            found); given only one of ``asset`` and ``assets``, the other follows.
        fields: Field mappings (``help_request``, ``alert``, ``formatted_email``,
            ``virus``, ``off_alert``).

    Raises:
        ConfigError: When a value makes no sense; ``key_path`` is the ``halomail.toml``
            key (``from``, ``fields[1].choices``) so the loader can place it.
    """

    name: str
    type: RuleType = attrs.field(converter=RuleType)
    sequence: int
    enabled: bool = True
    mailbox: str = "*"
    from_: tuple[str, ...] = _criterion("from")
    from_exact: bool = False
    to: tuple[str, ...] = _criterion("to")
    to_exact: bool = False
    cc: tuple[str, ...] = _criterion("cc")
    cc_exact: bool = False
    subject: tuple[str, ...] = _criterion("subject")
    body: tuple[str, ...] = _criterion("body")
    scan_full_body: bool = False
    attachment: tuple[str, ...] = _criterion("attachment")
    header: tuple[HeaderMatch, ...] = attrs.field(default=(), converter=_header_matches)
    classification: tuple[str, ...] = attrs.field(default=(), converter=_classifications)
    send_acknowledgement: bool = True
    ticket_type: str | None = None
    public: bool = True
    template: str | None = None
    service: str | None = None
    closure_string: str | None = None
    alert_rule: str | None = None
    severity: dict[str, str] = attrs.field(factory=dict, converter=_severity, hash=False)
    asset: AssetMatch | None = None
    fields: tuple[FieldMapping, ...] = attrs.field(default=(), converter=tuple)
    assets: tuple[AssetMatch, ...] = attrs.field(default=(), converter=tuple)
    _severity_res: tuple[tuple[str, re.Pattern[str]], ...] = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )
    _closure_res: tuple[re.Pattern[str], re.Pattern[str]] | None = attrs.field(
        init=False, repr=False, eq=False, hash=False
    )

    def __repr__(self) -> str:
        return _short_repr(self, ("name", "type", "sequence"))

    def __attrs_post_init__(self) -> None:
        # asset is the first of assets, whichever of the two was given.
        assets = self.assets if self.asset is None else (self.asset, *self.assets)
        assets = tuple(dict.fromkeys(assets))
        object.__setattr__(self, "assets", assets)
        object.__setattr__(self, "asset", assets[0] if assets else None)
        if not self.name.strip():
            raise ConfigError("name", "must not be empty")
        if _CONTROL.search(self.name):
            raise ConfigError("name", "must not contain control characters")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise ConfigError("sequence", f"expected an integer, got {self.sequence!r}")
        if not self.mailbox.strip():
            raise ConfigError("mailbox", "must not be empty ('*' means every mailbox)")
        for attribute in attrs.fields(EmailRule):
            key = attribute.metadata.get("key")
            if key is None:
                continue
            for index, needle in enumerate(getattr(self, attribute.name)):
                if not needle.strip():
                    # An empty needle is contained in everything: almost surely a mistake.
                    where = key if len(getattr(self, attribute.name)) == 1 else f"{key}[{index}]"
                    raise ConfigError(where, "must not be empty")
        for index, name in enumerate(self.classification):
            if name not in CLASSIFICATIONS:
                where = (
                    "classification"
                    if len(self.classification) == 1
                    else (f"classification[{index}]")
                )
                raise ConfigError(
                    where,
                    f"unknown classification {name!r}: expected one of "
                    f"{', '.join(repr(known) for known in CLASSIFICATIONS)}",
                )
        for key in ("ticket_type", "template", "service", "closure_string", "alert_rule"):
            _opt_text(getattr(self, key), key)
        self._check_type_options()
        object.__setattr__(
            self,
            "_severity_res",
            tuple(
                (word, re.compile(r"\b" + re.escape(word) + r"\b", re.IGNORECASE))
                for word in self.severity
            ),
        )
        object.__setattr__(self, "_closure_res", closure_patterns(self.closure_string))

    def _check_type_options(self) -> None:
        rule_type = self.type
        # Options left at their defaults are not "given"; the loader also rejects a key
        # written with its default value, since it knows what the file says.
        given = {
            "ticket_type": self.ticket_type is not None,
            "public": not self.public,
            "template": self.template is not None,
            "service": self.service is not None,
            "closure_string": self.closure_string is not None,
            "alert_rule": self.alert_rule is not None,
            "severity": bool(self.severity),
            "asset": self.asset is not None,
            "fields": bool(self.fields),
            "send_acknowledgement": not self.send_acknowledgement,
        }
        for key, types in OPTION_TYPES.items():
            if given[key] and rule_type not in types:
                raise ConfigError(key, not_for_type(key, rule_type, types))
        required = {
            RuleType.APPLY_TEMPLATE: ("template", self.template),
            RuleType.SERVICE_STATUS: ("service", self.service),
            RuleType.OFF_ALERT: ("alert_rule", self.alert_rule),
        }
        if rule_type in required:
            key, value = required[rule_type]
            if value is None:
                raise ConfigError(key, f"required for {rule_type.value} rules")
        for word, priority in self.severity.items():
            if not word.strip() or not priority.strip():
                raise ConfigError(
                    f"severity.{word}", "severity words and priorities must not be empty"
                )
        for index, mapping in enumerate(self.fields):
            if mapping.target == "alert_key" and rule_type not in ALERT_KEY_TYPES:
                raise ConfigError(
                    f"fields[{index}].target", "alert_key is only used by alert and off_alert rules"
                )

    @property
    def has_criteria(self) -> bool:
        """True when the rule names at least one criterion (else it matches everything)."""
        return bool(
            self.from_
            or self.to
            or self.cc
            or self.subject
            or self.body
            or self.attachment
            or self.header
            or self.classification
        )

    @property
    def order_key(self) -> tuple[int, str]:
        """``(sequence, name)``: the order rules are evaluated in."""
        return (self.sequence, self.name)


def _short_repr(obj: Any, always: tuple[str, ...]) -> str:
    """``Class(a=1, b=2)`` with only the attributes that differ from their defaults."""
    parts = []
    for attribute in attrs.fields(type(obj)):
        if attribute.name.startswith("_") or not attribute.init:
            continue
        value = getattr(obj, attribute.name)
        default = attribute.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        elif attribute.converter is not None and default is not attrs.NOTHING:
            default = attribute.converter(default)
        if attribute.name in always or value != default:
            shown = value.value if isinstance(value, enum.Enum) else value
            parts.append(f"{attribute.name}={shown!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def closure_patterns(
    closure_string: str | None,
) -> tuple[re.Pattern[str], re.Pattern[str]] | None:
    """A closure string as a leading subject marker and as text anywhere, compiled once.

    Args:
        closure_string: The alert rule's closure string, or None.

    Returns:
        ``(leading, anywhere)`` case-insensitive patterns, or None.
    """
    if not closure_string:
        return None
    escaped = re.escape(closure_string)
    leading = re.compile(r"^[\s*]*\[?" + escaped + r"\]?(?:\s*:)?", re.IGNORECASE)
    return leading, re.compile(escaped, re.IGNORECASE)


def not_for_type(key: str, rule_type: RuleType, types: Iterable[RuleType]) -> str:
    """The message for an option given to a rule type that does not use it."""
    users = ", ".join(sorted(t.value for t in types))
    return f"{key!r} is not used by {rule_type.value} rules (only by: {users})"
