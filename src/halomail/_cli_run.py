"""``halomail run``: process every mailbox, then send the outbox; once or for ever.

What an operator sees:

- on a terminal, one live line with the emails done (out of the total when the
  mailboxes know it), the rate and the time left (:mod:`halomail._cli_progress`);
  without one, a ``progress`` record in the log now and then;
- after each cycle, a summary line (with a timestamp in the long-running mode), and a
  line for each mailbox that failed, with its error;
- with ``--json``, one object per line on stdout, each with an ``"event"``: ``email``
  per email, ``mailbox`` per mailbox (its health), ``sent`` for the outbox and
  ``summary`` to end the cycle;
- on SIGTERM, the batch in hand is finished (committed and disposed of), the run stops
  with a message and exits 0: nothing is lost or done twice; the next run goes on.

``--fail-on`` decides the exit status: ``error`` (the default) exits 1 when a mailbox
failed, an email was left for retry, the repository was busy or a transport refused
its login; ``quarantine`` also when an email was quarantined; ``never`` always exits 0.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import attrs

from halomail import _cli_scale, _cli_unsent, app
from halomail._cli_progress import Progress
from halomail._text import clean_text, redact_secrets
from halomail.config.loader import Config, load_config
from halomail.runner import MailProcessor, Outcome, ProcessingOutcome, RunReport

__all__ = ["FAIL_ON", "Cycle", "register", "run_config", "run_cycle"]

EXIT_OK, EXIT_PROBLEMS = 0, 1

#: The choices of ``--fail-on``, strictest first.
FAIL_ON = ("quarantine", "error", "never")


def register(commands: Any) -> None:
    """Add ``run`` to the command's subparsers."""
    run = commands.add_parser("run", help="process every mailbox, then send the outbox")
    run.add_argument("--once", action="store_true", help="one cycle, then exit")
    run.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    run.add_argument(
        "--interval", type=_positive_seconds, default=60.0, help="seconds between cycles"
    )
    run.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="error",
        help="exit 1 on a quarantined email, on an error (the default), or never",
    )
    run.set_defaults(handler=_cmd_run)


