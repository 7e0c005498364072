"""The rule engine: the first matching rule decides, found through an index.

:meth:`RuleEngine.evaluate` answers exactly what :meth:`RuleEngine.evaluate_sequential`
(the plain loop over the rules in ``(sequence, name)`` order, kept as the reference)
answers, without looking at every rule:

1. Each email field a rule can test is lower-cased once: the sender's addr-spec, the To
   and Cc addr-specs, the subject, the new text and the whole text (both bounded by
   :data:`~halomail.rules.extract.MAX_SCAN_CHARS`), the attachment names, the flags of
   its classification, and the values of the headers some rule names (each bounded by
   :data:`MAX_HEADER_CHARS`).
2. Exact address criteria are looked up in one ``dict`` per header (From, To, Cc), and
   classification criteria in one ``dict`` by flag. Header criteria are filed by
   header name: only those naming a header the email has are tested.
3. The "contains" needles of each field are in an Aho-Corasick automaton
   (:mod:`halomail.rules._automaton`; the new text and the whole text share one),
   walked once over the field. When a field has few needles, testing each needle with
   ``in`` is cheaper than the walk; ``scan="auto"`` (the default) picks per field from
   a cost estimate, and both give the same set of needles.
4. A criterion holds when one of its needles was found in its field; a rule is a
   candidate when all its criteria hold (counted per rule). Rules without criteria are
   always candidates.
5. Candidates are taken in ``(sequence, name)`` order: the first whose mailbox fits
   and whose required field mappings find their values is the decision. Usually only
   the first candidate is ever extracted.

The cost per email therefore grows with the size of the email and the number of rules
that *nearly* match, not with the number of rules. A rule set without header or
classification criteria never looks at headers and never classifies the email.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

import attrs

from halomail.inbound.classify import classify
from halomail.inbound.models import Classification, InboundEmail
from halomail.rules._automaton import Automaton, folded_utf8, utf8
from halomail.rules.extract import MAX_SCAN_CHARS, Extraction, extract, timeout_message
from halomail.rules.models import CLASSIFICATIONS, EmailRule, HeaderMatch

__all__ = ["MAX_HEADER_CHARS", "Explanation", "RuleEngine", "RuleMatch", "RuleStep", "ScanMode"]

logger = logging.getLogger(__name__)

#: How the engine finds "contains" needles: ``auto`` picks per field by a cost estimate,
#: ``automaton`` always walks the automaton, ``direct`` tests each needle with ``in``.
ScanMode = Literal["auto", "automaton", "direct"]

NOT_EVALUATED: Final = "not evaluated (an earlier rule matched)"

#: How much of each header value a ``header`` criterion searches: the parser bounds the
#: whole header block, this bounds the work per header a rule names.
MAX_HEADER_CHARS: Final = 16_384

# The email fields criteria test; a criterion names one of them.
_FROM, _TO, _CC, _SUBJECT, _BODY_NEW, _BODY_FULL, _ATTACHMENT, _HEADER, _CLASSIFICATION = range(9)
_FIELDS: Final = 9
_ADDRESS_FIELDS: Final = (_FROM, _TO, _CC)
# The fields looked up in a dict of exact values rather than searched.
_EXACT_FIELDS: Final = (*_ADDRESS_FIELDS, _CLASSIFICATION)
# The short fields searched for "contains" needles; walked together in one call.
_SHORT_FIELDS: Final = (_FROM, _TO, _CC, _SUBJECT, _ATTACHMENT)

# Cost model for scan="auto", in units of roughly 1 ns, measured on CPython 3.11 (a
# loaded machine; only the ratios matter): the automaton walk costs ~400 per call plus
# ~1 per character (encoding to UTF-8 included); `needle in text` ~100 per call plus
# ~0.5 per character of text. Ties go to the automaton. Only speed depends on this
# choice.
_WALK_PER_CALL: Final = 400
_WALK_PER_CHAR: Final = 1.0
_IN_PER_CALL: Final = 100
_IN_PER_CHAR: Final = 0.5

# How many mailboxes' lists of catch-all rules an engine keeps (one per mailbox name).
_MAX_CACHED_MAILBOXES: Final = 1024


@attrs.frozen
class RuleMatch:
    """The rule that decided, and what it read out of the email.

    Args:
        rule: The first matching rule.
        extraction: Its field values, asset tag, alert key and so on.
    """

    rule: EmailRule
    extraction: Extraction


@attrs.frozen
class RuleStep:
    """One rule's part in an explanation.

    Args:
        rule: The rule.
        matched: True for the rule that decided.
        reason: Why it did not match, in words (the first criterion that failed,
            ``disabled``, or ``not evaluated (an earlier rule matched)``); None when
            it matched.
    """

    rule: EmailRule
    matched: bool
    reason: str | None = None


@attrs.frozen
class Explanation:
    """Every rule in order, what became of it, and the decision.

    Args:
        mailbox: The mailbox the email was evaluated for.
        steps: One step per rule, in evaluation order (disabled rules included).
        decision: The first match, or None when no rule matched.
    """

    mailbox: str
    steps: tuple[RuleStep, ...]
    decision: RuleMatch | None

    def format(self) -> str:
        """A plain-text table of the steps, then the decision and its extraction."""
        header = ("seq", "rule", "type", "result")
        rows = [
            (
                str(step.rule.sequence),
                _clip(step.rule.name, 40),
                step.rule.type.value,
                "MATCHED" if step.matched else f"{step.reason}",
            )
            for step in self.steps
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        lines = []
        for row in [header, *rows]:
            cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2])]
            lines.append("  ".join([*cells, row[3]]).rstrip())
        if not self.steps:
            lines.append("(no rules)")
        lines.append("")
        if self.decision is None:
            lines.append(f"Decision: no rule matched in mailbox {self.mailbox!r}")
        else:
            rule = self.decision.rule
            lines.append(f"Decision: {rule.name} ({rule.type.value})")
            lines.extend(f"  {line}" for line in _describe_extraction(self.decision.extraction))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The explanation as JSON-ready data."""
        decision = None
        if self.decision is not None:
            decision = {
                "rule": self.decision.rule.name,
                "type": self.decision.rule.type.value,
                "send_acknowledgement": self.decision.rule.send_acknowledgement,
                "extraction": self.decision.extraction.as_dict(),
            }
        return {
            "mailbox": self.mailbox,
            "rules": [
                {
                    "name": step.rule.name,
                    "sequence": step.rule.sequence,
                    "type": step.rule.type.value,
                    "matched": step.matched,
                    "reason": step.reason,
                }
                for step in self.steps
            ],
            "decision": decision,
        }


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe_extraction(extraction: Extraction) -> list[str]:
    lines = [f"{key}: {value}" for key, value in extraction.fields.items()]
    lines += [f"CF_{key}: {value}" for key, value in extraction.custom_fields.items()]
    for key in ("asset_tag", "alert_key", "severity", "priority"):
        value = getattr(extraction, key)
        if value is not None:
            lines.append(f"{key}: {value}")
    if extraction.closing:
        lines.append("closing: yes (closure string found)")
    lines += [f"inventory {key}: {value}" for key, value in extraction.inventory.items()]
    lines += [f"form {key}: {value}" for key, value in extraction.formatted.items()]
    lines += [f"problem: {problem}" for problem in extraction.problems]
    return lines


