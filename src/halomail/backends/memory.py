"""A mailbox and a transport that live in memory, for tests of the pipeline without sockets.

Like httpx's ``MockTransport``: :class:`MemoryConnector` is a scriptable mailbox and
:class:`MemoryTransport` records what would have been sent, optionally through a
handler that raises to script failures.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from halomail.backends.base import Disposition, FetchedMessage, OutgoingEmail
from halomail.backends.settings import MemoryTransportSettings

__all__ = ["MemoryConnector", "MemoryTransport"]

log = logging.getLogger(__name__)


class MemoryConnector:
    """A mailbox held in a dict, satisfying :class:`~halomail.backends.base.MailboxConnector`.

    Refs are ``"1"``, ``"2"`` … in the order emails were added, and are never reused,
    so they stay stable for the connector's lifetime.

    Args:
        name: The mailbox's name.
        messages: Emails the mailbox starts with, oldest first.
        max_message_bytes: Emails larger than this are fetched with ``too_large=True``
            and an empty ``raw``, as a server-side size check would.
        fail_fetch: When set, every :meth:`fetch` raises it, like a broken mailbox.

    Attributes:
        processed: Emails acked ``PROCESSED``, in ack order.
        quarantined: Emails acked ``QUARANTINED``, in ack order.
        acks: Every :meth:`ack` call as ``(ref, disposition)``, no-ops included.
        closes: How many times :meth:`close` was called.

    Example::

        connector = MemoryConnector("Support", [raw_email])
        (fetched,) = connector.fetch()
        connector.ack(fetched.ref, Disposition.PROCESSED)
        assert connector.processed == [raw_email]
    """

    def __init__(
        self,
        name: str,
        messages: Iterable[bytes] | None = None,
        *,
        max_message_bytes: int | None = None,
        fail_fetch: Exception | None = None,
    ) -> None:
        self.name = name
        self.max_message_bytes = max_message_bytes
        self.fail_fetch = fail_fetch
        self.processed: list[bytes] = []
        self.quarantined: list[bytes] = []
        self.acks: list[tuple[str, Disposition]] = []
        self.closes = 0
        self._messages: dict[str, bytes] = {}
        self._next = 1
        for raw in messages or ():
            self.add(raw)

    def __repr__(self) -> str:
        return f"MemoryConnector({self.name!r}, {len(self._messages)} messages)"

    def add(self, raw: bytes) -> str:
        """Deliver an email to the mailbox.

        Args:
            raw: The email's bytes.

        Returns:
            The email's ref.
        """
        ref = str(self._next)
        self._next += 1
        self._messages[ref] = bytes(raw)
        return ref

    @property
    def remaining(self) -> list[bytes]:
        """The emails still in the mailbox, oldest first."""
        return list(self._messages.values())

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the emails present when iteration starts, oldest first.

        An email acked while the iteration runs is not yielded afterwards.

        Raises:
            Exception: ``fail_fetch``, when set.
        """
        if self.fail_fetch is not None:
            raise self.fail_fetch
        for ref in list(self._messages):
            raw = self._messages.get(ref)
            if raw is None:
                continue
            size = len(raw)
            if self.max_message_bytes is not None and size > self.max_message_bytes:
                yield FetchedMessage(ref=ref, raw=b"", size=size, too_large=True)
            else:
                yield FetchedMessage(ref=ref, raw=raw, size=size)

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Remove the email into :attr:`processed` or :attr:`quarantined`, or leave it.

        Acking an unknown or already-acked ref is recorded in :attr:`acks` and does
        nothing else, as the contract requires.
        """
        self.acks.append((ref, disposition))
        if disposition is Disposition.RETRY or ref not in self._messages:
            return
        raw = self._messages.pop(ref)
        if disposition is Disposition.PROCESSED:
            self.processed.append(raw)
        else:
            self.quarantined.append(raw)

    def close(self) -> None:
        """Count the call; there is nothing to release."""
        self.closes += 1


class MemoryTransport:
    """Records sent email, satisfying :class:`~halomail.backends.base.MailTransport` and
    :class:`~halomail.backends.base.SentLookup`.

    Args:
        handler: Called with each email before it counts as sent. Raise
            :class:`~halomail.errors.TransientTransportError` or
            :class:`~halomail.errors.PermanentTransportError` from it to script a
            failure; the email is then not recorded in :attr:`sent`.
        after_delivery: Called with each email after it is recorded in :attr:`sent`.
            Raise :class:`~halomail.errors.AmbiguousSendError` from it to script a
            service that applied the request and then failed the response (a timeout
            or a 5xx after delivery).
        lookup: Called with the Message-ID before :meth:`was_sent` answers; raise
            :class:`~halomail.errors.TransientTransportError` from it to script a
            failed lookup.

    Attributes:
        sent: Every email sent successfully, in order (delivered, whatever the answer).
        attempts: Every email :meth:`send` was called with, failures included.
        lookups: Every Message-ID :meth:`was_sent` was asked about, in order.

    Example::

        calls = []

        def fail_once(email):
            calls.append(email)
            if len(calls) == 1:
                raise TransientTransportError("451 try later")

        transport = MemoryTransport(fail_once)
    """

    def __init__(
        self,
        handler: Callable[[OutgoingEmail], None] | None = None,
        *,
        after_delivery: Callable[[OutgoingEmail], None] | None = None,
        lookup: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.after_delivery = after_delivery
        self.lookup = lookup
        self.sent: list[OutgoingEmail] = []
        self.attempts: list[OutgoingEmail] = []
        self.lookups: list[str] = []

    @classmethod
    def from_settings(cls, settings: MemoryTransportSettings) -> MemoryTransport:
        """The transport of ``transport = "memory"`` settings (nothing to read in them)."""
        return cls()

    def __repr__(self) -> str:
        return f"MemoryTransport({len(self.sent)} sent)"

    def send(self, email: OutgoingEmail) -> None:
        """Run the handler, record the email as sent, then run ``after_delivery``.

        Raises:
            TransportError: Whatever the handler or ``after_delivery`` raises.
        """
        self.attempts.append(email)
        if self.handler is not None:
            self.handler(email)
        self.sent.append(email)
        log.debug(
            "memory transport: sent %s to %d recipients", email.message_id, len(email.recipients)
        )
        if self.after_delivery is not None:
            self.after_delivery(email)

    def was_sent(self, message_id: str) -> bool:
        """Whether an email with this Message-ID is in :attr:`sent`.

        Raises:
            TransientTransportError: Whatever the ``lookup`` handler raises.
        """
        self.lookups.append(message_id)
        if self.lookup is not None:
            self.lookup(message_id)
        return any(email.message_id == message_id for email in self.sent)
