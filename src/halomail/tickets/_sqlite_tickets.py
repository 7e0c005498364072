"""The SQL repositories' tickets and actions (the ``TicketStore`` role, and ``Browsing``'s).

The statements run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from halomail.errors import RepositoryError
from halomail.tickets._common import (
    check_page,
)
from halomail.tickets._sql import (
    SQLBase,
    _json_ints,
    _json_list,
    _json_map,
    _mapping,
    _opt_time,
    _parse_opt_time,
    _parse_time,
    _time,
    _tuple,
)
from halomail.tickets.models import (
    Action,
    ActionKind,
    NewAction,
    NewTicket,
    RecordKind,
    StoredAttachment,
    Ticket,
    TicketStatus,
)

__all__ = ["TicketsPart"]

# Column lists in the order the row readers below expect. Only these constants are
# formatted into statements (hence the S608 waivers), never a value.
_TICKET_COLUMNS = (
    "id, summary, details, ticket_type, user_email, status, created_at, updated_at, user_name, "
    "mailbox, record, customer, cc, priority, category, team, agent, asset_id, custom_fields, "
    "closed_at, alert_key, impact, urgency, site, asset_ids"
)
_SQL_GET_TICKET = f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE id = ?"  # noqa: S608
# Message-IDs asked in one statement: a References header holds a few thousand at most
# (the header limits), and 500 keeps far below SQLite's and PostgreSQL's parameter caps.
_IDS_PER_LOOKUP = 500


@functools.cache
def _sql_ticket_by_message_ids(count: int) -> str:
    """The ticket of the first of ``count`` Message-IDs that belongs to one, in one
    statement (one round trip to PostgreSQL, not one per id).

    Each id is matched as alone: its first action's ticket, else its outgoing email's,
    both through an index; the ids' positions keep "the first id that matches wins".
    """
    wanted = ", ".join(f"({place}, ?)" for place in range(count))
    columns = ", ".join(f"t.{column.strip()}" for column in _TICKET_COLUMNS.split(","))
    return (
        f"WITH wanted (place, message_id) AS (VALUES {wanted}) "  # noqa: S608
        f"SELECT {columns} FROM wanted w JOIN tickets t ON t.id = COALESCE("
        "(SELECT a.ticket_id FROM actions a WHERE a.message_id = w.message_id "
        "ORDER BY a.id LIMIT 1), "
        "(SELECT o.ticket_id FROM outbox o WHERE o.message_id = w.message_id)) "
        "ORDER BY w.place LIMIT 1"
    )


# The details and an action's body may be a whole email's text: see _bound_text.
_SQL_INSERT_TICKET = (
    "INSERT INTO tickets (summary, details, ticket_type, user_email, status, created_at, "
    "updated_at, user_name, mailbox, record, customer, cc, priority, category, team, agent, "
    "asset_id, custom_fields, alert_key, closed_at, impact, urgency, site, asset_ids) "
    "VALUES (?, CAST(? AS TEXT), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "RETURNING id"
)
# The literal 'closed' (not a parameter) lets SQLite use the partial index of open
# tickets with a key.
_SQL_OPEN_TICKET_BY_ALERT_KEY = (
    f"SELECT {_TICKET_COLUMNS} FROM tickets "  # noqa: S608
    "WHERE alert_key = ? AND status <> 'closed' ORDER BY id DESC LIMIT 1"
)
_SQL_ASSIGN = "UPDATE tickets SET agent = ?, team = ?, updated_at = ? WHERE id = ?"
_SQL_TOUCH_TICKET = "UPDATE tickets SET updated_at = ? WHERE id = ?"
_SQL_SET_STATUS = (
    "UPDATE tickets SET status = :status, updated_at = :now, "
    "closed_at = CASE WHEN :status = 'closed' THEN COALESCE(closed_at, :now) ELSE NULL END "
    "WHERE id = :id"
)
_SQL_LIST_TICKETS = (
    f"SELECT {_TICKET_COLUMNS} FROM tickets "  # noqa: S608
    "ORDER BY id DESC LIMIT ? OFFSET ?"
)

_SQL_INSERT_ACTION = (
    "INSERT INTO actions (ticket_id, kind, body, from_address, public, message_id, created_at) "
    "VALUES (?, ?, CAST(? AS TEXT), ?, ?, ?, ?) RETURNING id"
)

#: Characters of a long text encoded at a time by :func:`_bound_text`.
_ENCODE_CHUNK = 1 << 16


def _bound_text(value: str) -> str | bytearray:
    """``value`` as it is bound: itself, or for a long text beyond ASCII, its UTF-8 bytes
    (which the statement casts back to TEXT, the bytes unchanged).

    The sqlite3 module binds a str beyond ASCII through its UTF-8 form, which it keeps
    on the str for the str's life, after an encoder buffer of up to three bytes a
    character: for a 25 MB email's text, several times the body on top of the text.
    Encoded here, a chunk at a time into a buffer of the exact size, the text costs its
    UTF-8 size once, while the statement runs. An ASCII str is bound as it is stored.
    """
    if len(value) <= _ENCODE_CHUNK or value.isascii():
        return value
    chunks = range(0, len(value), _ENCODE_CHUNK)
    size = sum(len(value[start : start + _ENCODE_CHUNK].encode()) for start in chunks)
    encoded = bytearray(size)
    position = 0
    for start in chunks:
        chunk = value[start : start + _ENCODE_CHUNK].encode()
        encoded[position : position + len(chunk)] = chunk
        position += len(chunk)
    return encoded


_SQL_INSERT_ATTACHMENT = (
    "INSERT INTO attachments (action_id, position, filename, storage_name, content_type, size, "
    "content_id, inline, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position"
)
_SQL_LIST_ACTIONS = (
    "SELECT id, ticket_id, kind, body, created_at, from_address, public, message_id "
    "FROM actions WHERE ticket_id = ? ORDER BY id"
)
_SQL_LIST_ATTACHMENTS = (
    "SELECT t.action_id, t.filename, t.storage_name, t.content_type, t.size, t.content_id, "
    "t.inline, t.payload FROM actions a JOIN attachments t ON t.action_id = a.id "
    # Ordered by a.id (the index's order), not t.action_id: the same order, but
    # this way SQLite streams the rows instead of copying every BLOB into a sort.
    "WHERE a.ticket_id = ? ORDER BY a.id, t.position"
)


def _ticket(row: Sequence[Any]) -> Ticket:
    return Ticket(
        id=row[0],
        summary=row[1],
        details=row[2],
        ticket_type=row[3],
        user_email=row[4],
        status=TicketStatus(row[5]),
        created_at=_parse_time(row[6]),
        updated_at=_parse_time(row[7]),
        user_name=row[8],
        mailbox=row[9],
        record=RecordKind(row[10]),
        customer=row[11],
        cc=_tuple(row[12]),
        priority=row[13],
        category=row[14],
        team=row[15],
        agent=row[16],
        asset_id=row[17],
        custom_fields=_mapping(row[18]),
        closed_at=_parse_opt_time(row[19]),
        alert_key=row[20],
        impact=row[21],
        urgency=row[22],
        site=row[23],
        asset_ids=json.loads(row[24]),
    )


class TicketsPart(SQLBase):
    """Tickets and their actions, attachments as BLOBs."""

    # -- tickets ---------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return None if row is None else _ticket(row)

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket that one of these Message-IDs belongs to (through an action or
        an outgoing email), or ``None``; the first id that matches wins."""
        wanted = list(dict.fromkeys(message_ids))  # a repeated id is asked once
        with self._reading(snapshot=True) as connection:
            for start in range(0, len(wanted), _IDS_PER_LOOKUP):
                chunk = wanted[start : start + _IDS_PER_LOOKUP]
                row = connection.execute(_sql_ticket_by_message_ids(len(chunk)), chunk).fetchone()
                if row is not None:
                    return _ticket(row)
        return None

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket in ``new.status`` (``new`` by default) and return it with its id."""
        now = self._now()
        closed_at = now if new.status is TicketStatus.CLOSED else None
        custom_fields = dict(new.custom_fields)
        stamp = _time(now)
        with self._writing() as connection:
            ticket_id = self._inserted_id(
                connection,
                _SQL_INSERT_TICKET,
                (
                    new.summary,
                    _bound_text(new.details),
                    new.ticket_type,
                    new.user_email,
                    new.status.value,
                    stamp,
                    stamp,
                    new.user_name,
                    new.mailbox,
                    new.record.value,
                    new.customer,
                    _json_list(new.cc),
                    new.priority,
                    new.category,
                    new.team,
                    new.agent,
                    new.asset_id,
                    _json_map(custom_fields),
                    new.alert_key,
                    _opt_time(closed_at),
                    new.impact,
                    new.urgency,
                    new.site,
                    _json_ints(new.asset_ids),
                ),
            )
            self._note_fresh_ticket(ticket_id, stamp)
        return Ticket.from_new(new, id=ticket_id, created_at=now, closed_at=closed_at)

    def add_action(self, new: NewAction) -> Action:
        """Add an action to a ticket, and touch the ticket's ``updated_at``.

        Attachments are written as BLOBs in the same transaction.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        with self._writing() as connection:
            # A ticket this transaction has just created exists and needs no touch: its
            # first action is stamped with its creation time (one instant, one email).
            fresh = self._fresh_stamp(new.ticket_id)
            now = self._now() if fresh is None else _parse_time(fresh)
            stamp = fresh or _time(now)
            # The UPDATE both touches the ticket and proves it exists.
            touched = (
                fresh is not None
                or connection.execute(_SQL_TOUCH_TICKET, (stamp, new.ticket_id)).rowcount
            )
            if not touched:
                raise RepositoryError(f"ticket {new.ticket_id} does not exist")
            action_id = self._inserted_id(
                connection,
                _SQL_INSERT_ACTION,
                (
                    new.ticket_id,
                    new.kind.value,
                    _bound_text(new.body),
                    new.from_address,
                    int(new.public),
                    new.message_id,
                    stamp,
                ),
            )
            for position, item in enumerate(new.attachments):
                self._insert_with_payload(
                    connection,
                    _SQL_INSERT_ATTACHMENT,
                    "attachments",
                    (
                        action_id,
                        position,
                        item.filename,
                        item.storage_name,
                        item.content_type,
                        item.size,
                        item.content_id,
                        int(item.inline),
                    ),
                    item.payload,
                )
        return Action(
            id=action_id,
            ticket_id=new.ticket_id,
            kind=new.kind,
            body=new.body,
            created_at=now,
            from_address=new.from_address,
            public=new.public,
            message_id=new.message_id,
            attachments=tuple(new.attachments),
        )

    def set_status(self, ticket_id: int, status: TicketStatus) -> Ticket:
        """Change a ticket's status (``closed`` sets ``closed_at``; reopening clears it).

        Closing a ticket that is already closed keeps its first ``closed_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        stamp = _time(self._now())
        with self._writing() as connection:
            changed = connection.execute(
                _SQL_SET_STATUS, {"status": status.value, "now": stamp, "id": ticket_id}
            )
            if changed.rowcount == 0:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return _ticket(row)

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""
        check_page(limit, offset)
        with self._reading() as connection:
            rows = connection.execute(_SQL_LIST_TICKETS, (limit, offset)).fetchall()
        return [_ticket(row) for row in rows]

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first (empty for an unknown ticket)."""
        with self._reading(snapshot=True) as connection:
            rows = connection.execute(_SQL_LIST_ACTIONS, (ticket_id,)).fetchall()
            files: dict[int, list[StoredAttachment]] = {}
            if rows:
                for row in connection.execute(_SQL_LIST_ATTACHMENTS, (ticket_id,)):
                    files.setdefault(row[0], []).append(
                        StoredAttachment(
                            filename=row[1],
                            storage_name=row[2],
                            content_type=row[3],
                            size=row[4],
                            content_id=row[5],
                            inline=bool(row[6]),
                            payload=row[7],
                        )
                    )
        return [
            Action(
                id=row[0],
                ticket_id=row[1],
                kind=ActionKind(row[2]),
                body=row[3],
                created_at=_parse_time(row[4]),
                from_address=row[5],
                public=bool(row[6]),
                message_id=row[7],
                attachments=tuple(files.get(row[0], ())),
            )
            for row in rows
        ]

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(_SQL_OPEN_TICKET_BY_ALERT_KEY, (alert_key,)).fetchone()
        return None if row is None else _ticket(row)

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket: both values are written (``None`` clears one).

        Touches ``updated_at``; the status is left as it is.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        stamp = _time(self._now())
        with self._writing() as connection:
            if connection.execute(_SQL_ASSIGN, (agent, team, stamp, ticket_id)).rowcount == 0:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row = connection.execute(_SQL_GET_TICKET, (ticket_id,)).fetchone()
        return _ticket(row)
