"""Microsoft 365 through Microsoft Graph: httpx (and msal) against a local Graph endpoint."""

from __future__ import annotations

import base64
import datetime as dt
import email
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from halomail.backends.auth.oauth import (
    MICROSOFT_GRAPH_SCOPES,
    MicrosoftTokenProvider,
    StaticTokenProvider,
)
from halomail.backends.base import Disposition, MailTransport
from halomail.backends.graph import GraphConnector, GraphRetry, GraphTransport
from halomail.backends.probe import Channel, probe_channel
from halomail.config.loader import MailboxSettings, OutgoingSettings, load_config
from halomail.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigError,
    ConnectorError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
    TransportConfigError,
)
from halomail.inbound.classify import loop_signature
from halomail.outbound.outbox import SenderIdentity, compose
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from halomail.tickets.repository import TicketRepository
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.graph import GraphServer, GraphState, running_graph_server
from tests.servers.token_endpoint import TokenEndpoint

SUPPORT = "support@contoso.example"
SALES = "sales@contoso.example"
GOOD_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.graph-access-token.c2ln"
CLIENT_ID = "0b5d2a8e-7d1f-4f7e-9a51-1a2b3c4d5e6f"
CLIENT_SECRET = "Q~s3cr3t-Graph-Client-Secret-never-logged"
PREFER_IMMUTABLE = 'IdType="ImmutableId"'


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


@pytest.fixture
def state(graph: GraphServer) -> GraphState:
    """A fresh store with the support and sales mailboxes and one accepted token."""
    store = GraphState(tokens={GOOD_TOKEN})
    store.mailbox(SUPPORT)
    store.mailbox(SALES)
    graph.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the connectors asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def connect(graph: GraphServer, sleeps: list[float]) -> Iterator[Callable[..., GraphConnector]]:
    """Build connectors for the support mailbox on the local endpoint; closed afterwards."""
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
def send_as(graph: GraphServer, sleeps: list[float]) -> Iterator[Callable[..., GraphTransport]]:
    """Build transports sending as the support mailbox; closed afterwards."""
    built: list[GraphTransport] = []

    def build(**options: object) -> GraphTransport:
        settings: dict[str, object] = {
            "user_id": SUPPORT,
            "token_provider": StaticTokenProvider(GOOD_TOKEN),
            "base_url": graph.url,
            "retry": GraphRetry(sleep=sleeps.append),
        }
        settings.update(options)
        transport = GraphTransport(**settings)  # type: ignore[arg-type]
        built.append(transport)
        return transport

    yield build
    for transport in built:
        transport.close()


