"""Process a Maildir into the helpdesk's database, then list the tickets.

Run (from the examples folder): ``python -m sqlalchemy_fastapi MAILDIR DATABASE``.
Acknowledgements are queued in the outbox; the web app's host sends them
(``processor.send_outbox()`` with an ``SmtpTransport``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .desk import make_processor, open_repository


def main(maildir: Path, database: Path) -> None:
    """One pass over the Maildir: each email becomes a ticket or an update, exactly once."""
    repository = open_repository(database)
    try:
        with make_processor(repository, maildir) as processor:
            report = processor.process_mailbox(processor.mailboxes[0])
        print(f"{len(report.outcomes)} emails processed")
        for ticket in repository.list_tickets():
            print(f"ticket {ticket.id}: {ticket.summary} ({ticket.user_email})")
    finally:
        repository.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m sqlalchemy_fastapi MAILDIR DATABASE")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
