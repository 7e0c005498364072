"""One email sent to several of our mailboxes makes one ticket (``[processing] copies``).

A customer who writes to support@ and sales@ at once, or to every address on a
website, sends one email: each mailbox receives it with the same Message-ID and body,
under trace headers of its own. The first mailbox to handle it makes the ticket; the
others skip their copy as ``copy``, linked to that ticket, and dispose of it as the
first copy was. Checked on every shipped repository, one email at a time and in
batches, and with two ``halomail run --once`` processes reading the two mailboxes at
the same moment.
"""

from __future__ import annotations

import email
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from email.policy import compat32
from pathlib import Path

import pytest

from halomail.backends.base import Disposition
from halomail.backends.memory import MemoryConnector
from halomail.outbound.outbox import SenderIdentity
from halomail.pipeline.results import Outcome, ProcessingOutcome, Reason
from halomail.rules.models import EmailRule, RuleType
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import DedupeRecord
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email
from tests.racing import RaceLost

MAILBOXES = ("Support", "Sales")


def _delivered(raw: bytes, mailbox: str) -> bytes:
    """``raw`` as ``mailbox`` receives it: its own trace headers above the same email."""
    trace = (
        f"Delivered-To: {mailbox.lower()}@helpdesk.example\r\n"
        f"Received: from mx.customer.example by {mailbox.lower()}.helpdesk.example; "
        "Mon, 07 Dec 2026 09:00:00 +0000\r\n"
    )
    return trace.encode() + raw


def _to_both(raw: bytes) -> dict[str, bytes]:
    return {name: _delivered(raw, name) for name in MAILBOXES}


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TicketRepository]:
    """Each shipped repository, empty."""
    repo: TicketRepository
    if request.param == "memory":
        repo = InMemoryTicketRepository()
    elif request.param == "sqlite":
        repo = SQLiteTicketRepository(tmp_path / "halomail.db")
    else:
        request.getfixturevalue("postgres")
        repo = PostgreSQLTicketRepository(request.getfixturevalue("postgres_url"))
    yield repo
    close = getattr(repo, "close", None)
    if callable(close):
        close()


class Desk:
    """Two mailboxes of one helpdesk, read by one processor."""

    def __init__(
        self,
        repository: TicketRepository,
        *,
        batch_size: int = 10,
        copies: str = "skip",
        rules: list[EmailRule] | None = None,
    ) -> None:
        self.repository = repository
        self.connectors = {name: MemoryConnector(name) for name in MAILBOXES}
        settings = ProcessorSettings(
            loop_token=LOOP_TOKEN,
            domain="helpdesk.example",
            default_sender=SenderIdentity("support@helpdesk.example", "Support"),
            batch_size=batch_size,
            copies=copies,
        )
        mailboxes = [
            Mailbox(connector, name=name, send_acknowledgement=True)
            for name, connector in self.connectors.items()
        ]
        self.processor = MailProcessor(repository, mailboxes, settings, rules=rules or ())

    def deliver(self, copies: dict[str, bytes]) -> None:
        for name, raw in copies.items():
            self.connectors[name].add(raw)

    def run(self) -> list[ProcessingOutcome]:
        return list(self.processor.run_once().outcomes)

    def acknowledgements(self) -> int:
        return sum(
            1
            for mail in self.repository.list_outgoing(limit=1000)
            if mail.kind == "new_ticket_logged"
        )


@pytest.mark.parametrize("batch_size", [1, 10])
def test_an_email_sent_to_two_mailboxes_makes_one_ticket_and_one_acknowledgement(
    repository: TicketRepository, batch_size: int
) -> None:
    """The first mailbox makes the ticket; the other skips its copy as ``copy``, names
    that ticket, and disposes of it as processed: nothing is left in either mailbox.
    (The mailboxes are read at once: either may be first.)"""
    desk = Desk(repository, batch_size=batch_size)
    desk.deliver(_to_both(make_email(message_id="<both-1@customer.example>")))

    outcomes = desk.run()

    tickets = repository.list_tickets()
    assert len(tickets) == 1
    created, copied = sorted(outcomes, key=lambda o: o.outcome is Outcome.SKIPPED)
    assert {created.mailbox, copied.mailbox} == set(MAILBOXES)
    assert (created.outcome, copied.outcome) == (Outcome.CREATED, Outcome.SKIPPED)
    assert copied.reason is Reason.COPY
    assert copied.recorded is Outcome.CREATED
    assert created.ticket_id == copied.ticket_id == tickets[0].id
    assert desk.acknowledgements() == 1
    for connector in desk.connectors.values():
        assert connector.remaining == []
        assert len(connector.processed) == 1


