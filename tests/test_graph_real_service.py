"""Microsoft Graph as the real service behaves (#16): ambiguous sends, size limits, German
folder names, partial and replayed delta entries, server-requested waits.

Each test runs halomail's connector or transport (httpx) against the local Graph endpoint
of ``tests/servers/graph.py``, armed with the behaviour of the real service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import Disposition, OutgoingEmail, SentLookup
from halomail.backends.graph import (
    GRAPH_REQUEST_LIMIT,
    GraphConnector,
    GraphRetry,
    GraphTransport,
)
from halomail.config.loader import load_config
from halomail.errors import (
    AmbiguousSendError,
    ConfigError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
    TransportConfigError,
)
from halomail.outbound.outbox import SenderIdentity, compose
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.graph import REQUEST_LIMIT, GraphServer, GraphState, running_graph_server

SUPPORT = "support@contoso.example"
KUNDEN = "kundendienst@contoso.example"
GOOD_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.graph-access-token.c2ln"


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


@pytest.fixture
def state(graph: GraphServer) -> GraphState:
    """A fresh store: an English support mailbox and a German one."""
    store = GraphState(tokens={GOOD_TOKEN})
    store.mailbox(SUPPORT)
    store.mailbox(KUNDEN, language="de")
    graph.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the connectors asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def connect(graph: GraphServer, sleeps: list[float]) -> Iterator[Callable[..., GraphConnector]]:
    """Build connectors on the local endpoint; closed afterwards."""
    built: list[GraphConnector] = []

    def build(name: str = "Support", **options: object) -> GraphConnector:
        settings: dict[str, object] = {
            "user_id": SUPPORT,
            "token_provider": StaticTokenProvider(GOOD_TOKEN),
            "base_url": graph.url,
            "retry": GraphRetry(sleep=sleeps.append),
        }
        settings.update(options)
        connector = GraphConnector(name, **settings)  # type: ignore[arg-type]
        built.append(connector)
        return connector

    yield build
    for connector in built:
        connector.close()


@pytest.fixture
def transport(graph: GraphServer, sleeps: list[float]) -> Iterator[GraphTransport]:
    """A transport sending as the support mailbox; closed afterwards."""
    sender = GraphTransport(
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GOOD_TOKEN),
        base_url=graph.url,
        retry=GraphRetry(sleep=sleeps.append),
    )
    yield sender
    sender.close()


def _outgoing(text: str = "We have logged your request.", number: int = 7) -> OutgoingEmail:
    mail = OutboxMail(
        id=number,
        message_id=f"halomail.{number}.abc@helpdesk.example",
        to=("alice@customer.example",),
        subject=f"[ID:{number}] Printer is jammed",
        text=text,
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
        ticket_id=number,
    )
    return compose(mail, SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)


def _deliver(
    state: GraphState, count: int, user: str = SUPPORT, folder: str = "inbox"
) -> list[str]:
    return [
        state.deliver(
            user,
            make_email(subject=f"Ticket {n}", message_id=f"<graph-{n}@customer.example>"),
            folder=folder,
        )
        for n in range(count)
    ]


# -- sending: exactly once -------------------------------------------------------------


@pytest.mark.parametrize("status", [0, 500, 503, 504])
def test_a_send_delivered_before_its_answer_failed_is_ambiguous_and_found_in_sent_items(
    state: GraphState, transport: GraphTransport, status: int
) -> None:
    """sendMail that delivered, then lost its answer, raises AmbiguousSendError, once sent."""
    state.fail("POST", "/sendMail", status, after=True, times=3)
    outgoing = _outgoing()

    with pytest.raises(AmbiguousSendError):
        transport.send(outgoing)

    assert len(state.sent) == 1  # never repeated inside the call
    assert transport.was_sent(outgoing.message_id)
    assert not transport.was_sent("halomail.8.never@helpdesk.example")


def test_a_send_that_timed_out_after_delivery_is_ambiguous(
    state: GraphState, graph: GraphServer, sleeps: list[float]
) -> None:
    """sendMail delivered but answered after the client's timeout: ambiguous, sent once."""
    state.fail("POST", "/sendMail", 504, after=True, stall=2.0)
    sender = GraphTransport(
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GOOD_TOKEN),
        base_url=graph.url,
        timeout=0.2,
        retry=GraphRetry(sleep=sleeps.append),
    )
    outgoing = _outgoing()
    try:
        with pytest.raises(AmbiguousSendError) as caught:
            sender.send(outgoing)
    finally:
        sender.close()
    assert "did not answer within 0.2 s" in str(caught.value)
    assert len(state.sent) == 1
    assert sleeps == []


