"""The SQLite schema, versioned with ``PRAGMA user_version`` and migrated forward at open.

Migrations are append-only: migration *n* takes a database from version *n - 1* to
version *n*. A released migration is never edited (a test pins a digest of each),
because databases in the field were created by it; a change to the schema is a new
migration at the end of :data:`MIGRATIONS`. Each migration runs in one
``BEGIN IMMEDIATE`` transaction together with the version bump, so a crash or an
error part-way leaves the database at the previous version, whole.

Layout notes (why the tables look the way they do):

- Times are ISO-8601 text in UTC with microseconds and a ``+00:00`` offset, always
  the same width, so ``<=`` / ``>=`` on the text orders them like the instants.
- Tuples and mappings (``cc``, ``custom_fields``, recipients, …) are JSON text.
- Attachment and quarantine bytes are BLOBs in their own rows, written in the
  same transaction as the action or entry they belong to.
- Lookups the processor makes for every email have an index: the dedupe key
  (primary key), Message-ID → ticket through actions and the outbox, the pending
  outbox in id order, recipients by address and time (the acknowledgement
  throttle), users by address, customers by domain, assets by tag and by field,
  open tickets by alert key, stored files by owner, service statuses by service
  and time.
- A pending outgoing email carries its claim (``claimed_by``, ``claimed_until``);
  leases are rows of their own (``leases``), taken with a conditional upsert.
- Emails whose processing started and has not finished have a row in ``attempts``
  (deleted when the outcome commits), so an email that kills the process is known.
- Files kept without a ticket hold their bytes in their own rows of
  ``stored_files`` (one row per file, the BLOB beside its name and type).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from halomail.errors import RepositoryError
from halomail.tickets._common import field_key, fold

__all__ = [
    "MIGRATIONS",
    "V6_STATEMENTS",
    "Migration",
    "migrate",
    "refuse_newer",
    "rekey_asset_fields",
    "schema_version",
]

log = logging.getLogger(__name__)


@attrs.frozen
class Migration:
    """One step of the schema.

    Args:
        description: What the step does, for the log.
        statements: SQL statements run in order, in one transaction. No values are
            ever formatted into them.
        rewrite: Rewrites rows after the statements, in the same transaction, when
            the new form of a value is computed in Python (SQL's ``lower()`` is not
            Python's case folding): called with the connection and the driver's
            placeholder (``?`` or ``%s``).
    """

    description: str
    statements: tuple[str, ...]
    rewrite: Callable[[Any, str], None] | None = attrs.field(default=None, eq=False)

    @property
    def digest(self) -> str:
        """A SHA-256 of the statements: pinned by a test, so a released step is never edited."""
        return hashlib.sha256("\x00".join(self.statements).encode("utf-8")).hexdigest()


_V1 = Migration(
    "tickets, actions, attachments, people, assets, dedupe, quarantine, outbox, state",
    (
        """CREATE TABLE tickets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            summary TEXT NOT NULL,
            details TEXT NOT NULL,
            ticket_type TEXT NOT NULL,
            user_email TEXT NOT NULL,
            user_name TEXT NOT NULL DEFAULT '',
            mailbox TEXT NOT NULL DEFAULT '',
            record TEXT NOT NULL,
            customer TEXT,
            cc TEXT NOT NULL DEFAULT '[]',
            priority TEXT,
            category TEXT,
            team TEXT,
            agent TEXT,
            asset_id INTEGER,
            custom_fields TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            closed_at TEXT
        )""",
        """CREATE TABLE actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ticket_id INTEGER NOT NULL REFERENCES tickets (id),
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            from_address TEXT NOT NULL DEFAULT '',
            public INTEGER NOT NULL,
            message_id TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX actions_by_ticket ON actions (ticket_id, id)",
        "CREATE INDEX actions_by_message_id ON actions (message_id) WHERE message_id IS NOT NULL",
        """CREATE TABLE attachments (
            action_id INTEGER NOT NULL REFERENCES actions (id),
            position INTEGER NOT NULL,
            filename TEXT NOT NULL,
            storage_name TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            content_id TEXT,
            inline INTEGER NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (action_id, position)
        )""",
        """CREATE TABLE customers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            domains TEXT NOT NULL DEFAULT '[]',
            from_address TEXT
        )""",
        """CREATE TABLE customer_domains (
            domain TEXT NOT NULL,
            customer_id INTEGER NOT NULL REFERENCES customers (id),
            PRIMARY KEY (domain, customer_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            customer_id INTEGER REFERENCES customers (id),
            phone TEXT,
            mobile TEXT
        )""",
        """CREATE TABLE assets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tag TEXT NOT NULL,
            tag_key TEXT NOT NULL,
            fields TEXT NOT NULL DEFAULT '{}',
            customer_id INTEGER REFERENCES customers (id)
        )""",
        "CREATE INDEX assets_by_tag ON assets (tag_key, id)",
        """CREATE TABLE asset_fields (
            name TEXT NOT NULL,
            value_key TEXT NOT NULL,
            asset_id INTEGER NOT NULL REFERENCES assets (id),
            PRIMARY KEY (name, value_key, asset_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE dedupe (
            key TEXT NOT NULL PRIMARY KEY,
            sha256 TEXT NOT NULL,
            outcome TEXT NOT NULL,
            ticket_id INTEGER,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            mailbox TEXT NOT NULL,
            reason TEXT NOT NULL,
            raw BLOB NOT NULL,
            created_at TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            message_id TEXT,
            dedupe_key TEXT
        )""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL UNIQUE,
            recipients TEXT NOT NULL,
            subject TEXT NOT NULL,
            text TEXT NOT NULL,
            mailbox TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL,
            ticket_id INTEGER,
            html TEXT,
            in_reply_to TEXT,
            thread_references TEXT NOT NULL DEFAULT '[]',
            auto_submitted INTEGER NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            sent_at TEXT,
            created_at TEXT NOT NULL
        )""",
        # Only pending mail is in this index: the sender's scan stays as small as the
        # queue, however much mail was sent before.
        "CREATE INDEX outbox_pending ON outbox (id, next_attempt_at) WHERE status = 'pending'",
        """CREATE TABLE outbox_recipients (
            address TEXT NOT NULL,
            created_at TEXT NOT NULL,
            outbox_id INTEGER NOT NULL REFERENCES outbox (id),
            ticket_id INTEGER,
            PRIMARY KEY (address, created_at, outbox_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE state (
            key TEXT NOT NULL PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ),
)

_V2 = Migration(
    "alert keys on tickets, files kept without a ticket, monitored services' history",
    (
        "ALTER TABLE tickets ADD COLUMN alert_key TEXT",
        # Only open tickets that have a key are in this index: the lookup every alert
        # email makes stays as small as the problems open now, however many tickets
        # the same alert opened and closed over the years.
        "CREATE INDEX tickets_open_by_alert_key ON tickets (alert_key, id) "
        "WHERE alert_key IS NOT NULL AND status <> 'closed'",
        """CREATE TABLE stored_files (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            owner TEXT NOT NULL CHECK (owner IN ('customer', 'asset')),
            owner_id INTEGER NOT NULL,
            filename TEXT NOT NULL,
            storage_name TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            content_id TEXT,
            inline INTEGER NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            payload BLOB NOT NULL
        )""",
        "CREATE INDEX stored_files_by_owner ON stored_files (owner, owner_id, id)",
        """CREATE TABLE service_status (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            service TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'unknown')),
            at TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            ticket_id INTEGER,
            message_id TEXT
        )""",
        # The index also holds the rowid, so "newest first, ties in the order
        # recorded" (ORDER BY at DESC, id DESC) reads it backwards without a sort.
        "CREATE INDEX service_status_by_service ON service_status (service, at)",
    ),
)

_V3 = Migration(
    "a Reply-To address per customer",
    ("ALTER TABLE customers ADD COLUMN reply_address TEXT",),
)

_V4 = Migration(
    "claims on outgoing mail, and leases",
    (
        # Who is sending a pending email and until when: a second runner passes over
        # mail claimed until after its "now", and takes over a claim whose runner died.
        "ALTER TABLE outbox ADD COLUMN claimed_by TEXT",
        "ALTER TABLE outbox ADD COLUMN claimed_until TEXT",
        """CREATE TABLE leases (
            name TEXT NOT NULL PRIMARY KEY,
            owner TEXT NOT NULL,
            held_until TEXT NOT NULL
        )""",
    ),
)

_V5 = Migration(
    "attempts: emails whose processing started and has not finished",
    (
        # One row per email being processed: written (committed on its own) before the
        # email is parsed, deleted in the transaction that commits its outcome. A row
        # whose count reaches two means the email ended the process twice.
        """CREATE TABLE attempts (
            key TEXT NOT NULL PRIMARY KEY,
            count INTEGER NOT NULL,
            first_at TEXT NOT NULL,
            last_at TEXT NOT NULL
        )""",
    ),
)

# The statement in each driver's placeholder style (SQLite's ``?``, psycopg's ``%s``).
_INSERT_ASSET_FIELD = {
    "?": "INSERT INTO asset_fields (name, value_key, asset_id) VALUES (?, ?, ?) "
    "ON CONFLICT DO NOTHING",
    "%s": "INSERT INTO asset_fields (name, value_key, asset_id) VALUES (%s, %s, %s) "
    "ON CONFLICT DO NOTHING",
}


def rekey_asset_fields(connection: Any, placeholder: str) -> None:
    """Index every asset's fields again by :func:`~._common.field_key` of their names.

    Before version 6 a field was indexed by its name as written, so ``Serial Number``
    was not found as ``serial number`` or as the inventory's ``serial_number``. The
    index is rebuilt from each asset's fields, which hold the names as written.
    """
    cursor = connection.cursor()
    assets = cursor.execute("SELECT id, fields FROM assets ORDER BY id").fetchall()
    cursor.execute("DELETE FROM asset_fields")
    insert = _INSERT_ASSET_FIELD[placeholder]
    for asset_id, fields in assets:
        rows = [
            (field_key(name), fold(value), asset_id) for name, value in json.loads(fields).items()
        ]
        if rows:
            cursor.executemany(insert, rows)


#: Version 6 in both databases: the ticket fields rules map, and field names compared
#: ignoring case and separators.
V6_STATEMENTS: tuple[str, ...] = (
    "ALTER TABLE tickets ADD COLUMN impact TEXT",
    "ALTER TABLE tickets ADD COLUMN urgency TEXT",
    "ALTER TABLE tickets ADD COLUMN site TEXT",
    # Every linked asset, JSON; asset_id stays the first of them.
    "ALTER TABLE tickets ADD COLUMN asset_ids TEXT NOT NULL DEFAULT '[]'",
    "UPDATE tickets SET asset_ids = '[' || CAST(asset_id AS TEXT) || ']' "
    "WHERE asset_id IS NOT NULL",
)

_V6 = Migration(
    "impact, urgency, site and every linked asset on tickets; asset field names "
    "compared ignoring case and separators",
    V6_STATEMENTS,
    rewrite=rekey_asset_fields,
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""Every step of the schema, oldest first; the schema's version is the number applied."""


