"""The runner: :class:`MailProcessor` reads mailboxes, and the pipeline does the rest.

For every email a mailbox yields, the processor runs one unit of work
(:class:`~halomail.pipeline.unit.UnitOfWork`: parse, dedupe, decide, apply in one
transaction) and only after that commit asks the connector to dispose of the source
email. A crash anywhere therefore leaves either nothing (the email is fetched again)
or the whole outcome (the email is recognised by its dedupe key and disposed of as
its recorded outcome says). Outgoing mail is sent after all mailboxes are read, from
the outbox.

This module owns what happens around the units: mailboxes read in threads, one
writer at a time in the repository, mailbox leases, health and backoff, IDLE
watchers, monitored-service checks, the outbox's routing, and :meth:`~MailProcessor.close`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from halomail._mailbox_state import MailboxLease, MailboxLedger, OneWriter
from halomail.backends.base import Disposition, FetchedMessage, MailTransport
from halomail.errors import TransientConnectorError, TransientRepositoryError
from halomail.inbound.parse import parse_email
from halomail.outbound.notifier import Notifier
from halomail.outbound.outbox import (
    MessageIdFactory,
    Outbox,
    SenderIdentity,
    SendReport,
    server_wait,
)
from halomail.outbound.sms import SmsSettings
from halomail.pipeline.batch import Batches, report_each, run_batch, until_broken
from halomail.pipeline.busy import PassStop, stops_the_pass
from halomail.pipeline.context import Context, ThrottleWarnings
from halomail.pipeline.handlers.service import check_silence
from halomail.pipeline.observers import Observers, ProcessorObserver
from halomail.pipeline.reports import MailboxHealth, MailboxReport, RunReport, ServiceCheck
from halomail.pipeline.results import Outcome, ProcessingOutcome, Reason, Simulation
from halomail.pipeline.retention import purge_when_due
from halomail.pipeline.settings import DEFAULT_MAILBOX_LEASE, Mailbox, ProcessorSettings
from halomail.pipeline.unit import UnitOfWork
from halomail.rules import EmailRule, RuleEngine
from halomail.services import ServiceDefinition
from halomail.templates.render import TemplateRenderer
from halomail.tickets.models import OutboxMail, utcnow
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
    "ProcessorObserver",
    "ProcessorSettings",
    "Reason",
    "RunReport",
    "ServiceCheck",
    "Simulation",
]

log = logging.getLogger(__name__)
#: How long a mailbox lease lasts unless renewed, by default
#: (:attr:`ProcessorSettings.mailbox_lease`, ``[processing] mailbox_lease_seconds``).
LEASE_TTL = DEFAULT_MAILBOX_LEASE


class MailProcessor:
    """Turns the email of one or more mailboxes into tickets, exactly once.

    Mailboxes are read in threads, but the repository is used by one thread at a
    time (fetching and parsing run concurrently; deciding, applying, committing,
    service checks and the outbox take turns), unless the repository declares
    ``thread_safe = True``.

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
        observers: Told each outcome, mailbox pass and outbox pass, for metrics
            (:class:`~halomail.pipeline.observers.ProcessorObserver`; see
            :meth:`add_observer`).

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
        observers: Sequence[ProcessorObserver] = (),
    ) -> None:
        names = [m.name for m in mailboxes]
        if len(set(names)) != len(names):
            raise ValueError(f"mailbox names must be unique: {names}")
        self._services = {s.name: s for s in services}
        templates = {t.name: t for t in ticket_templates}
        for rule in rules:
            if rule.service is not None and rule.service not in self._services:
                raise ValueError(f"rule {rule.name!r}: no monitored service {rule.service!r}")
            if rule.template is not None and rule.template not in templates:
                raise ValueError(f"rule {rule.name!r}: no ticket template {rule.template!r}")
        self._engine = RuleEngine(rules) if rules else None
        self.repository = repository
        self.mailboxes = tuple(mailboxes)
        self.settings = settings
        self.transport = transport
        self._clock = clock
        self._owns_repository = owns_repository
        self._closed = threading.Event()  # set by close(): watchers stop, none start
        ids = MessageIdFactory(
            settings.loop_token, settings.domain, previous_tokens=settings.previous_loop_tokens
        )
        #: Queues the mail that goes with ticket events; hosts call it when agents act.
        self.notifier = Notifier(
            repository,
            renderer or TemplateRenderer(),
            [m.profile for m in mailboxes],
            ids=ids,
            agents=agents,
            teams=teams,
            ticket_url=ticket_url,
            sms=sms,
            throttle_count=settings.ack_throttle_count,
            throttle_window=settings.ack_throttle_window,
            clock=clock,
        )
        self._unit = UnitOfWork(
            Context(
                repository=repository,
                settings=settings,
                engine=self._engine,
                services=self._services,
                templates=templates,
                notifier=self.notifier,
                ids=ids,
                clock=clock,
                throttle_warnings=ThrottleWarnings(
                    settings.ack_throttle_count, settings.ack_throttle_window
                ),
            )
        )
        # One writer: a host repository written the obvious way (one connection, no
        # locks) is never entered by two threads, unless it says it may be.
        self._writer = OneWriter(exclusive=not getattr(repository, "thread_safe", False))
        self._observers = Observers(observers, self._writer)
        self._outbox: Outbox | None = None  # made on first send_outbox()
        self._sending = threading.Lock()  # held by the send pass running now
        # Who holds this processor's mailbox leases: unique per process and processor.
        self._lease_owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        # Sync state and health live in the ledger, shared with every runner; this is
        # what this processor last knew of them.
        self._ledger = MailboxLedger(repository, self._writer, names)
        self._health = self._ledger.health
        self._arrived = threading.Event()  # set by a mailbox's watcher when mail is pushed
        self._watchers: dict[str, threading.Thread] = {}

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Release what the processor holds: watchers, connections, transports, and the
        repository when the processor opened it. Calling it again does nothing.

        IDLE watchers are stopped: closing a mailbox's connector interrupts its wait,
        and each watcher thread is joined.

        .. versionadded:: 0.1.0
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self._arrived.set()  # a wait_for_mail in progress returns (False) at once
        closers: list[tuple[str, Callable[[], object]]] = [
            (f"mailbox {m.name}", m.connector.close) for m in self.mailboxes
        ]
        transports = {id(t): t for t in (self.transport, *(m.transport for m in self.mailboxes))}
        closers += [
            ("transport", close)
            for t in transports.values()
            if callable(close := getattr(t, "close", None))
        ]
        for what, close in closers:
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                log.warning("closing %s failed: %s", what, exc)
        self._stop_watchers()
        if self._owns_repository and callable(close := getattr(self.repository, "close", None)):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - a failed close is reported, not raised
                log.warning("closing repository failed: %s", exc)

    def _stop_watchers(self) -> None:
        """Join the IDLE watchers, whose waits the closed connectors interrupted."""
        for name, watcher in self._watchers.items():
            watcher.join(timeout=5)
            if watcher.is_alive():
                log.warning("mailbox %s: its watcher did not stop within 5 seconds", name)
        self._watchers.clear()

    def add_observer(self, observer: ProcessorObserver) -> None:
        """Tell ``observer`` each outcome, mailbox pass and outbox pass from now on.

        What it raises is logged and never stops processing.

        .. versionadded:: 0.1.0
        """
        self._observers.add(observer)

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
        error lands in its report and in :meth:`health`. A busy repository does: after
        the first transient repository error (a locked database) every pass stops, the
        emails not read stay for the next cycle, services and the outbox wait too, and
        :attr:`RunReport.repository_busy` says so.

        Args:
            on_outcome: Called with each email's outcome as soon as it is known (from
                one thread at a time).

        Returns:
            The reports, in the order of the mailboxes.
        """
        enabled = [m for m in self.mailboxes if m.enabled]
        workers = min(self.settings.concurrent_mailboxes, len(enabled))
        stop = PassStop()
        if workers <= 1:
            reports = tuple(self._read_mailbox(m, on_outcome, stop) for m in enabled)
        else:
            report_one = on_outcome
            if on_outcome is not None:
                callback, lock = on_outcome, threading.Lock()

                def report_one(outcome: ProcessingOutcome) -> None:
                    with lock:
                        callback(outcome)

            with ThreadPoolExecutor(workers, thread_name_prefix="halomail-mailbox") as pool:
                reports = tuple(
                    pool.map(lambda m: self._read_mailbox(m, report_one, stop), enabled)
                )
        busy = stop.why()
        if busy is not None:
            # Services and the outbox write too: each would wait out the busy timeout.
            return RunReport(mailboxes=reports, repository_busy=busy)
        services = self.check_services()
        sent = self.send_outbox()
        self._purge_when_due()
        return RunReport(mailboxes=reports, sent=sent, services=services)

    def purge_ledger(self, *, force: bool = False) -> int:
        """Forget the ledger's rows older than :attr:`ProcessorSettings.ledger_retention`.

        :meth:`run_once` calls it after the outbox is sent. It purges once a day at most
        across the runners sharing the repository, unless ``force``, and returns the
        rows that went; records of emails fetched again within the retention stay, as do
        those of mailboxes whose mail stays (:mod:`halomail.pipeline.retention`).
        Without retention or :class:`~halomail.tickets.repository.LedgerRetention`, it
        does nothing. Raises :class:`TransientRepositoryError` when the repository is busy.

        .. versionadded:: 0.3.0
        """
        with self._writer:
            return purge_when_due(
                self.repository, self.settings, self.mailboxes, self._clock(), force=force
            )

    def _purge_when_due(self) -> None:
        """:meth:`purge_ledger`; a busy repository leaves it for the next cycle."""
        try:
            self.purge_ledger()
        except TransientRepositoryError as exc:
            log.warning("ledger: not purged this cycle, the repository is busy: %s", exc)

    def check_services(self) -> tuple[ServiceCheck, ...]:
        """Turn monitored services that stayed silent past their interval Unknown.

        A service is watched from the first check on; one whose last email (of any
        status) is older than its Status Checking Interval gets an ``unknown`` entry
        in its history, once, and its ``on_unknown`` action is done. Called by
        :meth:`run_once` after the mailboxes are read.
        """
        now = self._clock()
        checks: list[ServiceCheck] = []
        for service in self._services.values():
            with self._writer:
                checks.append(check_silence(self.repository, self.notifier, service, now))
        return tuple(checks)

    def process_mailbox(
        self, mailbox: Mailbox, *, on_outcome: Callable[[ProcessingOutcome], None] | None = None
    ) -> MailboxReport:
        """Process every email of ``mailbox``; never raises for a mailbox failure.

        With a repository that has leases, the mailbox is read only while this
        processor holds its lease (``mailbox:<name>``); when another runner holds it,
        the mailbox is skipped with a note in the report.

        Args:
            mailbox: One of this processor's mailboxes.
            on_outcome: Called with each email's outcome as soon as it is known.
        """
        return self._read_mailbox(mailbox, on_outcome, PassStop())

    def _read_mailbox(
        self,
        mailbox: Mailbox,
        on_outcome: Callable[[ProcessingOutcome], None] | None,
        stop: PassStop,
    ) -> MailboxReport:
        """:meth:`process_mailbox`, stopping when ``stop`` says the repository is busy."""
        self._ledger.load_health(mailbox.name)  # another runner may have failed or succeeded
        waiting = self._backing_off(mailbox)
        if waiting is not None:
            return MailboxReport(mailbox.name, (), error=waiting, skipped=True)
        lease = self._lease(mailbox)
        # Leases are taken one mailbox at a time (a small write each), so that a database
        # locked before the cycle costs one busy timeout, not one per mailbox thread.
        with stop.starting:
            busy = stop.why()
            if busy is not None:
                return MailboxReport(mailbox.name, (), skipped=True, note=f"not read: {busy}")
            try:
                if lease is not None and not lease.acquire():
                    held = f"not read: another runner holds its lease ({lease.name})"
                    log.info("mailbox %s %s", mailbox.name, held)
                    return MailboxReport(mailbox.name, (), skipped=True, note=held)
            except TransientRepositoryError as exc:
                # Not taken, so nothing to release: the pass ends after this one wait.
                stopped = stop.repository_busy(mailbox.name, 0, exc)
                return MailboxReport(mailbox.name, (), error=stopped)
        outcomes: list[ProcessingOutcome] = []
        left_alone = 0
        error: str | None = None
        note: str | None = None
        wait: dt.timedelta | None = None  # how long the server asked us to stay away
        try:
            # Under the lease: another runner may have read the mailbox since this one did.
            self._ledger.restore_sync(mailbox)
            baseline = self._onboarding_baseline(mailbox)
            messages: Iterator[FetchedMessage] = iter(mailbox.connector.fetch())
            batches = Batches(self.settings.batch_size, self.settings.batch_max_wait)
            broken: list[Exception] = []  # a fetch that failed midway, raised after the batch
            for fetched in until_broken(messages, broken):
                if (busy := stop.why()) is not None:
                    note = f"stopped: {busy}"
                    batches.take()  # not begun: left in the mailbox for the next cycle
                    break
                if lease is not None:
                    lease.renew_if_due()
                if baseline is not None and fetched.ref in baseline:
                    left_alone += 1
                    continue
                if (batch := batches.add(fetched)) is not None:
                    error = self._process_batch(mailbox, batch, outcomes, on_outcome, stop)
                    if error is not None:
                        break
            if batch := batches.take():  # what was fetched before the end, or the break
                if lease is not None:
                    lease.renew_if_due()  # the listing's end may have kept it waiting
                error = self._process_batch(mailbox, batch, outcomes, on_outcome, stop)
            if broken:
                raise broken[0]
        except TransientRepositoryError as exc:
            error = stop.repository_busy(mailbox.name, len(outcomes), exc)
        except Exception as exc:  # noqa: BLE001 - one broken mailbox must not stop the others
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TransientConnectorError):
                wait = server_wait(exc.retry_after)
            log.error("mailbox %s failed: %s", mailbox.name, error)
        finally:
            if stop.why() is None:  # a busy repository would only make this write wait
                # After the dispositions: the state names only emails not yet disposed of.
                self._ledger.save_sync(mailbox)
            try:
                # A connector that can keep its connections between cycles (IMAP) says
                # so with end_session(); close() is for when the processor closes.
                end_session = getattr(mailbox.connector, "end_session", None)
                (end_session if callable(end_session) else mailbox.connector.close)()
            except Exception as exc:  # noqa: BLE001 - a failed close is reported, not raised
                error = error or f"close failed: {type(exc).__name__}: {exc}"
                log.error("mailbox %s: close failed: %s", mailbox.name, exc)
            if lease is not None:
                lease.release()
        if stop.why() is None:  # a busy repository is not the mailbox's failure
            self._record_health(mailbox.name, error, wait)
            self._observers.mailbox_pass(mailbox.name, error)
        if left_alone:
            log.info(
                "mailbox %s: left %d older emails alone (start_from=now)", mailbox.name, left_alone
            )
        return MailboxReport(
            mailbox.name, tuple(outcomes), error=error, left_alone=left_alone, note=note
        )

    def _backing_off(self, mailbox: Mailbox) -> str | None:
        """Why ``mailbox`` is not read this cycle (repeated failures, or the server
        asked us to wait), or ``None``."""
        health = self._health.get(mailbox.name)
        retry_at = health.next_attempt_at if health is not None else None
        if health is None or retry_at is None or self._clock() >= retry_at:
            return None
        why = (
            f"not read: {health.consecutive_failures} failures in a row, next attempt "
            f"at {retry_at.isoformat()} (last error: {health.last_error})"
        )
        log.info("mailbox %s %s", mailbox.name, why)
        return why

    def _lease(self, mailbox: Mailbox) -> MailboxLease | None:
        """The mailbox's lease, when the repository has leases."""
        if not callable(getattr(self.repository, "acquire_lease", None)):
            return None
        return MailboxLease(
            self.repository,
            mailbox.name,
            self._lease_owner,
            self._clock,
            self._writer,
            self.settings.mailbox_lease,
        )

    def send_outbox(self) -> SendReport:
        """Send the queued outgoing mail that is due.

        Each mail leaves through its mailbox's transport, or the processor's; mail
        with neither stays queued. The outbox uses the repository, so it takes its
        turn as the one writer.
        """
        report = self._send_due()
        self._observers.send(report)
        return report

    def _send_due(self) -> SendReport:
        if self.transport is None and all(m.transport is None for m in self.mailboxes):
            return SendReport()
        # One pass at a time: the processor claims mail under one name, and a second
        # pass on another thread would be given the same claimed mail and send it again.
        if not self._sending.acquire(blocking=False):
            log.info("outbox: a send pass is already running in this processor")
            return SendReport()
        try:
            return self._send_claimed()
        finally:
            self._sending.release()

    def _send_claimed(self) -> SendReport:
        if self._outbox is None:
            # One outbox, so one claimant name, for the processor's life: mail it claimed
            # and could not send yet is its own to try again, not another runner's.
            self._outbox = Outbox(
                self.repository,
                self._transport_for,
                self._sender_for,
                loop_token=self.settings.loop_token,
                backoff=self.settings.backoff,
                clock=self._clock,
                lease=self.settings.outbox_claim,
            )
        with self._writer:
            return self._outbox.send_due()

    def wait_for_mail(self, timeout: float) -> bool:
        """Wait until a mailbox that can push reports new mail, or ``timeout`` passes.

        Mailboxes whose connector has ``wait_for_mail(timeout) -> bool`` (IMAP IDLE)
        are watched, each by one thread of its own; the others are simply read again
        on the next cycle. ``halomail run`` calls this between cycles, so pushed mail is
        processed within seconds while the poll interval stays long. A watcher still
        waiting from an earlier call is not doubled (each holds a connection), and news
        it brings in later ends the next wait at once. After :meth:`close` no watcher
        starts and the answer is False.

        Args:
            timeout: The longest wait, in seconds (the poll interval).

        Returns:
            True when a mailbox reported new mail before the timeout.
        """
        if self._closed.is_set():
            return False
        # A watcher gives up a little before this call does, so that by the next call it
        # has ended and a new one starts: no cycle goes unwatched. Mail that arrives in
        # that margin is read by the cycle that follows anyway.
        margin = min(1.0, timeout / 10)
        deadline = time.monotonic() + margin
        for ending in self._watchers.values():
            # One just ending its wait: let it end (and report), within one margin for all.
            ending.join(timeout=max(0.0, deadline - time.monotonic()))
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
            previous = self._watchers.get(mailbox.name)
            if previous is not None and previous.is_alive():
                continue  # still waiting from an earlier call: not doubled
            watcher = threading.Thread(
                target=self._watch,
                args=(mailbox.name, wait, timeout - margin),
                name=f"halomail-idle-{mailbox.name}",
                daemon=True,
            )
            self._watchers[mailbox.name] = watcher
            watcher.start()
        arrived = self._arrived.wait(timeout)
        self._arrived.clear()
        return arrived and not self._closed.is_set()

    def _watch(self, name: str, wait: Callable[[float], bool], timeout: float) -> None:
        try:
            if wait(timeout) and not self._closed.is_set():
                log.debug("mailbox %s: new mail pushed", name)
                self._arrived.set()
        except Exception as exc:  # noqa: BLE001 - a failed watch only means polling
            if not self._closed.is_set():  # closing interrupts the wait: not a failure
                log.warning("mailbox %s: waiting for new mail failed: %s", name, exc)

    def health(self) -> tuple[MailboxHealth, ...]:
        """Each mailbox's last success, last error and consecutive failures."""
        return tuple(self._health[m.name] for m in self.mailboxes)

    # -- one email -------------------------------------------------------------

    def process_message(self, mailbox: Mailbox, fetched: FetchedMessage) -> ProcessingOutcome:
        """Run the unit of work for one fetched email and dispose of it.

        Never raises: a transient repository failure gives ``retry`` (the source is
        left untouched), anything unexpected quarantines the email with its reason.
        The source is disposed of after the commit, on the calling thread (the
        mailbox's: connectors are not thread-safe).
        """
        started = time.monotonic()
        outcome = self._unit.run(mailbox, fetched, self._writer)
        self._dispose(mailbox, fetched.ref, outcome.disposed_as)
        self._observers.outcome(mailbox.name, outcome)
        _log_outcome(outcome, time.monotonic() - started)
        return outcome

    def _process_batch(
        self,
        mailbox: Mailbox,
        batch: Sequence[FetchedMessage],
        outcomes: list[ProcessingOutcome],
        on_outcome: Callable[[ProcessingOutcome], None] | None,
        stop: PassStop,
    ) -> str | None:
        """Commit ``batch`` (:func:`~halomail.pipeline.batch.run_batch`), then dispose of
        each email; returns why the pass stops (a busy repository), or ``None``."""
        started = time.monotonic()
        results = run_batch(self._unit, mailbox, batch, self._writer)
        seconds = (time.monotonic() - started) / len(batch)
        for fetched, outcome in zip(batch, results, strict=True):
            self._dispose(mailbox, fetched.ref, outcome.disposed_as)
        for outcome in results:
            self._observers.outcome(mailbox.name, outcome)
            _log_outcome(outcome, seconds)
            outcomes.append(outcome)
        # All disposed of and counted before on_outcome may stop the pass (SIGTERM).
        report_each(results, on_outcome)
        busy = next((o for o in results if stops_the_pass(o)), None)
        if busy is None:
            return None
        return stop.repository_busy(mailbox.name, len(outcomes), busy.detail)

    def simulate(self, raw: bytes, mailbox: Mailbox | None = None) -> ProcessingOutcome:
        """What processing ``raw`` would do, and why; nothing is written or sent."""
        mailbox = mailbox or self.mailboxes[0]
        email = parse_email(raw, limits=self.settings.limits)
        with self._writer:
            return self._unit.simulate(mailbox, raw, email)

    def explain(self, raw: bytes, mailbox: Mailbox | None = None) -> Simulation:
        """:meth:`simulate`, plus each rule in order (matched, or the first failed
        criterion), the email's classification, and why it would (not) be acknowledged."""
        mailbox = mailbox or self.mailboxes[0]
        email = parse_email(raw, limits=self.settings.limits)
        with self._writer:
            return self._unit.explain(mailbox, raw, email)

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

    # -- outbox routing ---------------------------------------------------------

    def _mailbox_named(self, name: str) -> Mailbox | None:
        return next((mailbox for mailbox in self.mailboxes if mailbox.name == name), None)

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
        with self._writer:
            ticket = self.repository.get_ticket(mail.ticket_id) if mail.ticket_id else None
            customer = self.repository.find_customer(ticket.user_email) if ticket else None
        if customer is not None and (customer.from_address or customer.reply_address):
            sender = attrs.evolve(
                sender,
                from_address=customer.from_address or sender.from_address,
                reply_address=customer.reply_address or sender.reply_address,
            )
        return sender

    # -- health and onboarding ---------------------------------------------------

    def _record_health(
        self, name: str, error: str | None, wait: dt.timedelta | None = None
    ) -> None:
        with self._writer:
            self._ledger.record_health(
                self._next_health(self._health.get(name, MailboxHealth(name)), error, wait)
            )

    def _next_health(
        self, previous: MailboxHealth, error: str | None, wait: dt.timedelta | None = None
    ) -> MailboxHealth:
        """The health after a pass; ``wait``: the server asked us to stay away that long
        (kept in the ledger, so every runner, and the next process, honours it)."""
        now = self._clock()
        if error is None:
            return attrs.evolve(
                previous, last_success=now, consecutive_failures=0, next_attempt_at=None
            )
        failures = previous.consecutive_failures + 1
        # One failure is retried on the next cycle (a blip); from the second on, the
        # mailbox waits longer each time, so a dead server is not hammered every cycle.
        retry_at = now + self.settings.mailbox_backoff.delay(failures - 1) if failures > 1 else None
        if wait is not None and (retry_at is None or retry_at < now + wait):
            retry_at = now + wait
            error = f"{error} (the server asked us to wait until {retry_at.isoformat()})"
            log.warning(
                "mailbox %s: not read before %s, as its server asked",
                previous.name,
                retry_at.isoformat(),
            )
        elif retry_at is not None:
            log.warning(
                "mailbox %s failed %d times in a row; next attempt at %s",
                previous.name,
                failures,
                retry_at.isoformat(),
            )
        return attrs.evolve(
            previous,
            last_error=error,
            last_error_at=now,
            consecutive_failures=failures,
            next_attempt_at=retry_at,
        )

    def _onboarding_baseline(self, mailbox: Mailbox) -> set[str] | None:
        """For ``start_from = "now"``: the refs present when the mailbox was first read."""
        if mailbox.start_from != "now":
            return None
        state_key = f"mailbox:{mailbox.name}:baseline"
        with self._writer:
            stored = self.repository.get_state(state_key)
        if stored is not None:
            return set(json.loads(stored))
        # First read: remember what is there now, and leave all of it alone. A connector
        # that can list its refs without reading the emails (IMAP, POP3) is asked to.
        list_refs = getattr(mailbox.connector, "list_refs", None)
        found = list_refs() if callable(list_refs) else (m.ref for m in mailbox.connector.fetch())
        refs = sorted(found)
        with self._writer:
            self.repository.set_state(state_key, json.dumps(refs))
        log.info(
            "mailbox %s: onboarding mark set; %d existing emails left alone",
            mailbox.name,
            len(refs),
        )
        return set(refs)


def _log_outcome(outcome: ProcessingOutcome, seconds: float) -> None:
    """One INFO line per email; its fields also travel as the record's extras (JSON logs)."""
    if not log.isEnabledFor(logging.INFO):
        return  # the default level: nothing to build for every email
    fields = {
        "mailbox": outcome.mailbox,
        "source_id": outcome.ref,
        "message_id": outcome.message_id,
        "outcome": outcome.outcome.value,
        "reason": outcome.reason.value if outcome.reason is not None else None,
        "rule": outcome.rule,
        "ticket_id": outcome.ticket_id,
        "seconds": round(seconds, 3),
    }
    log.info(
        "mailbox %s source %s: %s ticket=%s reason=%s rule=%s in %.3fs (Message-ID %s)",
        fields["mailbox"],
        fields["source_id"],
        fields["outcome"],
        fields["ticket_id"],
        fields["reason"],
        fields["rule"],
        seconds,
        fields["message_id"],
        extra=fields,
    )