@attrs.frozen
class _Criterion:
    field: int
    exact: bool
    needles: tuple[str, ...]
    failure: str
    headers: tuple[HeaderMatch, ...] = ()  # for the header field: any of them holds


@attrs.frozen
class _Compiled:
    rule: EmailRule
    rank: int
    mailbox: str | None  # lower-cased; None for every mailbox
    criteria: tuple[_Criterion, ...]


def _shown(needles: tuple[str, ...]) -> str:
    if len(needles) == 1:
        return repr(needles[0])
    listed = ", ".join(repr(needle) for needle in needles[:5])
    more = f" and {len(needles) - 5} more" if len(needles) > 5 else ""
    return f"any of {listed}{more}"


def _criteria(rule: EmailRule) -> tuple[_Criterion, ...]:
    found: list[_Criterion] = []
    for field, key, needles, exact in (
        (_FROM, "from", rule.from_, rule.from_exact),
        (_TO, "to", rule.to, rule.to_exact),
        (_CC, "cc", rule.cc, rule.cc_exact),
    ):
        if needles:
            verb = "is" if exact else "contains"
            found.append(
                _Criterion(field, exact, needles, f"{key}: no address {verb} {_shown(needles)}")
            )
    if rule.subject:
        found.append(
            _Criterion(
                _SUBJECT, False, rule.subject, f"subject: does not contain {_shown(rule.subject)}"
            )
        )
    if rule.body:
        field, where = (
            (_BODY_FULL, "the full body") if rule.scan_full_body else (_BODY_NEW, "the new text")
        )
        found.append(
            _Criterion(
                field, False, rule.body, f"body: {where} does not contain {_shown(rule.body)}"
            )
        )
    if rule.attachment:
        found.append(
            _Criterion(
                _ATTACHMENT,
                False,
                rule.attachment,
                f"attachment: no attachment name contains {_shown(rule.attachment)}",
            )
        )
    if rule.header:
        wanted = " or ".join(match.describe() for match in rule.header)
        found.append(_Criterion(_HEADER, False, (), f"header: no {wanted}", rule.header))
    if rule.classification:
        names = ", ".join(rule.classification)
        wanted = names if len(rule.classification) == 1 else f"any of {names}"
        found.append(
            _Criterion(_CLASSIFICATION, True, rule.classification, f"classification: not {wanted}")
        )
    return tuple(found)


