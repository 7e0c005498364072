"""The ``halomail`` command.

Exit codes: 0 success; 1 some emails failed (for ``run``, as ``--fail-on`` says); 2 a
usage or configuration error (the message names the key path). A bad configuration never
ends in a traceback.

What the command prints is safe on a terminal: escape sequences, control characters
and bidi controls from an email (or a server) are removed from the human output and
from the log lines, and the secrets of every URL are masked (``--json`` output is
exact: JSON escapes what a terminal would act on).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from halomail import (
    _cli_authorize,
    _cli_check,
    _cli_outbox,
    _cli_quarantine,
    _cli_rules,
    _cli_run,
    _cli_scale,
    _cli_services,
    _cli_tickets,
    _cli_unsent,
    app,
)
from halomail._logformat import LOG_FORMATS, configure_logging
from halomail._text import clean_text, redact_secrets
from halomail._version import __version__
from halomail.backends.probe import Channel, probe_channel
from halomail.config.loader import Config, load_config
from halomail.errors import ConfigError, HalomailError
from halomail.rules import PATTERN_BUDGET_MS, risky_patterns
from halomail.runner import MailProcessor, Outcome, Simulation
from halomail.tickets.repository import TicketRepository

__all__ = ["main"]

log = logging.getLogger("halomail")

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

_QUICKSTART_TOML = """\
# halomail quickstart: one local mailbox, tickets in SQLite, replies written as .eml files.
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"          # writes each outgoing email as an .eml file
path = "outbox"
from_address = "support@helpdesk.example"
display_name = "Support"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Deleted Items"
ticket_type = "Incident"
send_acknowledgement = true
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``halomail`` command and return its exit code."""
    parser = _parser()
    args = parser.parse_args(_config_first(list(sys.argv[1:] if argv is None else argv)))
    configure_logging(args.verbose, args.log_format)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with contextlib.redirect_stdout(_TerminalSafe(sys.stdout)):
            code: int = args.handler(args)
            sys.stdout.flush()  # a reader gone (`| head`) is found here, not at exit
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as exc:
        _error(f"configuration error: {exc}")
        return EXIT_USAGE
    except HalomailError as exc:
        _error(str(exc))
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception:
        # A bug, or a host's repository failing its own way: the traceback is shown, but
        # through the log handler, so a DSN in the exception's message is masked there too.
        log.critical("unexpected error", exc_info=True)
        return EXIT_PROBLEMS
    return code


def _reader_gone() -> int:
    """The reader of our output went away (``halomail tickets | head -3``): exit quietly.

    Python's recipe (the ``signal`` module's docs): point standard output at devnull,
    so the interpreter's own flush at exit cannot fail again with a traceback.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # standard output is not a file (a test's capture): nothing will flush it
    return EXIT_PROBLEMS


def _error(message: str) -> None:
    """``halomail: message`` on stderr, redacted and safe on a terminal."""
    print(f"halomail: {clean_text(redact_secrets(message), multiline=True)}", file=sys.stderr)


class _TerminalSafe(io.TextIOBase):
    """Standard output with escape sequences, controls and bidi controls removed.

    Line breaks and tabs are kept. JSON output passes unchanged: ``json.dumps`` has
    already escaped every control character and every non-ASCII one.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` cleaned; returns its length as given (print expects that)."""
        self._stream.write(clean_text(text, multiline=True))
        return len(text)

    def flush(self) -> None:
        """Flush the real stream."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Whether the real stream is a terminal."""
        return self._stream.isatty()

    @property
    def raw_stream(self) -> TextIO:
        """The real stream, for a command that writes bytes (``quarantine export``)."""
        return self._stream


def _config_first(argv: list[str]) -> list[str]:
    """Move ``-c/--config`` and ``--log-format`` to the front: accepted after the subcommand too."""
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-c", "--config", "--log-format") and index + 1 < len(argv):
            moved += [arg, argv[index + 1]]
            index += 2
            continue
        if arg.startswith(("--config=", "--log-format=")):
            moved.append(arg)
        else:
            rest.append(arg)
        index += 1
    return moved + rest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="halomail", description="Turn mailboxes into helpdesk tickets, exactly once."
    )
    parser.add_argument("-c", "--config", default="halomail.toml", help="the configuration file")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="json: one object a line"
    )
    parser.add_argument("--version", action="version", version=f"halomail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    quick = commands.add_parser("quickstart", help="make and run a working example in DIR")
    quick.add_argument("dir", nargs="?", type=_path, default=Path("halomail-quickstart"))
    quick.set_defaults(handler=_cmd_quickstart)

    _cli_run.register(commands)

    simulate = commands.add_parser("simulate", help="what would happen to these emails, and why")
    simulate.add_argument("files", nargs="+", type=_path, metavar="FILE.eml")
    simulate.add_argument("--mailbox", help="process as if it arrived in this mailbox")
    simulate.add_argument("--json", action="store_true")
    simulate.set_defaults(handler=_cmd_simulate)

    check = commands.add_parser("check-config", help="validate the configuration")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also log in to every enabled mailbox and outgoing server, and say what was found",
    )
    check.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    check.set_defaults(handler=_cmd_check_config)

    test = commands.add_parser(
        "send-test-email", help="send a test email from a mailbox's outgoing settings, now"
    )
    test.add_argument("--mailbox", required=True, help="the mailbox whose settings to use")
    test.add_argument("--to", required=True, help="the address to send it to")
    test.set_defaults(handler=_cmd_send_test_email)

    _cli_outbox.register(commands, _opened_repository)
    _cli_tickets.register(commands, _opened_repository)
    _cli_quarantine.register(commands, _opened_repository)
    _cli_rules.register(commands)
    _cli_scale.register(commands)
    _cli_services.register(commands, _opened_repository)
    _cli_authorize.register(commands)
    return parser


