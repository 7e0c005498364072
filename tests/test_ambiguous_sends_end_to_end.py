"""Issue 16, end to end: an acknowledgement sent through a cloud API reaches the customer once.

A customer writes; the processor opens a ticket and sends the acknowledgement through
the real Graph, Gmail or EWS transport (msal-free static tokens, the real client
libraries) to the local test server of ``tests/servers/``. That server fails the
answer to the send: once *after* carrying it out (the mail went), once *before* (it
did not). Either way the first run leaves the mail "maybe sent"; the next run looks
among the mailbox's sent mail and either marks it sent without sending it again, or
sends it. The customer ends up with exactly one copy, and the outbox says sent.
The repository is a real SQLite file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import attrs
import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.ews import EwsRetry, EwsTransport
from halomail.backends.gmail import GmailRetry, GmailTransport
from halomail.backends.graph import GraphRetry, GraphTransport
from halomail.backends.memory import MemoryConnector
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import OutboxStatus
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email
from tests.servers.ews import EwsState, running_ews_server
from tests.servers.gmail import GmailState, running_gmail_server
from tests.servers.graph import GraphState, running_graph_server

SUPPORT = "support@helpdesk.example"
TOKEN = "eyJ0eXAi.end-to-end-token.sig"
LOGIN, PASSWORD = "svc-halomail", "Pa55-w0rd-never-logged"
T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
LATER = dt.timedelta(hours=3)  # past the outbox's backoff after the first attempt


class Service(Protocol):
    """One cloud service behind its local test server, as these tests need it."""

    transport: GraphTransport | GmailTransport | EwsTransport

    def fail_next_send(self, *, carried_out: bool) -> None:
        """Make the next send answer with a 500, after or before carrying it out."""

    def copies(self, message_id: str) -> int:
        """How many copies of ``message_id`` the service sent."""


@attrs.define
class Graph:
    """Microsoft Graph: ``sendMail``, looked up in Sent Items by internetMessageId."""

    state: GraphState
    transport: GraphTransport

    def fail_next_send(self, *, carried_out: bool) -> None:
        """A 500 on ``sendMail``."""
        self.state.fail("POST", "/sendMail", 500, after=carried_out)

    def copies(self, message_id: str) -> int:
        """Sends that carried ``message_id``."""
        return sum(message_id.encode() in sent.mime for sent in self.state.sent)


@attrs.define
class Gmail:
    """The Gmail API: ``messages.send`` by upload, looked up with ``rfc822msgid:``."""

    state: GmailState
    transport: GmailTransport

    def fail_next_send(self, *, carried_out: bool) -> None:
        """A 500 on ``messages.send``."""
        self.state.fail("POST", "/messages/send", 500, applied=carried_out)

    def copies(self, message_id: str) -> int:
        """Messages under SENT with that Message-ID."""
        return len(self.state.sent_with(SUPPORT, message_id))


@attrs.define
class Ews:
    """Exchange Web Services: ``CreateItem`` with SendAndSaveCopy, looked up in Sent Items."""

    state: EwsState
    transport: EwsTransport

    def fail_next_send(self, *, carried_out: bool) -> None:
        """An HTTP 500 on ``CreateItem``."""
        self.state.fail("CreateItem", "http500", after=carried_out)

    def copies(self, message_id: str) -> int:
        """Sends that carried ``message_id``."""
        return sum(message_id.encode() in sent.mime for sent in self.state.sent)


def _graph() -> Iterator[Service]:
    with running_graph_server() as server:
        state = GraphState(tokens={TOKEN})
        state.mailbox(SUPPORT)
        server.state = state
        transport = GraphTransport(
            user_id=SUPPORT,
            token_provider=StaticTokenProvider(TOKEN),
            base_url=server.url,
            retry=GraphRetry(sleep=lambda _seconds: None),
        )
        try:
            yield Graph(state, transport)
        finally:
            transport.close()


def _gmail() -> Iterator[Service]:
    with running_gmail_server() as server:
        state = GmailState(tokens={TOKEN: SUPPORT})
        state.mailbox(SUPPORT)
        server.state = state
        transport = GmailTransport(
            token_provider=StaticTokenProvider(TOKEN),
            api_endpoint=server.url,
            retry=GmailRetry(sleep=lambda _seconds: None),
        )
        try:
            yield Gmail(state, transport)
        finally:
            transport.close()


def _ews() -> Iterator[Service]:
    with running_ews_server() as server:
        state = EwsState(users={LOGIN: PASSWORD})
        state.mailbox(SUPPORT)
        server.state = state
        transport = EwsTransport(
            endpoint=server.url,
            address=SUPPORT,
            username=LOGIN,
            password=PASSWORD,
            retry=EwsRetry(sleep=lambda _seconds: None),
        )
        try:
            yield Ews(state, transport)
        finally:
            transport.close()


SERVICES: dict[str, Callable[[], Iterator[Service]]] = {
    "graph": _graph,
    "gmail": _gmail,
    "ews": _ews,
}


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """Each cloud service in turn, its local server running."""
    yield from SERVICES[request.param]()


@pytest.mark.parametrize("carried_out", [True, False], ids=["went", "did-not-go"])
def test_an_acknowledgement_answered_by_a_500_reaches_the_customer_exactly_once(
    tmp_path: Path, service: Service, carried_out: bool
) -> None:
    """A 500 on the send: maybe sent, then one copy in all, and the outbox says sent."""
    now = [T0]
    repository = SQLiteTicketRepository(tmp_path / "halomail.db", clock=lambda: now[0])
    connector = MemoryConnector("Support")
    connector.add(
        make_email(
            sender="Alice <alice@customer.example>",
            subject="Printer is jammed",
            message_id="<jam-1@customer.example>",
        )
    )
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        ProcessorSettings(loop_token="t" * 32, domain="helpdesk.example"),
        transport=service.transport,
        clock=lambda: now[0],
    )
    try:
        service.fail_next_send(carried_out=carried_out)
        first = processor.run_once()
        (mail,) = repository.list_outgoing()
        assert (first.sent.sent, first.sent.maybe_sent) == (0, 1)
        assert mail.maybe_sent
        assert service.copies(mail.message_id) == (1 if carried_out else 0)

        now[0] += LATER
        second = processor.run_once()
        (mail,) = repository.list_outgoing()
        assert second.sent.sent == 1
        assert mail.status is OutboxStatus.SENT
        assert service.copies(mail.message_id) == 1

        now[0] += LATER
        third = processor.run_once()
        assert third.sent.sent == 0
        assert service.copies(mail.message_id) == 1
    finally:
        processor.close()
        repository.close()
