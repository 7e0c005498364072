"""A local Gmail API endpoint: the REST API of ``gmail/v1`` over HTTP on loopback.

It answers the requests halomail's Gmail connector and transport send through
google-api-python-client, with the JSON shapes, status codes and headers of the Gmail
API reference (developers.google.com/gmail/api/reference/rest: "users.getProfile",
"users.messages" list/get/modify/trash/delete/send, "users.history.list",
"users.labels" list/create, "Resolve errors", "Usage limits"). The fixtures are written
here by hand from that reference; nothing was recorded from a real service.

* ``GET  /gmail/v1/users/{u}/profile`` — ``emailAddress``, ``historyId`` …;
* ``GET  /gmail/v1/users/{u}/messages`` — ``labelIds`` (repeated), ``maxResults``
  (default 100), ``pageToken``, ``includeSpamTrash``, ``q`` (the search operators
  ``rfc822msgid:`` and ``in:<label>``; any other term is 400 here); newest first, ids and
  thread ids only, ``nextPageToken`` and ``resultSizeEstimate``;
* ``GET  /gmail/v1/users/{u}/messages/{id}`` — ``format`` ``minimal`` (id, threadId,
  labelIds, snippet, historyId, internalDate, sizeEstimate) or ``raw`` (plus ``raw``,
  the MIME in URL-safe base64);
* ``POST …/messages/{id}/modify`` (``addLabelIds``, ``removeLabelIds``; an unknown
  label is 400 ``Invalid label``), ``POST …/messages/{id}/trash`` (adds ``TRASH``),
  ``DELETE …/messages/{id}``;
* ``POST /gmail/v1/users/{u}/messages/send`` — ``{"raw": …}``, the request body capped
  at :attr:`GmailState.json_limit` bytes (400 "Request payload size exceeds the limit", as
  the real service answers well below the upload limit);
* ``POST /upload/gmail/v1/users/{u}/messages/send?uploadType=media`` — the MIME itself
  (``Content-Type: message/rfc822``), up to 36,700,160 bytes (35 MB; over it 413);
  a sent message lands in the mailbox with the ``SENT`` label, as in Gmail;
* ``GET  /gmail/v1/users/{u}/history`` — ``startHistoryId``, ``historyTypes``
  (repeated), ``labelId``, ``maxResults``, ``pageToken``; records with ``messagesAdded``,
  ``messagesDeleted``, ``labelsAdded``, ``labelsRemoved``; a ``startHistoryId`` older
  than the history kept is 404 ``notFound``;
* ``GET /gmail/v1/users/{u}/labels/{id}`` — one label, with its ``messagesTotal``;
* ``GET``/``POST /gmail/v1/users/{u}/labels`` — system and user labels; a name taken
  (ignoring case) is 409.

``{u}`` is ``me`` or the address of the token's user; another address is 403
"Delegation denied". Every request must carry ``Authorization: Bearer`` with a token
the state maps to a user, or it gets 401 ``authError`` with ``WWW-Authenticate``. Tests
arm faults (:meth:`GmailState.fail`) for throttling, errors, dropped connections and
silence: before the request is processed, or (``applied=True``) after, as the real service
fails at times: the mail is sent, and the client hears a 5xx, nothing, or a reset.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.parser
import email.policy
import http.client
import itertools
import json
import secrets
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROOT = "/gmail/v1"
UPLOAD_ROOT = "/upload/gmail/v1"
#: users.messages.send through the upload endpoint: "Maximum file size: 36700160".
UPLOAD_LIMIT = 36_700_160
#: The JSON body of a request: not documented, far below the upload limit; 1 MiB is the
#: lowest cap reported for messages.send with ``raw``.
JSON_LIMIT = 1_048_576
SYSTEM_LABELS = (
    "INBOX",
    "SPAM",
    "TRASH",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "SENT",
    "DRAFT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
JSON_TYPE = "application/json; charset=UTF-8"
_DEFAULT_PAGE = 100  # messages.list and history.list: maxResults defaults to 100
# google.rpc status names by HTTP status, as Google's JSON errors carry them.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    413: "OUT_OF_RANGE",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Label:
    """A label: a system label (id = name) or a user label (``Label_<n>``)."""

    id: str
    name: str
    type: str = "user"


@dataclass
class Message:
    """A message: its MIME, its labels, when it arrived and its last history id."""

    id: str
    thread_id: str
    raw: bytes = field(repr=False)
    labels: list[str]
    internal_date: int  # epoch milliseconds, as Gmail sorts by it
    history_id: int

    @property
    def size_estimate(self) -> int:
        """Gmail's ``sizeEstimate``: here exactly the MIME's size."""
        return len(self.raw)


@dataclass
class HistoryRecord:
    """One change: ``kind`` is messageAdded, messageDeleted, labelAdded or labelRemoved."""

    id: int
    kind: str
    message_id: str
    thread_id: str
    labels: list[str]  # the message's labels right after the change
    changed: list[str]  # the labels added or removed (label changes only)


@dataclass
class Mailbox:
    """One user's mail: labels, messages, and the history of changes."""

    address: str
    labels: dict[str, Label]
    messages: dict[str, Message] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    history_id: int = 1000
    #: A startHistoryId below this answers 404: the history was trimmed.
    history_floor: int = 0
    label_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))


