"""Large mail through Microsoft Graph (#16): a draft, attachments and upload sessions.

Mail whose base64 MIME would not fit Graph's 4 MB request goes as Graph documents for
large messages: a MIME draft without the attachments, each attachment added (from 3 MB
through an upload session, in ranges, without a bearer token on the upload URL), then
``send``. Each test runs the real :class:`GraphTransport` (httpx) against the local
Graph endpoint of ``tests/servers/graph.py``, which enforces what Graph does: 4 MB per
request, upload sessions only from 3 MB, ranges in order, 401 for a bearer token on
the upload URL.
"""

from __future__ import annotations

import datetime as dt
import email.message
import email.parser
import email.policy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import OutgoingEmail
from halomail.backends.graph import GRAPH_MESSAGE_LIMIT, GraphRetry, GraphTransport
from halomail.errors import (
    AmbiguousSendError,
    ConfigError,
    PermanentTransportError,
    TransientTransportError,
)
from halomail.outbound.outbox import LOOP_HEADER, Outbox, SenderIdentity, compose
from halomail.tickets.models import NewOutgoing, OutboxMail, OutboxStatus, utcnow
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN
from tests.servers.graph import REQUEST_LIMIT, GraphServer, GraphState, running_graph_server

SUPPORT = "support@contoso.example"
GOOD_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.graph-access-token.c2ln"
MB = 1024 * 1024
# 320 KiB: upload ranges are multiples of it (the last one excepted).
RANGE_UNIT = 320 * 1024
# The headers a reply must keep for threading, loop protection and auto-reply etiquette.
KEPT_HEADERS = (
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
    "From",
    "To",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    LOOP_HEADER,
)


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


@pytest.fixture
def state(graph: GraphServer) -> GraphState:
    """A fresh store with the support mailbox."""
    store = GraphState(tokens={GOOD_TOKEN})
    store.mailbox(SUPPORT)
    graph.state = store
    return store


@pytest.fixture
def transport(graph: GraphServer) -> Iterator[GraphTransport]:
    """A transport sending as the support mailbox; closed afterwards."""
    sender = _transport(graph)
    yield sender
    sender.close()


def _transport(graph: GraphServer, **options: Any) -> GraphTransport:
    return GraphTransport(
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GOOD_TOKEN),
        base_url=graph.url,
        retry=GraphRetry(sleep=lambda _seconds: None),
        **options,
    )


def _file(name: str, size: int, content_type: str = "application/pdf") -> tuple[str, str, bytes]:
    """A file of ``size`` reproducible, incompressible bytes."""
    return name, content_type, random.Random(name).randbytes(size)


def _reply(text: str, number: int = 16) -> OutgoingEmail:
    """Our reply to a customer's mail, composed as the outbox composes it."""
    mail = OutboxMail(
        id=number,
        message_id=f"halomail.{number}.large@helpdesk.example",
        to=("alice@customer.example",),
        subject=f"[ID:{number}] Your scanned contract",
        text=text,
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
        ticket_id=number,
        in_reply_to="contract-2@customer.example",
        references=("contract-1@customer.example", "contract-2@customer.example"),
    )
    return compose(mail, SenderIdentity(SUPPORT, "Support"), loop_token=LOOP_TOKEN)


