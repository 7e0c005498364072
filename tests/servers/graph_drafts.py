"""Drafts, attachments and upload sessions for the local Graph endpoint (tests/servers/graph.py).

Written from the Microsoft Graph v1.0 reference ("Create message" in JSON and MIME form,
"Add attachment", "attachment: createUploadSession", "Attach large files to Outlook
messages as attachments", "message: send"), not recorded from a real service:

* an upload session is for a file of 3 MB to 150 MB (smaller: 400
  ``ErrorAttachmentSizeShouldNotBeLessThanMinimumSize``); its ``uploadUrl`` carries its
  own ``authtoken`` and refuses a request with an Authorization header (401);
* each ``PUT`` names its range (``Content-Range: bytes {start}-{end}/{total}``), starts
  where the last one ended (the session's single ``nextExpectedRanges`` value), matches
  its body's length and the session's size; the range that completes the file is
  answered 201 Created, the others 200 with the next expected start;
* a JSON draft may set only custom ``x-`` headers through ``internetMessageHeaders``.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from typing import Any

#: Files from this size go through an upload session; below it, one POST.
SESSION_MINIMUM = 3 * 1024 * 1024
#: The largest attachment an upload session takes.
SESSION_MAXIMUM = 150 * 1024 * 1024
#: Where upload URLs point on the fake (Graph's point at outlook.office.com/api/v2.0).
UPLOAD_PREFIX = "/api/v2.0/AttachmentSessions/"
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class DraftError(Exception):
    """A request Graph refuses with 400: its error code and message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass
class Attachment:
    """A file attached to a draft."""

    name: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str = ""
    inline: bool = False


@dataclass
class UploadSession:
    """An upload session: the draft it fills, the file it expects, what has arrived."""

    id: str
    token: str
    message_id: str
    name: str
    content_type: str
    size: int
    content_id: str = ""
    inline: bool = False
    received: bytearray = field(default_factory=bytearray, repr=False)


def attachment_from_json(data: dict[str, Any]) -> Attachment:
    """The file a ``POST …/attachments`` (a ``fileAttachment``) adds."""
    if data.get("@odata.type") != "#microsoft.graph.fileAttachment":
        raise DraftError("ErrorInvalidRequest", "Only file attachments are supported here.")
    try:
        content = base64.b64decode(str(data.get("contentBytes") or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DraftError("ErrorInvalidRequest", "contentBytes is not base64.") from exc
    return Attachment(
        name=str(data.get("name") or ""),
        content_type=str(data.get("contentType") or "application/octet-stream"),
        data=content,
        content_id=str(data.get("contentId") or ""),
        inline=bool(data.get("isInline")),
    )


def session_from_json(
    data: dict[str, Any], *, session_id: str, token: str, message_id: str
) -> UploadSession:
    """The upload session a ``POST …/attachments/createUploadSession`` opens."""
    item = data.get("AttachmentItem")
    if not isinstance(item, dict) or item.get("attachmentType") != "file":
        raise DraftError("ErrorInvalidRequest", "AttachmentItem of type file is required.")
    size = item.get("size")
    if not isinstance(size, int) or not item.get("name"):
        raise DraftError("ErrorInvalidRequest", "AttachmentItem needs a name and a size.")
    if size < SESSION_MINIMUM:
        raise DraftError(
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        )
    if size > SESSION_MAXIMUM:
        raise DraftError("ErrorAttachmentSizeLimitExceeded", "The attachment is too large.")
    return UploadSession(
        id=session_id,
        token=token,
        message_id=message_id,
        name=str(item["name"]),
        content_type=str(item.get("contentType") or "application/octet-stream"),
        size=size,
        content_id=str(item.get("contentId") or ""),
        inline=bool(item.get("isInline")),
    )


def take_range(session: UploadSession, content_range: str, body: bytes) -> bool:
    """Add one uploaded range to ``session``; whether the file is now whole.

    Raises:
        DraftError: The range is malformed, out of order, or does not match the body.
    """
    match = _RANGE.match(content_range.strip())
    if match is None:
        raise DraftError("InvalidContentRange", f"Content-Range {content_range!r} is invalid.")
    start, end, total = (int(g) for g in match.groups())
    if total != session.size:
        raise DraftError("InvalidContentRange", "The total size does not match the session.")
    if start != len(session.received):
        expected = len(session.received)
        raise DraftError("InvalidContentRange", f"The next expected range starts at {expected}.")
    if end < start or end >= total or end - start + 1 != len(body):
        raise DraftError("InvalidContentRange", "The range does not match the body.")
    session.received += body
    return len(session.received) == session.size


def mime_from_json(data: dict[str, Any]) -> bytes:
    """The MIME of a draft created from a JSON message (subject, body, recipients, ids)."""
    message = email.message.EmailMessage()
    for header in data.get("internetMessageHeaders") or []:
        name = str(header.get("name") or "")
        if not name.lower().startswith("x-"):
            raise DraftError(
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        message[name] = str(header.get("value") or "")
    if data.get("internetMessageId"):
        message["Message-ID"] = str(data["internetMessageId"])
    message["Subject"] = str(data.get("subject") or "")
    to = [str(r["emailAddress"]["address"]) for r in data.get("toRecipients") or []]
    if to:
        message["To"] = ", ".join(to)
    body = data.get("body") or {}
    subtype = "html" if str(body.get("contentType", "")).lower() == "html" else "plain"
    message.set_content(str(body.get("content") or ""), subtype=subtype)
    return message.as_bytes(policy=email.policy.SMTP)


def mime_with_attachments(mime: bytes, attachments: list[Attachment]) -> bytes:
    """The MIME Exchange sends for a draft: its own MIME with the attachments added."""
    if not attachments:
        return mime
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(mime)
    assert isinstance(message, email.message.EmailMessage)
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        headers = [f"Content-ID: <{attachment.content_id}>"] if attachment.content_id else None
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.name,
            disposition="inline" if attachment.inline else "attachment",
            headers=headers,
        )
    return message.as_bytes(policy=email.policy.SMTP)
