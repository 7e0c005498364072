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
changed since and yields the whole set, so a message left for retry is read again. An
"updated" entry carries only what changed, so it is merged into what is known; an entry
whose ``parentFolderId`` is another folder counts as a removal; and since Graph may send
an entry again, one for a message disposed of lately is read only if the message is in
the folder again. Link, set and the refs disposed of lately are a
:class:`~halomail.backends.base.SyncState` the runner keeps in the ledger for any process
to continue. Correctness never rests on it: without it, a full round, and dedupe keys
make a second read a no-op. ``delta=False`` lists the folder each run (for national
clouds without delta).

Each message's raw MIME comes from ``/messages/{id}/$value``. Its size comes from the
listing (the extended property ``PidTagMessageSize``, ``Integer 0x0E08``): a message
over the limit is yielded as ``too_large`` without being downloaded. Without that
property (``size_property=False``, or after Graph failed the listing that expands it
with a 5xx), the download stops as soon as it passes the limit.

**Disposal.** ``POST /messages/{id}/move`` with ``destinationId`` ``deleteditems`` (or
another well-known folder) or the id of a named folder, looked up by ``displayName``
segment by segment and created when missing; the first segment of a path may be a
well-known folder (``Inbox/Done``: Done under the inbox, "Posteingang" in a German
mailbox), else it is under ``msgfolderroot``. Or ``DELETE /messages/{id}``.
Quarantine moves to its folder the same way. A 404 for the message (another client
moved or deleted it, or an earlier ack already did) counts as handled.

**Failures.** 429, 503 and 504 are waited out as ``Retry-After`` says
(:class:`GraphRetry`); past its patience the run for that mailbox ends with
:class:`~halomail.errors.TransientConnectorError`, whose ``retry_after`` is the wait
Graph asked for (the runner keeps it for the next run), nothing disposed of and so
nothing lost. A 401 makes the connector drop the token and try once more with a fresh one; a
second 401 is an :class:`~halomail.errors.AuthenticationError` telling the
administrator what to check. Tokens never appear in logs: only URLs are logged, by
httpx, and Graph's URLs carry no secret.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from halomail._validate import under_key_path
from halomail.backends._graph_http import (
    DEFAULT_BASE_URL,
    GraphApiError,
    GraphClient,
    GraphRetry,
    graph_base_url,
    graph_token_provider,
    status_of,
)
from halomail.backends._graph_send import GRAPH_MESSAGE_LIMIT, GRAPH_REQUEST_LIMIT, GraphTransport
from halomail.backends._sync_state import StateFormat
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.base import Disposition, FetchedMessage, ProbeReport
from halomail.backends.cloud_settings import GraphMailboxSettings
from halomail.backends.settings import SettingsTable, as_typed
from halomail.errors import ConfigError, ConnectorError, TransientConnectorError

