"""The conventional pipeline that helpdesks commonly write, for bench_pipeline's (b).

``policy.default`` parse, ``get_body``/``get_content`` for the text, HTML and
attachments, ``bleach.clean`` of the HTML, ``html2text`` when there is no text part,
``email-reply-parser`` for the new text, a lookup of the Message-ID and of an ``[ID:n]``
tag, and an INSERT of the ticket (or follow-up) and its attachments with a commit per
email, in SQLite with WAL and ``synchronous=NORMAL``. Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import email
import functools
import gc
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from email import policy
from pathlib import Path

from timing import Timing

_CONVENTIONAL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tickets (
        id INTEGER PRIMARY KEY, message_id TEXT, sender TEXT, sender_name TEXT,
        subject TEXT, body TEXT, new_text TEXT, html TEXT, created_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS tickets_by_message_id ON tickets (message_id)",
    """CREATE TABLE IF NOT EXISTS followups (
        id INTEGER PRIMARY KEY, ticket_id INTEGER, message_id TEXT, sender TEXT,
        body TEXT, new_text TEXT, html TEXT, created_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS followups_by_message_id ON followups (message_id)",
    """CREATE TABLE IF NOT EXISTS attachments (
        id INTEGER PRIMARY KEY, ticket_id INTEGER, followup_id INTEGER, filename TEXT,
        content_type TEXT, payload BLOB)""",
)
_TAG = re.compile(r"\[ID:(\d+)\]")
# The allow-list helpdesks typically give bleach to keep an email's formatting.
_BLEACH_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "div", "em", "font", "h1", "h2", "h3",
        "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "table", "tbody", "td",
        "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
_BLEACH_ATTRIBUTES = {
    # "style" is left out: bleach would need its optional CSS sanitizer (tinycss2).
    "*": ["class", "dir", "align"],
    "a": ["href", "title"],
    "img": ["src", "alt", "width", "height"],
    "td": ["colspan", "rowspan"],
    "font": ["color", "face", "size"],
}


class Conventional:
    """The conventional pipeline, one email at a time into its own SQLite file.

    Args:
        path: The database file.
    """

    def __init__(self, path: Path) -> None:
        import bleach
        import html2text
        from email_reply_parser import EmailReplyParser

        self._clean = functools.partial(
            bleach.clean, tags=_BLEACH_TAGS, attributes=_BLEACH_ATTRIBUTES, strip=True
        )
        converter = html2text.HTML2Text()
        converter.ignore_images = True
        converter.body_width = 0
        self._html2text = converter.handle
        self._reply = EmailReplyParser.parse_reply
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        for statement in _CONVENTIONAL_SCHEMA:
            self.db.execute(statement)

    def handle(self, raw: bytes) -> str:
        """Parse, clean, store and commit one email; returns ``created`` or ``updated``."""
        message = email.message_from_bytes(raw, policy=policy.default)
        sender_header = message["From"]
        sender = sender_header.addresses[0] if sender_header and sender_header.addresses else None
        subject = str(message["Subject"] or "")
        message_id = str(message["Message-ID"] or "").strip()
        plain = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        html = html_part.get_content() if html_part is not None else None
        if plain is not None:
            text = plain.get_content()
        elif html is not None:
            text = self._html2text(html)
        else:
            text = ""
        cleaned = self._clean(html) if html is not None else None
        new_text = self._reply(text)
        files = [
            (part.get_filename() or "", part.get_content_type(), part.get_content())
            for part in message.iter_attachments()
        ]
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        db = self.db
        db.execute("BEGIN")
        try:
            if db.execute(
                "SELECT 1 FROM tickets WHERE message_id = ? UNION ALL "
                "SELECT 1 FROM followups WHERE message_id = ?",
                (message_id, message_id),
            ).fetchone():
                db.execute("ROLLBACK")
                return "duplicate"
            tag = _TAG.search(subject)
            ticket = None
            if tag is not None:
                ticket = db.execute(
                    "SELECT id FROM tickets WHERE id = ?", (int(tag.group(1)),)
                ).fetchone()
            address = sender.addr_spec.lower() if sender else ""
            if ticket is not None:
                cursor = db.execute(
                    "INSERT INTO followups (ticket_id, message_id, sender, body, new_text, html, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ticket[0], message_id, address, text, new_text, cleaned, now),
                )
                owner = (None, cursor.lastrowid)
                outcome = "updated"
            else:
                cursor = db.execute(
                    "INSERT INTO tickets (message_id, sender, sender_name, subject, body, "
                    "new_text, html, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message_id,
                        address,
                        sender.display_name if sender else "",
                        subject,
                        text,
                        new_text,
                        cleaned,
                        now,
                    ),
                )
                owner = (cursor.lastrowid, None)
                outcome = "created"
            db.executemany(
                "INSERT INTO attachments (ticket_id, followup_id, filename, content_type, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                [(*owner, name, content_type, payload) for name, content_type, payload in files],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcome

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def run_conventional(messages: Sequence[bytes], directory: Path) -> tuple[Timing, Counter[str]]:
    """The time of the conventional pipeline over ``messages`` into a fresh database."""
    pipeline = Conventional(directory / "conventional.db")
    outcomes: Counter[str] = Counter()
    gc.collect()
    timing = Timing()
    for raw in messages:
        try:
            outcomes[pipeline.handle(raw)] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported as a disagreement
            outcomes[f"error:{type(exc).__name__}"] += 1
    timing.stop()
    pipeline.close()
    return timing, outcomes
