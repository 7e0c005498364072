"""Mail about tickets: acknowledgements, updates, closures, notes, assignments, SMS.

The processor queues the acknowledgement of each new ticket itself. Everything else
happens in the host application (an agent adds a note, closes a ticket, assigns it), so
the host asks the :class:`Notifier` for the mail that goes with it::

    notice = processor.notifier.ticket_email(42, MessageKind.TICKET_UPDATE,
                                             note="The part arrives on Monday.",
                                             agent="amy@helpdesk.example")

Every mail is rendered from the message group of the ticket's team, else its
mailbox's, else ``Default``; it carries the agent's signature for that mailbox; it is
queued in the repository's outbox in one transaction and sent by the next
:meth:`~halomail.runner.MailProcessor.send_outbox`. What stops a mail is never an
exception but a :class:`Notice` with the reason (throttled, no recipient, the template
failed), except a sending restriction, which is the caller's mistake and raises
:class:`~halomail.errors.SendingRestrictedError`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence

import attrs

from halomail._text import clean_text
from halomail.errors import SendingRestrictedError, TemplateError
from halomail.outbound.outbox import MessageIdFactory
from halomail.outbound.sms import SmsSettings, compose_sms, sms_address
from halomail.services import ServiceDefinition
from halomail.templates.render import MessageKind, RenderedMessage, TemplateRenderer, TemplateValues
from halomail.tickets.models import Action, NewAction, NewOutgoing, OutboxMail, Ticket, utcnow
from halomail.tickets.repository import TicketRepository
from halomail.tickets.staff import Agent, Team

__all__ = ["CHANNELS", "MailboxProfile", "Notice", "Notifier"]

log = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("email", "sms")
"""How a typed message reaches a service's subscribers: addresses by email, numbers by SMS."""

# A `$name` in a typed message; names are short, so the match is bounded and linear.
_VARIABLE = re.compile(r"\$([A-Za-z][A-Za-z0-9_]{0,39})")
_STATUS_SHOWN = {"ok": "OK", "failed": "Failed", "unknown": "Unknown"}

# Kinds that answer the customer's own mail automatically; the others are written by
# agents (no Auto-Submitted header: a person's reply may be answered).
_AUTOMATIC: frozenset[str] = frozenset(
    {MessageKind.NEW_TICKET_LOGGED, MessageKind.SERVICE_STATUS_CHANGED}
)


@attrs.frozen
class MailboxProfile:
    """What a mailbox's outgoing mail looks like, and who may send it.

    Args:
        name: The mailbox.
        message_group: Its message group.
        signature: The signature of mail sent from it.
        agent_signatures: Per agent (by email, lower-case), a signature replacing the
            agent's own and the mailbox's.
        allowed_teams: Only agents of these teams may send from it (empty: anyone).
        allowed_departments: Agents of these departments may send from it too (both
            empty: anyone).
        subject_tag: Its threading tag's opening (``[ID:``).
    """

    name: str
    message_group: str = "Default"
    signature: str = ""
    agent_signatures: Mapping[str, str] = attrs.field(factory=dict)
    allowed_teams: tuple[str, ...] = ()
    allowed_departments: tuple[str, ...] = ()
    subject_tag: str = "[ID:"

    def tag(self, ticket_id: int) -> str:
        """The threading tag of ``ticket_id``, e.g. ``[ID:42]``."""
        return f"{self.subject_tag}{ticket_id}]"

    def signature_for(self, agent: Agent | None) -> str:
        """The mailbox's override for ``agent``, else the agent's own, else the mailbox's."""
        if agent is None:
            return self.signature
        return self.agent_signatures.get(agent.email) or agent.signature or self.signature

    def check_may_send(self, agent: Agent | None) -> None:
        """Refuse an agent whose team and department may not send from this mailbox.

        Raises:
            SendingRestrictedError: The mailbox is restricted and the agent is in no
                allowed team and no allowed department.
        """
        restrictions = (*self.allowed_teams, *self.allowed_departments)
        if not restrictions or agent is None:
            return
        if _member(agent.team, self.allowed_teams) or _member(
            agent.department, self.allowed_departments
        ):
            return
        groups = [agent.team or "no team"] + ([agent.department] if agent.department else [])
        raise SendingRestrictedError(
            f"{agent.email} ({', '.join(groups)}) may not send from mailbox "
            f"{self.name!r}: only {', '.join(restrictions)} may"
        )


