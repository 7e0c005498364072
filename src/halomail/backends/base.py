"""The two contracts every mail backend implements: reading a mailbox, sending mail.

A connector reads one mailbox and disposes of what it read; a transport sends one
composed email. Both are deliberately small, like httpx's ``BaseTransport``: a
backend is one module beside this one.

Optional capabilities, used when a backend has them:

* ``probe() -> ProbeReport`` (:class:`Probeable`, connectors and transports): connect,
  authenticate, report; ``halomail check-config --connect`` calls it.
* ``wait_for_mail(timeout) -> bool`` (connectors): block until new mail or the timeout;
  the runner's watcher threads call it, and ``close()`` from another thread must end it.
* ``end_session()`` (connectors): what the runner calls after each read instead of
  ``close()``, so a connector may keep its connections between cycles (IMAP does);
  ``close()`` then releases everything when the processor closes.
* ``export_sync_state()`` and ``restore_sync_state(text)`` (:class:`SyncState`,
  connectors): where the last listing ended (a Graph delta link, a Gmail history id),
  as text the runner keeps in the ledger, so another process continues from there.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "Disposition",
    "FetchedMessage",
    "MailTransport",
    "MailboxConnector",
    "OutgoingEmail",
    "ProbeReport",
    "Probeable",
    "SentLookup",
    "SyncState",
]


class Disposition(enum.StrEnum):
    """What becomes of a fetched email once its outcome is committed."""

    PROCESSED = "processed"  # handled: move to the processed folder, or delete
    QUARANTINED = "quarantined"  # kept aside: move to the quarantine folder, or leave it
    RETRY = "retry"  # not handled yet: leave it exactly as it is


@attrs.frozen
class FetchedMessage:
    """One email read from a mailbox.

    Args:
        ref: A stable id for the email in its mailbox (IMAP ``UIDVALIDITY:UID``,
            POP3 UIDL, a Maildir key, a Graph immutable id …). Passed back to
            :meth:`MailboxConnector.ack`.
        raw: The email's bytes exactly as stored. Empty when the email was too large
            to read (``too_large`` is then True).
        size: The email's size in bytes as the server reports it.
        too_large: True when the connector refused to read the body because ``size``
            is over the limit; the processor quarantines it from this metadata.
    """

    ref: str
    raw: bytes = attrs.field(repr=False)
    size: int
    too_large: bool = False


@runtime_checkable
class MailboxConnector(Protocol):
    """**Protocol:** reads one mailbox and disposes of what was read.

    The processor calls :meth:`fetch`, commits each email's outcome, and only then
    calls :meth:`ack`. A connector must therefore never remove an email during
    :meth:`fetch`, and :meth:`ack` must be safe to call for an email that is
    already gone (a crash between the commit and the ack means the same email is
    fetched again; its dedupe key then makes it a no-op).

    A connector whose processed mail stays where it is (it never moves or deletes it)
    should say so with a ``keeps_processed_mail`` attribute that is true: with
    ``[processing] ledger_retention_days``, its emails' dedupe records are then kept
    for ever, since every poll may fetch them again (:mod:`halomail.pipeline.retention`).

    .. versionadded:: 0.1.0
    """

    name: str

    def fetch(self) -> Iterator[FetchedMessage]:
        """Yield the mailbox's emails, oldest first, without changing the mailbox.

        Raises:
            AuthenticationError: Credentials were refused.
            TransientConnectorError: The connection failed; try again later.
        """

    def ack(self, ref: str, disposition: Disposition) -> None:
        """Dispose of one fetched email per its outcome.

        ``PROCESSED`` moves it to the processed folder or deletes it, as configured;
        ``QUARANTINED`` moves it to the quarantine folder (or leaves it, when the
        backend has none); ``RETRY`` leaves it untouched.
        """

    def close(self) -> None:
        """Finish the session (for POP3 this is when deletions take effect)."""


@attrs.frozen
class ProbeReport:
    """What :meth:`Probeable.probe` found: one line for a person, plus figures.

    Args:
        summary: What was found, e.g. ``"tls, IDLE, 12 messages in INBOX"`` or
            ``"STARTTLS, AUTH PLAIN"``; never a secret.
        messages: How many emails the mailbox holds, when the backend can tell.
    """

    summary: str
    messages: int | None = None


@runtime_checkable
class Probeable(Protocol):
    """**Optional capability** of a connector or a transport: "test this channel".

    ``halomail check-config --connect`` calls :meth:`probe` on every backend that has
    it. A probe connects and authenticates, and reports what it found; it never reads
    an email's body, never sends, and never changes the mailbox. A backend without
    ``probe`` is reported as not testable, not as failed.

    .. versionadded:: 0.1.0
    """

    def probe(self) -> ProbeReport:
        """Connect, authenticate, and say what was found.

        Raises:
            AuthenticationError: Credentials were refused (connectors).
            ConnectorError: The mailbox cannot be reached or opened (connectors).
            TransportError: The server cannot be reached or refused the login (transports).
        """


@runtime_checkable
class SyncState(Protocol):
    """**Optional capability** of a connector: its sync state, kept outside the process.

    A connector that lists only what changed since its last listing (a Graph delta
    link, a Gmail history id, with the messages that listing left in the folder) keeps
    that in memory. With this capability the runner stores it in the ledger after each
    pass and hands it back at the start of the next one, which may run in another
    process or on another machine, so no runner re-lists a whole folder for nothing or
    continues from stale memory of its own.

    The text is opaque to the runner: versioned JSON the connector alone reads. It must
    describe only messages not yet disposed of (the connector drops a message from it
    when :meth:`MailboxConnector.ack` disposes of it), so a state saved after a pass, or
    the one before a pass that crashed, leads the next reader to every email still
    waiting.

    .. versionadded:: 0.1.0
    """

    def export_sync_state(self) -> str | None:
        """The state now, as text; ``None`` when there is none yet (nothing listed)."""

    def restore_sync_state(self, text: str | None) -> None:
        """Continue from ``text``, replacing the state in memory.

        ``None`` forgets the state: the next :meth:`~MailboxConnector.fetch` lists in
        full. A text that cannot be read (another version, another folder, garbage) is
        ignored with a log line and also means a full listing; this never raises.
        """


@attrs.frozen
class OutgoingEmail:
    """A composed email ready to hand to a transport.

    Args:
        message_id: Our Message-ID, without angle brackets.
        envelope_from: The SMTP envelope sender (``MAIL FROM``).
        recipients: The envelope recipients.
        data: The whole message, CRLF line endings, ready for ``DATA``.
    """

    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes = attrs.field(repr=False)


@runtime_checkable
class MailTransport(Protocol):
    """**Protocol:** sends composed email.

    .. versionadded:: 0.1.0
    """

    def send(self, email: OutgoingEmail) -> None:
        """Send one email.

        Raises:
            TransientTransportError: It may succeed later; the outbox retries with backoff.
            PermanentTransportError: It will never succeed; the outbox records the failure.
        """


@runtime_checkable
class SentLookup(Protocol):
    """**Protocol:** a transport that can tell whether it already sent an email.

    Cloud APIs (Graph, Gmail, EWS) keep what they sent; after an ambiguous outcome
    (:class:`~halomail.errors.AmbiguousSendError`) the outbox asks before sending again.

    .. versionadded:: 0.1.0
    """

    def was_sent(self, message_id: str) -> bool:
        """Whether mail with this Message-ID (without angle brackets) is among the sent mail.

        Raises:
            TransientTransportError: The lookup itself failed; the outbox asks again later
                and does not send meanwhile.
        """
