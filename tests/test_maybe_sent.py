"""Issue 16, item 1: a send that may have been delivered is never re-sent blindly.

A transport that raises :class:`~halomail.errors.AmbiguousSendError` (the service
took the request, then the answer timed out or was a 5xx) leaves the mail *maybe
sent*; before sending it again, the outbox asks a transport that can look among its
sent mail (:class:`~halomail.backends.base.SentLookup`). The memory transport here
delivers and then fails the answer, as the real services do; the repository is a
real SQLite file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from halomail.backends.base import MailTransport, OutgoingEmail, SentLookup
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import AmbiguousSendError, TransientTransportError
from halomail.outbound.outbox import Backoff, Outbox, SenderIdentity, SendIntents
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import MAYBE_SENT, NewOutgoing, OutboxMail, OutboxStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import HELPDESK, make_email

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
LATER = dt.timedelta(hours=3)  # past any backoff of the first attempts


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        """The current time."""
        return self.now


class _Died(BaseException):
    """What kills a sender half-way (as a SIGKILL would): nothing in the outbox catches it."""


def _timeout(_email: OutgoingEmail) -> None:
    raise AmbiguousSendError("sendMail: read timed out after the request was sent")


def _sender(_mail: OutboxMail) -> SenderIdentity:
    return SenderIdentity(HELPDESK)


def _outbox(
    repository: SQLiteTicketRepository, transport: MailTransport, clock: Callable[[], dt.datetime]
) -> Outbox:
    return Outbox(repository, transport, _sender, loop_token="t" * 32, clock=clock)


def _queue(repository: SQLiteTicketRepository, message_id: str = "m1@helpdesk.example") -> str:
    repository.enqueue_outgoing(
        NewOutgoing(message_id=message_id, to=("c@customer.example",), subject="s", text="t")
    )
    return message_id


def _mail(repository: SQLiteTicketRepository) -> OutboxMail:
    (mail,) = repository.list_outgoing()
    return mail


class PlainTransport:
    """A transport that cannot look among its sent mail (as SMTP cannot)."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner

    def send(self, email: OutgoingEmail) -> None:
        """Send through the memory transport."""
        self.inner.send(email)


def test_a_delivered_then_failed_send_is_maybe_sent_then_found_not_sent_twice(
    tmp_path: Path,
) -> None:
    """Delivered, answer lost: maybe sent (with the error); next pass looks, finds, marks sent."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        message_id = _queue(repository)
        transport = MemoryTransport(after_delivery=_timeout)
        report = _outbox(repository, transport, clock).send_due()
        assert (report.sent, report.retrying, report.maybe_sent) == (0, 1, 1)
        mail = _mail(repository)
        assert mail.status is OutboxStatus.PENDING
        assert mail.maybe_sent
        assert mail.last_error == f"{MAYBE_SENT}sendMail: read timed out after the request was sent"

        transport.after_delivery = None
        clock.now += LATER
        again = _outbox(repository, transport, clock).send_due()
        assert again.sent == 1
        assert [e.message_id for e in transport.sent] == [message_id]
        assert len(transport.attempts) == 1
        assert transport.lookups == [message_id]
        assert _mail(repository).status is OutboxStatus.SENT


def test_an_ambiguous_send_that_did_not_deliver_is_sent_after_the_look(tmp_path: Path) -> None:
    """Not delivered after all: the look says so and the mail is sent, once."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        message_id = _queue(repository)
        transport = MemoryTransport(_timeout)  # fails before delivering
        _outbox(repository, transport, clock).send_due()
        assert _mail(repository).maybe_sent
        assert transport.sent == []

        transport.handler = None
        clock.now += LATER
        assert _outbox(repository, transport, clock).send_due().sent == 1
        assert transport.lookups == [message_id]
        assert [e.message_id for e in transport.sent] == [message_id]
        assert not _mail(repository).maybe_sent


