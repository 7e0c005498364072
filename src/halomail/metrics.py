"""Prometheus metrics for operators: emails by outcome, mailbox failures, the outbox.

Needs the ``metrics`` extra (``pip install 'halomail[metrics]'``, which installs
``prometheus_client``). Wiring it takes two calls::

    observe(processor)                  # the processor now reports to Prometheus
    start_metrics_server(9464)          # GET http://127.0.0.1:9464/metrics

Several processes (Celery's prefork pool) share one set of numbers through
prometheus_client's multiprocess mode: the parent calls :func:`prepare_multiprocess`
before anything imports ``prometheus_client`` and before it forks, each child's
numbers go to files in that directory, :func:`start_metrics_server` (in the parent)
serves their sum, and :func:`mark_process_dead` is called when a child exits.

The metrics, and why they have the labels they have:

``halomail_emails_total{outcome}``
    Emails by their outcome (``created``, ``updated``, ``closed``, ``status``,
    ``ignored``, ``skipped``, ``quarantined``, ``retry``). No ``mailbox`` label: an
    MSP runs thousands of mailboxes, and eight outcomes times thousands of mailboxes
    is tens of thousands of series that Prometheus keeps in memory for little use
    (``halomail run --json`` and the logs carry each email's mailbox).
``halomail_mailbox_passes_total``
    Passes over a mailbox (a pass reads every email it holds).
``halomail_mailbox_failures_total{mailbox}``
    Passes that failed (connection, authentication, an expired token…). Per mailbox,
    because "which mailbox?" is the operator's first question, and a series exists
    only for a mailbox that has failed at least once.
``halomail_mailbox_failing{mailbox}``
    1 while a mailbox's latest pass failed, 0 once one succeeds. A counter cannot say
    "still failing"; this can, so the alert "failing for 15 minutes" is
    ``halomail_mailbox_failing == 1`` held ``for: 15m``. It costs one series per
    mailbox (thousands are cheap for Prometheus, unlike one per mailbox and outcome);
    each pass sets it, because with many processes the pass that recovers a mailbox
    may run in a process that never saw it fail.
``halomail_outbox_sent_total``, ``halomail_outbox_retries_total``, ``halomail_outbox_failed_total``
    Outgoing mail sent, tried and left for a later attempt, and given up for good.
``halomail_outbox_backlog``
    Outgoing mail still pending (due now, or waiting for its next attempt), counted
    after each outbox pass. Mail waiting out a retry delay is counted on purpose: an
    SMTP server that is down leaves exactly such mail, and that is the backlog an
    operator must see grow. Counted with the repository's ``list_outgoing`` (the
    ``OutboxAdmin`` role the shipped repositories have), a page at a time, once per
    outbox pass, never per email; the count stops at :data:`BACKLOG_CAP`.

There is no histogram of pass durations: observers hear when a pass ends, not when
it began, and adding a clock to the pass is not worth the series (Prometheus's own
scrape duration and the cycle's log line answer "is it slow?").

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from halomail.outbound.outbox import SendReport
from halomail.pipeline.results import Outcome, ProcessingOutcome
from halomail.tickets.models import OutboxStatus

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry, Counter, Gauge

    from halomail.runner import MailProcessor

__all__ = [
    "BACKLOG_CAP",
    "METRIC_NAMES",
    "MetricsServer",
    "PrometheusObserver",
    "mark_process_dead",
    "observe",
    "prepare_multiprocess",
    "start_metrics_server",
]

# Checked without importing it: importing prometheus_client fixes, once and for all,
# whether its values live in memory or in the multiprocess directory.
if importlib.util.find_spec("prometheus_client") is None:  # pragma: no cover - extras
    raise ImportError("halomail.metrics needs prometheus_client: pip install 'halomail[metrics]'")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable prometheus_client reads to count in files, for many processes."""