@dataclass
class Fault:
    """An answer armed for the next ``times`` requests matching ``method`` and ``path``.

    ``status`` 0 drops the connection without an answer, after ``silence`` seconds (longer
    than the client's timeout: it times out). With ``applied`` the request is processed
    first (a send sends) and only its answer is replaced.
    """

    method: str
    path: str
    status: int
    times: int = 1
    reason: str = ""
    message: str = ""
    retry_after: str | None = None
    applied: bool = False
    silence: float = 0.0


@dataclass
class Silence:
    """No answer: the connection is held ``seconds``, then closed."""

    seconds: float = 0.0


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter, or ``None``."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Sent:
    """A message the server sent: its MIME, and the ``raw`` it came as (``""`` if uploaded)."""

    user: str
    raw: str = field(repr=False)
    mime: bytes = field(repr=False)


class GmailState:
    """The mail store, the accepted tokens, the armed faults and the log of requests.

    Args:
        tokens: Accepted bearer tokens, each mapped to the user it authenticates.
        accept: Maps further tokens (e.g. those a local token endpoint issued) to a
            user, or ``None`` to refuse them.
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        accept: Callable[[str], str | None] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.tokens = {token: user.lower() for token, user in (tokens or {}).items()}
        self.accept = accept
        self.revoked: set[str] = set()
        self.mailboxes: dict[str, Mailbox] = {}
        self.requests: list[Request] = []
        self.sent: list[Sent] = []
        self.faults: list[Fault] = []
        #: The largest JSON request body accepted (messages.send with ``raw``).
        self.json_limit = JSON_LIMIT
        self._clock = 1_767_258_000_000  # 2026-01-01 09:00 UTC, in epoch milliseconds

    # -- the store -------------------------------------------------------------------

    def mailbox(self, user: str) -> Mailbox:
        """``user``'s mailbox, created with the system labels on first use."""
        user = user.lower()
        with self.lock:
            if user not in self.mailboxes:
                labels = {name: Label(name, name, "system") for name in SYSTEM_LABELS}
                self.mailboxes[user] = Mailbox(user, labels)
            return self.mailboxes[user]

    def deliver(
        self,
        user: str,
        raw: bytes,
        *,
        labels: tuple[str, ...] = ("INBOX", "UNREAD"),
        internal_date: int | None = None,
    ) -> str:
        """Put a message into ``user``'s mailbox with ``labels``; returns its id."""
        with self.lock:
            box = self.mailbox(user)
            if internal_date is None:
                self._clock += 60_000
                internal_date = self._clock
            message_id = secrets.token_hex(8)
            history_id = self._record(box, "messageAdded", message_id, list(labels), [])
            box.messages[message_id] = Message(
                message_id, message_id, raw, list(labels), internal_date, history_id
            )
            return message_id

    def remove(self, user: str, message_id: str) -> None:
        """Delete a message for good (as another client might)."""
        with self.lock:
            box = self.mailbox(user)
            message = box.messages.pop(message_id)
            self._record(box, "messageDeleted", message.id, message.labels, [])

    def relabel(
        self, user: str, message_id: str, *, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()
    ) -> None:
        """Change a message's labels (as a user or another client might)."""
        with self.lock:
            box = self.mailbox(user)
            self._modify(box, box.messages[message_id], list(add), list(remove))

    def create_label(self, user: str, name: str) -> Label:
        """Create a user label (as the user might in Gmail's settings)."""
        with self.lock:
            box = self.mailbox(user)
            label = Label(f"Label_{next(box.label_numbers)}", name)
            box.labels[label.id] = label
            return label

    def delete_label(self, user: str, label_id: str) -> None:
        """Delete a user label; its messages lose it (as the user might)."""
        with self.lock:
            box = self.mailbox(user)
            del box.labels[label_id]
            for message in box.messages.values():
                if label_id in message.labels:
                    message.labels.remove(label_id)

    def label_named(self, user: str, name: str) -> Label | None:
        """A label by its name, ignoring case."""
        with self.lock:
            for label in self.mailbox(user).labels.values():
                if label.name.lower() == name.lower():
                    return label
        return None

    def labelled(self, user: str, label: str) -> list[Message]:
        """The messages carrying ``label`` (an id, or a user label's name), oldest first.

        Trashed messages count only when ``label`` is ``TRASH``.
        """
        with self.lock:
            box = self.mailbox(user)
            found = self.label_named(user, label)
            label_id = found.id if found is not None else label
            messages = [
                m
                for m in box.messages.values()
                if label_id in m.labels and (label_id == "TRASH" or "TRASH" not in m.labels)
            ]
        return sorted(messages, key=lambda m: m.internal_date)

    def expire_history(self, user: str) -> None:
        """Forget the history so far, as Gmail does after a while (404 for older ids)."""
        with self.lock:
            box = self.mailbox(user)
            box.history.clear()
            box.history_floor = box.history_id + 1

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        reason: str = "",
        message: str = "",
        retry_after: str | None = None,
        applied: bool = False,
        silence: float = 0.0,
    ) -> None:
        """Answer the next ``times`` ``method`` requests whose path (and query) contain ``path``.

        ``status`` 0 drops the connection without an answer (after ``silence`` seconds);
        ``applied`` processes the request before failing its answer.
        """
        fault = Fault(method, path, status, times, reason, message, retry_after, applied, silence)
        with self.lock:
            self.faults.append(fault)

    def sent_with(self, user: str, message_id: str) -> list[Message]:
        """The messages in ``user``'s SENT label whose Message-ID is ``message_id`` (no <>)."""
        return [m for m in self.labelled(user, "SENT") if _message_id(m.raw) == message_id]

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        """The requests received, optionally of one method and with ``contains`` in the path."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            ]

    def _record(
        self, box: Mailbox, kind: str, message_id: str, labels: list[str], changed: list[str]
    ) -> int:
        box.history_id += 1
        box.history.append(
            HistoryRecord(box.history_id, kind, message_id, message_id, list(labels), changed)
        )
        return box.history_id

    def _modify(self, box: Mailbox, message: Message, add: list[str], remove: list[str]) -> None:
        added = [label for label in add if label not in message.labels]
        removed = [label for label in remove if label in message.labels]
        message.labels = [label for label in message.labels if label not in removed] + added
        if added:
            message.history_id = self._record(box, "labelAdded", message.id, message.labels, added)
        if removed:
            message.history_id = self._record(
                box, "labelRemoved", message.id, message.labels, removed
            )

    # -- protocol --------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer | Silence:
        """Answer one request: (status, headers, body), or :class:`Silence`."""
        split = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(split.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        with self.lock:
            self.requests.append(Request(method, path, query, headers, body))
            auth = headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            user = self._user_of(token)
            if user is None:
                return _error(
                    401,
                    "authError",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    bearer=True,
                )
            fault = self._armed(method, f"{path}?{urllib.parse.unquote(split.query)}")
            if fault is not None and not fault.applied:
                return _fault(fault)
            answer = self._answer(user, method, path, query, headers, body)
            # An applied fault: the work is done, only the client never learns it.
            return answer if fault is None else _fault(fault)

    def refuse(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        """Note a request too large to read (its body left unread) and answer 413."""
        split = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        with self.lock:
            self.requests.append(
                Request(method, urllib.parse.unquote(split.path), query, headers, b"")
            )
        return _error(413, "uploadTooLarge", f"Media larger than: {UPLOAD_LIMIT}")

    def _armed(self, method: str, seen: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path in seen:
                fault.times -= 1
                return fault
        return None

    def _answer(
        self,
        user: str,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Answer:
        upload = path.startswith(UPLOAD_ROOT + "/users/")
        root = UPLOAD_ROOT if upload else ROOT
        if not path.startswith(root + "/users/"):
            return _error(404, "notFound", "Not Found")
        parts = path[len(root) + 1 :].split("/")
        if len(parts) < 3:
            return _error(404, "notFound", "Not Found")
        wanted = parts[1].lower()
        if wanted not in ("me", user):
            return _error(403, "forbidden", f"Delegation denied for {user}")
        if user not in self.mailboxes:
            return _error(400, "failedPrecondition", "Mail service not enabled")
        box = self.mailboxes[user]
        if upload:
            if parts[2:] == ["messages", "send"] and method == "POST":
                return self._upload_send(box, query, headers, body)
            return _error(404, "notFound", "Not Found")
        if len(body) > self.json_limit:
            too_large = f"Request payload size exceeds the limit: {self.json_limit} bytes."
            return _error(400, "badRequest", too_large)
        return self._route(method, box, parts[2:], query, body)

    def _user_of(self, token: str) -> str | None:
        if not token or token in self.revoked:
            return None
        if token in self.tokens:
            return self.tokens[token]
        user = self.accept(token) if self.accept is not None else None
        return user.lower() if user else None

    def _route(
        self,
        method: str,
        box: Mailbox,
        parts: list[str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        if parts == ["profile"] and method == "GET":
            return _json(
                200,
                {
                    "emailAddress": box.address,
                    "messagesTotal": len(box.messages),
                    "threadsTotal": len(box.messages),
                    "historyId": str(box.history_id),
                },
            )
        if parts == ["labels"] and method == "GET":
            return _json(200, {"labels": [_label_json(label) for label in box.labels.values()]})
        if parts == ["labels"] and method == "POST":
            return self._create_label(box, body)
        if len(parts) == 2 and parts[0] == "labels" and method == "GET":
            label = box.labels.get(parts[1])
            if label is None:
                return _error(404, "notFound", "Requested entity was not found.")
            total = sum(1 for m in box.messages.values() if label.id in m.labels)
            return _json(200, {**_label_json(label), "messagesTotal": total})
        if parts == ["history"] and method == "GET":
            return self._history(box, query)
        if parts == ["messages"] and method == "GET":
            return self._list(box, query)
        if parts == ["messages", "send"] and method == "POST":
            return self._send(box, body)
        if len(parts) >= 2 and parts[0] == "messages":
            message = box.messages.get(parts[1])
            if message is None:
                return _error(404, "notFound", "Requested entity was not found.")
            rest = parts[2:]
            if rest == [] and method == "GET":
                return self._get(message, _first(query, "format") or "full")
            if rest == [] and method == "DELETE":
                self.remove(box.address, message.id)
                return 204, {}, b""
            if rest == ["modify"] and method == "POST":
                return self._modify_request(box, message, body)
            if rest == ["trash"] and method == "POST":
                self._modify(box, message, ["TRASH"], [])
                return _json(200, _message_json(message))
        return _error(404, "notFound", "Not Found")

    def _list(self, box: Mailbox, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        wanted = list(query.get("labelIds", []))
        with_trash = _first(query, "includeSpamTrash") == "true"
        message_ids: list[str] = []
        for term in (_first(query, "q") or "").split():
            operator, _, value = term.partition(":")
            if operator == "rfc822msgid" and value:
                message_ids.append(value.strip("<>"))
            elif operator == "in" and value:
                label = self.label_named(box.address, value)
                wanted.append(label.id if label is not None else value.upper())
            else:
                return _error(400, "invalidArgument", f"This server cannot search for {term!r}")
        found = [
            m
            for m in box.messages.values()
            if all(label in m.labels for label in wanted)
            and (with_trash or not {"TRASH", "SPAM"} & set(m.labels))
            and all(_message_id(m.raw) == wanted_id for wanted_id in message_ids)
        ]
        found.sort(key=lambda m: m.internal_date, reverse=True)  # newest first, as Gmail
        offset = int(_first(query, "pageToken") or "0")
        size = int(_first(query, "maxResults") or _DEFAULT_PAGE)
        page = found[offset : offset + size]
        data: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            data["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + size < len(found):
            data["nextPageToken"] = str(offset + size)
        return _json(200, data)

    def _get(self, message: Message, format_: str) -> tuple[int, dict[str, str], bytes]:
        data = _message_json(message)
        data.update(
            snippet="",
            historyId=str(message.history_id),
            internalDate=str(message.internal_date),
            sizeEstimate=message.size_estimate,
        )
        if format_ == "raw":
            data["raw"] = base64.urlsafe_b64encode(message.raw).decode("ascii")
        elif format_ != "minimal":
            return _error(400, "invalidArgument", f"Unsupported format in this server: {format_}")
        return _json(200, data)

    def _modify_request(
        self, box: Mailbox, message: Message, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        add = list(request.get("addLabelIds") or [])
        remove = list(request.get("removeLabelIds") or [])
        for label in add + remove:
            if label not in box.labels:
                return _error(400, "invalidArgument", f"Invalid label: {label}")
        self._modify(box, message, add, remove)
        return _json(200, _message_json(message))

    def _create_label(self, box: Mailbox, body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        name = str(request.get("name") or "")
        if not name:
            return _error(400, "invalidArgument", "Invalid label name")
        if any(label.name.lower() == name.lower() for label in box.labels.values()):
            return _error(409, "duplicate", "Label name exists or conflicts")
        label = self.create_label(box.address, name)
        data = _label_json(label)
        data["messageListVisibility"] = request.get("messageListVisibility", "show")
        data["labelListVisibility"] = request.get("labelListVisibility", "labelShow")
        return _json(200, data)

    def _history(
        self, box: Mailbox, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes]:
        start_text = _first(query, "startHistoryId")
        if not start_text or not start_text.isdigit():
            return _error(400, "invalidArgument", "Invalid startHistoryId")
        start = int(start_text)
        if start < box.history_floor:
            return _error(404, "notFound", "Requested entity was not found.")
        types = set(query.get("historyTypes", []))
        label_id = _first(query, "labelId")
        records = [
            r
            for r in box.history
            if r.id > start
            and (not types or r.kind in types)
            and (label_id is None or label_id in r.labels or label_id in r.changed)
        ]
        offset = int(_first(query, "pageToken") or "0")
        size = int(_first(query, "maxResults") or _DEFAULT_PAGE)
        page = records[offset : offset + size]
        data: dict[str, Any] = {"historyId": str(box.history_id)}
        if page:
            data["history"] = [_history_json(r) for r in page]
        if offset + size < len(records):
            data["nextPageToken"] = str(offset + size)
        return _json(200, data)

    def _send(self, box: Mailbox, body: bytes) -> tuple[int, dict[str, str], bytes]:
        raw = str(json.loads(body or b"{}").get("raw") or "")
        try:
            mime = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            mime = b""
        if not raw or not mime or "+" in raw or "/" in raw:
            return _error(400, "invalidArgument", "Invalid value for ByteString: raw")
        return self._sent(box, raw, mime)

    def _upload_send(
        self, box: Mailbox, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Answer:
        if _first(query, "uploadType") != "media":
            return _error(400, "badRequest", "This server takes uploadType=media only")
        if not headers.get("content-type", "").startswith("message/"):
            return _error(400, "badRequest", "Media type is not one of the accepted message/*")
        if len(body) > UPLOAD_LIMIT:
            return _error(413, "uploadTooLarge", f"Media larger than: {UPLOAD_LIMIT}")
        if not body:
            return _error(400, "invalidArgument", "Recipient address required")
        return self._sent(box, "", body)

    def _sent(self, box: Mailbox, raw: str, mime: bytes) -> Answer:
        self.sent.append(Sent(box.address, raw, mime))
        # Gmail keeps what it sent in the mailbox, labelled SENT.
        message_id = self.deliver(box.address, mime, labels=("SENT",))
        return _json(200, {"id": message_id, "threadId": message_id, "labelIds": ["SENT"]})


def _message_id(raw: bytes) -> str:
    """The Message-ID of a MIME message, without its angle brackets."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return str(headers.get("Message-ID") or "").strip().strip("<>")


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _label_json(label: Label) -> dict[str, Any]:
    data: dict[str, Any] = {"id": label.id, "name": label.name, "type": label.type}
    if label.type == "user":
        data.update(messageListVisibility="show", labelListVisibility="labelShow")
    return data


