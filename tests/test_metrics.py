"""Prometheus metrics, scraped over real HTTP from a real processor on Maildir and SQLite (#14).

The metrics live in prometheus_client's process-wide registry, and other tests of this
session may count into them too; every assertion therefore compares two scrapes, before
and after the work it checks, the way a PromQL ``increase()`` does.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from halomail import build_processor, load_config
from halomail.metrics import (
    METRIC_NAMES,
    MetricsServer,
    PrometheusObserver,
    observe,
    start_metrics_server,
)
from halomail.outbound.outbox import SendReport
from halomail.pipeline.results import Outcome, ProcessingOutcome
from halomail.runner import MailProcessor
from halomail.tickets.models import OutboxStatus
from tests.conftest import make_email

ROOT = Path(__file__).parent.parent

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"
{outgoing}
[[mailboxes]]
name = "Support"
connection = "maildir"
path = "support"

[[mailboxes]]
name = "Sales"
connection = "maildir"
path = "sales"

[[rules]]
name = "Newsletters"
type = "ignore"
sequence = 10
subject = "newsletter"
"""

MAILDIR_OUTGOING = """
[outgoing]
transport = "maildir"
path = "sent"
from_address = "support@helpdesk.example"
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _maildir(path: Path, emails: list[bytes]) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for n, raw in enumerate(emails):
        (path / "new" / f"{path.name}-{n}.eml").write_bytes(raw)


def _inbox(tmp_path: Path, *, outgoing: str = "") -> Path:
    """Support: three new emails, one sent twice, one newsletter; Sales: one email."""
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(outgoing=outgoing))
    twice = make_email(subject="VPN is down", message_id="<vpn@customer.example>")
    _maildir(
        tmp_path / "support",
        [
            make_email(subject="Printer jammed", message_id="<printer@customer.example>"),
            make_email(subject="Mail is slow", message_id="<slow@customer.example>"),
            twice,
            twice,
            make_email(subject="Our monthly newsletter", message_id="<news@vendor.example>"),
        ],
    )
    _maildir(
        tmp_path / "sales",
        [make_email(subject="A quote please", message_id="<quote@customer.example>")],
    )
    return config


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    """The metrics server on a free loopback port, stopped after the test."""
    running = start_metrics_server(0)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[MailProcessor]:
    """A processor for the two Maildirs, on SQLite, with no outgoing transport."""
    with build_processor(load_config(_inbox(tmp_path))) as built:
        yield built


def scrape(server: MetricsServer) -> Samples:
    """Every sample of ``/metrics``, fetched over HTTP, by name and labels."""
    with urllib.request.urlopen(server.url, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_emails_by_outcome_equal_the_processing_report(
    processor: MailProcessor, server: MetricsServer
) -> None:
    """After one cycle, halomail_emails_total grew by exactly the report's count per outcome."""
    observe(processor)
    before = scrape(server)
    report = processor.run_once()
    after = scrape(server)

    expected = {o: sum(1 for r in report.outcomes if r.outcome is o) for o in Outcome}
    assert expected[Outcome.CREATED] == 4  # the report is what we think it is
    assert expected[Outcome.SKIPPED] == 1
    assert expected[Outcome.IGNORED] == 1
    counted = {
        o: value(after, "halomail_emails_total", outcome=o.value)
        - value(before, "halomail_emails_total", outcome=o.value)
        for o in Outcome
    }
    assert counted == expected
    assert value(after, "halomail_mailbox_passes_total") - value(
        before, "halomail_mailbox_passes_total"
    ) == len(report.mailboxes)


def test_a_failing_mailbox_is_counted_and_shown_failing_until_it_recovers(
    tmp_path: Path, processor: MailProcessor, server: MetricsServer
) -> None:
    """A mailbox whose folder vanished counts one failure and reads failing=1; back, it reads 0."""
    observe(processor)
    hidden = tmp_path / "sales-hidden"
    (tmp_path / "sales").rename(hidden)
    before = scrape(server)
    report = processor.run_once()
    failed = scrape(server)

    assert [r.name for r in report.mailboxes if r.error] == ["Sales"]
    assert (
        value(failed, "halomail_mailbox_failures_total", mailbox="Sales")
        - value(before, "halomail_mailbox_failures_total", mailbox="Sales")
        == 1
    )
    assert value(failed, "halomail_mailbox_failures_total", mailbox="Support") == value(
        before, "halomail_mailbox_failures_total", mailbox="Support"
    )
    assert value(failed, "halomail_mailbox_failing", mailbox="Sales") == 1
    assert value(failed, "halomail_mailbox_failing", mailbox="Support") == 0

    hidden.rename(tmp_path / "sales")
    recovered = processor.run_once()
    assert all(r.error is None for r in recovered.mailboxes)
    assert value(scrape(server), "halomail_mailbox_failing", mailbox="Sales") == 0


def test_the_backlog_gauge_equals_the_pending_outbox(
    processor: MailProcessor, server: MetricsServer
) -> None:
    """With no transport the acknowledgements wait: the backlog reads the pending count."""
    observe(processor)
    processor.run_once()
    pending = processor.repository.list_outgoing(status=OutboxStatus.PENDING)  # type: ignore[attr-defined]
    assert len(pending) == 4  # one acknowledgement per new ticket
    assert value(scrape(server), "halomail_outbox_backlog") == len(pending)


