"""Issue 18, point 2: a mailbox processed in batches ends exactly as one email at a time.

A batch reads its ledger once (dedupe keys, loop counts, throttles, who the senders are)
and keeps its small writes until its COMMIT (:mod:`halomail.pipeline.batch`), so every
decision an email makes from what an earlier email of the same batch did must come out
as it would with ``batch_size = 1``. Here the same mailbox is processed both ways into
fresh repositories (in memory, SQLite, PostgreSQL, and a host's SQLAlchemy repository
without the group-commit role), and everything a user could look at is compared: each
email's outcome and what became of it in its mailbox, every ticket with its actions,
every queued acknowledgement, and the quarantine. The emails are real mail (the
SpamAssassin corpus, read in order so that its mailing-list threads answer each other)
and a mailbox built so that its emails depend on each other: replies to a ticket opened
earlier in the batch, an alert and its recovery, a sender over the acknowledgement
throttle, a reused Message-ID, an auto-responder over the loop count, copies within a
batch and across batches, and an email to quarantine.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from halomail.backends.memory import MemoryConnector
from halomail.rules.models import EmailRule, RuleType
from halomail.runner import Mailbox, MailProcessor, RunReport
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import utcnow
from halomail.tickets.postgres import PostgreSQLTicketRepository
from halomail.tickets.repository import Browsing, TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import batch_settings, make_email, spamassassin
from tests.servers.postgres import PostgresServer

EXAMPLES = Path(__file__).parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    # The example is a folder a host copies, not an installed package.
    sys.path.insert(0, str(EXAMPLES))

from sqlalchemy_fastapi.desk import open_repository  # noqa: E402

pytestmark = pytest.mark.slow

ALERTS = EmailRule(
    name="monitoring",
    type=RuleType.ALERT,
    sequence=10,
    from_=("nagios@monitoring.example",),
    from_exact=True,
    closure_string="RECOVERY",
)


def _interdependent() -> list[bytes]:
    """Emails whose outcomes depend on the emails before them in the mailbox."""
    alice = "Alice Martin <alice@customer.example>"
    emails = [
        make_email(sender=alice, subject="Printer jam", message_id="<a1@customer.example>"),
        make_email(
            sender=alice,
            subject="Re: Printer jam",
            message_id="<a2@customer.example>",
            headers={"In-Reply-To": "<a1@customer.example>"},
            body="Still jammed.\n",
        ),
        # A colleague answers the reply: unrelated sender, threaded through References.
        make_email(
            sender="Gus <gus@customer.example>",
            subject="Re: Printer jam",
            message_id="<g1@customer.example>",
            headers={"References": "<a1@customer.example> <a2@customer.example>"},
            body="Same here.\n",
        ),
        # The ticket's id in the subject: the first ticket of the mailbox.
        make_email(sender=alice, subject="[ID:1] toner too", message_id="<a3@customer.example>"),
        make_email(
            sender="nagios@monitoring.example",
            subject="PROBLEM: disk full on srv1",
            message_id="<n1@monitoring.example>",
        ),
        make_email(
            sender="nagios@monitoring.example",
            subject="RECOVERY: disk full on srv1",
            message_id="<n2@monitoring.example>",
        ),
        # A NAS that sends every alert with one Message-ID: each is a new email.
        make_email(sender="nas@office.example", message_id="<same@nas>", body="Fan failed.\n"),
        make_email(sender="nas@office.example", message_id="<same@nas>", body="Disk failed.\n"),
        # Without a Message-ID: keyed by its bytes, so its copy is a duplicate.
        make_email(sender="Eve <eve@example.net>", message_id=None, body="No id here.\n"),
        make_email(sender="Eve <eve@example.net>", message_id=None, body="No id here.\n"),
        make_email(
            sender="Fay <fay@example.net>",
            subject="Out of office",
            message_id="<ooo@example.net>",
            headers={"Auto-Submitted": "auto-replied"},
        ),
        # Nested past the MIME depth limit: quarantined, and its batch goes on.
        _too_deep(),
    ]
    # One sender writing again and again: the acknowledgement throttle and the loop count
    # must see the emails of the same batch.
    emails += [
        make_email(
            sender="Bob <bob@example.com>",
            subject="Same subject",
            message_id=f"<bob-{n}@example.com>",
            body=f"Attempt {n}.\n",
        )
        for n in range(12)
    ]
    # A crude auto-responder repeating one email: the loop count must see the tickets
    # the same batch opened.
    emails += [
        make_email(
            sender="Responder <noreply@vendor.example>",
            subject="Thanks for your message",
            message_id=f"<responder-{n}@vendor.example>",
            body="We will get back to you.\n",
        )
        for n in range(5)
    ]
    emails += [
        make_email(
            sender=alice,
            subject="Re: Printer jam",
            message_id=f"<a{n}@customer.example>",
            headers={"In-Reply-To": "<a1@customer.example>"},
            body=f"Reply {n}.\n",
        )
        for n in range(10, 14)
    ]
    return emails


def _too_deep() -> bytes:
    head = "From: Mallory <mallory@example.org>\r\nMessage-ID: <deep@example.org>\r\n"
    body = ""
    for depth in range(200):
        head += f'Content-Type: multipart/mixed; boundary="b{depth}"\r\n\r\n--b{depth}\r\n'
    body = "Content-Type: text/plain\r\n\r\ndeep\r\n" + "".join(
        f"--b{depth}--\r\n" for depth in reversed(range(200))
    )
    return (head + body).encode()


def _real_mail(count: int) -> list[bytes]:
    # In name order: easy ham first, mailing-list threads whose replies follow each other.
    return [path.read_bytes() for path in spamassassin(count)]


#: Each mailbox, and the batch sizes it is compared at with ``batch_size = 1``.
MAILBOXES: dict[str, tuple[Callable[[], list[bytes]], tuple[int, ...]]] = {
    # Twice over: the second pass meets every email recorded, by an earlier batch.
    "interdependent": (lambda: _interdependent() * 2, (3, 10)),
    "real mail": (lambda: _real_mail(150), (10,)),
}


_CLOCK = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:?\d\d| UTC)?")
_OUR_IDS = re.compile(r"halomail\.[^>\s]+")


class Repository(TicketRepository, Browsing, Protocol):
    """A repository whose tickets, queued mail and quarantine can be listed."""


def _plain(text: str | None) -> str | None:
    """``text`` without the clock times and our generated Message-IDs, which differ
    between any two runs."""
    return None if text is None else _CLOCK.sub("<time>", _OUR_IDS.sub("<id>", text))


def _what_a_user_sees(repository: Repository, report: RunReport) -> dict[str, Any]:
    outcomes = [
        (o.outcome.value, o.reason.value if o.reason else None, o.ticket_id, o.acknowledged)
        for o in report.outcomes
    ]
    tickets = [
        (
            ticket.id,
            ticket.summary,
            ticket.details,
            ticket.status.value,
            ticket.ticket_type,
            ticket.user_email,
            ticket.customer,
            tuple(ticket.cc),
            ticket.alert_key,
            tuple(
                (action.kind.value, action.body, action.from_address, action.message_id)
                for action in repository.list_actions(ticket.id)
            ),
        )
        for ticket in sorted(repository.list_tickets(limit=10_000), key=lambda t: t.id)
    ]
    outgoing = sorted(
        (
            mail.ticket_id,
            mail.kind,
            mail.to,
            _plain(mail.subject),
            _plain(mail.text),
            _plain(mail.html),
            _plain(mail.in_reply_to),
            mail.references,
        )
        # Nothing is sent here, so every queued email is due (the host's example
        # repository has no list_outgoing).
        for mail in repository.due_outgoing(utcnow() + dt.timedelta(days=1), limit=10_000)
    )
    quarantine = [
        (entry.reason, entry.raw, entry.message_id)
        for entry in repository.list_quarantine(limit=10_000)
    ]
    return {
        "outcomes": outcomes,
        "tickets": tickets,
        "outgoing": outgoing,
        "quarantine": quarantine,
    }


def _process(repository: Repository, emails: Sequence[bytes], batch_size: int) -> dict[str, Any]:
    connector = MemoryConnector("Support", emails)
    processor = MailProcessor(
        repository,
        [Mailbox(connector, send_acknowledgement=True)],
        batch_settings(batch_size),
        rules=[ALERTS],
    )
    report = processor.run_once()
    seen = _what_a_user_sees(repository, report)
    # Every email left its mailbox, in mailbox order, as its outcome says.
    assert connector.processed + connector.quarantined == sorted(
        emails, key=lambda raw: raw in connector.quarantined
    )
    seen["dispositions"] = [(ref, disposition.value) for ref, disposition in connector.acks]
    return seen


@pytest.fixture(params=["memory", "sqlite", "postgresql", "host"])
def repositories(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Repository]]:
    """A maker of fresh, empty repositories of one kind, closed at the end: halomail's
    own (with group commit) and a host's written the obvious way, without it (the
    SQLAlchemy example of ``examples/``), which a batch asks email by email."""
    made: list[Repository] = []

    def fresh() -> Repository:
        repository: Repository
        if request.param == "memory":
            repository = InMemoryTicketRepository()
        elif request.param == "sqlite":
            repository = SQLiteTicketRepository(tmp_path / f"halomail-{len(made)}.db")
        elif request.param == "host":
            repository = open_repository(tmp_path / f"host-{len(made)}.db")
        else:
            server: PostgresServer = request.getfixturevalue("postgres")
            if not server.running():
                server.start()
            repository = PostgreSQLTicketRepository(server.new_database())
        made.append(repository)
        return repository

    yield fresh
    for repository in made:
        close = getattr(repository, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("mailbox", sorted(MAILBOXES))
def test_batches_decide_every_email_as_one_email_at_a_time_would(
    repositories: Callable[[], Repository], mailbox: str
) -> None:
    """Batches (of 10, the default, and of 3) leave the same outcomes, dispositions,
    tickets, actions, acknowledgements and quarantine as ``batch_size = 1``."""
    make, batch_sizes = MAILBOXES[mailbox]
    emails = make()
    alone = _process(repositories(), emails, batch_size=1)
    for batch_size in batch_sizes:
        batched = _process(repositories(), emails, batch_size=batch_size)
        for part, expected in alone.items():
            assert batched[part] == expected, f"{part} differ with batch_size = {batch_size}"


def test_the_interdependent_mailbox_exercises_what_it_is_built_for(tmp_path: Path) -> None:
    """The comparison above means something only if the mailbox holds each case: a
    reply, an unrelated sender's reply, the ticket id in a subject, an alert closed, a
    reused Message-ID, a copy, the throttle, the loop count, and a quarantined email."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    try:
        seen = _process(repository, MAILBOXES["interdependent"][0](), batch_size=10)
    finally:
        repository.close()
    outcomes = [(outcome, reason) for outcome, reason, _id, _ack in seen["outcomes"]]
    for expected in (
        ("updated", None),
        ("created", "unrelated-sender"),
        ("closed", "alert-cleared"),
        ("skipped", "duplicate"),
        ("created", "acknowledgement-throttled"),
        ("ignored", "loop-suspected"),
        ("quarantined", "mime-too-deep"),
    ):
        assert expected in outcomes, expected
    first = seen["tickets"][0]
    assert first[1] == "Printer jam"
    assert len(first[-1]) >= 1 + 1 + 4 + 1  # the email, its reply, four more, the [ID:1]
    nas = [ticket for ticket in seen["tickets"] if ticket[5] == "nas@office.example"]
    assert len(nas) == 2  # a reused Message-ID with another body is a new email
