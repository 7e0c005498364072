"""Google Workspace and Gmail mailboxes through the Gmail API (the ``google`` extra).

:class:`GmailConnector` reads one label of a mailbox (``INBOX`` by default) and
:class:`GmailTransport` (from :mod:`halomail.backends._gmail_send`) sends mail as a mailbox
(never twice within a call; see its documentation), both through google-api-python-client
(``googleapiclient.discovery.build("gmail", "v1")`` with the discovery document the
library ships, so building the client makes no request). Every request carries a
bearer token from a token provider (:mod:`halomail.backends.auth.oauth`: google-auth with
a service account and domain-wide delegation, or a user's refresh token), which caches
and refreshes it; a 401, throttling and the retry budget are decided in one place.

**Reading.** The first run lists the label whole (``users.messages.list``, page by
page), after noting the mailbox's ``historyId`` (``users.getProfile``) *before* the
listing, so that whatever changes while the listing runs is seen on the next run.
Each listed message's ``sizeEstimate``, ``internalDate`` and labels come from
``users.messages.get(format="minimal")``; messages are yielded oldest first. Later runs
ask only for what changed since (``users.history.list(startHistoryId=…)``), and yield
the whole set of messages in the label not yet disposed of, so one left for retry is
read again. History id and set are taken over only when a round completed; they are a
:class:`~halomail.backends.base.SyncState` the runner keeps in the ledger for any
process to continue. Correctness never rests on it: without it, or with a history id
Gmail no longer knows (404), a full listing, and dedupe keys make a second read a no-op.

Each message's MIME comes from ``users.messages.get(format="raw")`` (URL-safe base64);
one whose ``sizeEstimate`` is over the limit is yielded as ``too_large``, never downloaded.

**Disposal.** ``processed = "move:Deleted Items"`` (or ``move:Trash``, or ``delete``)
trashes the message (``users.messages.trash``; Gmail empties the trash after 30 days,
and halomail never deletes for good, so the ``gmail.modify`` scope is enough);
``move:Archive`` (or ``move:All Mail``) archives it (removes the label read, e.g.
``INBOX``); ``move:<label>`` adds that label, created when missing, and removes the
label read. Quarantine moves to its label the same way. A 404 for the message
(another client deleted it, or an earlier ack already did) counts as handled.

**Failures.** 429, 403 ``rateLimitExceeded``/``userRateLimitExceeded`` and 5xx are
waited out as ``Retry-After`` says, or with exponential backoff when it says nothing
(:class:`GmailRetry`); past its patience the run for that mailbox ends with
:class:`~halomail.errors.TransientConnectorError`, nothing disposed of and so nothing
lost; its ``retry_after`` is the wait the server named, if any, for the next run to
keep. A 401 makes the connector try once more with a fresh token; a second is an
:class:`~halomail.errors.AuthenticationError` telling the administrator what to check.
Tokens never appear in logs: only URLs are, and the Gmail API's carry no secret.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import under_key_path
from halomail.backends._gmail_http import (
    DEFAULT_API_ENDPOINT,
    GMAIL_SCOPES,
    GmailApiError,
    GmailClient,
    GmailRetry,
    api_endpoint_of,
    decode_raw,
    number_of,
    text_of,
    token_provider_of,
)
from halomail.backends._gmail_send import GmailTransport
from halomail.backends._sync_state import StateFormat
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.base import Disposition, FetchedMessage, ProbeReport
from halomail.backends.cloud_settings import GmailMailboxSettings
from halomail.backends.settings import SettingsTable, as_typed
from halomail.errors import (
    ConfigError,
    ConnectorError,
)

__all__ = [
    "DEFAULT_API_ENDPOINT",
    "GMAIL_SCOPES",
    "GmailApiError",
    "GmailConnector",
    "GmailRetry",
    "GmailTransport",
]

log = logging.getLogger(__name__)

# Labels every mailbox has; their ids are their names.
_SYSTEM_LABELS = frozenset(
    {
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
    }
)
# Labels that take a message out of every listing of another label.
_HIDING_LABELS = frozenset({"TRASH", "SPAM"})
_TRASH_NAMES = frozenset({"deleted items", "deleted", "trash", "bin"})
_ARCHIVE_NAMES = frozenset({"archive", "all mail"})
_HISTORY_TYPES = ["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"]
_MAX_PAGE = 500  # messages.list and history.list accept at most 500 per page


@attrs.frozen
class _Entry:
    """One message of the label: its id, when it arrived, its size, its labels."""

    ref: str
    internal_date: int
    size: int
    labels: frozenset[str]


@attrs.frozen
class _Target:
    """Where a disposed-of message goes: ``trash``, ``archive`` or ``label`` ``name``."""

    kind: str
    name: str = ""


class GmailConnector:
    """A label of a Gmail or Google Workspace mailbox, read through the Gmail API.

    See the module documentation for how reading and disposal work. Nothing is sent
    to Google before the first :meth:`fetch` or :meth:`ack`.

    Args:
        name: The mailbox's name.
        token_provider: Hands out access tokens (``token()``, ``invalidate()``) for a
            scope that allows ``gmail.modify``.
        user_id: The mailbox: ``me`` (the user the token is for, the default) or that
            user's address.
        folder: The label read: ``INBOX`` (the default), another system label, or a
            user label by name (``Support/New``).
        processed: ``"move:Deleted Items"`` (trash, the default), ``"move:Archive"``,
            ``"move:<label>"`` or ``"delete"`` (trash too).
        quarantine_folder: The label quarantined messages move to (created when missing).
        max_message_bytes: Larger messages are yielded as ``too_large`` (empty ``raw``).
        page_size: Messages (or history records) per listing page, at most 500.
        api_endpoint: The API's root (tests, or a private endpoint).
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust instead of the default bundle.
        retry: How throttling is honoured.

    Raises:
        ConfigError: An argument is invalid (its key path says which).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        *,
        token_provider: TokenProvider,
        user_id: str = "me",
        folder: str = "INBOX",
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        max_message_bytes: int | None = None,
        page_size: int = 100,
        api_endpoint: str = DEFAULT_API_ENDPOINT,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: GmailRetry | None = None,
    ) -> None:
        if not user_id.strip():
            raise ConfigError("user_id", "the mailbox ('me' or an address) is required")
        if not folder.strip():
            raise ConfigError("folder", "the label to read is required, e.g. 'INBOX'")
        if not 1 <= page_size <= _MAX_PAGE:
            raise ConfigError("batch_size", f"the page size must be between 1 and {_MAX_PAGE}")
        self.name = name
        self.user_id = user_id.strip()
        self.folder = folder.strip()
        self._processed = _target(processed, "processed", self.folder)
        self._quarantine = _target(f"move:{quarantine_folder}", "quarantine_folder", self.folder)
        self.quarantine_folder = quarantine_folder
        self.max_message_bytes = max_message_bytes
        self.page_size = page_size
        self._client = GmailClient(
            name,
            api_endpoint=api_endpoint,
            token_provider=token_provider,
            timeout=timeout,
            ca_file=Path(ca_file) if ca_file is not None else None,
            retry=retry or GmailRetry(),
        )
        self._labels: dict[str, str] | None = None  # label name (case-folded) → label id
        self._history_id: str | None = None
        # The messages of the label not yet disposed of, as the last complete round left
        # them: each run yields all of them, so nothing listed once is ever skipped.
        self._pending: dict[str, _Entry] = {}
        self._sync = StateFormat("gmail-history", name, user=self.user_id, folder=self.folder)

    @classmethod
    def from_settings(
        cls,
        settings: GmailMailboxSettings | SettingsTable,
        *,
        max_message_bytes: int | None,
        token_provider: TokenProvider | None = None,
    ) -> GmailConnector:
        """The connector for an ``[[mailboxes]]`` entry with ``connection = "google"``.

        Without ``token_provider``, one is built from ``settings.oauth``:
        ``credentials_file`` (a service-account key, impersonating ``subject``, or an
        authorized-user file), or ``client_id``, ``client_secret`` and ``refresh_token``,
        with the scope ``gmail.modify`` unless ``scopes`` says otherwise; or a fixed
        ``token``/``token_env``. ``host`` replaces the API's root URL.

        Args:
            settings: The typed settings, or anything with ``as_table()`` (a
                :class:`halomail.MailboxSettings`), read through
                :meth:`GmailMailboxSettings.from_table`.
            max_message_bytes: Larger messages are fetched as ``too_large``.
            token_provider: The OAuth2 token provider built for this mailbox.

        Returns:
            The connector (nothing is sent to Google yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(GmailMailboxSettings, settings, getattr(settings, "key_path", "mailboxes"))
        kp = typed.key_path
        with under_key_path(kp):
            endpoint = api_endpoint_of(typed.host)
            if token_provider is None:
                token_provider = token_provider_of(typed.oauth, kp, typed.name, typed.tls_ca_file)
            return cls(
                typed.name,
                token_provider=token_provider,
                user_id=typed.user_id,
                folder=typed.folder,
                processed=typed.processed,
                quarantine_folder=typed.quarantine_folder,
                max_message_bytes=max_message_bytes,
                page_size=typed.batch_size,
                api_endpoint=endpoint,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
            )

    @property
    def token_provider(self) -> TokenProvider:
        """The provider of this mailbox's tokens (a transport sending as it may share it)."""
        return self._client.token_provider

    def __repr__(self) -> str:
        return f"GmailConnector({self.name!r}, {self.user_id!r}, {self.folder!r})"

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the label's messages, oldest first, changing nothing.

        The label is listed whole first (ids, dates and sizes only), so messages
        disposed of while this iterator runs do not shift the pages of the listing.

        Raises:
            AuthenticationError: The token was refused, or none could be had.
            TransientConnectorError: The Gmail API is throttling, failing or unreachable.
            ConnectorError: The label does not exist, or access was denied.
        """
        entries = self._listing()
        log.debug("mailbox %s: %d messages in %s", self.name, len(entries), self.folder)
        for entry in entries:
            if entry.ref not in self._pending:
                continue  # disposed of while this iteration ran
            message = self._read(entry)
            if message is not None:
                yield message

    def list_refs(self) -> list[str]:
        """The refs of the label's messages, without reading them (``start_from = "now"``).

        Raises:
            ConnectorError: As :meth:`fetch`.
        """
        return self._list_refs(self._label_id(self.folder, create=False))

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Trash, archive or relabel the message per ``disposition``; a no-op when it is gone.

        Raises:
            AuthenticationError: The token was refused.
            TransientConnectorError: The Gmail API is throttling, failing or unreachable.
            ConnectorError: The message exists but could not be changed.
        """
        if disposition is Disposition.RETRY:
            return
        target = self._quarantine if disposition is Disposition.QUARANTINED else self._processed
        users = self.user_id
        try:
            if target.kind == "trash":
                self._client.execute(
                    lambda u: u.messages().trash(userId=users, id=ref), what=f"trash {ref}"
                )
            elif target.kind == "archive":
                source = self._label_id(self.folder, create=False)
                body = {"removeLabelIds": [source]}
                self._client.execute(
                    lambda u: u.messages().modify(userId=users, id=ref, body=body),
                    what=f"archive {ref}",
                )
            else:
                self._relabel(ref, target.name)
        except GmailApiError as exc:
            if exc.status != 404:
                raise
            log.debug("mailbox %s: %s already gone; nothing to do", self.name, ref)
        else:
            log.debug("mailbox %s: %s %s %s", self.name, target.kind, ref, target.name)
        self._pending.pop(ref, None)

    def close(self) -> None:
        """Close the HTTP connections; the history id and label ids are kept."""
        self._client.close()

    def export_sync_state(self) -> str | None:
        """The history id and the messages still in the label (:class:`.base.SyncState`)."""
        if self._history_id is None:  # no complete listing yet
            return None
        pending = [
            [e.ref, e.internal_date, e.size, sorted(e.labels)] for e in self._pending.values()
        ]
        return self._sync.dump(history_id=self._history_id, pending=pending)

    def restore_sync_state(self, text: str | None) -> None:
        """Continue from an exported state; ``None`` or an unusable one: a full listing."""
        self._history_id, self._pending = self._sync.load(text, _state) or (None, {})

    def probe(self) -> ProbeReport:
        """Get a token and read the label's message count; no email is read or changed.

        Raises:
            AuthenticationError: The token was refused.
            ConnectorError: The label does not exist, or the Gmail API refused.
        """
        label, users = self._label_id(self.folder, create=False), self.user_id
        answer = self._client.execute(
            lambda u: u.labels().get(userId=users, id=label), what="probe the label"
        )
        count = answer.get("messagesTotal")
        messages = count if isinstance(count, int) else None
        return ProbeReport(f"{messages} messages in {self.folder}", messages=messages)

    # -- listing ---------------------------------------------------------------------

    def _listing(self) -> list[_Entry]:
        if self._history_id is not None:
            try:
                return self._incremental(self._history_id)
            except GmailApiError as exc:
                if exc.status != 404:
                    raise
                # Gmail keeps history for about a week (less at times): past that, a
                # full listing; dedupe keeps the messages handled already from doubling.
                log.info(
                    "mailbox %s: Gmail no longer has the history since %s; listing %s in full",
                    self.name,
                    self._history_id,
                    self.folder,
                )
                self._history_id, self._pending = None, {}
        return self._full()

    def _full(self) -> list[_Entry]:
        label = self._label_id(self.folder, create=False)
        users = self.user_id
        # Noted before the listing: whatever changes while it runs is in the next round.
        profile = self._client.execute(
            lambda u: u.getProfile(userId=users), what="read the mailbox profile"
        )
        history_id = str(profile.get("historyId") or "") or None
        entries: dict[str, _Entry] = {}
        for ref in self._list_refs(label):
            entry = self._metadata(ref)
            if entry is not None and _in_label(entry.labels, label):
                entries[ref] = entry
        # Taken over only now that the round is complete.
        self._pending, self._history_id = entries, history_id
        return _oldest_first(entries.values())

    def _list_refs(self, label: str) -> list[str]:
        users, size = self.user_id, self.page_size
        refs: dict[str, None] = {}  # ordered, and a message seen on two pages counts once
        token: str | None = None
        page = 0
        while True:
            page += 1

            def request(u: Any, t: str | None = token) -> Any:
                return u.messages().list(
                    userId=users, labelIds=[label], maxResults=size, pageToken=t
                )

            data = self._client.execute(request, what=f"list {self.folder} (page {page})")
            for item in data.get("messages") or ():
                ref = item.get("id") if isinstance(item, dict) else None
                if isinstance(ref, str) and ref:
                    refs[ref] = None
            token = text_of(data.get("nextPageToken"))
            if token is None:
                return list(refs)

    def _incremental(self, start: str) -> list[_Entry]:
        label = self._label_id(self.folder, create=False)
        users, size = self.user_id, self.page_size
        # ref → True (may be in the label now), False (left it); the last record wins.
        changes: dict[str, bool] = {}
        new_history = start
        token: str | None = None
        page = 0
        while True:
            page += 1

            def request(u: Any, t: str | None = token) -> Any:
                return u.history().list(
                    userId=users,
                    startHistoryId=start,
                    historyTypes=_HISTORY_TYPES,
                    maxResults=size,
                    pageToken=t,
                )

            data = self._client.execute(request, what=f"history since {start} (page {page})")
            for record in data.get("history") or ():
                if isinstance(record, dict):
                    _note_changes(record, label, changes)
            new_history = text_of(data.get("historyId")) or new_history
            token = text_of(data.get("nextPageToken"))
            if token is None:
                break
        pending = dict(self._pending)
        for ref, maybe_in in changes.items():
            if not maybe_in:
                pending.pop(ref, None)
            elif ref not in pending:
                entry = self._metadata(ref)
                if entry is not None and _in_label(entry.labels, label):
                    pending[ref] = entry
        # Only a complete round is taken over: a failure above left the previous history
        # id and set untouched, so the next run asks for the same changes again.
        self._pending, self._history_id = pending, new_history
        return _oldest_first(pending.values())

    def _metadata(self, ref: str) -> _Entry | None:
        users = self.user_id
        try:
            data = self._client.execute(
                lambda u: u.messages().get(userId=users, id=ref, format="minimal"),
                what=f"look up {ref}",
            )
        except GmailApiError as exc:
            if exc.status != 404:
                raise
            return None  # deleted since it was listed
        labels = data.get("labelIds") or ()
        return _Entry(
            ref,
            number_of(data.get("internalDate")),
            number_of(data.get("sizeEstimate")),
            frozenset(label for label in labels if isinstance(label, str)),
        )

    # -- reading ---------------------------------------------------------------------

    def _read(self, entry: _Entry) -> FetchedMessage | None:
        limit = self.max_message_bytes
        if limit is not None and entry.size > limit:
            log.info(
                "mailbox %s: %s is about %d bytes, over the limit; not downloaded",
                self.name,
                entry.ref,
                entry.size,
            )
            return FetchedMessage(ref=entry.ref, raw=b"", size=entry.size, too_large=True)
        users = self.user_id
        try:
            data = self._client.execute(
                lambda u: u.messages().get(userId=users, id=entry.ref, format="raw"),
                what=f"read {entry.ref}",
            )
        except GmailApiError as exc:
            if exc.status != 404:
                raise
            log.info("mailbox %s: %s is gone; another client took it", self.name, entry.ref)
            self._pending.pop(entry.ref, None)
            return None
        raw = decode_raw(data.get("raw"))
        if raw is None:
            # A broken answer for this one message must not block the ones behind it.
            log.warning(
                "mailbox %s: %s came without valid base64url MIME; left in the mailbox",
                self.name,
                entry.ref,
            )
            return None
        if limit is not None and len(raw) > limit:
            return FetchedMessage(ref=entry.ref, raw=b"", size=len(raw), too_large=True)
        return FetchedMessage(ref=entry.ref, raw=raw, size=len(raw))

    # -- disposal and labels ---------------------------------------------------------

    def _relabel(self, ref: str, name: str) -> None:
        users = self.user_id
        source = self._label_id(self.folder, create=False)
        for attempt in (1, 2):
            body = {"addLabelIds": [self._label_id(name, create=True)], "removeLabelIds": [source]}

            def request(u: Any, b: dict[str, list[str]] = body) -> Any:
                return u.messages().modify(userId=users, id=ref, body=b)

            try:
                self._client.execute(request, what=f"label {ref} {name!r}")
                return
            except GmailApiError as exc:
                # "Invalid label": a label we looked up was deleted since; look again once.
                if attempt == 2 or exc.status != 400 or "label" not in str(exc).lower():
                    raise
                log.info("mailbox %s: label %r vanished; looking it up again", self.name, name)
                self._labels = None

    def _label_id(self, name: str, *, create: bool) -> str:
        upper = name.upper()
        if upper in _SYSTEM_LABELS:
            return upper
        known = self._load_labels().get(name.casefold())
        if known is not None:
            return known
        if not create:
            raise ConnectorError(
                f"the label {name!r} does not exist in {self.user_id}", mailbox=self.name
            )
        users = self.user_id
        body = {"name": name, "labelListVisibility": "labelShow", "messageListVisibility": "show"}
        try:
            created = self._client.execute(
                lambda u: u.labels().create(userId=users, body=body),
                what=f"create label {name!r}",
            )
        except GmailApiError as exc:
            if exc.status != 409:
                raise
            # The name is taken: another client created it since we looked.
            self._labels = None
            found = self._load_labels().get(name.casefold())
            if found is None:
                raise
            return found
        label_id = text_of(created.get("id"))
        if label_id is None:
            raise ConnectorError(
                f"create label {name!r}: the Gmail API sent no label id", mailbox=self.name
            )
        log.info("mailbox %s: created the label %r", self.name, name)
        self._load_labels()[name.casefold()] = label_id
        return label_id

    def _load_labels(self) -> dict[str, str]:
        if self._labels is None:
            users = self.user_id
            data = self._client.execute(lambda u: u.labels().list(userId=users), what="list labels")
            labels: dict[str, str] = {}
            for label in data.get("labels") or ():
                if not isinstance(label, dict):
                    continue
                label_id, label_name = text_of(label.get("id")), text_of(label.get("name"))
                if label_id and label_name:
                    labels[label_name.casefold()] = label_id
            self._labels = labels
        return self._labels


