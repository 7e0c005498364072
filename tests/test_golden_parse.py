"""The golden corpus through parse_email and classify: each tests/emails/*.eml meets its sidecar.

Each ``<name>.eml`` has a ``<name>.json`` sidecar with what a person reading the mail in
its real client would see (subject, sender, text, attachments) and how halomail must
classify it. ``outcome``/``acknowledge`` are checked end to end in test_golden_outcomes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from halomail.inbound.classify import classify
from halomail.inbound.defects import is_internal_error
from halomail.inbound.parse import parse_email

EMAILS = Path(__file__).parent / "emails"
CASES = sorted(EMAILS.glob("*.eml"))
LOOP_TOKEN = "test-loop-token"
CLASSIFICATION_FLAGS = ("auto_reply", "bounce", "bulk", "own_message", "no_reply_sender")
SIDECAR_KEYS = {
    "subject", "sender", "sender_unparseable", "text_contains", "new_text_contains",
    "new_text_excludes", "attachments", "classification", "defects_include",
    "quarantine_reason", "outcome", "acknowledge",
}  # fmt: skip


def _sidecar(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_golden_email_parses_and_classifies_as_its_sidecar_says(path: Path) -> None:
    """The email matches every key of its sidecar, with no internal-error defect."""
    expected = _sidecar(path)
    email = parse_email(path.read_bytes())

    assert email.subject == expected["subject"]
    sender = email.sender.addr_spec if email.sender is not None else None
    assert sender == expected["sender"]
    assert email.sender_unparseable is expected["sender_unparseable"]
    for snippet in expected["text_contains"]:
        assert snippet in email.text, snippet
    for snippet in expected.get("new_text_contains", []):
        assert snippet in email.new_text, snippet
    for snippet in expected.get("new_text_excludes", []):
        assert snippet not in email.new_text, snippet
    assert [a.filename for a in email.attachments] == expected["attachments"]
    for defect in expected.get("defects_include", []):
        assert defect in email.defects, defect
    assert email.quarantine_reason == expected["quarantine_reason"]
    assert [defect for defect in email.defects if is_internal_error(defect)] == []

    result = classify(email, loop_token=LOOP_TOKEN)
    flags = expected["classification"]
    for flag in CLASSIFICATION_FLAGS:
        if flag in flags:
            assert getattr(result, flag) is flags[flag], (flag, result.reasons)
    if "bounced_message_id" in flags:
        assert result.bounced_message_id == flags["bounced_message_id"]


def test_corpus_is_large_and_every_email_has_a_well_formed_sidecar() -> None:
    """The corpus holds at least 60 emails, each with a sidecar using only known keys."""
    assert len(CASES) >= 60
    for path in CASES:
        sidecar = path.with_suffix(".json")
        assert sidecar.is_file(), f"{path.name} has no sidecar"
        data = _sidecar(path)
        assert set(data) <= SIDECAR_KEYS, path.name
        assert data["outcome"] in {"created", "updated", "skipped", "quarantined", "ignored"}
        assert isinstance(data["acknowledge"], bool)
    assert not sorted(set(EMAILS.glob("*.json")) - {p.with_suffix(".json") for p in CASES})