def schema_version(connection: sqlite3.Connection) -> int:
    """The version a database is at (``PRAGMA user_version``; 0 for a new file)."""
    row = connection.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring a database up to the newest version, one transaction per step.

    Args:
        connection: An open connection in autocommit mode (``isolation_level=None``)
            with no transaction open.
        migrations: The steps, oldest first (tests pass a longer list).

    Returns:
        The version the database is at afterwards.

    Raises:
        RepositoryError: When the database was written by a newer halomail (its
            version is higher than the steps known here).
        sqlite3.Error: When a step fails; that step is rolled back and the database
            stays at the version before it.
    """
    latest = len(migrations)
    current = schema_version(connection)
    refuse_newer(current, latest)
    while current < latest:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated
            # the same file while we waited for it.
            current = schema_version(connection)
            refuse_newer(current, latest)
            if current < latest:
                step = migrations[current]
                for statement in step.statements:
                    connection.execute(statement)
                if step.rewrite is not None:
                    step.rewrite(connection, "?")
                current += 1
                # PRAGMA takes no parameters; ``current`` is our own int, never input.
                connection.execute(f"PRAGMA user_version = {int(current)}")
                log.info("schema migrated to version %d: %s", current, step.description)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    return current


def refuse_newer(current: int, latest: int = len(MIGRATIONS)) -> None:
    """Refuse a database written by a newer halomail, whose schema this one cannot know.

    Args:
        current: The database's version.
        latest: The newest version this halomail knows.

    Raises:
        RepositoryError: When ``current`` is newer than ``latest``.
    """
    if current > latest:
        raise RepositoryError(
            f"the database is at schema version {current}, newer than this version of "
            f"halomail supports ({latest}); upgrade halomail to open it"
        )