def _processor(
    repository: TicketRepository,
    *connectors: GraphConnector,
    transport: MailTransport | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> MailProcessor:
    return MailProcessor(
        repository,
        [Mailbox(c) for c in connectors],
        ProcessorSettings(
            loop_token=LOOP_TOKEN,
            domain="helpdesk.example",
            default_sender=SenderIdentity(SUPPORT, "Support"),
        ),
        transport=transport,
        clock=clock,
    )


def _deliver(state: GraphState, count: int, user: str = SUPPORT, first: int = 0) -> list[str]:
    return [
        state.deliver(
            user,
            make_email(subject=f"Printer {n} is jammed", message_id=f"<jam-{n}@customer.example>"),
        )
        for n in range(first, first + count)
    ]


def _subjects(repository: TicketRepository) -> list[str]:
    return sorted(t.summary for t in repository.list_tickets())


def _message_ids(state: GraphState, folder: str, user: str = SUPPORT) -> list[str]:
    return [
        str(email.message_from_bytes(m.mime)["Message-ID"]) for m in state.in_folder(user, folder)
    ]


def _microsoft(endpoint: TokenEndpoint, client_id: str = CLIENT_ID) -> MicrosoftTokenProvider:
    return MicrosoftTokenProvider(
        tenant_id=endpoint.tenant,
        client_id=client_id,
        client_secret=CLIENT_SECRET,
        scopes=MICROSOFT_GRAPH_SCOPES,
        authority=endpoint.authority,
        verify=str(endpoint.ca_file),
        mailbox="Support",
    )


# -- reading and disposal --------------------------------------------------------------


def test_three_emails_become_three_tickets_moved_to_deleted_items_and_a_rerun_adds_none(
    state: GraphState,
    connect: Callable[..., GraphConnector],
    send_as: Callable[..., GraphTransport],
    repository: TicketRepository,
) -> None:
    """Three emails become three tickets, move to Deleted Items, and a second run adds none."""
    ids = _deliver(state, 3)
    processor = _processor(repository, connect(page_size=2), transport=send_as())

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert [o.ref for o in report.outcomes] == ids  # the immutable ids, oldest first
    assert _subjects(repository) == [f"Printer {n} is jammed" for n in range(3)]
    assert state.in_folder(SUPPORT, "inbox") == []
    assert [m.id for m in state.in_folder(SUPPORT, "deleteditems")] == ids
    assert len(state.calls("GET", "/messages/delta")) == 2  # paged: 2 + 1
    assert len(state.calls("GET", "/$value")) == 3
    assert [r.query.get("$deltatoken") for r in state.calls("GET", "/delta")] == [None, None]
    assert report.sent.sent == 3  # the acknowledgements went out through sendMail
    assert len(state.sent) == 3
    assert all(PREFER_IMMUTABLE in r.headers["prefer"] for r in state.requests)
    assert all(r.headers["authorization"] == f"Bearer {GOOD_TOKEN}" for r in state.requests)

    state.requests.clear()
    again = processor.run_once()

    assert again.outcomes == ()
    assert again.mailboxes[0].error is None
    # Only the changes since the last round: the three moves out, as @removed entries.
    delta = state.calls("GET", "/delta")
    assert [bool(r.query.get("$deltatoken")) for r in delta] == [True, False]
    assert state.calls("GET", "/$value") == []
    assert len(repository.list_tickets()) == 3


def test_the_oldest_message_comes_first_whatever_order_the_delta_pages_give(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """Messages are yielded by receivedDateTime, across several delta pages."""
    start = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    ids = [
        state.deliver(
            SUPPORT,
            make_email(message_id=f"<m{n}@customer.example>"),
            received=start - dt.timedelta(hours=n),
        )
        for n in range(5)
    ]
    fetched = list(connect(page_size=2).fetch())
    assert [m.ref for m in fetched] == list(reversed(ids))
    assert len(state.calls("GET", "/messages/delta")) == 3
    assert all(m.raw.startswith(b"From: ") for m in fetched)


def test_without_delta_the_folder_is_listed_in_pages_ordered_by_arrival(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """With delta off, the folder is listed each run with $orderby and @odata.nextLink."""
    ids = _deliver(state, 3)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(delta=False, page_size=2))

    report = processor.run_once()

    assert [o.ref for o in report.outcomes] == ids
    listings = [r for r in state.calls("GET", "/mailFolders/") if r.path.endswith("/messages")]
    assert len(listings) == 2
    assert listings[0].query["$orderby"] == "receivedDateTime asc"
    assert "Integer 0x0E08" in listings[0].query["$expand"]
    assert state.calls("GET", "/delta") == []
    assert processor.run_once().outcomes == ()
    assert len(repository.list_tickets()) == 3


def test_list_refs_names_the_messages_without_reading_them(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """start_from = "now" leaves the messages already there alone, reading none of them."""
    old = _deliver(state, 2)
    connector = connect()
    assert connector.list_refs() == old
    assert state.calls("GET", "/$value") == []
    repository = InMemoryTicketRepository()
    processor = MailProcessor(
        repository,
        [Mailbox(connector, start_from="now")],
        ProcessorSettings(loop_token=LOOP_TOKEN, domain="helpdesk.example"),
    )
    assert processor.run_once().mailboxes[0].left_alone == 2
    (new,) = _deliver(state, 1, first=5)
    report = processor.run_once()
    assert [o.ref for o in report.outcomes] == [new]
    assert [m.id for m in state.in_folder(SUPPORT, "inbox")] == old


def test_a_named_folder_is_found_or_created_under_the_top_of_the_mailbox(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """processed = move:Helpdesk/Done creates both folders once, then reuses them."""
    ids = _deliver(state, 3)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(processed="move:Helpdesk/Done"))

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    done = state.folder_named(SUPPORT, "Helpdesk/Done")
    assert done is not None
    assert [m.id for m in state.in_folder(SUPPORT, done.id)] == ids
    assert len(state.calls("POST", "/childFolders")) == 2  # Helpdesk, then Done under it
    lookups = state.calls("GET", "/childFolders")
    assert lookups[0].path.endswith("/mailFolders/msgfolderroot/childFolders")
    assert lookups[0].query["$filter"] == "displayName eq 'Helpdesk'"
    assert state.in_folder(SUPPORT, "deleteditems") == []


def test_an_existing_folder_is_used_and_a_vanished_one_is_created_again(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A folder deleted after it was looked up is found missing on move and re-created."""
    first, second = _deliver(state, 2)
    connector = connect(processed="move:Tickets")
    list(connector.fetch())
    connector.ack(first, Disposition.PROCESSED)
    tickets = state.folder_named(SUPPORT, "Tickets")
    assert tickets is not None
    state.delete_folder(tickets)  # a user deletes it; our cached id is now stale

    connector.ack(second, Disposition.PROCESSED)

    again = state.folder_named(SUPPORT, "Tickets")
    assert again is not None
    assert again.id != tickets.id
    assert [m.id for m in state.in_folder(SUPPORT, again.id)] == [second]


def test_processed_delete_deletes_the_messages(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """processed = delete sends DELETE for each handled message."""
    ids = _deliver(state, 2)
    report = _processor(InMemoryTicketRepository(), connect(processed="delete")).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 2
    assert sorted(r.path.rsplit("/", 1)[1] for r in state.calls("DELETE")) == sorted(ids)
    assert state.in_folder(SUPPORT, "inbox") == []
    assert state.in_folder(SUPPORT, "deleteditems") == []


def test_a_message_over_the_size_limit_is_quarantined_without_being_downloaded(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """The size property puts a large message in quarantine; its MIME is never requested."""
    (small,) = _deliver(state, 1)
    big = state.deliver(SUPPORT, make_email(message_id="<big@x>", body="x" * 20_000 + "\n"))
    repository = InMemoryTicketRepository()
    report = _processor(repository, connect(max_message_bytes=10_000)).run_once()

    outcomes = {o.ref: o.outcome for o in report.outcomes}
    assert outcomes == {small: Outcome.CREATED, big: Outcome.QUARANTINED}
    assert [r.path for r in state.calls("GET", "/$value")] == [
        f"/v1.0/users/{SUPPORT}/messages/{small}/$value"
    ]
    quarantine = state.folder_named(SUPPORT, "Quarantine")
    assert quarantine is not None
    assert [m.id for m in state.in_folder(SUPPORT, quarantine.id)] == [big]
    (held,) = repository.list_quarantine()
    assert held.reason == "too-large"


def test_without_the_size_property_the_download_stops_at_the_limit(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """With size_property off, a message over the limit is fetched as too_large, raw empty."""
    big = state.deliver(SUPPORT, make_email(body="y" * 50_000 + "\n"))
    (fetched,) = connect(max_message_bytes=10_000, size_property=False).fetch()
    assert fetched.ref == big
    assert fetched.too_large
    assert fetched.raw == b""
    assert fetched.size > 10_000
    assert "$expand" not in state.calls("GET", "/delta")[0].query


def test_a_404_for_a_message_already_gone_counts_as_handled(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """F12: ack of a message another client deleted meanwhile succeeds, moving or deleting."""
    first, second = _deliver(state, 2)
    mover, deleter = connect(), connect("Deleter", processed="delete")
    assert [m.ref for m in mover.fetch()] == [first, second]
    state.remove(first)
    state.remove(second)

    mover.ack(first, Disposition.PROCESSED)
    mover.ack(first, Disposition.QUARANTINED)
    deleter.ack(second, Disposition.PROCESSED)

    assert len(state.calls("POST", "/move")) == 2
    lookups = [r for r in state.calls("GET") if r.path.endswith(f"/messages/{first}")]
    assert len(lookups) == 2  # each 404 on move was checked: the message itself is gone
    assert state.in_folder(SUPPORT, "deleteditems") == []
    assert list(mover.fetch()) == []


def test_a_message_deleted_between_listing_and_reading_is_skipped(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A 404 on $value means another client took the message: it is skipped, not an error."""
    first, second = _deliver(state, 2)
    connector = connect()
    messages = connector.fetch()
    assert next(messages).ref == first
    state.remove(second)
    assert list(messages) == []


# -- throttling and failures -----------------------------------------------------------


def test_throttling_is_waited_out_as_retry_after_says_and_loses_nothing(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """429 and 503 with Retry-After are slept through, then the same requests succeed."""
    ids = _deliver(state, 3)
    state.fail("GET", "/messages/delta", 429, retry_after="7")
    state.fail("GET", f"/{ids[1]}/$value", 503, retry_after="2", times=2)
    state.fail("POST", f"/{ids[2]}/move", 429)  # no Retry-After: the default wait
    repository = InMemoryTicketRepository()

    report = _processor(
        repository, connect(retry=GraphRetry(sleep=sleeps.append, default_wait=3))
    ).run_once()

    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert sleeps == [7.0, 2.0, 2.0, 3.0]
    assert [m.id for m in state.in_folder(SUPPORT, "deleteditems")] == ids


def test_throttling_beyond_patience_ends_the_run_and_the_next_run_finishes(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """Throttled past max_attempts, the mailbox fails transiently; a run within the wait
    Graph asked for leaves the mailbox alone, the run after it loses nothing."""
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[1]}/$value", 429, retry_after="30", times=3)
    connector = connect(retry=GraphRetry(sleep=sleeps.append, max_attempts=3, max_wait=60))
    repository = InMemoryTicketRepository()
    now = [utcnow()]
    processor = _processor(repository, connector, clock=lambda: now[0])

    first = processor.run_once()

    assert [o.ref for o in first.outcomes] == [ids[0]]
    assert first.mailboxes[0].error is not None
    assert first.mailboxes[0].error.startswith("TransientConnectorError: Support: read ")
    assert sleeps == [30.0, 30.0]
    assert [m.id for m in state.in_folder(SUPPORT, "inbox")] == ids[1:]

    now[0] += dt.timedelta(seconds=29)
    waiting = processor.run_once()
    assert waiting.mailboxes[0].outcomes == ()
    assert "next attempt" in (waiting.mailboxes[0].note or waiting.mailboxes[0].error or "")

    now[0] += dt.timedelta(seconds=2)
    second = processor.run_once()

    assert [o.ref for o in second.outcomes] == ids[1:]
    assert _subjects(repository) == [f"Printer {n} is jammed" for n in range(3)]
    assert state.in_folder(SUPPORT, "inbox") == []


def test_a_retry_after_longer_than_max_wait_is_not_slept(
    state: GraphState, connect: Callable[..., GraphConnector], sleeps: list[float]
) -> None:
    """Asked to wait an hour, the connector gives up for this run instead of blocking."""
    _deliver(state, 1)
    state.fail("GET", "/delta", 429, retry_after="3600")
    with pytest.raises(TransientConnectorError, match="retry after 3600 s"):
        list(connect().fetch())
    assert sleeps == []


def test_a_failure_mid_listing_loses_nothing_and_doubles_nothing(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A 500 on the second delta page (with the size property and without) ends the run;
    the next run redoes the round."""
    _deliver(state, 3)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(page_size=2))
    state.fail("GET", "$skiptoken", 500, times=2)

    broken = processor.run_once()

    assert broken.outcomes == ()
    assert "TransientConnectorError" in (broken.mailboxes[0].error or "")
    assert len(state.in_folder(SUPPORT, "inbox")) == 3
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert processor.run_once().outcomes == ()
    assert len(repository.list_tickets()) == 3


def test_a_dropped_connection_on_a_later_delta_page_keeps_the_previous_link(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """An incremental round that breaks after its first page is asked for again in full."""
    _deliver(state, 1)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(page_size=2))
    assert len(processor.run_once().outcomes) == 1
    _deliver(state, 3, first=1)
    state.fail("GET", "$skiptoken", 0)  # the connection closes without an answer

    broken = processor.run_once()

    assert broken.outcomes == ()
    assert "TransientConnectorError" in (broken.mailboxes[0].error or "")
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert len(repository.list_tickets()) == 4
    assert state.in_folder(SUPPORT, "inbox") == []
    tokens = [r.query.get("$deltatoken") for r in state.calls("GET", "/delta")]
    assert tokens[1] is not None
    assert tokens[1] == tokens[3]  # the same link again: the broken round was not taken over


def test_a_failure_mid_reading_loses_nothing_and_doubles_nothing(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A 500 on the second message's MIME ends the run; the next run reads the rest."""
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[1]}/$value", 500)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect())

    first = processor.run_once()
    second = processor.run_once()

    assert [o.ref for o in first.outcomes] == [ids[0]]
    assert "answered 500" in (first.mailboxes[0].error or "")
    assert [o.ref for o in second.outcomes] == ids[1:]
    assert second.mailboxes[0].error is None
    assert len(repository.list_tickets()) == 3
    assert [m.id for m in state.in_folder(SUPPORT, "deleteditems")] == ids


def test_a_message_left_for_retry_is_read_again_on_the_next_delta_run(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A message fetched but never acked stays pending: the next run yields it again."""
    (ref,) = _deliver(state, 1)
    connector = connect()
    assert [m.ref for m in connector.fetch()] == [ref]
    # Nothing changed on the server, so the delta round is empty; the message is still due.
    assert [m.ref for m in connector.fetch()] == [ref]
    connector.ack(ref, Disposition.RETRY)
    assert [m.ref for m in connector.fetch()] == [ref]
    connector.ack(ref, Disposition.PROCESSED)
    assert list(connector.fetch()) == []
    assert [r.query.get("$deltatoken") is not None for r in state.calls("GET", "/delta")] == [
        False,
        True,
        True,
        True,
    ]


def test_an_expired_delta_link_falls_back_to_a_full_round_without_doubles(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A 410 for the delta link makes the connector read the folder in full once."""
    _deliver(state, 2)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect())
    assert len(processor.run_once().outcomes) == 2
    (new,) = _deliver(state, 1, first=2)
    state.expire_delta_links()

    report = processor.run_once()

    assert [o.ref for o in report.outcomes] == [new]
    assert report.mailboxes[0].error is None
    rounds = [r.query.get("$deltatoken") is not None for r in state.calls("GET", "/delta")]
    assert rounds == [False, True, False]
    assert len(repository.list_tickets()) == 3


def test_a_paging_link_to_another_host_is_refused(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A nextLink pointing away from the Graph host is not followed with our token."""
    _deliver(state, 3)
    state.link_base = "http://127.0.0.2:9/v1.0"
    with pytest.raises(ConnectorError, match="refusing to follow a link"):
        list(connect(page_size=2).fetch())
    assert len(state.calls("GET", "/delta")) == 1


def test_an_unknown_mailbox_or_folder_fails_with_a_clear_error(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A wrong user_id or folder fails the mailbox with Graph's code and the name."""
    with pytest.raises(ConnectorError, match="404 \\(ErrorInvalidUser"):
        list(connect(user_id="nobody@contoso.example").fetch())
    with pytest.raises(ConnectorError, match="the folder 'Support/New' does not exist"):
        list(connect(folder="Support/New").fetch())


# -- tokens ----------------------------------------------------------------------------


def test_a_refused_token_is_renewed_once_through_msal(
    state: GraphState, connect: Callable[..., GraphConnector], token_endpoint: TokenEndpoint
) -> None:
    """On a 401, the connector drops msal's cached token, gets a fresh one and carries on."""
    token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
    state.accept = token_endpoint.issued.__contains__
    _deliver(state, 2)
    connector = connect(token_provider=_microsoft(token_endpoint))
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connector)
    assert len(processor.run_once().outcomes) == 2
    (first_token,) = token_endpoint.issued
    (grant,) = token_endpoint.token_requests("client_credentials")
    assert grant.form["scope"] == "https://graph.microsoft.com/.default"

    state.revoked.add(first_token)
    _deliver(state, 1, first=2)
    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert len(report.outcomes) == 1
    assert len(token_endpoint.issued) == 2
    assert state.requests[-1].headers["authorization"] == f"Bearer {token_endpoint.issued[1]}"


def test_a_token_refused_twice_is_an_actionable_authentication_error(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A second 401 raises AuthenticationError saying what to check, without the token."""
    _deliver(state, 1)
    state.revoked.add(GOOD_TOKEN)
    with pytest.raises(AuthenticationError) as caught:
        list(connect().fetch())
    message = str(caught.value)
    assert message.startswith("Support: Microsoft Graph refused the access token twice")
    assert "Mail.ReadWrite" in message
    assert "admin consent" in message
    assert GOOD_TOKEN not in message
    assert len(state.calls("GET", "/delta")) == 2


def test_a_revoked_grant_fails_only_that_mailbox(
    state: GraphState, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """Two mailboxes from settings: the one whose app secret was revoked fails, the other works."""
    token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
    token_endpoint.register_client("revoked-app", secret=CLIENT_SECRET)
    token_endpoint.revoke_client("revoked-app")
    state.accept = token_endpoint.issued.__contains__
    _deliver(state, 3)
    _deliver(state, 2, user=SALES)

    def settings(name: str, user: str, client_id: str, index: int) -> MailboxSettings:
        return MailboxSettings(
            name=name,
            connection="office365",
            host=graph.url,
            tls_ca_file=token_endpoint.ca_file,
            extra={
                "tenant_id": token_endpoint.tenant,
                "client_id": client_id,
                "client_secret": CLIENT_SECRET,
                "authority": token_endpoint.authority,
                "user_id": user,
            },
            key_path=f"mailboxes[{index}]",
        )

    support = GraphConnector.from_settings(
        settings("Support", SUPPORT, CLIENT_ID, 0), max_message_bytes=None
    )
    sales = GraphConnector.from_settings(
        settings("Sales", SALES, "revoked-app", 1), max_message_bytes=None
    )
    repository = InMemoryTicketRepository()

    report = _processor(repository, support, sales).run_once()

    by_name = {m.name: m for m in report.mailboxes}
    assert by_name["Support"].error is None
    assert [o.outcome for o in by_name["Support"].outcomes] == [Outcome.CREATED] * 3
    assert by_name["Sales"].outcomes == ()
    error = by_name["Sales"].error or ""
    assert error.startswith("AuthenticationError: Sales: Microsoft refused the app's credentials")
    assert "update mailboxes[1].client_secret" in error
    assert CLIENT_SECRET not in error
    assert len(state.in_folder(SALES, "inbox")) == 2
    assert not any(f"/users/{SALES}" in r.path for r in state.requests)


def test_no_secret_reaches_any_log_line(
    state: GraphState,
    connect: Callable[..., GraphConnector],
    send_as: Callable[..., GraphTransport],
    token_endpoint: TokenEndpoint,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, httpx, httpcore, msal and urllib3 included, no token or secret is logged."""
    caplog.set_level(logging.DEBUG)
    token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
    state.accept = token_endpoint.issued.__contains__
    provider = _microsoft(token_endpoint)
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[0]}/$value", 429, retry_after="1")
    state.fail("GET", "/delta", 401)  # a refused token: renewed through msal
    repository = InMemoryTicketRepository()
    processor = _processor(
        repository, connect(token_provider=provider), transport=send_as(token_provider=provider)
    )

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert report.sent.sent == 3
    assert len(token_endpoint.issued) == 2
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    for secret in (CLIENT_SECRET, GOOD_TOKEN, *token_endpoint.issued):
        assert not any(secret in line for line in lines)
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"httpx", "httpcore", "msal", "urllib3", "halomail"} <= loggers


# -- sending ---------------------------------------------------------------------------


def _outbox_mail(**fields: object) -> OutboxMail:
    values: dict[str, object] = {
        "id": 1,
        "message_id": "halomail.7.abc@helpdesk.example",
        "to": ("alice@customer.example",),
        "subject": "[ID:7] Printer is jammed",
        "text": "We have logged your request.",
        "status": OutboxStatus.PENDING,
        "created_at": utcnow(),
        "ticket_id": 7,
        "in_reply_to": "jam-0@customer.example",
    }
    values.update(fields)
    return OutboxMail(**values)  # type: ignore[arg-type]


def test_sending_posts_our_mime_as_base64_with_our_headers(
    state: GraphState, send_as: Callable[..., GraphTransport]
) -> None:
    """sendMail receives our MIME, base64 in text/plain: Message-ID, Auto-Submitted, loop."""
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    send_as().send(outgoing)

    (sent,) = state.sent
    assert sent.user == SUPPORT
    assert sent.content_type == "text/plain"
    assert sent.mime == outgoing.data
    (request,) = state.calls("POST", "/sendMail")
    assert request.path == f"/v1.0/users/{SUPPORT}/sendMail"
    assert request.body == base64.b64encode(outgoing.data)
    message = email.message_from_bytes(sent.mime)
    assert message["Message-ID"] == "<halomail.7.abc@helpdesk.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Halomail-Loop"] == loop_signature(
        LOOP_TOKEN, "halomail.7.abc@helpdesk.example"
    )
    assert message["In-Reply-To"] == "<jam-0@customer.example>"
    assert message["Bcc"] is None


def test_an_envelope_recipient_missing_from_the_headers_is_added_as_bcc(
    state: GraphState, send_as: Callable[..., GraphTransport]
) -> None:
    """Graph takes recipients from the MIME headers, so extra envelope recipients go in Bcc."""
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    widened = attrs.evolve(outgoing, recipients=(*outgoing.recipients, "audit@contoso.example"))
    send_as().send(widened)
    (sent,) = state.sent
    assert sent.mime == b"Bcc: audit@contoso.example\r\n" + outgoing.data


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, AmbiguousSendError),
        (503, AmbiguousSendError),
        (504, AmbiguousSendError),
        (429, TransientTransportError),
        (401, TransportConfigError),
        (400, PermanentTransportError),
        (403, TransportConfigError),
        (413, PermanentTransportError),
    ],
)
def test_send_failures_are_sorted_into_transient_and_permanent(
    state: GraphState,
    send_as: Callable[..., GraphTransport],
    sleeps: list[float],
    status: int,
    error: type[Exception],
) -> None:
    """5xx may have sent (ambiguous, never retried in the call); 429 is transient; a refused
    token or 403 stops sending; other 4xx are permanent."""
    state.fail("POST", "/sendMail", status, times=5, retry_after="1")
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    with pytest.raises(error) as caught:
        send_as(retry=GraphRetry(sleep=sleeps.append, max_attempts=2)).send(outgoing)
    assert type(caught.value) is error
    assert state.sent == []
    assert GOOD_TOKEN not in str(caught.value)
    assert sleeps == ([1.0] if status == 429 else [])


