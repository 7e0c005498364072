"""A local Microsoft Graph endpoint: the mail REST API over HTTP on loopback.

It answers, under ``/v1.0``, the requests halomail's Graph connector and transport
send, with the JSON shapes, status codes and headers of the Microsoft Graph v1.0
reference (learn.microsoft.com, "message resource type", "message: delta",
"message: move", "sendMail", "mailFolder: list childFolders", "Microsoft Graph
throttling guidance"). The fixtures are written here by hand from that reference;
nothing was recorded from a real service.

* ``GET  /users/{u}/mailFolders/{f}/messages`` — ``$top``, ``$skip``, ``$orderby``,
  ``$select``, ``$expand`` of ``singleValueExtendedProperties`` (``Integer 0x0E08``);
* ``GET  /users/{u}/mailFolders/{f}/messages/delta`` — rounds paged by
  ``@odata.nextLink`` (``$skiptoken``) and ended by ``@odata.deltaLink``
  (``$deltatoken``); removals as ``{"id": …, "@removed": {"reason": "deleted"}}``;
  ``Prefer: odata.maxpagesize``; an unknown delta token answers 410;
* ``GET  /users/{u}/mailFolders/{f}`` — the folder, with its ``totalItemCount``;
* ``GET  /users/{u}/mailFolders/{f}/childFolders`` (``$filter=displayName eq '…'``),
  ``POST`` the same to create a folder (409 ``ErrorFolderExists``);
* ``GET  /users/{u}/messages/{id}``, ``…/$value`` (the MIME), ``POST …/move``
  (``destinationId``), ``DELETE /users/{u}/messages/{id}``;
* ``POST /users/{u}/sendMail`` — MIME as base64 ``text/plain`` (or a JSON message),
  answered 202 with a copy filed in Sent Items, found by
  ``$filter=internetMessageId eq '<…>'`` on a folder's messages;
* ``POST /users/{u}/messages`` — a draft in Drafts, from base64 MIME or a JSON message;
  ``POST …/messages/{id}/attachments`` (a ``fileAttachment``),
  ``POST …/attachments/createUploadSession`` and ``PUT`` of the bytes to its
  ``uploadUrl`` (on this server, no bearer token: see :mod:`tests.servers.graph_drafts`);
  ``POST …/messages/{id}/send`` — 202, the draft leaves Drafts and its MIME, attachments
  added, is filed in Sent Items.

Where the real service differs from a tidy fake, this one follows the service: a request
body over 4 MB is refused with 413; a mailbox may be German (:meth:`GraphState.mailbox`
with ``language="de"``: Posteingang, Gelöschte Elemente …); an "updated" delta entry
carries only the changed properties (:meth:`GraphState.touch`); delta may send entries
again (``replay_delta``) and report a move as an update with the new ``parentFolderId``
(``moves_as_updates``); and a fault may be armed to carry the request out *and then*
fail the answer (``after=True``), as a gateway timing out behind a working service does.

``{f}`` is a folder id or a well-known name (``inbox``, ``deleteditems``,
``msgfolderroot`` …). Message ids are immutable: a move keeps the id, as with
``Prefer: IdType="ImmutableId"``. Every request must carry ``Authorization: Bearer``
with a token the state accepts, or it gets 401 ``InvalidAuthenticationToken``. Tests
arm faults (:meth:`GraphState.fail`) for throttling, errors and dropped connections.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import email.parser
import http.client
import itertools
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers.graph_drafts import (
    UPLOAD_PREFIX,
    Attachment,
    DraftError,
    UploadSession,
    attachment_from_json,
    mime_from_json,
    mime_with_attachments,
    session_from_json,
    take_range,
)

ROOT = "/v1.0"
# Graph refuses a request body over 4 MB.
REQUEST_LIMIT = 4 * 1024 * 1024
# Well-known folders every mailbox has: name → (displayName, parent's well-known name).
WELL_KNOWN = {
    "msgfolderroot": ("Top of Information Store", None),
    "inbox": ("Inbox", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "msgfolderroot"),
    "sentitems": ("Sent Items", "msgfolderroot"),
    "drafts": ("Drafts", "msgfolderroot"),
    "junkemail": ("Junk Email", "msgfolderroot"),
    "archive": ("Archive", "msgfolderroot"),
}
# The display names of the same folders in a German mailbox.
GERMAN = {
    "msgfolderroot": "Oberste Ebene des Informationsspeichers",
    "inbox": "Posteingang",
    "deleteditems": "Gelöschte Elemente",
    "sentitems": "Gesendete Elemente",
    "drafts": "Entwürfe",
    "junkemail": "Junk-E-Mail",
    "archive": "Archiv",
}
JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
_DEFAULT_PAGE = 10  # Graph's page size for messages when nothing else is asked for
_FILTER_NAME = re.compile(r"^displayName eq '((?:[^']|'')*)'$")
# A header of our own, never sent: how long the handler holds the answer back.
_STALL = "X-Fake-Stall"
_FILTER_MESSAGE_ID = re.compile(r"^internetMessageId eq '((?:[^']|'')*)'$")


@dataclass
class Folder:
    """A mail folder."""

    id: str
    user: str
    name: str
    parent: str | None
    well_known: str | None = None


@dataclass
class Message:
    """A message: its MIME and where it is; ``seq`` is when it last changed folder."""

    id: str
    user: str
    folder: str
    mime: bytes = field(repr=False)
    received: dt.datetime
    seq: int
    draft: bool = False
    attachments: list[Attachment] = field(default_factory=list, repr=False)

    @property
    def size(self) -> int:
        """PidTagMessageSize: the MIME plus Exchange's property overhead."""
        return len(self.mime) + 1024

    @property
    def internet_message_id(self) -> str:
        """The Message-ID header, angle brackets included (Graph's ``internetMessageId``)."""
        headers = email.parser.BytesHeaderParser().parsebytes(self.mime)
        return str(headers.get("Message-ID", "")).strip()