# -- helpers -------------------------------------------------------------------------


def _target(value: str, key: str, folder: str) -> _Target:
    """What ``processed`` (or the quarantine folder, as ``move:<name>``) asks for."""
    if value == "delete":
        # Gmail's own "Delete" moves to the trash; halomail never deletes for good.
        return _Target("trash")
    action, sep, name = value.partition(":")
    name = name.strip()
    if action != "move" or not sep or not name:
        raise ConfigError(key, f"expected 'move:<label>' or 'delete', got {value!r}")
    if name.casefold() in _TRASH_NAMES or name.upper() == "TRASH":
        return _Target("trash")
    if name.casefold() in _ARCHIVE_NAMES:
        return _Target("archive")
    if name.casefold() == folder.casefold():
        raise ConfigError(key, f"{name!r} is the label being read; choose another label")
    return _Target("label", name)


def _note_changes(record: Mapping[str, Any], label: str, changes: dict[str, bool]) -> None:
    """Fold one history record into ``changes`` (ref → may be in ``label`` now)."""
    for kind in ("messagesAdded", "labelsAdded", "labelsRemoved", "messagesDeleted"):
        for item in record.get(kind) or ():
            message = item.get("message") if isinstance(item, Mapping) else None
            if not isinstance(message, Mapping):
                continue
            ref = text_of(message.get("id"))
            if ref is None:
                continue
            labels = message.get("labelIds")
            if kind == "messagesDeleted":
                changes[ref] = False
            elif isinstance(labels, list):
                # The record carries the message's labels right after the change.
                changes[ref] = _in_label(frozenset(str(x) for x in labels), label)
            else:
                changes[ref] = True  # unknown: the metadata lookup decides


def _in_label(labels: frozenset[str], label: str) -> bool:
    return label in labels and (label in _HIDING_LABELS or not labels & _HIDING_LABELS)


def _state(data: Mapping[str, Any]) -> tuple[str, dict[str, _Entry]]:
    """The history id and pending messages of an exported state."""
    history_id, rows = data["history_id"], data["pending"]
    if not isinstance(history_id, str) or not isinstance(rows, list):
        raise TypeError("history_id or pending")
    entries = (_Entry(str(r), int(d), int(n), frozenset(map(str, ls))) for r, d, n, ls in rows)
    return history_id, {entry.ref: entry for entry in entries}


def _oldest_first(entries: Iterable[_Entry]) -> list[_Entry]:
    return sorted(entries, key=lambda e: (e.internal_date, e.ref))