def test_a_failed_look_sends_nothing_and_looks_again_later(tmp_path: Path) -> None:
    """The look itself fails: nothing is sent meanwhile; a later look finds the mail."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        message_id = _queue(repository)
        transport = MemoryTransport(after_delivery=_timeout)
        _outbox(repository, transport, clock).send_due()
        transport.after_delivery = None

        def unavailable(_message_id: str) -> None:
            raise TransientTransportError("Sent Items: 503 Service Unavailable")

        transport.lookup = unavailable
        for _ in range(3):
            clock.now += LATER
            report = _outbox(repository, transport, clock).send_due()
            assert (report.sent, report.maybe_sent) == (0, 1)
        assert len(transport.attempts) == 1
        mail = _mail(repository)
        assert mail.maybe_sent
        assert "looking among the sent mail failed" in (mail.last_error or "")

        transport.lookup = None
        clock.now += LATER
        assert _outbox(repository, transport, clock).send_due().sent == 1
        assert len(transport.attempts) == 1
        assert transport.lookups == [message_id] * 4


def test_a_transport_that_cannot_look_sends_again_as_smtp_does(tmp_path: Path) -> None:
    """Without SentLookup the mail is shown maybe sent, then sent again (the docs say so)."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        _queue(repository)
        memory = MemoryTransport(after_delivery=_timeout)
        plain = PlainTransport(memory)
        assert not isinstance(plain, SentLookup)
        _outbox(repository, plain, clock).send_due()
        assert _mail(repository).maybe_sent
        memory.after_delivery = None
        clock.now += LATER
        assert _outbox(repository, plain, clock).send_due().sent == 1
        assert len(memory.sent) == 2
        assert memory.lookups == []


def test_a_sender_killed_after_delivery_leaves_the_next_one_a_reason_to_look(
    tmp_path: Path,
) -> None:
    """Killed between delivery and record: after the lease, the mail is looked for, not resent."""
    clock = Clock()

    def die(_email: OutgoingEmail) -> None:
        raise _Died

    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        message_id = _queue(repository)
        transport = MemoryTransport(after_delivery=die)
        with pytest.raises(_Died):
            _outbox(repository, transport, clock).send_due()
        assert repository.get_state(SendIntents.key(_mail(repository)))
        assert not _mail(repository).maybe_sent  # nothing recorded: the process died

        transport.after_delivery = None
        clock.now += dt.timedelta(minutes=6)  # the dead sender's claim ran out
        assert _outbox(repository, transport, clock).send_due().sent == 1
        assert [e.message_id for e in transport.sent] == [message_id]
        assert transport.lookups == [message_id]


def test_maybe_sent_mail_given_up_stays_maybe_sent_through_a_retry(tmp_path: Path) -> None:
    """After the last attempt it fails as maybe sent; `outbox retry` still looks before sending."""
    clock = Clock()
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        message_id = _queue(repository)
        transport = MemoryTransport(after_delivery=_timeout)
        outbox = Outbox(
            repository,
            transport,
            _sender,
            loop_token="t" * 32,
            clock=clock,
            backoff=Backoff(max_attempts=1),
        )
        assert outbox.send_due().failed == 1
        failed = _mail(repository)
        assert failed.status is OutboxStatus.FAILED
        assert failed.maybe_sent

        repository.retry_outgoing(clock.now)
        transport.after_delivery = None
        assert outbox.send_due().sent == 1
        assert [e.message_id for e in transport.sent] == [message_id]


def test_the_processor_sends_each_acknowledgement_once_after_an_ambiguous_answer(
    tmp_path: Path, settings: ProcessorSettings
) -> None:
    """Through MailProcessor: 3 acknowledgements answered by timeouts are each delivered once."""
    clock = Clock()
    repository = SQLiteTicketRepository(tmp_path / "halomail.db", clock=clock)
    connector = MemoryConnector("Support")
    for n in range(3):
        connector.add(
            make_email(
                sender=f"Customer {n} <c{n}@customer.example>",
                subject=f"Problem {n}",
                message_id=f"<p{n}@customer.example>",
            )
        )
    transport = MemoryTransport(after_delivery=_timeout)
    processor = MailProcessor(
        repository, [Mailbox(connector)], settings, transport=transport, clock=clock
    )
    first = processor.run_once()
    assert (first.sent.sent, first.sent.maybe_sent) == (0, 3)
    assert all(mail.maybe_sent for mail in repository.list_outgoing())

    transport.after_delivery = None
    clock.now += LATER
    second = processor.run_once()
    processor.close()
    assert second.sent.sent == 3
    assert sorted(e.recipients[0] for e in transport.sent) == [
        f"c{n}@customer.example" for n in range(3)
    ]
    assert len(transport.lookups) == 3
    assert {m.status for m in repository.list_outgoing()} == {OutboxStatus.SENT}
    repository.close()


