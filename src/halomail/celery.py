"""halomail's tasks on Celery: many mailboxes, many worker processes, many machines.

Install with ``pip install 'halomail[celery]'``. Two ways in:

* ``halomail worker`` and ``halomail scheduler`` run the app :func:`create_app` makes
  from a ``halomail.toml`` with a ``[scale]`` table (see ``docs/scaling.md``);
* a host that already runs Celery calls :func:`register` on its own app, with its own
  repository::

      from celery import Celery
      import halomail.celery

      app = Celery("helpdesk", broker="redis://127.0.0.1:6379/0")
      halomail.celery.register(app, halomail.load_config("halomail.toml"),
                               repository=make_repository)

The tasks, by their stable names:

``halomail.poll_mailbox(name)``
    Read one mailbox (:meth:`~halomail.MailProcessor.process_mailbox`) while holding its
    lease in the ledger; when another worker holds it, the task ends quietly.
``halomail.send_outbox()``
    Send due outgoing mail (:meth:`~halomail.MailProcessor.send_outbox`): each mail is
    claimed before it is sent.
``halomail.check_services()``
    Check the monitored services (:meth:`~halomail.MailProcessor.check_services`).
``halomail.schedule_polls()``
    Enqueue one ``poll_mailbox`` per enabled mailbox, each expiring after one poll
    interval, so a backlog of polls never piles up behind a slow worker.
``halomail.purge_ledger()``
    Forget the ledger's old rows (:meth:`~halomail.MailProcessor.purge_ledger`) with
    ``[processing] ledger_retention_days``; scheduled hourly, it purges once a day.

**Running a task twice is safe, so tasks are acknowledged late.** A task is taken off
the queue only when it ends (``acks_late``, ``reject_on_worker_lost``, one task
prefetched at a time); the task of a worker that dies runs again on another. Nothing
is doubled by that: a mailbox is read only under its lease, each email is recorded
once under its dedupe key in the transaction that makes its ticket, and outgoing mail
is claimed before it is sent and marked sent after (only a crash between a send and
its mark can send a mail twice, under the same Message-ID; see ``docs/scaling.md``).

**One processor per worker process, made after the fork.** Each process builds its
:class:`~halomail.MailProcessor` (and so its repository connection) on its first task
and closes it when the process ends: a database connection is never shared across a
fork.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

try:
    import celery
    from celery import signals
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without celery
    raise ImportError(
        "halomail.celery needs Celery and Redis: pip install 'halomail[celery]'"
    ) from exc

from halomail import app as composition
from halomail._text import RedactingFilter
from halomail.config.loader import Config
from halomail.config.scale import ScaleSettings
from halomail.errors import ConfigError, TransientRepositoryError
from halomail.runner import Mailbox, MailProcessor
from halomail.tickets.repository import TicketRepository

__all__ = [
    "CHECK_SERVICES",
    "POLL_MAILBOX",
    "PURGE_LEDGER",
    "SCHEDULE_POLLS",
    "SEND_OUTBOX",
    "HalomailTasks",
    "beat_schedule",
    "create_app",
    "register",
    "require_broker",
]

log = logging.getLogger(__name__)

#: The tasks' names: stable, so queued tasks survive an upgrade.
POLL_MAILBOX = "halomail.poll_mailbox"
SEND_OUTBOX = "halomail.send_outbox"
CHECK_SERVICES = "halomail.check_services"
SCHEDULE_POLLS = "halomail.schedule_polls"
PURGE_LEDGER = "halomail.purge_ledger"
#: How often the scheduler asks for a purge; the processor purges once a day at most.
PURGE_INTERVAL_SECONDS = 3600.0

#: A repository, or a callable that makes one (called once in each worker process).
RepositorySource = TicketRepository | Callable[[], TicketRepository]

# Every task may run twice (see the module's docstring), so each is acknowledged when it
# ends and put back on the queue when its worker dies; results are never stored.
_TASK_OPTIONS: dict[str, Any] = {
    # On this app only: a shared task would join every Celery app made afterwards.
    "shared": False,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


class HalomailTasks:
    """halomail's tasks registered on one Celery app, and the processor they share.

    Made by :func:`register`. The processor is built lazily, once per process (after a
    worker's fork), and closed by :meth:`close`, which runs when a worker process ends.

    Attributes:
        poll_mailbox: The ``halomail.poll_mailbox`` task (argument: the mailbox's name).
        send_outbox: The ``halomail.send_outbox`` task.
        check_services: The ``halomail.check_services`` task.
        schedule_polls: The ``halomail.schedule_polls`` task.
        purge_ledger: The ``halomail.purge_ledger`` task.
    """

    def __init__(
        self, app: celery.Celery, config: Config, repository: RepositorySource | None
    ) -> None:
        self.app = app
        self.config = config
        self._repository = repository
        self._processor: MailProcessor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()  # a threaded pool may start two tasks at once

        # Celery inspects a task's signature, so each task is a plain function.
        def poll_mailbox(name: str) -> None:
            with _until_next_round(f"poll of mailbox {name}"):
                self._poll_mailbox(name)

        def send_outbox() -> None:
            with _until_next_round("outbox send"):
                self._send_outbox()

        def check_services() -> None:
            with _until_next_round("service check"):
                self._check_services()

        def schedule_polls() -> None:
            self._schedule_polls()

        def purge_ledger() -> None:
            with _until_next_round("ledger purge"):
                self._purge_ledger()

        self.poll_mailbox = app.task(name=POLL_MAILBOX, **_TASK_OPTIONS)(poll_mailbox)
        self.send_outbox = app.task(name=SEND_OUTBOX, **_TASK_OPTIONS)(send_outbox)
        self.check_services = app.task(name=CHECK_SERVICES, **_TASK_OPTIONS)(check_services)
        self.schedule_polls = app.task(name=SCHEDULE_POLLS, **_TASK_OPTIONS)(schedule_polls)
        self.purge_ledger = app.task(name=PURGE_LEDGER, **_TASK_OPTIONS)(purge_ledger)

    def processor(self) -> MailProcessor:
        """This process's processor, built on first use.

        A processor inherited through a fork is left alone (its connections belong to
        the parent) and a new one is built.
        """
        with self._lock:
            if self._processor is None or self._pid != os.getpid():
                self._processor = composition.build_processor(self.config, self._open_repository())
                self._pid = os.getpid()
                if self._counts_metrics():
                    from halomail import metrics

                    metrics.observe(self._processor)
                log.info("built the processor of worker process %d", self._pid)
            return self._processor

    def _open_repository(self) -> TicketRepository | None:
        """The host's repository (made now, when it gave a factory), or ``None`` for
        the one ``[storage]`` names, which the processor then opens and owns."""
        source = self._repository
        if source is None:
            return None
        if callable(source):
            return source()
        return source

    def close(self) -> None:
        """Close this process's processor, if it built one (what a host gave stays open)."""
        with self._lock:
            processor, self._processor = self._processor, None
            if processor is not None and self._pid == os.getpid():
                processor.close()
                log.info("closed the processor of worker process %d", self._pid)
                if self._counts_metrics():
                    from halomail import metrics

                    # Its counts stay in the sum; only its live gauges are dropped.
                    metrics.mark_process_dead(os.getpid())

    def _counts_metrics(self) -> bool:
        """Whether ``[scale] metrics_port`` asks this worker's processes to count."""
        scale = self.config.scale
        return scale is not None and scale.metrics_port is not None

    # -- the tasks ---------------------------------------------------------------

    def _poll_mailbox(self, name: str) -> None:
        """Read one mailbox under its lease; quietly nothing when another worker holds it.

        Safe to run twice: the lease keeps two workers out of one mailbox, and each
        email's dedupe key, written with its ticket, makes a re-read email a duplicate.
        """
        processor = self.processor()
        mailbox = next((m for m in processor.mailboxes if m.name == name), None)
        if mailbox is None:
            # Queued before the configuration changed: nothing to do.
            log.warning("poll of mailbox %s: no such enabled mailbox, ignored", name)
            return
        try:
            report = processor.process_mailbox(mailbox)
        finally:
            _close_connection(mailbox)
        counts = Counter(outcome.outcome.value for outcome in report.outcomes)
        summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no new email"
        if report.error is not None:
            log.warning("mailbox %s: %s; error: %s", name, summary, report.error)
        elif report.note is not None:
            log.info("mailbox %s: %s (%s)", name, summary, report.note)
        else:
            log.info("mailbox %s: %s", name, summary)

    def _send_outbox(self) -> None:
        """Send due outgoing mail.

        Safe to run twice and in many workers at once: each mail is claimed before it
        is sent, so only one worker sends it.
        """
        report = self.processor().send_outbox()
        log.info(
            "outbox: %d sent, %d to retry, %d failed",
            report.sent,
            report.retrying,
            report.failed,
        )

    def _check_services(self) -> None:
        """Check the monitored services (safe to run twice: an overdue service is
        turned Unknown once, and its ticket is the open one found again)."""
        checks = self.processor().check_services()
        unknown = sum(1 for check in checks if check.turned_unknown)
        log.info("services: %d checked, %d turned unknown", len(checks), unknown)

    def _purge_ledger(self) -> None:
        """Forget the ledger's old rows, once a day across every worker (safe to run
        twice: a second run finds the day's purge begun, or nothing left to forget)."""
        gone = self.processor().purge_ledger()
        if gone:
            log.info("ledger: %d old rows forgotten", gone)

    def _schedule_polls(self) -> None:
        """Enqueue one poll per enabled mailbox, each expiring after one poll interval.

        A poll not started by then is dropped: the next round's poll replaces it, so a
        backlog never grows behind slow workers. Safe to run twice (a second poll of a
        mailbox finds its lease held, or nothing new).
        """
        expires = _scale(self.config).poll_interval_seconds
        names = [m.name for m in self.config.mailboxes if m.enabled]
        for name in names:
            self.poll_mailbox.apply_async(args=(name,), expires=expires)
        log.info("scheduled %d mailbox polls", len(names))


def _close_connection(mailbox: Mailbox) -> None:
    """Log out of the mailbox's server after a poll (queued acknowledgements go first).

    The next poll of this mailbox may run in any worker process, so a connection kept
    here would mostly sit idle: held open by every process that ever polled the
    mailbox, it would pile up towards one per mailbox per process, past what servers
    allow one account (Gmail: about 15).
    """
    try:
        mailbox.connector.close()
    except Exception as exc:  # noqa: BLE001 - unsent acks mean a re-read email is skipped
        log.warning("mailbox %s: closing its connection failed: %s", mailbox.name, exc)


@contextlib.contextmanager
def _until_next_round(what: str) -> Iterator[None]:
    """End a task whose repository is down or busy with one warning line.

    The scheduler queues the same work again next round, and nothing was half done (an
    email's outcome and its dedupe key commit together), so a traceback at ERROR for
    every task of an outage would only bury what an operator needs to see.
    """
    try:
        yield
    except TransientRepositoryError as exc:
        log.warning("%s: the repository is unavailable, left for the next round: %s", what, exc)


def register(
    app: celery.Celery, config: Config, repository: RepositorySource | None = None
) -> HalomailTasks:
    """Register halomail's tasks on a Celery app (the host's own, or :func:`create_app`'s).

    Args:
        app: The Celery app.
        config: The configuration whose mailboxes, rules and outgoing settings the tasks
            use (:func:`~halomail.load_config`).
        repository: Where tickets live. ``None`` opens the one ``[storage]`` names, in
            each worker process. A callable is called once in each worker process, after
            the fork: pass one when the repository holds a connection (a connection must
            never be shared across a fork). A repository object is used as it is and is
            never closed by halomail.

    Returns:
        The registered tasks; their processors close when a worker process ends.

    The host's worker should take one task at a time (``worker_prefetch_multiplier =
    1``), as :func:`create_app` sets, so a task that waits is not stuck behind a long one.
    """
    tasks = HalomailTasks(app, config, repository)

    def close_on_exit(**_: object) -> None:
        tasks.close()

    # A prefork child ends with worker_process_shutdown; a solo or threaded worker with
    # worker_shutdown. Celery's signals are process-wide, so these are held strongly.
    signals.worker_process_shutdown.connect(close_on_exit, weak=False)
    signals.worker_shutdown.connect(close_on_exit, weak=False)
    for setup in (signals.after_setup_logger, signals.after_setup_task_logger):
        setup.connect(_redact_worker_logs, weak=False, dispatch_uid=f"halomail.redact.{id(setup)}")
    return tasks


def create_app(config: Config) -> celery.Celery:
    """The Celery app ``halomail worker`` and ``halomail scheduler`` run.

    Configured from ``[scale]``: the broker, halomail's queue, late acknowledgement, one
    task prefetched at a time, Redis's visibility timeout, no result backend, and the
    schedule of :func:`beat_schedule`. Nothing connects until a worker or the
    scheduler starts, and no repository is opened here (each worker process opens its
    own).

    Raises:
        ConfigError: The configuration has no ``[scale] broker_url``.
    """
    scale = require_broker(config)
    app = celery.Celery("halomail", broker=scale.broker_connection_url, set_as_current=False)
    app.conf.update(
        task_default_queue=scale.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": scale.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        beat_schedule=beat_schedule(config),
        timezone="UTC",
        enable_utc=True,
        # halomail's tasks use JSON-safe arguments only: never unpickle what a broker holds.
        accept_content=["json"],
        task_serializer="json",
    )
    register(app, config)
    return app


def beat_schedule(config: Config) -> dict[str, dict[str, Any]]:
    """The scheduler's entries: polls, the outbox, the service checks and the ledger's
    purge, each expiring after its own interval so that a stopped worker pool does not
    come back to a pile."""
    scale = _scale(config)
    every = {
        SCHEDULE_POLLS: scale.poll_interval_seconds,
        SEND_OUTBOX: scale.outbox_interval_seconds,
        CHECK_SERVICES: scale.service_check_interval_seconds,
        PURGE_LEDGER: PURGE_INTERVAL_SECONDS,
    }
    return {
        name: {"task": name, "schedule": seconds, "options": {"expires": seconds}}
        for name, seconds in every.items()
    }


def require_broker(config: Config) -> ScaleSettings:
    """``[scale]``, checked to name a broker.

    Raises:
        ConfigError: At ``scale.broker_url``, saying what to add.
    """
    scale = config.scale
    if scale is None or scale.broker_url is None:
        raise ConfigError(
            "scale.broker_url",
            "required to run workers and the scheduler: add a [scale] table with "
            'broker_url = "redis://127.0.0.1:6379/0" (see docs/scaling.md)',
        )
    return scale


def _scale(config: Config) -> ScaleSettings:
    """``[scale]``, or its defaults for a host app whose file has none."""
    return config.scale if config.scale is not None else ScaleSettings()


def _redact_worker_logs(logger: logging.Logger, **_: object) -> None:
    """Celery sets up its own log handlers: mask URL secrets on them as ``halomail`` does."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