class _View:
    """The email's tested fields, lower-cased once; only the fields some rule tests.

    Headers are read on demand, by name, each once. The bodies are kept as they are in
    ``bodies`` and lower-cased only when read with :meth:`field`: ASCII needles search
    them without it (:func:`~halomail.rules._automaton.folded_utf8`).
    """

    __slots__ = ("_email", "_headers", "bodies", "values")

    def __init__(
        self,
        email: InboundEmail,
        used: frozenset[int],
        classification: Classification | None = None,
    ) -> None:
        values: list[tuple[str, ...]] = [()] * _FIELDS
        if _FROM in used and email.sender is not None:
            values[_FROM] = (email.sender.normalized,)
        if _TO in used:
            values[_TO] = tuple(address.normalized for address in email.to)
        if _CC in used:
            values[_CC] = tuple(address.normalized for address in email.cc)
        if _SUBJECT in used:
            values[_SUBJECT] = (email.subject.lower(),)
        bodies: dict[int, str] = {}
        if _BODY_NEW in used:
            bodies[_BODY_NEW] = email.new_text[:MAX_SCAN_CHARS]
        if _BODY_FULL in used:
            bodies[_BODY_FULL] = email.text[:MAX_SCAN_CHARS]
        if _ATTACHMENT in used:
            values[_ATTACHMENT] = tuple(a.filename.lower() for a in email.attachments)
        if _CLASSIFICATION in used:
            # Only classified when a rule asks: the engine's caller usually knows already.
            found = classification if classification is not None else classify(email)
            values[_CLASSIFICATION] = tuple(f for f in found.flags if f in CLASSIFICATIONS)
        self.values = values
        self.bodies = bodies
        self._email = email
        self._headers: dict[str, tuple[str, ...]] = {}

    def field(self, field: int) -> tuple[str, ...]:
        """The lower-cased values of ``field`` (a body is lower-cased on first read)."""
        found = self.values[field]
        if not found and field in self.bodies:
            found = self.values[field] = (self.bodies[field].lower(),)
        return found

    def header(self, key: str) -> tuple[str, ...]:
        """Every value of the header ``key`` (lower-cased name), lower-cased and bounded."""
        found = self._headers.get(key)
        if found is None:
            found = tuple(v[:MAX_HEADER_CHARS].lower() for v in self._email.header_all(key))
            self._headers[key] = found
        return found


def _header_holds(match: HeaderMatch, values: tuple[str, ...]) -> bool:
    """The header is present and, when the match says so, contains one of its strings."""
    if not match.contains:
        return bool(values)
    return any(needle in value for value in values for needle in match.contains)


def _holds(criterion: _Criterion, view: _View) -> bool:
    if criterion.field == _HEADER:
        return any(_header_holds(m, view.header(m.key)) for m in criterion.headers)
    values = view.field(criterion.field)
    if criterion.exact:
        return any(value in criterion.needles for value in values)
    return any(needle in value for value in values for needle in criterion.needles)


