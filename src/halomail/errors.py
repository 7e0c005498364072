"""Every error halomail raises, rooted at one class.

The tree::

    HalomailError
    ├── ConfigError                 halomail.toml is invalid (carries the key path)
    ├── RepositoryError             the ticket repository failed
    │   └── TransientRepositoryError    …in a way worth retrying (locked, disk full)
    ├── ConnectorError              a mailbox could not be read or changed
    │   ├── AuthenticationError         credentials refused or token expired
    │   └── TransientConnectorError     dropped connection, timeout: retry later
    ├── TransportError              outgoing mail could not be sent
    │   ├── TransientTransportError     try again later (4xx, connection lost)
    │   │   └── AmbiguousSendError          may have been delivered: look before resending
    │   └── PermanentTransportError     never retry (5xx, recipient refused)
    │       └── TransportConfigError        login or TLS refused: stop sending, back off
    ├── TemplateError               an administrator's template is invalid or failed
    └── SendingRestrictedError      an agent's team may not send from that mailbox

Library exceptions are translated at the boundary with ``raise … from exc`` so
the original cause stays in the traceback. Every message is redacted as it is made:
the password of a URL or DSN in it (``postgres://helpdesk:S3cr3t@db``) and the
secret query parameters of a URL (``?access_token=…``) are shown as ``***``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail._text import redact_secrets

__all__ = [
    "AmbiguousSendError",
    "AuthenticationError",
    "ConfigError",
    "ConnectorError",
    "DuplicateKeyError",
    "HalomailError",
    "PermanentTransportError",
    "RepositoryError",
    "SendingRestrictedError",
    "TemplateError",
    "TransientConnectorError",
    "TransientRepositoryError",
    "TransientTransportError",
    "TransportConfigError",
    "TransportError",
]


class HalomailError(Exception):
    """The root of every error halomail raises; its message never shows a URL's secrets."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_secrets(a) if isinstance(a, str) else a for a in args))


class ConfigError(HalomailError, ValueError):
    """The configuration is invalid.

    Args:
        key_path: Where in ``halomail.toml`` the problem is, e.g. ``mailboxes[0].port``.
        message: What is wrong, in words an administrator understands.
    """

    def __init__(self, key_path: str, message: str) -> None:
        self.key_path = key_path
        self.message = redact_secrets(message)
        super().__init__(f"{key_path}: {message}" if key_path else message)


class RepositoryError(HalomailError):
    """The ticket repository failed to read or write."""


class DuplicateKeyError(RepositoryError):
    """A dedupe key was recorded already: another runner handled the same email first.

    :meth:`~halomail.TicketRepository.record_dedupe` raises it (and the transaction is
    rolled back); the processor treats the email as a duplicate, never as a failure.

    .. versionadded:: 0.1.0
    """


class TransientRepositoryError(RepositoryError):
    """The repository failed in a way that may succeed later (locked, disk full)."""


class ConnectorError(HalomailError):
    """A mailbox could not be read or changed.

    Args:
        message: What went wrong (never containing a secret).
        mailbox: The mailbox's configured name, when known.
    """

    def __init__(self, message: str, *, mailbox: str | None = None) -> None:
        self.mailbox = mailbox
        super().__init__(f"{mailbox}: {message}" if mailbox else message)


class AuthenticationError(ConnectorError):
    """The server refused our credentials, or an OAuth2 token could not be had."""


class TransientConnectorError(ConnectorError):
    """A dropped connection or a timeout: the mailbox should be tried again later.

    Args:
        message: What went wrong (never containing a secret).
        mailbox: The mailbox's configured name, when known.
        retry_after: Seconds the server asked us to wait (Graph ``Retry-After``, EWS
            ``BackOffMilliseconds``), or ``None`` when it asked nothing.
    """

    def __init__(
        self, message: str, *, mailbox: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, mailbox=mailbox)


class TransportError(HalomailError):
    """Outgoing mail could not be sent."""


class TransientTransportError(TransportError):
    """Sending failed for now (a 4xx reply, a dropped connection): retry with backoff.

    Args:
        message: What went wrong (never containing a secret).
        retry_after: Seconds the server asked us to wait, or ``None``.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class AmbiguousSendError(TransientTransportError):
    """The send may have been delivered: the request reached the service, and then the
    answer was a timeout, a dropped connection or a 5xx.

    Sending again blindly could deliver the mail twice. The outbox records the mail as
    *maybe sent* and, before sending it again, asks a transport that can look among its
    sent mail (:class:`~halomail.backends.base.SentLookup`) whether it is there.

    .. versionadded:: 0.1.0
    """


class PermanentTransportError(TransportError):
    """Sending failed for good (a 5xx reply, a refused recipient): do not retry."""


class TransportConfigError(PermanentTransportError):
    """The transport cannot send anything as configured: the server refused our login
    (SMTP 535, 534, 530; a token refused after a renewal, a 403), or TLS failed (an
    untrusted certificate, no STARTTLS, a failed handshake).

    Not the mail's fault: the :class:`~halomail.Outbox` stops its pass for that
    transport, leaves the mail pending and backs off, instead of failing every queued
    mail with one login each. A subclass of :class:`PermanentTransportError`, so code
    that catches that still catches this.

    .. versionadded:: 0.1.0
    """


class TemplateError(HalomailError):
    """An administrator's template is invalid, unsafe, or failed to render.

    Args:
        message: What is wrong.
        template: The template's name, when known.
        line: The line in the template, when known.
    """

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        self.template = template
        self.line = line
        where = template or ""
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class SendingRestrictedError(HalomailError):
    """An agent asked to send from a mailbox that their team may not send from."""
