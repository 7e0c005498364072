"""A helpdesk on a real Maildir and a real SQLite file, with a clock the test moves.

Shared by the tests of issue 15's Message-IDs and delivery reports: mail is delivered
into the Maildir's ``new/`` as a mail server would, ``run_once`` processes it, and the
tests read what a user would: the tickets, their actions, the outbox.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import attrs

from halomail.backends.local import MaildirConnector
from halomail.backends.memory import MemoryTransport
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import OutboxMail
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN

HELPDESK = "support@helpdesk.example"
_deliveries = itertools.count(1)


class Clock:
    """A clock the test moves by hand: the processor and the repository read it."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        """The current time."""
        return self.now


class Desk:
    """One mailbox ("Support", a Maildir) processed into one SQLite file.

    Args:
        root: A fresh folder for the Maildir and the database.
        **settings: ProcessorSettings to change (``unmatched_bounces`` …).
    """

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.clock = Clock()
        self.maildir = root / "Maildir"
        self.repository = SQLiteTicketRepository(root / "halomail.db", clock=self.clock)
        self.transport = MemoryTransport()
        self.settings = attrs.evolve(
            ProcessorSettings(
                loop_token=LOOP_TOKEN,
                domain="helpdesk.example",
                default_sender=SenderIdentity(HELPDESK, "Support"),
            ),
            **settings,
        )
        self.processor = self._processor()

    def _processor(self) -> MailProcessor:
        connector = MaildirConnector("Support", self.maildir, create=True)
        return MailProcessor(
            self.repository,
            [Mailbox(connector)],
            self.settings,
            transport=self.transport,
            clock=self.clock,
        )

    def deliver(self, *raws: bytes) -> None:
        """Put each email into ``new/`` as a delivery agent would (a re-fetch, too)."""
        for raw in raws:
            name = f"{1_700_000_000 + next(_deliveries)}.M{next(_deliveries)}P1.mx"
            (self.maildir / "new" / name).write_bytes(raw)

    def run(self) -> list[tuple[str, str | None, int | None]]:
        """One ``run_once``: each email's outcome, reason and ticket."""
        report = self.processor.run_once()
        return [
            (o.outcome.value, o.reason.value if o.reason else None, o.ticket_id)
            for o in report.outcomes
        ]

    def sent_to(self) -> list[str]:
        """Who each mail the transport sent went to, in order."""
        return [",".join(mail.recipients) for mail in self.transport.sent]

    def outbox(self) -> list[OutboxMail]:
        """Every mail in the outbox."""
        return list(self.repository.list_outgoing())

    def close(self) -> None:
        """Close the database."""
        self.repository.close()
