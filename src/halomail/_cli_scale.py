"""``halomail worker`` and ``halomail scheduler``: Celery on the ``[scale]`` broker.

Kept apart from :mod:`halomail.cli`, which registers them; Celery is imported only when
one of them runs, so the rest of the command works without the ``celery`` extra.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from halomail.config.loader import Config, load_config
from halomail.config.scale import ScaleSettings
from halomail.errors import ConfigError

__all__ = ["metrics_served", "register"]

EXIT_OK = 0
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def register(commands: Any) -> None:
    """Add ``worker`` and ``scheduler`` to the command's subparsers."""
    worker = commands.add_parser(
        "worker", help="run a Celery worker: read mailboxes and send mail as tasks arrive"
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="worker processes (default: one per CPU)",
    )
    worker.add_argument(
        "--hostname", default=None, help="the worker's node name (default: halomail@HOST)"
    )
    _loglevel(worker)
    worker.set_defaults(handler=_cmd_worker)

    scheduler = commands.add_parser(
        "scheduler", help="run Celery beat: queue the polls, sends and checks on schedule"
    )
    _loglevel(scheduler)
    scheduler.set_defaults(handler=_cmd_scheduler)


def _loglevel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel",
        type=str.upper,
        choices=_LOG_LEVELS,
        default="INFO",
        help="what Celery and halomail log (default: INFO)",
    )


def _positive_int(value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _integration() -> ModuleType:
    """:mod:`halomail.celery`, or a usage error naming the extra to install."""
    try:
        from halomail import celery as integration
    except ImportError as exc:
        raise ConfigError(
            "scale",
            f"workers and the scheduler need Celery: pip install 'halomail[celery]' ({exc})",
        ) from exc
    return integration


@contextlib.contextmanager
def metrics_served(scale: ScaleSettings | None, *, multiprocess: bool = False) -> Iterator[bool]:
    """Serve Prometheus metrics while the block runs, when ``[scale] metrics_port`` says so.

    Yields whether they are served (then the caller's processors should count:
    :func:`halomail.metrics.observe`). With ``multiprocess``, the worker's children count
    in files of a private folder, made before anything imports prometheus_client, and
    the server sums them.
    """
    if scale is None or scale.metrics_port is None:
        yield False
        return
    try:
        from halomail import metrics
    except ImportError as exc:
        raise ConfigError(
            "scale.metrics_port", f"metrics need pip install 'halomail[metrics]' ({exc})"
        ) from exc
    with contextlib.ExitStack() as stack:
        if multiprocess:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="halomail-metrics-"))
            metrics.prepare_multiprocess(folder)
        try:
            server = metrics.start_metrics_server(scale.metrics_port, address=scale.metrics_address)
        except OSError as exc:
            raise ConfigError(
                "scale.metrics_port",
                f"cannot serve metrics on {scale.metrics_address}:{scale.metrics_port}: {exc}",
            ) from exc
        stack.callback(server.close)
        print(f"halomail: metrics at {server.url}", file=sys.stderr, flush=True)
        yield True


def _load(args: argparse.Namespace) -> tuple[Config, ModuleType, Any]:
    """The configuration, :mod:`halomail.celery`, and the app, or a configuration error."""
    config = load_config(args.config)
    integration = _integration()
    integration.require_broker(config)
    return config, integration, integration.create_app(config)


def _cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(load_config(args.config), args)


def run_worker(config: Config, args: argparse.Namespace) -> int:
    """``worker`` on a loaded configuration (``manage.py halomail_worker`` gives Django's
    storage); ``args`` holds ``concurrency``, ``hostname`` and ``loglevel``."""
    _integration().require_broker(config)  # refused before anything is served
    with metrics_served(config.scale, multiprocess=True):
        return _run_worker(args, config)


def _run_worker(args: argparse.Namespace, config: Config) -> int:
    integration = _integration()
    scale = integration.require_broker(config)
    app = integration.create_app(config)
    print(
        f"halomail worker: broker {scale.broker_display}, queue {scale.queue!r}",
        file=sys.stderr,
        flush=True,
    )
    # Prefork: each child builds its own processor (and repository connection) on its
    # first task. SIGTERM is Celery's warm shutdown: running tasks finish, then it exits.
    worker = app.Worker(
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        queues=[scale.queue],
        pool="prefork",
        hostname=args.hostname or f"halomail@{socket.gethostname()}",
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or EXIT_OK)


def _cmd_scheduler(args: argparse.Namespace) -> int:
    config, integration, app = _load(args)
    scale = integration.require_broker(config)
    print(
        f"halomail scheduler: broker {scale.broker_display}, queue {scale.queue!r}, "
        f"polls every {scale.poll_interval_seconds:g} s, outbox every "
        f"{scale.outbox_interval_seconds:g} s",
        file=sys.stderr,
        flush=True,
    )
    # Beat keeps its last-run times in a file: the configured one, else a temporary
    # folder removed on exit (never a file dropped in the working directory).
    with tempfile.TemporaryDirectory(prefix="halomail-beat-") as temporary:
        schedule = scale.schedule_file or Path(temporary) / "schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        # SIGTERM and SIGINT: beat saves its schedule and exits (SystemExit).
        app.Beat(schedule=str(schedule), loglevel=args.loglevel, quiet=True).run()
    return EXIT_OK
