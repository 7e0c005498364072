"""Google Workspace through the Gmail API: google-api-python-client against a local endpoint."""

from __future__ import annotations

import datetime as dt
import email
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from halomail.backends.auth.oauth import GoogleTokenProvider, StaticTokenProvider
from halomail.backends.base import Disposition, MailTransport
from halomail.backends.gmail import GmailConnector, GmailRetry, GmailTransport
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
from tests.servers.gmail import GmailServer, GmailState, running_gmail_server
from tests.servers.token_endpoint import JWT_BEARER, TokenEndpoint

SUPPORT = "support@example.org"
SALES = "sales@example.org"
GOOD_TOKEN = "ya29.a0AfB_gmail-access-token-never-logged"
SA_EMAIL = "halomail@helpdesk-project.iam.gserviceaccount.com"
GOOGLE_CLIENT_ID = "1234-halomail.apps.googleusercontent.com"
GOOGLE_SECRET = "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gged"
REFRESH_TOKEN = "1//0g-refresh-token-never-logged"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"


@pytest.fixture(scope="module")
def gmail() -> Iterator[GmailServer]:
    """One Gmail endpoint for the module; each test installs its own store."""
    with running_gmail_server() as server:
        yield server


@pytest.fixture
def state(gmail: GmailServer) -> GmailState:
    """A fresh store with the support and sales mailboxes; one token, for support."""
    store = GmailState(tokens={GOOD_TOKEN: SUPPORT})
    store.mailbox(SUPPORT)
    store.mailbox(SALES)
    gmail.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the connectors asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def connect(gmail: GmailServer, sleeps: list[float]) -> Iterator[Callable[..., GmailConnector]]:
    """Build connectors for the support mailbox on the local endpoint; closed afterwards."""
    built: list[GmailConnector] = []

    def build(name: str = "Support", **options: object) -> GmailConnector:
        settings: dict[str, object] = {
            "token_provider": StaticTokenProvider(GOOD_TOKEN),
            "api_endpoint": gmail.url,
            "retry": GmailRetry(sleep=sleeps.append),
        }
        settings.update(options)
        connector = GmailConnector(name, **settings)  # type: ignore[arg-type]
        built.append(connector)
        return connector

    yield build
    for connector in built:
        connector.close()


@pytest.fixture
def send_as(gmail: GmailServer, sleeps: list[float]) -> Iterator[Callable[..., GmailTransport]]:
    """Build transports sending as the support mailbox; closed afterwards."""
    built: list[GmailTransport] = []

    def build(**options: object) -> GmailTransport:
        settings: dict[str, object] = {
            "token_provider": StaticTokenProvider(GOOD_TOKEN),
            "api_endpoint": gmail.url,
            "retry": GmailRetry(sleep=sleeps.append),
        }
        settings.update(options)
        transport = GmailTransport(**settings)  # type: ignore[arg-type]
        built.append(transport)
        return transport

    yield build
    for transport in built:
        transport.close()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for the service account (generating one is slow-ish)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def service_account_file(
    token_endpoint: TokenEndpoint, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> Path:
    """A service-account key file, registered with the local token endpoint."""
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token_endpoint.register_service_account(SA_EMAIL, public)
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "helpdesk-project",
                "private_key_id": "0123456789abcdef",
                "private_key": private.decode(),
                "client_email": SA_EMAIL,
                "client_id": "1234567890",
                "token_uri": token_endpoint.google_token_uri,
            }
        ),
        encoding="utf-8",
    )
    return path


