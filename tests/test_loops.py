"""O4: two helpdesks answering each other stop within the throttle.

The peer here is the worst kind: it answers every email it receives at once, with a
fresh Message-ID, no ``Auto-Submitted``, no ``Precedence`` and no list headers, so
nothing marks its answers as automatic. Only our throttle can end the exchange.
"""

from __future__ import annotations

import datetime as dt
import email
from collections.abc import Callable
from email.policy import compat32

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email

PEER = "robot@other-helpdesk.example"
THROTTLE = 10


class Peer:
    """Another helpdesk that acknowledges every email it receives, without auto headers."""

    def __init__(self, connector: MemoryConnector, *, keep_our_tag: bool) -> None:
        self.connector = connector
        self.keep_our_tag = keep_our_tag
        self.answered = 0

    def answer(self, transport: MemoryTransport, seen: int) -> int:
        """Answer every mail sent to the peer since ``seen``; return the new count."""
        for outgoing in transport.sent[seen:]:
            if PEER not in outgoing.recipients:
                continue
            self.answered += 1
            ours = email.message_from_bytes(outgoing.data, policy=compat32)
            subject = str(ours["Subject"])
            if not self.keep_our_tag:
                # Many systems rewrite the subject with their own tag and drop ours.
                subject = subject.split("] ", 1)[-1]
            self.connector.add(
                make_email(
                    sender=f"Other Helpdesk <{PEER}>",
                    subject=f"[Case #{self.answered}] Re: {subject}",
                    body="Thank you, we have received your message and opened a case.\n",
                    message_id=f"<case-{self.answered}@other-helpdesk.example>",
                )
            )
        return len(transport.sent)


@pytest.fixture
def clock() -> Callable[[], dt.datetime]:
    """A clock that moves five seconds on every reading, as a real exchange would."""
    now = [dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)]

    def read() -> dt.datetime:
        now[0] += dt.timedelta(seconds=5)
        return now[0]

    return read


@pytest.mark.parametrize("keep_our_tag", [True, False], ids=["tag-kept", "tag-dropped"])
def test_o4_a_helpdesk_answering_everything_gets_at_most_the_throttle(
    repository: TicketRepository,
    settings: ProcessorSettings,
    clock: Callable[[], dt.datetime],
    keep_our_tag: bool,
) -> None:
    """O4: however long the peer keeps answering, we send it at most the throttle's N mails."""
    connector = MemoryConnector("Support")
    transport = MemoryTransport()
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        settings,
        transport=transport,
        clock=clock,
    )
    peer = Peer(connector, keep_our_tag=keep_our_tag)
    connector.add(
        make_email(
            sender=f"Other Helpdesk <{PEER}>",
            subject="Status of order 1138",
            message_id="<first@other-helpdesk.example>",
        )
    )
    seen = 0
    for _cycle in range(40):
        processor.run_once()
        seen = peer.answer(transport, seen)
    to_peer = [mail for mail in transport.sent if PEER in mail.recipients]
    # With our tag kept, its answers are updates of ticket 1, which are not acknowledged;
    # without it, each answer is a new ticket until the per-sender throttle says no.
    assert len(to_peer) == (1 if keep_our_tag else THROTTLE)
    assert len(repository.list_tickets(limit=1000)) == (1 if keep_our_tag else THROTTLE + 1)
    # The exchange is over: the peer has nothing left to answer and its mailbox is empty.
    assert peer.answered == len(to_peer)
    assert connector.remaining == []