def _member(name: str | None, allowed: tuple[str, ...]) -> bool:
    """``name`` is one of ``allowed``, ignoring case."""
    return name is not None and name.casefold() in {item.casefold() for item in allowed}


@attrs.frozen
class Notice:
    """What became of a requested email.

    Args:
        queued: The queued mail, or ``None`` when nothing was queued.
        reason: Why nothing was queued (``throttled``, ``no-recipient``,
            ``undeliverable``, ``template-failed: …``), or ``None``.
        action: The action recorded with it (``ticket_email(action=…)``), or ``None``.
    """

    queued: OutboxMail | None
    reason: str | None = None
    action: Action | None = None

    @property
    def sent(self) -> bool:
        """True when the mail was queued for sending."""
        return self.queued is not None


class Notifier:
    """Renders and queues the mail that goes with a ticket event.

    Args:
        repository: Where tickets live and the outbox is.
        renderer: The message groups and their templates.
        mailboxes: The outgoing profile of each mailbox.
        ids: Makes our Message-IDs.
        agents: The agents, for names, teams and signatures.
        teams: The teams, for their message groups.
        ticket_url: The address of a ticket with ``{id}`` for its number, or empty.
        sms: The email-to-SMS provider, or ``None`` when SMS is not set up.
        throttle_count: At most this many mails to one address about one ticket …
        throttle_window: … in this window.
        clock: The current time (replaceable in tests).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        repository: TicketRepository,
        renderer: TemplateRenderer,
        mailboxes: Sequence[MailboxProfile],
        *,
        ids: MessageIdFactory,
        agents: Sequence[Agent] = (),
        teams: Sequence[Team] = (),
        ticket_url: str = "",
        sms: SmsSettings | None = None,
        throttle_count: int = 10,
        throttle_window: dt.timedelta = dt.timedelta(minutes=10),
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.renderer = renderer
        self._mailboxes = {m.name.casefold(): m for m in mailboxes}
        self._ids = ids
        self._agents = {a.email: a for a in agents}
        self._teams = {t.name.casefold(): t for t in teams}
        self._ticket_url = ticket_url
        self.sms_settings = sms
        self._throttle_count = throttle_count
        self._throttle_window = throttle_window
        self._clock = clock

    # -- what hosts call -------------------------------------------------------------

    def ticket_email(
        self,
        ticket_id: int,
        kind: MessageKind | str,
        *,
        note: str = "",
        agent: str | None = None,
        mailbox: str | None = None,
        to: Sequence[str] | None = None,
        action: NewAction | None = None,
    ) -> Notice:
        """Queue the email for a ticket event (update, closure, note, assignment …).

        With ``action``, the agent's reply (or note) is recorded in the same transaction
        as its email, so both are committed or neither: an exception from this call
        leaves no action and no mail. The action is recorded even when no mail is queued
        (a throttled address, no recipient, a template that failed): the agent's words
        are kept and :attr:`Notice.reason` says why nothing went. When ``action`` gives
        no ``message_id``, it takes the queued email's, so the customer's answer to that
        email threads onto the ticket even without the subject's tag.

        Args:
            ticket_id: The ticket.
            kind: Which template of the message group (:class:`MessageKind`).
            note: The action's text (``$actionnote``), shown as written: customer or
                agent text is a value, never template source.
            agent: The acting agent's email: their name, signature and team (for the
                sending restriction); ``None`` for mail the system sends.
            mailbox: The mailbox it is sent from; by default the ticket's.
            to: The recipients; by default the ticket's user.
            action: An action of this ticket to record with the email, or ``None``.

        Returns:
            The queued mail, or why nothing was queued; the recorded action.

        Raises:
            KeyError: No such ticket or mailbox.
            SendingRestrictedError: Neither the agent's team nor their department may send
                from the mailbox.
            ValueError: ``action`` is about another ticket.
        """
        kind = MessageKind(kind)
        if action is not None and action.ticket_id != ticket_id:
            raise ValueError(f"the action is about ticket {action.ticket_id}, not {ticket_id}")
        ticket, profile, acting = self._sending(ticket_id, mailbox, agent)
        recipients = tuple(dict.fromkeys(a.strip().lower() for a in (to or (ticket.user_email,))))
        recipients = tuple(a for a in recipients if a)
        if not recipients and action is None:
            return Notice(None, "no-recipient")  # nothing to write: no transaction
        with self.repository.transaction():
            if not recipients:
                return Notice(None, "no-recipient", self._record(action))
            for address in recipients:
                if self._throttled(address, ticket.id):
                    log.warning("ticket %s: mail to %s throttled", ticket.id, address)
                    return Notice(None, "throttled", self._record(action))
            new = self._compose(kind, ticket, profile, recipients, note=note, agent=acting)
            if isinstance(new, str):
                return Notice(None, new, self._record(action))
            recorded = self._record(action, message_id=new.message_id)
            queued = self.repository.enqueue_outgoing(new)
        log.info("ticket %s: %s queued to %s", ticket.id, kind.value, ",".join(recipients))
        return Notice(queued, action=recorded)

    def _record(self, action: NewAction | None, message_id: str | None = None) -> Action | None:
        """Add ``action`` in the open transaction, with ``message_id`` if it has none."""
        if action is None:
            return None
        if action.message_id is None and message_id is not None:
            action = attrs.evolve(action, message_id=message_id)
        return self.repository.add_action(action)

    def sms(
        self,
        ticket_id: int,
        *,
        text: str | None = None,
        phone: str | None = None,
        agent: str | None = None,
        mailbox: str | None = None,
    ) -> Notice:
        """Queue an SMS about a ticket (an action's "send SMS").

        Args:
            ticket_id: The ticket.
            text: What to say (``$actionnote`` of the SMS template); by default the
                template's own text about the ticket.
            phone: The number; by default the user's mobile, then their phone.
            agent: The acting agent's email (sending restrictions, ``$agentname``).
            mailbox: The mailbox it is sent for; by default the ticket's.

        Returns:
            The queued mail, or why nothing was queued (``sms-not-configured``,
            ``no-phone``, ``invalid-phone: …``, ``throttled``, ``template-failed: …``).

        Raises:
            KeyError: No such ticket or mailbox.
            SendingRestrictedError: The agent's team may not send from the mailbox.
        """
        ticket, profile, acting = self._sending(ticket_id, mailbox, agent)
        settings = self.sms_settings
        if settings is None:
            return Notice(None, "sms-not-configured")
        if phone is None:
            user = self.repository.find_user(ticket.user_email) if ticket.user_email else None
            phone = (user.mobile or user.phone) if user else None
        if not phone:
            return Notice(None, "no-phone")
        try:
            address = sms_address(phone, settings)
        except ValueError as exc:
            return Notice(None, f"invalid-phone: {exc}")
        with self.repository.transaction():
            if self._throttled(address, ticket.id):
                return Notice(None, "throttled")
            new = self._compose(
                MessageKind.SMS, ticket, profile, (address,), note=text or "", agent=acting
            )
            if isinstance(new, str):
                return Notice(None, new)
            queued = self.repository.enqueue_outgoing(self._as_sms(new, phone, settings))
        log.info("ticket %s: SMS queued to %s", ticket.id, address)
        return Notice(queued)

    def service_changed(
        self, service: ServiceDefinition, status: str, detail: str, ticket_id: int | None
    ) -> tuple[Notice, ...]:
        """Tell a service's subscribers that its status changed.

        Subscribers with an ``@`` get the Service Status Changed email; the others are
        phone numbers and get the SMS template (when SMS is set up).

        Args:
            service: The service.
            status: Its new status (``ok``, ``failed``, ``unknown``).
            detail: What the status email said (its subject).
            ticket_id: The ticket tracking it, if any.

        Returns:
            One notice per subscriber.
        """
        ticket = self.repository.get_ticket(ticket_id) if ticket_id else None
        shown = _STATUS_SHOWN.get(status, status)
        extra = {"servicename": service.name, "servicestatus": shown, "actionnote": detail}
        values = (
            TemplateValues.for_ticket(
                ticket, extra=extra, tag=self.profile(ticket.mailbox).tag(ticket.id)
            )
            if ticket is not None
            else TemplateValues(extra)
        )
        notices: list[Notice] = []
        for subscriber in service.subscribers:
            if "@" in subscriber:
                kind, to, phone = MessageKind.SERVICE_STATUS_CHANGED, subscriber, None
            elif self.sms_settings is None:
                notices.append(Notice(None, "sms-not-configured"))
                continue
            else:
                try:
                    to = sms_address(subscriber, self.sms_settings)
                except ValueError as exc:
                    notices.append(Notice(None, f"invalid-phone: {exc}"))
                    continue
                kind, phone = MessageKind.SMS, subscriber
            try:
                rendered = self.renderer.render(kind, values)
            except TemplateError as exc:
                log.error("service %s: the %s template failed: %s", service.name, kind.value, exc)
                notices.append(Notice(None, f"template-failed: {exc}"))
                continue
            new = NewOutgoing(
                message_id=self._ids.new(ticket_id),
                to=(to,),
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                kind=kind.value,
                ticket_id=ticket_id,
            )
            if phone is not None and self.sms_settings is not None:
                new = self._as_sms(new, phone, self.sms_settings)
            notices.append(Notice(self.repository.enqueue_outgoing(new)))
        return tuple(notices)

    def message_subscribers(
        self,
        service: ServiceDefinition,
        subject: str,
        text: str,
        *,
        channels: Sequence[str] = CHANNELS,
        mailbox: str = "",
        again: bool = False,
    ) -> tuple[Notice, ...]:
        """Queue a typed message to every subscriber of a service (maintenance, an outage).

        Subscribers with an ``@`` get it by email, phone numbers by SMS (with ``[sms]``
        set up), each once, all in one transaction; the next
        :meth:`~halomail.runner.MailProcessor.send_outbox` sends them. The same message
        (service, subject and text) asked for again is not queued again for a subscriber
        it was queued for: a command run twice tells nobody twice. ``again=True`` is the
        deliberate repeat (the same reminder next week).

        The subject is made one line (a CR or LF cannot start a header) and the text's
        line breaks are normalised; ``$servicename`` and ``$servicestatus`` (any case)
        are replaced by the service's name and last status. Nothing else in the text is
        read as template source: other ``$words`` and ``{{ }}`` stay as typed.

        Args:
            service: The service whose subscribers are told.
            subject: The email's subject (an SMS carries it where the provider wants one).
            text: The message.
            channels: ``"email"``, ``"sms"`` or both: which subscribers are told.
            mailbox: The mailbox whose outgoing settings send it (default: the default).
            again: Queue it even to subscribers the same message was queued to before.

        Returns:
            One notice per subscriber of the channels chosen: queued, or why not
            (``already-sent``, ``sms-not-configured``, ``invalid-phone: …``).

        Raises:
            ValueError: The text is blank, or a channel is neither ``email`` nor ``sms``.

        .. versionadded:: 0.1.0
        """
        unknown = sorted(set(channels) - set(CHANNELS))
        if unknown or not channels:
            raise ValueError(f"channels must be among {CHANNELS}, got {tuple(channels)}")
        if not text.strip():
            raise ValueError("the message text is empty")
        values = self._service_values(service)
        line = clean_text(_expand(subject, values)).strip() or service.name
        body = clean_text(_expand(text, values), multiline=True).strip()
        key = _message_key(service, subject, text)
        notices: list[Notice] = []
        with self.repository.transaction():
            told: list[str] = [] if again else json.loads(self.repository.get_state(key) or "[]")
            for subscriber in service.subscribers:
                is_email = "@" in subscriber
                if ("email" if is_email else "sms") not in channels:
                    continue
                notice = self._tell(subscriber, is_email, line, body, mailbox, told)
                notices.append(notice)
                if notice.queued is not None:
                    told.append(notice.queued.to[0])
            self.repository.set_state(key, json.dumps(told))
        queued = sum(n.sent for n in notices)
        log.info("service %s: message %r queued to %d subscribers", service.name, line, queued)
        return tuple(notices)

    # -- what the processor calls ---------------------------------------------------------

    def acknowledgement(
        self,
        ticket: Ticket,
        profile: MailboxProfile,
        *,
        to: str,
        in_reply_to: str | None,
        references: Sequence[str],
    ) -> NewOutgoing | None:
        """The acknowledgement of a new ticket, or ``None`` when its template fails.

        Called inside the processor's transaction; a failed render is logged and the
        ticket is still created.
        """
        new = self._compose(
            MessageKind.NEW_TICKET_LOGGED,
            ticket,
            profile,
            (to,),
            in_reply_to=in_reply_to,
            references=tuple(references),
        )
        return None if isinstance(new, str) else new

    def profile(self, mailbox: str) -> MailboxProfile:
        """The outgoing profile of ``mailbox`` (a default one for an unknown name)."""
        return self._mailboxes.get(mailbox.casefold()) or MailboxProfile(mailbox)

    # -- inside ------------------------------------------------------------------------

    def _sending(
        self, ticket_id: int, mailbox: str | None, agent: str | None
    ) -> tuple[Ticket, MailboxProfile, Agent | None]:
        """The ticket, the mailbox it is sent from and the acting agent, who may send so.

        Raises:
            KeyError: No such ticket or mailbox.
            SendingRestrictedError: The agent's team may not send from the mailbox.
        """
        ticket = self.repository.get_ticket(ticket_id)
        if ticket is None:
            raise KeyError(f"no ticket {ticket_id}")
        profile = self._profile(mailbox or ticket.mailbox)
        acting = self._agent(agent)
        profile.check_may_send(acting)
        return ticket, profile, acting

    def _profile(self, name: str) -> MailboxProfile:
        profile = self._mailboxes.get(name.casefold())
        if profile is None:
            raise KeyError(f"no mailbox {name!r}")
        return profile

    def _agent(self, email: str | None) -> Agent | None:
        if email is None:
            return None
        return self._agents.get(email.strip().lower()) or Agent(name=email, email=email)

    def _throttled(self, address: str, ticket_id: int) -> bool:
        since = self._clock() - self._throttle_window
        sent = self.repository.count_outgoing(to=address, since=since, ticket_id=ticket_id)
        return sent >= self._throttle_count

    def _group(self, ticket: Ticket, profile: MailboxProfile) -> str:
        team = self._teams.get(ticket.team.casefold()) if ticket.team else None
        return (team.message_group if team else None) or profile.message_group

    def _compose(
        self,
        kind: MessageKind,
        ticket: Ticket,
        profile: MailboxProfile,
        recipients: tuple[str, ...],
        *,
        note: str = "",
        agent: Agent | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] | None = None,
    ) -> NewOutgoing | str:
        """The mail to queue, or the reason there is none."""
        group = self._group(ticket, profile)
        template = self.renderer.template(kind, group=group)
        # The host's user and customer records are read only when the template shows
        # what they hold (the default acknowledgement needs neither for most tickets).
        reads = template.variables
        email = ticket.user_email
        wants_user = "userphone" in reads or ("username" in reads and not ticket.user_name)
        user = self.repository.find_user(email) if email and wants_user else None
        wants_customer = "customername" in reads
        customer = self.repository.find_customer(email) if email and wants_customer else None
        assigned = self._agents.get((ticket.agent or "").lower())
        shown = agent or assigned
        values = TemplateValues.for_ticket(
            ticket,
            note=note,
            user=user,
            customer=customer,
            agent_name=shown.name if shown else (ticket.agent or ""),
            agent_email=shown.email if shown else "",
            team_name=ticket.team or "",
            mailbox_name=profile.name,
            ticket_url=self._ticket_url.replace("{id}", str(ticket.id)),
            tag=profile.tag(ticket.id),
            signature=profile.signature_for(agent),
        )
        try:
            rendered: RenderedMessage = template.render(values)
        except TemplateError as exc:
            log.error(
                "ticket %s: the %s template of group %r failed, nothing sent: %s",
                ticket.id,
                kind.value,
                group,
                exc,
            )
            return f"template-failed: {exc}"
        if references is None:
            in_reply_to, references = self._thread(ticket.id)
        return NewOutgoing(
            message_id=self._ids.new(ticket.id),
            to=recipients,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            mailbox=profile.name,
            kind=kind.value,
            ticket_id=ticket.id,
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=kind in _AUTOMATIC,
        )

    def _service_values(self, service: ServiceDefinition) -> dict[str, str]:
        """What ``$servicename`` and ``$servicestatus`` stand for in a typed message."""
        last = self.repository.last_service_status(service.name)
        status = _STATUS_SHOWN.get(last.status, last.status) if last else "Unknown"
        return {"servicename": service.name, "servicestatus": status}

    def _tell(
        self,
        subscriber: str,
        is_email: bool,
        subject: str,
        body: str,
        mailbox: str,
        told: list[str],
    ) -> Notice:
        """Queue the typed message to one subscriber, unless it was queued to them before."""
        settings = self.sms_settings
        if is_email:
            to = subscriber.lower()
        elif settings is None:
            return Notice(None, "sms-not-configured")
        else:
            try:
                to = sms_address(subscriber, settings)
            except ValueError as exc:
                return Notice(None, f"invalid-phone: {exc}")
        if to in told:
            return Notice(None, "already-sent")
        new = NewOutgoing(
            message_id=self._ids.new(None),
            to=(to,),
            subject=subject,
            text=body + "\n",
            mailbox=mailbox,
            kind="service_message",
        )
        if not is_email and settings is not None:
            new = self._as_sms(new, subscriber, settings)
        return Notice(self.repository.enqueue_outgoing(new))

    @staticmethod
    def _as_sms(new: NewOutgoing, phone: str, settings: SmsSettings) -> NewOutgoing:
        """The mail as the provider wants it: one short line, its PIN where it goes."""
        message = compose_sms(new.text, phone, settings, subject=new.subject)
        return attrs.evolve(
            new,
            to=(message.to_address,),
            subject=message.subject,
            text=message.body,
            html=None,
            kind="sms",
            in_reply_to=None,
            references=(),
            auto_submitted=False,
        )

    def _thread(self, ticket_id: int) -> tuple[str | None, tuple[str, ...]]:
        """In-Reply-To and References for mail about a ticket: its known Message-IDs."""
        ids = [a.message_id for a in self.repository.list_actions(ticket_id) if a.message_id]
        ids = list(dict.fromkeys(ids))[-20:]
        return (ids[-1] if ids else None), tuple(ids)


def _expand(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``$name`` of ``values`` replaced (any case); the rest as typed."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), text)


def _message_key(service: ServiceDefinition, subject: str, text: str) -> str:
    """The state key listing who a typed message was queued to (a re-run tells nobody twice)."""
    digest = hashlib.sha256(json.dumps([service.name, subject, text]).encode()).hexdigest()
    return f"service-message:{digest[:32]}"
