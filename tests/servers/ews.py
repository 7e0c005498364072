"""A local Exchange Web Services endpoint: SOAP 1.1 over HTTP on loopback.

It answers POSTs to ``/EWS/Exchange.asmx`` for the operations halomail's EWS connector
and transport send through exchangelib — GetFolder, FindFolder, CreateFolder,
FindItem, GetItem, MoveItem, DeleteItem, CreateItem — with the envelopes, response
messages, paging attributes and SOAP faults of the EWS reference
(learn.microsoft.com, "EWS reference for Exchange"). The fixtures are written here by
hand from that reference; nothing was recorded from a real server.

The mail store is in memory: mailboxes (by SMTP address), each with the well-known
folders (``root``, ``msgfolderroot``, ``inbox``, ``deleteditems``, ``sentitems``) and
any folders created, and items holding MIME bytes. Requests authenticate with HTTP
Basic (``users``) or an OAuth2 bearer token (``tokens``); anything else gets ``401``
with ``WWW-Authenticate``. With ``ntlm`` set, NTLM is offered too and verified for real
by pyspnego's NTLM acceptor, whose accounts are the ``NTLM_USER_FILE`` the test points
to (``DOMAIN:user:password`` lines); as IIS does, NTLM authenticates the keep-alive
connection, not each request. Tests arm faults (:meth:`EwsState.fail`) to see throttling,
dropped connections and errors on a given call of an operation; with ``after=True`` the
request is carried out first and only its answer fails, as when a real server times out
or a proxy drops the connection after Exchange did the work.

As Exchange Online does, an application's own token (``apps``: client credentials) is
refused unless the request impersonates a mailbox with the ``ExchangeImpersonation``
header, and ``app_scope`` limits which mailboxes an application may reach (an
application access policy, or RBAC for Applications). DeleteItem keeps what each
``DeleteType`` leaves: ``MoveToDeletedItems`` in Deleted Items, ``SoftDelete`` in the
Recoverable Items "Deletions" folder, ``HardDelete`` nowhere but ``EwsState.purged``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import http.client
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from defusedxml import ElementTree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"
PATH = "/EWS/Exchange.asmx"

# The folders every mailbox has, by DistinguishedFolderId, with their display names
# and parents (msgfolderroot is "Top of Information Store").
WELL_KNOWN = {
    "root": ("", None),
    "msgfolderroot": ("Top of Information Store", "root"),
    "inbox": ("Inbox", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "msgfolderroot"),
    "sentitems": ("Sent Items", "msgfolderroot"),
    # The dumpster, outside the folders a user sees: where SoftDelete puts an item.
    "recoverableitemsroot": ("Recoverable Items", "root"),
    "recoverableitemsdeletions": ("Deletions", "recoverableitemsroot"),
}

# ServerVersionInfo of Exchange Server 2016 CU23, as the SOAP header carries it.
_VERSION_HEADER = (
    '<h:ServerVersionInfo xmlns:h="{tns}" MajorVersion="15" MinorVersion="1" '
    'MajorBuildNumber="2507" MinorBuildNumber="6" Version="{version}"/>'
)


def _q(tag: str, ns: str = TNS) -> str:
    return f"{{{ns}}}{tag}"


@dataclass
class Folder:
    """A folder of the store."""

    id: str
    mailbox: str
    name: str
    parent: str | None
    distinguished: str | None = None
    changekey: str = "AQAAABYAAAA="


@dataclass
class Item:
    """A message of the store: its MIME bytes and where it is."""

    id: str
    folder: str
    mime: bytes
    received: dt.datetime
    changekey: int = 1

    @property
    def size(self) -> int:
        """What ``item:Size`` reports: the MIME size plus some property overhead."""
        return len(self.mime) + 512

    @property
    def internet_message_id(self) -> str:
        """``message:InternetMessageId``: the Message-ID header, angle brackets included."""
        return str(BytesHeaderParser().parsebytes(self.mime).get("Message-ID", "")).strip()


@dataclass
class Sent:
    """A message the server was asked to send (CreateItem with a sending disposition)."""

    mailbox: str
    disposition: str
    mime: bytes
    to: list[str]
    bcc: list[str]


@dataclass
class Fault:
    """A failure armed for the ``nth`` coming call of ``operation``.

    ``kind`` is ``busy`` (SOAP fault ErrorServerBusy with BackOffMilliseconds ``value``),
    ``http<status>`` such as ``http503``, ``http504`` or ``http429`` (an error page, with
    ``Retry-After: value`` when ``value`` is set), ``drop`` (the connection closes without
    an answer), ``stall`` (no answer for ``value`` seconds, then the connection closes:
    the client times out), ``unauthorized`` (401) or ``error`` (a response message of
    class Error with the ResponseCode ``code``). With ``after`` the request is carried
    out first and only then does its answer fail.
    """

    operation: str
    kind: str
    nth: int = 1
    value: float = 0
    times: int = 1
    code: str = ""
    after: bool = False


@dataclass
class Request:
    """What the server saw of one call."""

    operation: str
    principal: str
    impersonated: str | None
    anchor: str | None
    authorization: str
    body: bytes = field(repr=False)


class EwsState:
    """The store, the accounts, the armed faults and the log of calls.

    Args:
        users: Basic-auth logins and their passwords.
        tokens: Valid bearer tokens and the principal each stands for.
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        *,
        ntlm: bool = False,
    ) -> None:
        self.lock = threading.RLock()
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.ntlm = ntlm
        #: Also accept a bearer token this says yes to (e.g. one a token endpoint
        #: issued); its principal is ``oauth-app``.
        self.accept_token: Callable[[str], bool] | None = None
        #: Principals that are applications (client-credentials tokens): refused
        #: unless the request impersonates a mailbox.
        self.apps: set[str] = {"oauth-app"}
        #: The mailboxes an application may reach (absent: all of them).
        self.app_scope: dict[str, set[str]] = {}
        #: Items DeleteItem removed with HardDelete.
        self.purged: list[Item] = []
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Item] = {}
        self.sent: list[Sent] = []
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._clock = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)

    # -- the store -------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        # Real ids are long base64 blobs; these keep the shape (and its '=' and '/').
        raw = f"{kind}:{next(self._ids):06d}:halomail-test".encode()
        return base64.b64encode(raw).decode()

    def mailbox(self, address: str) -> None:
        """Create ``address``'s mailbox with its well-known folders (idempotent)."""
        address = address.lower()
        with self.lock:
            if self.distinguished(address, "root") is not None:
                return
            ids: dict[str, str] = {}
            for key, (name, parent) in WELL_KNOWN.items():
                folder_id = self._new_id("folder")
                ids[key] = folder_id
                self.folders[folder_id] = Folder(
                    folder_id, address, name, ids[parent] if parent else None, key
                )

    def distinguished(self, address: str, key: str) -> Folder | None:
        """The well-known folder ``key`` of ``address``'s mailbox."""
        with self.lock:
            for folder in self.folders.values():
                if folder.mailbox == address.lower() and folder.distinguished == key:
                    return folder
        return None

    def folder_named(self, address: str, name: str) -> Folder | None:
        """A folder of ``address``'s mailbox by display name (case-insensitive)."""
        with self.lock:
            for folder in self.folders.values():
                if folder.mailbox == address.lower() and folder.name.lower() == name.lower():
                    return folder
        return None

    def create_folder(self, address: str, name: str, parent_key: str = "msgfolderroot") -> Folder:
        """Create a user folder (as an administrator would, before a test)."""
        parent = self.distinguished(address, parent_key)
        assert parent is not None
        with self.lock:
            folder = Folder(self._new_id("folder"), address.lower(), name, parent.id)
            self.folders[folder.id] = folder
            return folder

    def deliver(self, address: str, mime: bytes, folder: str = "inbox") -> str:
        """Put a message in a folder (by well-known key or display name); its ItemId."""
        self.mailbox(address)
        target = self.distinguished(address, folder) or self.folder_named(address, folder)
        assert target is not None, folder
        with self.lock:
            self._clock += dt.timedelta(minutes=1)
            item = Item(self._new_id("item"), target.id, mime, self._clock)
            self.items[item.id] = item
            return item.id

    def messages(self, address: str, folder: str) -> list[bytes]:
        """The MIME of the messages in a folder (well-known key or display name)."""
        target = self.distinguished(address, folder) or self.folder_named(address, folder)
        if target is None:
            return []
        with self.lock:
            found = [i for i in self.items.values() if i.folder == target.id]
        return [i.mime for i in sorted(found, key=lambda i: i.received)]

    def calls(self, operation: str | None = None) -> list[Request]:
        """The calls seen, optionally of one operation."""
        with self.lock:
            return [r for r in self.requests if operation in (None, r.operation)]

    def fail(
        self,
        operation: str,
        kind: str,
        *,
        nth: int = 1,
        value: float = 0,
        times: int = 1,
        code: str = "",
        after: bool = False,
    ) -> None:
        """Arm a failure for the ``nth`` next call of ``operation`` (and ``times`` calls).

        With ``after`` the call is carried out, and then its answer fails.
        """
        with self.lock:
            seen = sum(1 for r in self.requests if r.operation == operation)
            self.faults.append(Fault(operation, kind, seen + nth, value, times, code, after))

    def _fault_for(self, operation: str) -> Fault | None:
        with self.lock:
            count = sum(1 for r in self.requests if r.operation == operation)
            for fault in self.faults:
                if fault.operation == operation and fault.nth <= count < fault.nth + fault.times:
                    return fault
        return None


