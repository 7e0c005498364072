"""The golden corpus end to end: each tests/emails/*.eml gets the outcome its sidecar states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository

EMAILS = Path(__file__).parent / "emails"
CASES = sorted(EMAILS.glob("*.eml"))


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_golden_email_gets_its_expected_outcome(path: Path) -> None:
    """Processed alone into an empty repository, the email gets its sidecar's outcome and ack."""
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    connector = MemoryConnector("Support", [path.read_bytes()])
    transport = MemoryTransport()
    repository = InMemoryTicketRepository()
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        ProcessorSettings(
            loop_token="test-loop-token",
            domain="helpdesk.example",
            default_sender=SenderIdentity("support@helpdesk.example", "Support"),
        ),
        transport=transport,
    )
    report = processor.run_once()
    (outcome,) = report.outcomes
    assert outcome.outcome.value == expected["outcome"], outcome.reason
    assert outcome.acknowledged is expected["acknowledge"]
    assert len(transport.sent) == (1 if expected["acknowledge"] else 0)
    if expected["outcome"] == "quarantined":
        (entry,) = repository.list_quarantine()
        assert entry.raw == path.read_bytes()
        if expected.get("quarantine_reason"):
            assert entry.reason == expected["quarantine_reason"]
