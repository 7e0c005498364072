"""Microsoft 365 mailboxes through Microsoft Graph (the ``office365`` extra: msal + httpx).

:class:`GraphConnector` reads one folder of a user or shared mailbox
(``/users/{user_id}/mailFolders/{folder}/messages``) and :class:`GraphTransport` sends
mail as a mailbox (``/users/{user_id}/sendMail``). Both speak Graph's REST API with
httpx and a bearer token from a token provider (:mod:`halomail.backends.auth.oauth`;
msal's client-credentials grant for application permissions, or a delegated refresh
token); no Graph SDK is involved.

**Reading.** Every request carries ``Prefer: IdType="ImmutableId"``, so a message keeps
its id when it moves between folders: the ref handed out by :meth:`GraphConnector.fetch`
is that id. The folder is read with a delta query
(``/mailFolders/{folder}/messages/delta``), page by page through ``@odata.nextLink``;
the ``@odata.deltaLink`` that ends a complete round is kept, with the set of messages
the rounds say are in the folder and not yet disposed of; each run asks only for what
changed since and yields the whole set, so a message left for retry is read again. Link
and set are a :class:`~halomail.backends.base.SyncState` the runner keeps in the ledger
for any process to continue. Correctness never rests on it: without it, a full round,
and dedupe keys make a second read a no-op. ``delta=False`` lists the folder each run.

Each message's raw MIME comes from ``/messages/{id}/$value``. Its size comes from the
listing (the extended property ``PidTagMessageSize``, ``Integer 0x0E08``): a message
over the limit is yielded as ``too_large`` without being downloaded. Without that
property (``size_property=False``), the download stops as soon as it passes the limit.

**Disposal.** ``POST /messages/{id}/move`` with ``destinationId`` ``deleteditems`` (or
another well-known folder) or the id of a named folder, looked up by ``displayName``
under ``msgfolderroot`` and created when missing; or ``DELETE /messages/{id}``.
Quarantine moves to its folder the same way. A 404 for the message (another client
moved or deleted it, or an earlier ack already did) counts as handled.

**Failures.** 429 and 503 are waited out as ``Retry-After`` says (:class:`GraphRetry`);
past its patience the run for that mailbox ends with
:class:`~halomail.errors.TransientConnectorError`, nothing disposed of and so nothing
lost. A 401 makes the connector drop the token and try once more with a fresh one; a
second 401 is an :class:`~halomail.errors.AuthenticationError` telling the
administrator what to check. Tokens never appear in logs: only URLs are logged, by
httpx, and Graph's URLs carry no secret.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import under_key_path
from halomail.backends._common import chosen_token_provider, with_bcc
from halomail.backends._graph_http import (
    DEFAULT_BASE_URL,
    GraphApiError,
    GraphClient,
    GraphRetry,
)
from halomail.backends._sync_state import StateFormat
from halomail.backends.auth.oauth import MICROSOFT_GRAPH_SCOPES, TokenProvider
from halomail.backends.auth.sasl import probe_token
from halomail.backends.base import Disposition, FetchedMessage, OutgoingEmail, ProbeReport
from halomail.backends.cloud_settings import GraphMailboxSettings, GraphTransportSettings
from halomail.backends.settings import SettingsTable, as_typed
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
    TransportConfigError,
)

__all__ = ["DEFAULT_BASE_URL", "GraphApiError", "GraphConnector", "GraphRetry", "GraphTransport"]

log = logging.getLogger(__name__)

# Folder names that mean one of Graph's well-known folders; the well-known name works
# wherever a folder id does, whatever the mailbox's language calls the folder.
_WELL_KNOWN = {
    "inbox": "inbox",
    "deleted items": "deleteditems",
    "deleteditems": "deleteditems",
    "junk email": "junkemail",
    "junkemail": "junkemail",
    "archive": "archive",
    "sent items": "sentitems",
    "sentitems": "sentitems",
    "drafts": "drafts",
}
# PidTagMessageSize: the message's size in bytes, as Exchange stores it.
_SIZE_PROPERTY = "Integer 0x0E08"
_EXPAND_SIZE = f"singleValueExtendedProperties($filter=id eq '{_SIZE_PROPERTY}')"


@attrs.frozen
class _Entry:
    """One message of a listing: its id, when it arrived, its size if known."""

    ref: str
    received: str
    size: int | None


class GraphConnector:
    """A folder of a Microsoft 365 mailbox, read through Microsoft Graph.

    See the module documentation for how reading and disposal work. Nothing is sent
    to Graph before the first :meth:`fetch` or :meth:`ack`.

    Args:
        name: The mailbox's name.
        user_id: The mailbox: a user's or shared mailbox's address, or its object id.
        token_provider: Hands out Graph access tokens (``token()``, ``invalidate()``).
        folder: The folder read: ``Inbox`` (the default) or another well-known folder,
            or a path of folders under the top of the mailbox, e.g. ``Support/New``.
        processed: ``"move:<folder>"`` (``move:Deleted Items`` is the well-known
            ``deleteditems``) or ``"delete"``.
        quarantine_folder: Where quarantined messages move (created when missing).
        max_message_bytes: Larger messages are yielded as ``too_large`` with an empty
            ``raw``.
        delta: Read with delta queries (the default); False lists the folder each run.
        size_property: Ask for each message's size in the listing, so one over the
            limit is never downloaded.
        page_size: Messages per listing page.
        base_url: Graph's root (national clouds, tests).
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust besides the system's.
        retry: How throttling is honoured.

    Raises:
        ConfigError: An argument is invalid (its key path says which).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        *,
        user_id: str,
        token_provider: TokenProvider,
        folder: str = "Inbox",
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
        delta: bool = True,
        size_property: bool = True,
        page_size: int = 100,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: GraphRetry | None = None,
    ) -> None:
        if not user_id:
            raise ConfigError("user_id", "the mailbox (an address or object id) is required")
        self.name = name
        self.user_id = user_id
        self.folder = folder
        _folder_path(folder, "folder")
        self._action, self._processed_folder = _parse_processed(processed)
        _folder_path(quarantine_folder, "quarantine_folder")
        self.quarantine_folder = quarantine_folder
        if page_size < 1:
            raise ConfigError("batch_size", "the page size must be at least 1")
        self.max_message_bytes = max_message_bytes
        self.delta = delta
        self.size_property = size_property
        self.page_size = page_size
        self._client = GraphClient(
            name,
            base_url=base_url,
            token_provider=token_provider,
            timeout=timeout,
            ca_file=Path(ca_file) if ca_file is not None else None,
            retry=retry,
        )
        self._folders: dict[str, str] = {}  # folder path (case-folded) → folder id
        self._delta_link: str | None = None
        # The messages the last complete delta round left in the folder, not yet disposed
        # of: each run yields all of them, so nothing listed once is ever skipped.
        self._pending: dict[str, _Entry] = {}
        self._sync = StateFormat("graph-delta", name, user=user_id, folder=folder)

    @classmethod
    def from_settings(
        cls,
        settings: GraphMailboxSettings | SettingsTable,
        *,
        max_message_bytes: int | None,
        token_provider: TokenProvider | None = None,
    ) -> GraphConnector:
        """The connector for an ``[[mailboxes]]`` entry with ``connection = "office365"``.

        Without ``token_provider``, one is built from ``settings.oauth``: ``tenant_id``,
        ``client_id`` and ``client_secret`` (client credentials, scope
        ``https://graph.microsoft.com/.default``), or a fixed ``token``/``token_env``.
        ``host`` replaces Graph's root URL (a national cloud: ``graph.microsoft.us``, or
        a full URL).

        Args:
            settings: The typed settings, or anything with ``as_table()`` (a
                :class:`halomail.MailboxSettings`), read through
                :meth:`GraphMailboxSettings.from_table`.
            max_message_bytes: Larger messages are fetched as ``too_large``.
            token_provider: The OAuth2 token provider built for this mailbox.

        Returns:
            The connector (nothing is sent to Graph yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(GraphMailboxSettings, settings, getattr(settings, "key_path", "mailboxes"))
        kp = typed.key_path
        with under_key_path(kp):
            base_url = _base_url(typed.host)
            if token_provider is None:
                token_provider = _provider(typed.oauth, kp, typed.name, typed.tls_ca_file)
            return cls(
                typed.name,
                user_id=typed.user_id,
                token_provider=token_provider,
                folder=typed.folder,
                processed=typed.processed,
                quarantine_folder=typed.quarantine_folder,
                max_message_bytes=max_message_bytes,
                page_size=typed.batch_size,
                base_url=base_url,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
            )

    def __repr__(self) -> str:
        return f"GraphConnector({self.name!r}, {self.user_id!r}, {self.folder!r})"

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the folder's messages, oldest first, changing nothing.

        The folder is listed whole first (ids, dates and sizes only), so messages
        disposed of while this iterator runs do not shift the pages of the listing.

        Raises:
            AuthenticationError: The token was refused, or none could be had.
            TransientConnectorError: Graph is throttling, failing or unreachable.
            ConnectorError: The mailbox or folder does not exist, or access was denied.
        """
        entries = self._list_delta() if self.delta else self._list_all()
        log.debug("mailbox %s: %d messages in %s", self.name, len(entries), self.folder)
        for entry in entries:
            if self.delta and entry.ref not in self._pending:
                continue  # disposed of while this iteration ran
            message = self._read(entry)
            if message is not None:
                yield message

    def list_refs(self) -> list[str]:
        """The refs of the folder's messages, without reading them (``start_from = "now"``).

        Raises:
            ConnectorError: As :meth:`fetch`.
        """
        return [entry.ref for entry in self._list_all()]

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Move or delete the message per ``disposition``; a no-op when it is gone.

        Raises:
            AuthenticationError: The token was refused.
            TransientConnectorError: Graph is throttling, failing or unreachable.
            ConnectorError: The message exists but could not be moved or deleted.
        """
        if disposition is Disposition.RETRY:
            return
        if disposition is Disposition.PROCESSED and self._action == "delete":
            try:
                self._client.call("DELETE", self._message_url(ref), what=f"delete {ref}")
                log.debug("mailbox %s: deleted %s", self.name, ref)
            except GraphApiError as exc:
                if exc.status != 404:
                    raise
                log.debug("mailbox %s: %s already gone; nothing to do", self.name, ref)
        else:
            quarantine = disposition is Disposition.QUARANTINED
            self._move(ref, self.quarantine_folder if quarantine else self._processed_folder)
        self._pending.pop(ref, None)

    def close(self) -> None:
        """Close the HTTP connections; the delta state and folder ids are kept."""
        self._client.close()

    def export_sync_state(self) -> str | None:
        """The delta link and the messages it left pending (:class:`.base.SyncState`)."""
        if self._delta_link is None:  # no complete round yet, or delta=False
            return None
        pending = [attrs.astuple(entry) for entry in self._pending.values()]
        return self._sync.dump(link=self._delta_link, pending=pending)

    def restore_sync_state(self, text: str | None) -> None:
        """Continue from an exported state; ``None`` or an unusable one: a full round."""
        self._delta_link, self._pending = self._sync.load(text, _state) or (None, {})

    # -- listing ---------------------------------------------------------------------

    def _list_all(self) -> list[_Entry]:
        params = {
            "$select": "id,receivedDateTime",
            "$orderby": "receivedDateTime asc",
            "$top": str(self.page_size),
        }
        if self.size_property:
            params["$expand"] = _EXPAND_SIZE
        url = self._user_url("mailFolders", self._source_folder(), "messages")
        entries: list[_Entry] = []
        for page, _ in self._pages(url, params, what=f"list {self.folder}"):
            entries.extend(e for e in map(self._entry, page) if e is not None)
        return _oldest_first(entries)

    def _list_delta(self) -> list[_Entry]:
        link = self._delta_link
        try:
            changes, new_link = self._delta_round(link)
        except GraphApiError as exc:
            if link is None or exc.status not in (400, 404, 410):
                raise
            # An expired or unknown sync state (410 SyncStateNotFound): start a full
            # round; dedupe keeps the messages handled already from doubling.
            log.info(
                "mailbox %s: the delta link was refused (%s); reading the folder in full",
                self.name,
                exc.code,
            )
            self._delta_link, self._pending = None, {}
            link = None
            changes, new_link = self._delta_round(None)
        # Only a complete round is taken over: a failure above left the previous link
        # and set untouched, so the next run asks for the same changes again.
        pending = {} if link is None else dict(self._pending)
        for ref, entry in changes.items():
            if entry is None:
                pending.pop(ref, None)
            else:
                pending[ref] = entry
        self._pending, self._delta_link = pending, new_link
        return _oldest_first(list(pending.values()))

    def _delta_round(self, link: str | None) -> tuple[dict[str, _Entry | None], str]:
        """The changes since ``link`` (all messages without one) and the next link."""
        if link is None:
            url = self._user_url("mailFolders", self._source_folder(), "messages", "delta")
            params: dict[str, str] | None = {"$select": "receivedDateTime"}
            if self.size_property:
                params = {"$select": "receivedDateTime", "$expand": _EXPAND_SIZE}
        else:
            # The link carries the query of the round that made it.
            url, params = link, None
        changes: dict[str, _Entry | None] = {}
        new_link = ""
        for page, delta_link in self._pages(url, params, what=f"delta {self.folder}"):
            new_link = delta_link or new_link
            for item in page:
                ref = item.get("id")
                if not isinstance(ref, str) or not ref:
                    continue
                changes[ref] = None if "@removed" in item else self._entry(item)
        if not new_link:
            raise ConnectorError(
                "delta: Microsoft Graph ended the round without an @odata.deltaLink",
                mailbox=self.name,
            )
        return changes, new_link

    def _pages(
        self, url: str, params: Mapping[str, str] | None, *, what: str
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Each page's ``value``, following ``@odata.nextLink``, with the
        ``@odata.deltaLink`` that ends a delta round (``None`` on the other pages)."""
        headers = {"Prefer": f'IdType="ImmutableId", odata.maxpagesize={self.page_size}'}
        next_url: str | None = url
        pages = 0
        while next_url:
            pages += 1
            data = self._client.get_json(
                next_url,
                what=f"{what} (page {pages})",
                params=params,
                headers=headers,
            )
            value = data.get("value")
            if not isinstance(value, list):
                raise ConnectorError(
                    f"{what}: Microsoft Graph sent a page without a value list", mailbox=self.name
                )
            link = data.get("@odata.nextLink")
            next_url, params = (link if isinstance(link, str) and link else None), None
            delta_link = data.get("@odata.deltaLink")
            last = delta_link if next_url is None and isinstance(delta_link, str) else None
            yield [item for item in value if isinstance(item, dict)], last

    def _entry(self, item: Mapping[str, Any]) -> _Entry | None:
        ref = item.get("id")
        if not isinstance(ref, str) or not ref:
            return None
        received = item.get("receivedDateTime")
        return _Entry(ref, received if isinstance(received, str) else "", _size_of(item))

    # -- reading ---------------------------------------------------------------------

    def _read(self, entry: _Entry) -> FetchedMessage | None:
        limit = self.max_message_bytes
        if limit is not None and entry.size is not None and entry.size > limit:
            log.info(
                "mailbox %s: %s is %d bytes, over the limit; not downloaded",
                self.name,
                entry.ref,
                entry.size,
            )
            return FetchedMessage(ref=entry.ref, raw=b"", size=entry.size, too_large=True)
        what = f"read {entry.ref}"
        try:
            response = self._client.request(
                "GET", self._message_url(entry.ref, "$value"), what=what
            )
        except GraphApiError as exc:
            if exc.status != 404:
                raise
            log.info("mailbox %s: %s is gone; another client took it", self.name, entry.ref)
            self._pending.pop(entry.ref, None)
            return None
        with contextlib.closing(response):
            declared = _int(response.headers.get("Content-Length"))
            if limit is not None and declared is not None and declared > limit:
                raw = None
            else:
                raw = self._client.read_capped(response, limit, what=what)
        if raw is None:
            size = max(declared or 0, (limit or 0) + 1, entry.size or 0)
            log.info("mailbox %s: %s is over the limit; not read whole", self.name, entry.ref)
            return FetchedMessage(ref=entry.ref, raw=b"", size=size, too_large=True)
        return FetchedMessage(ref=entry.ref, raw=raw, size=len(raw))

    # -- disposal --------------------------------------------------------------------

    def _move(self, ref: str, path: str) -> None:
        for attempt in (1, 2):
            destination = self._folder_id(path, create=True)
            try:
                self._client.call(
                    "POST",
                    self._message_url(ref, "move"),
                    what=f"move {ref}",
                    json_body={"destinationId": destination},
                )
                log.debug("mailbox %s: moved %s to %s", self.name, ref, path)
                return
            except GraphApiError as exc:
                if exc.status != 404:
                    raise
                error = exc
            # A 404 means the message is gone (handled) or our destination is.
            if not self._exists(ref):
                log.debug("mailbox %s: %s already gone; nothing to do", self.name, ref)
                return
            if attempt == 1 and path.casefold() not in _WELL_KNOWN:
                log.info("mailbox %s: folder %r vanished; looking it up again", self.name, path)
                self._folders.pop(path.casefold(), None)
                continue
            raise ConnectorError(
                f"cannot move {ref} to {path}: {error}", mailbox=self.name
            ) from error

    def _exists(self, ref: str) -> bool:
        try:
            self._client.get_json(
                self._message_url(ref), what=f"look up {ref}", params={"$select": "id"}
            )
        except GraphApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def probe(self) -> ProbeReport:
        """Get a token and read the folder's message count; no email is read or moved.

        Raises:
            AuthenticationError: The token was refused.
            ConnectorError: The folder does not exist, or Graph refused the request.
        """
        url = self._user_url("mailFolders", self._source_folder())
        params = {"$select": "displayName,totalItemCount"}
        folder = self._client.get_json(url, what="probe the folder", params=params)
        count = folder.get("totalItemCount")
        messages = count if isinstance(count, int) else None
        return ProbeReport(f"{messages} messages in {self.folder}", messages=messages)

    # -- folders ---------------------------------------------------------------------

    def _source_folder(self) -> str:
        return self._folder_id(self.folder, create=False)

    def _folder_id(self, path: str, *, create: bool) -> str:
        key = path.casefold()
        if key in _WELL_KNOWN:
            return _WELL_KNOWN[key]
        known = self._folders.get(key)
        if known is not None:
            return known
        parent = "msgfolderroot"
        for name in _folder_path(path, "folder"):
            parent = self._child_folder(parent, name, path, create=create)
        self._folders[key] = parent
        return parent

    def _child_folder(self, parent: str, name: str, path: str, *, create: bool) -> str:
        url = self._user_url("mailFolders", parent, "childFolders")
        found = self._find_child(url, name)
        if found is not None:
            return found
        if not create:
            raise ConnectorError(
                f"the folder {path!r} does not exist in {self.user_id}", mailbox=self.name
            )
        try:
            created = self._client.send_json(
                "POST", url, what=f"create folder {name!r}", json_body={"displayName": name}
            )
        except GraphApiError as exc:
            if exc.status != 409:
                raise
            # ErrorFolderExists: another client created it since we looked.
            found = self._find_child(url, name)
            if found is None:
                raise
            return found
        folder_id = created.get("id")
        if not isinstance(folder_id, str) or not folder_id:
            raise ConnectorError(
                f"create folder {name!r}: Microsoft Graph sent no folder id", mailbox=self.name
            )
        log.info("mailbox %s: created the folder %r", self.name, path)
        return folder_id

    def _find_child(self, url: str, name: str) -> str | None:
        literal = name.replace("'", "''")  # OData string literals double their quotes
        params = {"$filter": f"displayName eq '{literal}'", "$select": "id,displayName"}
        for page, _ in self._pages(url, params, what=f"find folder {name!r}"):
            for folder in page:
                if str(folder.get("displayName", "")).casefold() == name.casefold():
                    folder_id = folder.get("id")
                    if isinstance(folder_id, str) and folder_id:
                        return folder_id
        return None

    # -- URLs ------------------------------------------------------------------------

    def _user_url(self, *segments: str) -> str:
        return self._client.url("users", self.user_id, *segments)

    def _message_url(self, ref: str, action: str | None = None) -> str:
        url = self._user_url("messages", ref)
        # "$value" and "move" are fixed path segments of Graph's, not data to quote.
        return f"{url}/{action}" if action else url


