"""The mail processor: each email, one unit of work, exactly once.

For every email a mailbox yields, :class:`MailProcessor`

1. parses it (:func:`~halomail.parse_email`, which never raises),
2. looks up its dedupe key — a second fetch of the same email changes nothing,
3. classifies it (auto-reply, bounce, bulk, our own mail fetched back),
4. correlates it with an existing ticket (subject tag, or a Message-ID we know),
5. decides its outcome, and
6. writes the outcome, the dedupe key and any acknowledgement to the outbox in
   **one** repository transaction,

and only after that commit asks the connector to dispose of the source email. A
crash anywhere therefore leaves either nothing (the email is fetched again) or
the whole outcome (the email is recognised by its dedupe key and disposed of).
Outgoing mail is sent after all mailboxes are read, from the outbox.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from halomail.backends.base import Disposition, FetchedMessage, MailboxConnector, MailTransport
from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.inbound.classify import classify
from halomail.inbound.models import Classification, InboundEmail, ParseLimits
from halomail.inbound.parse import parse_email
from halomail.outbound.notifier import MailboxProfile, Notifier
from halomail.outbound.outbox import Backoff, MessageIdFactory, Outbox, SenderIdentity, SendReport
from halomail.outbound.sms import SmsSettings
from halomail.rules import (
    EmailRule,
    Explanation,
    Extraction,
    RuleEngine,
    RuleMatch,
    RuleType,
    alert_key_from_subject,
)
from halomail.services import ServiceDefinition, ServiceStatus, is_overdue, judge
from halomail.templates.render import TemplateRenderer
from halomail.tickets.models import (
    ActionKind,
    DedupeRecord,
    FileOwner,
    NewAction,
    NewOutgoing,
    NewQuarantine,
    NewServiceStatus,
    NewTicket,
    OutboxMail,
    RecordKind,
    StoredAttachment,
    Ticket,
    TicketStatus,
    utcnow,
)
from halomail.tickets.repository import TicketRepository
from halomail.tickets.staff import Agent, Team
from halomail.tickets.templates import TicketTemplate

__all__ = [
    "MailProcessor",
    "Mailbox",
    "MailboxHealth",
    "MailboxReport",
    "Outcome",
    "ProcessingOutcome",
    "ProcessorSettings",
    "RunReport",
    "ServiceCheck",
    "Simulation",
]

log = logging.getLogger(__name__)
# Throttled senders remembered for the warn-once rule before the stale ones are dropped.
_THROTTLE_WARNINGS_KEPT = 10_000


class Outcome(enum.StrEnum):
    """How the processing of one email ended (design §3)."""

    CREATED = "created"  # a new ticket (or opportunity)
    UPDATED = "updated"  # an action added to an existing ticket
    CLOSED = "closed"  # an existing ticket closed
    STATUS = "status"  # a monitored service's heartbeat recorded
    IGNORED = "ignored"  # a rule or a policy said to ignore it
    SKIPPED = "skipped"  # a duplicate, or our own mail fetched back
    QUARANTINED = "quarantined"  # kept aside with its reason and bytes
    RETRY = "retry"  # a transient failure; the source email is untouched


@attrs.frozen
class ProcessingOutcome:
    """What happened to one email, and why.

    Args:
        mailbox: The mailbox's name.
        ref: The connector's id of the email.
        outcome: How it ended.
        message_id: The email's Message-ID, if it had one.
        ticket_id: The ticket created or changed, if any.
        rule: The rule that decided, if any.
        reason: A machine-readable reason (``duplicate``, ``own-message``,
            ``mime-too-deep`` …) or ``None`` for the plain cases.
        acknowledged: True when an acknowledgement was queued.
        subject: The decoded subject (for reports).
    """

    mailbox: str
    ref: str
    outcome: Outcome
    message_id: str | None = None
    ticket_id: int | None = None
    rule: str | None = None
    reason: str | None = None
    acknowledged: bool = False
    subject: str = ""

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``halomail run --json``."""
        return {
            "mailbox": self.mailbox,
            "message_id": self.message_id,
            "outcome": self.outcome.value,
            "ticket_id": self.ticket_id,
            "rule": self.rule,
            "reason": self.reason,
        }


@attrs.frozen
class Mailbox:
    """A mailbox the processor reads, with its per-mailbox settings.

    Args:
        connector: How to read it.
        name: Its name (defaults to the connector's).
        ticket_type: The type of the tickets it creates.
        record: Whether it creates tickets or opportunities.
        send_acknowledgement: Whether new tickets are acknowledged by email.
        subject_tag: The threading tag's opening, closed by ``]`` (``[ID:`` → ``[ID:123]``).
        start_from: ``"all"``, or ``"now"`` to leave alone the mail already there when
            the mailbox is first read (safe onboarding of a busy mailbox).
        hijack: What a follow-up from an address unrelated to the ticket becomes:
            ``"new-ticket"`` or ``"quarantine"``.
        sender: Who acknowledgements from this mailbox are from.
        enabled: Disabled mailboxes are not read.
        transport: How this mailbox's mail is sent, when it overrides the processor's
            transport (``[mailboxes.outgoing]``).
        message_group: The message group its mail is rendered from.
        signature: The signature of mail sent from it (``$signature``).
        agent_signatures: Per agent (by email), a signature replacing theirs and the
            mailbox's on mail from this mailbox.
        allowed_teams: Only agents of these teams may send from it (empty: anyone).
    """

    connector: MailboxConnector
    name: str = ""
    ticket_type: str = "Incident"
    record: RecordKind = RecordKind.TICKET
    send_acknowledgement: bool = True
    subject_tag: str = "[ID:"
    start_from: str = "all"
    hijack: str = "new-ticket"
    sender: SenderIdentity | None = None
    enabled: bool = True
    transport: MailTransport | None = None
    message_group: str = "Default"
    signature: str = ""
    agent_signatures: Mapping[str, str] = attrs.field(factory=dict)
    allowed_teams: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", getattr(self.connector, "name", "") or "mailbox")
        if self.start_from not in ("all", "now"):
            raise ValueError(f"start_from must be 'all' or 'now', not {self.start_from!r}")
        if self.hijack not in ("new-ticket", "quarantine"):
            raise ValueError(f"hijack must be 'new-ticket' or 'quarantine', not {self.hijack!r}")

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        """Matches this mailbox's tag in a subject: ``[ID:123]`` and the bare ``[ID 123]``."""
        return _tag_pattern(self.subject_tag)

    def tag(self, ticket_id: int) -> str:
        """The tag for ``ticket_id``, e.g. ``[ID:123]``."""
        return f"{self.subject_tag}{ticket_id}]"

    @property
    def profile(self) -> MailboxProfile:
        """What this mailbox's outgoing mail looks like, for the :class:`Notifier`."""
        return MailboxProfile(
            name=self.name,
            message_group=self.message_group,
            signature=self.signature,
            agent_signatures={k.lower(): v for k, v in self.agent_signatures.items()},
            allowed_teams=self.allowed_teams,
            subject_tag=self.subject_tag,
        )


