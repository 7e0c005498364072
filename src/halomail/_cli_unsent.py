"""Mail queued with nothing to send it: said loudly by ``check-config`` and ``run``.

Without an ``[outgoing]`` table (and without a mailbox's own ``[mailboxes.outgoing]``)
acknowledgements are still queued in the outbox, in the email's transaction, but no
transport exists to send them. That is a valid set-up (another process may send), so
it is a warning, never an error.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import logging
import sys

from halomail.config.loader import Config
from halomail.runner import MailProcessor
from halomail.tickets.models import OutboxStatus
from halomail.tickets.repository import OutboxAdmin

__all__ = [
    "WAITING_COUNTED",
    "UnsentMail",
    "outgoing_summary",
    "unsent_mailboxes",
    "warn_unsent",
]

log = logging.getLogger("halomail")

WAITING_COUNTED = 10_000
"""How many waiting emails the summary counts at most (it then says "10000 or more")."""

_HOW = "add an [outgoing] table (docs/configuration.md) so that `halomail run` sends it"


def unsent_mailboxes(config: Config) -> list[str]:
    """The enabled mailboxes whose mail nothing would send: no ``[outgoing]`` table, no
    ``[mailboxes.outgoing]`` of their own, and no sign-in of their own that sends."""
    if config.outgoing.explicit_keys:
        return []
    return [
        m.name
        for m in config.mailboxes
        if m.enabled and m.outgoing is None and not _sends_with_its_sign_in(m)
    ]


def _sends_with_its_sign_in(mailbox: object) -> bool:
    """An ``office365`` or ``google`` mailbox that sends with its own sign-in
    (``send_with = "mailbox"``, where the configuration has that setting)."""
    return getattr(mailbox, "send_with", None) == "mailbox"


def outgoing_summary(config: Config) -> str:
    """``outgoing via smtp`` for ``check-config``'s summary, or that there is none."""
    if config.outgoing.explicit_keys:
        return f"outgoing via {config.outgoing.transport}"
    if unsent_mailboxes(config):
        return "no [outgoing] table: mail is queued, not sent"
    return "outgoing per mailbox"


def _warning(names: list[str]) -> str:
    return (
        f"no [outgoing] table: mail from {', '.join(names)} (acknowledgements included) "
        f"is queued in the outbox but never sent; {_HOW}"
    )


def warn_unsent(config: Config, *, json_output: bool) -> None:
    """``check-config``: warn (never fail) when mail would be queued and never sent."""
    names = unsent_mailboxes(config)
    if not names:
        return
    if json_output:
        print(json.dumps({"event": "warning", "key_path": "outgoing", "reason": _warning(names)}))
    else:
        print(f"warning: {_warning(names)}", file=sys.stderr)


class UnsentMail:
    """``run``: a WARNING logged once when the processor has no transport for some
    mailboxes, and after each cycle, how much mail waits unsent.

    Args:
        processor: The processor ``run`` drives.
    """

    def __init__(self, processor: MailProcessor) -> None:
        self._processor = processor
        sends = processor.transport is not None
        self.mailboxes = [m.name for m in processor.mailboxes if m.transport is None and not sends]
        if self.mailboxes:
            log.warning(_warning(self.mailboxes))

    def waiting(self) -> int:
        """How many of those mailboxes' emails wait in the outbox, counted up to
        :data:`WAITING_COUNTED`."""
        repository = self._processor.repository
        if not self.mailboxes or not isinstance(repository, OutboxAdmin):
            return 0
        pending = repository.list_outgoing(status=OutboxStatus.PENDING, limit=WAITING_COUNTED)
        return sum(1 for mail in pending if mail.mailbox in self.mailboxes)

    def report(self, *, json_output: bool) -> None:
        """After a cycle's summary: the mail waiting, when nothing can send it."""
        count = self.waiting()
        if not count:
            return
        many = f"{count} or more" if count >= WAITING_COUNTED else str(count)
        line = f"{many} emails waiting in the outbox, not sent: no [outgoing] table"
        if json_output:
            print(json.dumps({"event": "warning", "waiting": count, "reason": line}), flush=True)
        else:
            print(line)