def test_a_send_that_cannot_connect_is_plainly_transient() -> None:
    """A refused connection sent nothing: TransientTransportError, not ambiguous."""
    with running_graph_server() as closed:
        url = closed.url  # the port is free again once this server stops
    sender = GraphTransport(
        user_id=SUPPORT, token_provider=StaticTokenProvider(GOOD_TOKEN), base_url=url
    )
    try:
        with pytest.raises(TransientTransportError) as caught:
            sender.send(_outgoing())
    finally:
        sender.close()
    assert type(caught.value) is TransientTransportError


def test_the_graph_transport_is_a_sent_lookup_that_finds_only_its_own_sent_mail(
    state: GraphState, transport: GraphTransport
) -> None:
    """was_sent searches Sent Items by internetMessageId: a mail in the inbox does not count."""
    outgoing = _outgoing()
    state.deliver(SUPPORT, outgoing.data, folder="inbox")
    assert isinstance(transport, SentLookup)
    assert not transport.was_sent(outgoing.message_id)
    transport.send(outgoing)
    assert transport.was_sent(f"<{outgoing.message_id}>")


def test_a_failed_lookup_of_sent_mail_is_transient_with_the_wait_asked(
    state: GraphState, transport: GraphTransport
) -> None:
    """A throttled Sent Items search raises TransientTransportError with Graph's Retry-After."""
    state.fail("GET", "/sentitems/messages", 429, retry_after="600")
    with pytest.raises(TransientTransportError) as caught:
        transport.was_sent("halomail.7.abc@helpdesk.example")
    assert caught.value.retry_after == 600.0


def test_a_send_throttled_with_429_is_waited_out_and_sent_once(
    state: GraphState, transport: GraphTransport, sleeps: list[float]
) -> None:
    """A 429 means Graph did nothing: waiting and sending again delivers exactly one copy."""
    state.fail("POST", "/sendMail", 429, retry_after="3")
    transport.send(_outgoing())
    assert sleeps == [3.0]
    assert len(state.sent) == 1


def test_a_5xx_send_is_not_retried_inside_the_call_and_carries_the_wait(
    state: GraphState, transport: GraphTransport, sleeps: list[float]
) -> None:
    """A 503 with Retry-After after delivery: one copy, no sleep, the wait on the error."""
    state.fail("POST", "/sendMail", 503, after=True, retry_after="240")
    with pytest.raises(AmbiguousSendError) as caught:
        transport.send(_outgoing())
    assert caught.value.retry_after == 240.0
    assert sleeps == []
    assert len(state.sent) == 1


@pytest.mark.parametrize(
    ("status", "error"), [(200, AmbiguousSendError), (302, TransportConfigError)]
)
def test_send_requires_exactly_202_accepted(
    state: GraphState, transport: GraphTransport, status: int, error: type[Exception]
) -> None:
    """An answer below 400 other than sendMail's 202 is not taken for a successful send."""
    state.fail("POST", "/sendMail", status)
    with pytest.raises(error) as caught:
        transport.send(_outgoing())
    assert type(caught.value) is error
    assert str(status) in str(caught.value)


# -- sending: size limits --------------------------------------------------------------