def _tag_pattern(subject_tag: str) -> re.Pattern[str]:
    opening = subject_tag.rstrip(":#- ")
    return re.compile(re.escape(opening) + r"(?:[:#-]\s*|\s+)(\d{1,12})\s*\]", re.IGNORECASE)


@attrs.frozen
class ProcessorSettings:
    """Settings that apply to every mailbox.

    Args:
        loop_token: Marks our own mail (loop header and Message-ID signature).
        domain: The domain of our Message-IDs.
        default_sender: Who acknowledgements are from when a mailbox names nobody.
        limits: Parsing limits (design §4).
        bulk: What list or bulk mail becomes: ``"ticket"`` or ``"ignore"``.
        ack_throttle_count: At most this many acknowledgements …
        ack_throttle_window: … to one address (and per ticket) in this window.
        backoff: The outbox's retry strategy.
        mailbox_backoff: How long a mailbox that keeps failing is left alone before the
            next attempt (its ``max_attempts`` is not used: a mailbox is never given up).
        concurrent_mailboxes: At most this many mailboxes are read at once, each in its
            own thread with its own connection; the repository serializes the writes.
            Waiting on a server costs no CPU, so the default is high enough that 50
            mailboxes behind 20 ms of latency take under 3x the slowest one alone
            (``benchmarks/bench_mailboxes.py``: 1.9x at 16, 5.4x at 4).
    """

    loop_token: str = attrs.field(repr=False)
    domain: str = "halomail.invalid"
    default_sender: SenderIdentity = attrs.field(
        factory=lambda: SenderIdentity("helpdesk@halomail.invalid", "Helpdesk")
    )
    limits: ParseLimits = attrs.field(factory=ParseLimits)
    bulk: str = "ticket"
    ack_throttle_count: int = 10
    ack_throttle_window: dt.timedelta = dt.timedelta(minutes=10)
    backoff: Backoff = attrs.field(factory=Backoff)
    mailbox_backoff: Backoff = attrs.field(
        factory=lambda: Backoff(base_seconds=30.0, cap_seconds=900.0)
    )
    concurrent_mailboxes: int = attrs.field(default=16, validator=attrs.validators.ge(1))


@attrs.frozen
class MailboxHealth:
    """A mailbox's state, as an administrator wants to see it.

    Args:
        name: The mailbox.
        last_success: When it was last read without error.
        last_error: The last error (secret-free), or ``None``.
        last_error_at: When that error happened.
        consecutive_failures: Failed reads since the last success.
        next_attempt_at: After repeated failures, the mailbox is not read again before
            this time (``None``: read it on the next cycle).
    """

    name: str
    last_success: dt.datetime | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    consecutive_failures: int = 0
    next_attempt_at: dt.datetime | None = None

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used by ``halomail run --json``."""
        return {
            "mailbox": self.name,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "consecutive_failures": self.consecutive_failures,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


@attrs.frozen
class MailboxReport:
    """What one pass over one mailbox did (``error`` says why it failed or was skipped)."""

    name: str
    outcomes: tuple[ProcessingOutcome, ...]
    error: str | None = None
    left_alone: int = 0
    skipped: bool = False  # not read this cycle: backing off after repeated failures


@attrs.frozen
class ServiceCheck:
    """One monitored service as a cycle found it.

    Args:
        service: The service's name.
        status: Its latest status (``ok``, ``failed``, ``unknown``), or ``None`` before any.
        turned_unknown: True when this check turned it Unknown.
        ticket_id: The ticket raised for it, if any.
    """

    service: str
    status: str | None
    turned_unknown: bool = False
    ticket_id: int | None = None


@attrs.frozen
class RunReport:
    """What one cycle over every mailbox did."""

    mailboxes: tuple[MailboxReport, ...]
    sent: SendReport = attrs.field(factory=SendReport)
    services: tuple[ServiceCheck, ...] = ()

    @property
    def outcomes(self) -> tuple[ProcessingOutcome, ...]:
        """Every email's outcome, mailbox by mailbox."""
        return tuple(o for report in self.mailboxes for o in report.outcomes)

    @property
    def ok(self) -> bool:
        """False when a mailbox failed or an email was quarantined or left for retry."""
        return all(report.error is None for report in self.mailboxes) and not any(
            o.outcome in (Outcome.QUARANTINED, Outcome.RETRY) for o in self.outcomes
        )


@attrs.frozen
class Simulation:
    """What processing an email would do, and why (nothing written).

    Args:
        outcome: The outcome it would get.
        rules: Each rule in order with why it matched or not; ``None`` without rules.
    """

    outcome: ProcessingOutcome
    rules: Explanation | None = None


@attrs.frozen
class _Decision:
    """What the processor will do with one email; nothing is written yet."""

    outcome: Outcome
    reason: str | None = None
    ticket: Ticket | None = None  # the existing ticket a follow-up or bounce belongs to
    reopen: bool = False
    acknowledge: bool = False
    rule: str | None = None
    match: RuleMatch | None = None  # the rule that decided, with what it read
    service_status: ServiceStatus | None = None
    previous_ticket_id: int | None = None  # a duplicate: the ticket the first copy affected
    file_owner: tuple[FileOwner, int] | None = None  # a file transfer: where the files go


_UNDELIVERABLE = "undeliverable:"
# Rule types whose emails people wrote: they may be acknowledged.
_HUMAN_RULES = frozenset({RuleType.HELP_REQUEST, RuleType.APPLY_TEMPLATE, RuleType.FORMATTED_EMAIL})
# Ticket fields a rule's field mappings may set on a new ticket.
_TICKET_FIELDS = ("summary", "details", "priority", "category", "team", "agent", "user_email")