def _processor(
    repository: TicketRepository,
    *connectors: GmailConnector,
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


def _deliver(
    state: GmailState,
    count: int,
    user: str = SUPPORT,
    first: int = 0,
    labels: tuple[str, ...] = ("INBOX", "UNREAD"),
) -> list[str]:
    return [
        state.deliver(
            user,
            make_email(subject=f"Printer {n} is jammed", message_id=f"<jam-{n}@customer.example>"),
            labels=labels,
        )
        for n in range(first, first + count)
    ]


def _subjects(repository: TicketRepository) -> list[str]:
    return sorted(t.summary for t in repository.list_tickets())


def _ids(state: GmailState, label: str, user: str = SUPPORT) -> list[str]:
    return [m.id for m in state.labelled(user, label)]


def _listings(state: GmailState) -> list[str | None]:
    """The pageToken of each messages.list call."""
    return [r.param("pageToken") for r in state.calls("GET") if r.path.endswith("/messages")]


def _reads(state: GmailState, format_: str) -> list[str]:
    """The ids of the messages.get calls in ``format_``."""
    return [
        r.path.rsplit("/", 1)[1]
        for r in state.calls("GET", "/messages/")
        if r.param("format") == format_
    ]


def _google(endpoint: TokenEndpoint, **options: object) -> GoogleTokenProvider:
    values: dict[str, object] = {
        "client_id": GOOGLE_CLIENT_ID,
        "client_secret": GOOGLE_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "scopes": (GMAIL_MODIFY,),
        "token_uri": endpoint.google_token_uri,
        "verify": str(endpoint.ca_file),
        "mailbox": "Support",
    }
    values.update(options)
    return GoogleTokenProvider(**values)  # type: ignore[arg-type]


# -- reading and disposal --------------------------------------------------------------


def test_three_emails_become_three_tickets_trashed_and_a_rerun_adds_none(
    state: GmailState,
    connect: Callable[..., GmailConnector],
    send_as: Callable[..., GmailTransport],
    repository: TicketRepository,
) -> None:
    """Three emails become three tickets, go to the trash, and a second run adds none."""
    ids = _deliver(state, 3)
    processor = _processor(repository, connect(page_size=2), transport=send_as())

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert [o.ref for o in report.outcomes] == ids  # oldest first; Gmail lists newest first
    assert _subjects(repository) == [f"Printer {n} is jammed" for n in range(3)]
    assert _ids(state, "INBOX") == []
    assert _ids(state, "TRASH") == ids
    assert _listings(state) == [None, "2"]  # two pages of two
    listing = state.calls("GET")[1]
    assert listing.query["labelIds"] == ["INBOX"]
    assert listing.path == "/gmail/v1/users/me/messages"
    assert sorted(_reads(state, "raw")) == sorted(ids)
    assert len(state.calls("POST", "/trash")) == 3
    assert report.sent.sent == 3  # the acknowledgements went out through messages.send
    assert len(state.sent) == 3
    assert all(r.headers["authorization"] == f"Bearer {GOOD_TOKEN}" for r in state.requests)
    (profile,) = state.calls("GET", "/profile")
    start = state.requests.index(profile)
    assert start == 0  # the history id is noted before the listing begins

    state.requests.clear()
    again = processor.run_once()

    assert again.outcomes == ()
    assert again.mailboxes[0].error is None
    history = state.calls("GET", "/history")
    # Six records, two a page: the three trashings, and the three acknowledgements that
    # Gmail keeps, labelled SENT (records of other labels, read without a lookup).
    assert [h.param("pageToken") for h in history] == [None, "2", "4"]
    # From the profile's history id, noted before the listing.
    assert [h.param("startHistoryId") for h in history] == ["1003", "1003", "1003"]
    assert history[0].query["historyTypes"] == [
        "messageAdded",
        "messageDeleted",
        "labelAdded",
        "labelRemoved",
    ]
    assert _listings(state) == []
    assert _reads(state, "raw") == []
    assert _reads(state, "minimal") == []  # the history records said the three left
    assert len(repository.list_tickets()) == 3

    state.requests.clear()
    assert processor.run_once().outcomes == ()
    # Onwards from the historyId the last round ended with: the three trashings are done.
    assert [h.param("startHistoryId") for h in state.calls("GET", "/history")] == ["1009"]


def test_messages_are_yielded_by_arrival_across_listing_pages(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """Messages come out by internalDate, oldest first, whatever order the pages give."""
    start = 1_767_258_000_000
    ids = [
        state.deliver(SUPPORT, make_email(message_id=f"<m{n}@x>"), internal_date=start - n * 1000)
        for n in range(5)
    ]
    fetched = list(connect(page_size=2).fetch())
    assert [m.ref for m in fetched] == list(reversed(ids))
    assert _listings(state) == [None, "2", "4"]
    assert all(m.raw.startswith(b"From: ") for m in fetched)
    assert all(m.size == len(m.raw) for m in fetched)


def test_new_and_relabelled_mail_is_found_through_the_history(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """After the first listing, history.list finds new mail and mail labelled INBOX later."""
    (first,) = _deliver(state, 1)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(page_size=2))
    assert [o.ref for o in processor.run_once().outcomes] == [first]
    (new,) = _deliver(state, 1, first=1)
    (moved,) = _deliver(state, 1, first=2, labels=("CATEGORY_UPDATES",))
    state.relabel(SUPPORT, moved, add=("INBOX",))  # a user moves it to the inbox
    (gone,) = _deliver(state, 1, first=3)
    state.remove(SUPPORT, gone)  # deleted by another client before we looked
    (spam,) = _deliver(state, 1, first=4)
    state.relabel(SUPPORT, spam, add=("SPAM",))  # Gmail decided it is spam
    state.requests.clear()

    report = processor.run_once()

    assert [o.ref for o in report.outcomes] == [new, moved]
    assert report.mailboxes[0].error is None
    assert len(state.calls("GET", "/history")) == 4  # eight records, two a page
    assert _listings(state) == []
    assert sorted(_reads(state, "minimal")) == sorted([new, moved])
    assert _ids(state, "TRASH") == [first, new, moved]
    assert _ids(state, "SPAM") == [spam]


def test_a_message_left_for_retry_is_read_again_on_the_next_run(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A message fetched but never acked stays pending: every later run yields it again."""
    (ref,) = _deliver(state, 1)
    connector = connect()
    assert [m.ref for m in connector.fetch()] == [ref]
    # Nothing changed on the server, so the history is empty; the message is still due.
    assert [m.ref for m in connector.fetch()] == [ref]
    connector.ack(ref, Disposition.RETRY)
    assert [m.ref for m in connector.fetch()] == [ref]
    connector.ack(ref, Disposition.PROCESSED)
    assert list(connector.fetch()) == []
    assert len(state.calls("GET", "/history")) == 3
    assert _listings(state) == [None]


def test_an_expired_history_id_falls_back_to_a_full_listing_without_doubles(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A 404 for the history id makes the connector list the label in full once."""
    _deliver(state, 2)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect())
    assert len(processor.run_once().outcomes) == 2
    (new,) = _deliver(state, 1, first=2)
    state.expire_history(SUPPORT)
    state.requests.clear()

    report = processor.run_once()

    assert [o.ref for o in report.outcomes] == [new]
    assert report.mailboxes[0].error is None
    assert [r.path.rsplit("/", 1)[1] for r in state.calls("GET")[:3]] == [
        "history",
        "profile",
        "messages",
    ]
    assert len(repository.list_tickets()) == 3
    assert processor.run_once().outcomes == ()


def test_list_refs_names_the_messages_without_reading_them(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """start_from = "now" leaves the messages already there alone, reading none of them."""
    old = _deliver(state, 2)
    connector = connect()
    assert sorted(connector.list_refs()) == sorted(old)
    assert _reads(state, "raw") == []
    processor = MailProcessor(
        InMemoryTicketRepository(),
        [Mailbox(connector, start_from="now")],
        ProcessorSettings(loop_token=LOOP_TOKEN, domain="helpdesk.example"),
    )
    assert processor.run_once().mailboxes[0].left_alone == 2
    (new,) = _deliver(state, 1, first=5)
    report = processor.run_once()
    assert [o.ref for o in report.outcomes] == [new]
    assert _ids(state, "INBOX") == old


def test_processed_move_to_a_label_creates_it_once_and_takes_the_inbox_label_off(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """processed = move:Helpdesk/Done creates the label once, adds it and removes INBOX."""
    ids = _deliver(state, 3)
    report = _processor(
        InMemoryTicketRepository(), connect(processed="move:Helpdesk/Done")
    ).run_once()

    assert report.mailboxes[0].error is None
    done = state.label_named(SUPPORT, "Helpdesk/Done")
    assert done is not None
    assert done.id.startswith("Label_")
    assert _ids(state, "Helpdesk/Done") == ids
    assert _ids(state, "INBOX") == []
    assert _ids(state, "TRASH") == []
    (created,) = state.calls("POST", "/labels")
    assert json.loads(created.body) == {
        "name": "Helpdesk/Done",
        "labelListVisibility": "labelShow",
        "messageListVisibility": "show",
    }
    assert len(state.calls("GET", "/labels")) == 1  # looked up once, then remembered
    modify = state.calls("POST", "/modify")
    assert [json.loads(r.body) for r in modify] == [
        {"addLabelIds": [done.id], "removeLabelIds": ["INBOX"]}
    ] * 3


def test_an_existing_label_is_used_and_a_vanished_one_is_created_again(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A label deleted after it was looked up gets 'Invalid label'; it is looked up anew."""
    tickets = state.create_label(SUPPORT, "tickets")
    first, second = _deliver(state, 2)
    connector = connect(processed="move:Tickets")
    list(connector.fetch())
    connector.ack(first, Disposition.PROCESSED)
    assert _ids(state, tickets.id) == [first]
    assert state.calls("POST", "/labels") == []  # found by name, ignoring case
    state.delete_label(SUPPORT, tickets.id)

    connector.ack(second, Disposition.PROCESSED)

    again = state.label_named(SUPPORT, "Tickets")
    assert again is not None
    assert again.id != tickets.id
    assert _ids(state, again.id) == [second]
    assert _ids(state, "INBOX") == []
    assert _ids(state, "UNREAD") == [first, second]  # nothing else changed


def test_processed_move_to_archive_removes_only_the_inbox_label(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """processed = move:Archive archives: INBOX comes off, nothing else changes."""
    ids = _deliver(state, 2)
    report = _processor(InMemoryTicketRepository(), connect(processed="move:Archive")).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 2
    assert _ids(state, "INBOX") == []
    assert _ids(state, "UNREAD") == ids
    assert _ids(state, "TRASH") == []
    assert [json.loads(r.body) for r in state.calls("POST", "/modify")] == [
        {"removeLabelIds": ["INBOX"]}
    ] * 2
    assert state.calls("GET", "/labels") == []


def test_a_user_label_is_read_and_an_unknown_one_fails_clearly(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """folder = a user label reads the messages carrying it; a missing label is an error."""
    label = state.create_label(SUPPORT, "Support/New")
    ids = _deliver(state, 2, labels=(label.id,))
    _deliver(state, 1, first=5)  # in the inbox only: not ours to read
    connector = connect(folder="support/new", processed="delete")

    report = _processor(InMemoryTicketRepository(), connector).run_once()

    assert [o.ref for o in report.outcomes] == ids
    assert _ids(state, "TRASH") == ids
    assert {
        tuple(r.query["labelIds"]) for r in state.calls("GET") if r.path.endswith("/messages")
    } == {(label.id,)}
    with pytest.raises(ConnectorError, match="the label 'Support/Old' does not exist in me"):
        list(connect(folder="Support/Old").fetch())


def test_a_message_over_the_size_limit_is_quarantined_without_being_downloaded(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """sizeEstimate puts a large message in the quarantine label; its MIME is never asked for."""
    (small,) = _deliver(state, 1)
    big = state.deliver(SUPPORT, make_email(message_id="<big@x>", body="x" * 20_000 + "\n"))
    repository = InMemoryTicketRepository()
    report = _processor(repository, connect(max_message_bytes=10_000)).run_once()

    outcomes = {o.ref: o.outcome for o in report.outcomes}
    assert outcomes == {small: Outcome.CREATED, big: Outcome.QUARANTINED}
    assert _reads(state, "raw") == [small]
    assert _ids(state, "Quarantine") == [big]
    assert _ids(state, "TRASH") == [small]
    (held,) = repository.list_quarantine()
    assert held.reason == "too-large"


def test_a_404_for_a_message_already_gone_counts_as_handled(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """Trash, archive and relabel of a message another client deleted all succeed."""
    first, second = _deliver(state, 2)
    trasher, labeller = connect(), connect("Labeller", processed="move:Done")
    assert [m.ref for m in trasher.fetch()] == [first, second]
    state.remove(SUPPORT, first)
    state.remove(SUPPORT, second)

    trasher.ack(first, Disposition.PROCESSED)
    trasher.ack(first, Disposition.QUARANTINED)
    labeller.ack(second, Disposition.PROCESSED)
    connect("Archiver", processed="move:Archive").ack(second, Disposition.PROCESSED)

    assert len(state.calls("POST", "/trash")) == 1
    assert len(state.calls("POST", "/modify")) == 3
    assert list(trasher.fetch()) == []


def test_a_message_deleted_between_listing_and_reading_is_skipped(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A 404 on the raw read means another client took the message: skipped, not an error."""
    first, second = _deliver(state, 2)
    connector = connect()
    messages = connector.fetch()
    assert next(messages).ref == first
    state.remove(SUPPORT, second)
    assert list(messages) == []
    # The first, never acked, is still due; the second is forgotten.
    assert [m.ref for m in connector.fetch()] == [first]


# -- throttling and failures -----------------------------------------------------------


def test_throttling_is_waited_out_as_told_and_loses_nothing(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """429 with Retry-After, 403 userRateLimitExceeded and 503 are slept through, then succeed."""
    ids = _deliver(state, 3)
    state.fail("GET", "/messages?", 429, retry_after="7")
    state.fail("GET", f"/{ids[1]}?format=raw", 403, times=2)  # no Retry-After: backoff
    state.fail("POST", f"/{ids[2]}/trash", 503, retry_after="3")
    repository = InMemoryTicketRepository()

    report = _processor(repository, connect()).run_once()

    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert sleeps == [7.0, 1.0, 2.0, 3.0]
    assert _ids(state, "TRASH") == ids
    assert len(_reads(state, "raw")) == 5


def test_throttling_beyond_patience_ends_the_run_and_the_next_run_finishes(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """Throttled past max_attempts, the mailbox fails transiently; a run within the wait
    Gmail asked for leaves the mailbox alone, the run after it loses nothing."""
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[1]}?format=raw", 429, retry_after="30", times=3)
    connector = connect(retry=GmailRetry(sleep=sleeps.append, max_attempts=3, max_wait=60))
    repository = InMemoryTicketRepository()
    now = [utcnow()]
    processor = _processor(repository, connector, clock=lambda: now[0])

    first = processor.run_once()

    assert [o.ref for o in first.outcomes] == [ids[0]]
    error = first.mailboxes[0].error or ""
    assert error.startswith(f"TransientConnectorError: Support: read {ids[1]}: ")
    assert "429 rateLimitExceeded" in error
    assert sleeps == [30.0, 30.0]
    assert _ids(state, "INBOX") == ids[1:]

    now[0] += dt.timedelta(seconds=29)
    waiting = processor.run_once()
    assert waiting.mailboxes[0].outcomes == ()
    assert "next attempt" in (waiting.mailboxes[0].note or waiting.mailboxes[0].error or "")

    now[0] += dt.timedelta(seconds=2)
    second = processor.run_once()

    assert [o.ref for o in second.outcomes] == ids[1:]
    assert _subjects(repository) == [f"Printer {n} is jammed" for n in range(3)]
    assert _ids(state, "INBOX") == []


def test_a_retry_after_longer_than_max_wait_is_not_slept(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """Asked to wait an hour, the connector gives up for this run instead of blocking."""
    _deliver(state, 1)
    state.fail("GET", "/profile", 429, retry_after="3600")
    with pytest.raises(TransientConnectorError, match="retry after 3600 s"):
        list(connect().fetch())
    assert sleeps == []


def test_a_failure_mid_listing_loses_nothing_and_doubles_nothing(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """A 500 on the second listing page past patience ends the run; the next run redoes it."""
    _deliver(state, 3)
    repository = InMemoryTicketRepository()
    connector = connect(page_size=2, retry=GmailRetry(sleep=sleeps.append, max_attempts=2))
    processor = _processor(repository, connector)
    state.fail("GET", "pageToken=2", 500, times=2)

    broken = processor.run_once()

    assert broken.outcomes == ()
    assert "TransientConnectorError" in (broken.mailboxes[0].error or "")
    assert "500 backendError" in (broken.mailboxes[0].error or "")
    assert len(_ids(state, "INBOX")) == 3
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert processor.run_once().outcomes == ()
    assert len(repository.list_tickets()) == 3


def test_a_dropped_connection_mid_history_keeps_the_previous_history_id(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A history round that breaks after its first page is asked for again from the same id."""
    _deliver(state, 1)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(page_size=2))
    assert len(processor.run_once().outcomes) == 1
    _deliver(state, 3, first=1)
    state.fail("GET", "pageToken=2", 0, times=2)  # httplib2 itself tries twice

    broken = processor.run_once()

    assert broken.outcomes == ()
    assert "TransientConnectorError" in (broken.mailboxes[0].error or "")
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert len(repository.list_tickets()) == 4
    assert _ids(state, "INBOX") == []
    starts = [r.param("startHistoryId") for r in state.calls("GET", "/history")]
    assert len(starts) >= 4
    assert set(starts) == {"1001"}  # the broken round was not taken over


def test_a_failure_mid_reading_loses_nothing_and_doubles_nothing(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """Server errors on the second message's MIME end the run; the next run reads the rest."""
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[1]}?format=raw", 500, times=2)
    repository = InMemoryTicketRepository()
    processor = _processor(
        repository, connect(retry=GmailRetry(sleep=sleeps.append, max_attempts=2))
    )

    first = processor.run_once()
    second = processor.run_once()

    assert [o.ref for o in first.outcomes] == [ids[0]]
    assert "500 backendError" in (first.mailboxes[0].error or "")
    assert [o.ref for o in second.outcomes] == ids[1:]
    assert second.mailboxes[0].error is None
    assert len(repository.list_tickets()) == 3
    assert _ids(state, "TRASH") == ids


def test_missing_scope_or_delegation_is_a_clear_error_not_retried(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """A 403 insufficientPermissions says which scope to grant and where; it is not retried."""
    _deliver(state, 1)
    state.fail(
        "GET",
        "/profile",
        403,
        reason="insufficientPermissions",
        message="Request had insufficient authentication scopes.",
    )
    with pytest.raises(ConnectorError) as caught:
        list(connect().fetch())
    message = str(caught.value)
    assert message.startswith("Support: read the mailbox profile: the Gmail API denied access")
    assert "insufficientPermissions" in message
    assert GMAIL_MODIFY in message
    assert "domain-wide delegation" in message
    assert sleeps == []
    assert len(state.calls("GET", "/profile")) == 1


def test_another_users_mailbox_is_refused_with_delegation_denied(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """user_id naming a mailbox the token is not for fails with Gmail's 403, not a retry."""
    with pytest.raises(ConnectorError, match=r"Delegation denied for support@example\.org"):
        list(connect(user_id=SALES).fetch())
    assert len(state.calls("GET", f"/users/{SALES}/profile")) == 1


# -- tokens ----------------------------------------------------------------------------


def test_a_refused_token_is_renewed_once_through_google_auth(
    state: GmailState,
    connect: Callable[..., GmailConnector],
    token_endpoint: TokenEndpoint,
    service_account_file: Path,
) -> None:
    """On a 401, the connector has google-auth fetch a fresh token and carries on."""
    state.accept = lambda token: SUPPORT if token in token_endpoint.issued else None
    _deliver(state, 2)
    provider = GoogleTokenProvider(
        credentials_file=service_account_file,
        subject=SUPPORT,
        scopes=(GMAIL_MODIFY,),
        verify=str(token_endpoint.ca_file),
        mailbox="Support",
    )
    processor = _processor(InMemoryTicketRepository(), connect(token_provider=provider))
    assert len(processor.run_once().outcomes) == 2
    (first_token,) = token_endpoint.issued
    (grant,) = token_endpoint.token_requests(JWT_BEARER)
    claims = jwt.decode(grant.form["assertion"], options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["scope"]) == (SA_EMAIL, SUPPORT, GMAIL_MODIFY)

    state.revoked.add(first_token)
    _deliver(state, 1, first=2)
    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert len(report.outcomes) == 1
    assert len(token_endpoint.issued) == 2
    assert state.requests[-1].headers["authorization"] == f"Bearer {token_endpoint.issued[1]}"


def test_a_token_refused_twice_is_an_actionable_authentication_error(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A second 401 raises AuthenticationError saying what to check, without the token."""
    _deliver(state, 1)
    state.revoked.add(GOOD_TOKEN)
    with pytest.raises(AuthenticationError) as caught:
        list(connect().fetch())
    message = str(caught.value)
    assert message.startswith("Support: the Gmail API refused the access token twice (authError)")
    assert "domain-wide delegation" in message
    assert GMAIL_MODIFY in message
    assert GOOD_TOKEN not in message
    assert len(state.calls("GET", "/profile")) == 2


def test_a_revoked_grant_fails_only_that_mailbox(
    state: GmailState,
    gmail: GmailServer,
    token_endpoint: TokenEndpoint,
    service_account_file: Path,
) -> None:
    """Two mailboxes from settings: the one whose refresh token was revoked fails alone."""
    token_endpoint.register_refresh_token(
        REFRESH_TOKEN,
        client_id=GOOGLE_CLIENT_ID,
        user=SALES,
        provider="google",
        client_secret=GOOGLE_SECRET,
    )
    token_endpoint.revoke_user(SALES)
    state.accept = lambda token: SUPPORT if token in token_endpoint.issued else None
    _deliver(state, 3)
    _deliver(state, 2, user=SALES)
    support = MailboxSettings(
        name="Support",
        connection="google",
        host=gmail.url,
        tls_ca_file=token_endpoint.ca_file,
        extra={"credentials_file": service_account_file, "subject": SUPPORT},
        key_path="mailboxes[0]",
    )
    sales = MailboxSettings(
        name="Sales",
        connection="google",
        host=gmail.url,
        username=SALES,
        tls_ca_file=token_endpoint.ca_file,
        extra={
            "client_id": GOOGLE_CLIENT_ID,
            "client_secret": GOOGLE_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "token_uri": token_endpoint.google_token_uri,
        },
        key_path="mailboxes[1]",
    )
    connectors = [GmailConnector.from_settings(s, max_message_bytes=None) for s in (support, sales)]
    repository = InMemoryTicketRepository()

    report = _processor(repository, *connectors).run_once()

    by_name = {m.name: m for m in report.mailboxes}
    assert by_name["Support"].error is None
    assert [o.outcome for o in by_name["Support"].outcomes] == [Outcome.CREATED] * 3
    assert by_name["Sales"].outcomes == ()
    error = by_name["Sales"].error or ""
    assert error.startswith("AuthenticationError: Sales: Google refused the refresh token")
    assert "update mailboxes[1].refresh_token" in error
    assert REFRESH_TOKEN not in error
    assert GOOGLE_SECRET not in error
    assert len(_ids(state, "INBOX", user=SALES)) == 2
    assert not any(SALES in r.path for r in state.requests)
    (grant,) = token_endpoint.token_requests("refresh_token")
    assert grant.form["scope"] == GMAIL_MODIFY
    for connector in connectors:
        connector.close()


def test_no_secret_reaches_any_log_line(
    state: GmailState,
    connect: Callable[..., GmailConnector],
    send_as: Callable[..., GmailTransport],
    token_endpoint: TokenEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, googleapiclient, google-auth and urllib3 included, no token or secret is logged."""
    caplog.set_level(logging.DEBUG)
    token_endpoint.register_refresh_token(
        REFRESH_TOKEN,
        client_id=GOOGLE_CLIENT_ID,
        user=SUPPORT,
        provider="google",
        client_secret=GOOGLE_SECRET,
    )
    state.accept = lambda token: SUPPORT if token in token_endpoint.issued else None
    provider = _google(token_endpoint)
    ids = _deliver(state, 3)
    state.fail("GET", f"/{ids[0]}?format=raw", 429, retry_after="1")
    state.fail("GET", "/profile", 401)  # a refused token: renewed through google-auth
    processor = _processor(
        InMemoryTicketRepository(),
        connect(token_provider=provider),
        transport=send_as(token_provider=provider),
    )

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert report.sent.sent == 3
    assert len(token_endpoint.issued) == 2
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    for secret in (GOOGLE_SECRET, REFRESH_TOKEN, GOOD_TOKEN, *token_endpoint.issued):
        assert not any(secret in line for line in lines)
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"googleapiclient", "google", "urllib3", "halomail"} <= loggers


# -- sending ---------------------------------------------------------------------------


def _outbox_mail(**fields: object) -> OutboxMail:
    values: dict[str, object] = {
        "id": 1,
        "message_id": "halomail.7.abc@helpdesk.example",
        "to": ("alice@customer.example",),
        "subject": "[ID:7] Printer is jammed",
        "text": "We have logged your request. ÿ?>" * 3,  # base64url differs from base64 here
        "status": OutboxStatus.PENDING,
        "created_at": utcnow(),
        "ticket_id": 7,
        "in_reply_to": "jam-0@customer.example",
    }
    values.update(fields)
    return OutboxMail(**values)  # type: ignore[arg-type]


def test_sending_uploads_our_mime_unchanged_with_our_headers(
    state: GmailState, send_as: Callable[..., GmailTransport]
) -> None:
    """messages.send's upload endpoint receives our MIME as is: Message-ID, Auto-Submitted, loop."""
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    send_as().send(outgoing)

    (sent,) = state.sent
    assert sent.user == SUPPORT
    assert sent.mime == outgoing.data
    (request,) = state.calls("POST", "/send")
    assert request.path == "/upload/gmail/v1/users/me/messages/send"
    assert request.param("uploadType") == "media"
    assert request.headers["content-type"] == "message/rfc822"
    assert request.body == outgoing.data
    message = email.message_from_bytes(sent.mime)
    assert message["Message-ID"] == "<halomail.7.abc@helpdesk.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Halomail-Loop"] == loop_signature(
        LOOP_TOKEN, "halomail.7.abc@helpdesk.example"
    )
    assert message["In-Reply-To"] == "<jam-0@customer.example>"
    assert message["Bcc"] is None


def test_an_envelope_recipient_missing_from_the_headers_is_added_as_bcc(
    state: GmailState, send_as: Callable[..., GmailTransport]
) -> None:
    """Gmail takes recipients from the headers, so extra envelope recipients go in Bcc."""
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    widened = attrs.evolve(outgoing, recipients=(*outgoing.recipients, "audit@example.org"))
    send_as().send(widened)
    (sent,) = state.sent
    assert sent.mime == b"Bcc: audit@example.org\r\n" + outgoing.data


@pytest.mark.parametrize(
    ("status", "reason", "error", "waits"),
    [
        # A 5xx may come after Gmail sent the mail: never repeated within the call.
        (500, "", AmbiguousSendError, []),
        (503, "", AmbiguousSendError, []),
        (504, "", AmbiguousSendError, []),
        (429, "", TransientTransportError, [1.0]),
        (403, "userRateLimitExceeded", TransientTransportError, [1.0]),
        (401, "", TransportConfigError, []),
        (403, "insufficientPermissions", TransportConfigError, []),
        (400, "invalidArgument", PermanentTransportError, []),
        (413, "", PermanentTransportError, []),
    ],
)
def test_send_failures_are_sorted_into_transient_and_permanent(
    state: GmailState,
    send_as: Callable[..., GmailTransport],
    sleeps: list[float],
    status: int,
    reason: str,
    error: type[Exception],
    waits: list[float],
) -> None:
    """Throttling is transient, a 5xx ambiguous; a refused grant stops sending; 4xx permanent."""
    state.fail("POST", "/send", status, times=5, reason=reason, retry_after="1")
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    with pytest.raises(error) as caught:
        send_as(retry=GmailRetry(sleep=sleeps.append, max_attempts=2)).send(outgoing)
    assert type(caught.value) is error
    assert state.sent == []
    assert GOOD_TOKEN not in str(caught.value)
    assert sleeps == waits


def test_a_throttled_send_is_retried_and_sent_once(
    state: GmailState, send_as: Callable[..., GmailTransport], sleeps: list[float]
) -> None:
    """One 429 with Retry-After on messages.send is waited out; the message goes once."""
    state.fail("POST", "/send", 429, retry_after="4")
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    send_as().send(outgoing)
    assert sleeps == [4.0]
    assert [s.mime for s in state.sent] == [outgoing.data]


# -- settings --------------------------------------------------------------------------


def test_the_documented_configuration_builds_a_working_connector_and_transport(
    state: GmailState, gmail: GmailServer, tmp_path: Path
) -> None:
    """halomail.toml's google mailbox and gmail transport read mail and send through Gmail."""
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(
        f"""
[outgoing]
transport = "gmail"
host = "{gmail.url}"
from_address = "{SUPPORT}"
token_env = "GMAIL_TOKEN"

[[mailboxes]]
name = "Support"
connection = "google"
host = "{gmail.url}"
user_id = "{SUPPORT}"
token_env = "GMAIL_TOKEN"
folder = "INBOX"
processed = "move:Helpdesk/Done"
quarantine_folder = "Helpdesk/Quarantine"
batch_size = 2
""",
        encoding="utf-8",
    )
    config = load_config(config_file, env={"GMAIL_TOKEN": GOOD_TOKEN})
    (mailbox,) = config.mailboxes
    connector = GmailConnector.from_settings(mailbox, max_message_bytes=1_000_000)
    transport = GmailTransport.from_settings(config.outgoing)
    try:
        assert connector.user_id == SUPPORT
        assert connector.page_size == 2
        assert transport.user_id == "me"
        ids = _deliver(state, 3)
        report = _processor(InMemoryTicketRepository(), connector, transport=transport).run_once()
        assert [o.ref for o in report.outcomes] == ids
        assert report.sent.sent == 3
        assert _ids(state, "Helpdesk/Done") == ids
        assert all(f"/users/{SUPPORT}/" in r.path for r in state.calls("GET", "/messages"))
    finally:
        connector.close()
        transport.close()


def test_the_documented_service_account_example_builds_google_auth_providers(
    tmp_path: Path,
) -> None:
    """The docs' credentials_file + subject example gives google-auth with gmail.modify."""
    config_file = tmp_path / "halomail.toml"
    # A credentials file that is not there is refused at load: this one is read at login.
    (tmp_path / "halomail-service-account.json").write_text("{}", encoding="utf-8")
    config_file.write_text(
        """
[[mailboxes]]
name = "Support"
connection = "google"
credentials_file = "halomail-service-account.json"
subject = "support@example.com"
folder = "INBOX"
processed = "move:Deleted Items"
quarantine_folder = "Quarantine"

[outgoing]
transport = "gmail"
credentials_file = "halomail-service-account.json"
subject = "support@example.com"
from_address = "support@example.com"
display_name = "Support"
""",
        encoding="utf-8",
    )
    config = load_config(config_file, env={})
    connector = GmailConnector.from_settings(config.mailboxes[0], max_message_bytes=None)
    transport = GmailTransport.from_settings(config.outgoing)
    for built in (connector, transport):
        provider = built._client._token_provider
        assert isinstance(provider, GoogleTokenProvider)
        assert provider.scopes == [GMAIL_MODIFY]
        assert provider.subject == "support@example.com"
        assert provider.credentials_file == tmp_path / "halomail-service-account.json"
        assert built._client.api_endpoint == "https://gmail.googleapis.com/"
    assert connector.user_id == transport.user_id == "support@example.com"
    assert repr(connector) == "GmailConnector('Support', 'support@example.com', 'INBOX')"
    assert repr(transport) == "GmailTransport('support@example.com')"


def test_settings_errors_name_the_key_to_fix() -> None:
    """Missing credentials, clear-text http and impossible disposals fail with the key path."""

    def mailbox(host: str | None = None, **extra: object) -> MailboxSettings:
        return MailboxSettings(
            name="Support", connection="google", host=host, extra=extra, key_path="mailboxes[3]"
        )

    with pytest.raises(ConfigError) as no_credentials:
        GmailConnector.from_settings(mailbox(user_id=SUPPORT), max_message_bytes=None)
    assert no_credentials.value.key_path == "mailboxes[3].credentials_file"
    with pytest.raises(ConfigError) as half_credentials:
        GmailConnector.from_settings(
            mailbox(refresh_token="r", client_id="c"), max_message_bytes=None
        )
    assert half_credentials.value.key_path == "mailboxes[3].credentials_file"
    with pytest.raises(ConfigError, match="plain http is refused") as clear:
        GmailConnector.from_settings(
            mailbox("http://gmail.example/", token="t"), max_message_bytes=None
        )
    assert clear.value.key_path == "mailboxes[3].host"
    with pytest.raises(ConfigError) as small_page:
        GmailConnector.from_settings(mailbox(token="t", batch_size=0), max_message_bytes=None)
    assert small_page.value.key_path == "mailboxes[3].batch_size"
    with pytest.raises(ConfigError) as no_sender_credentials:
        GmailTransport.from_settings(OutgoingSettings(transport="gmail"))
    assert no_sender_credentials.value.key_path == "outgoing.credentials_file"
    token = StaticTokenProvider("t")
    with pytest.raises(ConfigError, match="expected 'move:<label>' or 'delete'"):
        GmailConnector("Support", token_provider=token, processed="keep")
    with pytest.raises(ConfigError, match="'inbox' is the label being read") as same:
        GmailConnector("Support", token_provider=token, processed="move:inbox")
    assert same.value.key_path == "processed"
    quiet = GmailConnector("Support", token_provider=StaticTokenProvider(GOOD_TOKEN))
    assert GOOD_TOKEN not in repr(quiet) + repr(vars(quiet))


def test_dates_in_retry_after_are_honoured(
    state: GmailState, connect: Callable[..., GmailConnector], sleeps: list[float]
) -> None:
    """A Retry-After given as an HTTP date is waited until that moment."""
    _deliver(state, 1)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    state.fail("GET", "/profile", 429, retry_after=when.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert len(list(connect().fetch())) == 1
    (wait,) = sleeps
    assert 25 <= wait <= 30


# -- check-config --connect --------------------------------------------------------------


def test_probe_reports_the_label_count_and_reads_no_message(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """probe() counts the label's messages (one in Archive is not counted) and reads none."""
    refs = _deliver(state, 2)
    _deliver(state, 1, first=5, labels=("Archive",))
    report = connect().probe()
    assert (report.summary, report.messages) == ("2 messages in INBOX", 2)
    assert _ids(state, "INBOX") == refs
    assert _reads(state, "raw") == []
    assert _reads(state, "minimal") == []


def test_probe_with_a_revoked_token_fails_as_authentication_without_the_token(
    state: GmailState, connect: Callable[..., GmailConnector]
) -> None:
    """A refused token: the channel line says authentication failed and shows no token."""
    state.revoked.add(GOOD_TOKEN)
    result = probe_channel(Channel("mailbox Support", "google", "", connect))
    assert result.ok is False
    assert result.summary.startswith("authentication failed: ")
    assert GOOD_TOKEN not in result.line()


def test_a_transport_probe_gets_a_token_and_sends_nothing(
    state: GmailState, send_as: Callable[..., GmailTransport]
) -> None:
    """The Gmail transport's probe asks only for a token: the API receives nothing to send."""
    report = send_as().probe()
    assert report.summary == "OAuth2 token granted (sending not tried)"
    assert state.sent == []
