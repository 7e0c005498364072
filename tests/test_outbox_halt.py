"""Issue 13, item 4: a wrong SMTP password (or TLS failure) stops the pass, loudly.

Before: every queued mail failed for good, with one login per mail, and ``run`` said
all was well. Now the first refused login stops sending through that transport, the
mail stays pending, the transport is not tried again before a backoff ends (in this
process and in the next one), and the run's report is not ok.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from halomail.backends.base import OutgoingEmail
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.backends.smtp import SmtpTransport
from halomail.errors import TransportConfigError
from halomail.outbound.outbox import HALTS_STATE, Outbox, SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import NewOutgoing, OutboxMail, OutboxStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import HELPDESK, make_email
from tests.servers.smtp import SmtpServer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        """The current time."""
        return self.now


def _transport(server: SmtpServer, password: str) -> SmtpTransport:
    return SmtpTransport(
        server.host,
        server.port,
        security="starttls",
        username=server.username,
        password=password,
        tls_ca_file=server.ca_file,
        timeout=10,
    )


def _processor(
    repository: SQLiteTicketRepository,
    connector: MemoryConnector,
    settings: ProcessorSettings,
    transport: SmtpTransport,
    clock: Clock,
) -> MailProcessor:
    return MailProcessor(
        repository, [Mailbox(connector)], settings, transport=transport, clock=clock
    )


def _statuses(repository: SQLiteTicketRepository, clock: Clock) -> list[OutboxStatus]:
    far = clock.now + dt.timedelta(days=365)
    return [mail.status for mail in repository.due_outgoing(far, limit=100)]


def test_a_refused_password_costs_one_login_and_keeps_the_mail_pending(
    smtp_server: SmtpServer, settings: ProcessorSettings, tmp_path: Path
) -> None:
    """5 queued mails, wrong password: 1 login, 5 pending, not ok; fixed: 5 sent once."""
    clock = Clock()
    repository = SQLiteTicketRepository(tmp_path / "halomail.db", clock=clock)
    connector = MemoryConnector("Support")
    for n in range(5):
        connector.add(
            make_email(
                sender=f"Customer {n} <c{n}@customer.example>",
                subject=f"Problem {n}",
                message_id=f"<p{n}@customer.example>",
            )
        )
    wrong = _processor(repository, connector, settings, _transport(smtp_server, "wrong"), clock)
    report = wrong.run_once()
    assert len(smtp_server.auth_attempts) == 1
    assert report.sent.sent == 0
    assert report.sent.failed == 0
    assert len(report.sent.halted) == 1
    assert "535" in report.sent.halted[0]
    assert not report.ok
    assert _statuses(repository, clock) == [OutboxStatus.PENDING] * 5

    # The next pass, a minute later, does not log in again: the backoff has not ended.
    clock.now += dt.timedelta(seconds=30)
    again = wrong.run_once()
    assert len(smtp_server.auth_attempts) == 1
    assert again.sent.sent == 0
    wrong.close()

    # The password fixed, in a new process (a new processor) once the backoff is over.
    clock.now += dt.timedelta(hours=2)
    right = _processor(
        repository, connector, settings, _transport(smtp_server, smtp_server.password), clock
    )
    fixed = right.run_once()
    right.close()
    assert fixed.sent.sent == 5
    assert fixed.ok
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"c{n}@customer.example" for n in range(5)
    ]
    assert _statuses(repository, clock) == []
    # The halt is forgotten once a mail went through.
    assert json.loads(repository.get_state(HALTS_STATE) or "{}") == {}
    repository.close()


def test_a_halt_is_kept_across_processes_and_backs_off(tmp_path: Path) -> None:
    """A second Outbox on the same repository skips the halted transport until its time."""
    clock = Clock()
    repository = SQLiteTicketRepository(tmp_path / "halomail.db", clock=clock)
    for n in range(3):
        repository.enqueue_outgoing(
            NewOutgoing(
                message_id=f"m{n}@helpdesk.example", to=("x@example.com",), subject="s", text="t"
            )
        )
    refusing = True

    def login(_email: OutgoingEmail) -> None:
        if refusing:
            raise TransportConfigError("smtp relay: AUTH PLAIN failed: 535 5.7.8 refused")

    transport = MemoryTransport(login)

    def sender(_mail: OutboxMail) -> SenderIdentity:
        return SenderIdentity(HELPDESK)

    def outbox() -> Outbox:
        return Outbox(repository, transport, sender, loop_token="t", clock=clock)

    first = outbox().send_due()
    assert len(transport.attempts) == 1
    assert first.halted
    until = dt.datetime.fromisoformat(
        json.loads(repository.get_state(HALTS_STATE) or "")[repr(transport)][1]
    )
    assert until > clock.now

    clock.now = until - dt.timedelta(seconds=1)
    waiting = outbox().send_due()
    assert len(transport.attempts) == 1  # another process did not try before the time
    assert ["sending stopped until" in line for line in waiting.halted] == [True]

    clock.now = until + dt.timedelta(minutes=6)  # the first pass's claims have lapsed too
    second = outbox().send_due()
    assert second.halted
    assert len(transport.attempts) == 2
    later = dt.datetime.fromisoformat(
        json.loads(repository.get_state(HALTS_STATE) or "")[repr(transport)][1]
    )
    # The second halt in a row waits longer than the first (60 s, then 120 s, ±20%).
    assert later - clock.now > dt.timedelta(seconds=90)

    refusing = False
    clock.now = later + dt.timedelta(minutes=6)
    done = outbox().send_due()
    assert done.sent == 3
    assert not done.halted
    assert len(transport.sent) == 3
    assert json.loads(repository.get_state(HALTS_STATE) or "") == {}  # a send ends the halt
    repository.close()


@pytest.mark.parametrize("step", ["login", "certificate", "auth-required"])
def test_smtp_sorts_login_and_tls_failures_as_configuration_errors(
    smtp_server_factory: Callable[..., SmtpServer], step: str
) -> None:
    """A refused password, an untrusted certificate and a 530 raise TransportConfigError."""
    server = smtp_server_factory("starttls", auth=True)
    if step == "certificate":  # the test CA is not among the system's: not trusted
        transport = SmtpTransport(server.host, server.port, security="starttls", timeout=10)
    elif step == "login":
        transport = _transport(server, "wrong")
    else:  # no username: the server's 530 at MAIL FROM
        transport = SmtpTransport(
            server.host, server.port, security="starttls", tls_ca_file=server.ca_file, timeout=10
        )
    mail = OutgoingEmail(
        message_id="m@helpdesk.example",
        envelope_from=HELPDESK,
        recipients=("x@example.com",),
        data=b"Subject: s\r\n\r\nbody\r\n",
    )
    with pytest.raises(TransportConfigError):
        transport.send(mail)
    assert server.messages == []
