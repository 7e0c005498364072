"""Gmail as the real service behaves (#16): sends it carried out whose answer was lost,
size limits on sending, the search among sent mail, and the waits it asks for.

Through google-api-python-client against the local Gmail API of ``tests/servers/gmail.py``,
whose faults can come *after* the request was carried out, as Google's do.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import OutgoingEmail, SentLookup
from halomail.backends.gmail import GmailConnector, GmailRetry, GmailTransport
from halomail.errors import (
    AmbiguousSendError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
)
from tests.conftest import make_email
from tests.servers.gmail import JSON_LIMIT, UPLOAD_LIMIT, GmailServer, GmailState
from tests.servers.gmail import running_gmail_server as running

SUPPORT = "support@example.org"
TOKEN = "ya29.a0AfB_gmail-real-service-token"
MESSAGE_ID = "halomail.16.reply@helpdesk.example"


@pytest.fixture(scope="module")
def gmail() -> Iterator[GmailServer]:
    """One Gmail endpoint for the module; each test installs its own store."""
    with running() as server:
        yield server


@pytest.fixture
def state(gmail: GmailServer) -> GmailState:
    """A fresh store with the support mailbox and one token for it."""
    store = GmailState(tokens={TOKEN: SUPPORT})
    store.mailbox(SUPPORT)
    gmail.state = store
    return store


@pytest.fixture
def sleeps() -> list[float]:
    """The waits asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def transport(gmail: GmailServer, sleeps: list[float]) -> Iterator[Callable[..., GmailTransport]]:
    """Build transports sending as the support mailbox; closed afterwards."""
    built: list[GmailTransport] = []

    def build(**options: object) -> GmailTransport:
        settings: dict[str, object] = {
            "token_provider": StaticTokenProvider(TOKEN),
            "api_endpoint": gmail.url,
            "retry": GmailRetry(sleep=sleeps.append),
        }
        settings.update(options)
        made = GmailTransport(**settings)  # type: ignore[arg-type]
        built.append(made)
        return made

    yield build
    for made in built:
        made.close()


def _reply(body: bytes = b"We have logged your request.\r\n") -> OutgoingEmail:
    head = (
        f"From: Support <{SUPPORT}>\r\nTo: alice@customer.example\r\n"
        f"Subject: [ID:16] Printer is jammed\r\nMessage-ID: <{MESSAGE_ID}>\r\n"
        "MIME-Version: 1.0\r\nAuto-Submitted: auto-replied\r\n"
    ).encode()
    return OutgoingEmail(MESSAGE_ID, SUPPORT, ("alice@customer.example",), head + body)


def _with_attachment(size: int) -> OutgoingEmail:
    """A reply carrying ``size`` random bytes as a base64 PDF attachment."""
    data = base64.encodebytes(random.Random(16).randbytes(size)).replace(b"\n", b"\r\n")
    body = (
        b'Content-Type: multipart/mixed; boundary="b16"\r\n\r\n--b16\r\n'
        b"Content-Type: text/plain\r\n\r\nThe report you asked for.\r\n--b16\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n' + data + b"--b16--\r\n"
    )
    return _reply(body)


def _sends(state: GmailState) -> int:
    return len(state.calls("POST", "/messages/send"))


# -- a send Gmail carried out, whose answer was lost ----------------------------------


@pytest.mark.parametrize("status", [500, 503, 504])
def test_a_send_gmail_did_but_answered_5xx_is_ambiguous_and_not_repeated(
    state: GmailState,
    transport: Callable[..., GmailTransport],
    sleeps: list[float],
    status: int,
) -> None:
    """A 5xx after the mail went out: AmbiguousSendError with the wait, one copy in Sent."""
    state.fail("POST", "/messages/send", status, applied=True, retry_after="30")
    with pytest.raises(AmbiguousSendError) as caught:
        transport().send(_reply())
    assert caught.value.retry_after == 30.0
    assert _sends(state) == 1
    assert sleeps == []
    assert len(state.sent_with(SUPPORT, MESSAGE_ID)) == 1


