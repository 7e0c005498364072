"""Exchange Server mailboxes through Exchange Web Services (EWS), with exchangelib.

:class:`EwsConnector` reads one mailbox folder and :class:`EwsTransport` sends mail
from a mailbox, both over the SOAP endpoint ``https://<server>/EWS/Exchange.asmx``
(never autodiscover: the endpoint is configured). Logins are Basic or NTLM with a
password (the kind the server offers is detected, or fixed with ``auth``), or an
OAuth2 bearer token from a token provider (:mod:`halomail.backends.auth.oauth`).

Reading lists the folder with FindItem (paged, ``item:Size`` only, oldest first),
then reads each email's MIME with GetItem, in batches bounded by count and bytes.
An email whose size is over the limit is yielded as ``too_large`` without its MIME
ever being requested. The ref is the EWS ItemId alone: its ChangeKey changes with
every edit of the item (a flag, a category), so it is never part of the ref and
never sent back.

Disposal moves the email with MoveItem to Deleted Items (the well-known folder
``deleteditems``) or to a named folder under the top of the information store
(created with CreateFolder when missing), or deletes it with DeleteItem
(``MoveToDeletedItems`` unless configured otherwise: recoverable, as Graph and Gmail
delete; ``SoftDelete`` to the Recoverable Items folder; ``HardDelete``). An email already gone
(``ErrorItemNotFound``: another client moved it, or our earlier ack did) counts as
handled.

Throttling: Exchange answers ``ErrorServerBusy`` with the ``BackOffMilliseconds`` to
wait (and a proxy may answer HTTP 429/503 with ``Retry-After``). exchangelib runs with
its fail-fast policy, so nothing sleeps inside the library; :class:`EwsRetry` waits as
told (with an injectable sleep) and tries again, a few times, and otherwise gives up
with :class:`~halomail.errors.TransientConnectorError` carrying the wait in
``retry_after``: nothing was disposed of, so nothing is lost, and the next run starts
over.

Sending: a CreateItem whose answer was lost (a timeout, a dropped connection, an HTTP
5xx) may have sent the mail all the same, so it is never tried again within the call:
it raises :class:`~halomail.errors.AmbiguousSendError`, and
:meth:`EwsTransport.was_sent` looks for the Message-ID in Sent Items before the outbox
sends again (which is why ``save_copy`` is on by default).

Secrets: exchangelib logs each request's headers at DEBUG (``exchangelib.util``),
which would include ``Authorization``. The HTTP adapter every session here uses shows
exchangelib a copy of each request with that header's value replaced by
``[redacted]``, so no password, Basic login or token reaches any log, whatever the
host's logging configuration. (With NTLM, pyspnego logs each handshake message, never
the password, on its own ``spnego`` logger at DEBUG.)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import email.parser
import email.utils
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from exchangelib import (  # type: ignore[import-untyped]
        DELEGATE,
        IMPERSONATION,
        Folder,
        Message,
    )
    from exchangelib import errors as ews_errors
    from exchangelib.items import (  # type: ignore[import-untyped]
        HARD_DELETE,
        MOVE_TO_DELETED_ITEMS,
        SEND_AND_SAVE_COPY,
        SEND_ONLY,
        SOFT_DELETE,
    )
    from exchangelib.properties import ItemId  # type: ignore[import-untyped]
    from exchangelib.properties import Mailbox as EwsAddress
    from exchangelib.services import CreateFolder  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "halomail.backends.ews needs exchangelib: pip install 'halomail[ews]'"
    ) from exc

from halomail._validate import under_key_path
from halomail.backends._ews_client import (
    EwsClient,
    EwsRetry,
    may_have_arrived,
    missing_folder,
    short_error,
)
from halomail.backends.auth.oauth import TokenProvider, token_provider_from_settings
from halomail.backends.base import Disposition, FetchedMessage, OutgoingEmail, ProbeReport
from halomail.backends.cloud_settings import EwsMailboxSettings, EwsTransportSettings
from halomail.backends.settings import SettingsTable, as_typed
from halomail.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigError,
    ConnectorError,
    PermanentTransportError,
    TransientConnectorError,
    TransientTransportError,
    TransportConfigError,
)

__all__ = ["EwsConnector", "EwsRetry", "EwsTransport"]

log = logging.getLogger(__name__)


# GetItem batches stop at this many bytes of MIME (by item:Size), so a batch of large
# emails never holds more than this in memory at once, whatever ``batch_size`` says.
_BATCH_BYTES = 8 * 1024 * 1024
_DELETE_TYPES = (HARD_DELETE, SOFT_DELETE, MOVE_TO_DELETED_ITEMS)
# Folder names that mean a well-known folder, mapped to exchangelib's Account property
# for it (so "Deleted Items" is the distinguished folder "deleteditems" whatever the
# mailbox's language calls it).
_WELL_KNOWN = {
    "inbox": "inbox",
    "deleted items": "trash",
    "deleteditems": "trash",
    "junk email": "junk",
    "junkemail": "junk",
    "sent items": "sent",
    "sentitems": "sent",
}
# Answers to CreateItem that sending the same message again can never change.
_PERMANENT_SEND_ANSWERS: tuple[type[Exception], ...] = (
    ews_errors.ErrorInvalidRecipients,
    ews_errors.ErrorMailRecipientNotFound,
    ews_errors.ErrorMessageSizeExceeded,
    ews_errors.ErrorMimeContentConversionFailed,
    ews_errors.ErrorSendAsDenied,
)


# -- HTTP plumbing ---------------------------------------------------------------------


# -- the client both the connector and the transport use ---------------------------------


def _parse_processed(value: str) -> tuple[str, str]:
    if value == "delete":
        return "delete", ""
    action, sep, folder = value.partition(":")
    if action == "move" and sep and folder.strip():
        return "move", folder.strip()
    raise ConfigError("processed", f"expected 'move:<folder>' or 'delete', got {value!r}")


def _split_path(path: str, key: str) -> list[str]:
    parts = [p.strip() for p in path.replace("\\", "/").split("/") if p.strip()]
    if not parts:
        raise ConfigError(key, f"a folder name is needed, got {path!r}")
    return parts


# -- reading ----------------------------------------------------------------------------


class EwsConnector:
    """An Exchange mailbox folder read through EWS.

    See the module documentation for how reading and disposal work. Nothing is sent
    to the server before the first :meth:`fetch` or :meth:`ack`.

    Args:
        name: The mailbox's name.
        endpoint: The EWS URL, e.g. ``https://mail.example.com/EWS/Exchange.asmx``.
        address: The mailbox's primary SMTP address.
        username: The login for Basic/NTLM (``DOMAIN\\user`` or ``user@domain``).
        password: Its password; never logged nor shown.
        auth: ``"basic"``, ``"ntlm"``, ``"oauth"``, or ``None``: OAuth2 with a token
            provider, else whichever of NTLM and Basic the server offers.
        token_provider: Gives OAuth2 access tokens (``token()``, ``invalidate()``).
        access_type: ``"delegate"`` (the login has Full Access to the mailbox, or is
            it) or ``"impersonation"`` (a service account, or an app-only token, acting
            as the mailbox's user); ``None``: impersonation for an app-only token
            (client credentials, which Exchange accepts only that way), else delegate.
        folder: The folder read: ``Inbox`` (the well-known folder), or a path of
            folders under the top of the information store, e.g. ``Support/New``.
        processed: ``"move:<folder>"`` (``move:Deleted Items`` is the well-known
            Deleted Items folder) or ``"delete"``.
        quarantine_folder: Where quarantined emails move (created when missing).
        delete_type: For ``processed="delete"``: ``MoveToDeletedItems`` (the
            default: recoverable by the user, as in Outlook), ``SoftDelete`` (to the
            Recoverable Items folder) or ``HardDelete`` (gone for good).
        max_message_bytes: Larger emails (by ``item:Size``) are yielded as
            ``too_large`` with an empty ``raw``; their MIME is never requested.
        batch_size: At most this many emails per GetItem (fewer when large).
        page_size: Items per FindItem page while listing the folder.
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust besides the system's (a private CA).
        retry: How server back-off requests are honoured.

    Raises:
        ConfigError: An argument is invalid (its key path says which).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        address: str,
        username: str | None = None,
        password: str | None = None,
        auth: str | None = None,
        token_provider: TokenProvider | None = None,
        access_type: str | None = None,
        folder: str = "Inbox",
        processed: str = "move:Deleted Items",
        quarantine_folder: str = "Quarantine",
        delete_type: str = MOVE_TO_DELETED_ITEMS,
        max_message_bytes: int | None = None,
        batch_size: int = 50,
        page_size: int = 200,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: EwsRetry | None = None,
    ) -> None:
        self.name = name
        self._client = EwsClient(
            name,
            endpoint=endpoint,
            address=address,
            username=username,
            password=password,
            auth=auth,
            token_provider=token_provider,
            access_type=access_type,
            timeout=timeout,
            ca_file=ca_file,
            retry=retry,
        )
        self._action, self._processed_folder = _parse_processed(processed)
        self._folder_path = _split_path(folder, "folder")
        self.folder = folder
        _split_path(quarantine_folder, "quarantine_folder")
        self.quarantine_folder = quarantine_folder
        if delete_type not in _DELETE_TYPES:
            raise ConfigError(
                "delete_type", f"expected one of {', '.join(_DELETE_TYPES)}, got {delete_type!r}"
            )
        self.delete_type = delete_type
        if batch_size < 1 or page_size < 1:
            raise ConfigError("batch_size", "batch_size and page_size must be at least 1")
        self.max_message_bytes = max_message_bytes
        self.batch_size = batch_size
        self.page_size = page_size
        self._folders: dict[str, Any] = {}  # folder path (case-folded) → exchangelib Folder

    @classmethod
    def from_settings(
        cls,
        settings: EwsMailboxSettings | SettingsTable,
        *,
        max_message_bytes: int | None,
        token_provider: TokenProvider | None = None,
    ) -> EwsConnector:
        """The connector for an ``[[mailboxes]]`` entry with ``connection = "ews"``.

        ``host`` is the server name (or the full EWS URL); ``security = "none"`` means
        plain HTTP. With ``auth = "xoauth2"`` or ``"oauthbearer"`` in ``settings.oauth``
        the login is OAuth2 with ``token_provider`` (or the static ``token``/
        ``token_env``); otherwise ``username`` and ``password`` log in with NTLM or
        Basic, as the server offers.

        Args:
            settings: The typed settings, or anything with ``as_table()`` (a
                :class:`halomail.MailboxSettings`), read through
                :meth:`EwsMailboxSettings.from_table`.
            max_message_bytes: Larger emails are fetched as ``too_large``.
            token_provider: The OAuth2 token provider built for this mailbox.

        Returns:
            The connector (nothing is sent to the server yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(EwsMailboxSettings, settings, getattr(settings, "key_path", "mailboxes"))
        kp = typed.key_path
        if token_provider is None:
            # None for auth = "password" (the default): NTLM or Basic with the password.
            token_provider = token_provider_from_settings(
                typed.oauth, kp, mailbox=typed.name, verify=_verify(typed.tls_ca_file)
            )
        with under_key_path(kp):
            options = _login_options(
                host=typed.host,
                port=typed.port,
                security=typed.security,
                username=typed.username,
                password=typed.password,
                address=typed.address,
                access_type=typed.access_type,
                token_provider=token_provider,
            )
            return cls(
                typed.name,
                folder=typed.folder,
                processed=typed.processed,
                quarantine_folder=typed.quarantine_folder,
                delete_type=typed.delete_type,
                max_message_bytes=max_message_bytes,
                batch_size=typed.batch_size,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
                **options,
            )

    def __repr__(self) -> str:
        return f"EwsConnector({self.name!r}, {self._client.endpoint!r}, {self.folder!r})"

    @property
    def address(self) -> str:
        """The mailbox's SMTP address."""
        return self._client.address

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the folder's emails, oldest first, changing nothing.

        The folder is listed whole first (ids and sizes only), so emails disposed of
        while this iterator runs do not shift the pages of the listing.

        Raises:
            AuthenticationError: The login or token was refused.
            TransientConnectorError: The server is busy or unreachable; try again later.
            ConnectorError: The folder does not exist, or access was denied.
        """
        listing = self._list()
        log.debug("mailbox %s: %d emails in %s", self.name, len(listing), self.folder)
        batch: list[tuple[str, int]] = []
        batch_bytes = 0
        for ref, size in listing:
            if self.max_message_bytes is not None and size > self.max_message_bytes:
                yield from self._read(batch)
                batch, batch_bytes = [], 0
                log.info(
                    "mailbox %s: %s is %d bytes, over the limit; not read", self.name, ref, size
                )
                yield FetchedMessage(ref=ref, raw=b"", size=size, too_large=True)
                continue
            batch.append((ref, size))
            batch_bytes += size
            if len(batch) >= self.batch_size or batch_bytes >= _BATCH_BYTES:
                yield from self._read(batch)
                batch, batch_bytes = [], 0
        yield from self._read(batch)

    def list_refs(self) -> list[str]:
        """The refs of the folder's emails, without reading them (for ``start_from = "now"``).

        Raises:
            ConnectorError: As :meth:`fetch`.
        """
        return [ref for ref, _ in self._list()]

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Move or delete the email per ``disposition``; a no-op when it is gone.

        Raises:
            AuthenticationError: The login or token was refused.
            TransientConnectorError: The server is busy or unreachable.
            ConnectorError: The email exists but could not be moved or deleted.
        """
        if disposition is Disposition.RETRY:
            return
        client = self._client
        item = ItemId(id=ref)  # the Id alone: a ChangeKey from the fetch may be stale
        if disposition is Disposition.PROCESSED and self._action == "delete":
            results = client.call(
                "delete",
                lambda: client.account.bulk_delete(ids=[item], delete_type=self.delete_type),
            )
            done = f"deleted ({self.delete_type})"
        else:
            quarantine = disposition is Disposition.QUARANTINED
            path = self.quarantine_folder if quarantine else self._processed_folder
            results = self._move(item, path)
            done = f"moved to {path}"
        for result in results:
            if isinstance(result, ews_errors.ErrorItemNotFound):
                log.debug("mailbox %s: %s already gone; nothing to do", self.name, ref)
                return
            if isinstance(result, Exception):
                raise ConnectorError(
                    f"cannot dispose of {ref} ({disposition.value}): {short_error(result)}",
                    mailbox=self.name,
                ) from result
        log.debug("mailbox %s: %s %s", self.name, ref, done)

    def close(self) -> None:
        """Close the HTTP connections; folder ids stay known for the next run."""
        self._client.close()

    def probe(self) -> ProbeReport:
        """Log in and read the folder's message count (``GetFolder``); nothing is read or moved.

        Raises:
            AuthenticationError: The credentials or the token were refused.
            ConnectorError: The folder does not exist, or the server refused.
        """
        folder = self._folder(self.folder, create=False)
        self._client.call("probe the folder", folder.refresh)
        count = folder.total_count
        messages = count if isinstance(count, int) else None
        return ProbeReport(f"{messages} messages in {self.folder}", messages=messages)

    # -- helpers -------------------------------------------------------------------------

    def _move(self, item: Any, path: str) -> list[Any]:
        client = self._client
        for attempt in (1, 2):
            target = self._folder(path, create=True)

            def move(target: Any = target) -> list[Any]:
                moved: list[Any] = client.account.bulk_move(ids=[item], to_folder=target)
                return moved

            try:
                return client.call("move", move)
            except ConnectorError as exc:
                # The folder id we remembered is gone (someone deleted the folder):
                # find or create it again, once.
                if attempt == 2 or not missing_folder(exc):
                    raise
                self._folders.pop(path.casefold(), None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _list(self) -> list[tuple[str, int]]:
        source = self._folder(self.folder, create=False)

        def listing() -> list[tuple[str, int]]:
            query = source.all().order_by("datetime_received").only("size")
            query.page_size = self.page_size
            found: list[tuple[str, int]] = []
            for item in query:
                if isinstance(item, Exception):
                    raise item
                found.append((item.id, int(item.size or 0)))
            return found

        # Listed whole: a failure on any page loses nothing (nothing was yielded yet)
        # and doubles nothing (the next run lists again from the first page).
        try:
            return self._client.call("list", listing)
        except ConnectorError as exc:
            if missing_folder(exc):  # deleted or renamed: look it up again next run
                self._folders.pop(self.folder.casefold(), None)
            raise

    def _read(self, batch: Sequence[tuple[str, int]]) -> Iterator[FetchedMessage]:
        if not batch:
            return
        client = self._client
        source = self._folder(self.folder, create=False)
        ids = [ItemId(id=ref) for ref, _ in batch]
        items = client.call(
            "read",
            lambda: list(
                client.account.fetch(
                    ids=ids, folder=source, only_fields=["mime_content"], chunk_size=len(ids)
                )
            ),
        )
        for (ref, _), item in zip(batch, items, strict=True):
            if isinstance(item, ews_errors.ErrorItemNotFound):
                log.debug("mailbox %s: %s vanished before it was read", self.name, ref)
                continue
            if isinstance(item, Exception):
                # It stays where it is, reported each run, for someone to look at.
                log.error("mailbox %s: cannot read %s: %s", self.name, ref, short_error(item))
                continue
            raw = item.mime_content
            if isinstance(raw, str):
                raw = raw.encode("utf-8")
            if not raw:
                log.error("mailbox %s: %s has no MIME content; left in place", self.name, ref)
                continue
            if self.max_message_bytes is not None and len(raw) > self.max_message_bytes:
                yield FetchedMessage(ref=ref, raw=b"", size=len(raw), too_large=True)
                continue
            yield FetchedMessage(ref=ref, raw=bytes(raw), size=len(raw))

    def _folder(self, path: str, *, create: bool) -> Any:
        """The exchangelib Folder for ``path``, resolved once and remembered."""
        key = path.casefold()
        found = self._folders.get(key)
        if found is None:
            found = self._client.call("open folder", lambda: self._resolve(path, create=create))
            self._folders[key] = found
        return found

    def _resolve(self, path: str, *, create: bool) -> Any:
        account = self._client.account
        parts = _split_path(path, "folder")
        well_known = _WELL_KNOWN.get(parts[0].casefold())
        folder = getattr(account, well_known) if well_known else account.msg_folder_root
        walked = parts[1:] if well_known else parts
        for part in walked:
            try:
                folder = folder // part
            except ews_errors.ErrorFolderNotFound:
                if not create:
                    raise ConnectorError(
                        f"there is no folder {path!r} in {self.address}", mailbox=self.name
                    ) from None
                folder = self._create_folder(folder, part)
        return folder

    def _create_folder(self, parent: Any, name: str) -> Any:
        # CreateFolder directly: Folder.save() would first walk the mailbox's whole
        # folder tree to fill exchangelib's folder cache.
        blank = Folder(parent=parent, name=name, folder_class="IPF.Note")
        try:
            created = CreateFolder(account=self._client.account).get(
                parent_folder=parent, folders=[blank]
            )
        except ews_errors.ErrorFolderExists:
            return parent // name  # created by someone else meanwhile
        log.info("mailbox %s: created the folder %r", self.name, name)
        return created


# -- sending ----------------------------------------------------------------------------


class EwsTransport:
    """Sends mail from an Exchange mailbox with EWS CreateItem.

    The composed message goes as MIME content (every header we wrote, Message-ID,
    ``Auto-Submitted`` and the loop header among them, is kept), with
    ``MessageDisposition`` ``SendAndSaveCopy`` (a copy in Sent Items, where
    :meth:`was_sent` finds it after an ambiguous outcome), or ``SendOnly``. Envelope
    recipients missing from the To and Cc headers are added as Bcc. The From address
    must be the mailbox's, or one it has Send As rights for.

    Args:
        endpoint: The EWS URL.
        address: The sending mailbox's primary SMTP address.
        username: The login for Basic/NTLM.
        password: Its password.
        auth: As for :class:`EwsConnector`.
        token_provider: Gives OAuth2 access tokens.
        access_type: ``"delegate"``, ``"impersonation"``, or ``None`` (as for
            :class:`EwsConnector`).
        save_copy: Keep a copy in Sent Items (without it, :meth:`was_sent` cannot
            find a mail whose sending was ambiguous, and the outbox sends it again).
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust besides the system's.
        retry: How server back-off requests are honoured.
        name: A label for logs and errors.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        endpoint: str,
        address: str,
        username: str | None = None,
        password: str | None = None,
        auth: str | None = None,
        token_provider: TokenProvider | None = None,
        access_type: str | None = None,
        save_copy: bool = True,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: EwsRetry | None = None,
        name: str = "ews-outgoing",
    ) -> None:
        self.name = name
        self.save_copy = save_copy
        self._client = EwsClient(
            name,
            endpoint=endpoint,
            address=address,
            username=username,
            password=password,
            auth=auth,
            token_provider=token_provider,
            access_type=access_type,
            timeout=timeout,
            ca_file=ca_file,
            retry=retry,
        )

    @classmethod
    def from_settings(
        cls,
        outgoing: EwsTransportSettings | SettingsTable,
        token_provider: TokenProvider | None = None,
    ) -> EwsTransport:
        """The transport for ``[outgoing]`` (or a mailbox's) with ``transport = "ews"``.

        The other keys are read as for :meth:`EwsConnector.from_settings`.

        Args:
            outgoing: The typed settings, or anything with ``as_table()`` (an
                :class:`halomail.OutgoingSettings`), read through
                :meth:`EwsTransportSettings.from_table`.
            token_provider: The OAuth2 token provider built for them.

        Returns:
            The transport (nothing is sent to the server yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(EwsTransportSettings, outgoing, "outgoing")
        if token_provider is None:
            token_provider = token_provider_from_settings(
                typed.oauth, typed.key_path, verify=_verify(typed.tls_ca_file)
            )
        with under_key_path(typed.key_path):
            options = _login_options(
                host=typed.host,
                port=None,
                security=typed.security,
                username=typed.username,
                password=typed.password,
                address=typed.address,
                access_type=typed.access_type,
                token_provider=token_provider,
            )
            return cls(
                save_copy=typed.save_copy,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
                **options,
            )

    def __repr__(self) -> str:
        return f"EwsTransport({self._client.endpoint!r}, {self._client.address!r})"

    def send(self, email: OutgoingEmail) -> None:
        """Send one composed email.

        Raises:
            AmbiguousSendError: The request reached Exchange and the answer was lost (a
                timeout, a dropped connection, a 5xx): it may have been sent.
            TransientTransportError: Busy, unreachable, or the login was refused (the
                outbox tries again with backoff; ``retry_after`` is the server's wait).
            PermanentTransportError: Exchange refused this message for good (a bad
                recipient, too large, no Send As right).
        """
        client = self._client
        message = Message(account=client.account, mime_content=email.data)
        missing = _not_in_headers(email.data, email.recipients)
        if missing:
            message.bcc_recipients = [EwsAddress(email_address=a) for a in missing]
        disposition = SEND_AND_SAVE_COPY if self.save_copy else SEND_ONLY

        def create() -> list[Any]:
            account = client.account
            folder = account.sent if self.save_copy else None
            result: list[Any] = account.bulk_create(
                folder=folder, items=[message], message_disposition=disposition
            )
            return result

        try:
            results = client.call("send", create, repeatable=False)
            for result in results:
                if isinstance(result, Exception):
                    raise result
        except TransientConnectorError as exc:
            if may_have_arrived(exc):
                log.warning(
                    "%s: the answer to sending %s was lost (%s): it may have been sent",
                    self.name,
                    email.message_id,
                    exc,
                )
                raise AmbiguousSendError(
                    f"{exc}: {email.message_id} may have been sent", retry_after=exc.retry_after
                ) from exc
            raise TransientTransportError(str(exc), retry_after=exc.retry_after) from exc
        except AuthenticationError as exc:  # refused after a renewal: stop sending
            raise TransportConfigError(str(exc)) from exc
        except ConnectorError as exc:
            if isinstance(exc.__cause__, _PERMANENT_SEND_ANSWERS):
                raise PermanentTransportError(str(exc)) from exc
            raise TransientTransportError(str(exc)) from exc
        except _PERMANENT_SEND_ANSWERS as exc:
            raise PermanentTransportError(f"{self.name}: send: {short_error(exc)}") from exc
        except ews_errors.EWSError as exc:
            raise TransientTransportError(f"{self.name}: send: {short_error(exc)}") from exc
        log.debug("%s: sent %s (%s)", self.name, email.message_id, disposition)

    def was_sent(self, message_id: str) -> bool:
        """Whether Sent Items holds a message with this Message-ID (FindItem on
        ``message:InternetMessageId``).

        Exchange files the copy a moment after it sends, and only with ``save_copy``;
        without it nothing can be found and this answers False.

        Args:
            message_id: The Message-ID, with or without its angle brackets.

        Raises:
            TransientTransportError: The lookup itself failed (busy, unreachable, refused).
        """
        wanted = f"<{message_id.strip().strip('<>')}>"
        client = self._client

        def find() -> bool:
            query = client.account.sent.filter(message_id=wanted).only("message_id")
            return any(not isinstance(item, Exception) for item in query[:1])

        try:
            found = client.call("look in Sent Items", find)
        except ConnectorError as exc:
            retry_after = exc.retry_after if isinstance(exc, TransientConnectorError) else None
            raise TransientTransportError(str(exc), retry_after=retry_after) from exc
        log.info("%s: %s is %sin Sent Items", self.name, wanted, "" if found else "not ")
        return found

    def close(self) -> None:
        """Close the HTTP connections (they reopen on the next send)."""
        self._client.close()


def _not_in_headers(data: bytes, recipients: Sequence[str]) -> list[str]:
    """The envelope recipients the message's To and Cc headers do not name."""
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    named = {
        address.lower()
        for _, address in email.utils.getaddresses(
            [str(v) for key in ("To", "Cc") for v in headers.get_all(key, [])]
        )
    }
    return [r for r in recipients if r.lower() not in named]


def _verify(ca_file: Path | None) -> bool | str:
    return str(ca_file) if ca_file is not None else True


def _login_options(
    *,
    host: str,
    port: int | None,
    security: str,
    username: str | None,
    password: str | None,
    address: str,
    access_type: str | None,
    token_provider: TokenProvider | None,
) -> dict[str, Any]:
    """The endpoint, mailbox and login arguments shared by both ``from_settings``."""
    if "://" in host:
        endpoint = host
    else:
        scheme = "http" if security == "none" else "https"
        netloc = f"{host}:{port}" if port else host
        endpoint = f"{scheme}://{netloc}/EWS/Exchange.asmx"
    auth = "oauth" if token_provider is not None else None  # else NTLM or Basic
    return {
        "endpoint": endpoint,
        "address": address,
        "username": username,
        "password": password,
        "auth": auth,
        "token_provider": token_provider,
        # None: chosen by the login (impersonation for an app-only token).
        "access_type": {"impersonation": IMPERSONATION, "delegate": DELEGATE}.get(
            access_type or ""
        ),
    }
