"""examples/sqlalchemy_fastapi: a host's SQLAlchemy repository and FastAPI app, run for real.

The example's repository passes halomail's whole contract suite on SQLite files; its
FastAPI app records an agent's reply and queues the reply's email in one transaction
(both or neither), and the queued email reaches a real SMTP server; its ``__main__``
processes a Maildir into the database.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from fastapi.testclient import TestClient

from halomail import (
    ActionKind,
    MailProcessor,
    MessageKind,
    NewAction,
    NewTicket,
    OutboxMail,
    RepositoryError,
    TicketRepository,
)
from halomail.backends.smtp import SmtpTransport
from halomail.tickets.models import utcnow
from tests.conftest import make_email
from tests.servers.smtp import SmtpServer

pytest.register_assert_rewrite("halomail.testing")
from halomail.testing import AttemptLedgerContract, TicketRepositoryContract  # noqa: E402

EXAMPLES = Path(__file__).parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    # The example is a folder a host copies, not an installed package.
    sys.path.insert(0, str(EXAMPLES))

from sqlalchemy_fastapi.app import create_app  # noqa: E402
from sqlalchemy_fastapi.desk import make_processor, open_repository  # noqa: E402
from sqlalchemy_fastapi.repository import (  # noqa: E402
    SQLAlchemyTicketRepository,
    sqlite_engine,
)


class TestSQLAlchemyRepository(TicketRepositoryContract, AttemptLedgerContract):
    """The example's repository keeps every promise of halomail's contract suite."""

    @pytest.fixture
    def repository(self, tmp_path: Path) -> Iterator[TicketRepository]:
        """A fresh SQLite database file for each test, its tables made by the repository."""
        repository = SQLAlchemyTicketRepository(sqlite_engine(str(tmp_path / "helpdesk.db")))
        try:
            yield repository
        finally:
            repository.close()


# -- the FastAPI app ---------------------------------------------------------------------


@attrs.frozen
class Desk:
    """The example's helpdesk, running: its repository, processor, API client and SMTP server."""

    repository: SQLAlchemyTicketRepository
    processor: MailProcessor
    client: TestClient
    smtp: SmtpServer


def deliver(maildir: Path, name: str, sender: str, subject: str) -> None:
    """Drop an email into the Maildir's ``new`` folder, as a mail server would."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (maildir / "new" / name).write_bytes(
        make_email(sender=sender, subject=subject, message_id=f"<{name}@customer.example>")
    )


@pytest.fixture
def desk(tmp_path: Path, smtp_server_factory: Callable[..., SmtpServer]) -> Iterator[Desk]:
    """The helpdesk after one email from Alice became ticket 1 (its acknowledgement sent)."""
    smtp = smtp_server_factory("plain")
    maildir = tmp_path / "inbox"
    deliver(maildir, "1700000000.alice", "Alice Martin <alice@customer.example>", "VPN is down")
    repository = open_repository(tmp_path / "helpdesk.db")
    transport = SmtpTransport(smtp.host, smtp.port, security="none")
    processor = make_processor(repository, maildir, transport)
    try:
        processor.process_mailbox(processor.mailboxes[0])
        assert processor.send_outbox().sent == 1  # Alice's acknowledgement
        with TestClient(create_app(repository, processor)) as client:
            yield Desk(repository, processor, client, smtp)
    finally:
        processor.close()
        transport.close()
        repository.close()


def outbox(repository: SQLAlchemyTicketRepository) -> list[OutboxMail]:
    """Every email the outbox holds that is still to send."""
    return list(repository.due_outgoing(utcnow() + dt.timedelta(days=1)))


def test_get_tickets_lists_the_tickets_made_from_the_maildir(desk: Desk) -> None:
    """GET /tickets shows the ticket halomail made from Alice's email, newest first."""
    response = desk.client.get("/tickets")
    assert response.status_code == 200
    (ticket,) = response.json()
    assert ticket["summary"] == "VPN is down"
    assert ticket["user_email"] == "alice@customer.example"
    assert ticket["status"] == "new"
    assert desk.client.get("/tickets", params={"offset": 1}).json() == []
    assert desk.client.get("/tickets", params={"limit": -1}).status_code == 422