class RuleEngine:
    """Evaluates rules for emails: the first matching rule by ``(sequence, name)`` decides.

    Build it once per rule set and share it: evaluation changes nothing, so one engine
    serves any number of threads.

    Args:
        rules: The rules, in any order.
        scan: How "contains" needles are found (:data:`ScanMode`); every mode gives the
            same results, ``auto`` is the fastest; the others exist for tests and
            benchmarks.

    Raises:
        ValueError: When two rules share a name (compared case-insensitively), since
            ties in ``sequence`` are ordered by name and ``off_alert`` rules refer to
            alert rules by name.
    """

    def __init__(self, rules: Sequence[EmailRule], *, scan: ScanMode = "auto") -> None:
        if scan not in ("auto", "automaton", "direct"):
            raise ValueError(f"scan must be 'auto', 'automaton' or 'direct', got {scan!r}")
        seen: dict[str, str] = {}
        for rule in rules:
            folded = rule.name.casefold()
            if folded in seen:
                raise ValueError(f"duplicate rule name {rule.name!r} (also {seen[folded]!r})")
            seen[folded] = rule.name
        ordered = sorted(rules, key=lambda rule: rule.order_key)
        self._scan: ScanMode = scan
        self._ordered = tuple(
            _Compiled(
                rule=rule,
                rank=rank,
                mailbox=None if rule.mailbox == "*" else rule.mailbox.lower(),
                criteria=_criteria(rule),
            )
            for rank, rule in enumerate(ordered)
        )
        self._build_index()
        logger.debug(
            "rule engine: %s rules, %s needles, %s exact addresses",
            len(self._ordered),
            self._needle_count,
            sum(len(table) for table in self._exact),
        )

    def _build_index(self) -> None:
        # contains[field]: needle -> ids of the criteria it satisfies, in first-seen order
        contains: list[dict[str, list[int]]] = [{} for _ in range(_FIELDS)]
        exact: list[dict[str, list[int]]] = [{} for _ in range(_FIELDS)]
        # headers: header name -> (criterion id, the match) for every match naming it
        headers: dict[str, list[tuple[int, HeaderMatch]]] = {}
        criterion_rank: list[int] = []
        need: list[int] = [0] * len(self._ordered)
        catch_all: list[int] = []
        used: set[int] = set()
        for compiled in self._ordered:
            if not compiled.rule.enabled:
                continue
            need[compiled.rank] = len(compiled.criteria)
            if not compiled.criteria:
                catch_all.append(compiled.rank)
            for criterion in compiled.criteria:
                criterion_id = len(criterion_rank)
                criterion_rank.append(compiled.rank)
                used.add(criterion.field)
                if criterion.field == _HEADER:
                    for match in criterion.headers:
                        headers.setdefault(match.key, []).append((criterion_id, match))
                    continue
                table = (exact if criterion.exact else contains)[criterion.field]
                for needle in dict.fromkeys(criterion.needles):  # listed twice counts once
                    table.setdefault(needle, []).append(criterion_id)
        self._exact = [{k: tuple(v) for k, v in table.items()} for table in exact]
        self._headers = {k: tuple(v) for k, v in headers.items()}
        self._criterion_rank = tuple(criterion_rank)
        self._need = tuple(need)
        self._used = frozenset(used)
        # Catch-alls by mailbox: the ones a mailbox may use are merged once, on first use.
        self._catch_all_any = tuple(r for r in catch_all if self._ordered[r].mailbox is None)
        self._catch_all_by_mailbox: dict[str, list[int]] = {}
        for rank in catch_all:
            mailbox = self._ordered[rank].mailbox
            if mailbox is not None:
                self._catch_all_by_mailbox.setdefault(mailbox, []).append(rank)
        self._catch_all_for: dict[str, tuple[int, ...]] = {}
        # One scanner per field, so a long body is not searched for sender domains; the
        # two body fields share one, walked once for both (see _scan_bodies).
        self._scanners: list[_Scanner | None] = [None] * _FIELDS
        for field in _SHORT_FIELDS:
            if contains[field]:
                self._scanners[field] = _Scanner({field: contains[field]}, self._scan)
        short = {field: contains[field] for field in _SHORT_FIELDS if contains[field]}
        self._short = _Scanner(short, self._scan) if len(short) > 1 else None
        if contains[_BODY_NEW] or contains[_BODY_FULL]:
            bodies = _Scanner(
                {_BODY_NEW: contains[_BODY_NEW], _BODY_FULL: contains[_BODY_FULL]}, self._scan
            )
            self._scanners[_BODY_NEW] = self._scanners[_BODY_FULL] = bodies
        self._needle_count = sum(len(table) for table in contains)

    def __repr__(self) -> str:
        disabled = sum(1 for compiled in self._ordered if not compiled.rule.enabled)
        return f"RuleEngine({len(self._ordered)} rules, {disabled} disabled)"

    @property
    def rules(self) -> tuple[EmailRule, ...]:
        """Every rule, in evaluation order."""
        return tuple(compiled.rule for compiled in self._ordered)

    def evaluate(
        self,
        email: InboundEmail,
        mailbox: str,
        classification: Classification | None = None,
    ) -> RuleMatch | None:
        """The first matching rule for ``email`` in ``mailbox``, found through the index.

        Args:
            email: The parsed email.
            mailbox: The name of the mailbox it came from (compared case-insensitively).
            classification: What :func:`~halomail.inbound.classify.classify` found, for
                ``classification`` criteria; ``None``: the engine classifies the email
                itself when a rule asks.

        Returns:
            The decision with its extraction, or None when no rule matches.
        """
        view = _View(email, self._used, classification)
        need = self._need
        # How many criteria of each rule hold; a rule whose criteria all hold is a
        # candidate. Counting runs in C (Counter), over the criteria that hold only.
        satisfied = self._satisfied(view)
        candidates: list[int] = []
        if satisfied:
            counts = Counter(map(self._criterion_rank.__getitem__, satisfied))
            candidates = sorted(rank for rank, count in counts.items() if count == need[rank])
        wanted = mailbox.lower()
        catch_all = self._catch_alls(wanted)
        ranks = (
            heapq.merge(candidates, catch_all)
            if candidates and catch_all
            else (candidates or catch_all)
        )
        for rank in ranks:
            compiled = self._ordered[rank]
            if compiled.mailbox is not None and compiled.mailbox != wanted:
                continue
            extraction = extract(compiled.rule, email)
            if extraction.missing_required:
                continue
            return RuleMatch(compiled.rule, extraction)
        return None

    def _catch_alls(self, mailbox: str) -> tuple[int, ...]:
        """The ranks of the rules without criteria that apply to ``mailbox``, in order."""
        found = self._catch_all_for.get(mailbox)
        if found is None:
            own = self._catch_all_by_mailbox.get(mailbox, ())
            found = tuple(heapq.merge(self._catch_all_any, own))
            if len(self._catch_all_for) < _MAX_CACHED_MAILBOXES:
                self._catch_all_for[mailbox] = found
        return found

    def evaluate_sequential(
        self,
        email: InboundEmail,
        mailbox: str,
        classification: Classification | None = None,
    ) -> RuleMatch | None:
        """The same decision as :meth:`evaluate`, by testing every rule in order.

        The reference the index is checked against; its cost grows with the number of
        rules.

        Args:
            email: The parsed email.
            mailbox: The name of the mailbox it came from (compared case-insensitively).
            classification: As for :meth:`evaluate`.

        Returns:
            The decision with its extraction, or None when no rule matches.
        """
        view = _View(email, self._used, classification)
        wanted = mailbox.lower()
        for compiled in self._ordered:
            if not compiled.rule.enabled:
                continue
            if compiled.mailbox is not None and compiled.mailbox != wanted:
                continue
            if not all(_holds(c, view) for c in compiled.criteria):
                continue
            extraction = extract(compiled.rule, email)
            if extraction.missing_required:
                continue
            return RuleMatch(compiled.rule, extraction)
        return None

    def explain(
        self,
        email: InboundEmail,
        mailbox: str,
        classification: Classification | None = None,
    ) -> Explanation:
        """Every rule in order with what became of it, then the decision.

        Args:
            email: The parsed email.
            mailbox: The name of the mailbox it came from.
            classification: As for :meth:`evaluate`.

        Returns:
            The explanation; its decision is the one :meth:`evaluate` gives.
        """
        view = _View(email, self._used, classification)
        wanted = mailbox.lower()
        steps: list[RuleStep] = []
        decision: RuleMatch | None = None
        for compiled in self._ordered:
            rule = compiled.rule
            if decision is not None:
                steps.append(RuleStep(rule, matched=False, reason=NOT_EVALUATED))
                continue
            reason = self._failure(compiled, view, wanted)
            if reason is None:
                extraction = extract(rule, email)
                if extraction.missing_required:
                    reason = _missing_reason(rule, extraction)
                else:
                    decision = RuleMatch(rule, extraction)
                    steps.append(RuleStep(rule, matched=True))
                    continue
            steps.append(RuleStep(rule, matched=False, reason=reason))
        return Explanation(mailbox=mailbox, steps=tuple(steps), decision=decision)

    @staticmethod
    def _failure(compiled: _Compiled, view: _View, wanted: str) -> str | None:
        if not compiled.rule.enabled:
            return "disabled"
        if compiled.mailbox is not None and compiled.mailbox != wanted:
            return f"mailbox: rule is for {compiled.rule.mailbox!r}"
        for criterion in compiled.criteria:
            if not _holds(criterion, view):
                return criterion.failure
        return None

    def _satisfied(self, view: _View) -> set[int]:
        """The ids of every criterion (of enabled rules) the email satisfies."""
        satisfied: set[int] = set()
        values = view.values
        for field in _EXACT_FIELDS:
            table = self._exact[field]
            if table:
                for value in values[field]:
                    hit = table.get(value)
                    if hit:
                        satisfied.update(hit)
        for key, matches in self._headers.items():
            found = view.header(key)
            if found:
                satisfied.update(cid for cid, match in matches if _header_holds(match, found))
        if self._short is None or not self._short.walk_together(values, satisfied):
            for field in _SHORT_FIELDS:
                scanner = self._scanners[field]
                if scanner is not None:
                    postings = scanner.postings[field]
                    for text in values[field]:
                        for position in scanner.positions(text):
                            satisfied.update(postings[position])
        bodies = self._scanners[_BODY_NEW]
        if bodies is not None:
            self._scan_bodies(bodies, view, satisfied)
        return satisfied

    @staticmethod
    def _scan_bodies(bodies: _Scanner, view: _View, satisfied: set[int]) -> None:
        """Adds the body criteria that hold; one walk when the new text opens the whole."""
        if len(view.bodies) == 1:  # only one of the two body fields is tested
            [field] = view.bodies
            postings = bodies.postings[field]
            for position in bodies.body_positions(view, field):
                satisfied.update(postings[position])
            return
        found_new, found_full = bodies.body_positions_both(view)
        for position in found_new:
            satisfied.update(bodies.postings[_BODY_NEW][position])
        for position in found_full:
            satisfied.update(bodies.postings[_BODY_FULL][position])


