"""The SpamAssassin public corpus (5,983 real messages) through parse_email and the processor.

The corpus is not part of halomail: the folder comes from ``HALOMAIL_CORPUS``, which
``scripts/test`` sets when ``../shared/corpus/spamassassin`` is beside the checkout.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from halomail.backends.memory import MemoryConnector
from halomail.inbound.defects import is_internal_error
from halomail.inbound.parse import parse_email
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository

pytestmark = pytest.mark.slow

EXPECTED_FILES = 5983


def _corpus() -> list[Path]:
    folder = os.environ.get("HALOMAIL_CORPUS", "")
    if not folder or not Path(folder).is_dir():
        message = (
            "HALOMAIL_CORPUS is not set to the SpamAssassin corpus folder "
            f"(got {folder!r}); scripts/test sets it from ../shared/corpus/spamassassin"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sorted(Path(folder).glob("*.eml"))


def _report(capsys: pytest.CaptureFixture[str], title: str, counts: Counter[str]) -> None:
    """Print a count table to the terminal, past pytest's capture, so CI logs show it."""
    lines = [f"{title}:"] + [f"  {n:6d}  {name}" for name, n in counts.most_common()]
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_every_corpus_message_parses_without_an_internal_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """parse_email returns for all 5,983 messages with no internal-error defect on any."""
    files = _corpus()
    assert len(files) == EXPECTED_FILES
    reasons: Counter[str] = Counter()
    internal_errors: dict[str, list[str]] = {}
    senders = 0
    for path in files:
        parsed = parse_email(path.read_bytes())
        reasons[parsed.quarantine_reason or "ok"] += 1
        senders += parsed.sender is not None
        assert parsed.quarantine_reason != "unparseable", path.name
        errors = [defect for defect in parsed.defects if is_internal_error(defect)]
        if errors:
            internal_errors[path.name] = errors
        assert "\x00" not in parsed.text, path.name
        assert "\n" not in parsed.subject, path.name
        assert "\r" not in parsed.subject, path.name
    _report(capsys, "corpus parse results", reasons)
    # Real mail never makes the parser swallow an exception of its own (#13): a
    # part-error or a failed helper here is a bug that cost an attachment or the text.
    assert internal_errors == {}
    assert sum(reasons.values()) == EXPECTED_FILES
    assert senders >= EXPECTED_FILES * 0.99


def test_every_corpus_message_gets_exactly_one_outcome(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Processed into SQLite, every message ends in one outcome; none is lost to an error."""
    files = _corpus()
    connector = MemoryConnector("Corpus", [path.read_bytes() for path in files])
    repository = SQLiteTicketRepository(tmp_path / "corpus.db")
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        ProcessorSettings(
            loop_token="corpus-token",
            domain="helpdesk.example",
            default_sender=SenderIdentity("support@helpdesk.example"),
        ),
    )
    report = processor.run_once()
    outcomes = report.outcomes
    assert len(outcomes) == EXPECTED_FILES
    assert len(connector.acks) == EXPECTED_FILES
    by_outcome = Counter(o.outcome.value for o in outcomes)
    reasons = Counter(f"{o.outcome.value}: {o.reason}" for o in outcomes if o.reason is not None)
    _report(capsys, "corpus outcomes", by_outcome)
    _report(capsys, "corpus reasons", reasons)
    assert Outcome.RETRY.value not in by_outcome
    assert reasons["quarantined: processing-error"] == 0
    created = by_outcome[Outcome.CREATED.value]
    assert created == len(repository.list_tickets(limit=10_000))
    quarantined = by_outcome.get(Outcome.QUARANTINED.value, 0)
    assert quarantined == len(repository.list_quarantine(limit=10_000))
    # The corpus is real mail: the overwhelming majority must become tickets.
    assert created >= EXPECTED_FILES * 0.9
    repository.close()
