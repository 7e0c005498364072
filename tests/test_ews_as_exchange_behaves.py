"""EWS as Exchange really behaves (#16): app-only tokens, lost answers, waits, deletes.

exchangelib against the local EWS endpoint of ``tests/servers/ews.py``, which refuses an
application's token without impersonation as Exchange Online does, can carry out a
request and then lose its answer, and keeps what each kind of delete leaves behind.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.ews import EwsConnector, EwsRetry, EwsTransport
from halomail.config.loader import MailboxSettings, parse_config
from halomail.errors import (
    AmbiguousSendError,
    ConnectorError,
    TransientConnectorError,
    TransientTransportError,
)
from halomail.outbound.outbox import SenderIdentity, compose
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.ews import EwsServer, EwsState, running_ews_server
from tests.servers.token_endpoint import TokenEndpoint

SUPPORT = "support@example.com"
SALES = "sales@example.com"
LOGIN = "svc-halomail"
PASSWORD = "Pa55-w0rd-never-logged"
APP = "helpdesk-app"
APP_TOKEN = "eyJ0eXAi.app-only-token.sig"
MESSAGE_ID = "halomail.7.abc@helpdesk.example"


@pytest.fixture(scope="module")
def ews() -> Iterator[EwsServer]:
    """One EWS endpoint for the module; each test installs its own store."""
    with running_ews_server() as server:
        yield server


@pytest.fixture
def state(ews: EwsServer) -> EwsState:
    """A fresh store: two mailboxes, a password login and an application's token."""
    store = EwsState(users={LOGIN: PASSWORD}, tokens={APP_TOKEN: APP})
    store.apps.add(APP)
    store.mailbox(SUPPORT)
    store.mailbox(SALES)
    ews.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the client asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def connect(ews: EwsServer, sleeps: list[float]) -> Callable[..., EwsConnector]:
    """Build a connector for the support mailbox with the password login."""

    def build(**options: object) -> EwsConnector:
        settings: dict[str, object] = {
            "endpoint": ews.url,
            "address": SUPPORT,
            "username": LOGIN,
            "password": PASSWORD,
            "retry": EwsRetry(sleep=sleeps.append),
        }
        settings.update(options)
        return EwsConnector("Support", **settings)  # type: ignore[arg-type]

    return build


@pytest.fixture
def transport(ews: EwsServer, sleeps: list[float]) -> EwsTransport:
    """A transport sending from the support mailbox, with the default settings."""
    return EwsTransport(
        endpoint=ews.url,
        address=SUPPORT,
        username=LOGIN,
        password=PASSWORD,
        retry=EwsRetry(sleep=sleeps.append),
    )


def _run(connector: EwsConnector) -> list[Outcome]:
    processor = MailProcessor(
        InMemoryTicketRepository(),
        [Mailbox(connector)],
        ProcessorSettings(
            loop_token=LOOP_TOKEN,
            domain="helpdesk.example",
            default_sender=SenderIdentity(SUPPORT, "Support"),
        ),
    )
    report = processor.run_once()
    assert report.mailboxes[0].error is None, report.mailboxes[0].error
    return [o.outcome for o in report.outcomes]


def _deliver(state: EwsState, address: str = SUPPORT) -> None:
    state.deliver(address, make_email(subject="Printer is jammed", message_id="<jam@cust.example>"))


def _reply() -> object:
    mail = OutboxMail(
        id=1,
        message_id=MESSAGE_ID,
        to=("alice@customer.example",),
        subject="[ID:7] Printer is jammed",
        text="We have logged your request.",
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
        ticket_id=7,
    )
    return compose(mail, SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)


# -- app-only tokens: impersonation ------------------------------------------------------