def test_the_fake_refuses_a_request_over_four_megabytes_like_graph(
    state: GraphState, graph: GraphServer
) -> None:
    """A request body over 4 MB is answered 413, whatever the endpoint."""
    body = b"A" * (REQUEST_LIMIT + 1)
    answer = httpx.post(
        f"{graph.url}/users/{SUPPORT}/sendMail",
        content=body,
        headers={"Authorization": f"Bearer {GOOD_TOKEN}", "Content-Type": "text/plain"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "RequestEntityTooLarge"
    assert state.sent == []


def test_a_text_over_the_request_limit_fails_permanently_before_any_request(
    state: GraphState, transport: GraphTransport
) -> None:
    """A 3.2 MB text (4.3 MB as base64, no attachment to upload apart) is refused at once."""
    outgoing = _outgoing(text="x" * 3_200_000)
    with pytest.raises(PermanentTransportError) as caught:
        transport.send(outgoing)
    assert type(caught.value) is PermanentTransportError
    assert f"{GRAPH_REQUEST_LIMIT} byte request limit" in str(caught.value)
    assert state.requests == []


def test_mail_just_under_the_request_limit_is_sent(
    state: GraphState, transport: GraphTransport
) -> None:
    """A 2.9 MB mail fits Graph's 4 MB request as base64 and is delivered whole."""
    outgoing = _outgoing(text="x" * 2_900_000)
    transport.send(outgoing)
    (sent,) = state.sent
    assert sent.mime == outgoing.data


# -- folders in a German mailbox -------------------------------------------------------


def test_a_german_mailbox_files_processed_and_quarantined_mail_under_posteingang(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """Inbox/Done and Inbox/Quarantine resolve under Posteingang; no top-level Inbox appears."""
    ids = _deliver(state, 2, user=KUNDEN)
    connector = connect(
        user_id=KUNDEN, processed="move:Inbox/Done", quarantine_folder="Inbox/Quarantine"
    )
    assert [m.ref for m in connector.fetch()] == ids

    connector.ack(ids[0], Disposition.PROCESSED)
    connector.ack(ids[1], Disposition.QUARANTINED)

    assert [m.id for m in state.in_folder(KUNDEN, "Posteingang/Done")] == [ids[0]]
    assert [m.id for m in state.in_folder(KUNDEN, "Posteingang/Quarantine")] == [ids[1]]
    assert state.folder_named(KUNDEN, "Inbox") is None


def test_a_folder_under_the_inbox_is_read_in_a_german_mailbox(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """folder = "Inbox/Support" reads Posteingang/Support, the folder the mailbox's user made."""
    support = state.add_folder(KUNDEN, "Support", parent="inbox")
    ids = _deliver(state, 2, user=KUNDEN, folder=support)
    _deliver(state, 1, user=KUNDEN)  # in Posteingang itself: not read
    connector = connect(user_id=KUNDEN, folder="Inbox/Support")

    assert [m.ref for m in connector.fetch()] == ids
    assert connector.probe().messages == 2


# -- delta as the service sends it -----------------------------------------------------


def test_an_updated_entry_keeps_the_known_arrival_time_and_size(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A partial "updated" entry (isRead only) neither reorders a message nor downloads it."""
    small = state.deliver(SUPPORT, make_email(subject="small", message_id="<s@customer.example>"))
    large = state.deliver(
        SUPPORT, make_email(subject="large", body="y" * 20_000, message_id="<l@customer.example>")
    )
    connector = connect(max_message_bytes=10_000)
    first = list(connector.fetch())  # left for retry: nothing acknowledged
    assert [(m.ref, m.too_large) for m in first] == [(small, False), (large, True)]

    state.touch(large, isRead=True)
    second = list(connector.fetch())

    assert [(m.ref, m.too_large) for m in second] == [(small, False), (large, True)]
    assert second[1].size == first[1].size
    assert state.calls("GET", f"{large}/$value") == []


def test_a_message_moved_away_reported_as_an_update_is_not_read_again(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """An entry whose parentFolderId is another folder counts as gone from the source."""
    state.moves_as_updates = True
    ids = _deliver(state, 2)
    connector = connect()
    assert [m.ref for m in connector.fetch()] == ids
    other = connect("Other runner")
    other.ack(ids[0], Disposition.PROCESSED)  # another client took it meanwhile

    assert [m.ref for m in connector.fetch()] == [ids[1]]
    assert len(state.calls("GET", f"{ids[0]}/$value")) == 1


def test_a_replayed_entry_for_a_message_already_moved_is_neither_read_nor_moved(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """Delta sending a stale entry again does not make halomail read or move it twice."""
    state.replay_delta = True
    (moved,) = _deliver(state, 1)
    connector = connect()
    assert [m.ref for m in connector.fetch()] == [moved]
    connector.ack(moved, Disposition.PROCESSED)
    later = _deliver(state, 1)

    assert [m.ref for m in connector.fetch()] == later
    assert [m.ref for m in connector.fetch()] == later  # the replay of that round too
    assert len(state.calls("GET", f"{moved}/$value")) == 1
    assert len(state.calls("POST", f"{moved}/move")) == 1
    assert [m.id for m in state.in_folder(SUPPORT, "deleteditems")] == [moved]


def test_a_message_moved_back_into_the_folder_is_read_again(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A message disposed of and put back by a user is new work, not a stale replay."""
    (ref,) = _deliver(state, 1)
    connector = connect()
    assert [m.ref for m in connector.fetch()] == [ref]
    connector.ack(ref, Disposition.PROCESSED)
    assert list(connector.fetch()) == []
    state.messages[ref].folder = state.well_known(SUPPORT, "inbox").id  # type: ignore[union-attr]
    state.touch(ref)

    assert [m.ref for m in connector.fetch()] == [ref]


def test_the_replay_memory_survives_the_sync_state(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """Another process continuing from the exported state ignores the replay as well."""
    state.replay_delta = True
    (moved,) = _deliver(state, 1)
    first = connect()
    assert [m.ref for m in first.fetch()] == [moved]
    first.ack(moved, Disposition.PROCESSED)
    second = connect()
    second.restore_sync_state(first.export_sync_state())

    assert list(second.fetch()) == []
    assert len(state.calls("GET", f"{moved}/$value")) == 1


def test_a_5xx_from_delta_with_the_size_property_is_retried_without_it(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """Graph failing every $expand query with 500 no longer ends the run: sizes are dropped."""
    state.fail("GET", "$expand=singleValueExtendedProperties", 500, times=100)
    ids = _deliver(state, 2)
    connector = connect(max_message_bytes=1_000_000)

    assert [m.ref for m in connector.fetch()] == ids
    more = _deliver(state, 1)
    assert [m.ref for m in connector.fetch()] == [*ids, *more]


def test_without_delta_the_folder_is_listed_and_no_delta_query_is_made(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """delta = false (national clouds) lists the folder each run."""
    ids = _deliver(state, 2)
    connector = connect(delta=False)
    assert [m.ref for m in connector.fetch()] == ids
    assert [m.ref for m in connector.fetch()] == ids
    assert state.calls("GET", "/delta") == []


def test_delta_and_size_property_are_read_from_halomail_toml(
    state: GraphState, graph: GraphServer, tmp_path: Path
) -> None:
    """The office365 keys delta and size_property reach the connector; a wrong type is named."""
    config_file = tmp_path / "halomail.toml"
    mailbox = f"""
[[mailboxes]]
name = "Support"
connection = "office365"
host = "{graph.url}"
user_id = "{SUPPORT}"
token_env = "GRAPH_TOKEN"
"""
    config_file.write_text(mailbox + "delta = false\nsize_property = false\n", encoding="utf-8")
    config = load_config(config_file, env={"GRAPH_TOKEN": GOOD_TOKEN})
    connector = GraphConnector.from_settings(config.mailboxes[0], max_message_bytes=1_000_000)
    try:
        assert (connector.delta, connector.size_property) == (False, False)
        ids = _deliver(state, 1)
        assert [m.ref for m in connector.fetch()] == ids
        assert state.calls("GET", "/delta") == []
        assert all("$expand" not in r.query for r in state.calls("GET"))
    finally:
        connector.close()

    config_file.write_text(mailbox + 'delta = "no"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        GraphConnector.from_settings(
            load_config(config_file, env={"GRAPH_TOKEN": GOOD_TOKEN}).mailboxes[0],
            max_message_bytes=None,
        )
    assert caught.value.key_path == "mailboxes[0].delta"


# -- waits the service asks for --------------------------------------------------------


def test_a_long_retry_after_ends_the_run_with_the_wait_kept_on_the_error(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """A 429 asking for 600 s is not slept through: the error carries it for the next run."""
    _deliver(state, 1)
    state.fail("GET", "/delta", 429, retry_after="600")
    with pytest.raises(TransientConnectorError) as caught:
        list(connect().fetch())
    assert caught.value.retry_after == 600.0
    assert sleeps == []


def test_throttling_past_patience_carries_the_last_wait(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """503s past max_attempts end the run with the last Retry-After on the error."""
    _deliver(state, 1)
    state.fail("GET", "/delta", 503, retry_after="7", times=2)
    connector = connect(retry=GraphRetry(sleep=sleeps.append, max_attempts=2))
    with pytest.raises(TransientConnectorError) as caught:
        list(connector.fetch())
    assert caught.value.retry_after == 7.0
    assert sleeps == [7.0]


def test_a_504_is_waited_out_like_a_503(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """A gateway timeout on a read is retried after the wait asked, and nothing is lost."""
    ids = _deliver(state, 2)
    state.fail("GET", f"{ids[1]}/$value", 504, retry_after="5")
    assert [m.ref for m in connect().fetch()] == ids
    assert sleeps == [5.0]


def test_a_throttled_send_past_patience_carries_the_wait(
    state: GraphState, graph: GraphServer, sleeps: list[float]
) -> None:
    """429 on sendMail past max_attempts: TransientTransportError (not ambiguous), with the wait."""
    state.fail("POST", "/sendMail", 429, retry_after="300")
    sender = GraphTransport(
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GOOD_TOKEN),
        base_url=graph.url,
        retry=GraphRetry(sleep=sleeps.append),
    )
    try:
        with pytest.raises(TransientTransportError) as caught:
            sender.send(_outgoing())
    finally:
        sender.close()
    assert type(caught.value) is TransientTransportError
    assert caught.value.retry_after == 300.0
    assert state.sent == []
