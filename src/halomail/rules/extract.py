"""What a matched rule reads out of an email: :func:`extract` and :class:`Extraction`.

Pure functions over an :class:`~halomail.inbound.models.InboundEmail`; the results are
plain data for the processor to apply.

**Field mappings** (``rule.fields``) look in ``email.text`` (the whole plain-text body)
or the subject. Searches for ``start``, ``end`` and ``label`` are case-insensitive. The
first mapping that finds a value for a target wins, so two mappings of one target act as
a fallback. Values are trimmed, then converted:

- ``text``: as found;
- ``number``: ``42`` or ``-7`` become an ``int``, ``3.5`` or ``1e3`` a ``float`` (no
  thousands separators, no units);
- ``date``: ISO ``2024-05-31`` (a time after it is ignored), or day first ``31/05/2024``
  or ``31.05.2024``. Slashes are always read day first: ``05/13/2024`` (US month first)
  is not a date, it is reported, because ``05/12/2024`` could not be told apart. Send
  ISO dates when you control the sender;
- ``choice``: one of ``choices`` compared case-insensitively, in the choice's spelling.

A value that does not convert is left out and explained in ``problems``; when its
mapping is ``required`` the rule does not match.

**Alert keys** (``alert`` and ``off_alert``): a mapping whose target is ``alert_key``,
else the subject with: leading markers removed, repeatedly (``Re:``, ``Fwd:``, ``Fw:``,
``AW:``, ``WG:``, ``SV:``, the closure string, and ``PROBLEM``, ``RECOVERY``,
``RESOLVED`` (also ``Resolved in 5m 0s:``), ``OK``, with or without a colon, brackets or
surrounding ``**``); the closure string removed wherever else it appears; a trailing
``is OK``/``is CRITICAL``/``is DOWN``/``is UP``/``is WARNING``/``is UNKNOWN``/``is
UNREACHABLE`` state and surrounding ``*``, ``:`` and ``-`` removed. The rest is
whitespace-normalized and lower-cased. So ``** PROBLEM Service Alert: web01/HTTP is
CRITICAL **`` and ``** RECOVERY Service Alert: web01/HTTP is OK **`` share the key
``service alert: web01/http``. Mapped keys are whitespace-normalized and lower-cased too.

**Inventory**: the first JSON or XML attachment (by name ``.json``/``.xml`` or by type),
if it reads, else the ``key: value`` lines of the body. Keys are lower-cased with runs of
spaces and punctuation turned into ``_`` (``Serial Number`` → ``serial_number``). JSON
must be one object; string, number and boolean values are kept, nested ones skipped.
XML: each child element of the root gives its text; a document with a DTD is refused
(no entity can expand). Attachments over 1 MB are not read and nothing is ever
decompressed; at most 500 entries of 1,000 characters each are kept.

**Formatted emails**: every ``Label: value`` line of the body (first occurrence of a
label wins) is in ``formatted``; the rule's ``line`` mappings turn labels into fields.

Every search is bounded: only the first :data:`MAX_SCAN_CHARS` characters of the body
are read, the same bound rule criteria use.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Final
from xml.parsers import expat

import attrs
import regex

from halomail.inbound.models import Attachment, InboundEmail
from halomail.rules.models import (
    ALERT_KEY_TYPES,
    MAX_ASSET_TAGS,
    TICKET_STATUSES,
    EmailRule,
    FieldMapping,
    FieldSource,
    FieldType,
    MatchType,
    RuleType,
    closure_patterns,
)

__all__ = [
    "MAX_SCAN_CHARS",
    "PATTERN_BUDGET_MS",
    "Extraction",
    "FieldValue",
    "alert_key_from_subject",
    "extract",
]

log = logging.getLogger(__name__)

#: How much of a body rules read (criteria and extraction alike), so one huge email
#: costs bounded time whatever the rules.
MAX_SCAN_CHARS: Final = 1_000_000

#: How long one field mapping's ``pattern`` may search one subject or body, in
#: milliseconds. Past it the search stops and the field is left unset, exactly as if
#: the pattern had not matched (so a ``required`` mapping makes its rule not match).
PATTERN_BUDGET_MS: Final = 100

#: A converted field value.
FieldValue = str | int | float | dt.date

_MAX_ATTACHMENT_BYTES: Final = 1024 * 1024
_MAX_ENTRIES: Final = 500
_MAX_VALUE_CHARS: Final = 1000

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?")
_DAY_FIRST = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})")
# "Label: value" — a label starts with a letter and holds no comma or colon, so prose
# such as "On Mon, 1 Jan 2024, Bob wrote:" does not read as a field; a colon straight
# before a digit ("at 09:12") is a time, not the end of a label.
_LABEL_LINE = re.compile(
    r"^[ \t]*([^\W\d_][\w .'()/&#+-]{0,59}?)[ \t]*:(?!\d)[ \t]*(\S[^\n]*?)[ \t\r]*$",
    re.MULTILINE,
)
_KEY_JUNK = re.compile(r"[\W_]+")
_SPACES = re.compile(r"\s+")
_LEADING_MARKER = re.compile(
    r"""^[\s*]*(?:
        (?:re|fwd?|aw|wg|sv)(?:\[\d+\])?\s*:
      | \[?(?:problem|recovery|resolved(?:\s+in(?:\s+\d+[wdhms])+)?|ok)\]?(?:\s*:|\s+|$)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING_STATE = re.compile(
    r"\s+is\s+(?:ok|up|down|critical|warning|unknown|unreachable)[\s*]*$", re.IGNORECASE
)
_JSON_TYPES = frozenset({"application/json", "text/json"})
_XML_TYPES = frozenset({"application/xml", "text/xml"})


@attrs.frozen
class Extraction:
    """What a rule read out of an email.

    Args:
        fields: Ticket fields by target (``summary``, ``priority`` …), converted
            (``str``, ``int``, ``float`` or ``datetime.date``). Custom fields and the
            alert key are not here.
        custom_fields: Custom fields by name without ``CF_``, as strings (numbers as
            written by ``str``, dates in ISO form).
        asset_tag: The first tag the rule's first asset match (``rule.asset``) found,
            or None.
        asset_tags: Every ``(field, tag)`` the rule's asset matches found, in order
            (the field is the asset field to look the tag up by).
        alert_key: ``alert``/``off_alert``: the key that ties an alert to its ticket.
        closing: ``alert``: the closure string is in the subject or body.
        severity: ``virus``: the severity word found (as the rule spells it), or None.
        priority: ``virus``: the priority that word maps to, or None.
        inventory: ``inventory``: the reported values by normalized key.
        formatted: ``formatted_email``: every ``Label: value`` line by label.
        problems: What could not be read or converted, in words for ``simulate``.
        missing_required: Targets of required mappings without a value; a rule with
            any does not match.
        timed_out: Targets whose ``pattern`` ran past :data:`PATTERN_BUDGET_MS` and so
            found nothing.
    """

    fields: Mapping[str, FieldValue] = attrs.field(factory=dict, hash=False)
    custom_fields: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    asset_tag: str | None = None
    alert_key: str | None = None
    asset_tags: tuple[tuple[str, str], ...] = ()
    closing: bool = False
    severity: str | None = None
    priority: str | None = None
    inventory: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    formatted: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    problems: tuple[str, ...] = ()
    missing_required: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The extraction as JSON-ready data (dates in ISO form)."""
        return {
            "fields": {
                key: value.isoformat() if isinstance(value, dt.date) else value
                for key, value in self.fields.items()
            },
            "custom_fields": dict(self.custom_fields),
            "asset_tag": self.asset_tag,
            "asset_tags": [list(pair) for pair in self.asset_tags],
            "alert_key": self.alert_key,
            "closing": self.closing,
            "severity": self.severity,
            "priority": self.priority,
            "inventory": dict(self.inventory),
            "formatted": dict(self.formatted),
            "problems": list(self.problems),
            "missing_required": list(self.missing_required),
            "timed_out": list(self.timed_out),
        }


def extract(rule: EmailRule, email: InboundEmail) -> Extraction:
    """Read what ``rule`` wants out of ``email``.

    Args:
        rule: The rule (its type decides what is read beyond its field mappings).
        email: The parsed email.

    Returns:
        The values found; never raises for anything the email contains.
    """
    body = email.text[:MAX_SCAN_CHARS]
    subject = email.subject
    problems: list[str] = []
    fields: dict[str, FieldValue] = {}
    custom: dict[str, str] = {}
    missing: list[str] = []
    timed_out: list[str] = []
    mapped_key: str | None = None
    for mapping in rule.fields:
        target = mapping.target
        if target in fields or target in custom or (target == "alert_key" and mapped_key):
            continue  # an earlier mapping of this target already found its value
        try:
            raw = find_value(mapping, body if mapping.source is FieldSource.BODY else subject)
        except TimeoutError:
            timed_out.append(target)
            problems.append(timeout_message(rule, target))
            # The rule's name and target only: the email's text is never logged.
            log.warning("%s; the field is left unset", timeout_message(rule, target))
            continue
        value = None if raw is None else _convert(mapping, raw.strip(), problems)
        if value is not None and target == "status":
            value = _status(value, problems)
        if value is None:
            continue
        name = mapping.custom_field
        if target == "alert_key":
            mapped_key = _normalize_key(str(value)) or None
        elif name is not None:
            custom[target] = _as_text(value)
        else:
            fields[target] = value
    for mapping in rule.fields:
        found = mapping.target in fields or mapping.target in custom
        if mapping.target == "alert_key":
            found = mapped_key is not None
        if mapping.required and not found and mapping.target not in missing:
            missing.append(mapping.target)

    values: dict[str, Any] = {}
    if rule.assets:
        values["asset_tags"] = _asset_tags(rule, subject, body)
        # The first match's own first tag: looked up by rule.asset.field, as before.
        first = rule.assets[0].field
        values["asset_tag"] = next((t for f, t in values["asset_tags"] if f == first), None)
    if rule.type in ALERT_KEY_TYPES:
        values["alert_key"] = mapped_key or _alert_key(subject, rule._closure_res)
        if values["alert_key"] is None:
            problems.append("no alert key: the subject is empty once markers are removed")
    if rule.type is RuleType.ALERT and rule._closure_res is not None:
        anywhere = rule._closure_res[1]
        values["closing"] = bool(anywhere.search(subject) or anywhere.search(body))
    if rule.type is RuleType.VIRUS:
        for word, pattern in rule._severity_res:
            if pattern.search(subject) or pattern.search(body):
                values["severity"] = word
                values["priority"] = rule.severity[word]
                break
    if rule.type is RuleType.INVENTORY:
        values["inventory"] = _inventory(email.attachments, body, problems)
    if rule.type is RuleType.FORMATTED_EMAIL:
        values["formatted"] = _label_lines(body)
    return Extraction(
        fields=fields,
        custom_fields={key[3:]: value for key, value in custom.items()},
        problems=tuple(problems),
        missing_required=tuple(missing),
        timed_out=tuple(timed_out),
        **values,
    )


def find_value(mapping: FieldMapping, text: str) -> str | None:
    """The raw (untrimmed) text ``mapping`` finds in ``text``, or None.

    Args:
        mapping: The field mapping, its searches compiled when it was built.
        text: The body or subject to search.

    Returns:
        The text found, or None when the tags, label or pattern are not there.

    Raises:
        TimeoutError: The mapping's ``pattern`` searched for longer than
            :data:`PATTERN_BUDGET_MS` (a pattern that backtracks on this text).
    """
    finder = mapping._find
    if isinstance(finder, regex.Pattern):
        hit = finder.search(text, timeout=PATTERN_BUDGET_MS / 1000)
        if hit is None:
            return None
        return hit.group(1) if finder.groups else hit.group(0)
    if mapping.match is MatchType.BETWEEN:
        return _between(finder, mapping._end_re, text)
    # line: a line that starts with the label wins over one that merely contains it.
    found = finder.search(text)
    if found is None and mapping._find_anywhere is not None:
        found = mapping._find_anywhere.search(text)
    return None if found is None else _rest_of_line(text, found.end())


def timeout_message(rule: EmailRule, target: str) -> str:
    """What ``simulate`` and the log say when a rule's pattern ran out of time.

    Args:
        rule: The rule whose field mapping timed out.
        target: The mapping's target field.

    Returns:
        ``rule X: pattern timed out after N ms (field 'target')``.
    """
    return f"rule {rule.name}: pattern timed out after {PATTERN_BUDGET_MS} ms (field {target!r})"


def alert_key_from_subject(subject: str, closure_string: str | None = None) -> str | None:
    """The default alert key: the subject without reply and state markers.

    Args:
        subject: The email's subject.
        closure_string: The alert rule's closure string, removed wherever it appears.

    Returns:
        The key, or None when nothing is left.
    """
    return _alert_key(subject, closure_patterns(closure_string))


def _alert_key(subject: str, closure: tuple[re.Pattern[str], re.Pattern[str]] | None) -> str | None:
    text = subject
    while True:
        stripped = _LEADING_MARKER.sub("", text, count=1)
        if closure is not None:
            stripped = closure[0].sub("", stripped, count=1)
        if stripped == text:
            break
        text = stripped
    if closure is not None:
        text = closure[1].sub(" ", text)
    text = _TRAILING_STATE.sub("", text)
    return _normalize_key(text.strip(" \t*:-")) or None


def _normalize_key(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _between(start: re.Pattern[str], end: re.Pattern[str] | None, text: str) -> str | None:
    found = start.search(text)
    if found is None:
        return None
    if end is None:
        return _rest_of_line(text, found.end())
    # Searching from the start tag on keeps this linear: one search for each tag.
    closing = end.search(text, found.end())
    if closing is None:
        return None
    return text[found.end() : closing.start()]


def _rest_of_line(text: str, position: int) -> str:
    stop = text.find("\n", position)
    return text[position : stop if stop >= 0 else len(text)]


def _convert(mapping: FieldMapping, value: str, problems: list[str]) -> FieldValue | None:
    if not value:
        return None
    shown = value if len(value) <= 60 else value[:57] + "..."
    kind = mapping.type
    if kind is FieldType.TEXT:
        return value
    if kind is FieldType.NUMBER:
        if _INT.fullmatch(value):
            return int(value)
        if _FLOAT.fullmatch(value):
            return float(value)
        problems.append(f"field {mapping.target!r}: {shown!r} is not a number")
        return None
    if kind is FieldType.DATE:
        date = _parse_date(value)
        if date is None:
            problems.append(
                f"field {mapping.target!r}: {shown!r} is not a date "
                "(expected YYYY-MM-DD or day-first dd/mm/yyyy)"
            )
        return date
    lowered = value.lower()
    for choice in mapping.choices:
        if choice.lower() == lowered:
            return choice
    options = ", ".join(repr(choice) for choice in mapping.choices)
    problems.append(f"field {mapping.target!r}: {shown!r} is not one of {options}")
    return None


def _status(value: FieldValue, problems: list[str]) -> str | None:
    """A mapped status, lower-cased, when it is one a ticket can have."""
    status = _as_text(value).lower()
    if status in TICKET_STATUSES:
        return status
    options = ", ".join(repr(known) for known in TICKET_STATUSES)
    problems.append(f"field 'status': {_as_text(value)[:60]!r} is not one of {options}")
    return None


def _parse_date(value: str) -> dt.date | None:
    parts: tuple[str, str, str] | None = None
    iso = _ISO_DATE.fullmatch(value)
    if iso:
        parts = (iso.group(1), iso.group(2), iso.group(3))
    else:
        day_first = _DAY_FIRST.fullmatch(value)
        if day_first:
            parts = (day_first.group(3), day_first.group(2), day_first.group(1))
    if parts is None:
        return None
    try:
        return dt.date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return None


def _as_text(value: FieldValue) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _asset_tags(rule: EmailRule, subject: str, body: str) -> tuple[tuple[str, str], ...]:
    """Every ``(field, tag)`` the rule's asset matches find, each once, in their order."""
    found: dict[tuple[str, str], None] = {}
    for asset in rule.assets:
        for source in asset.source:
            text = subject if source is FieldSource.SUBJECT else body
            for tag in _tags(asset._start_re, asset._end_re, text):
                found.setdefault((asset.field, tag))
    return tuple(found)


def _tags(start: re.Pattern[str], end: re.Pattern[str] | None, text: str) -> list[str]:
    """The tags between ``start`` and ``end`` (or the line's end), at most MAX_ASSET_TAGS.

    Each search starts where the last one stopped, so the text is read once.
    """
    tags: list[str] = []
    position = 0
    while len(tags) < MAX_ASSET_TAGS:
        opening = start.search(text, position)
        if opening is None:
            break
        if end is None:
            stop = text.find("\n", opening.end())
            stop = len(text) if stop < 0 else stop
            closing_end = stop
        else:
            closing = end.search(text, opening.end())
            if closing is None:
                break  # no end tag after this start: none after a later one either
            stop, closing_end = closing.start(), closing.end()
        tag = text[opening.end() : stop].strip()
        if tag and tag not in tags:
            tags.append(tag)
        position = max(closing_end, opening.end() + 1)
    return tags


def _label_lines(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _LABEL_LINE.finditer(text):
        label = match.group(1).strip()
        if label not in found:
            found[label] = match.group(2)[:_MAX_VALUE_CHARS]
            if len(found) >= _MAX_ENTRIES:
                break
    return found


def _inventory_key(raw: str) -> str:
    return _KEY_JUNK.sub("_", raw.lower()).strip("_")


def _inventory(
    attachments: tuple[Attachment, ...], body: str, problems: list[str]
) -> dict[str, str]:
    for attachment in attachments:
        name = attachment.filename.lower()
        kind = attachment.content_type
        is_json = name.endswith(".json") or kind in _JSON_TYPES
        is_xml = name.endswith(".xml") or kind in _XML_TYPES
        if not (is_json or is_xml):
            continue
        shown = attachment.filename or attachment.storage_name
        if (
            attachment.size > _MAX_ATTACHMENT_BYTES
            or len(attachment.payload) > _MAX_ATTACHMENT_BYTES
        ):
            problems.append(f"inventory: {shown} is larger than 1 MB and was not read")
            continue
        read = (_json_values if is_json else _xml_values)(attachment.payload, shown, problems)
        if read is not None:
            return read
    values: dict[str, str] = {}
    for label, value in _label_lines(body).items():
        key = _inventory_key(label)
        if key and key not in values:
            values[key] = value
    return values


def _add(values: dict[str, str], raw_key: str, value: str, problems: list[str]) -> None:
    key = _inventory_key(raw_key)
    if not key or key in values:
        return
    if len(values) >= _MAX_ENTRIES:
        if not problems or not problems[-1].startswith("inventory: more than"):
            problems.append(f"inventory: more than {_MAX_ENTRIES} values; the rest were skipped")
        return
    values[key] = value.strip()[:_MAX_VALUE_CHARS]


def _json_values(payload: bytes, shown: str, problems: list[str]) -> dict[str, str] | None:
    try:
        data = json.loads(payload)
    # A deeply nested document exhausts the decoder's recursion budget: just unreadable.
    except (ValueError, RecursionError):
        problems.append(f"inventory: {shown} is not valid JSON")
        return None
    if not isinstance(data, dict):
        problems.append(f"inventory: {shown} is not a JSON object")
        return None
    values: dict[str, str] = {}
    skipped: list[str] = []
    for key, value in data.items():
        if isinstance(value, bool):
            _add(values, key, "true" if value else "false", problems)
        elif isinstance(value, str | int | float):
            _add(values, key, str(value), problems)
        elif value is not None:
            skipped.append(key)
    if skipped:
        problems.append(f"inventory: nested values skipped in {shown}: {', '.join(skipped[:10])}")
    return values


class _RefusedXML(Exception):
    """The XML declares a DTD, which could define entities; it is not read."""


def _refuse(*_args: object) -> None:
    raise _RefusedXML


def _xml_values(payload: bytes, shown: str, problems: list[str]) -> dict[str, str] | None:
    # expat directly, not ElementTree: a DOCTYPE is refused the moment it starts, before
    # any entity is declared, whatever the document's encoding.
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0
    current: str | None = None
    nested = False
    text: list[str] = []
    values: dict[str, str] = {}
    skipped: list[str] = []

    def start(name: str, _attributes: dict[str, str]) -> None:
        nonlocal depth, current, nested
        depth += 1
        if depth == 2:
            current, nested = name.rpartition(":")[2], False
            text.clear()
        elif depth > 2:
            nested = True

    def end(_name: str) -> None:
        nonlocal depth, current
        if depth == 2 and current is not None:
            if nested:
                skipped.append(current)
            else:
                _add(values, current, "".join(text), problems)
            current = None
        depth -= 1

    def data(chunk: str) -> None:
        if depth == 2 and sum(map(len, text)) <= _MAX_VALUE_CHARS:
            text.append(chunk)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(payload, True)
    except _RefusedXML:
        problems.append(f"inventory: {shown} declares a DTD and was not read")
        return None
    except expat.ExpatError:
        problems.append(f"inventory: {shown} is not well-formed XML")
        return None
    if skipped:
        problems.append(f"inventory: nested values skipped in {shown}: {', '.join(skipped[:10])}")
    return values
