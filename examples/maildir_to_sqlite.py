"""A Maildir turned into tickets in SQLite, replies written as .eml files.

Run: python examples/maildir_to_sqlite.py [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from halomail import (
    EmlFileTransport,
    Mailbox,
    MaildirConnector,
    MailProcessor,
    ProcessorSettings,
    SenderIdentity,
    SQLiteTicketRepository,
)


def deliver(inbox: Path, name: str, subject: str, body: str) -> None:
    """Drop an email into the Maildir as a mail server would."""
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    (inbox / "new" / name).write_text(
        f"From: Bob <bob@customer.example>\nTo: support@helpdesk.example\n"
        f"Subject: {subject}\nMessage-ID: <{name}@customer.example>\n\n{body}\n",
        encoding="utf-8",
    )


def main(workdir: Path) -> None:
    """Process the Maildir twice: the second pass finds nothing new."""
    inbox = workdir / "inbox"
    deliver(inbox, "1700000000.a", "Laptop battery swollen", "The battery bulges.")
    deliver(inbox, "1700000001.b", "New starter on Monday", "Please set up an account.")
    with SQLiteTicketRepository(workdir / "halomail.db") as repository:
        processor = MailProcessor(
            repository,
            [Mailbox(MaildirConnector("Support", inbox), ticket_type="Incident")],
            ProcessorSettings(
                loop_token="example-token",
                domain="helpdesk.example",
                default_sender=SenderIdentity("support@helpdesk.example", "Support"),
            ),
            transport=EmlFileTransport(workdir / "outbox"),
        )
        for run in (1, 2):
            report = processor.run_once()
            print(f"run {run}: {len(report.outcomes)} emails, {report.sent.sent} sent")
        for ticket in repository.list_tickets():
            print(f"ticket {ticket.id}: {ticket.summary} ({ticket.user_email})")
    print(f"{len(list((workdir / 'outbox').glob('*.eml')))} replies in {workdir / 'outbox'}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
