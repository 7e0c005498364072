"""The Django repository's tickets and actions (the ``TicketStore`` role, and ``Browsing``'s)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from halomail.contrib.django import models as m
from halomail.contrib.django._base import DjangoBase, aware, opt_aware, payload
from halomail.errors import RepositoryError
from halomail.tickets._common import check_page
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

__all__ = ["TicketsPart", "ticket_of"]


def ticket_of(row: m.Ticket) -> Ticket:
    """The halomail ticket a row holds."""
    return Ticket(
        id=row.pk,
        summary=row.summary,
        details=row.details,
        ticket_type=row.ticket_type,
        user_email=row.user_email,
        status=TicketStatus(row.status),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        user_name=row.user_name,
        mailbox=row.mailbox,
        record=RecordKind(row.record),
        customer=row.customer,
        cc=tuple(row.cc),
        priority=row.priority,
        category=row.category,
        team=row.team,
        agent=row.agent,
        asset_id=row.asset_id,
        custom_fields=dict(row.custom_fields),
        closed_at=opt_aware(row.closed_at),
        alert_key=row.alert_key,
        impact=row.impact,
        urgency=row.urgency,
        site=row.site,
        asset_ids=tuple(row.asset_ids),
    )


def _attachment(row: m.Attachment) -> StoredAttachment:
    return StoredAttachment(
        filename=row.filename,
        storage_name=row.storage_name,
        content_type=row.content_type,
        size=row.size,
        content_id=row.content_id,
        inline=row.inline,
        payload=payload(row.payload),
    )


class TicketsPart(DjangoBase):
    """Tickets and their actions, attachments in rows of their own."""

    def _tickets(self) -> Any:
        return m.Ticket.objects.using(self._using)

    def get_ticket(self, ticket_id: int) -> Ticket | None:
        """The ticket with this id, or ``None``."""
        with self._reading():
            row = self._tickets().filter(pk=ticket_id).first()
        return None if row is None else ticket_of(row)

    def find_ticket_by_message_ids(self, message_ids: Sequence[str]) -> Ticket | None:
        """The ticket that one of these Message-IDs belongs to (through an action or
        an outgoing email), or ``None``; the first id that matches wins."""
        with self._reading():
            for message_id in dict.fromkeys(message_ids):
                ticket_id = self._ticket_id_of(message_id)
                if ticket_id is None:
                    continue
                row = self._tickets().filter(pk=ticket_id).first()
                if row is not None:
                    return ticket_of(row)
        return None

    def _ticket_id_of(self, message_id: str) -> int | None:
        """The ticket of an action carrying the Message-ID, else of an outgoing email."""
        action = (
            m.Action.objects.using(self._using)
            .filter(message_id=message_id)
            .order_by("id")
            .values_list("ticket_id", flat=True)
            .first()
        )
        if action is not None:
            return int(action)
        outgoing = (
            m.OutboxMail.objects.using(self._using)
            .filter(message_id=message_id)
            .values_list("ticket_id", flat=True)
            .first()
        )
        return None if outgoing is None else int(outgoing)

    def create_ticket(self, new: NewTicket) -> Ticket:
        """Create a ticket in ``new.status`` (``new`` by default) and return it with its id."""
        now = self._now()
        closed_at = now if new.status is TicketStatus.CLOSED else None
        with self._writing():
            row = self._tickets().create(
                summary=new.summary,
                details=new.details,
                ticket_type=new.ticket_type,
                user_email=new.user_email,
                user_name=new.user_name,
                mailbox=new.mailbox,
                record=new.record.value,
                customer=new.customer,
                cc=list(new.cc),
                priority=new.priority,
                category=new.category,
                team=new.team,
                agent=new.agent,
                asset_id=new.asset_id,
                asset_ids=list(new.asset_ids),
                custom_fields=dict(new.custom_fields),
                status=new.status.value,
                alert_key=new.alert_key,
                impact=new.impact,
                urgency=new.urgency,
                site=new.site,
                created_at=now,
                updated_at=now,
                closed_at=closed_at,
            )
        return Ticket.from_new(new, id=row.pk, created_at=now, closed_at=closed_at)

    def add_action(self, new: NewAction) -> Action:
        """Add an action to a ticket, and touch the ticket's ``updated_at``.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        now = self._now()
        with self._writing():
            # The UPDATE both touches the ticket and proves it exists.
            if self._tickets().filter(pk=new.ticket_id).update(updated_at=now) == 0:
                raise RepositoryError(f"ticket {new.ticket_id} does not exist")
            action = m.Action.objects.using(self._using).create(
                ticket_id=new.ticket_id,
                kind=new.kind.value,
                body=new.body,
                from_address=new.from_address,
                public=new.public,
                message_id=new.message_id,
                created_at=now,
            )
            m.Attachment.objects.using(self._using).bulk_create(
                [
                    m.Attachment(
                        action=action,
                        position=position,
                        filename=item.filename,
                        storage_name=item.storage_name,
                        content_type=item.content_type,
                        size=item.size,
                        content_id=item.content_id,
                        inline=item.inline,
                        payload=item.payload,
                    )
                    for position, item in enumerate(new.attachments)
                ]
            )
        return Action(
            id=action.pk,
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
        now = self._now()
        with self._writing():
            row = self._tickets().select_for_update().filter(pk=ticket_id).first()
            if row is None:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row.status = status.value
            row.updated_at = now
            if status is TicketStatus.CLOSED:
                row.closed_at = row.closed_at or now
            else:
                row.closed_at = None
            row.save(using=self._using, update_fields=["status", "updated_at", "closed_at"])
        return ticket_of(row)

    def list_tickets(self, *, limit: int = 100, offset: int = 0) -> Sequence[Ticket]:
        """Tickets, newest first."""
        check_page(limit, offset)
        with self._reading():
            rows = list(self._tickets().order_by("-id")[offset : offset + limit])
        return [ticket_of(row) for row in rows]

    def list_actions(self, ticket_id: int) -> Sequence[Action]:
        """A ticket's actions, oldest first (empty for an unknown ticket)."""
        with self._reading(snapshot=True):
            rows = list(
                m.Action.objects.using(self._using).filter(ticket_id=ticket_id).order_by("id")
            )
            files: dict[int, list[StoredAttachment]] = {}
            if rows:
                attachments = m.Attachment.objects.using(self._using).filter(
                    action__ticket_id=ticket_id
                )
                for item in attachments.order_by("action_id", "position"):
                    files.setdefault(item.action_id, []).append(_attachment(item))
        return [
            Action(
                id=row.pk,
                ticket_id=row.ticket_id,
                kind=ActionKind(row.kind),
                body=row.body,
                created_at=aware(row.created_at),
                from_address=row.from_address,
                public=row.public,
                message_id=row.message_id,
                attachments=tuple(files.get(row.pk, ())),
            )
            for row in rows
        ]

    def find_open_ticket(self, *, alert_key: str) -> Ticket | None:
        """The newest ticket with this alert key that is not closed, or ``None``."""
        with self._reading():
            row = (
                self._tickets()
                .filter(alert_key=alert_key)
                .exclude(status=TicketStatus.CLOSED.value)
                .order_by("-id")
                .first()
            )
        return None if row is None else ticket_of(row)

    def assign(self, ticket_id: int, *, agent: str | None, team: str | None) -> Ticket:
        """Set who works on a ticket: both values are written (``None`` clears one).

        Touches ``updated_at``; the status is left as it is.

        Raises:
            RepositoryError: When the ticket does not exist.
        """
        now = self._now()
        with self._writing():
            changed = (
                self._tickets().filter(pk=ticket_id).update(agent=agent, team=team, updated_at=now)
            )
            if changed == 0:
                raise RepositoryError(f"ticket {ticket_id} does not exist")
            row = self._tickets().get(pk=ticket_id)
        return ticket_of(row)