__all__ = [
    "DEFAULT_BASE_URL",
    "GRAPH_MESSAGE_LIMIT",
    "GRAPH_REQUEST_LIMIT",
    "GraphApiError",
    "GraphConnector",
    "GraphRetry",
    "GraphTransport",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

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
# Graph's delta may send an entry again (at least once, not exactly once): the refs
# disposed of lately are kept, so a stale entry for one is checked before it is read.
_DONE_KEPT = 1000
# A 5xx that is no overload: Graph's delta fails so with $expand on some tenants.
_SERVER_FAULTS = range(500, 600)
_OVERLOAD = (503, 504)
# PidTagMessageSize: the message's size in bytes, as Exchange stores it.
_SIZE_PROPERTY = "Integer 0x0E08"
_EXPAND_SIZE = f"singleValueExtendedProperties($filter=id eq '{_SIZE_PROPERTY}')"


@attrs.frozen
class _Entry:
    """One message of a listing: its id, when it arrived, its size if known."""

    ref: str
    received: str
    size: int | None

    def merged_onto(self, known: _Entry | None) -> _Entry:
        """This entry, its missing properties taken from ``known`` (an "updated" delta
        entry carries only the properties that changed)."""
        if known is None:
            return self
        return _Entry(
            self.ref,
            self.received or known.received,
            known.size if self.size is None else self.size,
        )


class GraphConnector:
    """A folder of a Microsoft 365 mailbox, read through Microsoft Graph.

    See the module documentation for how reading and disposal work. Nothing is sent
    to Graph before the first :meth:`fetch` or :meth:`ack`.

    Args:
        name: The mailbox's name.
        user_id: The mailbox: a user's or shared mailbox's address, or its object id.
        token_provider: Hands out Graph access tokens (``token()``, ``invalidate()``).
        folder: The folder read: ``Inbox`` (the default) or another well-known folder,
            or a path of folders, e.g. ``Support/New`` under the top of the mailbox or
            ``Inbox/Support`` under the inbox. A first segment naming a well-known folder
            (Inbox, Sent Items, Deleted Items, Junk Email, Archive, Drafts) means that
            folder whatever the mailbox's language calls it.
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
        # The refs disposed of lately, oldest first (a dict keeps the order).
        self._done: dict[str, None] = {}
        self._source_id: str | None = None  # the source folder's own id, once looked up
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
            base_url = graph_base_url(typed.host)
            if token_provider is None:
                token_provider = graph_token_provider(
                    typed.oauth, kp, typed.name, typed.tls_ca_file
                )
            return cls(
                typed.name,
                user_id=typed.user_id,
                token_provider=token_provider,
                folder=typed.folder,
                processed=typed.processed,
                quarantine_folder=typed.quarantine_folder,
                max_message_bytes=max_message_bytes,
                delta=typed.delta,
                size_property=typed.size_property,
                page_size=typed.batch_size,
                base_url=base_url,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
            )

    @property
    def token_provider(self) -> TokenProvider:
        """The provider of this mailbox's tokens (a transport sending as it may share it)."""
        return self._client.token_provider

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
        self._done[ref] = None
        while len(self._done) > _DONE_KEPT:
            del self._done[next(iter(self._done))]

    def close(self) -> None:
        """Close the HTTP connections; the delta state and folder ids are kept."""
        self._client.close()

    def export_sync_state(self) -> str | None:
        """The delta link and the messages it left pending (:class:`.base.SyncState`)."""
        if self._delta_link is None:  # no complete round yet, or delta=False
            return None
        pending = [attrs.astuple(entry) for entry in self._pending.values()]
        return self._sync.dump(link=self._delta_link, pending=pending, done=list(self._done))

    def restore_sync_state(self, text: str | None) -> None:
        """Continue from an exported state; ``None`` or an unusable one: a full round."""
        self._delta_link, self._pending, self._done = self._sync.load(text, _state) or (
            None,
            {},
            {},
        )

    # -- listing ---------------------------------------------------------------------

    def _list_all(self) -> list[_Entry]:
        return self._without_expand_on_failure(self._list_all_as)

    def _list_all_as(self, expand: bool) -> list[_Entry]:
        params = {
            "$select": "id,receivedDateTime",
            "$orderby": "receivedDateTime asc",
            "$top": str(self.page_size),
        }
        if expand:
            params["$expand"] = _EXPAND_SIZE
        url = self._user_url("mailFolders", self._source_folder(), "messages")
        entries: list[_Entry] = []
        for page, _ in self._pages(url, params, what=f"list {self.folder}"):
            entries.extend(e for e in map(self._entry, page) if e is not None)
        return _oldest_first(entries)

    def _without_expand_on_failure(self, listing: Callable[[bool], _T]) -> _T:
        """``listing`` with the size property expanded; after a 5xx, once more without.

        Graph fails some ``$expand`` queries (delta ones above all) with a 5xx every
        time: without sizes, a message over the limit is cut off as it downloads.
        """
        if not self.size_property:
            return listing(False)
        try:
            return listing(True)
        except TransientConnectorError as exc:
            status = status_of(exc)
            if status not in _SERVER_FAULTS or status in _OVERLOAD:
                raise
            log.warning(
                "mailbox %s: Microsoft Graph failed the listing with the size property (%d); "
                "listing without it",
                self.name,
                status,
            )
            return listing(False)

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
            elif ref in pending or ref not in self._done or self._still_here(ref):
                pending[ref] = entry.merged_onto(pending.get(ref))
            else:
                log.debug("mailbox %s: a stale delta entry for %s, disposed of", self.name, ref)
        self._pending, self._delta_link = pending, new_link
        return _oldest_first(list(pending.values()))

    def _delta_round(self, link: str | None) -> tuple[dict[str, _Entry | None], str]:
        """The changes since ``link`` (all messages without one) and the next link."""
        if link is None:
            return self._without_expand_on_failure(self._first_delta_round)
        # The link carries the query of the round that made it.
        return self._delta_pages(link, None)

    def _first_delta_round(self, expand: bool) -> tuple[dict[str, _Entry | None], str]:
        url = self._user_url("mailFolders", self._source_folder(), "messages", "delta")
        params = {"$select": "receivedDateTime,parentFolderId"}
        if expand:
            params["$expand"] = _EXPAND_SIZE
        return self._delta_pages(url, params)

    def _delta_pages(
        self, url: str, params: Mapping[str, str] | None
    ) -> tuple[dict[str, _Entry | None], str]:
        changes: dict[str, _Entry | None] = {}
        new_link = ""
        for page, delta_link in self._pages(url, params, what=f"delta {self.folder}"):
            new_link = delta_link or new_link
            for item in page:
                ref = item.get("id")
                if not isinstance(ref, str) or not ref:
                    continue
                if "@removed" in item or not self._in_source(item):
                    changes[ref] = None
                    continue
                entry = self._entry(item)
                if entry is not None:  # a replay within the round adds what it knows
                    changes[ref] = entry.merged_onto(changes.get(ref))
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

    def _in_source(self, item: Mapping[str, Any]) -> bool:
        """False for an entry whose ``parentFolderId`` names another folder: Graph may
        report a message moved away as an update rather than a removal."""
        parent = item.get("parentFolderId")
        return not isinstance(parent, str) or not parent or parent == self._source_folder_id()

    def _source_folder_id(self) -> str:
        """The source folder's own id (a well-known name is not what entries carry)."""
        if self._source_id is None:
            url = self._user_url("mailFolders", self._source_folder())
            folder = self._client.get_json(url, what="look up the folder", params={"$select": "id"})
            found = folder.get("id")
            if not isinstance(found, str) or not found:
                raise ConnectorError(
                    "Microsoft Graph sent a folder without an id", mailbox=self.name
                )
            self._source_id = found
        return self._source_id

    def _still_here(self, ref: str) -> bool:
        """Whether a message disposed of earlier is in the source folder again."""
        try:
            item = self._client.get_json(
                self._message_url(ref), what=f"look up {ref}", params={"$select": "parentFolderId"}
            )
        except GraphApiError as exc:
            if exc.status == 404:
                return False
            raise
        return item.get("parentFolderId") == self._source_folder_id()

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
        first, *rest = _folder_path(path, "folder")
        # "Inbox/Done" is Done under the inbox, which a German mailbox calls Posteingang:
        # the well-known name finds it whatever its display name.
        parent = _WELL_KNOWN.get(first.casefold())
        names = rest if parent is not None else [first, *rest]
        parent = parent or "msgfolderroot"
        for name in names:
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


def _state(data: Mapping[str, Any]) -> tuple[str, dict[str, _Entry], dict[str, None]]:
    """The delta link, pending messages and refs disposed of lately of an exported state."""
    link, rows, done = data["link"], data["pending"], data.get("done", [])
    if not isinstance(link, str) or not isinstance(rows, list) or not isinstance(done, list):
        raise TypeError("link, pending or done")
    entries = (_Entry(str(r), str(w), None if n is None else int(n)) for r, w, n in rows)
    return link, {entry.ref: entry for entry in entries}, dict.fromkeys(map(str, done))


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