# -- SOAP helpers --------------------------------------------------------------------


def _envelope(body: str, version: str = "Exchange2016") -> bytes:
    header = _VERSION_HEADER.format(tns=TNS, version=version)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Header>{header}</s:Header>'
        f'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema">{body}</s:Body></s:Envelope>'
    ).encode()


def _response(operation: str, messages: list[str]) -> str:
    return (
        f'<m:{operation}Response xmlns:m="{MNS}" xmlns:t="{TNS}">'
        f"<m:ResponseMessages>{''.join(messages)}</m:ResponseMessages>"
        f"</m:{operation}Response>"
    )


def _ok(operation: str, content: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode>{content}</m:{operation}ResponseMessage>"
    )


_ERROR_TEXT = {
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorFolderExists": "A folder with the specified name already exists.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorInvalidOperation": "The operation is not valid.",
    "ErrorInvalidRecipients": "At least one recipient isn't valid.",
    "ErrorMailboxStoreUnavailable": "The mailbox database is temporarily unavailable.",
}


def _error(operation: str, code: str, container: str = "") -> str:
    text = _ERROR_TEXT.get(code, code)
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(text)}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{container}"
        f"</m:{operation}ResponseMessage>"
    )


def _busy_fault(back_off_ms: int) -> bytes:
    # The throttling fault of "EWS throttling in Exchange": HTTP 500, a SOAP fault whose
    # detail carries ErrorServerBusy and the BackOffMilliseconds to wait.
    text = "The server cannot service this request right now. Try again later."
    body = (
        "<s:Fault>"
        f'<faultcode xmlns:a="{TNS}">a:ErrorServerBusy</faultcode>'
        f'<faultstring xml:lang="en-US">{text}</faultstring>'
        "<detail>"
        f'<e:ResponseCode xmlns:e="{ENS}">ErrorServerBusy</e:ResponseCode>'
        f'<e:Message xmlns:e="{ENS}">{text}</e:Message>'
        f'<t:MessageXml xmlns:t="{TNS}">'
        f'<t:Value Name="BackOffMilliseconds">{back_off_ms}</t:Value></t:MessageXml>'
        "</detail></s:Fault>"
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _soap_fault(code: str, text: str) -> bytes:
    """An HTTP 500 SOAP fault whose detail names the ResponseCode, as Exchange sends for
    a request it refuses as a whole (before any operation runs)."""
    body = (
        f'<s:Fault><faultcode xmlns:a="{TNS}">a:{code}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring><detail>'
        f'<e:ResponseCode xmlns:e="{ENS}">{code}</e:ResponseCode>'
        f'<e:Message xmlns:e="{ENS}">{escape(text)}</e:Message></detail></s:Fault>'
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _refusal(state: EwsState, principal: str, impersonated: str | None) -> bytes | None:
    """Exchange Online's answer to an application's token used as it must not be."""
    if principal not in state.apps:
        return None
    if impersonated is None:
        return _soap_fault(
            "ErrorInvalidExchangeImpersonationHeaderData",
            "ExchangeImpersonation SOAP header must be present for this type of OAuth token.",
        )
    scope = state.app_scope.get(principal)
    if scope is not None and impersonated not in scope:
        return _soap_fault(
            "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    return None


def _folder_xml(state: EwsState, folder: Folder) -> str:
    children = sum(1 for f in state.folders.values() if f.parent == folder.id)
    count = sum(1 for i in state.items.values() if i.folder == folder.id)
    parent = (
        f"<t:ParentFolderId Id={quoteattr(folder.parent)} ChangeKey={quoteattr(folder.changekey)}/>"
        if folder.parent
        else ""
    )
    return (
        f"<t:Folder><t:FolderId Id={quoteattr(folder.id)} ChangeKey={quoteattr(folder.changekey)}/>"
        f"{parent}<t:FolderClass>IPF.Note</t:FolderClass>"
        f"<t:DisplayName>{escape(folder.name)}</t:DisplayName>"
        f"<t:TotalCount>{count}</t:TotalCount><t:ChildFolderCount>{children}</t:ChildFolderCount>"
        f"<t:UnreadCount>{count}</t:UnreadCount></t:Folder>"
    )


def _item_id_xml(item: Item) -> str:
    changekey = base64.b64encode(f"ck{item.changekey}".encode()).decode()
    return f"<t:ItemId Id={quoteattr(item.id)} ChangeKey={quoteattr(changekey)}/>"


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as exchangelib's sessions expect
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds
    # the second one back about 40 ms per response.
    disable_nagle_algorithm = True
    server: _Server
    # NTLM state of this connection (one handler instance serves one connection).
    _ntlm_context: Any = None
    _ntlm_principal: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``EwsState.requests`` instead."""

    def do_POST(self) -> None:
        """Answer one SOAP request."""
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path != PATH:
            self._send(404, b"Not Found", "text/plain")
            return
        if self.headers.get("Authorization", "").startswith("NTLM ") and self._ntlm_step():
            return  # a handshake leg was answered
        principal = self._authenticate()
        if principal is None:
            offers = [
                ("WWW-Authenticate", 'Basic realm="ews.halomail.test"'),
                ("WWW-Authenticate", "Bearer"),
            ]
            if self.server.state.ntlm:
                offers.insert(0, ("WWW-Authenticate", "NTLM"))
            self._send(401, b"401 Unauthorized", "text/plain", offers)
            return
        state = self.server.state
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            self._send(400, b"Bad Request", "text/plain")
            return
        soap_body = root.find(_q("Body", SOAP))
        request = soap_body[0] if soap_body is not None and len(soap_body) else None
        operation = request.tag.split("}", 1)[-1] if request is not None else ""
        header = root.find(_q("Header", SOAP))
        impersonated = None
        version = "Exchange2016"
        if header is not None:
            node = header.find(f"{_q('ExchangeImpersonation')}/{_q('ConnectingSID')}")
            if node is not None and len(node):
                impersonated = (node[0].text or "").lower()
            requested = header.find(_q("RequestServerVersion"))
            if requested is not None:
                version = requested.get("Version", version)
        anchor = self.headers.get("X-AnchorMailbox")
        with state.lock:
            state.requests.append(
                Request(
                    operation,
                    principal,
                    impersonated,
                    anchor.lower() if anchor else None,
                    self.headers.get("Authorization", ""),
                    body,
                )
            )
            fault = state._fault_for(operation)
            refusal = _refusal(state, principal, impersonated)
        if refusal is not None:
            self._send(500, refusal)
            return
        if fault is not None and not fault.after and self._inject(fault, operation):
            return
        address = impersonated or (anchor.lower() if anchor else principal)
        handler = getattr(self, f"_op_{operation}", None)
        if request is None or handler is None:
            self._send(500, _envelope(self._soap_fault("ErrorInvalidRequest", operation)))
            return
        with state.lock:
            content = handler(state, request, address)
        if fault is not None and fault.after and self._inject(fault, operation):
            return  # done, and the answer lost
        self._send(200, _envelope(content, version))

    # -- plumbing ----------------------------------------------------------------------

    def _ntlm_step(self) -> bool:
        """Take one NTLM handshake leg; True when it was answered with a 401."""
        import spnego  # requests-ntlm's own dependency, so present with exchangelib

        token = base64.b64decode(self.headers["Authorization"][5:].strip())
        if self._ntlm_context is None or self._ntlm_principal is not None:
            self._ntlm_principal = None
            self._ntlm_context = spnego.server(protocol="ntlm")
        try:
            answer = self._ntlm_context.step(token)
        except spnego.exceptions.SpnegoError:
            self._ntlm_context = None
            self._send(401, b"401 Unauthorized", "text/plain", [("WWW-Authenticate", "NTLM")])
            return True
        if not self._ntlm_context.complete:
            challenge = base64.b64encode(answer or b"").decode()
            self._send(401, b"", "text/plain", [("WWW-Authenticate", f"NTLM {challenge}")])
            return True
        self._ntlm_principal = str(self._ntlm_context.client_principal).lower()
        return False

    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        state = self.server.state
        if self._ntlm_principal is not None and scheme.lower() in ("", "ntlm"):
            return self._ntlm_principal
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if state.users.get(user) == password:
                return user.lower()
        if scheme.lower() == "bearer" and value in state.tokens:
            return state.tokens[value].lower()
        if scheme.lower() == "bearer" and state.accept_token and state.accept_token(value):
            return "oauth-app"
        return None

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str = "text/xml; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _inject(self, fault: Fault, operation: str) -> bool:
        if fault.kind == "error":
            answer = _response(operation, [_error(operation, fault.code, "<m:Items/>")])
            self._send(200, _envelope(answer))
        elif fault.kind == "busy":
            self._send(500, _busy_fault(fault.value))
        elif fault.kind.startswith("http") and fault.kind[4:].isdigit():
            status = int(fault.kind[4:])
            page = (
                f"<html><body>HTTP {status}: {http.client.responses.get(status, '')}</body></html>"
            )
            wait = [("Retry-After", f"{fault.value:g}")] if fault.value else []
            self._send(status, page.encode(), "text/html", wait)
        elif fault.kind == "stall":
            time.sleep(fault.value)  # the client gives up meanwhile
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.kind == "unauthorized":
            self._send(401, b"401 Unauthorized", "text/plain", [("WWW-Authenticate", "Bearer")])
        elif fault.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        else:
            return False
        return True

    @staticmethod
    def _soap_fault(code: str, operation: str) -> str:
        return (
            f'<s:Fault><faultcode xmlns:a="{TNS}">a:{code}</faultcode>'
            f"<faultstring>The request is not supported by this test server: {escape(operation)}"
            f'</faultstring><detail><e:ResponseCode xmlns:e="{ENS}">{code}</e:ResponseCode>'
            f'<e:Message xmlns:e="{ENS}">Unsupported: {escape(operation)}</e:Message></detail>'
            "</s:Fault>"
        )

    @staticmethod
    def _folder_ref(state: EwsState, node: Any, address: str) -> Folder | None:
        """Resolve a FolderId or DistinguishedFolderId element."""
        if node.tag == _q("FolderId"):
            return state.folders.get(node.get("Id", ""))
        owner = node.find(f"{_q('Mailbox')}/{_q('EmailAddress')}")
        mailbox = (owner.text or "").lower() if owner is not None else address
        state.mailbox(mailbox)
        return state.distinguished(mailbox, node.get("Id", ""))

    # -- operations --------------------------------------------------------------------

    def _op_GetFolder(self, state: EwsState, request: Any, address: str) -> str:
        messages = []
        for node in request.find(_q("FolderIds", MNS)):
            folder = self._folder_ref(state, node, address)
            if folder is None:
                messages.append(_error("GetFolder", "ErrorFolderNotFound", "<m:Folders/>"))
            else:
                messages.append(
                    _ok("GetFolder", f"<m:Folders>{_folder_xml(state, folder)}</m:Folders>")
                )
        return _response("GetFolder", messages)

    def _op_FindFolder(self, state: EwsState, request: Any, address: str) -> str:
        wanted = None
        restriction = request.find(_q("Restriction", MNS))
        if restriction is not None:
            constant = restriction.find(f".//{_q('Constant')}")
            wanted = constant.get("Value", "").lower() if constant is not None else None
        messages = []
        for node in request.find(_q("ParentFolderIds", MNS)):
            parent = self._folder_ref(state, node, address)
            if parent is None:
                messages.append(_error("FindFolder", "ErrorFolderNotFound"))
                continue
            found = [
                f
                for f in state.folders.values()
                if f.parent == parent.id and (wanted is None or f.name.lower() == wanted)
            ]
            folders = "".join(_folder_xml(state, f) for f in found)
            messages.append(
                _ok(
                    "FindFolder",
                    f'<m:RootFolder IndexedPagingOffset="{len(found)}" '
                    f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="true">'
                    f"<t:Folders>{folders}</t:Folders></m:RootFolder>",
                )
            )
        return _response("FindFolder", messages)

    def _op_CreateFolder(self, state: EwsState, request: Any, address: str) -> str:
        parent = self._folder_ref(state, request.find(_q("ParentFolderId", MNS))[0], address)
        messages = []
        for node in request.find(_q("Folders", MNS)):
            name = node.findtext(_q("DisplayName")) or ""
            if parent is None:
                messages.append(_error("CreateFolder", "ErrorFolderNotFound", "<m:Folders/>"))
            elif any(
                f.parent == parent.id and f.name.lower() == name.lower()
                for f in state.folders.values()
            ):
                messages.append(_error("CreateFolder", "ErrorFolderExists", "<m:Folders/>"))
            else:
                folder = Folder(state._new_id("folder"), parent.mailbox, name, parent.id)
                state.folders[folder.id] = folder
                key = quoteattr(folder.changekey)
                ids = f"<t:FolderId Id={quoteattr(folder.id)} ChangeKey={key}/>"
                messages.append(
                    _ok("CreateFolder", f"<m:Folders><t:Folder>{ids}</t:Folder></m:Folders>")
                )
        return _response("CreateFolder", messages)

    def _op_FindItem(self, state: EwsState, request: Any, address: str) -> str:
        wanted_id = self._message_id_restriction(request)
        view = request.find(_q("IndexedPageItemView", MNS))
        limit = int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
        offset = int(view.get("Offset", "0")) if view is not None else 0
        descending = request.find(f"{_q('SortOrder', MNS)}/{_q('FieldOrder')}[@Order='Descending']")
        fields = {
            node.get("FieldURI")
            for node in request.iterfind(f"{_q('ItemShape', MNS)}/{_q('AdditionalProperties')}/*")
        }
        messages = []
        for node in request.find(_q("ParentFolderIds", MNS)):
            folder = self._folder_ref(state, node, address)
            if folder is None:
                messages.append(_error("FindItem", "ErrorFolderNotFound"))
                continue
            items = sorted(
                (
                    i
                    for i in state.items.values()
                    if i.folder == folder.id and wanted_id in (None, i.internet_message_id)
                ),
                key=lambda i: i.received,
                reverse=descending is not None,
            )
            page = items[offset : offset + limit]
            rows = []
            for item in page:
                extra = ""
                if "item:DateTimeReceived" in fields:
                    extra += f"<t:DateTimeReceived>{_stamp(item.received)}</t:DateTimeReceived>"
                if "item:Size" in fields:
                    extra += f"<t:Size>{item.size}</t:Size>"
                rows.append(f"<t:Message>{_item_id_xml(item)}{extra}</t:Message>")
            end = offset + len(page)
            messages.append(
                _ok(
                    "FindItem",
                    f'<m:RootFolder IndexedPagingOffset="{end}" TotalItemsInView="{len(items)}" '
                    f'IncludesLastItemInRange="{"true" if end >= len(items) else "false"}">'
                    f"<t:Items>{''.join(rows)}</t:Items></m:RootFolder>",
                )
            )
        return _response("FindItem", messages)

    @staticmethod
    def _message_id_restriction(request: Any) -> str | None:
        """The Message-ID of an ``IsEqualTo message:InternetMessageId`` restriction."""
        equal = request.find(f"{_q('Restriction', MNS)}/{_q('IsEqualTo')}")
        if equal is None:
            return None
        uri = equal.find(_q("FieldURI"))
        constant = equal.find(f"{_q('FieldURIOrConstant')}/{_q('Constant')}")
        if uri is None or uri.get("FieldURI") != "message:InternetMessageId" or constant is None:
            raise ValueError("this test server filters FindItem by InternetMessageId only")
        return str(constant.get("Value", ""))

    def _op_GetItem(self, state: EwsState, request: Any, address: str) -> str:
        fields = {
            node.get("FieldURI")
            for node in request.iterfind(f"{_q('ItemShape', MNS)}/{_q('AdditionalProperties')}/*")
        }
        messages = []
        for node in request.find(_q("ItemIds", MNS)):
            item = state.items.get(node.get("Id", ""))
            if item is None:
                messages.append(_error("GetItem", "ErrorItemNotFound", "<m:Items/>"))
                continue
            mime = ""
            if "item:MimeContent" in fields:
                encoded = base64.b64encode(item.mime).decode()
                mime = f'<t:MimeContent CharacterSet="UTF-8">{encoded}</t:MimeContent>'
            size = f"<t:Size>{item.size}</t:Size>" if "item:Size" in fields else ""
            messages.append(
                _ok(
                    "GetItem",
                    f"<m:Items><t:Message>{mime}{_item_id_xml(item)}{size}</t:Message></m:Items>",
                )
            )
        return _response("GetItem", messages)

    def _op_MoveItem(self, state: EwsState, request: Any, address: str) -> str:
        target = self._folder_ref(state, request.find(_q("ToFolderId", MNS))[0], address)
        messages = []
        for node in request.find(_q("ItemIds", MNS)):
            item = state.items.get(node.get("Id", ""))
            if target is None:
                messages.append(_error("MoveItem", "ErrorFolderNotFound", "<m:Items/>"))
            elif item is None:
                messages.append(_error("MoveItem", "ErrorItemNotFound", "<m:Items/>"))
            else:
                # A move gives the item a new id, as Exchange does (the old one stops working).
                del state.items[item.id]
                item.id = state._new_id("item")
                item.folder = target.id
                item.changekey += 1
                state.items[item.id] = item
                messages.append(
                    _ok(
                        "MoveItem",
                        f"<m:Items><t:Message>{_item_id_xml(item)}</t:Message></m:Items>",
                    )
                )
        return _response("MoveItem", messages)

    def _op_DeleteItem(self, state: EwsState, request: Any, address: str) -> str:
        how = request.get("DeleteType", "")
        messages = []
        for node in request.find(_q("ItemIds", MNS)):
            item = state.items.get(node.get("Id", ""))
            if item is None:
                messages.append(_error("DeleteItem", "ErrorItemNotFound"))
                continue
            owner = state.folders[item.folder].mailbox
            trash = state.distinguished(owner, "deleteditems")
            dumpster = state.distinguished(owner, "recoverableitemsdeletions")
            if how == "MoveToDeletedItems" and trash is not None:
                item.folder = trash.id
            elif how == "SoftDelete" and dumpster is not None:
                item.folder = dumpster.id  # out of sight, recoverable
            else:  # HardDelete: gone for good
                del state.items[item.id]
                state.purged.append(item)
            messages.append(_ok("DeleteItem"))
        return _response("DeleteItem", messages)

    def _op_CreateItem(self, state: EwsState, request: Any, address: str) -> str:
        disposition = request.get("MessageDisposition", "SaveOnly")
        messages = []
        for node in request.find(_q("Items", MNS)):
            mime_node = node.find(_q("MimeContent"))
            mime = base64.b64decode(mime_node.text or "") if mime_node is not None else b""

            def addresses(tag: str, node: Any = node) -> list[str]:
                return [
                    (e.text or "").lower()
                    for e in node.iterfind(f"{_q(tag)}/{_q('Mailbox')}/{_q('EmailAddress')}")
                ]

            state.sent.append(
                Sent(
                    address,
                    disposition,
                    mime,
                    addresses("ToRecipients"),
                    addresses("BccRecipients"),
                )
            )
            if disposition == "SendAndSaveCopy":
                state.mailbox(address)
                sent = state.distinguished(address, "sentitems")
                assert sent is not None
                copy = Item(state._new_id("item"), sent.id, mime, dt.datetime.now(dt.UTC))
                state.items[copy.id] = copy
            messages.append(_ok("CreateItem", "<m:Items/>"))
        return _response("CreateItem", messages)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: EwsState


@dataclass
class EwsServer:
    """A running server: its endpoint URL and the store it serves (replaceable)."""

    url: str
    _server: _Server = field(repr=False)

    @property
    def state(self) -> EwsState:
        """The store being served."""
        return self._server.state

    @state.setter
    def state(self, value: EwsState) -> None:
        self._server.state = value


@contextlib.contextmanager
def running_ews_server(state: EwsState | None = None) -> Iterator[EwsServer]:
    """Serve a store on 127.0.0.1 (port 0) in a thread.

    The server counts as started only after a real round trip: an unauthenticated
    SOAP POST answered with the 401 and ``WWW-Authenticate`` a client negotiates from.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state or EwsState()
    thread = threading.Thread(target=server.serve_forever, name="ews-test-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        probe = http.client.HTTPConnection(str(host), port, timeout=5)
        probe.request("POST", PATH, body=b"<probe/>", headers={"Content-Type": "text/xml"})
        answer = probe.getresponse()
        answer.read()
        probe.close()
        if answer.status != 401 or not answer.getheader("WWW-Authenticate"):
            raise RuntimeError(f"the EWS test server answered {answer.status} to its probe")
        yield EwsServer(f"http://{host!s}:{port}{PATH}", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