def test_a_connection_dropped_after_the_send_is_ambiguous_and_not_resent(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """Gmail sends, then the connection drops: one request, one copy, and it is ambiguous."""
    state.fail("POST", "/messages/send", 0, applied=True)
    with pytest.raises(AmbiguousSendError, match="ended before the Gmail API answered"):
        transport().send(_reply())
    assert _sends(state) == 1
    assert len(state.sent_with(SUPPORT, MESSAGE_ID)) == 1


def test_a_send_that_times_out_is_ambiguous(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """Gmail sends and says nothing until the client's timeout: ambiguous, sent once."""
    state.fail("POST", "/messages/send", 0, applied=True, silence=3.0)
    with pytest.raises(AmbiguousSendError, match=r"did not answer within 0\.5 s"):
        transport(timeout=0.5).send(_reply())
    assert _sends(state) == 1
    assert len(state.sent_with(SUPPORT, MESSAGE_ID)) == 1


def test_a_refused_connection_is_transient_not_ambiguous(
    state: GmailState, transport: Callable[..., GmailTransport], gmail: GmailServer
) -> None:
    """Nothing listens on the endpoint: nothing can have been sent, so no lookup is needed."""
    with running() as gone:
        url = gone.url
    with pytest.raises(TransientTransportError) as caught:
        transport(api_endpoint=url).send(_reply())
    assert type(caught.value) is TransientTransportError
    assert "cannot reach" in str(caught.value)


def test_a_throttled_send_past_patience_is_transient_and_carries_the_wait(
    state: GmailState, transport: Callable[..., GmailTransport], sleeps: list[float]
) -> None:
    """429 (Gmail did nothing): not ambiguous; the Retry-After goes to the outbox."""
    state.fail("POST", "/messages/send", 429, retry_after="900")
    with pytest.raises(TransientTransportError) as caught:
        transport().send(_reply())
    assert type(caught.value) is TransientTransportError
    assert caught.value.retry_after == 900.0
    assert sleeps == []  # 900 s is past max_wait: the outbox waits, not this call
    assert state.sent == []


# -- was the mail sent? ----------------------------------------------------------------


def test_was_sent_finds_the_message_id_in_sent_only(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """Only a SENT copy counts: not an incoming mail with the id; a trashed sent copy does."""
    gmail_transport = transport()
    assert isinstance(gmail_transport, SentLookup)
    state.deliver(SUPPORT, make_email(message_id=f"<{MESSAGE_ID}>"))  # it came back in
    assert gmail_transport.was_sent(MESSAGE_ID) is False

    state.fail("POST", "/messages/send", 503, applied=True)
    with pytest.raises(AmbiguousSendError):
        gmail_transport.send(_reply())
    assert gmail_transport.was_sent(MESSAGE_ID) is True
    assert gmail_transport.was_sent("halomail.17.other@helpdesk.example") is False

    (sent,) = state.sent_with(SUPPORT, MESSAGE_ID)
    state.relabel(SUPPORT, sent.id, add=("TRASH",))
    assert gmail_transport.was_sent(f"<{MESSAGE_ID}>") is True
    search = state.calls("GET", "/messages")[-1]
    assert search.param("q") == f"in:sent rfc822msgid:{MESSAGE_ID}"
    assert search.param("includeSpamTrash") == "true"


def test_a_failed_lookup_is_transient_with_the_servers_wait(
    state: GmailState, transport: Callable[..., GmailTransport], sleeps: list[float]
) -> None:
    """A lookup throttled past patience raises TransientTransportError, never False."""
    state.fail("GET", "rfc822msgid", 429, retry_after="600")
    with pytest.raises(TransientTransportError, match="cannot tell whether") as caught:
        transport().was_sent(MESSAGE_ID)
    assert caught.value.retry_after == 600.0
    assert sleeps == []


# -- size limits -------------------------------------------------------------------------


def test_a_reply_over_the_json_cap_goes_through_the_upload_endpoint(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """A 3 MB reply (over Gmail's JSON request cap) is uploaded and arrives byte for byte."""
    large = _with_attachment(2_300_000)
    assert len(base64.urlsafe_b64encode(large.data)) > 3 * JSON_LIMIT  # "raw" would be refused
    transport().send(large)
    (sent,) = state.sent
    assert sent.mime == large.data
    (request,) = state.calls("POST", "/messages/send")
    assert request.path == "/upload/gmail/v1/users/me/messages/send"
    assert len(state.sent_with(SUPPORT, MESSAGE_ID)) == 1


def test_a_mail_over_35_mb_fails_for_good_before_any_request(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """Over the upload endpoint's 35 MB, a clear permanent error and not one request."""
    huge = _reply(b"x" * UPLOAD_LIMIT)
    with pytest.raises(PermanentTransportError, match=r"Gmail sends at most 36,700,160 bytes"):
        transport().send(huge)
    assert state.requests == []


def test_a_mail_of_exactly_35_mb_is_sent(
    state: GmailState, transport: Callable[..., GmailTransport]
) -> None:
    """The limit is inclusive: a message of exactly 36,700,160 bytes goes out."""
    head = _reply(b"").data
    exact = _reply(b"x" * (UPLOAD_LIMIT - len(head)))
    assert len(exact.data) == UPLOAD_LIMIT
    transport().send(exact)
    assert [len(s.mime) for s in state.sent] == [UPLOAD_LIMIT]


# -- waits the service asks for ------------------------------------------------------------


def test_throttling_past_patience_ends_the_run_with_the_servers_wait(
    state: GmailState, gmail: GmailServer, sleeps: list[float]
) -> None:
    """A 429 asking for an hour: TransientConnectorError carrying 3600 s, nothing slept."""
    connector = GmailConnector(
        "Support",
        token_provider=StaticTokenProvider(TOKEN),
        api_endpoint=gmail.url,
        retry=GmailRetry(sleep=sleeps.append),
    )
    state.fail("GET", "/profile", 429, retry_after="3600")
    try:
        with pytest.raises(TransientConnectorError) as caught:
            list(connector.fetch())
    finally:
        connector.close()
    assert caught.value.retry_after == 3600.0
    assert caught.value.mailbox == "Support"
    assert sleeps == []


@pytest.mark.parametrize("status", [503, 504])
def test_a_5xx_without_retry_after_is_retried_then_carries_no_invented_wait(
    state: GmailState, gmail: GmailServer, sleeps: list[float], status: int
) -> None:
    """503 and 504 are backed off alike; past patience the error names no server wait."""
    connector = GmailConnector(
        "Support",
        token_provider=StaticTokenProvider(TOKEN),
        api_endpoint=gmail.url,
        retry=GmailRetry(sleep=sleeps.append, max_attempts=3),
    )
    state.fail("GET", "/profile", status, times=3)
    try:
        with pytest.raises(TransientConnectorError, match=f"{status} backendError") as caught:
            list(connector.fetch())
    finally:
        connector.close()
    assert caught.value.retry_after is None
    assert sleeps == [1.0, 2.0]
