"""Which field-mapping patterns could backtrack for a long time: ``check-config``'s warnings.

A pattern runs under a time budget whatever it is
(:data:`~halomail.rules.extract.PATTERN_BUDGET_MS`), so these are warnings, not errors:
a pattern warned about may stop finding its value on some emails. Two shapes cause
nearly every catastrophic backtrack, and both are found by reading the pattern:

* a **nested quantifier**: a group repeated without bound that itself holds an
  unbounded repeat, as in ``(a+)+``, ``(\\w+\\s?)*`` or ``((\\w+[.-]?)+)``;
* **overlapping alternatives under a quantifier**: a repeated group whose alternatives
  can start with the same character, as in ``(a|aa)+`` or ``(\\w|\\d)*``.

The reading is a heuristic: a pattern not warned about can still be slow, and the
budget still holds for it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator, Sequence

import attrs
import regex

from halomail.rules.models import EmailRule, MatchType

__all__ = ["PatternWarning", "pattern_risk", "risky_patterns"]

# The characters tried as the first of each alternative.
_SAMPLE = string.ascii_letters + string.digits + string.punctuation + " \t\n\u00e9"
_FLAGS = regex.IGNORECASE | regex.MULTILINE


@attrs.frozen
class PatternWarning:
    """A pattern that could backtrack for long, and where it is in the configuration.

    Args:
        key_path: The pattern's key (``rules[3].fields[0].pattern``).
        rule: The rule's name.
        reason: What makes it risky, in words.
    """

    key_path: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key_path}: rule {self.rule!r}: {self.reason}"


def risky_patterns(rules: Sequence[EmailRule], key_path: str = "rules") -> list[PatternWarning]:
    """A warning for each field-mapping pattern of ``rules`` that could backtrack for long.

    Args:
        rules: The rules in file order (their index is their place in ``[[rules]]``).
        key_path: Where the rules sit in the configuration.

    Returns:
        The warnings, in file order; empty when every pattern looks safe.
    """
    warnings = []
    for index, rule in enumerate(rules):
        for number, mapping in enumerate(rule.fields):
            if mapping.match is not MatchType.REGEX:
                continue
            reason = pattern_risk(mapping.pattern)
            if reason is not None:
                where = f"{key_path}[{index}].fields[{number}].pattern"
                warnings.append(PatternWarning(where, rule.name, reason))
    return warnings


def pattern_risk(pattern: str) -> str | None:
    """Why ``pattern`` could backtrack for long, or None when it looks safe.

    Args:
        pattern: A regular expression in :mod:`re` syntax.

    Returns:
        The first risky group found, described, or None.
    """
    for group, body, alternatives, nested in _quantified_groups(pattern):
        if nested:
            return f"nested quantifiers in {group!r} can take exponential time"
        if len(alternatives) > 1 and _overlap(alternatives):
            return f"overlapping alternatives {body!r} under a quantifier can take exponential time"
    return None


@attrs.define
class _Group:
    opening: int  # the index of its "("
    start: int  # the index just after "(" and any "?:"-style prefix
    splits: list[int] = attrs.Factory(list)  # where each top-level "|" is
    quantified: bool = False  # holds an unbounded repeat, at any depth


def _quantified_groups(pattern: str) -> Iterator[tuple[str, str, list[str], bool]]:
    """Each group repeated without bound: its text, body, alternatives, and whether it nests."""
    stack = [_Group(0, 0)]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            index = _class_end(pattern, index)
            continue
        if char == "(":
            body = _group_body_start(pattern, index)
            stack.append(_Group(index, body))
            index = body
            continue
        if char == "|":
            stack[-1].splits.append(index)
        elif char == ")" and len(stack) > 1:
            group = stack.pop()
            after = index + 1
            repeated = _unbounded_at(pattern, after)
            if repeated:
                edges = [group.start - 1, *group.splits, index]
                alternatives = [pattern[a + 1 : b] for a, b in itertools.pairwise(edges)]
                yield (
                    pattern[group.opening : after + _quantifier_length(pattern, after)],
                    pattern[group.start : index],
                    alternatives,
                    group.quantified,
                )
            stack[-1].quantified |= group.quantified or repeated
        elif _unbounded_at(pattern, index) and index > 0:
            stack[-1].quantified = True
        index += 1


def _class_end(pattern: str, index: int) -> int:
    """The index just after the character class that opens at ``index``."""
    index += 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1  # a "]" first in a class is a literal
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _group_body_start(pattern: str, index: int) -> int:
    """The index of a group's first character, past ``(`` and ``?:``, ``?P<name>``, ``?=``…"""
    index += 1
    if not pattern.startswith("?", index):
        return index
    lookbehind = pattern.startswith("?<=", index) or pattern.startswith("?<!", index)
    if pattern.startswith("?P<", index) or (pattern.startswith("?<", index) and not lookbehind):
        close = pattern.find(">", index)
        return close + 1 if close >= 0 else len(pattern)
    for prefix in ("?:", "?=", "?!", "?<=", "?<!", "?>"):
        if pattern.startswith(prefix, index):
            return index + len(prefix)
    return index + 1


def _unbounded_at(pattern: str, index: int) -> bool:
    """Whether a quantifier that repeats without bound (``*``, ``+``, ``{n,}``) is at ``index``."""
    if index >= len(pattern):
        return False
    if pattern[index] in "*+":
        return True
    match = regex.match(r"\{(\d*),\}", pattern[index:])
    return match is not None


def _quantifier_length(pattern: str, index: int) -> int:
    match = regex.match(r"(?:[*+]|\{\d*,\})[?+]?", pattern[index:])
    return 0 if match is None else len(match.group())


def _overlap(alternatives: list[str]) -> bool:
    """Whether two alternatives can start with the same character (or one matches nothing)."""
    firsts: list[set[str]] = []
    for alternative in alternatives:
        try:
            compiled = regex.compile(alternative, _FLAGS)
        except regex.error:
            return False  # a group reference or the like: not judged
        if compiled.fullmatch(""):
            return True
        found = {char for char in _SAMPLE if compiled.fullmatch(char, partial=True)}
        if any(found & other for other in firsts):
            return True
        firsts.append(found)
    return False