def _with_files(outgoing: OutgoingEmail, files: list[tuple[str, str, bytes]]) -> OutgoingEmail:
    """``outgoing`` with ``files`` attached, as a host application might attach them."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(outgoing.data)
    assert isinstance(message, email.message.EmailMessage)
    for name, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return attrs.evolve(outgoing, data=message.as_bytes(policy=email.policy.SMTP))


def _reading(mime: bytes) -> dict[str, Any]:
    """What a recipient sees of a message: its headers, its text and its files."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(mime)
    assert isinstance(message, email.message.EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    return {
        "headers": {name: " ".join(str(message[name]).split()) for name in KEPT_HEADERS},
        "text": body.get_content(),
        "files": [
            (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            for part in message.iter_attachments()
        ],
    }


def _posts(state: GraphState, suffix: str) -> list[Any]:
    return [r for r in state.calls("POST") if r.path.endswith(suffix)]


# -- delivered once, intact ------------------------------------------------------------


def test_a_10_mb_reply_with_a_9_mb_attachment_is_delivered_once_intact(
    state: GraphState, transport: GraphTransport
) -> None:
    """Draft, upload session, send: the Sent Items copy reads as we composed it."""
    outgoing = _with_files(_reply("Signed copy attached.\n" * 45_000), [_file("scan.pdf", 9 * MB)])
    assert len(outgoing.data) > 10 * MB

    transport.send(outgoing)

    (sent,) = state.sent
    assert _reading(sent.mime) == _reading(outgoing.data)
    (copy,) = state.in_folder(SUPPORT, "sentitems")
    assert copy.internet_message_id == f"<{outgoing.message_id}>"
    assert state.drafts(SUPPORT) == []
    assert state.calls("POST", "/sendMail") == []
    assert transport.was_sent(outgoing.message_id)


def test_every_request_fits_graphs_limit_and_uploads_carry_no_bearer_token(
    state: GraphState, transport: GraphTransport
) -> None:
    """Ranges are 320 KiB multiples under 4 MB, in order, and the upload URL gets no token."""
    transport.send(_with_files(_reply("See attached."), [_file("scan.pdf", 9 * MB)]))

    assert all(len(r.body) <= REQUEST_LIMIT for r in state.requests)
    puts = state.calls("PUT")
    assert len(puts) == 3
    assert all("authorization" not in r.headers for r in puts)
    assert all(len(r.body) % RANGE_UNIT == 0 for r in puts[:-1])
    ranges = [r.headers["content-range"] for r in puts]
    first, second = len(puts[0].body), len(puts[0].body) + len(puts[1].body)
    assert ranges == [
        f"bytes 0-{first - 1}/{9 * MB}",
        f"bytes {first}-{second - 1}/{9 * MB}",
        f"bytes {second}-{9 * MB - 1}/{9 * MB}",
    ]


def test_a_3_mb_text_with_several_attachments_is_delivered_whole(
    state: GraphState, transport: GraphTransport
) -> None:
    """Small files go in one POST each, a 3.5 MB one through a session; all arrive."""
    files = [
        _file("terms.pdf", 40_000),
        _file("photo.jpg", 2_800_000, "image/jpeg"),
        _file("log.txt", 500, "text/plain"),
        _file("dump.zip", 3_500_000, "application/zip"),
    ]
    outgoing = _with_files(_reply("x" * 2_950_000), files)

    transport.send(outgoing)

    (sent,) = state.sent
    assert _reading(sent.mime) == _reading(outgoing.data)
    assert len(_posts(state, "/attachments")) == 3
    assert len(_posts(state, "/createUploadSession")) == 1


# -- exactly once ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [0, 503])
def test_a_failed_upload_is_transient_and_the_next_attempt_leaves_no_stale_draft(
    state: GraphState, transport: GraphTransport, status: int
) -> None:
    """Nothing was sent: plain transient; the retry deletes the old draft, then sends once."""
    outgoing = _with_files(_reply("See attached."), [_file("scan.pdf", 5 * MB)])
    state.fail("PUT", "/AttachmentSessions/", status)

    with pytest.raises(TransientTransportError) as caught:
        transport.send(outgoing)
    assert type(caught.value) is TransientTransportError
    assert state.sent == []
    (stale,) = state.drafts(SUPPORT)

    transport.send(outgoing)

    (sent,) = state.sent
    assert _reading(sent.mime) == _reading(outgoing.data)
    assert state.drafts(SUPPORT) == []
    assert [r.path for r in state.calls("DELETE")] == [f"/v1.0/users/{SUPPORT}/messages/{stale.id}"]


def test_a_draft_step_failing_after_it_was_carried_out_is_only_transient(
    state: GraphState, transport: GraphTransport
) -> None:
    """A 5xx after a file was attached sent nothing: transient, and the retry sends one copy."""
    outgoing = _with_files(_reply("Attached."), [_file("a.pdf", 5 * MB), _file("b.pdf", 1000)])
    state.fail("POST", "/attachments?", 500, after=True)

    with pytest.raises(TransientTransportError) as caught:
        transport.send(outgoing)
    assert type(caught.value) is TransientTransportError
    assert state.sent == []

    transport.send(outgoing)
    (sent,) = state.sent
    assert [name for name, _, _ in _reading(sent.mime)["files"]] == ["a.pdf", "b.pdf"]
    assert state.drafts(SUPPORT) == []


@pytest.mark.parametrize("status", [0, 504])
def test_an_ambiguous_final_send_is_found_in_sent_items_and_never_repeated(
    state: GraphState, transport: GraphTransport, status: int
) -> None:
    """The draft was sent and the answer lost: AmbiguousSendError, one copy, was_sent True."""
    outgoing = _with_files(_reply("See attached."), [_file("scan.pdf", 4 * MB)])
    state.fail("POST", "/send?", status, after=True, times=3)

    with pytest.raises(AmbiguousSendError):
        transport.send(outgoing)

    assert len(state.sent) == 1
    assert len(_posts(state, "/send")) == 1
    assert transport.was_sent(outgoing.message_id)


class AttachingTransport:
    """A host application's transport: attaches the ticket's file to each mail it sends."""

    def __init__(self, inner: GraphTransport, file: tuple[str, str, bytes]) -> None:
        self.inner = inner
        self.file = file

    def send(self, email: OutgoingEmail) -> None:
        """Send ``email`` with the file attached."""
        self.inner.send(_with_files(email, [self.file]))

    def was_sent(self, message_id: str) -> bool:
        """Ask Graph's Sent Items."""
        return self.inner.was_sent(message_id)


def test_the_outbox_marks_an_ambiguous_large_send_sent_without_a_second_send(
    state: GraphState, transport: GraphTransport, tmp_path: Path
) -> None:
    """Outbox → maybe sent; next pass finds it in Sent Items and marks it sent; one copy."""
    now = [dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)]
    sender = AttachingTransport(transport, _file("scan.pdf", 6 * MB))
    state.fail("POST", "/send?", 504, after=True)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        repository.enqueue_outgoing(
            NewOutgoing(
                message_id="halomail.30.large@helpdesk.example",
                to=("alice@customer.example",),
                subject="Your scanned contract",
                text="Attached.",
            )
        )
        outbox = Outbox(
            repository,
            sender,
            lambda _mail: SenderIdentity(SUPPORT),
            loop_token=LOOP_TOKEN,
            clock=lambda: now[0],
        )
        first = outbox.send_due()
        assert (first.sent, first.maybe_sent) == (0, 1)

        now[0] += dt.timedelta(hours=3)
        drafts_created = len(_posts(state, f"/users/{SUPPORT}/messages"))
        again = outbox.send_due()

        assert again.sent == 1
        (mail,) = repository.list_outgoing()
        assert mail.status is OutboxStatus.SENT
    assert len(state.sent) == 1
    assert len(_posts(state, "/send")) == 1
    assert len(_posts(state, f"/users/{SUPPORT}/messages")) == drafts_created


# -- limits ----------------------------------------------------------------------------


def test_mail_over_the_configured_cap_fails_permanently_before_any_request(
    state: GraphState, graph: GraphServer
) -> None:
    """A cap below Graph's 150 MB refuses larger mail for good, with no request made."""
    sender = _transport(graph, max_message_bytes=5 * MB)
    outgoing = _with_files(_reply("See attached."), [_file("scan.pdf", 4 * MB)])
    try:
        with pytest.raises(PermanentTransportError) as caught:
            sender.send(outgoing)
    finally:
        sender.close()
    assert type(caught.value) is PermanentTransportError
    assert f"over the {5 * MB} byte limit" in str(caught.value)
    assert state.requests == []


def test_the_cap_cannot_exceed_graphs_150_mb(graph: GraphServer) -> None:
    """Graph takes at most 150 MB with attachments: a larger cap is a configuration error."""
    assert GRAPH_MESSAGE_LIMIT == 150 * MB
    with pytest.raises(ConfigError):
        _transport(graph, max_message_bytes=GRAPH_MESSAGE_LIMIT + 1)
    _transport(graph, max_message_bytes=GRAPH_MESSAGE_LIMIT).close()


def test_a_body_too_large_without_its_attachments_fails_permanently_before_any_request(
    state: GraphState, transport: GraphTransport
) -> None:
    """A 3.2 MB text cannot leave the 4 MB draft request: refused at once, nothing posted."""
    outgoing = _with_files(_reply("x" * 3_200_000), [_file("scan.pdf", 4 * MB)])
    with pytest.raises(PermanentTransportError) as caught:
        transport.send(outgoing)
    assert "without its attachments" in str(caught.value)
    assert state.requests == []


# -- the fake behaves as Graph does ----------------------------------------------------


def _api(graph: GraphServer, method: str, path: str, **request: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {GOOD_TOKEN}", **request.pop("headers", {})}
    return httpx.request(method, f"{graph.url}{path}", headers=headers, **request)


def test_the_upload_url_refuses_a_bearer_token_and_ranges_out_of_order(
    state: GraphState, graph: GraphServer
) -> None:
    """Like Graph: 401 with an Authorization header, 400 for a range not where the last ended."""
    draft = _api(graph, "POST", f"/users/{SUPPORT}/messages", json={"subject": "Hi"}).json()
    session = _api(
        graph,
        "POST",
        f"/users/{SUPPORT}/messages/{draft['id']}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": 4 * MB}},
    ).json()
    url = session["uploadUrl"]
    chunk = b"a" * RANGE_UNIT
    in_order = {"Content-Range": f"bytes 0-{RANGE_UNIT - 1}/{4 * MB}"}
    skipping = {"Content-Range": f"bytes {2 * RANGE_UNIT}-{3 * RANGE_UNIT - 1}/{4 * MB}"}

    bearer = httpx.put(url, content=chunk, headers={**in_order, "Authorization": "Bearer x"})
    out_of_order = httpx.put(url, content=chunk, headers=skipping)
    taken = httpx.put(url, content=chunk, headers=in_order)

    assert bearer.status_code == 401
    assert out_of_order.status_code == 400
    assert taken.status_code == 200
    assert taken.json()["nextExpectedRanges"] == [str(RANGE_UNIT)]