def test_halomail_outbox_lists_maybe_sent_mail_with_its_error(tmp_path: Path) -> None:
    """The real `halomail outbox` command shows a maybe-sent mail as such, with the error."""
    (tmp_path / "halomail.toml").write_text(
        '[storage]\nurl = "sqlite:///halomail.db"\n\n[outgoing]\ntransport = "memory"\n'
        'from_address = "support@helpdesk.example"\n\n[[mailboxes]]\nname = "Support"\n'
        'connection = "maildir"\npath = "inbox"\n'
    )
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        _queue(repository)
        _outbox(repository, MemoryTransport(after_delivery=_timeout), Clock()).send_due()
    command = [sys.executable, "-m", "halomail.cli", "-c", str(tmp_path / "halomail.toml")]
    listed = subprocess.run(
        [*command, "outbox", "--json"], capture_output=True, text=True, timeout=120, check=True
    )
    (row,) = json.loads(listed.stdout)["outgoing"]
    assert row["status"] == "pending"
    assert row["maybe_sent"] is True
    assert row["last_error"].startswith("maybe sent: sendMail: read timed out")
    text = subprocess.run(
        [*command, "outbox"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "maybe" in text.splitlines()[1]
    assert "maybe sent: sendMail: read timed out" in text


CLOUD_CHILD = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from pathlib import Path
    from halomail.outbound.outbox import Outbox, SenderIdentity
    from halomail.tickets.sqlite import SQLiteTicketRepository

    root, kill, minutes_later = Path(sys.argv[1]), sys.argv[2] == "kill", int(sys.argv[3])

    class SentFolder:
        # A cloud API's send: every call delivers anew (no dedupe by Message-ID), and
        # what was sent can be looked up afterwards, as in Sent Items.
        def __init__(self, path):
            self.path = path
            path.mkdir(exist_ok=True)

        def send(self, email):
            n = len(list(self.path.glob("*.id")))
            (self.path / f"{n:04d}.eml").write_bytes(email.data)
            (self.path / f"{n:04d}.id").write_text(email.message_id)
            if kill and n == 1:  # delivered, then the process dies before any answer
                os.kill(os.getpid(), signal.SIGKILL)

        def was_sent(self, message_id):
            with open(root / "lookups", "a") as log:
                log.write(message_id + "\\n")
            return any(p.read_text() == message_id for p in self.path.glob("*.id"))

    repository = SQLiteTicketRepository(root / "halomail.db")
    Outbox(
        repository,
        SentFolder(root / "sent"),
        lambda mail: SenderIdentity("support@helpdesk.example"),
        loop_token="crash-token",
        clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes_later),
    ).send_due()
    repository.close()
    """
)


def _cloud_child(root: Path, *, kill: bool, minutes_later: int = 0) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", CLOUD_CHILD, str(root), "kill" if kill else "no"]
    result = subprocess.run(
        [*command, str(minutes_later)], env=env, capture_output=True, timeout=60, check=False
    )
    return result.returncode


def test_a_process_sigkilled_after_delivery_never_sends_twice_when_the_transport_can_look(
    tmp_path: Path,
) -> None:
    """SIGKILL after the service took mail 2, before any record: a restart sends each once."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = [_queue(repository, f"m{n}@helpdesk.example") for n in range(3)]
    assert _cloud_child(tmp_path, kill=True) == -signal.SIGKILL
    # After the dead process's claim ran out (5 minutes), a new process sends the rest.
    assert _cloud_child(tmp_path, kill=False, minutes_later=6) == 0
    delivered = [p.read_text() for p in sorted((tmp_path / "sent").glob("*.id"))]
    assert sorted(delivered) == sorted(queued)
    assert (tmp_path / "lookups").read_text().split() == [queued[1]]
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        assert {m.status for m in repository.list_outgoing()} == {OutboxStatus.SENT}
