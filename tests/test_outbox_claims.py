"""The outbox claims mail before it sends it: two senders send each email once.

Two :class:`Outbox` objects on two threads over one SQLite file deliver every mail
once to a real SMTP server on loopback; a claim left by a sender that died is taken
over when its lease runs out, and not before.
"""

from __future__ import annotations

import datetime as dt
import email
import threading
from collections import Counter
from collections.abc import Callable
from email.policy import compat32
from pathlib import Path

import pytest

from halomail import Mailbox, MailProcessor, ProcessorSettings
from halomail.backends.base import OutgoingEmail
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.backends.smtp import SmtpTransport
from halomail.errors import TransientTransportError
from halomail.outbound.outbox import CLAIM_BATCH, Backoff, Outbox, SenderIdentity, SendReport
from halomail.tickets.models import NewOutgoing, OutboxMail, OutboxStatus, utcnow
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import HELPDESK, LOOP_TOKEN
from tests.servers.smtp import SmtpServer

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
MAILS = 60


def _sender(_mail: OutboxMail) -> SenderIdentity:
    return SenderIdentity(HELPDESK, "Support")


def _queue(repository: SQLiteTicketRepository, count: int) -> list[str]:
    ids = [f"ack-{n}@helpdesk.example" for n in range(count)]
    with repository.transaction():
        for n, message_id in enumerate(ids):
            repository.enqueue_outgoing(
                NewOutgoing(message_id, (f"c{n}@customer.example",), f"Ticket {n}", "Received.")
            )
    return ids


def _smtp(server: SmtpServer) -> SmtpTransport:
    return SmtpTransport(
        server.host,
        server.port,
        security="starttls",
        username=server.username,
        password=server.password,
        tls_ca_file=server.ca_file,
        timeout=10,
    )


def _send_until_empty(outbox: Outbox, start: threading.Barrier) -> list[SendReport]:
    """Small passes until one finds nothing, so that both senders meet on the queue."""
    start.wait()
    reports: list[SendReport] = []
    while True:
        report = outbox.send_due(limit=4)
        if report == SendReport():
            return reports
        reports.append(report)