def test_an_agent_reply_is_recorded_queued_and_delivered_by_smtp(desk: Desk) -> None:
    """POST /tickets/1/replies records the reply and queues its email; send_outbox delivers it."""
    (ticket,) = desk.repository.list_tickets()
    text = "We have restarted the VPN gateway; please try again."
    response = desk.client.post(
        f"/tickets/{ticket.id}/replies", json={"agent": "amy@helpdesk.example", "text": text}
    )
    assert response.status_code == 201, response.text
    reply = response.json()
    assert reply["to"] == ["alice@customer.example"]
    (action,) = [a for a in desk.repository.list_actions(ticket.id) if a.id == reply["action_id"]]
    assert action.body == text
    assert action.kind is ActionKind.EMAIL_OUT
    (queued,) = outbox(desk.repository)
    assert queued.message_id == reply["message_id"]
    assert queued.ticket_id == ticket.id
    assert queued.kind == "ticket_update"

    assert desk.processor.send_outbox().sent == 1
    delivered = desk.smtp.messages[-1]
    assert delivered.rcpt_tos == ("alice@customer.example",)
    message = email.message_from_bytes(delivered.raw, policy=email.policy.default)
    assert message["Message-ID"] == f"<{reply['message_id']}>"
    assert f"[ID:{ticket.id}]" in message["Subject"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert text in body.get_content()
    assert outbox(desk.repository) == []


def test_a_reply_the_agent_may_not_send_is_not_recorded_either(desk: Desk) -> None:
    """An agent outside the mailbox's teams gets 403, and neither the reply nor an email is kept."""
    (ticket,) = desk.repository.list_tickets()
    before = desk.repository.list_actions(ticket.id)
    response = desk.client.post(
        f"/tickets/{ticket.id}/replies", json={"agent": "sam@helpdesk.example", "text": "Hi!"}
    )
    assert response.status_code == 403
    assert "may not send" in response.json()["detail"]
    assert desk.repository.list_actions(ticket.id) == before
    assert outbox(desk.repository) == []


def test_a_reply_with_nobody_to_email_is_rolled_back(desk: Desk) -> None:
    """A ticket without an address answers 409 no-recipient, and the reply is not recorded."""
    ticket = desk.repository.create_ticket(
        NewTicket("Phoned in", "By telephone", "Incident", user_email="", mailbox="Support")
    )
    response = desk.client.post(
        f"/tickets/{ticket.id}/replies", json={"agent": "amy@helpdesk.example", "text": "Done."}
    )
    assert response.status_code == 409
    assert "no-recipient" in response.json()["detail"]
    assert desk.repository.list_actions(ticket.id) == []


def test_a_reply_to_a_missing_ticket_is_404(desk: Desk) -> None:
    """Replying to a ticket that does not exist answers 404 and changes nothing."""
    response = desk.client.post(
        "/tickets/999/replies", json={"agent": "amy@helpdesk.example", "text": "Hello"}
    )
    assert response.status_code == 404
    assert outbox(desk.repository) == []


def test_a_failure_after_the_email_was_queued_rolls_back_the_email_too(desk: Desk) -> None:
    """The notifier's savepoint commits only with the host's transaction: an error undoes both."""
    (ticket,) = desk.repository.list_tickets()
    before = desk.repository.list_actions(ticket.id)
    seen_inside: list[OutboxMail] = []

    def reply_then_fail() -> None:
        with desk.repository.unit_of_work():
            desk.repository.add_action(NewAction(ticket.id, ActionKind.EMAIL_OUT, "Try again"))
            notice = desk.processor.notifier.ticket_email(
                ticket.id, MessageKind.TICKET_UPDATE, note="Try again", agent="amy@helpdesk.example"
            )
            assert notice.queued is not None
            seen_inside.extend(outbox(desk.repository))  # visible inside the transaction
            raise RuntimeError("the host failed after queueing")

    with pytest.raises(RuntimeError, match="the host failed"):
        reply_then_fail()
    assert len(seen_inside) == 1
    assert desk.repository.list_actions(ticket.id) == before
    assert outbox(desk.repository) == []
    assert desk.processor.send_outbox().sent == 0


def test_the_unit_of_work_refuses_to_open_inside_a_transaction(tmp_path: Path) -> None:
    """halomail's transaction and the host's unit of work do not nest in each other."""
    repository = open_repository(tmp_path / "helpdesk.db")
    try:
        with repository.transaction(), pytest.raises(RepositoryError, match="already open"):
            open_unit_of_work(repository)
        with repository.unit_of_work():
            repository.set_state("k", "v")
            with repository.transaction(), pytest.raises(RepositoryError, match="do not nest"):
                open_transaction(repository)
        assert repository.get_state("k") == "v"
    finally:
        repository.close()


def open_unit_of_work(repository: SQLAlchemyTicketRepository) -> None:
    """Open the host's unit of work and leave it at once."""
    with repository.unit_of_work():
        pass


def open_transaction(repository: SQLAlchemyTicketRepository) -> None:
    """Open halomail's transaction and leave it at once."""
    with repository.transaction():
        pass


# -- python -m sqlalchemy_fastapi ---------------------------------------------------------


def test_the_example_processes_a_maildir_into_its_database(tmp_path: Path) -> None:
    """`python -m sqlalchemy_fastapi MAILDIR DB` makes a ticket per email, and only once."""
    maildir = tmp_path / "inbox"
    deliver(maildir, "1700000000.a", "Alice <alice@customer.example>", "Printer jammed")
    deliver(maildir, "1700000001.b", "Bob <bob@partner.example>", "New starter on Monday")
    database = tmp_path / "helpdesk.db"
    command = [sys.executable, "-m", "sqlalchemy_fastapi", str(maildir), str(database)]
    first = subprocess.run(
        command, cwd=EXAMPLES, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    assert "2 emails processed" in first.stdout
    assert "Printer jammed (alice@customer.example)" in first.stdout
    second = subprocess.run(
        command, cwd=EXAMPLES, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert "0 emails processed" in second.stdout
    repository = open_repository(database)
    try:
        summaries = {t.summary for t in repository.list_tickets()}
        assert summaries == {"Printer jammed", "New starter on Monday"}
        assert len(repository.due_outgoing(utcnow() + dt.timedelta(days=1))) == 2  # the acks
    finally:
        repository.close()


# -- the documents that describe the example ---------------------------------------------

DOCUMENTS = (
    Path(__file__).parent.parent / "docs" / "sqlalchemy.md",
    EXAMPLES / "sqlalchemy_fastapi" / "README.md",
)


def fenced_blocks(document: Path) -> list[tuple[str, str]]:
    """Each fenced block of a Markdown document: its language and its text."""
    found = re.findall(
        r"^```(\w*)\n(.*?)^```", document.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )
    return [(language, text) for language, text in found]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_documents_blocks_run_as_written(document: Path, tmp_path: Path) -> None:
    """docs/sqlalchemy.md and the example's README: each python and sh block runs and succeeds."""
    blocks = fenced_blocks(document)
    assert blocks, document
    assert {language for language, _ in blocks} <= {"python", "sh"}
    deliver(tmp_path / "inbox", "1700000000.a", "Alice <alice@customer.example>", "Printer jammed")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(EXAMPLES.parent)]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    for language, text in blocks:
        command = [sys.executable, "-W", "error", "-c", text] if language == "python" else []
        result = subprocess.run(
            command or ["sh", "-e", "-c", text],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{document.name}:\n{text}\n{result.stderr}"
    repository = open_repository(tmp_path / "helpdesk.db")
    try:
        assert [t.summary for t in repository.list_tickets()] == ["Printer jammed"]
    finally:
        repository.close()