class _Scanner:
    """Finds which "contains" needles of one field (or of both body fields) a text holds.

    The needles are numbered by position; ``postings[field][position]`` are the ids of
    the criteria of ``field`` a needle satisfies (empty for the other body field's
    needles). Short texts against few needles are searched with ``in``, the rest by
    walking the automaton (see the cost model above): both find the same needles.
    """

    __slots__ = (
        "_all_ascii",
        "_always_walk",
        "_automaton",
        "_fields",
        "_forced",
        "_needle_counts",
        "_walk_base",
        "_walk_slope",
        "needles",
        "postings",
    )

    def __init__(self, tables: dict[int, dict[str, list[int]]], scan: ScanMode) -> None:
        self.needles: tuple[str, ...] = tuple(
            dict.fromkeys(needle for table in tables.values() for needle in table)
        )
        self.postings: dict[int, tuple[tuple[int, ...], ...]] = {
            field: tuple(tuple(table.get(needle, ())) for needle in self.needles)
            for field, table in tables.items()
        }
        count = len(self.needles)
        self._needle_counts = {field: len(table) for field, table in tables.items()}
        self._forced = scan == "automaton"
        self._fields = tuple(tables)
        # With this many needles in every field, one walk beats `in` whatever the texts.
        self._always_walk = self._forced or all(
            n * _IN_PER_CALL >= _WALK_PER_CALL and n * _IN_PER_CHAR >= _WALK_PER_CHAR
            for n in self._needle_counts.values()
        )
        self._automaton = None if scan == "direct" else Automaton(self.needles)
        self._all_ascii = all(needle.isascii() for needle in self.needles)
        # Walk when count * (IN_CALL + IN_CHAR * n) >= WALK_CALL + WALK_CHAR * n, that is
        # when base + slope * n >= 0 for a text of n characters.
        self._walk_base = count * _IN_PER_CALL - _WALK_PER_CALL
        self._walk_slope = count * _IN_PER_CHAR - _WALK_PER_CHAR
        if self._forced:
            self._walk_base, self._walk_slope = 0, 0

    def _walks(self, length: int) -> bool:
        return self._automaton is not None and (self._walk_base + self._walk_slope * length >= 0)

    def positions(self, text: str) -> Iterable[int]:
        """The positions of the needles ``text`` holds."""
        automaton = self._automaton
        if automaton is not None and self._walk_base + self._walk_slope * len(text) >= 0:
            return automaton.find(text)
        return [position for position, needle in enumerate(self.needles) if needle in text]

    def walk_together(self, values: list[tuple[str, ...]], satisfied: set[int]) -> bool:
        """Walks every value of this scanner's fields at once, if that is the cheapest.

        The values are joined into one text, and a match counts for a field only when
        it lies wholly inside one of that field's values: the same needles as searching
        each value alone, for one call into the automaton instead of one per value.

        Args:
            values: The email's values by field (see :class:`_View`).
            satisfied: Where the ids of the criteria that hold are added.

        Returns:
            False, having done nothing, when testing each field on its own is cheaper.
        """
        automaton = self._automaton
        if automaton is None:
            return False
        owners: list[int] = []
        texts: list[str] = []
        for field in self._fields:
            for text in values[field]:
                owners.append(field)
                texts.append(text)
        if not self._always_walk and not self._walk_cheaper(owners, texts):
            return False
        joined = "\n".join(texts)
        data = utf8(joined)
        ends: list[int] = []
        postings = self.postings
        for position, start, end in automaton.matches(data):
            if not ends:  # computed on the first match only: usually there is none
                # ends[i]: where value i ends, with the "\n" that follows it, in bytes.
                ascii_only = len(data) == len(joined)
                lengths = map(len, texts) if ascii_only else map(len, map(utf8, texts))
                ends = list(itertools.accumulate(length + 1 for length in lengths))
            value = bisect.bisect_right(ends, start)
            if end < ends[value]:  # not across the separator into the next value
                satisfied.update(postings[owners[value]][position])
        return True

    def _walk_cheaper(self, owners: list[int], texts: list[str]) -> bool:
        counts = self._needle_counts
        by_in = sum(
            counts[field] * (_IN_PER_CALL + _IN_PER_CHAR * len(text))
            for field, text in zip(owners, texts, strict=True)
        )
        total = sum(len(text) + 1 for text in texts)
        return by_in >= _WALK_PER_CALL + _WALK_PER_CHAR * total

    def body_positions(self, view: _View, field: int) -> Iterable[int]:
        """The positions of the needles the body ``field`` holds (lower-cased if need be)."""
        data = self._folded(view.bodies[field])
        if data is None or self._automaton is None:
            return self.positions(view.field(field)[0])
        return self._automaton.find_data(data)

    def body_positions_both(self, view: _View) -> tuple[Iterable[int], Iterable[int]]:
        """The positions the new text holds and those the full body holds."""
        new, full = view.bodies[_BODY_NEW], view.bodies[_BODY_FULL]
        data = self._folded(full) if full.startswith(new) else None
        if data is not None and self._automaton is not None:
            return self._automaton.find_split_data(data, len(utf8(new)))
        new, full = view.field(_BODY_NEW)[0], view.field(_BODY_FULL)[0]
        if full.startswith(new):
            return self.positions_split(full, len(new))
        return self.positions(new), self.positions(full)

    def _folded(self, text: str) -> bytes | None:
        """``text`` to walk without lower-casing it, when the needles and text allow."""
        return folded_utf8(text) if self._all_ascii and self._walks(len(text)) else None

    def positions_split(self, text: str, split: int) -> tuple[Iterable[int], Iterable[int]]:
        """The positions found in ``text[:split]``, and in the whole of ``text``."""
        if self._walks(len(text)) and self._automaton is not None:
            return self._automaton.find_split(text, split)
        return self.positions(text[:split]), self.positions(text)


def _missing_reason(rule: EmailRule, extraction: Extraction) -> str:
    """Why a rule whose criteria held did not match: a required field it did not find."""
    for target in extraction.missing_required:
        if target in extraction.timed_out:
            return timeout_message(rule, target)
    return f"required field {extraction.missing_required[0]!r} not found"