def test_an_upload_session_is_refused_for_a_file_under_3_mb(
    state: GraphState, graph: GraphServer
) -> None:
    """Graph opens upload sessions only from 3 MB; smaller files go in one POST."""
    draft = _api(graph, "POST", f"/users/{SUPPORT}/messages", json={"subject": "Hi"}).json()
    answer = _api(
        graph,
        "POST",
        f"/users/{SUPPORT}/messages/{draft['id']}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": MB}},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"


def test_a_json_draft_takes_only_custom_x_headers_and_keeps_its_message_id(
    state: GraphState, graph: GraphServer
) -> None:
    """internetMessageHeaders outside x- are refused; a sent JSON draft keeps its ids."""
    message = {
        "subject": "Hi",
        "body": {"contentType": "text", "content": "Hello"},
        "toRecipients": [{"emailAddress": {"address": "alice@customer.example"}}],
        "internetMessageId": "<json-1@helpdesk.example>",
    }
    refused = _api(
        graph,
        "POST",
        f"/users/{SUPPORT}/messages",
        json={**message, "internetMessageHeaders": [{"name": "In-Reply-To", "value": "<a@b>"}]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "InvalidInternetMessageHeader"

    loop = {"internetMessageHeaders": [{"name": "X-Halomail-Loop", "value": "abc"}]}
    draft = _api(graph, "POST", f"/users/{SUPPORT}/messages", json={**message, **loop}).json()
    sent = _api(graph, "POST", f"/users/{SUPPORT}/messages/{draft['id']}/send")

    assert sent.status_code == 202
    (copy,) = state.in_folder(SUPPORT, "sentitems")
    assert copy.internet_message_id == "<json-1@helpdesk.example>"
    assert b"X-Halomail-Loop: abc" in copy.mime