def test_an_app_only_token_without_impersonation_is_refused_with_what_to_set(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """The server refuses an application's token sent as delegate; the error says to impersonate."""
    connector = connect(
        username=None,
        password=None,
        token_provider=StaticTokenProvider(APP_TOKEN),
        access_type="delegate",
    )
    with pytest.raises(ConnectorError, match="set access_type = 'impersonation'") as raised:
        list(connector.fetch())
    assert raised.value.mailbox == "Support"
    assert [r.impersonated for r in state.requests] == [None]


def test_app_only_tokens_from_settings_impersonate_the_mailbox_by_default(
    state: EwsState, ews: EwsServer, token_endpoint: TokenEndpoint
) -> None:
    """A client-credentials mailbox without access_type impersonates it, and is read."""
    token_endpoint.register_client("ews-app", secret="app-secret-value")
    state.accept_token = token_endpoint.issued.__contains__
    _deliver(state)
    settings = MailboxSettings(
        name="Support",
        connection="ews",
        host=ews.url,
        tls_ca_file=token_endpoint.ca_file,
        extra={
            "auth": "xoauth2",
            "tenant_id": token_endpoint.tenant,
            "client_id": "ews-app",
            "client_secret": "app-secret-value",
            "authority": token_endpoint.authority,
            "user_id": SUPPORT,
        },
        key_path="mailboxes[0]",
    )
    connector = EwsConnector.from_settings(settings, max_message_bytes=None)
    assert _run(connector) == [Outcome.CREATED]
    assert {r.impersonated for r in state.requests} == {SUPPORT}
    assert state.messages(SUPPORT, "inbox") == []


def test_a_password_login_stays_delegate_by_default(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """A service account's password login without access_type reads as delegate."""
    _deliver(state)
    assert _run(connect()) == [Outcome.CREATED]
    assert {r.impersonated for r in state.requests} == {None}


def test_an_app_outside_its_mailbox_scope_is_told_the_current_permission_model(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """Access denied to an app names full_access_as_app and its scoping, not the removed role."""
    state.app_scope[APP] = {SALES}
    connector = connect(
        username=None,
        password=None,
        token_provider=StaticTokenProvider(APP_TOKEN),
        access_type="impersonation",
    )
    with pytest.raises(ConnectorError) as raised:
        list(connector.fetch())
    message = str(raised.value)
    assert "full_access_as_app" in message
    assert "application access policy or RBAC for Applications" in message
    assert "ApplicationImpersonation" not in message
    assert {r.impersonated for r in state.requests} == {SUPPORT}


def test_an_exchange_online_endpoint_warns_that_ews_is_blocked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Building a connector for outlook.office365.com logs the October 2026 block and Graph."""
    with caplog.at_level(logging.WARNING, logger="halomail.backends.ews"):
        EwsConnector(
            "Support",
            endpoint="https://outlook.office365.com/EWS/Exchange.asmx",
            address=SUPPORT,
            token_provider=StaticTokenProvider(APP_TOKEN),
        )
    (record,) = caplog.records
    assert "blocks EWS from 1 October 2026" in record.getMessage()
    assert "connection = 'office365'" in record.getMessage()


def test_an_on_premises_endpoint_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """An Exchange Server endpoint builds without any warning."""
    with caplog.at_level(logging.WARNING, logger="halomail.backends.ews"):
        EwsConnector(
            "Support",
            endpoint="https://mail.contoso.com/EWS/Exchange.asmx",
            address=SUPPORT,
            username=LOGIN,
            password=PASSWORD,
        )
    assert caplog.records == []


def test_check_config_warns_about_exchange_online_and_exits_0(tmp_path: Path) -> None:
    """``halomail check-config`` on an Exchange Online EWS mailbox prints the warning."""
    config = tmp_path / "halomail.toml"
    config.write_text(
        "[[mailboxes]]\n"
        'name = "Support"\n'
        'connection = "ews"\n'
        'host = "outlook.office365.com"\n'
        'username = "svc-halomail@contoso.com"\n'
        'password_env = "EWS_PASSWORD"\n'
        'user_id = "support@contoso.com"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "EWS_PASSWORD": "not-a-real-password"},
    )
    assert result.returncode == 0, result.stderr
    assert "OK (1 mailboxes" in result.stdout
    assert "Support: https://outlook.office365.com/EWS/Exchange.asmx is Exchange Online" in (
        result.stderr
    )
    assert "blocks EWS from 1 October 2026" in result.stderr


# -- sending: a lost answer is ambiguous ---------------------------------------------------


@pytest.mark.parametrize("kind", ["drop", "http500", "http503", "http504"])
def test_a_send_whose_answer_is_lost_is_ambiguous_and_then_found_in_sent_items(
    state: EwsState, transport: EwsTransport, sleeps: list[float], kind: str
) -> None:
    """Delivered, then the answer fails: AmbiguousSendError, no second try, was_sent finds it."""
    state.fail("CreateItem", kind, after=True)
    with pytest.raises(AmbiguousSendError, match=MESSAGE_ID):
        transport.send(_reply())  # type: ignore[arg-type]
    assert len(state.sent) == 1
    assert len(state.calls("CreateItem")) == 1
    assert sleeps == []
    assert transport.was_sent(MESSAGE_ID) is True
    assert transport.was_sent(f"<{MESSAGE_ID}>") is True


def test_a_send_that_times_out_is_ambiguous(state: EwsState, ews: EwsServer) -> None:
    """A CreateItem carried out but answered after the client's timeout is ambiguous."""
    transport = EwsTransport(
        endpoint=ews.url, address=SUPPORT, username=LOGIN, password=PASSWORD, timeout=0.5
    )
    state.fail("CreateItem", "stall", value=2, after=True)
    with pytest.raises(AmbiguousSendError):
        transport.send(_reply())  # type: ignore[arg-type]
    assert len(state.sent) == 1
    assert len(state.calls("CreateItem")) == 1


def test_a_throttled_send_is_not_ambiguous_and_carries_the_wait(
    state: EwsState, transport: EwsTransport
) -> None:
    """ErrorServerBusy past the budget refuses before any work: transient, with retry_after."""
    state.fail("CreateItem", "busy", value=900_000)
    with pytest.raises(TransientTransportError) as raised:
        transport.send(_reply())  # type: ignore[arg-type]
    assert not isinstance(raised.value, AmbiguousSendError)
    assert raised.value.retry_after == 900.0
    assert state.sent == []


def test_a_send_to_a_server_that_is_not_there_is_not_ambiguous() -> None:
    """A connection never made cannot have sent anything: a plain transient error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = EwsTransport(
        endpoint=f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
        address=SUPPORT,
        username=LOGIN,
        password=PASSWORD,
    )
    with pytest.raises(TransientTransportError) as raised:
        transport.send(_reply())  # type: ignore[arg-type]
    assert not isinstance(raised.value, AmbiguousSendError)


def test_was_sent_is_false_for_mail_not_sent_and_a_failed_lookup_is_transient(
    state: EwsState, transport: EwsTransport
) -> None:
    """Only a copy with the Message-ID counts; a lookup the server refuses raises, with the wait."""
    transport.send(_reply())  # type: ignore[arg-type]
    assert transport.was_sent("someone-else@helpdesk.example") is False
    (lookup,) = state.calls("FindItem")
    assert b"message:InternetMessageId" in lookup.body
    state.fail("FindItem", "busy", value=600_000)
    with pytest.raises(TransientTransportError) as raised:
        transport.was_sent(MESSAGE_ID)
    assert raised.value.retry_after == 600.0


def test_was_sent_without_a_saved_copy_finds_nothing(state: EwsState, ews: EwsServer) -> None:
    """With save_copy = false Exchange keeps no copy, so the lookup cannot find the mail."""
    transport = EwsTransport(
        endpoint=ews.url, address=SUPPORT, username=LOGIN, password=PASSWORD, save_copy=False
    )
    transport.send(_reply())  # type: ignore[arg-type]
    assert len(state.sent) == 1
    assert transport.was_sent(MESSAGE_ID) is False


# -- waits the server asked for ------------------------------------------------------------


def test_a_back_off_past_the_budget_carries_the_wait_in_retry_after(
    state: EwsState, connect: Callable[..., EwsConnector], sleeps: list[float]
) -> None:
    """BackOffMilliseconds too long to wait out is raised as retry_after, in seconds."""
    _deliver(state)
    state.fail("FindItem", "busy", value=600_000)
    with pytest.raises(TransientConnectorError) as raised:
        list(connect().fetch())
    assert raised.value.retry_after == 600.0
    assert raised.value.mailbox == "Support"
    assert sleeps == []


def test_a_504_while_reading_is_waited_out_like_a_503(
    state: EwsState, connect: Callable[..., EwsConnector], sleeps: list[float]
) -> None:
    """A gateway timeout on a listing is retried after its Retry-After, and the run completes."""
    _deliver(state)
    state.fail("FindItem", "http504", value=2)
    assert _run(connect()) == [Outcome.CREATED]
    assert sleeps == [2.0]
    assert len(state.calls("FindItem")) == 2


# -- processed = "delete" ------------------------------------------------------------------


def test_processed_delete_moves_to_deleted_items_by_default(
    state: EwsState, connect: Callable[..., EwsConnector]
) -> None:
    """``processed = "delete"`` without delete_type leaves the original in Deleted Items."""
    _deliver(state)
    assert _run(connect(processed="delete")) == [Outcome.CREATED]
    assert state.messages(SUPPORT, "inbox") == []
    assert len(state.messages(SUPPORT, "deleteditems")) == 1
    assert state.purged == []


def test_processed_delete_from_settings_is_recoverable_by_default(
    state: EwsState, ews: EwsServer, tmp_path: Path
) -> None:
    """A halomail.toml mailbox with processed = "delete" moves to Deleted Items."""
    table = {
        "name": "Support",
        "connection": "ews",
        "host": ews.url,
        "username": LOGIN,
        "password_env": "EWS_PASSWORD",
        "user_id": SUPPORT,
        "processed": "delete",
    }
    config = parse_config({"mailboxes": [table]}, base_dir=tmp_path, env={"EWS_PASSWORD": PASSWORD})
    connector = EwsConnector.from_settings(config.mailboxes[0], max_message_bytes=None)
    _deliver(state)
    assert _run(connector) == [Outcome.CREATED]
    (delete,) = state.calls("DeleteItem")
    assert b'DeleteType="MoveToDeletedItems"' in delete.body
    assert len(state.messages(SUPPORT, "deleteditems")) == 1


@pytest.mark.parametrize(
    ("delete_type", "dumpster", "purged"),
    [("SoftDelete", 1, 0), ("HardDelete", 0, 1)],
)
def test_soft_and_hard_delete_only_when_configured(
    state: EwsState,
    connect: Callable[..., EwsConnector],
    delete_type: str,
    dumpster: int,
    purged: int,
) -> None:
    """SoftDelete leaves the original in Recoverable Items; only HardDelete purges it."""
    _deliver(state)
    assert _run(connect(processed="delete", delete_type=delete_type)) == [Outcome.CREATED]
    assert state.messages(SUPPORT, "inbox") == []
    assert state.messages(SUPPORT, "deleteditems") == []
    assert len(state.messages(SUPPORT, "recoverableitemsdeletions")) == dumpster
    assert len(state.purged) == purged
