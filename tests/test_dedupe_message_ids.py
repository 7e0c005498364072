"""Issue 15, point 2: Message-IDs as real mail uses them.

A device that sends every alert with one Message-ID loses nothing: an email that reuses
a known Message-ID with another body is a new email, and only the same body is a
duplicate. An email without a Message-ID is keyed by its body's fingerprint, so the
same email delivered twice with other ``Received:`` lines is one ticket. Mail recorded
by the previous version (keys ``id:<mid>`` and ``sha256:<raw sha>``) and fetched again
is still a duplicate. Everything runs through ``MailProcessor`` on a real Maildir and a
real SQLite file.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from halomail.backends.memory import MemoryConnector
from halomail.inbound.parse import parse_email
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import DedupeRecord
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email
from tests.maildesk import Desk
from tests.racing import RaceLost

NAS_ID = "<alert@nas.local>"
_GET_DEDUPE = "SELECT key, sha256, outcome, ticket_id, created_at FROM dedupe WHERE key = ?"


def _nas_alert(n: int) -> bytes:
    """The n-th alert of a NAS that sends them all with one Message-ID."""
    return make_email(
        sender="NAS <nas@office.example>",
        subject="Storage alert",
        message_id=NAS_ID,
        body=f"Alert {n}: disk {n} reports {n * 7} reallocated sectors.\n",
    )


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    """A Maildir processed into a real SQLite file."""
    desk = Desk(tmp_path)
    yield desk
    desk.close()


def test_a_nas_sending_five_alerts_with_one_message_id_gives_five_tickets(desk: Desk) -> None:
    """Five different alerts sharing a Message-ID open five tickets; a re-fetch changes
    nothing."""
    desk.deliver(*(_nas_alert(n) for n in range(1, 6)))
    outcomes = desk.run()
    assert [(o, r) for o, r, _ in outcomes] == [("created", None)] * 5
    tickets = desk.repository.list_tickets()
    assert sorted(t.details.split(":")[0] for t in tickets) == [f"Alert {n}" for n in range(1, 6)]
    assert desk.repository.list_quarantine() == []
    sent = len(desk.transport.sent)

    desk.deliver(*(_nas_alert(n) for n in range(1, 6)))  # a mailbox that keeps its mail
    again = desk.run()
    assert [(o, r) for o, r, _ in again] == [("skipped", "duplicate")] * 5
    assert sorted(t for _, _, t in again) == sorted(t for _, _, t in outcomes)
    assert len(desk.repository.list_tickets()) == 5
    assert len(desk.transport.sent) == sent


def test_the_same_email_without_message_id_redelivered_with_other_received_lines_is_one_ticket(
    desk: Desk,
) -> None:
    """Without a Message-ID, two deliveries differing only in Received: are one ticket and
    one acknowledgement."""
    raw = make_email(message_id=None)
    desk.deliver(
        b"Received: from a.example by mx; Mon, 1 Dec 2026 08:00:00 +0000\r\n" + raw,
        b"Received: from b.example by mx2; Mon, 1 Dec 2026 08:00:09 +0000\r\n" + raw,
    )
    assert [(o, r) for o, r, _ in desk.run()] == [("created", None), ("skipped", "duplicate")]
    assert len(desk.repository.list_tickets()) == 1
    assert desk.sent_to() == ["alice@customer.example"]


def test_two_alerts_without_message_id_with_the_same_text_at_different_times_are_two_tickets(
    desk: Desk,
) -> None:
    """The same alert text sent twice (another Date) without a Message-ID is two emails."""
    first = make_email(message_id=None, body="UPS on battery.\n")
    second = first.replace(b"Date: ", b"Date: Tue, 2 Dec 2026 09:00:00 +0000\r\nX-Old-Date: ", 1)
    desk.deliver(first, second)
    assert [o for o, _, _ in desk.run()] == ["created", "created"]


def _legacy_fingerprint(raw: bytes) -> str:
    """The fingerprint 0.2 recorded with an email's key, written out again here so that a
    change to today's formula (for mail with a Message-ID) cannot go unnoticed."""
    email = parse_email(raw)
    separator = raw.find(b"\r\n\r\n")
    digest = hashlib.sha256(raw[separator:])
    for part in (email.subject, str(email.sender or ""), email.message_id or ""):
        digest.update(b"\x00" + part.encode("utf-8", "replace"))
    return digest.hexdigest()


def test_an_email_recorded_by_the_previous_version_is_still_a_duplicate_after_the_upgrade(
    desk: Desk,
) -> None:
    """A ledger written the 0.2 way (id:<mid> and sha256:<raw sha>) keeps both emails from
    doubling when a leave-on-server mailbox fetches them again."""
    with_id = make_email(message_id="<old-1@customer.example>", subject="Old, with an id")
    without_id = make_email(message_id=None, subject="Old, without an id")
    repo = desk.repository
    with repo.transaction():
        repo.record_dedupe(
            DedupeRecord(
                "Support\x1fid:old-1@customer.example", _legacy_fingerprint(with_id), "created", 41
            )
        )
        raw_sha = hashlib.sha256(without_id).hexdigest()
        fingerprint = _legacy_fingerprint(without_id)
        repo.record_dedupe(DedupeRecord(f"Support\x1fsha256:{raw_sha}", fingerprint, "created", 42))
    desk.deliver(with_id, without_id)
    assert desk.run() == [("skipped", "duplicate", 41), ("skipped", "duplicate", 42)]
    assert repo.list_tickets() == []
    assert desk.transport.sent == []