BACKLOG_CAP = 10_000
"""The most pending mail :data:`halomail_outbox_backlog` counts (past it, it reads this)."""

_BACKLOG_PAGE = 500

METRIC_NAMES = (
    "halomail_emails_total",
    "halomail_mailbox_passes_total",
    "halomail_mailbox_failures_total",
    "halomail_mailbox_failing",
    "halomail_outbox_sent_total",
    "halomail_outbox_retries_total",
    "halomail_outbox_failed_total",
    "halomail_outbox_backlog",
)
"""Every metric halomail exports, as Prometheus names it (counters with ``_total``)."""


@attrs.frozen
class _Metrics:
    """The metric objects, made once per process (prometheus_client refuses twins)."""

    emails: Counter
    passes: Counter
    failures: Counter
    failing: Gauge
    sent: Counter
    retries: Counter
    failed: Counter
    backlog: Gauge


_made: _Metrics | None = None
_making = threading.Lock()


def _metrics() -> _Metrics:
    """The metrics, registered with prometheus_client's default registry on first use."""
    global _made
    with _making:
        if _made is None:
            _made = _make_metrics()
        return _made


def _make_metrics() -> _Metrics:
    from prometheus_client import Counter, Gauge

    emails = Counter("halomail_emails", "Emails processed, by outcome.", ["outcome"])
    for outcome in Outcome:
        emails.labels(outcome.value)  # every outcome shows, at 0, from the first scrape
    return _Metrics(
        emails=emails,
        passes=Counter("halomail_mailbox_passes", "Passes over a mailbox."),
        failures=Counter("halomail_mailbox_failures", "Mailbox passes that failed.", ["mailbox"]),
        # "mostrecent": with many processes, the latest pass over the mailbox wins.
        failing=Gauge(
            "halomail_mailbox_failing",
            "1 while the latest pass over the mailbox failed, else 0.",
            ["mailbox"],
            multiprocess_mode="mostrecent",
        ),
        sent=Counter("halomail_outbox_sent", "Outgoing mail sent."),
        retries=Counter(
            "halomail_outbox_retries", "Outgoing mail tried and left for a later attempt."
        ),
        failed=Counter("halomail_outbox_failed", "Outgoing mail given up for good."),
        backlog=Gauge(
            "halomail_outbox_backlog",
            "Outgoing mail pending after the latest outbox pass.",
            multiprocess_mode="mostrecent",
        ),
    )


class PrometheusObserver:
    """Counts what a :class:`~halomail.MailProcessor` reports, in Prometheus metrics.

    Implements :class:`~halomail.pipeline.observers.ProcessorObserver`; add it with
    :meth:`~halomail.MailProcessor.add_observer`, or let :func:`observe` do it.

    Args:
        repository: Read after each outbox pass for ``halomail_outbox_backlog`` (needs
            ``list_outgoing``); without one the backlog is not measured.

    Raises:
        ImportError: prometheus_client is not installed.

    .. versionadded:: 0.1.0
    """

    def __init__(self, repository: object | None = None) -> None:
        self._metrics = _metrics()
        self._repository = repository

    def on_outcome(self, mailbox: str, outcome: ProcessingOutcome) -> None:
        """Count the email under its outcome."""
        self._metrics.emails.labels(outcome.outcome.value).inc()

    def on_pass(self, mailbox: str, error: str | None) -> None:
        """Count the pass; a failed one also counts against its mailbox."""
        self._metrics.passes.inc()
        if error is not None:
            self._metrics.failures.labels(mailbox).inc()
        self._metrics.failing.labels(mailbox).set(0 if error is None else 1)

    def on_send(self, report: SendReport) -> None:
        """Count what the outbox pass did, then measure the backlog it left."""
        self._metrics.sent.inc(report.sent)
        self._metrics.retries.inc(report.retrying)
        self._metrics.failed.inc(report.failed)
        backlog = _pending_outgoing(self._repository)
        if backlog is not None:
            self._metrics.backlog.set(backlog)


