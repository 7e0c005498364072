"""#18: ``benchmarks/statements.py``, (S): (C)'s SQL statements replayed alone.

(S) claims to be exactly what (C) asked of SQLite. So a replay of a recorded run must
leave a fresh database holding what the run's own database holds, row for row and byte
for byte, streamed attachment included, and report as many changed rows.
"""

from __future__ import annotations

import sqlite3
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from halomail import (
    Mailbox,
    MailProcessor,
    MemoryConnector,
    ProcessorSettings,
    SenderIdentity,
    SQLiteTicketRepository,
)
from tests.conftest import HELPDESK, make_email

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _with_attachment(size: int) -> bytes:
    """An email carrying ``size`` bytes of attachment (over 1 MB is streamed as a BLOB)."""
    message = EmailMessage()
    message["From"] = "Dana Reyes <dana@customer.example>"
    message["To"] = HELPDESK
    message["Subject"] = "The crash dump you asked for"
    message["Message-ID"] = "<dump-1@customer.example>"
    message.set_content("The dump is attached.\n")
    payload = bytes(range(256)) * (size // 256)
    message.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="crash.dmp"
    )
    return message.as_bytes()


def _contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in rowid or key order (not the query planner's
    statistics, which ``PRAGMA optimize`` may gather when the repository closes)."""
    reader = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in reader.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_stat%' ORDER BY name"
            )
        ]
        return {
            table: reader.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall()  # noqa: S608
            for table in tables
        }
    finally:
        reader.close()


def test_a_replay_of_the_recorded_statements_rebuilds_the_same_database(
    tmp_path: Path,
) -> None:
    """A customer with two domains, new tickets with acknowledgements, a reply threading
    onto one, a duplicate and a 1.5 MB attachment: the replayed database equals the
    processed one."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from statements import Recorder, Recording, Replay
    finally:
        sys.path.remove(str(BENCHMARKS))
    first = make_email(subject="VPN drops", message_id="<vpn-1@customer.example>")
    emails = [
        first,
        make_email(
            subject="Re: VPN drops",
            message_id="<vpn-2@customer.example>",
            headers={"In-Reply-To": "<vpn-1@customer.example>"},
        ),
        first,  # the same email fetched twice: one ticket
        *(
            make_email(
                sender=f"Customer {n} <c{n}@customer.example>",
                subject=f"Printer {n}",
                message_id=f"<printer-{n}@customer.example>",
            )
            for n in range(5)
        ),
        _with_attachment(1_500_000),
    ]
    repository = SQLiteTicketRepository(tmp_path / "processed.db")
    recorder = Recorder.attach(repository)
    # A customer's domains are written by one executemany: the replay runs those too.
    repository.add_customer("Customer Ltd", domains=["customer.example", "customer.test"])
    settings = ProcessorSettings(
        loop_token="replay-test-token",
        domain="msp.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
        batch_size=3,
    )
    mailbox = Mailbox(MemoryConnector("Support", emails), name="Support", send_acknowledgement=True)
    report = MailProcessor(repository, [mailbox], settings).run_once()
    recording = recorder.recording()
    repository.close()
    assert [o.outcome.value for o in report.outcomes].count("created") == 7

    replay = Replay(tmp_path / "replayed.db")
    replay.run(recording)  # raises unless it changes as many rows as the run did
    replay.close()
    assert recording.changes > 0
    # A replay that changes another number of rows than the run did fails.
    miscounted = Replay(tmp_path / "miscounted.db")
    with pytest.raises(RuntimeError, match="changed"):
        miscounted.run(Recording(recording.calls, recording.changes + 1))
    miscounted.close()

    kinds = {call[0] for call in recording.calls}
    assert kinds == {"execute", "executemany", "blob"}
    processed, replayed = _contents(tmp_path / "processed.db"), _contents(tmp_path / "replayed.db")
    assert replayed == processed
    assert len(processed["tickets"]) == 7
    (payload,) = [row[-1] for row in processed["attachments"]]
    assert payload == (bytes(range(256)) * (1_500_000 // 256))