def test_a_reused_message_id_quarantined_by_the_previous_version_stays_a_duplicate(
    desk: Desk,
) -> None:
    """An email 0.2 quarantined as message-id-collision, fetched again, is disposed of as
    quarantined, not turned into a ticket behind the administrator's back."""
    first = _nas_alert(1)
    second = _nas_alert(2)
    desk.deliver(first)
    desk.run()
    repo = desk.repository
    key = f"Support\x1fid:{NAS_ID.strip('<>')}"
    fingerprint = _legacy_fingerprint(second)
    with repo.transaction():
        repo.record_dedupe(
            DedupeRecord(f"{key}\x1fcollision:{fingerprint}", fingerprint, "quarantined")
        )
    desk.deliver(second)
    assert desk.run() == [("skipped", "duplicate", None)]
    assert len(repo.list_tickets()) == 1
    assert len(list((desk.maildir / ".Quarantine" / "cur").iterdir())) == 1


@contextmanager
def _statements(repository: SQLiteTicketRepository) -> Iterator[list[str]]:
    """Every SQL statement the repository's connection runs inside the block."""
    seen: list[str] = []
    connection: sqlite3.Connection = repository._open()  # the test reads, never changes
    connection.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        connection.set_trace_callback(None)


def test_an_ordinary_new_email_costs_no_more_statements_than_before(desk: Desk) -> None:
    """A new email with a Message-ID reads its dedupe key once, as it always did, and
    the key of its copies in other mailboxes once: no lookup of an older key or of a
    reused Message-ID's key."""
    desk.deliver(make_email(message_id="<warm@customer.example>", subject="Warm up"))
    desk.run()
    desk.deliver(make_email(message_id="<new@customer.example>", subject="Ordinary"))
    with _statements(desk.repository) as seen:
        desk.run()
    email_keys = ("\x1fid:", "\x1fbody:", "\x1fsha256:", "collision:", "\x1fcopy\x1f")
    dedupe_reads = [s for s in seen if "FROM dedupe" in s and any(k in s for k in email_keys)]
    assert dedupe_reads[0] == _GET_DEDUPE.replace("?", "'Support\x1fid:new@customer.example'")
    assert len(dedupe_reads) == 2
    assert dedupe_reads[1].startswith(_GET_DEDUPE.replace("?", "'\x1fcopy\x1f"))


def test_losing_the_race_to_another_email_with_the_same_message_id_still_opens_our_ticket(
    settings: ProcessorSettings,
) -> None:
    """When another runner records a different email under our Message-ID first, ours is
    decided again and opens its own ticket: never disposed of as the other's duplicate."""
    # Another runner records a *different* email with the same Message-ID first.
    repository = RaceLost(lambda ours: DedupeRecord(ours.key, "another-body", "created", 777))
    connector = MemoryConnector("Support", [_nas_alert(1)])
    (outcome,) = MailProcessor(repository, [Mailbox(connector)], settings).run_once().outcomes
    assert (outcome.outcome.value, outcome.reason) == ("created", None)
    assert len(repository.list_tickets()) == 1


def _mapping_repository(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> object:
    if kind == "memory":
        return InMemoryTicketRepository()
    if kind == "sqlite":
        return SQLiteTicketRepository(tmp_path / "halomail.db")
    return PostgreSQLTicketRepository(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
def test_tickets_whose_mail_shared_a_message_id_thread_a_reply_to_the_first(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, settings: ProcessorSettings
) -> None:
    """Several tickets holding one Message-ID: the lookup answers the first, and a reply
    naming that Message-ID updates it (memory, SQLite and PostgreSQL alike)."""
    repository = _mapping_repository(kind, tmp_path, request)
    assert isinstance(repository, TicketRepository)
    try:
        connector = MemoryConnector("Support", [_nas_alert(n) for n in range(1, 4)])
        processor = MailProcessor(repository, [Mailbox(connector)], settings)
        created = [o.ticket_id for o in processor.run_once().outcomes]
        assert len(set(created)) == 3
        found = repository.find_ticket_by_message_ids([NAS_ID.strip("<>")])
        assert found is not None
        assert found.id == created[0]
        connector.add(
            make_email(
                sender="NAS <nas@office.example>",
                subject="Re: Storage alert",
                message_id="<reply@nas.local>",
                headers={"In-Reply-To": NAS_ID},
                body="Disk replaced.\n",
            )
        )
        (reply,) = processor.run_once().outcomes
        assert (reply.outcome.value, reply.ticket_id) == ("updated", created[0])
    finally:
        close = getattr(repository, "close", None)
        if close is not None:
            close()
