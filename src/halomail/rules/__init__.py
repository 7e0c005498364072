"""Email rules: criteria, field extraction, and the engine that picks the first match.

Rules come from ``[[rules]]`` in ``halomail.toml`` (:func:`rules_from_config`, whose
module documents every key) or are built in Python (:class:`EmailRule`). A
:class:`RuleEngine` evaluates them for each email: by ``sequence`` (ties by name), the
first rule whose criteria all hold decides; :meth:`RuleEngine.explain` shows why.
Nothing here reads or writes anything: the processor applies the decision.

.. versionadded:: 0.1.0
"""

from halomail.rules.engine import Explanation, RuleEngine, RuleMatch, RuleStep, ScanMode
from halomail.rules.extract import (
    MAX_SCAN_CHARS,
    PATTERN_BUDGET_MS,
    Extraction,
    FieldValue,
    alert_key_from_subject,
    extract,
)
from halomail.rules.loading import rules_from_config
from halomail.rules.models import (
    CLASSIFICATIONS,
    TICKET_FIELDS,
    AssetMatch,
    EmailRule,
    FieldMapping,
    FieldSource,
    FieldType,
    HeaderMatch,
    MatchType,
    RuleType,
)
from halomail.rules.risk import PatternWarning, risky_patterns

__all__ = [
    "CLASSIFICATIONS",
    "MAX_SCAN_CHARS",
    "PATTERN_BUDGET_MS",
    "TICKET_FIELDS",
    "AssetMatch",
    "EmailRule",
    "Explanation",
    "Extraction",
    "FieldMapping",
    "FieldSource",
    "FieldType",
    "FieldValue",
    "HeaderMatch",
    "MatchType",
    "PatternWarning",
    "RuleEngine",
    "RuleMatch",
    "RuleStep",
    "RuleType",
    "ScanMode",
    "alert_key_from_subject",
    "extract",
    "risky_patterns",
    "rules_from_config",
]