def _message_json(message: Message) -> dict[str, Any]:
    return {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels)}


def _history_json(record: HistoryRecord) -> dict[str, Any]:
    message = {"id": record.message_id, "threadId": record.thread_id, "labelIds": record.labels}
    data: dict[str, Any] = {
        "id": str(record.id),
        "messages": [{"id": record.message_id, "threadId": record.thread_id}],
    }
    if record.kind == "messageAdded":
        data["messagesAdded"] = [{"message": message}]
    elif record.kind == "messageDeleted":
        data["messagesDeleted"] = [{"message": message}]
    elif record.kind == "labelAdded":
        data["labelsAdded"] = [{"message": message, "labelIds": record.changed}]
    else:
        data["labelsRemoved"] = [{"message": message, "labelIds": record.changed}]
    return data


def _json(status: int, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": JSON_TYPE}, json.dumps(data).encode()


def _error(
    status: int,
    reason: str,
    message: str,
    *,
    bearer: bool = False,
    retry_after: str | None = None,
    domain: str = "global",
) -> tuple[int, dict[str, str], bytes]:
    data = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
    headers = {"Content-Type": JSON_TYPE}
    if bearer:
        headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, json.dumps(data).encode()


def _fault(fault: Fault) -> Answer | Silence:
    if fault.status == 0:
        return Silence(fault.silence)
    defaults = {
        429: ("rateLimitExceeded", "Too many concurrent requests for user"),
        403: ("userRateLimitExceeded", "User Rate Limit Exceeded"),
        500: ("backendError", "Backend Error"),
        503: ("backendError", "The service is currently unavailable."),
        504: ("backendError", "Deadline exceeded."),
        401: ("authError", "Invalid Credentials"),
        404: ("notFound", "Requested entity was not found."),
        400: ("invalidArgument", "Invalid argument"),
        413: ("uploadTooLarge", "Request payload size exceeds the limit"),
    }
    reason, message = defaults.get(fault.status, ("backendError", "The request failed."))
    reason = fault.reason or reason
    domain = "usageLimits" if "RateLimit" in reason or reason.startswith("daily") else "global"
    return _error(
        fault.status,
        reason,
        fault.message or message,
        bearer=fault.status == 401,
        retry_after=fault.retry_after,
        domain=domain,
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds the
    # body until the client's delayed ACK, 40 ms on every request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``GmailState.requests`` instead."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve("GET")

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve("POST")

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if length > UPLOAD_LIMIT + 65_536:
            # Google's front end refuses a body this large without reading it.
            self.close_connection = True
            self._write(self.server.state.refuse(method, self.path, headers))
            return
        body = self.rfile.read(length) if length else b""
        answer = self.server.state.handle(method, self.path, headers, body)
        if isinstance(answer, Silence):
            time.sleep(answer.seconds)  # the client's timeout runs out meanwhile
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        self._write(answer)

    def _write(self, answer: Answer) -> None:
        status, extra, payload = answer
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: GmailState

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class GmailServer:
    """A running server: its API endpoint (``http://127.0.0.1:<port>/``) and its store."""

    url: str
    _server: _Server = field(repr=False)

    @property
    def state(self) -> GmailState:
        """The store being served."""
        return self._server.state

    @state.setter
    def state(self, value: GmailState) -> None:
        self._server.state = value


@contextlib.contextmanager
def running_gmail_server(state: GmailState | None = None) -> Iterator[GmailServer]:
    """Serve a store on 127.0.0.1 (port 0) in a thread.

    The server counts as started only after a real round trip: a request without a
    token answered with Gmail's 401 ``authError``.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="gmail-test-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    running = GmailServer(f"http://{host!s}:{port}/", server)
    running.state = state or GmailState()
    try:
        probe = http.client.HTTPConnection(str(host), port, timeout=5)
        probe.request("GET", f"{ROOT}/users/me/profile")
        answer = probe.getresponse()
        reason = json.loads(answer.read())["error"]["errors"][0]["reason"]
        probe.close()
        if answer.status != 401 or reason != "authError":
            raise RuntimeError(f"the Gmail test server answered {answer.status} to its probe")
        running.state.requests.clear()
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