def test_two_outboxes_on_two_threads_deliver_every_mail_once(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Two senders over one SQLite file, started together: each mail reaches SMTP exactly once."""
    path = tmp_path / "halomail.db"
    with SQLiteTicketRepository(path) as seeding:
        queued = _queue(seeding, MAILS)
    start = threading.Barrier(2)
    results: list[list[SendReport]] = []
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            with SQLiteTicketRepository(path) as repository:
                outbox = Outbox(repository, _smtp(smtp_server), _sender, loop_token=LOOP_TOKEN)
                results.append(_send_until_empty(outbox, start))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    received = Counter(
        email.message_from_bytes(message.raw, policy=compat32)["Message-ID"]
        for message in smtp_server.messages
    )
    assert sorted(received) == sorted(f"<{m}>" for m in queued)
    assert set(received.values()) == {1}
    assert sum(r.sent for reports in results for r in reports) == MAILS
    with SQLiteTicketRepository(path) as repository:
        assert repository.due_outgoing(T0 + dt.timedelta(days=3650)) == []


def test_one_repository_shared_by_two_outboxes_sends_each_mail_once(tmp_path: Path) -> None:
    """A host sending while the daemon sends, through one repository object: no mail twice."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, MAILS)
        transport = MemoryTransport()
        start = threading.Barrier(2)
        outboxes = [Outbox(repository, transport, _sender, loop_token=LOOP_TOKEN) for _ in "ab"]
        threads = [
            threading.Thread(target=_send_until_empty, args=(outbox, start)) for outbox in outboxes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert sorted(mail.message_id for mail in transport.attempts) == sorted(queued)


class _Died(BaseException):
    """What kills a sender half-way (as a SIGKILL would): nothing in the outbox catches it."""


def _clock(now: list[dt.datetime]) -> Callable[[], dt.datetime]:
    return lambda: now[0]


def test_a_claim_left_by_a_dead_sender_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    """Mail claimed by a sender that died is sent by another only once the lease ran out."""
    now = [T0]

    def die(_email: OutgoingEmail) -> None:
        raise _Died

    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, 3)
        lease = dt.timedelta(minutes=5)
        dead = Outbox(
            repository,
            MemoryTransport(die),
            _sender,
            loop_token=LOOP_TOKEN,
            clock=_clock(now),
            lease=lease,
        )
        with pytest.raises(_Died):
            dead.send_due()
        survivor_transport = MemoryTransport()
        survivor = Outbox(
            repository,
            survivor_transport,
            _sender,
            loop_token=LOOP_TOKEN,
            clock=_clock(now),
            lease=lease,
        )
        now[0] = T0 + lease - dt.timedelta(seconds=1)
        assert survivor.send_due() == SendReport()
        now[0] = T0 + lease
        assert survivor.send_due() == SendReport(sent=3)
        assert [m.message_id for m in survivor_transport.sent] == queued
        left = repository.due_outgoing(T0 + lease, limit=10)
    assert left == []


def test_each_outbox_claims_under_its_own_name(tmp_path: Path) -> None:
    """Two outboxes made in one process claim under different names; a given name is kept."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        transport = MemoryTransport()
        first = Outbox(repository, transport, _sender, loop_token=LOOP_TOKEN)
        second = Outbox(repository, transport, _sender, loop_token=LOOP_TOKEN)
        named = Outbox(repository, transport, _sender, loop_token=LOOP_TOKEN, owner="runner-1")
    assert first.owner != second.owner
    assert named.owner == "runner-1"
    assert all(o.owner.count(":") >= 2 for o in (first, second))


def test_a_mail_without_a_transport_waits_claimed_by_its_own_outbox(tmp_path: Path) -> None:
    """Mail no transport takes stays pending; the same outbox claims it again next pass."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        (message_id,) = _queue(repository, 1)
        outbox = Outbox(repository, lambda _mail: None, _sender, loop_token=LOOP_TOKEN)
        assert outbox.send_due() == SendReport()
        assert outbox.send_due() == SendReport()
        (mail,) = repository.claim_outgoing(
            T0 + dt.timedelta(days=3650), owner="x", lease=dt.timedelta(1)
        )
    assert (mail.message_id, mail.status, mail.attempts) == (message_id, OutboxStatus.PENDING, 0)


def test_a_pass_claims_a_batch_at_a_time_so_others_share_a_long_queue(tmp_path: Path) -> None:
    """While the first batch is sent, the mail behind it is free for another sender."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, CLAIM_BATCH + 20)
        taken_by_other: list[OutboxMail] = []

        def other_sender_claims_meanwhile(_email: OutgoingEmail) -> None:
            if not taken_by_other:
                taken_by_other.extend(
                    repository.claim_outgoing(utcnow(), owner="other", lease=dt.timedelta(1))
                )

        transport = MemoryTransport(other_sender_claims_meanwhile)
        outbox = Outbox(repository, transport, _sender, loop_token=LOOP_TOKEN)
        assert outbox.send_due() == SendReport(sent=CLAIM_BATCH)
    sent = [mail.message_id for mail in transport.sent]
    assert sent == queued[:CLAIM_BATCH]
    assert [mail.message_id for mail in taken_by_other] == queued[CLAIM_BATCH:]


def test_immediate_retries_do_not_crowd_out_the_mail_behind_them(tmp_path: Path) -> None:
    """A batch of mail retried at once is tried once per pass; the mail after it still goes."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, CLAIM_BATCH + 5)
        failing = set(queued[:CLAIM_BATCH])

        def refuse_the_first_batch(mail: OutgoingEmail) -> None:
            if mail.message_id in failing:
                raise TransientTransportError("421 try again")

        transport = MemoryTransport(refuse_the_first_batch)
        outbox = Outbox(
            repository,
            transport,
            _sender,
            loop_token=LOOP_TOKEN,
            backoff=Backoff(base_seconds=0, cap_seconds=0),
        )
        report = outbox.send_due()
    assert report == SendReport(sent=5, retrying=CLAIM_BATCH)
    assert [m.message_id for m in transport.sent] == queued[CLAIM_BATCH:]
    assert Counter(m.message_id for m in transport.attempts) == Counter(queued)


def test_a_pass_that_stops_at_its_limit_leaves_no_mail_claimed_for_others(
    tmp_path: Path,
) -> None:
    """1,200 queued, a pass of at most 1,000: the other 200 are free for another sender at once."""
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, 1_200)
        first = Outbox(repository, MemoryTransport(), _sender, loop_token=LOOP_TOKEN)
        assert first.send_due(limit=1_000) == SendReport(sent=1_000)
        second_transport = MemoryTransport()
        second = Outbox(repository, second_transport, _sender, loop_token=LOOP_TOKEN)
        assert second.send_due() == SendReport(sent=200)
    assert [mail.message_id for mail in second_transport.sent] == queued[1_000:]


def test_one_processor_sends_each_mail_once_when_two_threads_ask_it_to_send(
    tmp_path: Path,
) -> None:
    """A second send pass asked of a processor while one runs (a threaded worker pool)
    sends nothing itself: every mail reaches the transport once."""
    first_send_started, let_it_finish = threading.Event(), threading.Event()

    def hold_the_first_send(_email: OutgoingEmail) -> None:
        if not first_send_started.is_set():
            first_send_started.set()
            assert let_it_finish.wait(30)

    transport = MemoryTransport(hold_the_first_send)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        queued = _queue(repository, 5)
        processor = MailProcessor(
            repository,
            [Mailbox(MemoryConnector("Support", []))],
            ProcessorSettings(loop_token=LOOP_TOKEN, domain="helpdesk.example"),
            transport=transport,
        )
        reports: list[SendReport] = []
        running = threading.Thread(target=lambda: reports.append(processor.send_outbox()))
        running.start()
        assert first_send_started.wait(30)
        assert processor.send_outbox() == SendReport()  # the pass under way sends them
        let_it_finish.set()
        running.join(30)
    assert reports == [SendReport(sent=5)]
    assert sorted(mail.message_id for mail in transport.sent) == sorted(queued)