def test_sent_mail_is_counted_and_the_backlog_drains_to_zero(
    tmp_path: Path, server: MetricsServer
) -> None:
    """With a transport the acknowledgements leave: sent_total grows by 4, the backlog is 0."""
    with build_processor(load_config(_inbox(tmp_path, outgoing=MAILDIR_OUTGOING))) as processor:
        observe(processor)
        before = scrape(server)
        report = processor.run_once()
        after = scrape(server)
    assert report.sent.sent == 4
    assert len(list((tmp_path / "sent").rglob("*.eml"))) == 4
    sent = value(after, "halomail_outbox_sent_total") - value(before, "halomail_outbox_sent_total")
    assert sent == 4
    assert value(after, "halomail_outbox_backlog") == 0


class Exploding:
    """An observer whose every method raises."""

    def on_outcome(self, mailbox: str, outcome: ProcessingOutcome) -> None:
        """Raise."""
        raise RuntimeError("metrics backend down")

    def on_pass(self, mailbox: str, error: str | None) -> None:
        """Raise."""
        raise RuntimeError("metrics backend down")

    def on_send(self, report: SendReport) -> None:
        """Raise."""
        raise RuntimeError("metrics backend down")


def test_an_observer_that_raises_never_stops_processing(
    processor: MailProcessor, server: MetricsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising observer is logged; every email is still processed and later observers told."""
    processor.add_observer(Exploding())
    observe(processor)  # added after the broken one: still told everything
    before = scrape(server)
    with caplog.at_level(logging.ERROR, logger="halomail.pipeline.observers"):
        report = processor.run_once()
    after = scrape(server)

    assert report.ok is True
    assert len(report.outcomes) == 6
    assert len(processor.repository.list_tickets()) == 4  # type: ignore[attr-defined]
    created = value(after, "halomail_emails_total", outcome="created") - value(
        before, "halomail_emails_total", outcome="created"
    )
    assert created == 4
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    # Six outcomes, two passes, one outbox pass: each failure logged, none raised.
    assert len(failures) == 9
    assert all(r.exc_info is not None for r in failures)


def test_observers_given_to_the_constructor_are_told_too(tmp_path: Path) -> None:
    """MailProcessor(observers=…) tells them each outcome, pass and send report."""

    class Recorder:
        """Keeps what it is told."""

        def __init__(self) -> None:
            self.heard: list[str] = []

        def on_outcome(self, mailbox: str, outcome: ProcessingOutcome) -> None:
            """Keep the outcome."""
            self.heard.append(f"{mailbox}:{outcome.outcome.value}")

        def on_pass(self, mailbox: str, error: str | None) -> None:
            """Keep the pass."""
            self.heard.append(f"{mailbox}:pass:{error}")

        def on_send(self, report: SendReport) -> None:
            """Keep the send report."""
            self.heard.append(f"send:{report.sent}")

    built = build_processor(load_config(_inbox(tmp_path)))
    recorder = Recorder()
    # Built by hand, without the configuration's rules: the newsletter is a ticket too.
    with MailProcessor(
        built.repository,
        built.mailboxes,
        built.settings,
        observers=[recorder],
        owns_repository=True,
    ) as processor:
        processor.run_once()
    assert recorder.heard.count("Support:pass:None") == 1
    assert recorder.heard.count("Sales:pass:None") == 1
    assert recorder.heard.count("Support:created") == 4
    assert recorder.heard.count("Support:skipped") == 1
    assert recorder.heard[-1] == "send:0"


def test_the_observer_counts_without_a_repository(server: MetricsServer) -> None:
    """A PrometheusObserver without a repository counts outcomes and sends; no backlog read."""
    observer = PrometheusObserver()
    before = scrape(server)
    observer.on_send(SendReport(sent=2, retrying=1, failed=1))
    after = scrape(server)
    for name, grew in (
        ("halomail_outbox_sent_total", 2),
        ("halomail_outbox_retries_total", 1),
        ("halomail_outbox_failed_total", 1),
    ):
        assert value(after, name) - value(before, name) == grew
    assert value(after, "halomail_outbox_backlog") == value(before, "halomail_outbox_backlog")


def test_the_scrape_shows_every_metric_and_no_other(server: MetricsServer) -> None:
    """/metrics declares exactly METRIC_NAMES among the halomail_ metrics (# TYPE lines)."""
    with urllib.request.urlopen(server.url, timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    declared = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE halomail_") and not line.split()[2].endswith("_created")
    }
    assert declared == set(METRIC_NAMES)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_halomail_does_not_import_prometheus_client() -> None:
    """halomail, its runner, composition root and command load without prometheus_client."""
    done = _run_python(
        "import sys, halomail, halomail.runner, halomail.app, halomail.cli\n"
        "print('prometheus_client' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_missing_extra_names_the_pip_command() -> None:
    """Without prometheus_client, halomail.metrics fails naming pip install 'halomail[metrics]'."""
    done = _run_python(
        "import sys\nsys.modules['prometheus_client'] = None  # as if not installed\n"
        "import halomail.metrics"
    )
    assert done.returncode == 1
    assert "ImportError" in done.stderr
    assert "pip install 'halomail[metrics]'" in done.stderr
