"""The pipeline's seams: a handler for every rule type, and reasons that read as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import halomail
from halomail import Outcome, ProcessingOutcome, Reason, RuleType
from halomail.backends.memory import MemoryConnector
from halomail.pipeline.handlers import HANDLERS, handler_for
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from tests.conftest import make_email


@pytest.mark.parametrize("rule_type", list(RuleType))
def test_every_rule_type_has_a_handler_with_decide_and_apply(rule_type: RuleType) -> None:
    """The registry has a handler for each rule type, and it decides and applies."""
    handler = handler_for(rule_type)
    assert callable(handler.decide)
    assert callable(handler.apply)


def test_the_registry_has_no_handler_for_a_rule_type_that_does_not_exist() -> None:
    """The registry's keys are exactly the rule types."""
    assert set(HANDLERS) == set(RuleType)


def test_a_reason_is_its_old_string_in_json_and_in_comparisons() -> None:
    """A reason given as a string becomes a Reason, equal to and serialised as that string."""
    outcome = ProcessingOutcome("Support", "1", Outcome.SKIPPED, reason="own-message")
    assert outcome.reason is Reason.OWN_MESSAGE
    assert outcome.reason == "own-message"
    assert json.loads(json.dumps(outcome.as_dict()))["reason"] == "own-message"
    assert f"{outcome.reason}" == "own-message"
    assert halomail.Reason is Reason


def test_an_unknown_reason_string_is_refused() -> None:
    """A typo in a reason fails at once instead of reaching logs and stored data."""
    with pytest.raises(ValueError, match="own-mesage"):
        ProcessingOutcome("Support", "1", Outcome.SKIPPED, reason="own-mesage")


def test_the_reasons_a_run_reports_are_reason_members(settings: ProcessorSettings) -> None:
    """Duplicate and own-message outcomes of a real run carry Reason members."""
    connector = MemoryConnector("Support", [make_email()])
    processor = MailProcessor(InMemoryTicketRepository(), [Mailbox(connector)], settings)
    (first,) = processor.run_once().outcomes
    assert first.reason is None
    connector.add(make_email())  # the same email delivered again
    (again,) = processor.run_once().outcomes
    assert again.reason is Reason.DUPLICATE
    assert again.as_dict()["reason"] == "duplicate"


def test_docs_list_every_reason_on_a_line_of_its_own() -> None:
    """docs/processing.md has one table row per Reason value, and no row for anything else."""
    text = (Path(__file__).parent.parent / "docs" / "processing.md").read_text()
    section = text.split("### Reasons", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE)
    assert sorted(rows) == sorted(reason.value for reason in Reason)