def test_a_reply_sent_to_two_mailboxes_adds_one_note(repository: TicketRepository) -> None:
    """A customer's answer to the ticket, sent to both addresses, is added to it once."""
    desk = Desk(repository)
    desk.deliver(
        {"Support": _delivered(make_email(message_id="<first@customer.example>"), "Support")}
    )
    desk.run()
    (ticket,) = repository.list_tickets()
    reply = make_email(
        subject="Re: Printer is jammed",
        body="It jams again this morning.\n",
        message_id="<reply@customer.example>",
        headers={"In-Reply-To": "<first@customer.example>"},
    )
    desk.deliver(_to_both(reply))

    outcomes = sorted((o.outcome, o.reason) for o in desk.run())

    assert outcomes == sorted([(Outcome.UPDATED, None), (Outcome.SKIPPED, Reason.COPY)])
    inbound = [a for a in repository.list_actions(ticket.id) if "jams again" in a.body]
    assert len(inbound) == 1


def test_the_same_email_again_in_one_mailbox_is_still_a_duplicate(
    repository: TicketRepository,
) -> None:
    """Fetched again in the mailbox that made the ticket, the email is a ``duplicate``
    (its own mailbox's record), not a copy."""
    raw = _delivered(make_email(message_id="<again@customer.example>"), "Support")
    desk = Desk(repository)
    desk.deliver({"Support": raw})
    desk.run()
    desk.deliver({"Support": raw})

    (outcome,) = desk.run()

    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, Reason.DUPLICATE)


def test_emails_without_a_message_id_are_never_taken_for_copies(
    repository: TicketRepository,
) -> None:
    """Two devices may send the same alert text with no Message-ID: two tickets."""
    desk = Desk(repository)
    desk.deliver(_to_both(make_email(message_id=None)))

    outcomes = desk.run()

    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.CREATED]
    assert len(repository.list_tickets()) == 2


def test_another_body_under_the_same_message_id_is_not_a_copy(
    repository: TicketRepository,
) -> None:
    """A copy is the same email: the same Message-ID on another body (a device that
    reuses one) is another email, and gets its own ticket."""
    desk = Desk(repository)
    desk.deliver({"Support": make_email(message_id="<ups@ups.example>", body="On battery.\n")})
    desk.deliver({"Sales": make_email(message_id="<ups@ups.example>", body="Power restored.\n")})

    outcomes = desk.run()

    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.CREATED]


def test_a_reused_message_id_is_a_copy_when_its_body_reached_the_other_mailbox_first(
    repository: TicketRepository, caplog: pytest.LogCaptureFixture
) -> None:
    """A NAS sends every alert under one Message-ID to both mailboxes. Its second alert
    reaching Sales first makes the ticket; in Support, where the Message-ID was seen on
    the first alert's body, the second is found to be a copy as it is decided (not
    after a ticket made, a conflict and a rollback)."""
    desk = Desk(repository)
    first = make_email(message_id="<nas@nas.example>", body="Disk 1 failed.\n")
    second = make_email(message_id="<nas@nas.example>", body="Disk 2 failed.\n")
    desk.deliver({"Support": _delivered(first, "Support")})
    desk.run()
    desk.deliver({"Sales": _delivered(second, "Sales")})
    desk.run()
    desk.deliver({"Support": _delivered(second, "Support")})

    with caplog.at_level(logging.INFO, logger="halomail.pipeline"):
        (outcome,) = desk.run()

    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, Reason.COPY)
    assert len(repository.list_tickets()) == 2
    said = [record.getMessage() for record in caplog.records]
    assert any("Support: <nas@nas.example> was handled in another mailbox" in m for m in said)
    assert not any("recorded it first" in m or "rolled back" in m for m in said)


def test_copies_process_makes_a_ticket_in_each_mailbox(repository: TicketRepository) -> None:
    """``copies = "process"`` keeps the behaviour of processing each copy on its own."""
    desk = Desk(repository, copies="process")
    desk.deliver(_to_both(make_email(message_id="<each@customer.example>")))

    outcomes = desk.run()

    assert [o.outcome for o in outcomes] == [Outcome.CREATED, Outcome.CREATED]
    assert len(repository.list_tickets()) == 2
    assert desk.acknowledgements() == 2


def test_a_copy_the_first_mailbox_ignored_is_decided_in_the_second(
    repository: TicketRepository,
) -> None:
    """An ignore rule of the first mailbox does not speak for the second: its copy is
    decided by its own rules, and makes a ticket."""
    ignore_in_support = EmailRule(
        name="newsletters to support",
        type=RuleType.IGNORE,
        sequence=1,
        mailbox="Support",
        subject=("newsletter",),
    )
    desk = Desk(repository, rules=[ignore_in_support])
    copies = _to_both(make_email(subject="Our newsletter", message_id="<nl@customer.example>"))
    desk.deliver({"Support": copies["Support"]})
    (first,) = desk.run()  # Support first, whatever order the mailboxes are read in
    desk.deliver({"Sales": copies["Sales"]})

    (second,) = desk.run()

    assert (first.mailbox, first.outcome) == ("Support", Outcome.IGNORED)
    assert (second.mailbox, second.outcome) == ("Sales", Outcome.CREATED)


