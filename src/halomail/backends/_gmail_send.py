"""Sending as a Gmail or Google Workspace mailbox: :class:`GmailTransport`.

Re-exported by :mod:`halomail.backends.gmail`, where the connector lives; the Gmail API's
HTTP layer is :mod:`halomail.backends._gmail_http`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from halomail._validate import under_key_path
from halomail.backends._common import with_bcc
from halomail.backends._gmail_http import (
    DEFAULT_API_ENDPOINT,
    GmailAnswerLost,
    GmailApiError,
    GmailClient,
    GmailRetry,
    api_endpoint_of,
    message_upload,
    token_provider_of,
)
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.auth.sasl import probe_token
from halomail.backends.base import OutgoingEmail, ProbeReport
from halomail.backends.cloud_settings import GmailTransportSettings
from halomail.backends.settings import SettingsTable, as_typed
from halomail.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigError,
    ConnectorError,
    PermanentTransportError,
    TransientTransportError,
    TransportConfigError,
)

__all__ = ["MAX_SEND_BYTES", "GmailTransport"]

log = logging.getLogger("halomail.backends.gmail")

#: The largest message ``messages.send`` takes, through its upload endpoint ("Maximum file
#: size: 36700160", 35 MB), headers and attachments included.
MAX_SEND_BYTES = 36_700_160


class GmailTransport:
    """Sends mail as a Gmail or Google Workspace mailbox with ``users.messages.send``.

    The composed message is uploaded as it is (``/upload/gmail/v1/users/{id}/messages/send``,
    ``uploadType=media``, ``message/rfc822``), so every header we wrote, Message-ID,
    ``Auto-Submitted`` and the loop header among them, is kept. The upload endpoint takes
    up to 35 MB; the JSON ``raw`` form is refused by Gmail far below that, so it is never
    used. A larger message fails before any request, for good. Gmail takes the recipients
    from the To, Cc and Bcc headers: envelope recipients those do not name are added as a
    Bcc header, which Gmail removes from the copies it delivers. Gmail sends from the
    mailbox's address or one of its verified "send mail as" aliases; another From is
    replaced by the mailbox's address.

    A send is never repeated within the call once it reached Gmail: a 5xx, a timeout or a
    connection lost before the answer is :class:`~halomail.errors.AmbiguousSendError`
    (the mail may be out), and :meth:`was_sent` tells the outbox later whether it is in
    Sent. 429 and the 403 rate limits (Gmail did nothing) are waited out as for the
    connector, then raised as :class:`~halomail.errors.TransientTransportError` carrying
    the server's ``Retry-After``. A refused token or a 403 (missing scope or delegation)
    stops the outbox (:class:`~halomail.errors.TransportConfigError`) until the grant is
    fixed. Any other 4xx (an invalid message) is permanent.

    Args:
        token_provider: Hands out access tokens for a scope that allows sending and
            reading (``gmail.modify``: :meth:`was_sent` searches the mailbox).
        user_id: The mailbox mail is sent as: ``me`` (the token's user) or its address.
        api_endpoint: The API's root.
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust instead of the default bundle.
        retry: How throttling is honoured.
        name: A label for logs and errors.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        token_provider: TokenProvider,
        user_id: str = "me",
        api_endpoint: str = DEFAULT_API_ENDPOINT,
        timeout: float = 30.0,
        ca_file: str | os.PathLike[str] | None = None,
        retry: GmailRetry | None = None,
        name: str = "gmail-outgoing",
    ) -> None:
        if not user_id.strip():
            raise ConfigError("user_id", "the sending mailbox ('me' or an address) is required")
        self.name = name
        self.user_id = user_id.strip()
        self._client = GmailClient(
            name,
            api_endpoint=api_endpoint,
            token_provider=token_provider,
            timeout=timeout,
            ca_file=Path(ca_file) if ca_file is not None else None,
            retry=retry or GmailRetry(),
        )

    @classmethod
    def from_settings(
        cls,
        outgoing: GmailTransportSettings | SettingsTable,
        token_provider: TokenProvider | None = None,
    ) -> GmailTransport:
        """The transport for ``[outgoing]`` (or a mailbox's) with ``transport = "gmail"``.

        The token provider and ``host`` are read as for
        :meth:`GmailConnector.from_settings`.

        Args:
            outgoing: The typed settings, or anything with ``as_table()`` (an
                :class:`halomail.OutgoingSettings`), read through
                :meth:`GmailTransportSettings.from_table`.
            token_provider: The OAuth2 token provider built for them.

        Returns:
            The transport (nothing is sent to Google yet).

        Raises:
            ConfigError: A setting is missing or invalid, with its key path.
        """
        typed = as_typed(GmailTransportSettings, outgoing, "outgoing")
        with under_key_path(typed.key_path):
            endpoint = api_endpoint_of(typed.host)
            if token_provider is None:
                token_provider = token_provider_of(
                    typed.oauth, typed.key_path, "outgoing", typed.tls_ca_file
                )
            return cls(
                token_provider=token_provider,
                user_id=typed.user_id,
                api_endpoint=endpoint,
                timeout=typed.timeout,
                ca_file=typed.tls_ca_file,
            )

    def __repr__(self) -> str:
        return f"GmailTransport({self.user_id!r})"

    def probe(self) -> ProbeReport:
        """Get an access token for the sending account; nothing is sent.

        Raises:
            AuthenticationError: The credentials were refused.
        """
        return ProbeReport(probe_token(self._client.token_provider))

    def send(self, email: OutgoingEmail) -> None:
        """Send one composed email, once.

        Raises:
            AmbiguousSendError: Gmail answered 5xx, or nothing: the mail may be out.
            TransientTransportError: Throttled beyond patience, or unreachable.
            PermanentTransportError: Refused for good, or over 35 MB (a
                TransportConfigError: the grant).
        """
        data = with_bcc(email.data, email.recipients)
        if len(data) > MAX_SEND_BYTES:
            raise PermanentTransportError(
                f"{self.name}: {email.message_id} is {len(data):,} bytes; Gmail sends at most "
                f"{MAX_SEND_BYTES:,} bytes (35 MB), attachments included"
            )
        users = self.user_id
        try:
            self._client.execute(
                lambda u: u.messages().send(userId=users, media_body=message_upload(data)),
                what="send",
                repeat=False,
            )
        except GmailApiError as exc:  # a 403 here is a missing scope or delegation
            error = TransportConfigError if exc.status == 403 else PermanentTransportError
            raise error(str(exc)) from exc
        except GmailAnswerLost as exc:
            raise AmbiguousSendError(str(exc), retry_after=exc.retry_after) from exc
        except AuthenticationError as exc:  # a refused token stops sending
            raise TransportConfigError(str(exc)) from exc
        except ConnectorError as exc:  # throttling, an outage, unreachable
            raise TransientTransportError(str(exc), retry_after=_retry_after(exc)) from exc
        log.debug("%s: sent %s as %s", self.name, email.message_id, self.user_id)

    def was_sent(self, message_id: str) -> bool:
        """Whether mail with this Message-ID is in the mailbox's Sent (:class:`.base.SentLookup`).

        Searches ``in:sent rfc822msgid:<id>``, trash included: only a message Gmail
        labelled SENT proves that a send went out. A copy that came back in (a reply
        quoting nothing, a list echoing it) or a draft carrying the same Message-ID does
        not, and the trash counts because someone may have deleted the sent copy since.

        Raises:
            TransientTransportError: The search failed (throttled, unreachable, refused:
                it needs a scope that reads the mailbox, such as ``gmail.modify``).
        """
        wanted = message_id.strip().strip("<>")
        users = self.user_id
        try:
            answer = self._client.execute(
                lambda u: u.messages().list(
                    userId=users,
                    q=f"in:sent rfc822msgid:{wanted}",
                    includeSpamTrash=True,
                    maxResults=1,
                ),
                what=f"look for {wanted} in Sent",
            )
        except ConnectorError as exc:
            raise TransientTransportError(
                f"{self.name}: cannot tell whether {wanted} was sent: {exc}",
                retry_after=_retry_after(exc),
            ) from exc
        found = bool(answer.get("messages"))
        log.info("%s: %s is %sin Sent", self.name, wanted, "" if found else "not ")
        return found

    def close(self) -> None:
        """Close the HTTP connections (they reopen on the next send)."""
        self._client.close()


def _retry_after(exc: ConnectorError) -> float | None:
    return getattr(exc, "retry_after", None)
