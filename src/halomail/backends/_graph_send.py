"""Sending as a Microsoft 365 mailbox through Graph's ``sendMail`` (MIME form).

Kept beside :mod:`halomail.backends.graph`, which re-exports :class:`GraphTransport`.

**Exactly once, as far as Graph allows.** ``sendMail`` is not idempotent: a request that
reached Graph and then met a 5xx, a timeout or a dropped connection may have delivered
the mail. Such a send is never repeated inside the call; it raises
:class:`~halomail.errors.AmbiguousSendError`, and the outbox asks :meth:`GraphTransport.was_sent`
(a search of Sent Items by ``internetMessageId``) before it sends again. Only a 429,
which Graph answers without carrying the request out, is waited out and tried again.

**Limits.** Graph caps a request at 4 MB, and ``sendMail`` takes the MIME base64-encoded,
so it carries mail up to about 3 MB. Larger mail goes through a draft, its attachments
added one by one (through upload sessions from 3 MB), then sent
(:mod:`halomail.backends._graph_upload`). Mail over Graph's 150 MB limit for a message
with attachments (or a lower ``max_message_bytes``) fails permanently before any request.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

from halomail._validate import under_key_path
from halomail.backends._common import with_bcc
from halomail.backends._graph_http import (
    DEFAULT_BASE_URL,
    GraphApiError,
    GraphClient,
    GraphOutcomeUnknown,
    GraphRetry,
    graph_base_url,
    graph_token_provider,
)
from halomail.backends._graph_upload import (
    GRAPH_MESSAGE_LIMIT,
    GRAPH_REQUEST_LIMIT,
    LargeMailSender,
    split_attachments,
)
from halomail.backends.auth.oauth import TokenProvider
from halomail.backends.auth.sasl import probe_token
from halomail.backends.base import OutgoingEmail, ProbeReport
from halomail.backends.cloud_settings import GraphTransportSettings
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

__all__ = ["GRAPH_MESSAGE_LIMIT", "GRAPH_REQUEST_LIMIT", "GraphTransport"]

log = logging.getLogger(__name__)

# sendMail answers 202 Accepted and nothing else when it has taken the mail.
_ACCEPTED = 202


class GraphTransport:
    """Sends mail as a Microsoft 365 mailbox with Graph's ``sendMail`` in MIME form.

    The composed message is posted base64-encoded as ``text/plain`` (Graph's MIME send),
    so every header we wrote, Message-ID, ``Auto-Submitted`` and the loop header among
    them, is kept. Mail too large for one 4 MB request is created as a MIME draft without
    its attachments, which are then added (large ones through upload sessions), and the
    draft is sent; a failure before that last step sent nothing and is transient.
    Envelope recipients the To and Cc headers do not name are added as a Bcc header,
    which Exchange removes from the copies it delivers.

    A 429 is waited out as ``Retry-After`` says (:class:`GraphRetry`), then raised as
    :class:`~halomail.errors.TransientTransportError` carrying that wait, like an
    unreachable server. A 5xx, a timeout or a connection dropped after the request left
    is an :class:`~halomail.errors.AmbiguousSendError`: the mail may have gone, and
    :meth:`was_sent` tells. An answer other than 202 below 400 is an error too. A token
    refused after a renewal and a 403 (no Mail.Send) are a
    :class:`~halomail.errors.TransportConfigError`: the outbox stops sending through it,
    and the mail goes once an administrator has fixed the app. Any other 4xx (bad
    recipient, no right to send as the From address) and mail over ``max_message_bytes``
    (or whose body alone is over Graph's 4 MB request limit) are a
    :class:`~halomail.errors.PermanentTransportError`.

    Args:
        user_id: The mailbox mail is sent as (address or object id).
        token_provider: Hands out Graph access tokens.
        base_url: Graph's root.
        timeout: Seconds each HTTP request may take.
        ca_file: A CA bundle to trust besides the system's.
        retry: How throttling is honoured.
        name: A label for logs and errors.
        max_message_bytes: The largest mail sent, in bytes (MIME, attachments included);
            larger mail fails permanently before any request. At most Graph's 150 MB.

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
        max_message_bytes: int = GRAPH_MESSAGE_LIMIT,
    ) -> None:
        if not user_id:
            raise ConfigError(
                "user_id", "the sending mailbox (an address or object id) is required"
            )
        if not 0 < max_message_bytes <= GRAPH_MESSAGE_LIMIT:
            raise ConfigError(
                "max_message_bytes",
                f"must be between 1 and Microsoft Graph's {GRAPH_MESSAGE_LIMIT} bytes",
            )
        self.name = name
        self.user_id = user_id
        self.max_message_bytes = max_message_bytes
        ca_path = Path(ca_file) if ca_file is not None else None
        self._client = GraphClient(
            name,
            base_url=base_url,
            token_provider=token_provider,
            timeout=timeout,
            ca_file=ca_path,
            retry=retry,
        )
        self._large = LargeMailSender(self._client, user_id, timeout=timeout, ca_file=ca_path)

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
                token_provider = graph_token_provider(
                    typed.oauth, typed.key_path, "outgoing", typed.tls_ca_file
                )
            return cls(
                user_id=typed.user_id,
                token_provider=token_provider,
                base_url=graph_base_url(typed.host),
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
        """Send one composed email, once.

        Raises:
            AmbiguousSendError: The request reached Graph and may have delivered the mail.
            TransientTransportError: Throttled or unreachable, or a step before the send
                of a large mail's draft failed; nothing was sent.
            TransportConfigError: The token was refused, or access denied (403).
            PermanentTransportError: Graph refused this message for good, or it is over
                ``max_message_bytes`` (its body alone over Graph's request limit).
        """
        data = with_bcc(email.data, email.recipients)
        if len(data) > self.max_message_bytes:
            raise PermanentTransportError(
                f"{email.message_id} is {len(data)} bytes: over the {self.max_message_bytes} "
                "byte limit for mail sent through Microsoft Graph"
            )
        payload = base64.b64encode(data)
        if len(payload) <= GRAPH_REQUEST_LIMIT:
            self._post_accepted(
                self._client.url("users", self.user_id, "sendMail"),
                email.message_id,
                content=payload,
                headers={"Content-Type": "text/plain"},
            )
        else:
            self._send_through_draft(email.message_id, data)
        log.debug("%s: sent %s as %s", self.name, email.message_id, self.user_id)

    def _send_through_draft(self, message_id: str, data: bytes) -> None:
        """Build a draft with its attachments (nothing sent yet: transient), then send it."""
        try:
            draft_id = self._large.prepare(message_id, split_attachments(data))
        except (PermanentTransportError, TransientTransportError):
            raise
        except Exception as exc:
            error = _transport_error(exc)
            if isinstance(error, AmbiguousSendError):
                # A draft step may have been carried out, but nothing was sent.
                raise TransientTransportError(str(exc), retry_after=error.retry_after) from exc
            raise error from exc
        self._post_accepted(self._large.send_url(draft_id), message_id)

    def _post_accepted(self, url: str, message_id: str, **request: Any) -> None:
        """POST a send, never repeated after it reached Graph; raise unless 202."""
        try:
            status = self._client.call("POST", url, what="send", idempotent=False, **request)
        except Exception as exc:
            raise _transport_error(exc) from exc
        _check_accepted(status, message_id)

    def was_sent(self, message_id: str) -> bool:
        """Whether Sent Items holds mail with this Message-ID (``internetMessageId``).

        Exchange files the copy a little after ``sendMail`` answers; the outbox asks only
        after a failed send, some time later.

        Raises:
            TransientTransportError: The lookup itself failed.
        """
        literal = f"<{message_id.strip().strip('<>')}>".replace("'", "''")
        url = self._client.url("users", self.user_id, "mailFolders", "sentitems", "messages")
        params = {
            "$filter": f"internetMessageId eq '{literal}'",
            "$select": "id,internetMessageId",
            "$top": "1",
        }
        try:
            data = self._client.get_json(url, what="look for a sent message", params=params)
        except ConnectorError as exc:
            retry_after = exc.retry_after if isinstance(exc, TransientConnectorError) else None
            raise TransientTransportError(str(exc), retry_after=retry_after) from exc
        found = data.get("value")
        return isinstance(found, list) and any(_is_message(item) for item in found)

    def close(self) -> None:
        """Close the HTTP connections (they reopen on the next send)."""
        self._client.close()
        self._large.close()


def _transport_error(exc: Exception) -> Exception:
    """The transport error a failed ``sendMail`` request means."""
    if isinstance(exc, GraphOutcomeUnknown):
        return AmbiguousSendError(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, GraphApiError):
        error = TransportConfigError if exc.status == 403 else PermanentTransportError
        return error(str(exc))
    if isinstance(exc, AuthenticationError):  # a 401 after a fresh token: stop sending
        return TransportConfigError(str(exc))
    if isinstance(exc, TransientConnectorError):
        return TransientTransportError(str(exc), retry_after=exc.retry_after)
    if isinstance(exc, ConnectorError):  # an odd answer: worth another try later
        return TransientTransportError(str(exc))
    return exc


def _check_accepted(status: int, message_id: str) -> None:
    """Raise unless ``status`` is ``sendMail``'s 202 Accepted."""
    if status == _ACCEPTED:
        return
    if 200 <= status < 300:
        # Something answered, but not as sendMail does: the mail may or may not be queued.
        raise AmbiguousSendError(
            f"send {message_id}: Microsoft Graph answered {status}, not 202 Accepted; "
            "whether it was sent is unknown"
        )
    # A redirect or an informational answer: not Graph's sendMail (a proxy, a wrong host).
    raise TransportConfigError(
        f"send {message_id}: the server answered {status}, not Microsoft Graph's 202 "
        "Accepted; check the host setting"
    )


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and bool(item.get("id"))