def test_a_throttled_send_is_retried_and_sent_once(
    state: GraphState, send_as: Callable[..., GraphTransport], sleeps: list[float]
) -> None:
    """One 429 with Retry-After on sendMail is waited out; the message goes exactly once."""
    state.fail("POST", "/sendMail", 429, retry_after="4")
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    send_as().send(outgoing)
    assert sleeps == [4.0]
    assert [s.mime for s in state.sent] == [outgoing.data]


# -- settings --------------------------------------------------------------------------


def test_the_documented_configuration_builds_a_working_connector_and_transport(
    state: GraphState,
    graph: GraphServer,
    tmp_path: Path,
) -> None:
    """halomail.toml's office365 mailbox and graph transport read mail and send through Graph."""
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(
        f"""
[outgoing]
transport = "graph"
host = "{graph.url}"
from_address = "{SUPPORT}"
token_env = "GRAPH_TOKEN"

[[mailboxes]]
name = "Support"
connection = "office365"
host = "{graph.url}"
user_id = "{SUPPORT}"
token_env = "GRAPH_TOKEN"
processed = "move:Deleted Items"
quarantine_folder = "Quarantine"
batch_size = 2
""",
        encoding="utf-8",
    )
    config = load_config(config_file, env={"GRAPH_TOKEN": GOOD_TOKEN})
    (mailbox,) = config.mailboxes
    connector = GraphConnector.from_settings(mailbox, max_message_bytes=1_000_000)
    transport = GraphTransport.from_settings(config.outgoing)
    try:
        assert connector.user_id == SUPPORT
        assert connector.page_size == 2
        assert transport.user_id == SUPPORT
        ids = _deliver(state, 3)
        report = _processor(InMemoryTicketRepository(), connector, transport=transport).run_once()
        assert [o.ref for o in report.outcomes] == ids
        assert report.sent.sent == 3
    finally:
        connector.close()
        transport.close()