class GraphTransport:
    """Sends mail as a Microsoft 365 mailbox with Graph's ``sendMail`` in MIME form.

    The composed message is posted base64-encoded as ``text/plain`` (Graph's MIME send),
    so every header we wrote, Message-ID, ``Auto-Submitted`` and the loop header among
    them, is kept. Envelope recipients the To and Cc headers do not name are added as a
    Bcc header, which Exchange removes from the copies it delivers.

    429 and 503 are waited out as for the connector, then raised as
    :class:`~halomail.errors.TransientTransportError`, like every 5xx, a timeout and an
    unreachable server. A token refused after a renewal and a 403 (no Mail.Send) are a
    :class:`~halomail.errors.TransportConfigError`: the outbox stops sending through it,
    and the mail goes once an administrator has fixed the app. Any other 4xx (bad recipient,
    no right to send as the From address, over Graph's 4 MB request limit) is a
    :class:`~halomail.errors.PermanentTransportError`.

    Args:
        user_id: The mailbox mail is sent as (address or object id).
        token_provider: Hands out Graph access tokens.
        base_url: Graph's root.
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust besides the system's.
        retry: How throttling is honoured.
        name: A label for logs and errors.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        user_id: str,
        token_provider: TokenProvider,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: GraphRetry | None = None,
        name: str = "graph-outgoing",
    ) -> None:
        if not user_id:
            raise ConfigError(
                "user_id", "the sending mailbox (an address or object id) is required"
            )
        self.name = name
        self.user_id = user_id
        self._client = GraphClient(
            name,
            base_url=base_url,
            token_provider=token_provider,
            timeout=timeout,
            ca_file=Path(ca_file) if ca_file is not None else None,
            retry=retry,
        )

    @classmethod
    def from_settings(
        cls,
        outgoing: GraphTransportSettings | SettingsTable,
        token_provider: TokenProvider | None = None,
    ) -> GraphTransport:
        """The transport for ``[outgoing]`` (or a mailbox's) with ``transport = "graph"``.

        The token provider and ``host`` are read as for
        :meth:`GraphConnector.from_settings`.

        Args:
            outgoing: The typed settings, or anything with ``as_table()`` (an
                :class:`halomail.OutgoingSettings`), read through
                :meth:`GraphTransportSettings.from_table`.
            token_provider: The OAuth2 token provider built for them.

        Returns:
            The transport (nothing is sent to Graph yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(GraphTransportSettings, outgoing, "outgoing")
        with under_key_path(typed.key_path):
            if token_provider is None:
                token_provider = _provider(
                    typed.oauth, typed.key_path, "outgoing", typed.tls_ca_file
                )
            return cls(
                user_id=typed.user_id,
                token_provider=token_provider,
                base_url=_base_url(typed.host),
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
            )

    def __repr__(self) -> str:
        return f"GraphTransport({self.user_id!r})"

    def probe(self) -> ProbeReport:
        """Get an access token for the sending account; nothing is sent.

        Raises:
            AuthenticationError: The credentials were refused.
        """
        return ProbeReport(probe_token(self._client.token_provider))

    def send(self, email: OutgoingEmail) -> None:
        """Send one composed email.

        Raises:
            TransientTransportError: Throttled, failing or unreachable.
            TransportConfigError: The token was refused, or access denied (403).
            PermanentTransportError: Graph refused this message for good.
        """
        data = with_bcc(email.data, email.recipients)
        url = self._client.url("users", self.user_id, "sendMail")
        try:
            self._client.call(
                "POST",
                url,
                what="send",
                content=base64.b64encode(data),
                headers={"Content-Type": "text/plain"},
            )
        except GraphApiError as exc:
            error = TransportConfigError if exc.status == 403 else PermanentTransportError
            raise error(str(exc)) from exc
        except AuthenticationError as exc:  # a 401 after a fresh token: stop sending
            raise TransportConfigError(str(exc)) from exc
        except TransientConnectorError as exc:
            raise TransientTransportError(str(exc)) from exc
        except ConnectorError as exc:  # an odd answer: worth another try later
            raise TransientTransportError(str(exc)) from exc
        log.debug("%s: sent %s as %s", self.name, email.message_id, self.user_id)

    def close(self) -> None:
        """Close the HTTP connections (they reopen on the next send)."""
        self._client.close()


# -- helpers -------------------------------------------------------------------------


def _parse_processed(value: str) -> tuple[str, str]:
    if value == "delete":
        return "delete", ""
    action, sep, folder = value.partition(":")
    if action == "move" and sep and folder.strip():
        _folder_path(folder, "processed")
        return "move", folder
    raise ConfigError("processed", f"expected 'move:<folder>' or 'delete', got {value!r}")


def _folder_path(path: str, key: str) -> list[str]:
    names = [name.strip() for name in path.split("/")]
    if not path.strip() or not all(names):
        raise ConfigError(key, f"{path!r} is not a folder name or a path like 'Support/Done'")
    return names


def _state(data: Mapping[str, Any]) -> tuple[str, dict[str, _Entry]]:
    """The delta link and pending messages of an exported state."""
    link, rows = data["link"], data["pending"]
    if not isinstance(link, str) or not isinstance(rows, list):
        raise TypeError("link or pending")
    entries = (_Entry(str(r), str(w), None if n is None else int(n)) for r, w, n in rows)
    return link, {entry.ref: entry for entry in entries}


def _oldest_first(entries: list[_Entry]) -> list[_Entry]:
    return sorted(entries, key=lambda e: (_when(e.received), e.ref))


def _when(value: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _size_of(item: Mapping[str, Any]) -> int | None:
    """PidTagMessageSize from ``singleValueExtendedProperties``, when present."""
    for prop in item.get("singleValueExtendedProperties") or ():
        if not isinstance(prop, Mapping):
            continue
        kind, _, tag = str(prop.get("id", "")).partition(" ")
        # Graph writes the tag back normalised ("Integer 0xe08"): compare numerically.
        if kind.casefold() == "integer" and _int(tag, 16) == 0x0E08:
            return _int(str(prop.get("value", "")))
    return None


def _int(value: str | None, base: int = 10) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip(), base)
    except ValueError:
        return None
    return number if number >= 0 else None


def _base_url(host: str | None) -> str:
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        return host
    return f"https://{host}/v1.0"


def _provider(
    extra: Mapping[str, Any], key_path: str, name: str, ca_file: Path | None
) -> TokenProvider:
    """The token provider the settings describe: a fixed token, or msal's client grant."""
    values = dict(extra)
    if values.get("token"):
        values["auth"] = "oauth2-static"
    elif values.get("tenant_id"):
        values["auth"] = "oauth2-microsoft"
        # Graph needs a Graph token: Outlook's IMAP/SMTP scope is no use here.
        values["scopes"] = values.get("scopes") or list(MICROSOFT_GRAPH_SCOPES)
    else:
        raise ConfigError(
            "tenant_id",
            "Microsoft Graph needs tenant_id, client_id and client_secret (or client_secret_env)"
            ", or an access token through token_env",
        )
    return chosen_token_provider(values, key_path, name, ca_file)
