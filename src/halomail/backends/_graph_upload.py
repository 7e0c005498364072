"""Large mail through Microsoft Graph: a draft, its attachments, then ``send``.

Graph caps every request at 4 MB, so mail whose base64 MIME would not fit one
``sendMail`` request is sent the way Graph documents for large messages ("Attach large
files to Outlook messages as attachments", learn.microsoft.com/graph/outlook-large-attachments):

1. the message, its attachments taken out, is created as a draft from MIME
   (``POST /users/{id}/messages``, base64 MIME as ``text/plain``, "Create message",
   learn.microsoft.com/graph/api/user-post-messages). A MIME draft keeps every header we
   wrote (Message-ID, In-Reply-To, References, ``Auto-Submitted``, the loop header); a
   JSON draft could carry only ``internetMessageId`` and custom ``x-`` headers
   (``internetMessageHeaders``), and would lose the threading and auto-reply headers;
2. each attachment is added: under 3 MB in one ``POST …/attachments`` (``contentBytes``),
   from 3 MB with ``POST …/attachments/createUploadSession`` and ``PUT``\\ s of the bytes to
   the ``uploadUrl`` it returns, in ranges under 4 MB with ``Content-Range`` and *without*
   an Authorization header (the URL carries its own token; Graph may answer 401 to a
   bearer token there);
3. ``POST …/messages/{draft}/send`` sends it, answered exactly 202.

**Exactly once.** Until step 3 nothing was sent: any failure is a plain
:class:`~halomail.errors.TransientTransportError`, even a 5xx on a step that may have
been carried out (a retried step could attach a file twice, so no step is repeated inside
the call). The draft such an attempt leaves behind is deleted by the next one, which
first looks in Drafts for our ``internetMessageId``. A 5xx, a timeout or a dropped
connection on ``send`` itself is :class:`~halomail.errors.AmbiguousSendError`, settled by
the Sent Items search (:meth:`GraphTransport.was_sent`) before any second send.
"""

from __future__ import annotations

import base64
import contextlib
import email.generator
import email.message
import email.parser
import email.policy
import io
import ipaddress
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

from halomail.backends._common import retry_after_seconds, tls_context
from halomail.backends._graph_http import GraphApiError, GraphClient
from halomail.errors import PermanentTransportError, TransientTransportError

__all__ = [
    "GRAPH_MESSAGE_LIMIT",
    "GRAPH_REQUEST_LIMIT",
    "LargeMailSender",
    "MailAttachment",
    "SplitMail",
    "split_attachments",
]

log = logging.getLogger(__name__)

#: Graph refuses a request body over 4 MB (413).
GRAPH_REQUEST_LIMIT = 4 * 1024 * 1024
#: The largest message Graph takes with its attachments uploaded in sessions: 150 MB.
GRAPH_MESSAGE_LIMIT = 150 * 1024 * 1024
#: Attachments from 3 MB on go through an upload session, smaller ones in one request.
SMALL_ATTACHMENT_LIMIT = 3 * 1024 * 1024
#: Bytes per ``PUT`` to an upload URL: a multiple of 320 KiB, well under 4 MB.
UPLOAD_CHUNK = 10 * 320 * 1024
# A JSON answer of the draft steps is a few kilobytes.
_MAX_ANSWER_BYTES = 1024 * 1024
# The generator writes what the parser read back with CRLF and without refolding bodies.
_MIME_POLICY = email.policy.compat32.clone(linesep="\r\n")


@attrs.frozen
class MailAttachment:
    """One attachment taken out of a message to be added to its draft.

    Args:
        name: The file name (``"attachment"`` when the part names none).
        content_type: Its MIME type, e.g. ``application/pdf``.
        data: The decoded bytes.
        content_id: Its Content-ID without angle brackets, or ``""``.
        inline: Whether it is shown within the body (``Content-Disposition: inline``).
    """

    name: str
    content_type: str
    data: bytes = attrs.field(repr=False)
    content_id: str = ""
    inline: bool = False


@attrs.frozen
class SplitMail:
    """A message without its attachments (MIME, CRLF) and the attachments taken out."""

    mime: bytes = attrs.field(repr=False)
    attachments: tuple[MailAttachment, ...]


