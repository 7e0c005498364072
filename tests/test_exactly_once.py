"""Exactly once, right disposal: a duplicate goes where its first copy's outcome says.

A run that dies (or fails to dispose) between commit and disposal leaves the email
to be fetched again; so does a second runner that commits the same email first.
Either way the email is a duplicate, and it is disposed of as its recorded outcome
says, never filed as processed when it was quarantined.
"""

from __future__ import annotations

import pytest

from halomail import Disposition, Outcome, Reason
from halomail.backends.memory import MemoryConnector
from halomail.errors import ConnectorError, DuplicateKeyError
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import DedupeRecord
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email
from tests.racing import RaceLost

# An email whose From header holds no address: quarantined as unparseable-sender.
NO_SENDER = make_email(sender="nobody at all", message_id="<no-sender@customer.example>")


class FirstAckFails(MemoryConnector):
    """A mailbox whose first disposal fails, as a run that dies after its commit would."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.failed_acks = 0

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Fail the first call; behave normally afterwards."""
        if not self.failed_acks:
            self.failed_acks += 1
            raise ConnectorError("connection dropped before the move")
        super().ack(ref, disposition)


@pytest.mark.parametrize(
    ("raw", "first", "disposition"),
    [
        (NO_SENDER, Outcome.QUARANTINED, Disposition.QUARANTINED),
        (make_email(), Outcome.CREATED, Disposition.PROCESSED),
    ],
    ids=["quarantined", "created"],
)
def test_an_email_left_behind_after_its_commit_is_disposed_of_as_first_recorded(
    repository: TicketRepository,
    settings: ProcessorSettings,
    raw: bytes,
    first: Outcome,
    disposition: Disposition,
) -> None:
    """Second fetch: skipped as a duplicate, moved where its first outcome says."""
    connector = FirstAckFails("Support")
    connector.add(raw)
    processor = MailProcessor(repository, [Mailbox(connector)], settings)
    (once,) = processor.run_once().outcomes
    assert once.outcome is first
    assert connector.remaining == [raw]  # the disposal failed: the email is still there
    (twice,) = processor.run_once().outcomes
    assert (twice.outcome, twice.reason) == (Outcome.SKIPPED, Reason.DUPLICATE)
    assert twice.recorded is first
    assert connector.acks[-1][1] is disposition
    assert connector.remaining == []
    expected = (connector.quarantined, connector.processed)[disposition is Disposition.PROCESSED]
    assert expected == [raw]
    assert len(repository.list_quarantine()) == (first is Outcome.QUARANTINED)


@pytest.mark.parametrize(
    ("winner", "disposition"),
    [("created", Disposition.PROCESSED), ("quarantined", Disposition.QUARANTINED)],
)
def test_a_dedupe_key_conflict_at_commit_is_a_duplicate_never_a_processing_error(
    settings: ProcessorSettings, winner: str, disposition: Disposition
) -> None:
    """DuplicateKeyError rolls back our ticket; skipped/duplicate, disposed as the winner says."""
    repository = RaceLost(lambda ours: DedupeRecord(ours.key, ours.sha256, winner, 777))
    connector = MemoryConnector("Support", [make_email()])
    processor = MailProcessor(repository, [Mailbox(connector)], settings)
    (outcome,) = processor.run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, Reason.DUPLICATE)
    assert outcome.ticket_id == 777  # the winner's ticket
    assert repository.list_tickets() == []  # ours was rolled back
    assert repository.list_quarantine() == []
    assert connector.acks == [("1", disposition)]


class ConflictWithoutWinner(InMemoryTicketRepository):
    """A repository that reports a dedupe-key conflict whose winning record it cannot show."""

    def record_dedupe(self, record: DedupeRecord) -> None:
        """Always conflict."""
        raise DuplicateKeyError(f"dedupe key already recorded: {record.key!r}")


def test_a_conflict_whose_winner_cannot_be_read_leaves_the_email_for_retry(
    settings: ProcessorSettings,
) -> None:
    """No record to dispose by: retry, the source email untouched, nothing kept."""
    repository = ConflictWithoutWinner()
    connector = MemoryConnector("Support", [make_email()])
    processor = MailProcessor(repository, [Mailbox(connector)], settings)
    (outcome,) = processor.run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.RETRY, Reason.TRANSIENT_ERROR)
    assert connector.acks == []
    assert len(connector.remaining) == 1
    assert repository.list_tickets() == []
