"""Exchange through EWS: exchangelib against a local SOAP endpoint, end to end."""

from __future__ import annotations

import base64
import datetime as dt
import email
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import Disposition
from halomail.backends.ews import EwsConnector, EwsRetry, EwsTransport
from halomail.backends.probe import Channel, probe_channel
from halomail.config.loader import MailboxSettings, parse_config
from halomail.errors import (
    AuthenticationError,
    ConfigError,
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
from tests.servers.ews import EwsServer, EwsState, running_ews_server
from tests.servers.token_endpoint import TokenEndpoint

SUPPORT = "support@example.com"
SALES = "sales@example.com"
LOGIN = "svc-halomail"
PASSWORD = "Pa55-w0rd-never-logged"
GOOD_TOKEN = "eyJ0eXAi.good-token-value.sig"
STALE_TOKEN = "eyJ0eXAi.stale-token-value.sig"


class Tokens:
    """A token provider test double: hands out ``tokens`` in turn, or raises ``error``."""

    def __init__(self, *tokens: str, error: Exception | None = None) -> None:
        self._tokens = list(tokens)
        self.error = error
        self.invalidated = 0

    def token(self) -> str:
        if self.error is not None:
            raise self.error
        return self._tokens[0]

    def invalidate(self) -> None:
        self.invalidated += 1
        if len(self._tokens) > 1:
            self._tokens.pop(0)


@pytest.fixture(scope="module")
def ews() -> Iterator[EwsServer]:
    """One EWS endpoint for the module; each test installs its own store."""
    with running_ews_server() as server:
        yield server


@pytest.fixture
def state(ews: EwsServer) -> EwsState:
    """A fresh store with the support and sales mailboxes and their logins."""
    store = EwsState(users={LOGIN: PASSWORD}, tokens={GOOD_TOKEN: SUPPORT})
    store.mailbox(SUPPORT)
    store.mailbox(SALES)
    ews.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the connectors asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def connect(ews: EwsServer, sleeps: list[float]) -> Callable[..., EwsConnector]:
    """Build a connector for the support mailbox on the local endpoint."""

    def build(name: str = "Support", **options: object) -> EwsConnector:
        settings: dict[str, object] = {
            "endpoint": ews.url,
            "address": SUPPORT,
            "username": LOGIN,
            "password": PASSWORD,
            "retry": EwsRetry(sleep=sleeps.append),
        }
        if "token_provider" in options:
            settings.pop("username")
            settings.pop("password")
        settings.update(options)
        return EwsConnector(name, **settings)  # type: ignore[arg-type]

    return build


def _processor(
    repository: TicketRepository,
    *connectors: EwsConnector,
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
        clock=clock,
    )


def _deliver(state: EwsState, count: int, address: str = SUPPORT) -> None:
    for n in range(count):
        state.deliver(
            address,
            make_email(subject=f"Printer {n} is jammed", message_id=f"<jam-{n}@customer.example>"),
        )


# -- reading and disposal --------------------------------------------------------------


def test_three_emails_become_three_tickets_moved_to_deleted_items_and_a_rerun_adds_none(
    state: EwsState, connect: Callable[..., EwsConnector], repository: TicketRepository
) -> None:
    """Three emails become three tickets, move to Deleted Items, and a second run adds none."""
    _deliver(state, 3)
    processor = _processor(repository, connect(page_size=2))

    report = processor.run_once()

    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    summaries = [t.summary for t in repository.list_tickets()]
    assert sorted(summaries) == [
        "Printer 0 is jammed",
        "Printer 1 is jammed",
        "Printer 2 is jammed",
    ]
    assert state.messages(SUPPORT, "inbox") == []
    moved = state.messages(SUPPORT, "deleteditems")
    assert [email.message_from_bytes(m)["Message-ID"] for m in moved] == [
        "<jam-0@customer.example>",
        "<jam-1@customer.example>",
        "<jam-2@customer.example>",
    ]
    assert len(state.calls("FindItem")) == 2  # paged: 2 + 1
    assert all(b"item:MimeContent" in r.body for r in state.calls("GetItem"))

    again = processor.run_once()
    assert again.outcomes == ()
    assert again.mailboxes[0].error is None
    assert len(repository.list_tickets()) == 3


def test_the_folder_is_read_oldest_first_and_addressed_by_item_id_alone(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """Emails are yielded oldest first, and acks send the ItemId without any ChangeKey."""
    _deliver(state, 2)
    connector = connect()
    fetched = list(connector.fetch())
    assert [email.message_from_bytes(f.raw)["Subject"] for f in fetched] == [
        "Printer 0 is jammed",
        "Printer 1 is jammed",
    ]
    connector.ack(fetched[0].ref, Disposition.PROCESSED)
    (move,) = state.calls("MoveItem")
    assert f'Id="{fetched[0].ref}"'.encode() in move.body
    assert b"ChangeKey" not in move.body.split(b"<m:ItemIds>")[1]


@pytest.mark.parametrize(
    ("delete_type", "left_in_trash"),
    [("HardDelete", 0), ("SoftDelete", 0), ("MoveToDeletedItems", 1)],
)
def test_processed_delete_uses_the_configured_delete_type(
    state: EwsState, connect: Callable[..., EwsConnector], delete_type: str, left_in_trash: int
) -> None:
    """``processed = "delete"`` sends DeleteItem with the configured DeleteType."""
    _deliver(state, 1)
    report = _processor(
        InMemoryTicketRepository(), connect(processed="delete", delete_type=delete_type)
    ).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    (delete,) = state.calls("DeleteItem")
    assert f'DeleteType="{delete_type}"'.encode() in delete.body
    assert state.messages(SUPPORT, "inbox") == []
    assert len(state.messages(SUPPORT, "deleteditems")) == left_in_trash


def test_a_named_processed_folder_is_created_once_under_the_top_of_the_store(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """``move:Handled`` creates the folder once, then finds it, even from a new connector."""
    _deliver(state, 2)
    repository = InMemoryTicketRepository()
    _processor(repository, connect(processed="move:Handled")).run_once()
    assert len(state.calls("CreateFolder")) == 1
    handled = state.folder_named(SUPPORT, "Handled")
    assert handled is not None
    assert handled.parent == state.distinguished(SUPPORT, "msgfolderroot").id  # type: ignore[union-attr]
    assert len(state.messages(SUPPORT, "Handled")) == 2

    state.deliver(SUPPORT, make_email(subject="Another", message_id="<another@customer.example>"))
    _processor(repository, connect(processed="move:Handled")).run_once()
    assert len(state.calls("CreateFolder")) == 1
    assert len(state.messages(SUPPORT, "Handled")) == 3


def test_a_processed_folder_deleted_between_runs_is_created_again(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """When the remembered folder is gone, the move finds no folder, re-creates it, and moves."""
    _deliver(state, 1)
    processor = _processor(InMemoryTicketRepository(), connect(processed="move:Handled"))
    processor.run_once()
    gone = state.folder_named(SUPPORT, "Handled")
    assert gone is not None
    del state.folders[gone.id]  # an administrator deleted it

    state.deliver(SUPPORT, make_email(subject="Later", message_id="<later@customer.example>"))
    report = processor.run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert len(state.calls("CreateFolder")) == 2
    (later,) = state.messages(SUPPORT, "Handled")
    assert b"<later@customer.example>" in later
    assert state.messages(SUPPORT, "inbox") == []


def test_a_named_source_folder_is_read(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """``folder = "Inbox/Support"`` reads that subfolder of the inbox, not the inbox."""
    state.create_folder(SUPPORT, "Support", parent_key="inbox")
    state.deliver(SUPPORT, make_email(subject="In the subfolder"), folder="Support")
    state.deliver(SUPPORT, make_email(subject="In the inbox", message_id="<other@x.example>"))
    fetched = list(connect(folder="Inbox/Support").fetch())
    assert [email.message_from_bytes(f.raw)["Subject"] for f in fetched] == ["In the subfolder"]


def test_a_missing_source_folder_fails_the_mailbox_with_its_name(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """Reading a folder that does not exist names it, and creates nothing."""
    report = _processor(InMemoryTicketRepository(), connect(folder="Nowhere")).run_once()
    assert "there is no folder 'Nowhere'" in (report.mailboxes[0].error or "")
    assert state.calls("CreateFolder") == []


def test_an_email_over_the_limit_is_quarantined_without_its_mime_being_requested(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """An email whose item:Size is over the limit is never read and moves to Quarantine."""
    state.deliver(SUPPORT, make_email(body="x" * 20_000, message_id="<big@customer.example>"))
    _deliver(state, 1)
    big_id = next(iter(state.items))
    report = _processor(InMemoryTicketRepository(), connect(max_message_bytes=10_000)).run_once()
    assert [(o.outcome, o.reason) for o in report.outcomes] == [
        (Outcome.QUARANTINED, "too-large"),
        (Outcome.CREATED, None),
    ]
    assert all(big_id.encode() not in r.body for r in state.calls("GetItem"))
    (quarantined,) = state.messages(SUPPORT, "Quarantine")
    assert b"<big@customer.example>" in quarantined


def test_an_email_already_moved_away_counts_as_handled(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """An ack answered ErrorItemNotFound (someone moved the email first) is not an error."""
    _deliver(state, 1)
    connector = connect()
    (fetched,) = list(connector.fetch())
    del state.items[fetched.ref]  # another client moved it meanwhile
    connector.ack(fetched.ref, Disposition.PROCESSED)
    (move,) = state.calls("MoveItem")
    assert fetched.ref.encode() in move.body


def test_retry_leaves_the_email_untouched(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A RETRY ack sends nothing to the server."""
    _deliver(state, 1)
    connector = connect()
    (fetched,) = list(connector.fetch())
    connector.ack(fetched.ref, Disposition.RETRY)
    assert state.calls("MoveItem") == []
    assert state.calls("DeleteItem") == []
    assert len(state.messages(SUPPORT, "inbox")) == 1


@pytest.fixture
def ntlm_login(state: EwsState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Turn on NTLM at the server, with one domain account; its login name."""
    accounts = tmp_path / "ntlm-users.txt"
    accounts.write_text(f"CORP:{LOGIN}:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(accounts))  # read by pyspnego's acceptor
    state.ntlm = True
    return f"CORP\\{LOGIN}"


def test_an_ntlm_login_completes_the_handshake_on_one_connection(
    state: EwsState, connect: Callable[..., EwsConnector], ntlm_login: str
) -> None:
    """Offered NTLM, the connector authenticates with a real NTLM handshake and reads."""
    _deliver(state, 2)
    report = _processor(InMemoryTicketRepository(), connect(username=ntlm_login)).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 2
    assert {r.principal for r in state.requests} == {ntlm_login.lower()}
    # NTLM authenticated the kept-alive connection: later calls carry no credentials.
    assert any(r.authorization.startswith("NTLM ") for r in state.requests)
    assert any(r.authorization == "" for r in state.requests)
    assert state.messages(SUPPORT, "inbox") == []


def test_impersonation_names_the_mailbox_in_every_request(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """With access_type impersonation, every call carries ExchangeImpersonation for the mailbox."""
    _deliver(state, 1)
    report = _processor(InMemoryTicketRepository(), connect(access_type="impersonation")).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert {r.impersonated for r in state.requests} == {SUPPORT}
    assert {r.principal for r in state.requests} == {LOGIN}


# -- faults: nothing lost, nothing doubled ---------------------------------------------


def test_server_busy_back_off_is_waited_out_and_nothing_is_lost(
    state: EwsState, connect: Callable[..., EwsConnector], sleeps: list[float]
) -> None:
    """ErrorServerBusy with BackOffMilliseconds is waited out as asked, then the run completes."""
    _deliver(state, 3)
    state.fail("FindItem", "busy", value=1500)
    state.fail("GetItem", "busy", value=250, times=2)
    state.fail("MoveItem", "http503", value=2)
    report = _processor(InMemoryTicketRepository(), connect()).run_once()
    assert report.mailboxes[0].error is None
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED] * 3
    assert sleeps == [1.5, 0.25, 0.25, 2.0]
    assert state.messages(SUPPORT, "inbox") == []
    assert len(state.messages(SUPPORT, "deleteditems")) == 3


def test_throttling_past_the_budget_fails_the_run_and_the_next_run_loses_nothing(
    state: EwsState, connect: Callable[..., EwsConnector], sleeps: list[float]
) -> None:
    """A back-off longer than max_wait ends the run untouched; a run within the back-off
    leaves the mailbox alone, the run after it takes every email."""
    _deliver(state, 3)
    state.fail("GetItem", "busy", value=600_000)
    repository = InMemoryTicketRepository()
    now = [utcnow()]
    processor = _processor(repository, connect(), clock=lambda: now[0])

    first = processor.run_once()
    assert "server is busy and asked to wait 600 s" in (first.mailboxes[0].error or "")
    assert first.outcomes == ()
    assert sleeps == []
    assert len(state.messages(SUPPORT, "inbox")) == 3

    now[0] += dt.timedelta(seconds=599)
    waiting = processor.run_once()
    assert waiting.outcomes == ()
    assert "next attempt" in (waiting.mailboxes[0].note or waiting.mailboxes[0].error or "")

    now[0] += dt.timedelta(seconds=2)
    second = processor.run_once()
    assert [o.outcome for o in second.outcomes] == [Outcome.CREATED] * 3
    assert len(repository.list_tickets()) == 3


def test_a_429_retry_after_is_honoured_until_the_attempts_run_out(
    state: EwsState, connect: Callable[..., EwsConnector], sleeps: list[float]
) -> None:
    """HTTP 429 with Retry-After is waited out each time, and after max_attempts it is transient."""
    state.fail("FindItem", "http429", value=3, times=10)
    connector = connect(retry=EwsRetry(max_attempts=3, sleep=sleeps.append))
    with pytest.raises(TransientConnectorError, match="busy"):
        list(connector.fetch())
    assert sleeps == [3.0, 3.0]
    assert len(state.calls("FindItem")) == 3


def test_a_failure_mid_listing_loses_nothing_and_doubles_nothing(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A connection dropped on the second FindItem page processes nothing; the next run all."""
    _deliver(state, 3)
    state.fail("FindItem", "drop", nth=2)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(page_size=2))

    first = processor.run_once()
    assert "TransientConnectorError" in (first.mailboxes[0].error or "")
    assert first.outcomes == ()
    assert len(state.messages(SUPPORT, "inbox")) == 3

    second = processor.run_once()
    assert [o.outcome for o in second.outcomes] == [Outcome.CREATED] * 3
    assert len(repository.list_tickets()) == 3
    assert state.messages(SUPPORT, "inbox") == []


def test_a_failure_mid_reading_keeps_what_was_done_and_the_next_run_finishes(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """An HTTP 500 on the second GetItem keeps the first ticket; the next run adds the other two."""
    _deliver(state, 3)
    state.fail("GetItem", "http500", nth=2)
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect(batch_size=1))

    first = processor.run_once()
    assert [o.outcome for o in first.outcomes] == [Outcome.CREATED]
    assert first.mailboxes[0].error is not None
    assert len(state.messages(SUPPORT, "inbox")) == 2

    second = processor.run_once()
    assert [o.outcome for o in second.outcomes] == [Outcome.CREATED] * 2
    assert sorted(t.summary for t in repository.list_tickets()) == [
        "Printer 0 is jammed",
        "Printer 1 is jammed",
        "Printer 2 is jammed",
    ]


def test_a_failed_move_is_retried_by_the_next_run_without_a_second_ticket(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """When MoveItem fails after the commit, the next run skips the duplicate and moves it."""
    _deliver(state, 1)
    state.fail("MoveItem", "error", code="ErrorMailboxStoreUnavailable")
    repository = InMemoryTicketRepository()
    processor = _processor(repository, connect())
    assert [o.outcome for o in processor.run_once().outcomes] == [Outcome.CREATED]
    assert len(state.messages(SUPPORT, "inbox")) == 1

    second = processor.run_once()
    assert [(o.outcome, o.reason) for o in second.outcomes] == [(Outcome.SKIPPED, "duplicate")]
    assert state.messages(SUPPORT, "inbox") == []
    assert len(repository.list_tickets()) == 1


# -- logins and tokens -----------------------------------------------------------------


def test_a_refused_token_is_replaced_once_and_the_fresh_one_is_used(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """On a 401 the provider is invalidated, a fresh token fetched, and the call retried."""
    _deliver(state, 1)
    tokens = Tokens(STALE_TOKEN, GOOD_TOKEN)
    report = _processor(InMemoryTicketRepository(), connect(token_provider=tokens)).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert tokens.invalidated == 1
    assert {r.authorization for r in state.requests} == {f"Bearer {GOOD_TOKEN}"}


def test_a_token_refused_twice_is_an_authentication_error_with_advice(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A fresh token refused again raises AuthenticationError telling the admin what to check."""
    tokens = Tokens(STALE_TOKEN)
    with pytest.raises(AuthenticationError, match="app registration") as raised:
        list(connect(token_provider=tokens).fetch())
    assert tokens.invalidated == 1
    assert raised.value.mailbox == "Support"
    assert STALE_TOKEN not in str(raised.value)


def test_a_revoked_grant_fails_only_that_mailbox(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A provider that raises AuthenticationError fails its mailbox; the other is processed."""
    _deliver(state, 1, SALES)
    _deliver(state, 1, SUPPORT)
    revoked = Tokens(error=AuthenticationError("the refresh token was revoked: sign in again"))
    sales = connect("Sales", address=SALES, token_provider=revoked)
    support = connect("Support", token_provider=StaticTokenProvider(GOOD_TOKEN))
    processor = _processor(InMemoryTicketRepository(), sales, support)

    report = processor.run_once()

    by_name = {m.name: m for m in report.mailboxes}
    assert "AuthenticationError: Sales: the refresh token was revoked" in (
        by_name["Sales"].error or ""
    )
    assert by_name["Support"].error is None
    assert [o.outcome for o in by_name["Support"].outcomes] == [Outcome.CREATED]
    assert len(state.messages(SALES, "inbox")) == 1
    health = {h.name: h for h in processor.health()}
    assert health["Sales"].consecutive_failures == 1
    assert health["Support"].consecutive_failures == 0


def test_msal_tokens_from_settings_and_a_revoked_app_fails_only_its_mailbox(
    state: EwsState, ews: EwsServer, token_endpoint: TokenEndpoint
) -> None:
    """Two app-only mailboxes built from settings: the revoked app's fails, the other reads."""
    token_endpoint.register_client("ews-app", secret="app-secret-value")
    token_endpoint.register_client("revoked-app", secret="app-secret-value")
    token_endpoint.revoke_client("revoked-app")
    state.accept_token = token_endpoint.issued.__contains__
    _deliver(state, 2, SUPPORT)
    _deliver(state, 1, SALES)

    def settings(name: str, address: str, client_id: str, index: int) -> MailboxSettings:
        return MailboxSettings(
            name=name,
            connection="ews",
            host=ews.url,
            tls_ca_file=token_endpoint.ca_file,
            extra={
                "auth": "xoauth2",
                "tenant_id": token_endpoint.tenant,
                "client_id": client_id,
                "client_secret": "app-secret-value",
                "authority": token_endpoint.authority,
                "user_id": address,
                "access_type": "impersonation",
            },
            key_path=f"mailboxes[{index}]",
        )

    support = EwsConnector.from_settings(
        settings("Support", SUPPORT, "ews-app", 0), max_message_bytes=None
    )
    sales = EwsConnector.from_settings(
        settings("Sales", SALES, "revoked-app", 1), max_message_bytes=None
    )
    report = _processor(InMemoryTicketRepository(), support, sales).run_once()

    by_name = {m.name: m for m in report.mailboxes}
    assert [o.outcome for o in by_name["Support"].outcomes] == [Outcome.CREATED] * 2
    assert by_name["Support"].error is None
    error = by_name["Sales"].error or ""
    assert error.startswith("AuthenticationError: Sales:")
    assert "app-secret-value" not in error
    assert len(state.messages(SALES, "inbox")) == 1
    assert {r.impersonated for r in state.requests} == {SUPPORT}
    assert {r.authorization for r in state.requests} == {f"Bearer {token_endpoint.issued[0]}"}
    grants = token_endpoint.token_requests("client_credentials")
    assert {g.form.get("client_id") for g in grants} == {"ews-app", "revoked-app"}
    assert all("https://outlook.office365.com/.default" in g.form["scope"] for g in grants)
    assert "Create a new one in the app registration (revoked-app)" in error


def test_a_wrong_password_names_the_login_and_never_the_password(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A refused password is an AuthenticationError naming the login, not the secret."""
    with pytest.raises(AuthenticationError) as raised:
        list(connect(password="wrong-password-123").fetch())
    message = str(raised.value)
    assert repr(LOGIN) in message
    assert "not locked out" in message
    assert "wrong-password-123" not in message


def test_no_secret_reaches_any_log_line(
    state: EwsState,
    connect: Callable[..., EwsConnector],
    ews: EwsServer,
    ntlm_login: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, in every logger (exchangelib's included), no password, token or Basic login."""
    caplog.set_level(logging.DEBUG)
    _deliver(state, 2)
    _deliver(state, 1, SALES)
    sales = connect("Sales", address=SALES, token_provider=Tokens(STALE_TOKEN, GOOD_TOKEN))
    state.tokens[GOOD_TOKEN] = SALES
    basic = connect(auth="basic")
    ntlm = connect("Support NTLM", username=ntlm_login, processed="move:Handled")
    processor = _processor(InMemoryTicketRepository(), basic, sales)
    processor.run_once()
    _deliver(state, 1)
    _processor(InMemoryTicketRepository(), ntlm).run_once()
    with pytest.raises(AuthenticationError):
        list(connect("Bad", password="wrong-password-123", auth="basic").fetch())
    transport = EwsTransport(
        endpoint=ews.url, address=SUPPORT, username=LOGIN, password=PASSWORD, auth="basic"
    )
    transport.send(compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token="t"))

    shown = [r.authorization.split(" ", 1) for r in state.requests if r.authorization]
    schemes = {scheme for scheme, _ in shown}
    assert schemes == {"Basic", "Bearer", "NTLM"}
    secrets = {PASSWORD, GOOD_TOKEN, STALE_TOKEN, "wrong-password-123"}
    secrets |= {value for scheme, value in shown if scheme in ("Basic", "Bearer")}
    secrets.add(base64.b64encode(f"{LOGIN}:wrong-password-123".encode()).decode())
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    leaks = {s for s in secrets for line in lines if s in line}
    assert leaks == set()
    # NTLM messages (challenge responses, not passwords) appear only in pyspnego's own
    # DEBUG records of each handshake step, never in exchangelib's header logs.
    handshakes = {value for scheme, value in shown if scheme == "NTLM"}
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("spnego")]
    assert {h for h in handshakes for line in ours if h in line} == set()
    # The check is real: exchangelib did log request headers, with the value masked.
    assert any(r.name.startswith("exchangelib") for r in caplog.records)
    assert any("'Authorization': '[redacted]'" in line for line in lines)


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


def test_sending_keeps_our_headers_and_sends_only(state: EwsState, ews: EwsServer) -> None:
    """CreateItem carries our MIME as composed (Message-ID, loop header); SendOnly on request."""
    transport = EwsTransport(
        endpoint=ews.url, address=SUPPORT, username=LOGIN, password=PASSWORD, save_copy=False
    )
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    transport.send(outgoing)
    (sent,) = state.sent
    assert sent.disposition == "SendOnly"
    assert sent.mime == outgoing.data
    message = email.message_from_bytes(sent.mime)
    assert message["Message-ID"] == "<halomail.7.abc@helpdesk.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Halomail-Loop"] == loop_signature(
        LOOP_TOKEN, "halomail.7.abc@helpdesk.example"
    )
    assert message["In-Reply-To"] == "<jam-0@customer.example>"
    assert sent.bcc == []
    assert state.messages(SUPPORT, "sentitems") == []


def test_send_and_save_copy_keeps_a_copy_and_adds_envelope_only_recipients_as_bcc(
    state: EwsState, ews: EwsServer
) -> None:
    """SendAndSaveCopy files a copy in Sent Items; a recipient absent from To/Cc goes as Bcc."""
    transport = EwsTransport(
        endpoint=ews.url, address=SUPPORT, username=LOGIN, password=PASSWORD, save_copy=True
    )
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    outgoing = type(outgoing)(
        outgoing.message_id,
        outgoing.envelope_from,
        (*outgoing.recipients, "audit@customer.example"),
        outgoing.data,
    )
    transport.send(outgoing)
    (sent,) = state.sent
    assert sent.disposition == "SendAndSaveCopy"
    assert sent.bcc == ["audit@customer.example"]
    assert state.messages(SUPPORT, "sentitems") == [outgoing.data]


def test_a_refused_recipient_is_permanent_and_busy_past_the_budget_is_transient(
    state: EwsState, ews: EwsServer
) -> None:
    """ErrorInvalidRecipients is a permanent failure; a long back-off is a transient one."""
    transport = EwsTransport(
        endpoint=ews.url,
        address=SUPPORT,
        username=LOGIN,
        password=PASSWORD,
        retry=EwsRetry(sleep=lambda _: None),
    )
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    state.fail("CreateItem", "error", code="ErrorInvalidRecipients")
    with pytest.raises(PermanentTransportError, match="ErrorInvalidRecipients"):
        transport.send(outgoing)
    state.fail("CreateItem", "busy", value=900_000)
    with pytest.raises(TransientTransportError, match="busy"):
        transport.send(outgoing)
    assert state.sent == []


def test_a_refused_password_on_sending_stops_the_transport(state: EwsState, ews: EwsServer) -> None:
    """A wrong password when sending is a TransportConfigError, without the password."""
    transport = EwsTransport(
        endpoint=ews.url,
        address=SUPPORT,
        username=LOGIN,
        password="wrong-password-456",
        retry=EwsRetry(sleep=lambda _: None),
    )
    outgoing = compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)
    with pytest.raises(TransportConfigError) as raised:
        transport.send(outgoing)
    assert "wrong-password-456" not in str(raised.value)
    assert state.sent == []


# -- configuration ---------------------------------------------------------------------


def _config(ews: EwsServer, tmp_path: Path, **mailbox: object) -> dict[str, object]:
    host = ews.url.removeprefix("http://").partition("/")[0]
    name, _, port = host.partition(":")
    table: dict[str, object] = {
        "name": "Support",
        "connection": "ews",
        "host": name,
        "port": int(port),
        "security": "none",
        "username": LOGIN,
        "password_env": "EWS_PASSWORD",
        "user_id": SUPPORT,
        "processed": "move:Handled",
    }
    table.update(mailbox)
    return {"mailboxes": [table]}


def test_from_settings_reads_halomail_toml_settings(
    state: EwsState, ews: EwsServer, tmp_path: Path
) -> None:
    """A ``connection = "ews"`` mailbox builds a working connector from its settings."""
    config = parse_config(_config(ews, tmp_path), base_dir=tmp_path, env={"EWS_PASSWORD": PASSWORD})
    connector = EwsConnector.from_settings(config.mailboxes[0], max_message_bytes=1_000_000)
    assert repr(connector) == f"EwsConnector('Support', {ews.url!r}, 'INBOX')"
    assert PASSWORD not in repr(connector)
    _deliver(state, 1)
    report = _processor(InMemoryTicketRepository(), connector).run_once()
    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert len(state.messages(SUPPORT, "Handled")) == 1


def test_from_settings_with_a_static_token_logs_in_with_oauth(
    state: EwsState, ews: EwsServer, tmp_path: Path
) -> None:
    """``auth = "xoauth2"`` with ``token_env`` sends that bearer token."""
    table = _config(ews, tmp_path, auth="xoauth2", token_env="EWS_TOKEN")
    del table["mailboxes"][0]["password_env"]  # type: ignore[index]
    config = parse_config(table, base_dir=tmp_path, env={"EWS_TOKEN": GOOD_TOKEN})
    connector = EwsConnector.from_settings(config.mailboxes[0], max_message_bytes=None)
    assert connector.list_refs() == []
    assert {r.authorization for r in state.requests} == {f"Bearer {GOOD_TOKEN}"}


def test_from_settings_needs_the_mailbox_address(ews: EwsServer, tmp_path: Path) -> None:
    """A DOMAIN\\user login without user_id is refused with the key path to fix."""
    table = _config(ews, tmp_path, username="CORP\\svc-halomail")
    del table["mailboxes"][0]["user_id"]  # type: ignore[index]
    with pytest.raises(ConfigError) as raised:  # refused as the file loads, before any build
        parse_config(table, base_dir=tmp_path, env={"EWS_PASSWORD": PASSWORD})
    assert raised.value.key_path == "mailboxes[0].user_id"


def test_transport_from_settings_sends_from_the_from_address(
    state: EwsState, ews: EwsServer, tmp_path: Path
) -> None:
    """``transport = "ews"`` sends through the from_address mailbox with the login given."""
    config = parse_config(
        {
            "outgoing": {
                "transport": "ews",
                "host": ews.url,
                "username": LOGIN,
                "password_env": "EWS_PASSWORD",
                "from_address": SUPPORT,
            }
        },
        base_dir=tmp_path,
        env={"EWS_PASSWORD": PASSWORD},
    )
    transport = EwsTransport.from_settings(config.outgoing)
    transport.send(compose(_outbox_mail(), SenderIdentity(SUPPORT, "Support"), loop_token="t"))
    (sent,) = state.sent
    assert sent.mailbox == SUPPORT
    assert state.calls("CreateItem")[0].anchor == SUPPORT


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"processed": "archive"}, "processed"),
        ({"access_type": "owner"}, "access_type"),
        ({"delete_type": "Shred"}, "delete_type"),
        ({"auth": "kerberos"}, "auth"),
        ({"password": None}, "password"),
        ({"address": "support"}, "user_id"),
    ],
)
def test_invalid_arguments_are_config_errors_naming_the_key(
    ews: EwsServer, options: dict[str, object], key: str
) -> None:
    """Each invalid argument is refused at construction with the key it concerns."""
    arguments: dict[str, object] = {
        "endpoint": ews.url,
        "address": SUPPORT,
        "username": LOGIN,
        "password": PASSWORD,
    }
    arguments.update(options)
    with pytest.raises(ConfigError) as raised:
        EwsConnector("Support", **arguments)  # type: ignore[arg-type]
    assert raised.value.key_path == key


# -- check-config --connect --------------------------------------------------------------


def test_probe_reports_the_folder_count_and_moves_nothing(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """probe() logs in and counts the folder's emails; every email stays in the inbox."""
    _deliver(state, 3)
    report = connect().probe()
    assert (report.summary, report.messages) == ("3 messages in Inbox", 3)
    assert len(state.messages(SUPPORT, "inbox")) == 3


def test_probe_with_a_wrong_password_fails_as_authentication_without_it(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A refused password: the channel line says authentication failed and shows no password."""
    wrong = "Wrong-EWS-Password-1"
    result = probe_channel(Channel("mailbox Support", "ews", "", lambda: connect(password=wrong)))
    assert result.ok is False
    assert result.summary.startswith("authentication failed: ")
    assert wrong not in result.line()