def test_settings_errors_name_the_key_to_fix() -> None:
    """Missing mailbox, missing credentials and clear-text http fail with the key path."""

    def mailbox(host: str | None = None, **extra: str) -> MailboxSettings:
        return MailboxSettings(
            name="Support",
            connection="office365",
            host=host,
            extra=extra,
            key_path="mailboxes[3]",
        )

    with pytest.raises(ConfigError) as missing_user:
        GraphConnector.from_settings(mailbox(token="t"), max_message_bytes=None)
    assert missing_user.value.key_path == "mailboxes[3].user_id"
    with pytest.raises(ConfigError) as no_credentials:
        GraphConnector.from_settings(mailbox(user_id=SUPPORT), max_message_bytes=None)
    assert no_credentials.value.key_path == "mailboxes[3].tenant_id"
    with pytest.raises(ConfigError) as no_secret:
        GraphConnector.from_settings(
            mailbox(user_id=SUPPORT, tenant_id="t", client_id="c"), max_message_bytes=None
        )
    assert no_secret.value.key_path == "mailboxes[3].client_secret"
    with pytest.raises(ConfigError, match="plain http is refused") as clear:
        GraphConnector.from_settings(
            mailbox("http://graph.example/v1.0", user_id=SUPPORT, token="t"),
            max_message_bytes=None,
        )
    assert clear.value.key_path == "mailboxes[3].host"
    with pytest.raises(ConfigError) as no_sender:
        GraphTransport.from_settings(OutgoingSettings(transport="graph", extra={"token": "t"}))
    assert no_sender.value.key_path == "outgoing.user_id"
    with pytest.raises(ConfigError, match="expected 'move:<folder>' or 'delete'"):
        GraphConnector(
            "Support", user_id=SUPPORT, token_provider=StaticTokenProvider("t"), processed="keep"
        )