def _positive_seconds(value: str) -> float:
    """A finite number of seconds above 0 (a bad one is a usage error, exit 2)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value}")
    return seconds


class _Stopped(BaseException):
    """SIGTERM arrived: raised between two emails (or in the wait between cycles).

    A ``BaseException``, like ``KeyboardInterrupt``, so that the runner's "one broken
    mailbox must not stop the others" handler lets it through, while its ``finally``
    blocks still save the mailbox's state and release its lease.
    """


class _Termination:
    """Turns SIGTERM into a stop after the batch of emails in hand."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._waiting = False

    def _received(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        if self._waiting:  # between cycles nothing is in hand: stop at once
            raise _Stopped

    def check(self) -> None:
        """Stop here if SIGTERM arrived (called after each email is done)."""
        if self.signal is not None:
            raise _Stopped

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGTERM inside the block (only the main thread can; elsewhere, not)."""
        try:
            previous = signal.signal(signal.SIGTERM, self._received)
        except ValueError:  # not the main thread: SIGTERM keeps its meaning
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Inside the block (the wait between cycles), SIGTERM stops at once."""
        self.check()
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False


@attrs.frozen
class Cycle:
    """What one cycle did, as ``run`` reports it.

    Args:
        outcomes: Every email's outcome, in the order they were known.
        report: The processor's report, or ``None`` when SIGTERM stopped the cycle.
    """

    outcomes: tuple[ProcessingOutcome, ...]
    report: RunReport | None

    def fails(self, fail_on: str) -> bool:
        """Whether the cycle fails a run with ``--fail-on fail_on``."""
        if fail_on == "never":
            return False
        kinds = {outcome.outcome for outcome in self.outcomes}
        if fail_on == "quarantine" and Outcome.QUARANTINED in kinds:
            return True
        report = self.report
        broken = report is not None and (
            report.repository_busy is not None
            or any(mailbox.error for mailbox in report.mailboxes)
            or bool(report.sent.halted)
        )
        return broken or Outcome.RETRY in kinds


def _cmd_run(args: argparse.Namespace) -> int:
    return run_config(load_config(args.config), args)


def run_config(config: Config, args: argparse.Namespace) -> int:
    """``run`` on a loaded configuration (``manage.py halomail_run`` gives Django's storage).

    Args:
        config: The configuration.
        args: ``once``, ``json``, ``interval`` and ``fail_on``, as ``run`` parses them.

    Returns:
        The exit status.
    """
    failed = False
    stopping = _Termination()
    # A long-running `run` serves metrics when [scale] metrics_port is set; one pass
    # (--once) ends before anyone could scrape them.
    serving = _cli_scale.metrics_served(None if args.once else config.scale)
    with stopping.installed(), serving as counting, app.build_processor(config) as processor:
        unsent = _cli_unsent.UnsentMail(processor)  # warns once: mail queued, never sent
        if counting:
            from halomail import metrics

            metrics.observe(processor)
        while True:
            cycle = run_cycle(
                processor, json_output=args.json, stopping=stopping, stamped=not args.once
            )
            unsent.report(json_output=args.json)
            failed = failed or cycle.fails(args.fail_on)
            if args.once or stopping.signal is not None:
                break
            try:
                with stopping.waiting():
                    # Mailboxes that can push (IMAP IDLE) end the wait early when mail arrives.
                    processor.wait_for_mail(max(1.0, args.interval))
            except _Stopped:
                break
    if stopping.signal is not None:
        _say(f"stopped on {stopping.signal}: every email read was finished; the rest wait")
    return EXIT_PROBLEMS if failed else EXIT_OK


def run_cycle(
    processor: MailProcessor,
    *,
    json_output: bool = False,
    stopping: _Termination | None = None,
    stamped: bool = False,
) -> Cycle:
    """Run one cycle, showing progress, and print what it did.

    Args:
        processor: The processor to run.
        json_output: One JSON object per line on stdout instead of the summary.
        stopping: Stops the cycle after the batch in hand once SIGTERM arrived.
        stamped: Begin the summary line with the time (the long-running mode).
    """
    progress = Progress(sys.stderr, _listed(processor))
    outcomes: list[ProcessingOutcome] = []

    def show(outcome: ProcessingOutcome) -> None:
        outcomes.append(outcome)
        if json_output:
            print(json.dumps(_email_event(outcome)), flush=True)
        progress.tick(outcome.mailbox)
        if stopping is not None:
            stopping.check()

    report: RunReport | None = None
    try:
        report = processor.run_once(on_outcome=show)
    except _Stopped:
        pass  # the batch in hand is done; what the pass read so far is reported
    finally:
        progress.finish()
    cycle = Cycle(tuple(outcomes), report)
    if report is not None:
        for mailbox in report.mailboxes:
            if mailbox.error:
                _say(f"mailbox {mailbox.name} failed: {mailbox.error}")
            elif mailbox.note:
                _say(f"mailbox {mailbox.name}: {mailbox.note}")
    if json_output:
        _print_json(processor, cycle, stopping)
    else:
        print(_summary(cycle, stamped=stamped), flush=True)
    return cycle


def _listed(processor: MailProcessor) -> Callable[[], int | None]:
    """How many emails the mailboxes listed so far (``None`` when none says).

    A connector that knows says so in its ``fetch_total`` (Maildir, IMAP).
    """

    def total() -> int | None:
        counts = [getattr(m.connector, "fetch_total", None) for m in processor.mailboxes]
        known = [count for count in counts if isinstance(count, int)]
        return sum(known) if known else None

    return total


def _email_event(outcome: ProcessingOutcome) -> dict[str, object]:
    return {"event": "email", "source_id": outcome.ref, **outcome.as_dict()}


def _print_json(processor: MailProcessor, cycle: Cycle, stopping: _Termination | None) -> None:
    """After the emails: each mailbox's health, the outbox, then the summary."""
    for health in processor.health():
        print(json.dumps({"event": "mailbox", **health.as_dict()}), flush=True)
    report = cycle.report
    if report is not None:
        sent = report.sent
        fields = {"sent": sent.sent, "retrying": sent.retrying, "failed": sent.failed}
        print(json.dumps({"event": "sent", **fields, "halted": list(sent.halted)}), flush=True)
    failed = [m.name for m in report.mailboxes if m.error] if report is not None else []
    summary = {
        "event": "summary",
        "at": _now(),
        "emails": len(cycle.outcomes),
        "outcomes": _counts(cycle),
        "failed_mailboxes": failed,
        "stopped_by": stopping.signal if stopping is not None else None,
    }
    print(json.dumps(summary), flush=True)


def _counts(cycle: Cycle) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in cycle.outcomes:
        counts[outcome.outcome.value] = counts.get(outcome.outcome.value, 0) + 1
    return dict(sorted(counts.items()))


def _summary(cycle: Cycle, *, stamped: bool) -> str:
    """The cycle in a few lines: counts, what was sent, each failure and each email set aside."""
    report = cycle.report
    failed = [m for m in report.mailboxes if m.error] if report is not None else []
    counts = ", ".join(f"{n} {name}" for name, n in _counts(cycle).items())
    if not counts:
        # "no new email" only when every mailbox was read: a failed one is not empty.
        counts = "no email read" if failed else "no new email"
    line = f"{len(cycle.outcomes)} emails: {counts}"
    if report is None:
        line += "; stopped before the outbox was sent"
    else:
        sent = report.sent
        line += f"; {sent.sent} sent, {sent.retrying} to retry, {sent.failed} failed"
    lines = [f"{_now()} {line}" if stamped else line]
    lines += [f"  mailbox {m.name} failed: {m.error}" for m in failed]
    lines += [
        f"  {o.mailbox}: {o.message_id or o.ref}: {o.outcome.value} ({o.reason})"
        for o in cycle.outcomes
        if o.outcome in (Outcome.QUARANTINED, Outcome.RETRY)
    ]
    return "\n".join(lines)


def _now() -> str:
    """The local time with its offset, to the second: when a cycle ended."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _say(message: str) -> None:
    """``halomail: message`` on stderr, redacted and safe on a terminal."""
    print(f"halomail: {clean_text(redact_secrets(message), multiline=True)}", file=sys.stderr)