class MailProcessor:
    """Turns the email of one or more mailboxes into tickets, exactly once.

    Args:
        repository: Where tickets live (the host's, or a shipped implementation).
        mailboxes: The mailboxes to read.
        settings: Settings for every mailbox.
        transport: How outgoing mail leaves; without one, mail stays queued.
        rules: Email rules, evaluated for each new email (see :mod:`halomail.rules`).
        services: Monitored services that ``service_status`` rules report on.
        ticket_templates: Templates that ``apply_template`` rules start tickets from.
        renderer: The message groups outgoing mail is rendered from (the built-in
            ``Default`` group when not given).
        agents: The agents (names, teams, signatures) mail may be sent as.
        teams: The teams, for their message groups.
        ticket_url: The address of a ticket, with ``{id}`` for its number.
        sms: The email-to-SMS provider (``[sms]``), or ``None``.
        clock: The current time (replaceable in tests).
        owns_repository: Close ``repository`` in :meth:`close` (the processor opened it).

    Raises:
        ValueError: Mailbox names repeat, or a rule names an unknown service or template.

    Example::

        processor = MailProcessor(repo, [Mailbox(MaildirConnector("Support", "inbox"))],
                                  ProcessorSettings(loop_token="…"), transport=transport)
        report = processor.run_once()

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        repository: TicketRepository,
        mailboxes: Sequence[Mailbox],
        settings: ProcessorSettings,
        *,
        transport: MailTransport | None = None,
        rules: Sequence[EmailRule] = (),
        services: Sequence[ServiceDefinition] = (),
        ticket_templates: Sequence[TicketTemplate] = (),
        renderer: TemplateRenderer | None = None,
        agents: Sequence[Agent] = (),
        teams: Sequence[Team] = (),
        ticket_url: str = "",
        sms: SmsSettings | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        owns_repository: bool = False,
    ) -> None:
        names = [m.name for m in mailboxes]
        if len(set(names)) != len(names):
            raise ValueError(f"mailbox names must be unique: {names}")
        self._services = {s.name: s for s in services}
        self._templates = {t.name: t for t in ticket_templates}
        for rule in rules:
            if rule.service is not None and rule.service not in self._services:
                raise ValueError(f"rule {rule.name!r}: no monitored service {rule.service!r}")
            if rule.template is not None and rule.template not in self._templates:
                raise ValueError(f"rule {rule.name!r}: no ticket template {rule.template!r}")
        self._engine = RuleEngine(rules) if rules else None
        self.repository = repository
        self.mailboxes = tuple(mailboxes)
        self.settings = settings
        self.transport = transport
        self._clock = clock
        self._owns_repository = owns_repository
        self._closed = False
        self._ids = MessageIdFactory(settings.loop_token, settings.domain)
        #: Queues the mail that goes with ticket events; hosts call it when agents act.
        self.notifier = Notifier(
            repository,
            renderer or TemplateRenderer(),
            [m.profile for m in mailboxes],
            ids=self._ids,
            agents=agents,
            teams=teams,
            ticket_url=ticket_url,
            sms=sms,
            throttle_count=settings.ack_throttle_count,
            throttle_window=settings.ack_throttle_window,
            clock=clock,
        )
        self._health: dict[str, MailboxHealth] = {m.name: MailboxHealth(m.name) for m in mailboxes}
        self._arrived = threading.Event()  # set by a mailbox's watcher when mail is pushed
        self._watchers: dict[str, threading.Thread] = {}
        # When each throttled sender was last warned about: a storm from one address
        # logs one WARNING per throttle window, not one per email.
        self._throttle_warned: dict[str, dt.datetime] = {}
        self._throttle_warned_lock = threading.Lock()  # mailboxes run in threads

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Release what the processor holds: connections, watchers, transports, and the
        repository when the processor opened it. Calling it again does nothing.

        .. versionadded:: 0.2.0
        """
        if self._closed:
            return
        self._closed = True
        closers: list[tuple[str, Callable[[], object]]] = [
            (f"mailbox {m.name}", m.connector.close) for m in self.mailboxes
        ]
        transports = {id(t): t for t in (self.transport, *(m.transport for m in self.mailboxes))}
        closers += [
            ("transport", close)
            for t in transports.values()
            if callable(close := getattr(t, "close", None))
        ]
        if self._owns_repository and callable(close := getattr(self.repository, "close", None)):
            closers.append(("repository", close))
        for what, close in closers:
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                log.warning("closing %s failed: %s", what, exc)
        for watcher in self._watchers.values():
            watcher.join(timeout=5)

    def __enter__(self) -> MailProcessor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- running ---------------------------------------------------------------

    def run_once(
        self, *, on_outcome: Callable[[ProcessingOutcome], None] | None = None
    ) -> RunReport:
        """Read every enabled mailbox once, then check services and send the outbox.

        Mailboxes are read concurrently, at most
        :attr:`ProcessorSettings.concurrent_mailboxes` at a time, so a slow server
        delays only its own mailbox. One broken mailbox never stops the others: its
        error lands in its report and in :meth:`health`.

        Args:
            on_outcome: Called with each email's outcome as soon as it is known (from
                one thread at a time).

        Returns:
            The reports, in the order of the mailboxes.
        """
        enabled = [m for m in self.mailboxes if m.enabled]
        workers = min(self.settings.concurrent_mailboxes, len(enabled))
        if workers <= 1:
            reports = tuple(self.process_mailbox(m, on_outcome=on_outcome) for m in enabled)
        else:
            report_one = on_outcome
            if on_outcome is not None:
                callback, lock = on_outcome, threading.Lock()

                def report_one(outcome: ProcessingOutcome) -> None:
                    with lock:
                        callback(outcome)

            with ThreadPoolExecutor(workers, thread_name_prefix="halomail-mailbox") as pool:
                reports = tuple(
                    pool.map(lambda m: self.process_mailbox(m, on_outcome=report_one), enabled)
                )
        services = self.check_services()
        sent = self.send_outbox()
        return RunReport(mailboxes=reports, sent=sent, services=services)

    def check_services(self) -> tuple[ServiceCheck, ...]:
        """Turn monitored services that stayed silent past their interval Unknown.

        A service is watched from the first check on; one whose last email (of any
        status) is older than its Status Checking Interval gets an ``unknown`` entry
        in its history, once, and a ticket when the service asks for one. Called by
        :meth:`run_once` after the mailboxes are read.
        """
        now = self._clock()
        checks: list[ServiceCheck] = []
        for service in self._services.values():
            since_key = f"service:{service.name}:watching-since"
            with self.repository.transaction():
                since_text = self.repository.get_state(since_key)
                if since_text is None:
                    self.repository.set_state(since_key, now.isoformat())
                    since = now
                else:
                    since = dt.datetime.fromisoformat(since_text)
                last = self.repository.last_service_status(service.name)
                if not is_overdue(service, last, now, watching_since=since):
                    checks.append(ServiceCheck(service.name, last.status if last else None))
                    continue
                ticket_id = self._open_unknown_ticket(service) if service.unknown_ticket else None
                detail = f"no email within {service.check_interval}"
                self.repository.record_service_status(
                    NewServiceStatus(
                        service=service.name,
                        status=ServiceStatus.UNKNOWN.value,
                        at=now,
                        detail=detail,
                        ticket_id=ticket_id,
                    )
                )
                self.notifier.service_changed(
                    service, ServiceStatus.UNKNOWN.value, detail, ticket_id
                )
            log.warning(
                "service %s is unknown: no email within %s", service.name, service.check_interval
            )
            checks.append(ServiceCheck(service.name, ServiceStatus.UNKNOWN.value, True, ticket_id))
        return tuple(checks)

    def _open_unknown_ticket(self, service: ServiceDefinition) -> int:
        key = _service_key(service.name)
        existing = self.repository.find_open_ticket(alert_key=key)
        if existing is not None:
            return existing.id
        ticket = self.repository.create_ticket(
            NewTicket(
                summary=f"{service.name}: no status email within {service.check_interval}",
                details=f"The monitored service {service.name!r} has not reported within its "
                f"checking interval ({service.check_interval}); its status is now Unknown.",
                ticket_type=service.failure_ticket_type or "Incident",
                user_email="",
                alert_key=key,
            )
        )
        return ticket.id

    def process_mailbox(
        self, mailbox: Mailbox, *, on_outcome: Callable[[ProcessingOutcome], None] | None = None
    ) -> MailboxReport:
        """Process every email of ``mailbox``; never raises for a mailbox failure.

        Args:
            mailbox: One of this processor's mailboxes.
            on_outcome: Called with each email's outcome as soon as it is known.
        """
        outcomes: list[ProcessingOutcome] = []
        left_alone = 0
        error: str | None = None
        health = self._health.get(mailbox.name)
        retry_at = health.next_attempt_at if health is not None else None
        if health is not None and retry_at is not None and self._clock() < retry_at:
            waiting = (
                f"not read: {health.consecutive_failures} failures in a row, next attempt "
                f"at {retry_at.isoformat()} (last error: {health.last_error})"
            )
            return MailboxReport(mailbox.name, (), error=waiting, skipped=True)
        try:
            baseline = self._onboarding_baseline(mailbox)
            messages: Iterator[FetchedMessage] = iter(mailbox.connector.fetch())
            for fetched in messages:
                if baseline is not None and fetched.ref in baseline:
                    left_alone += 1
                    continue
                outcome = self.process_message(mailbox, fetched)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        except Exception as exc:  # noqa: BLE001 - one broken mailbox must not stop the others
            error = f"{type(exc).__name__}: {exc}"
            log.error("mailbox %s failed: %s", mailbox.name, error)
        finally:
            try:
                # A connector that can keep its connections between cycles (IMAP) says
                # so with end_session(); close() is for when the processor closes.
                end_session = getattr(mailbox.connector, "end_session", None)
                (end_session if callable(end_session) else mailbox.connector.close)()
            except Exception as exc:  # noqa: BLE001 - a failed close is reported, not raised
                error = error or f"close failed: {type(exc).__name__}: {exc}"
                log.error("mailbox %s: close failed: %s", mailbox.name, exc)
        self._record_health(mailbox.name, error)
        if left_alone:
            log.info(
                "mailbox %s: left %d older emails alone (start_from=now)", mailbox.name, left_alone
            )
        return MailboxReport(mailbox.name, tuple(outcomes), error=error, left_alone=left_alone)

    def send_outbox(self) -> SendReport:
        """Send the queued outgoing mail that is due.

        Each mail leaves through its mailbox's transport, or the processor's; mail
        with neither stays queued.
        """
        if self.transport is None and all(m.transport is None for m in self.mailboxes):
            return SendReport()
        outbox = Outbox(
            self.repository,
            self._transport_for,
            self._sender_for,
            loop_token=self.settings.loop_token,
            backoff=self.settings.backoff,
            clock=self._clock,
        )
        return outbox.send_due()

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait until a mailbox that can push reports new mail, or ``timeout`` passes.

        Mailboxes whose connector has ``wait_for_mail(timeout) -> bool`` (IMAP IDLE)
        are watched, each by one thread of its own; the others are simply read again
        on the next cycle. ``halomail run`` calls this between cycles, so pushed mail is
        processed within seconds while the poll interval stays long. A watcher still
        waiting from an earlier call is not doubled (each holds a connection), and news
        it brings in later ends the next wait at once.

        Args:
            timeout: The longest wait, in seconds (the poll interval).

        Returns:
            True when a mailbox reported new mail before the timeout.
        """
        if self._arrived.is_set():
            self._arrived.clear()
            return True
        now = self._clock()
        for mailbox in self.mailboxes:
            wait = getattr(mailbox.connector, "wait_for_mail", None)
            if not mailbox.enabled or not callable(wait):
                continue
            if (self._health[mailbox.name].next_attempt_at or now) > now:
                continue  # backing off after failures: not watched either
            watcher = self._watchers.get(mailbox.name)
            if watcher is not None and watcher.is_alive():
                continue
            watcher = threading.Thread(
                target=self._watch,
                args=(mailbox.name, wait, timeout),
                name=f"halomail-idle-{mailbox.name}",
                daemon=True,
            )
            self._watchers[mailbox.name] = watcher
            watcher.start()
        arrived = self._arrived.wait(timeout)
        self._arrived.clear()
        return arrived

    def _watch(self, name: str, wait: Callable[[float], bool], timeout: float) -> None:
        try:
            if wait(timeout):
                log.debug("mailbox %s: new mail pushed", name)
                self._arrived.set()
        except Exception as exc:  # noqa: BLE001 - a failed watch only means polling
            log.warning("mailbox %s: waiting for new mail failed: %s", name, exc)

    def health(self) -> tuple[MailboxHealth, ...]:
        """Each mailbox's last success, last error and consecutive failures."""
        return tuple(self._health[m.name] for m in self.mailboxes)

    # -- one email -------------------------------------------------------------

    def process_message(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        """Run the unit of work for one fetched email and dispose of it.

        Never raises: a transient repository failure gives ``retry`` (the source is
        left untouched), anything unexpected quarantines the email with its reason.
        """
        try:
            outcome = self._process(mailbox, fetched)
        except TransientRepositoryError as exc:
            log.warning("mailbox %s ref %s: will retry: %s", mailbox.name, fetched.ref, exc)
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason="transient-error"
            )
        except Exception as exc:
            log.exception("mailbox %s ref %s: processing failed", mailbox.name, fetched.ref)
            outcome = self._quarantine_after_error(mailbox, fetched, exc)
        self._dispose(mailbox, fetched.ref, outcome.outcome)
        log.info(
            "%s %s %s ticket=%s reason=%s",
            mailbox.name,
            outcome.message_id or fetched.ref,
            outcome.outcome.value,
            outcome.ticket_id,
            outcome.reason,
        )
        return outcome

    def simulate(self, raw: bytes, mailbox: Mailbox | None = None) -> ProcessingOutcome:
        """What processing ``raw`` would do, and why; nothing is written or sent."""
        mailbox = mailbox or self.mailboxes[0]
        return self._simulate(raw, parse_email(raw, limits=self.settings.limits), mailbox)

    def explain(self, raw: bytes, mailbox: Mailbox | None = None) -> Simulation:
        """:meth:`simulate`, plus each rule in order: matched, or the first failed criterion."""
        mailbox = mailbox or self.mailboxes[0]
        email = parse_email(raw, limits=self.settings.limits)
        rules = self._engine.explain(email, mailbox.name) if self._engine is not None else None
        return Simulation(self._simulate(raw, email, mailbox), rules)

    def _simulate(self, raw: bytes, email: InboundEmail, mailbox: Mailbox) -> ProcessingOutcome:
        fetched = FetchedMessage(ref="simulate", raw=raw, size=len(raw))
        key, fingerprint = self._dedupe_key(mailbox, email, raw)
        decision = self._decide(mailbox, fetched, email, key, fingerprint)
        return ProcessingOutcome(
            mailbox.name,
            "simulate",
            decision.outcome,
            email.message_id,
            decision.ticket.id if decision.ticket else None,
            decision.rule,
            decision.reason,
            acknowledged=decision.acknowledge,
            subject=email.subject,
        )

    def _process(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        if fetched.too_large:
            return self._quarantine_too_large(mailbox, fetched)
        email = parse_email(fetched.raw, limits=self.settings.limits)
        key, fingerprint = self._dedupe_key(mailbox, email, fetched.raw)
        with self.repository.transaction():
            # Decide inside the transaction so that two processors racing on one
            # mailbox cannot both create a ticket for the same email.
            decision = self._decide(mailbox, fetched, email, key, fingerprint)
            return self._apply(mailbox, fetched, email, key, fingerprint, decision)

    def _dedupe_key(self, mailbox: Mailbox, email: InboundEmail, raw: bytes) -> tuple[str, str]:
        """The dedupe key and the content fingerprint of an email.

        The fingerprint leaves out the header block, so the same email delivered
        twice with different trace headers (Received, Delivered-To) is still a
        duplicate, while a different email that reuses a Message-ID is not.
        """
        separator = raw.find(b"\r\n\r\n")
        if separator < 0:
            separator = raw.find(b"\n\n")
        # A view, not a slice: a 50 MB email is not copied to be hashed.
        body = memoryview(raw)[separator:] if separator >= 0 else raw
        digest = hashlib.sha256(body)
        for part in (email.subject, str(email.sender or ""), email.message_id or ""):
            digest.update(b"\x00" + part.encode("utf-8", "replace"))
        fingerprint = digest.hexdigest()
        if email.message_id:
            return f"{mailbox.name}\x1fid:{email.message_id}", fingerprint
        return f"{mailbox.name}\x1fsha256:{email.sha256}", fingerprint

    def _decide(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
    ) -> _Decision:
        repo = self.repository
        previous = repo.get_dedupe(key)
        if previous is not None:
            if previous.sha256 == fingerprint:
                return _Decision(
                    Outcome.SKIPPED, "duplicate", previous_ticket_id=previous.ticket_id
                )
            # Same Message-ID, different content: never drop it silently (L7).
            if repo.get_dedupe(_collision_key(key, fingerprint)) is not None:
                return _Decision(
                    Outcome.SKIPPED, "duplicate", previous_ticket_id=previous.ticket_id
                )
            return _Decision(Outcome.QUARANTINED, "message-id-collision")
        if email.quarantine_reason:
            return _Decision(Outcome.QUARANTINED, email.quarantine_reason)

        classification = classify(
            email, loop_token=self.settings.loop_token, is_own_message_id=self._ids.is_ours
        )
        if classification.own_message:
            return _Decision(Outcome.SKIPPED, "own-message")
        if email.sender is None:
            return _Decision(Outcome.QUARANTINED, "unparseable-sender")
        if classification.bounce:
            return self._decide_bounce(email, classification)

        match = self._engine.evaluate(email, mailbox.name) if self._engine else None
        if match is not None and match.rule.type is RuleType.IGNORE:
            return _Decision(Outcome.IGNORED, "rule", rule=match.rule.name, match=match)

        reason: str | None = None
        ticket = self._correlate(mailbox, email)
        if ticket is not None:
            if self._related(ticket, email):
                # An auto-reply on the thread is recorded but changes nothing (O1).
                reopen = not ticket.is_open and classification.may_acknowledge
                return _Decision(Outcome.UPDATED, None, ticket=ticket, reopen=reopen)
            if mailbox.hijack == "quarantine":
                return _Decision(Outcome.QUARANTINED, "thread-hijack-suspected")
            log.warning(
                "mailbox %s: %s is unrelated to ticket %d; opening a new ticket",
                mailbox.name,
                email.sender.normalized,
                ticket.id,
            )
            reason = "unrelated-sender"
        if match is not None:
            return self._decide_rule(mailbox, email, classification, match, reason)
        if classification.bulk and self.settings.bulk == "ignore":
            return _Decision(Outcome.IGNORED, "bulk")
        return self._decide_new(mailbox, email, classification, reason)

    def _decide_rule(
        self,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        match: RuleMatch,
        reason: str | None,
    ) -> _Decision:
        """What a matching rule makes of a new email; reads, never writes."""
        rule, extraction = match.rule, match.extraction
        decided = functools.partial(_Decision, rule=rule.name, match=match)
        if rule.type in _HUMAN_RULES:
            # People wrote these: a ticket like any other, acknowledged unless the rule says not.
            decision = self._decide_new(
                mailbox, email, classification, reason, acknowledge=rule.send_acknowledgement
            )
            return attrs.evolve(decision, rule=rule.name, match=match)
        if rule.type is RuleType.SERVICE_STATUS:
            return self._decide_service(email, match)
        if rule.type is RuleType.FILE_TRANSFER:
            owner = self._file_owner(email, match)
            if owner is None:
                return decided(Outcome.QUARANTINED, "file-transfer-without-owner")
            return decided(Outcome.UPDATED, "files-stored", file_owner=owner)
        if rule.type is RuleType.INVENTORY:
            tag = _inventory_tag(extraction)
            if tag is None:
                return decided(Outcome.QUARANTINED, "inventory-without-asset-tag")
            exists = self.repository.find_asset("tag", tag) is not None
            return decided(
                Outcome.UPDATED if exists else Outcome.CREATED,
                "asset-updated" if exists else "asset-created",
            )
        existing = None
        for key in self._alert_keys(email, match):
            existing = self.repository.find_open_ticket(alert_key=key)
            if existing is not None:
                break
        if rule.type is RuleType.OFF_ALERT or (rule.type is RuleType.ALERT and extraction.closing):
            if existing is None:
                return decided(Outcome.IGNORED, "nothing-open-to-close")
            if existing.agent:
                # Someone is working on it: tell them, don't pull it from under them.
                return decided(Outcome.UPDATED, "cleared-while-assigned", ticket=existing)
            return decided(Outcome.CLOSED, "alert-cleared", ticket=existing)
        if existing is not None:
            return decided(Outcome.UPDATED, "repeated-alert", ticket=existing)
        return decided(Outcome.CREATED, reason)

    def _decide_service(self, email: InboundEmail, match: RuleMatch) -> _Decision:
        service = self._services[match.rule.service or ""]
        status = judge(service, email)
        decided = functools.partial(
            _Decision, rule=match.rule.name, match=match, service_status=status
        )
        existing = self.repository.find_open_ticket(alert_key=_service_key(service.name))
        if status is ServiceStatus.FAILED and service.failure_ticket_type:
            if existing is not None:
                return decided(Outcome.UPDATED, "service-failed", ticket=existing)
            return decided(Outcome.CREATED, "service-failed")
        if status is ServiceStatus.OK and service.close_on_success and existing is not None:
            return decided(Outcome.CLOSED, "service-recovered", ticket=existing)
        return decided(Outcome.STATUS, f"service-{status.value}")

    def _decide_new(
        self,
        mailbox: Mailbox,
        email: InboundEmail,
        classification: Classification,
        reason: str | None,
        *,
        acknowledge: bool = True,
    ) -> _Decision:
        may = False
        if acknowledge and mailbox.send_acknowledgement and email.sender is not None:
            may, why_not = self._may_acknowledge(email, classification)
            if not may and why_not:
                reason = reason or why_not
        return _Decision(Outcome.CREATED, reason, acknowledge=may)

    def _may_acknowledge(
        self, email: InboundEmail, classification: Classification
    ) -> tuple[bool, str | None]:
        if not classification.may_acknowledge:
            return False, None
        assert email.sender is not None
        address = email.sender.normalized
        if self.repository.get_state(_UNDELIVERABLE + address) is not None:
            return False, "undeliverable-sender"
        now = self._clock()
        since = now - self.settings.ack_throttle_window
        if (
            self.repository.count_outgoing(to=address, since=since)
            >= self.settings.ack_throttle_count
        ):
            self._warn_throttled(address, now, since)
            return False, "acknowledgement-throttled"
        return True, None

    def _warn_throttled(self, address: str, now: dt.datetime, since: dt.datetime) -> None:
        """One WARNING per sender and throttle window; DEBUG for the rest of the window."""
        with self._throttle_warned_lock:
            warned = self._throttle_warned.get(address)
            if warned is not None and warned > since:
                log.debug("acknowledgements to %s still throttled", address)
                return
            if len(self._throttle_warned) >= _THROTTLE_WARNINGS_KEPT:
                # Forget the senders whose window has passed: they would be warned anyway.
                self._throttle_warned = {
                    a: t for a, t in self._throttle_warned.items() if t > since
                }
            self._throttle_warned[address] = now
        log.warning(
            "acknowledgements to %s throttled: %d per %g minutes reached; the next ones are"
            " logged at DEBUG until the window has passed",
            address,
            self.settings.ack_throttle_count,
            self.settings.ack_throttle_window.total_seconds() / 60,
        )

    def _decide_bounce(self, email: InboundEmail, classification: Classification) -> _Decision:
        candidates = [mid for mid in (classification.bounced_message_id, *email.thread_ids) if mid]
        ticket = self.repository.find_ticket_by_message_ids(candidates) if candidates else None
        if ticket is None:
            return _Decision(Outcome.QUARANTINED, "bounce-unmatched")
        return _Decision(Outcome.UPDATED, "bounce", ticket=ticket)

    def _correlate(self, mailbox: Mailbox, email: InboundEmail) -> Ticket | None:
        """The existing ticket this email follows up, by subject tag or Message-ID."""
        match = mailbox.tag_pattern.search(email.subject)
        if match:
            ticket = self.repository.get_ticket(int(match.group(1)))
            if ticket is not None:
                return ticket
        if email.thread_ids:
            return self.repository.find_ticket_by_message_ids(email.thread_ids)
        return None

    def _related(self, ticket: Ticket, email: InboundEmail) -> bool:
        """True when the sender may update ``ticket``: its user, a CC, its agent, or a
        contact of its customer."""
        assert email.sender is not None
        sender = email.sender.normalized
        people = {ticket.user_email.lower(), *(c.lower() for c in ticket.cc)}
        if ticket.agent:
            people.add(ticket.agent.lower())
        if sender in people:
            return True
        if ticket.customer:
            customer = self.repository.find_customer(sender)
            return customer is not None and customer.name == ticket.customer
        return False

    # -- writing ---------------------------------------------------------------

    def _apply(
        self,
        mailbox: Mailbox,
        fetched: FetchedMessage,
        email: InboundEmail,
        key: str,
        fingerprint: str,
        decision: _Decision,
    ) -> ProcessingOutcome:
        repo = self.repository
        if decision.outcome is Outcome.SKIPPED and decision.reason == "duplicate":
            return ProcessingOutcome(
                mailbox.name,
                fetched.ref,
                Outcome.SKIPPED,
                email.message_id,
                decision.previous_ticket_id,
                reason="duplicate",
                subject=email.subject,
            )
        ticket_id: int | None = decision.ticket.id if decision.ticket else None
        acknowledged = False
        dedupe_key = key
        if decision.match is not None and decision.outcome is not Outcome.QUARANTINED:
            ticket_id, acknowledged = self._apply_rule(mailbox, email, decision, decision.match)
        elif decision.outcome is Outcome.QUARANTINED:
            if decision.reason == "message-id-collision":
                dedupe_key = _collision_key(key, fingerprint)
            repo.quarantine(
                NewQuarantine(
                    mailbox=mailbox.name,
                    reason=decision.reason or "unknown",
                    raw=fetched.raw,
                    detail=_QUARANTINE_DETAILS.get(decision.reason or "", ""),
                    message_id=email.message_id,
                    dedupe_key=dedupe_key,
                )
            )
        elif decision.outcome is Outcome.UPDATED and decision.ticket is not None:
            if decision.reason == "bounce":
                self._apply_bounce(email, decision.ticket.id)
            else:
                repo.add_action(self._inbound_action(decision.ticket.id, email, new_text_only=True))
                if decision.reopen:
                    repo.set_status(decision.ticket.id, TicketStatus.OPEN)
        elif decision.outcome is Outcome.CREATED:
            new = self._new_ticket(mailbox, email)
            ticket_id, acknowledged = self._open_ticket(mailbox, email, new, decision, public=True)
        # Ignored, or skipped as our own mail: only the dedupe record is written.
        repo.record_dedupe(DedupeRecord(dedupe_key, fingerprint, decision.outcome.value, ticket_id))
        return ProcessingOutcome(
            mailbox.name,
            fetched.ref,
            decision.outcome,
            email.message_id,
            ticket_id,
            decision.rule,
            decision.reason,
            acknowledged=acknowledged,
            subject=email.subject,
        )

    def _open_ticket(
        self,
        mailbox: Mailbox,
        email: InboundEmail,
        new: NewTicket,
        decision: _Decision,
        *,
        public: bool,
    ) -> tuple[int, bool]:
        """Create the ticket with the email as its first action, and queue the acknowledgement.

        Returns:
            The ticket's id, and whether an acknowledgement was queued (a template that
            fails to render sends nothing; the ticket is created all the same).
        """
        ticket = self.repository.create_ticket(new)
        self.repository.add_action(self._inbound_action(ticket.id, email, public=public))
        if not decision.acknowledge:
            return ticket.id, False
        acknowledgement = self._acknowledgement(mailbox, ticket, email)
        if acknowledgement is not None:
            self.repository.enqueue_outgoing(acknowledgement)
        return ticket.id, acknowledgement is not None

    def _apply_rule(
        self, mailbox: Mailbox, email: InboundEmail, decision: _Decision, match: RuleMatch
    ) -> tuple[int | None, bool]:
        """Write what a rule decided; returns the ticket affected and whether we replied."""
        repo = self.repository
        rule, extraction = match.rule, match.extraction
        ticket_id = decision.ticket.id if decision.ticket else None
        acknowledged = False
        if rule.type is RuleType.FILE_TRANSFER:
            if decision.file_owner is not None:
                repo.store_files(
                    owner=decision.file_owner[0],
                    owner_id=decision.file_owner[1],
                    attachments=_stored(email),
                    note=email.subject,
                )
        elif rule.type is RuleType.INVENTORY:
            tag = _inventory_tag(extraction)
            if tag is not None:
                customer = repo.find_customer(email.sender.normalized) if email.sender else None
                repo.save_asset(
                    tag, dict(extraction.inventory), customer_id=customer.id if customer else None
                )
        elif decision.outcome is Outcome.CREATED:
            new = self._rule_ticket(mailbox, email, match)
            ticket_id, acknowledged = self._open_ticket(
                mailbox, email, new, decision, public=rule.public
            )
        elif decision.ticket is not None and decision.outcome in (Outcome.UPDATED, Outcome.CLOSED):
            repo.add_action(
                self._inbound_action(decision.ticket.id, email, public=False, new_text_only=True)
            )
            if decision.outcome is Outcome.CLOSED:
                repo.set_status(decision.ticket.id, TicketStatus.CLOSED)
        if decision.service_status is not None:
            service = self._services[rule.service or ""]
            previous = repo.last_service_status(service.name)
            repo.record_service_status(
                NewServiceStatus(
                    service=service.name,
                    status=decision.service_status.value,
                    at=self._clock(),
                    detail=email.subject,
                    ticket_id=ticket_id,
                    message_id=email.message_id,
                )
            )
            if previous is None or previous.status != decision.service_status.value:
                self.notifier.service_changed(
                    service, decision.service_status.value, email.subject, ticket_id
                )
        return ticket_id, acknowledged

    def _rule_ticket(self, mailbox: Mailbox, email: InboundEmail, match: RuleMatch) -> NewTicket:
        """The new ticket a rule opens: the email's, with the rule's type, fields and asset."""
        rule, extraction = match.rule, match.extraction
        new = self._new_ticket(mailbox, email)
        changes: dict[str, Any] = {
            name: str(extraction.fields[name])
            for name in _TICKET_FIELDS
            if name in extraction.fields
        }
        if "user_email" in changes:
            changes["user_email"] = changes["user_email"].lower()
        changes["custom_fields"] = {**new.custom_fields, **extraction.custom_fields}
        if rule.ticket_type:
            changes["ticket_type"] = rule.ticket_type
        if extraction.priority:
            changes["priority"] = extraction.priority
        if rule.type is RuleType.SERVICE_STATUS:
            service = self._services[rule.service or ""]
            changes["ticket_type"] = service.failure_ticket_type or new.ticket_type
            changes["summary"] = f"{service.name}: {email.subject or 'failed'}"
            changes["alert_key"] = _service_key(service.name)
        elif rule.type in (RuleType.ALERT, RuleType.VIRUS):
            changes["alert_key"] = self._alert_key(email, match)
        if extraction.asset_tag and rule.asset is not None:
            asset = self.repository.find_asset(rule.asset.field, extraction.asset_tag)
            if asset is not None:
                changes["asset_id"] = asset.id
        new = attrs.evolve(new, **changes)
        if rule.type is RuleType.APPLY_TEMPLATE and rule.template:
            new = self._templates[rule.template].apply(new)
        return new

    def _alert_key(self, email: InboundEmail, match: RuleMatch) -> str:
        """The key that ties an alert (or a virus detection) to its open ticket."""
        return self._alert_keys(email, match)[0]

    def _alert_keys(self, email: InboundEmail, match: RuleMatch) -> list[str]:
        """The keys an alert may be filed under, the one new tickets get first.

        Keys are kept apart per alert rule, so two monitoring systems that report the
        same host never close each other's tickets; an off_alert looks under its alert
        rule's keys. A clearance email's own marker ("CLEARED: …") is what its rule
        matches on, so it is also tried with those words taken out of the subject.
        """
        rule, extraction = match.rule, match.extraction
        if rule.type is RuleType.VIRUS:
            subject = extraction.asset_tag or (email.sender.normalized if email.sender else "")
            return [f"virus:{rule.name.lower()}:{subject.lower()}"]
        owner = (
            rule.alert_rule if rule.type is RuleType.OFF_ALERT and rule.alert_rule else rule.name
        )
        keys = [extraction.alert_key or email.subject.strip().lower()]
        if rule.type is RuleType.OFF_ALERT:
            keys += [alert_key_from_subject(email.subject, marker) or "" for marker in rule.subject]
        return [f"alert:{owner.lower()}:{key}" for key in dict.fromkeys(keys) if key]

    def _file_owner(self, email: InboundEmail, match: RuleMatch) -> tuple[FileOwner, int] | None:
        """Where a file transfer's attachments go: the named asset, else the sender's customer."""
        rule, extraction = match.rule, match.extraction
        if extraction.asset_tag and rule.asset is not None:
            asset = self.repository.find_asset(rule.asset.field, extraction.asset_tag)
            if asset is not None:
                return "asset", asset.id
        customer = self.repository.find_customer(email.sender.normalized) if email.sender else None
        return ("customer", customer.id) if customer is not None else None

    def _apply_bounce(self, email: InboundEmail, ticket_id: int) -> None:
        repo = self.repository
        # Which of our recipients bounced: the ticket's outbox mail named in the bounce.
        ticket = repo.get_ticket(ticket_id)
        if ticket is not None:
            repo.set_state(_UNDELIVERABLE + ticket.user_email.lower(), self._clock().isoformat())
        repo.add_action(
            NewAction(
                ticket_id=ticket_id,
                kind=ActionKind.BOUNCE,
                body=f"Delivery failed: {email.subject}\n\n{email.text}",
                from_address=email.sender.normalized if email.sender else "",
                public=False,
                message_id=None,
                attachments=_stored(email),
            )
        )

    def _new_ticket(self, mailbox: Mailbox, email: InboundEmail) -> NewTicket:
        assert email.sender is not None
        sender = email.sender.normalized
        customer = self.repository.find_customer(sender)
        own = {sender, *self._own_addresses(mailbox)}
        cc = tuple(
            dict.fromkeys(a.normalized for a in (*email.to, *email.cc) if a.normalized not in own)
        )
        return NewTicket(
            summary=email.subject.strip() or "(no subject)",
            details=email.text,
            ticket_type=mailbox.ticket_type,
            user_email=sender,
            user_name=email.sender.display_name,
            mailbox=mailbox.name,
            record=mailbox.record,
            customer=customer.name if customer else None,
            cc=cc,
        )

    def _inbound_action(
        self,
        ticket_id: int,
        email: InboundEmail,
        *,
        new_text_only: bool = False,
        public: bool = True,
    ) -> NewAction:
        body = (email.new_text or email.text) if new_text_only else email.text
        return NewAction(
            ticket_id=ticket_id,
            kind=ActionKind.EMAIL_IN,
            body=body,
            from_address=email.sender.normalized if email.sender else "",
            public=public,
            message_id=email.message_id,
            attachments=_stored(email),
        )

    def _acknowledgement(
        self, mailbox: Mailbox, ticket: Ticket, email: InboundEmail
    ) -> NewOutgoing | None:
        """The New Ticket Logged mail, rendered from the mailbox's message group."""
        assert email.sender is not None
        references = (*email.references, email.message_id) if email.message_id else email.references
        return self.notifier.acknowledgement(
            ticket,
            self.notifier.profile(mailbox.name),
            to=ticket.user_email or email.sender.normalized,
            in_reply_to=email.message_id,
            references=references,
        )

    def _quarantine_too_large(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        key = f"{mailbox.name}\x1fref:{fetched.ref}:{fetched.size}"
        with self.repository.transaction():
            if self.repository.get_dedupe(key) is None:
                self.repository.quarantine(
                    NewQuarantine(
                        mailbox=mailbox.name,
                        reason="too-large",
                        raw=b"",
                        detail=f"{fetched.size} bytes: over the limit; left in the mailbox unread",
                        dedupe_key=key,
                    )
                )
                self.repository.record_dedupe(DedupeRecord(key, "", Outcome.QUARANTINED.value))
        return ProcessingOutcome(mailbox.name, fetched.ref, Outcome.QUARANTINED, reason="too-large")

    def _quarantine_after_error(
        self, mailbox: Mailbox, fetched: FetchedMessage, exc: Exception
    ) -> ProcessingOutcome:
        detail = f"{type(exc).__name__}: {exc}"[:500]
        # Keyed by the bytes, so that the same email failing again on a re-fetch
        # (a backend that cannot move it aside) is not quarantined twice.
        key = f"{mailbox.name}\x1ferror:{hashlib.sha256(fetched.raw).hexdigest()}"
        try:
            with self.repository.transaction():
                if self.repository.get_dedupe(key) is None:
                    self.repository.quarantine(
                        NewQuarantine(
                            mailbox=mailbox.name,
                            reason="processing-error",
                            raw=fetched.raw,
                            detail=detail,
                            dedupe_key=key,
                        )
                    )
                    self.repository.record_dedupe(DedupeRecord(key, "", Outcome.QUARANTINED.value))
        except RepositoryError:
            log.exception("mailbox %s ref %s: could not quarantine", mailbox.name, fetched.ref)
            return ProcessingOutcome(
                mailbox.name, fetched.ref, Outcome.RETRY, reason="processing-error"
            )
        return ProcessingOutcome(
            mailbox.name, fetched.ref, Outcome.QUARANTINED, reason="processing-error"
        )

    def _dispose(self, mailbox: Mailbox, ref: str, outcome: Outcome) -> None:
        """Ack the source email now that its outcome is committed."""
        if outcome is Outcome.RETRY:
            return
        disposition = (
            Disposition.QUARANTINED if outcome is Outcome.QUARANTINED else Disposition.PROCESSED
        )
        try:
            mailbox.connector.ack(ref, disposition)
        except Exception as exc:  # noqa: BLE001 - committed already; a re-fetch is a no-op
            log.warning(
                "mailbox %s ref %s: could not dispose (%s): %s",
                mailbox.name,
                ref,
                disposition.value,
                exc,
            )

    # -- small helpers ----------------------------------------------------------

    def _mailbox_named(self, name: str) -> Mailbox | None:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        return None

    def _transport_for(self, mail: OutboxMail) -> MailTransport | None:
        mailbox = self._mailbox_named(mail.mailbox)
        if mailbox is not None and mailbox.transport is not None:
            return mailbox.transport
        return self.transport

    def _sender_for(self, mail: OutboxMail) -> SenderIdentity:
        """The mailbox's identity, with the From and Reply-To its customer overrides.

        An SMS goes out as the SMS provider wants it sent (its registered address).
        """
        if mail.kind == "sms" and self.notifier.sms_settings is not None:
            return self.notifier.sms_settings.sender
        mailbox = self._mailbox_named(mail.mailbox)
        sender = mailbox.sender if mailbox and mailbox.sender else self.settings.default_sender
        ticket = self.repository.get_ticket(mail.ticket_id) if mail.ticket_id else None
        customer = self.repository.find_customer(ticket.user_email) if ticket else None
        if customer is not None and (customer.from_address or customer.reply_address):
            sender = attrs.evolve(
                sender,
                from_address=customer.from_address or sender.from_address,
                reply_address=customer.reply_address or sender.reply_address,
            )
        return sender

    def _own_addresses(self, mailbox: Mailbox) -> set[str]:
        sender = mailbox.sender or self.settings.default_sender
        return {sender.from_address.lower()}

    def _record_health(self, name: str, error: str | None) -> None:
        previous = self._health.get(name, MailboxHealth(name))
        now = self._clock()
        if error is None:
            self._health[name] = attrs.evolve(
                previous, last_success=now, consecutive_failures=0, next_attempt_at=None
            )
            return
        failures = previous.consecutive_failures + 1
        # One failure is retried on the next cycle (a blip); from the second on, the
        # mailbox waits longer each time, so a dead server is not hammered every cycle.
        retry_at = now + self.settings.mailbox_backoff.delay(failures - 1) if failures > 1 else None
        self._health[name] = attrs.evolve(
            previous,
            last_error=error,
            last_error_at=now,
            consecutive_failures=failures,
            next_attempt_at=retry_at,
        )
        if retry_at is not None:
            log.warning(
                "mailbox %s failed %d times in a row; next attempt at %s",
                name,
                failures,
                retry_at.isoformat(),
            )

    def _onboarding_baseline(self, mailbox: Mailbox) -> set[str] | None:
        """For ``start_from = "now"``: the refs present when the mailbox was first read."""
        if mailbox.start_from != "now":
            return None
        state_key = f"mailbox:{mailbox.name}:baseline"
        stored = self.repository.get_state(state_key)
        if stored is not None:
            return set(json.loads(stored))
        # First read: remember what is there now, and leave all of it alone. A connector
        # that can list its refs without reading the emails (IMAP, POP3) is asked to.
        list_refs = getattr(mailbox.connector, "list_refs", None)
        found = list_refs() if callable(list_refs) else (m.ref for m in mailbox.connector.fetch())
        refs = sorted(found)
        self.repository.set_state(state_key, json.dumps(refs))
        log.info(
            "mailbox %s: onboarding mark set; %d existing emails left alone",
            mailbox.name,
            len(refs),
        )
        return set(refs)


def _service_key(name: str) -> str:
    return f"service:{name.lower()}"


def _inventory_tag(extraction: Extraction) -> str | None:
    """The asset an inventory report is about: a reported tag, else its host name."""
    for key in ("asset_tag", "assettag", "tag", "hostname", "computer_name", "computername"):
        value = extraction.inventory.get(key)
        if value and value.strip():
            return value.strip()
    return extraction.asset_tag


def _collision_key(key: str, fingerprint: str) -> str:
    return f"{key}\x1fcollision:{fingerprint}"


def _stored(email: InboundEmail) -> tuple[StoredAttachment, ...]:
    return tuple(
        StoredAttachment(
            filename=a.filename,
            storage_name=a.storage_name,
            content_type=a.content_type,
            size=a.size,
            content_id=a.content_id,
            inline=a.inline,
            payload=a.payload,
        )
        for a in email.attachments
    )


_QUARANTINE_DETAILS = {
    "too-large": "The email is larger than the configured limit.",
    "mime-too-deep": "The email's MIME parts nest deeper than the configured limit.",
    "too-many-parts": "The email has more MIME parts than the configured limit.",
    "headers-too-large": "The email's headers are larger than the configured limit.",
    "unparseable-sender": "The From header holds no valid address.",
    "bounce-unmatched": "A delivery failure that names none of our emails.",
    "thread-hijack-suspected": "A follow-up from an address unrelated to the ticket.",
    "message-id-collision": "Another email with the same Message-ID and different content "
    "was already processed.",
    "unparseable": "The email could not be parsed.",
}