def split_attachments(data: bytes) -> SplitMail:
    """Take every attachment part out of the MIME ``data``; headers and body stay.

    An attachment is a leaf part with a file name or ``Content-Disposition: attachment``
    (an attached message, ``message/rfc822``, stays in the body). A multipart left with no
    part keeps an empty text part, so the MIME stays valid.
    """
    message = email.parser.BytesParser(policy=_MIME_POLICY).parsebytes(data)
    taken: list[MailAttachment] = []
    for container in _multiparts(message):
        parts = _parts(container)
        kept: list[email.message.Message | str] = [p for p in parts if not _is_attachment(p)]
        if len(kept) == len(parts):
            continue
        taken += [_attachment_of(p) for p in parts if _is_attachment(p)]
        if not kept:
            empty = email.message.Message(policy=_MIME_POLICY)
            empty.set_payload("")
            empty["Content-Type"] = "text/plain; charset=us-ascii"
            kept = [empty]
        container.set_payload(kept)
    if not taken:
        return SplitMail(data, ())
    out = io.BytesIO()
    email.generator.BytesGenerator(out, mangle_from_=False, policy=_MIME_POLICY).flatten(message)
    return SplitMail(out.getvalue(), tuple(taken))


def _multiparts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Every multipart of ``message`` outside attached messages, outermost first."""
    if not message.is_multipart() or message.get_content_maintype() == "message":
        return
    yield message
    for part in _parts(message):
        yield from _multiparts(part)


def _parts(container: email.message.Message) -> list[email.message.Message]:
    """The parts of a multipart (a copy: the caller may replace them)."""
    payload = container.get_payload()
    if not isinstance(payload, list):
        return []
    return [part for part in payload if isinstance(part, email.message.Message)]


def _is_attachment(part: email.message.Message) -> bool:
    if part.is_multipart() or part.get_content_maintype() == "message":
        return False
    return part.get_content_disposition() == "attachment" or part.get_filename() is not None


def _attachment_of(part: email.message.Message) -> MailAttachment:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)  # a leaf part always decodes to bytes
    content_id = str(part.get("Content-ID", "")).strip().strip("<>")
    return MailAttachment(
        name=part.get_filename() or "attachment",
        content_type=part.get_content_type(),
        data=data,
        content_id=content_id,
        inline=part.get_content_disposition() == "inline",
    )


class LargeMailSender:
    """Sends one message too large for ``sendMail`` through a draft (see the module).

    Args:
        client: The transport's Graph client (bearer token, throttling, errors).
        user_id: The sending mailbox.
        timeout: Seconds each upload ``PUT`` may take.
        ca_file: A CA bundle to trust besides the system's, for the upload URLs.
    """

    def __init__(
        self, client: GraphClient, user_id: str, *, timeout: float, ca_file: Path | None
    ) -> None:
        self._client = client
        self._user_id = user_id
        self._timeout = timeout
        self._ca_file = ca_file
        self._uploads: httpx.Client | None = None

    def prepare(self, message_id: str, split: SplitMail) -> str:
        """Create the draft with its attachments; return the draft's id. Nothing is sent.

        Raises:
            PermanentTransportError: Even without its attachments the message is over
                Graph's request limit.
            Exception: What the Graph client raises for a failed request (the caller
                turns it into a transport error), or a
                :class:`~halomail.errors.TransientTransportError` for a failed upload.
        """
        payload = base64.b64encode(split.mime)
        if len(payload) > GRAPH_REQUEST_LIMIT:
            raise PermanentTransportError(
                f"{message_id}: without its attachments it is still {len(split.mime)} bytes, "
                f"over Microsoft Graph's {GRAPH_REQUEST_LIMIT} byte request limit as base64 "
                "(a body over about 3 MB cannot be sent through Graph; send it through SMTP)"
            )
        self.delete_stale_drafts(message_id)
        draft = self._post_json(
            self._client.url("users", self._user_id, "messages"),
            what="create a draft",
            content=payload,
            headers={"Content-Type": "text/plain"},
        )
        draft_id = str(draft.get("id") or "")
        if not draft_id:
            raise TransientTransportError(f"{message_id}: Microsoft Graph gave the draft no id")
        for attachment in split.attachments:
            self._attach(draft_id, attachment)
        log.debug(
            "%s: draft of %s ready with %d attachment(s)",
            self._client.name,
            message_id,
            len(split.attachments),
        )
        return draft_id

    def send_url(self, draft_id: str) -> str:
        """The URL that sends the draft (``POST``, answered 202)."""
        return self._client.url("users", self._user_id, "messages", draft_id, "send")

    def delete_stale_drafts(self, message_id: str) -> None:
        """Delete drafts with our Message-ID an earlier, failed attempt left in Drafts."""
        literal = f"<{message_id.strip().strip('<>')}>".replace("'", "''")
        url = self._client.url("users", self._user_id, "mailFolders", "drafts", "messages")
        params = {"$filter": f"internetMessageId eq '{literal}'", "$select": "id"}
        found = self._client.get_json(url, what="look for stale drafts", params=params)
        for item in found.get("value") or []:
            if isinstance(item, dict) and item.get("id"):
                log.info(
                    "%s: deleting a draft of %s left by an earlier attempt",
                    self._client.name,
                    message_id,
                )
                url = self._client.url("users", self._user_id, "messages", str(item["id"]))
                try:
                    self._client.call("DELETE", url, what="delete a stale draft")
                except GraphApiError as exc:
                    if exc.status != 404:  # gone already: what we wanted
                        raise

    def close(self) -> None:
        """Close the upload connections."""
        if self._uploads is not None:
            self._uploads.close()
            self._uploads = None

    # -- attachments -----------------------------------------------------------------

    def _attach(self, draft_id: str, attachment: MailAttachment) -> None:
        attachments = self._client.url("users", self._user_id, "messages", draft_id, "attachments")
        item: dict[str, Any] = {
            "name": attachment.name,
            "contentType": attachment.content_type,
            "isInline": attachment.inline,
        }
        if attachment.content_id:
            item["contentId"] = attachment.content_id
        if len(attachment.data) < SMALL_ATTACHMENT_LIMIT:
            body = {
                "@odata.type": "#microsoft.graph.fileAttachment",
                **item,
                "contentBytes": base64.b64encode(attachment.data).decode("ascii"),
            }
            self._post_json(attachments, what="add an attachment", json_body=body)
            return
        session = self._post_json(
            f"{attachments}/createUploadSession",
            what="create an upload session",
            json_body={
                "AttachmentItem": {
                    "attachmentType": "file",
                    **item,
                    "size": len(attachment.data),
                }
            },
        )
        upload_url = str(session.get("uploadUrl") or "")
        _check_upload_url(upload_url)
        self._upload(upload_url, attachment)

    def _upload(self, upload_url: str, attachment: MailAttachment) -> None:
        """PUT the bytes in chunks; the upload URL carries its own token, so no bearer."""
        total = len(attachment.data)
        http = self._http()
        for start in range(0, total, UPLOAD_CHUNK):
            chunk = attachment.data[start : start + UPLOAD_CHUNK]
            end = start + len(chunk) - 1
            what = f"upload bytes {start}-{end} of {attachment.name!r}"
            try:
                answer = http.put(
                    upload_url,
                    content=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"bytes {start}-{end}/{total}",
                    },
                )
            except httpx.HTTPError as exc:
                raise TransientTransportError(
                    f"{what}: the upload failed ({type(exc).__name__}); nothing was sent"
                ) from exc
            last = end + 1 == total
            # Graph answers 200 for each range taken and 201 Created once the file is whole.
            if answer.status_code != (201 if last else 200):
                raise TransientTransportError(
                    f"{what}: the upload URL answered {answer.status_code}; nothing was sent",
                    retry_after=retry_after_seconds(answer.headers.get("Retry-After")),
                )

    def _http(self) -> httpx.Client:
        if self._uploads is None:
            verify: ssl.SSLContext | bool = (
                tls_context(self._ca_file) if self._ca_file is not None else True
            )
            self._uploads = httpx.Client(
                timeout=httpx.Timeout(self._timeout), verify=verify, follow_redirects=False
            )
        return self._uploads

    def _post_json(self, url: str, *, what: str, **request: Any) -> dict[str, Any]:
        """POST a step of the draft, never repeated inside the call (it may have been done)."""
        response = self._client.request("POST", url, what=what, idempotent=False, **request)
        with contextlib.closing(response):
            body = self._client.read_capped(response, _MAX_ANSWER_BYTES, what=what)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TransientTransportError(f"{what}: Microsoft Graph's answer is not JSON")
        return data


def _check_upload_url(url: str) -> None:
    """The upload URL must be https (or loopback http, for tests): it carries a token."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TransientTransportError("Microsoft Graph gave an invalid upload URL") from exc
    if parsed.scheme == "https" and parsed.host:
        return
    if parsed.scheme == "http" and _is_loopback(parsed.host):
        return
    raise TransientTransportError(
        f"Microsoft Graph gave an upload URL that is not https ({parsed.scheme}://{parsed.host})"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