def test_the_documented_client_credentials_example_builds_msal_providers_for_graph(
    tmp_path: Path,
) -> None:
    """The docs' tenant_id/client_id/client_secret_env example gives msal with Graph's scope."""
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(
        f"""
[[mailboxes]]
name = "Support"
connection = "office365"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "{CLIENT_ID}"
client_secret_env = "HALOMAIL_GRAPH_SECRET"
user_id = "support@contoso.com"
folder = "Inbox"
processed = "move:Deleted Items"
quarantine_folder = "Quarantine"

[outgoing]
transport = "graph"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "{CLIENT_ID}"
client_secret_env = "HALOMAIL_GRAPH_SECRET"
from_address = "support@contoso.com"
display_name = "Support"
""",
        encoding="utf-8",
    )
    config = load_config(config_file, env={"HALOMAIL_GRAPH_SECRET": CLIENT_SECRET})
    connector = GraphConnector.from_settings(config.mailboxes[0], max_message_bytes=None)
    transport = GraphTransport.from_settings(config.outgoing)
    for built in (connector, transport):
        provider = built._client._token_provider
        assert isinstance(provider, MicrosoftTokenProvider)
        assert provider.scopes == ["https://graph.microsoft.com/.default"]
        assert provider.authority == (
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555"
        )
        assert built._client.base_url == "https://graph.microsoft.com/v1.0"
        assert CLIENT_SECRET not in repr(built) + repr(provider)
    assert connector.user_id == transport.user_id == "support@contoso.com"
    assert repr(connector) == "GraphConnector('Support', 'support@contoso.com', 'Inbox')"


# -- check-config --connect --------------------------------------------------------------


def test_probe_reports_the_folder_count_and_moves_nothing(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """probe() says how many messages the folder holds; every message stays where it was."""
    _deliver(state, 3)
    before = _message_ids(state, "inbox")
    report = connect().probe()
    assert (report.summary, report.messages) == ("3 messages in Inbox", 3)
    assert _message_ids(state, "inbox") == before


def test_probe_with_a_revoked_token_fails_as_authentication_without_the_token(
    state: GraphState, connect: Callable[..., GraphConnector]
) -> None:
    """A refused token: the channel line says authentication failed and shows no token."""
    state.revoked.add(GOOD_TOKEN)
    result = probe_channel(Channel("mailbox Support", "office365", "", connect))
    assert result.ok is False
    assert result.summary.startswith("authentication failed: ")
    assert GOOD_TOKEN not in result.line()


def test_a_transport_probe_gets_a_token_and_sends_nothing(
    state: GraphState, send_as: Callable[..., GraphTransport]
) -> None:
    """The Graph transport's probe asks only for a token: Graph receives nothing to send."""
    report = send_as().probe()
    assert report.summary == "OAuth2 token granted (sending not tried)"
    assert state.sent == []