def _pending_outgoing(repository: object | None) -> int | None:
    """How much outgoing mail ``repository`` holds pending, up to :data:`BACKLOG_CAP`.

    Returns:
        The count, or ``None`` when the repository cannot list its outbox.
    """
    list_outgoing = getattr(repository, "list_outgoing", None)
    if not callable(list_outgoing):
        return None
    return sum(1 for _ in _pending_pages(list_outgoing))


def _pending_pages(list_outgoing: Any) -> Iterator[object]:
    """Pending mail, a page at a time, so a long backlog is never all in memory."""
    offset = 0
    while offset < BACKLOG_CAP:
        page = list_outgoing(
            status=OutboxStatus.PENDING,
            limit=min(_BACKLOG_PAGE, BACKLOG_CAP - offset),
            offset=offset,
        )
        yield from page
        if len(page) < _BACKLOG_PAGE:
            return
        offset += len(page)


def observe(processor: MailProcessor) -> PrometheusObserver:
    """Make ``processor`` report to Prometheus; return the observer it reports to.

    Call it once per processor (twice would count everything twice). The backlog is
    read from the processor's own repository.

    .. versionadded:: 0.1.0
    """
    observer = PrometheusObserver(processor.repository)
    processor.add_observer(observer)
    return observer


@attrs.frozen
class MetricsServer:
    """The HTTP server :func:`start_metrics_server` started (a daemon thread).

    Args:
        address: The address it listens on.
        port: Its port (the one the system chose, when 0 was asked for).
    """

    address: str
    port: int
    _server: WSGIServer = attrs.field(repr=False, alias="server")
    _thread: threading.Thread = attrs.field(repr=False, alias="thread")

    @property
    def url(self) -> str:
        """Where Prometheus scrapes: ``http://address:port/metrics``."""
        return f"http://{self.address}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int, *, address: str = "127.0.0.1") -> MetricsServer:
    """Serve the metrics over HTTP, at ``/metrics``, in a daemon thread.

    In multiprocess mode (:func:`prepare_multiprocess` was called, or
    ``PROMETHEUS_MULTIPROC_DIR`` is set) it serves the sum of every process's numbers;
    otherwise this process's.

    Args:
        port: The port (0: any free one, see :attr:`MetricsServer.port`).
        address: The address to listen on; loopback unless you mean to expose it.

    Returns:
        The running server; :meth:`MetricsServer.close` stops it.

    Raises:
        OSError: The port is taken.

    .. versionadded:: 0.1.0
    """
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=address, registry=_registry())
    return MetricsServer(address, server.server_port, server=server, thread=thread)


def _registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        _metrics()  # every metric shows, at 0, before anything is counted
        return REGISTRY
    # Collected from the files at each scrape: this process's own values are in them too.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def prepare_multiprocess(directory: str | os.PathLike[str]) -> Path:
    """Count in ``directory``, shared with child processes; call it before they fork.

    Empties the directory of an earlier run's files (their numbers would be counted
    again) and sets ``PROMETHEUS_MULTIPROC_DIR``, which children inherit.

    Args:
        directory: A directory for this run alone (created if missing).

    Returns:
        The directory.

    Raises:
        RuntimeError: prometheus_client was already imported in single-process mode
            (children forked now would count in memory, where nobody sees it).

    .. versionadded:: 0.1.0
    """
    values = _imported_values()
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            "prepare_multiprocess() must run before prometheus_client is imported "
            "(it chooses where to count when it is first imported)"
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(path)
    return path


def _imported_values() -> Any:
    import sys

    return sys.modules.get("prometheus_client.values")


def mark_process_dead(pid: int) -> None:
    """Tell the multiprocess files that the child ``pid`` exited (Celery: on child exit).

    Its counters still count; only its live gauges are dropped.

    .. versionadded:: 0.1.0
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
