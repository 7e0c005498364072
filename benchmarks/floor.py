"""(F) the floor of the whole pipeline: every email parsed and stored durably, nothing else.

#18 names the floor of processing: parsing, plus one durable commit per email. (F) does
exactly that: ``parse_email``, the email's text read (its body decoded, as a ticket's
details need it), and one row per email (Message-ID, sender, subject, text) written to
SQLite with the repository's settings (WAL, ``synchronous = NORMAL``), ``batch_size``
emails to a transaction as (C) commits them. What (C) spends beyond (F) is the
helpdesk's own work: classification, threading, rules, the ticket's rows and the
acknowledgement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from halomail.inbound.parse import parse_email

__all__ = ["Floor"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS emails (id INTEGER PRIMARY KEY, message_id TEXT, "
    "sender TEXT, subject TEXT NOT NULL, text TEXT NOT NULL)"
)
_INSERT = "INSERT INTO emails (message_id, sender, subject, text) VALUES (?, ?, ?, ?)"


class Floor:
    """A database for (F), made at construction (outside what is measured).

    Args:
        path: The database file to create.
        batch_size: Emails per transaction, as (C) commits them.
    """

    def __init__(self, path: Path, batch_size: int) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode = WAL")
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute(_SCHEMA)
        self._batch_size = batch_size

    def run(self, messages: Sequence[bytes]) -> int:
        """Parse and store every email, committing each batch; returns the rows written."""
        execute = self._connection.execute
        size = self._batch_size
        written = 0
        for start in range(0, len(messages), size):
            execute("BEGIN IMMEDIATE")
            for raw in messages[start : start + size]:
                email = parse_email(raw)
                sender = email.sender.normalized if email.sender is not None else None
                written += execute(
                    _INSERT, (email.message_id, sender, email.subject, email.text)
                ).rowcount
            execute("COMMIT")
        return written

    def close(self) -> None:
        """Close the database (its last checkpoint writes the pages into the file)."""
        self._connection.close()