# -- argument types: a bad value is a usage error (exit 2), never a traceback --------


def _positive_int(value: str) -> int:
    """A whole number of at least 1 (a limit, a ticket's number)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _path(value: str) -> Path:
    """A path: not empty and without a NUL byte (which no file name can hold)."""
    if not value or "\0" in value:
        raise argparse.ArgumentTypeError(f"expected a file name, got {value!r}")
    return Path(value)


# -- commands ------------------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _cli_check.load_reporting_every_error(args.config, json_output=args.json)
    if config is None:  # every problem, each with its line, is printed already
        return EXIT_USAGE
    enabled = [m.name for m in config.mailboxes if m.enabled]
    summary = (
        f"{args.config}: OK ({len(config.mailboxes)} mailboxes, {len(enabled)} enabled, "
        f"{len(config.rules)} rules, {_cli_unsent.outgoing_summary(config)}, "
        f"storage {config.storage.location})"
    )
    if config.scale is not None and config.scale.broker_url is not None:
        summary += f"; workers' broker {config.scale.broker_display}"  # never the password
    json_output = getattr(args, "json", False)
    print(
        json.dumps({"event": "config", "ok": True, "summary": summary}) if json_output else summary
    )
    _cli_authorize.print_sending_routes(config, json_output=json_output)
    _warn_risky_patterns(config, json_output=json_output)
    _cli_unsent.warn_unsent(config, json_output=json_output)
    if getattr(args, "connect", False):
        return _check_connections(config, json_output=json_output)
    return EXIT_OK


def _warn_risky_patterns(config: Config, *, json_output: bool) -> None:
    """Warn (never fail) about rule patterns that could backtrack for a long time."""
    for warning in risky_patterns(config.rules):
        if json_output:
            fields = {"key_path": warning.key_path, "rule": warning.rule, "reason": warning.reason}
            print(json.dumps({"event": "warning", **fields}))
        else:
            print(
                f"warning: {warning}; a search is stopped after {PATTERN_BUDGET_MS} ms",
                file=sys.stderr,
            )


def _check_connections(config: Config, *, json_output: bool) -> int:
    """``check-config --connect``: probe each channel, one line (or JSON object) each."""
    ok = True
    for channel in _channels(config):
        result = probe_channel(channel)
        ok = ok and result.ok is not False
        if json_output:
            print(json.dumps({"event": "probe", **result.as_dict()}), flush=True)
        else:
            print(result.line(), flush=True)
    return EXIT_OK if ok else EXIT_PROBLEMS


def _channels(config: Config) -> list[Channel]:
    """Every enabled mailbox, the default ``[outgoing]`` and each mailbox's override.

    The one place that builds backends for ``--connect``: nothing connects until probed.
    """
    channels: list[Channel] = []
    for settings in config.mailboxes:
        if not settings.enabled:
            continue
        channels.append(
            Channel(
                f"mailbox {settings.name}",
                settings.connection,
                settings.host or (str(settings.path) if settings.path else ""),
                functools.partial(app.open_connector, config, settings),
            )
        )
    outgoing = [("outgoing", config.outgoing, "outgoing")]
    outgoing += [
        (
            f"mailbox {m.name} outgoing",
            m.effective_outgoing(config.outgoing),
            f"{m.key_path}.outgoing",
        )
        for m in config.mailboxes
        if m.enabled and m.outgoing is not None
    ]
    for label, settings_out, key_path in outgoing:
        channels.append(
            Channel(
                label,
                settings_out.transport,
                settings_out.host or (str(settings_out.path) if settings_out.path else ""),
                functools.partial(app.open_transport, settings_out, key_path=key_path),
            )
        )
    return channels


def _cmd_send_test_email(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sent, route = app.send_test_email(config, args.mailbox, args.to)
    print(f"sent a test email to {args.to} via {route} (Message-ID <{sent.message_id}>)")
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # A throwaway copy would be safer still, but simulate only reads: the decision
    # is computed without any write, and nothing is sent.
    with app.build_processor(config) as processor:
        return _simulate(processor, args)


def _simulate(processor: MailProcessor, args: argparse.Namespace) -> int:
    mailbox = processor.mailboxes[0] if processor.mailboxes else None
    if args.mailbox:
        matches = [m for m in processor.mailboxes if m.name == args.mailbox]
        if not matches:
            raise ConfigError("mailboxes", f"no enabled mailbox named {args.mailbox!r}")
        mailbox = matches[0]
    if mailbox is None:
        raise ConfigError("mailboxes", "no enabled mailbox to simulate with")
    code = EXIT_OK
    for path in args.files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            _error(f"{path}: {exc.strerror}")
            code = EXIT_PROBLEMS
            continue
        simulation = processor.explain(raw, mailbox)
        outcome = simulation.outcome
        if args.json:
            print(json.dumps({"file": str(path), **_simulation_json(simulation)}))
        else:
            ticket = f" ticket {outcome.ticket_id}" if outcome.ticket_id else ""
            why = f" ({outcome.reason})" if outcome.reason else ""
            rule = f" by rule {outcome.rule!r}" if outcome.rule else ""
            ack = ", acknowledgement" if outcome.acknowledged else ""
            print(f"{path}: {outcome.outcome.value}{ticket}{rule}{why}{ack} — {outcome.subject!r}")
            print("\n".join(f"    {line}" for line in _simulation_lines(simulation)))
            if simulation.rules is not None:
                print("\n".join(f"    {line}" for line in simulation.rules.format().splitlines()))
        if outcome.outcome in (Outcome.QUARANTINED, Outcome.RETRY):
            code = EXIT_PROBLEMS
    return code


def _simulation_json(simulation: Simulation) -> dict[str, Any]:
    """``simulate --json``: the outcome, the classification, the acknowledgement, the rules."""
    outcome = simulation.outcome
    data: dict[str, Any] = dict(outcome.as_dict())
    data["acknowledge"] = outcome.acknowledged
    classification = simulation.classification
    data["classification"] = (
        None
        if classification is None
        else {
            "flags": list(classification.flags),
            "reasons": list(classification.reasons),
            "may_acknowledge": classification.may_acknowledge,
        }
    )
    verdict = simulation.acknowledgement
    data["acknowledgement"] = verdict.as_dict() if verdict is not None else None
    data["rules"] = simulation.rules.as_dict() if simulation.rules else None
    return data


def _simulation_lines(simulation: Simulation) -> list[str]:
    """The classification, each flag with its reasons, then the acknowledgement verdict."""
    lines: list[str] = []
    classification = simulation.classification
    if classification is not None:
        flags = ", ".join(classification.flags) or "none (mail from a person)"
        lines.append(f"Classification: {flags}")
        lines.extend(f"  {reason}" for reason in classification.reasons)
    verdict = simulation.acknowledgement
    if verdict is not None:
        sent = "would be sent" if verdict.would else "would not be sent"
        lines.append(f"Acknowledgement: {sent}")
        lines.extend(f"  {reason}" for reason in verdict.reasons)
    return lines


def _cmd_quickstart(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    started = time.monotonic()
    if (root / "halomail.toml").exists():
        _error(
            f"{root} already holds a quickstart; run it again with "
            f"`halomail -c {root / 'halomail.toml'} run --once`"
        )
        return EXIT_USAGE
    inbox = root / "inbox"
    for sub in ("cur", "new", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    (root / "halomail.toml").write_text(_QUICKSTART_TOML, encoding="utf-8")
    samples = sorted(
        (p for p in resources.files("halomail._quickstart").iterdir() if p.name.endswith(".eml")),
        key=lambda p: p.name,
    )
    base = time.time() - len(samples)
    for index, sample in enumerate(samples):
        target = inbox / "new" / f"{int(base) + index}.{index:04d}.quickstart"
        with resources.as_file(sample) as source:
            shutil.copyfile(source, target)
        # Maildir order is arrival order: give each sample its own arrival time.
        os.utime(target, (base + index, base + index))
    print(f"Created {root}: halomail.toml, a Maildir inbox with {len(samples)} emails.\n")
    with app.build_processor(load_config(root / "halomail.toml")) as processor:
        cycle = _cli_run.run_cycle(processor)
        print()
        _cli_tickets.print_tickets(
            _cli_tickets.browsing(processor.repository).list_tickets(), sys.stdout
        )
    outbox = sorted((root / "outbox").glob("*.eml")) if (root / "outbox").exists() else []
    print(f"\n{len(outbox)} acknowledgements written to {root / 'outbox'}:")
    for path in outbox:
        print(f"  {path.name}")
    print(
        f"\nDone in {time.monotonic() - started:.2f}s. Next:\n"
        f"  halomail -c {root / 'halomail.toml'} ticket 1\n"
        f"  halomail -c {root / 'halomail.toml'} run --once   # nothing new: each email once"
    )
    return EXIT_PROBLEMS if cycle.fails("error") else EXIT_OK


@contextlib.contextmanager
def _opened_repository(args: argparse.Namespace) -> Iterator[TicketRepository]:
    """The repository of ``[storage]``, closed when the block ends."""
    # Listing needs only [storage]: a file whose mailboxes are all disabled still lists.
    repository = app.open_repository(load_config(args.config, require_mailbox=False))
    try:
        yield repository
    finally:
        close = getattr(repository, "close", None)
        if callable(close):
            close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