@dataclass
class Fault:
    """An answer armed for the next ``times`` requests matching ``method`` and ``path``.

    ``status`` 0 drops the connection without an answer. ``after``: the request is
    carried out first, and then the answer is the fault. ``stall``: seconds the answer
    is held back (longer than the client's timeout: a request that timed out).
    """

    method: str
    path: str
    status: int
    times: int = 1
    code: str = ""
    retry_after: str | None = None
    after: bool = False
    stall: float = 0.0


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = field(repr=False)


@dataclass
class Sent:
    """A message the server was asked to send."""

    user: str
    content_type: str
    mime: bytes = field(repr=False)


@dataclass
class _Round:
    items: list[dict[str, Any]]
    end: int  # the change sequence the round's delta link stands for
    folder: str
    select: str
    expand: str


class GraphState:
    """The mail store, the accepted tokens, the armed faults and the log of requests.

    Args:
        tokens: Bearer tokens accepted.
        accept: Accepts further tokens (e.g. those a local token endpoint issued).
    """

    def __init__(
        self, tokens: set[str] | None = None, accept: Callable[[str], bool] | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.tokens = set(tokens or ())
        self.accept = accept
        self.revoked: set[str] = set()
        self.folders: dict[str, Folder] = {}
        self.messages: dict[str, Message] = {}
        self.removals: list[tuple[int, str, str]] = []  # (seq, folder id, message id)
        self.requests: list[Request] = []
        self.sent: list[Sent] = []
        self.faults: list[Fault] = []
        self.sessions: dict[str, UploadSession] = {}  # upload session id → session
        #: When set, paging links point there instead of at this server.
        self.link_base: str | None = None
        #: Delta sends each round's entries again in the next round (at least once).
        self.replay_delta = False
        #: Delta reports a message moved away as an update naming its new folder.
        self.moves_as_updates = False
        self._updates: dict[str, dict[str, Any]] = {}  # message id → changed properties
        self._last_round: dict[str, list[dict[str, Any]]] = {}  # folder id → its entries
        self.base_url = ""
        self._seq = itertools.count(1)
        self._now = 0
        self._rounds: dict[str, _Round] = {}
        self._delta_tokens: dict[str, _Round] = {}
        self._clock = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

    # -- the store -------------------------------------------------------------------

    @staticmethod
    def new_id(kind: str) -> str:
        """A Graph-shaped id (URL-safe base64, with '-' and '_')."""
        raw = b"\x00\x00" + kind.encode() + secrets.token_bytes(30)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "-_A="

    def mailbox(self, user: str, *, language: str = "en") -> None:
        """Create ``user``'s mailbox with the well-known folders (idempotent).

        ``language="de"`` names them as a German mailbox does (Posteingang …).
        """
        user = user.lower()
        with self.lock:
            if self.well_known(user, "msgfolderroot") is not None:
                return
            ids: dict[str, str] = {}
            for key, (english, parent) in WELL_KNOWN.items():
                name = GERMAN[key] if language == "de" else english
                ids[key] = self.new_id("folder")
                self.folders[ids[key]] = Folder(
                    ids[key], user, name, ids[parent] if parent else None, key
                )

    def well_known(self, user: str, key: str) -> Folder | None:
        """The well-known folder ``key`` of ``user``'s mailbox."""
        with self.lock:
            for folder in self.folders.values():
                if folder.user == user.lower() and folder.well_known == key:
                    return folder
        return None

    def folder_named(self, user: str, path: str) -> Folder | None:
        """A folder by its path of display names under the top of the mailbox."""
        with self.lock:
            current = self.well_known(user, "msgfolderroot")
            for name in path.split("/"):
                if current is None:
                    return None
                current = next(
                    (
                        f
                        for f in self.folders.values()
                        if f.parent == current.id and f.name.lower() == name.lower()
                    ),
                    None,
                )
            return current

    def add_folder(self, user: str, name: str, *, parent: str = "msgfolderroot") -> str:
        """Create a folder under ``parent`` (well-known name or id), as a user might."""
        with self.lock:
            above = self._folder(user.lower(), parent)
            assert above is not None, f"no folder {parent} for {user}"
            folder = Folder(self.new_id("folder"), user.lower(), name, above.id)
            self.folders[folder.id] = folder
            return folder.id

    def delete_folder(self, folder: Folder) -> None:
        """Remove a folder and everything in it (as a user might)."""
        with self.lock:
            del self.folders[folder.id]
            for message in [m for m in self.messages.values() if m.folder == folder.id]:
                del self.messages[message.id]

    def deliver(
        self, user: str, mime: bytes, *, folder: str = "inbox", received: dt.datetime | None = None
    ) -> str:
        """Put a message into ``user``'s folder (well-known name or id); returns its id."""
        with self.lock:
            target = self._folder(user.lower(), folder)
            assert target is not None, f"no folder {folder} for {user}"
            if received is None:
                self._clock += dt.timedelta(minutes=1)
                received = self._clock
            message = Message(
                self.new_id("message"), user.lower(), target.id, mime, received, next(self._seq)
            )
            self.messages[message.id] = message
            return message.id

    def touch(self, message_id: str, **changed: Any) -> None:
        """Change properties of a message (``isRead=True`` …) as a user might; the next
        delta round reports it as an "updated" entry with only those properties."""
        with self.lock:
            self.messages[message_id].seq = next(self._seq)
            self._updates.setdefault(message_id, {}).update(changed)

    def remove(self, message_id: str) -> None:
        """Delete a message for good (as another client might)."""
        with self.lock:
            message = self.messages.pop(message_id)
            self.removals.append((next(self._seq), message.folder, message.id))

    def in_folder(self, user: str, folder: str = "inbox") -> list[Message]:
        """The messages of a folder (well-known name, id or path), oldest first."""
        with self.lock:
            target = self._folder(user.lower(), folder) or self.folder_named(user, folder)
            if target is None:
                return []
            found = [m for m in self.messages.values() if m.folder == target.id]
        return sorted(found, key=lambda m: m.received)

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        *,
        times: int = 1,
        code: str = "",
        retry_after: str | None = None,
        after: bool = False,
        stall: float = 0.0,
    ) -> None:
        """Answer the next ``times`` ``method`` requests whose path (and query) contain ``path``.

        ``status`` 0 drops the connection without an answer. ``after``: carry the
        request out first (send the mail, move the message), then fail the answer.
        ``stall``: hold the answer back that many seconds (a client timing out).
        """
        with self.lock:
            self.faults.append(Fault(method, path, status, times, code, retry_after, after, stall))

    def expire_delta_links(self) -> None:
        """Forget every delta token, as Graph does after a while (answers 410)."""
        with self.lock:
            self._delta_tokens.clear()

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        """The requests received, optionally of one method and with ``contains`` in the path."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            ]

    # -- protocol --------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """Answer one request: (status, headers, body), or ``None`` to drop the connection."""
        split = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(split.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        with self.lock:
            self.requests.append(Request(method, path, query, headers, body))
            auth = headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else ""
            # An upload URL carries its own token (authtoken) and is checked by _upload.
            if not path.startswith(UPLOAD_PREFIX) and not self._accepted(token):
                message = "Access token is empty." if not token else "Lifetime validation failed."
                return _error(401, "InvalidAuthenticationToken", message, bearer=True)
            if len(body) > REQUEST_LIMIT:
                return _error(
                    413, "RequestEntityTooLarge", "The maximum request length supported is 4MB."
                )
            # Faults match the decoded path and query, so "$skiptoken" picks a later page.
            seen = f"{path}?{urllib.parse.unquote(split.query)}"
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path in seen:
                    fault.times -= 1
                    if fault.after:  # the service did the work; the answer is lost
                        self._answer(method, path, query, headers, body)
                    if fault.status == 0:
                        return None
                    status, extra, payload = _fault(fault)
                    if fault.stall:
                        extra[_STALL] = str(fault.stall)
                    return status, extra, payload
            return self._answer(method, path, query, headers, body)

    def _answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if path.startswith(UPLOAD_PREFIX) and method == "PUT":
                return self._upload(path[len(UPLOAD_PREFIX) :], query, headers, body)
            if not path.startswith(ROOT + "/users/"):
                return _error(400, "BadRequest", f"Resource not found for the segment '{path}'.")
            parts = path[len(ROOT) + 1 :].split("/")
            user = parts[1].lower()
            if self.well_known(user, "msgfolderroot") is None:
                return _error(
                    404, "ErrorInvalidUser", f"The requested user '{parts[1]}' is invalid."
                )
            return self._route(method, user, parts[2:], query, headers, body)

    def _accepted(self, token: str) -> bool:
        if not token or token in self.revoked:
            return False
        return token in self.tokens or (self.accept is not None and self.accept(token))

    def _route(
        self,
        method: str,
        user: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        if parts == ["sendMail"] and method == "POST":
            return self._send_mail(user, headers, body)
        if parts == ["messages"] and method == "POST":
            return self._create_draft(user, headers, body)
        if parts and parts[0] == "messages" and len(parts) >= 2:
            message = self.messages.get(parts[1])
            if message is None or message.user != user:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            rest = parts[2:]
            if rest == [] and method == "GET":
                return _json(200, self._message_json(message, query.get("$select", ""), ""))
            if rest == [] and method == "DELETE":
                self.remove(message.id)
                return 204, {}, b""
            if rest == ["$value"] and method == "GET":
                return 200, {"Content-Type": "text/plain"}, message.mime
            if rest == ["move"] and method == "POST":
                return self._move(user, message, body)
            if rest and rest[0] in ("attachments", "send") and method == "POST":
                return self._draft_step(message, rest, body)
        if parts and parts[0] == "mailFolders" and len(parts) >= 2:
            folder = self._folder(user, parts[1])
            if folder is None:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            rest = parts[2:]
            if rest == ["messages"] and method == "GET":
                return self._list(folder, query, headers)
            if rest == ["messages", "delta"] and method == "GET":
                return self._delta(folder, query, headers)
            if rest == ["childFolders"] and method == "GET":
                return self._children(folder, query)
            if rest == ["childFolders"] and method == "POST":
                return self._create_folder(folder, body)
            if rest == [] and method == "GET":
                count = sum(1 for m in self.messages.values() if m.folder == folder.id)
                return _json(200, _folder_json(folder, total=count))
        return _error(400, "BadRequest", "Unsupported request.")

    def _folder(self, user: str, key: str) -> Folder | None:
        folder = self.folders.get(key)
        if folder is not None and folder.user == user:
            return folder
        return self.well_known(user, key.lower())

    def _link(self, path: str, **query: str) -> str:
        base = self.link_base or self.base_url
        return f"{base}{path[len(ROOT) :]}?{urllib.parse.urlencode(query)}"

    def _message_json(self, message: Message, select: str, expand: str) -> dict[str, Any]:
        fields = {f.strip() for f in select.split(",") if f.strip()}
        data: dict[str, Any] = {
            "@odata.etag": 'W/"CQAAABYAAADx0NDJ"',
            "id": message.id,
        }
        if not fields or "receivedDateTime" in fields:
            data["receivedDateTime"] = message.received.strftime("%Y-%m-%dT%H:%M:%SZ")
        if not fields or "parentFolderId" in fields:
            data["parentFolderId"] = message.folder
        if not fields or "internetMessageId" in fields:
            data["internetMessageId"] = message.internet_message_id
        if "0x0e08" in expand.lower():
            # Graph names the property back in its normalised form.
            data["singleValueExtendedProperties"] = [
                {"id": "Integer 0xe08", "value": str(message.size)}
            ]
        return data

    def _page_size(self, headers: dict[str, str], query: dict[str, str]) -> int:
        if "$top" in query:
            return int(query["$top"])
        found = re.search(r"odata\.maxpagesize=(\d+)", headers.get("prefer", ""))
        return int(found.group(1)) if found else _DEFAULT_PAGE

    def _list(
        self, folder: Folder, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        inside = [m for m in self.messages.values() if m.folder == folder.id]
        wanted = query.get("$filter")
        if wanted is not None:
            match = _FILTER_MESSAGE_ID.match(wanted)
            if match is None:
                return _error(400, "ErrorInvalidUrlQueryFilter", "The filter is not supported.")
            message_id = match.group(1).replace("''", "'")
            inside = [m for m in inside if m.internet_message_id == message_id]
        items = sorted(
            inside,
            key=lambda m: m.received,
            reverse=query.get("$orderby", "").endswith("desc"),
        )
        skip = int(query.get("$skip", "0"))
        top = self._page_size(headers, query)
        page = items[skip : skip + top]
        data: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/messages",
            "value": [
                self._message_json(m, query.get("$select", ""), query.get("$expand", ""))
                for m in page
            ],
        }
        if skip + top < len(items):
            path = f"{ROOT}/users/{folder.user}/mailFolders/{folder.id}/messages"
            data["@odata.nextLink"] = self._link(path, **{**query, "$skip": str(skip + top)})
        return _json(200, data)

    def _delta(
        self, folder: Folder, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        path = f"{ROOT}/users/{folder.user}/mailFolders/{folder.id}/messages/delta"
        if "$skiptoken" in query:
            key, _, offset_text = query["$skiptoken"].partition(".")
            round_ = self._rounds.get(key)
            if round_ is None:
                return _error(400, "SyncStateInvalid", "The skip token is not valid.")
            offset = int(offset_text)
        else:
            start = None
            select, expand = query.get("$select", ""), query.get("$expand", "")
            if "$deltatoken" in query:
                previous = self._delta_tokens.get(query["$deltatoken"])
                if previous is None or previous.folder != folder.id:
                    return _error(
                        410, "SyncStateNotFound", "The sync state generation is not found."
                    )
                start, select, expand = previous.end, previous.select, previous.expand
            round_ = self._new_round(folder, start, select, expand)
            key = secrets.token_urlsafe(12)
            self._rounds[key] = round_
            offset = 0
        size = self._page_size(headers, {})
        page = round_.items[offset : offset + size]
        data: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
            "value": page,
        }
        if offset + size < len(round_.items):
            data["@odata.nextLink"] = self._link(path, **{"$skiptoken": f"{key}.{offset + size}"})
        else:
            token = secrets.token_urlsafe(16)
            self._delta_tokens[token] = round_
            data["@odata.deltaLink"] = self._link(path, **{"$deltatoken": token})
        return _json(200, data)

    def _new_round(self, folder: Folder, start: int | None, select: str, expand: str) -> _Round:
        end = next(self._seq)
        inside = [m for m in self.messages.values() if m.folder == folder.id]
        changed = [m for m in inside if start is None or m.seq > start]
        # Unordered, like Graph's delta: the client must not rely on the order.
        changed.sort(key=lambda m: m.id)
        items = [self._delta_entry(m, select, expand, start) for m in changed]
        if start is not None:
            here = {m.id for m in inside}
            gone = {
                mid for seq, fid, mid in self.removals if fid == folder.id and seq > start
            } - here
            items += [self._gone_entry(mid) for mid in sorted(gone)]
        fresh = list(items)
        if start is not None and self.replay_delta:
            # At least once, not exactly once: the last round's entries come again.
            items += [i for i in self._last_round.get(folder.id, []) if "@removed" not in i]
        self._last_round[folder.id] = fresh
        return _Round(items, end, folder.id, select, expand)

    def _delta_entry(
        self, message: Message, select: str, expand: str, start: int | None
    ) -> dict[str, Any]:
        changed = self._updates.pop(message.id, None)
        if start is not None and changed is not None:
            # An "updated" entry: the id and what changed, nothing else.
            return {"@odata.type": "#microsoft.graph.message", "id": message.id, **changed}
        return {
            "@odata.type": "#microsoft.graph.message",
            **self._message_json(message, select, expand),
        }

    def _gone_entry(self, message_id: str) -> dict[str, Any]:
        moved = self.messages.get(message_id)
        if self.moves_as_updates and moved is not None:
            return {
                "@odata.type": "#microsoft.graph.message",
                "id": message_id,
                "parentFolderId": moved.folder,
            }
        return {"id": message_id, "@removed": {"reason": "deleted"}}

    def _children(self, folder: Folder, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        children = [f for f in self.folders.values() if f.parent == folder.id]
        wanted = query.get("$filter")
        if wanted is not None:
            match = _FILTER_NAME.match(wanted)
            if match is None:
                return _error(400, "ErrorInvalidUrlQueryFilter", "The filter is not supported.")
            name = match.group(1).replace("''", "'")
            children = [f for f in children if f.name.lower() == name.lower()]
        return _json(200, {"value": [_folder_json(f) for f in children]})

    def _create_folder(self, parent: Folder, body: bytes) -> tuple[int, dict[str, str], bytes]:
        name = str(json.loads(body or b"{}").get("displayName") or "")
        if not name:
            return _error(400, "ErrorInvalidRequest", "displayName is required.")
        if any(
            f.parent == parent.id and f.name.lower() == name.lower() for f in self.folders.values()
        ):
            return _error(
                409, "ErrorFolderExists", "A folder with the specified name already exists."
            )
        folder = Folder(self.new_id("folder"), parent.user, name, parent.id)
        self.folders[folder.id] = folder
        return _json(201, _folder_json(folder))

    def _move(self, user: str, message: Message, body: bytes) -> tuple[int, dict[str, str], bytes]:
        destination = str(json.loads(body or b"{}").get("destinationId") or "")
        target = self._folder(user, destination)
        if target is None:
            return _error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        if target.id != message.folder:
            self.removals.append((next(self._seq), message.folder, message.id))
            message.folder = target.id
            message.seq = next(self._seq)
        # Immutable ids: the message keeps its id in its new folder.
        return _json(201, self._message_json(message, "", ""))

    def _send_mail(
        self, user: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        content_type = headers.get("content-type", "")
        if content_type.startswith("text/plain"):
            try:
                mime = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return _error(
                    400,
                    "ErrorMimeContentInvalidBase64String",
                    "Invalid base64 string for MIME content.",
                )
        elif content_type.startswith("application/json"):
            mime = body
        else:
            return _error(415, "UnsupportedMediaType", "Unsupported content type.")
        if not mime:
            return _error(400, "ErrorInvalidRequest", "The message is empty.")
        self.sent.append(Sent(user, content_type, mime))
        self.deliver(user, mime, folder="sentitems")  # saveToSentItems is true by default
        return 202, {}, b""

    # -- drafts, attachments, upload sessions (tests/servers/graph_drafts.py) ---------

    def drafts(self, user: str) -> list[Message]:
        """The messages in ``user``'s Drafts."""
        return self.in_folder(user, "drafts")

    def _create_draft(
        self, user: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("text/plain"):
                mime = base64.b64decode(body, validate=True)
            elif content_type.startswith("application/json"):
                mime = mime_from_json(json.loads(body or b"{}"))
            else:
                return _error(415, "UnsupportedMediaType", "Unsupported content type.")
        except (binascii.Error, ValueError):
            message = "Invalid base64 string for MIME content."
            return _error(400, "ErrorMimeContentInvalidBase64String", message)
        except DraftError as exc:
            return _error(400, exc.code, str(exc))
        if not mime:
            return _error(400, "ErrorInvalidRequest", "The message is empty.")
        draft_id = self.deliver(user, mime, folder="drafts")
        self.messages[draft_id].draft = True
        return _json(201, {**self._message_json(self.messages[draft_id], "", ""), "isDraft": True})

    def _draft_step(
        self, message: Message, rest: list[str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if not message.draft:
            return _error(400, "ErrorInvalidOperation", "The message is not a draft.")
        try:
            if rest == ["attachments"]:
                attachment = attachment_from_json(json.loads(body or b"{}"))
                message.attachments.append(attachment)
                return _json(201, {"id": self.new_id("attachment"), "name": attachment.name})
            if rest == ["attachments", "createUploadSession"]:
                return self._new_session(message, json.loads(body or b"{}"))
        except DraftError as exc:
            return _error(400, exc.code, str(exc))
        if rest == ["send"]:
            mime = mime_with_attachments(message.mime, message.attachments)
            self.sent.append(Sent(message.user, "draft", mime))
            del self.messages[message.id]  # the draft leaves Drafts …
            self.removals.append((next(self._seq), message.folder, message.id))
            self.deliver(message.user, mime, folder="sentitems")  # … and its copy is filed
            return 202, {}, b""
        return _error(400, "BadRequest", "Unsupported request.")

    def _new_session(
        self, message: Message, data: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        session = session_from_json(
            data,
            session_id=secrets.token_urlsafe(12),
            token=secrets.token_urlsafe(24),
            message_id=message.id,
        )
        self.sessions[session.id] = session
        origin = self.base_url[: -len(ROOT)]
        answer = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{origin}{UPLOAD_PREFIX}{session.id}?authtoken={session.token}",
            "expirationDateTime": "2026-03-02T11:00:00Z",
            "nextExpectedRanges": ["0-"],
        }
        return _json(201, answer)

    def _upload(
        self, session_id: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """A PUT of a range of a file to its upload URL."""
        session = self.sessions.get(session_id)
        if "authorization" in headers or session is None:
            # The URL is its own credential; a bearer token there is refused.
            return _error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        if query.get("authtoken") != session.token:
            return _error(401, "InvalidAuthenticationToken", "The authtoken is invalid.")
        draft = self.messages.get(session.message_id)
        if draft is None:
            return _error(404, "ErrorItemNotFound", "The draft no longer exists.")
        try:
            whole = take_range(session, headers.get("content-range", ""), body)
        except DraftError as exc:
            return _error(400, exc.code, str(exc))
        if not whole:
            progress = {
                "expirationDateTime": "2026-03-02T11:00:00Z",
                "nextExpectedRanges": [str(len(session.received))],
            }
            return _json(200, progress)
        del self.sessions[session_id]
        draft.attachments.append(
            Attachment(
                session.name,
                session.content_type,
                bytes(session.received),
                session.content_id,
                session.inline,
            )
        )
        location = f"{self.base_url}/users/{draft.user}/messages/{draft.id}/attachments"
        return 201, {"Location": location}, b""


def _folder_json(folder: Folder, *, total: int = 0) -> dict[str, Any]:
    return {
        "id": folder.id,
        "displayName": folder.name,
        "parentFolderId": folder.parent,
        "childFolderCount": 0,
        "unreadItemCount": 0,
        "totalItemCount": total,
        "isHidden": False,
    }


def _json(status: int, data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": JSON_TYPE}, json.dumps(data).encode()


def _error(
    status: int, code: str, message: str, *, bearer: bool = False, retry_after: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request_id = str(uuid.uuid4())
    data = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2026-03-02T09:00:00",
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    headers = {"Content-Type": JSON_TYPE}
    if bearer:
        headers["WWW-Authenticate"] = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, json.dumps(data).encode()


def _fault(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    defaults = {
        429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
        503: ("ServiceUnavailable", "The service is temporarily unavailable."),
        500: ("InternalServerError", "An internal server error occurred."),
        502: ("BadGateway", "The gateway received an invalid answer."),
        504: ("GatewayTimeout", "The gateway did not receive a timely answer."),
        413: ("RequestEntityTooLarge", "The maximum request length supported is 4MB."),
        401: ("InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."),
        404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    }
    code, message = defaults.get(fault.status, ("ErrorInvalidRequest", "The request failed."))
    return _error(
        fault.status,
        fault.code or code,
        message,
        bearer=fault.status == 401,
        retry_after=fault.retry_after,
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds
    # the second one back about 40 ms per response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``GraphState.requests`` instead."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve("GET")

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve("POST")

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._serve("DELETE")

    def do_PUT(self) -> None:
        """Serve a PUT (a range of an upload session)."""
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.state.handle(method, self.path, headers, body)
        if answer is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        status, extra, payload = answer
        stall = float(extra.pop(_STALL, "0"))
        if stall:
            # Outside the store's lock: other requests are served meanwhile.
            time.sleep(stall)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("request-id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: GraphState

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (it stopped reading a message over its limit)."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class GraphServer:
    """A running server: its base URL (``http://127.0.0.1:<port>/v1.0``) and its store."""

    url: str
    _server: _Server = field(repr=False)

    @property
    def state(self) -> GraphState:
        """The store being served."""
        return self._server.state

    @state.setter
    def state(self, value: GraphState) -> None:
        value.base_url = self.url
        self._server.state = value


@contextlib.contextmanager
def running_graph_server(state: GraphState | None = None) -> Iterator[GraphServer]:
    """Serve a store on 127.0.0.1 (port 0) in a thread.

    The server counts as started only after a real round trip: a request without a
    token answered with Graph's 401 ``InvalidAuthenticationToken``.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="graph-test-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    running = GraphServer(f"http://{host!s}:{port}{ROOT}", server)
    running.state = state or GraphState()
    try:
        probe = http.client.HTTPConnection(str(host), port, timeout=5)
        probe.request("GET", f"{ROOT}/users/probe@example.com/mailFolders/inbox/messages")
        answer = probe.getresponse()
        error = json.loads(answer.read())["error"]["code"]
        probe.close()
        if answer.status != 401 or error != "InvalidAuthenticationToken":
            raise RuntimeError(f"the Graph test server answered {answer.status} to its probe")
        running.state.requests.clear()
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