@pytest.mark.parametrize("batch_size", [1, 10])
def test_losing_the_race_for_a_copy_to_another_runner_skips_ours(batch_size: int) -> None:
    """Our ticket is rolled back, and the email is ``copy`` of the other runner's ticket,
    disposed of as processed: never a processing error, never a second ticket."""
    # A runner reading the other mailbox records this email's copy key just before us.
    repository = RaceLost(
        lambda ours: DedupeRecord(ours.key, ours.sha256, "created", 777),
        loses=lambda key: key.startswith("\x1fcopy"),
    )
    desk = Desk(repository, batch_size=batch_size)
    desk.deliver({"Support": make_email(message_id="<raced@customer.example>")})

    (outcome,) = desk.run()

    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, Reason.COPY)
    assert outcome.ticket_id == 777  # the other runner's ticket
    assert repository.list_tickets() == []  # ours was rolled back
    assert desk.acknowledgements() == 0
    assert desk.connectors["Support"].acks == [("1", Disposition.PROCESSED)]


# --- two processes, one mailbox each, at the same moment -------------------------------

EMAILS = 300

CONFIG = """\
[storage]
url = "{database}"

[outgoing]
transport = "maildir"
path = "{sent}"
from_address = "support@helpdesk.example"

[processing]
batch_size = 5

[[mailboxes]]
name = "{name}"
connection = "maildir"
path = "{path}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_runners_reading_the_two_mailboxes_at_once_make_each_ticket_once(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    """Two ``halomail run --once`` started together on one database, each reading one of
    the two mailboxes; every email sits in both, in opposite orders, so that the runners
    meet in the middle. Whichever commits a copy second skips it (on PostgreSQL its
    transaction is rolled back by the key's conflict): one ticket and one
    acknowledgement per email, every copy disposed of."""
    database = (
        request.getfixturevalue("postgres_url")
        if storage == "postgresql"
        else f"sqlite:///{tmp_path / 'halomail.db'}"
    )
    commands = []
    for name in MAILBOXES:
        folder = tmp_path / name.lower()
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
        config = tmp_path / f"{name.lower()}.toml"
        config.write_text(
            CONFIG.format(database=database, sent=tmp_path / "sent", name=name, path=folder)
        )
        commands.append(
            [
                sys.executable,
                "-m",
                "halomail.cli",
                "-v",
                "-c",
                str(config),
                "run",
                "--once",
                "--json",
            ]
        )
    for n in range(EMAILS):
        raw = make_email(
            sender=f"Customer {n} <c{n}@customer.example>",
            subject=f"Question {n}",
            message_id=f"<question-{n}@customer.example>",
        )
        for mailbox, copy in _to_both(raw).items():
            path = tmp_path / mailbox.lower() / "new" / f"{n:04d}.eml"
            path.write_bytes(copy)
            # A Maildir is read oldest first: Sales holds the emails the other way round.
            arrived = 1_700_000_000 + (n if mailbox == "Support" else EMAILS - n)
            os.utime(path, (arrived, arrived))
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    # Output goes to files, not pipes: a runner blocked on a full pipe nobody reads yet
    # would hold its transaction, and the other runner would wait on the database.
    logs = [(tmp_path / f"run{n}.out", tmp_path / f"run{n}.err") for n in range(2)]
    runs = []
    for command, (out, err) in zip(commands, logs, strict=True):
        with out.open("wb") as stdout, err.open("wb") as stderr:
            runs.append(
                subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
            )
    for run, (_out, err) in zip(runs, logs, strict=True):
        assert run.wait(timeout=600) == 0, err.read_text()

    events = [json.loads(line) for out, _ in logs for line in out.read_text().splitlines()]
    outcomes = Counter((e["outcome"], e["reason"]) for e in events if e["event"] == "email")
    assert outcomes == {("created", None): EMAILS, ("skipped", "copy"): EMAILS}
    repository = (
        PostgreSQLTicketRepository(database)
        if storage == "postgresql"
        else SQLiteTicketRepository(tmp_path / "halomail.db")
    )
    try:
        tickets = repository.list_tickets(limit=1000)
    finally:
        repository.close()
    assert sorted(ticket.summary for ticket in tickets) == sorted(
        f"Question {n}" for n in range(EMAILS)
    )
    sent = [
        email.message_from_bytes(path.read_bytes(), policy=compat32)
        for path in (tmp_path / "sent").iterdir()
    ]
    assert sorted(str(message["To"]) for message in sent) == sorted(
        f"c{n}@customer.example" for n in range(EMAILS)
    )
    for name in MAILBOXES:
        folder = tmp_path / name.lower()
        assert list((folder / "new").iterdir()) == list((folder / "cur").iterdir()) == []
        assert len(list((folder / ".Deleted Items" / "cur").iterdir())) == EMAILS
