"""``manage.py halomail_worker``: ``halomail worker`` (Celery) on Django's database.

The broker and queue come from ``[scale]`` of the ``halomail.toml`` that
``settings.HALOMAIL["config"]`` names. Each worker process opens its own connection to
Django's database on its first task (never one shared across the fork); run
``halomail scheduler`` (or ``celery beat``) as usual to send the periodic tasks.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from halomail import _cli_scale
from halomail.contrib.django.management.commands._shared import prepared
from halomail.errors import ConfigError


class Command(BaseCommand):
    """Run a Celery worker that reads mailboxes and sends mail into Django's database."""

    help = "run halomail's Celery worker on Django's database (halomail worker)"

    def add_arguments(self, parser: Any) -> None:
        """``halomail worker``'s options."""
        parser.add_argument(
            "--concurrency",
            type=_cli_scale._positive_int,
            default=None,
            help="worker processes (default: one per CPU)",
        )
        parser.add_argument(
            "--hostname", default=None, help="the worker's node name (default: halomail@HOST)"
        )
        _cli_scale._loglevel(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the worker; return when it stops (SIGTERM: warm shutdown)."""
        try:
            config = prepared(options["verbosity"])
        except ConfigError as exc:
            raise CommandError(f"configuration error: {exc}", returncode=2) from exc
        # A connection opened before the fork must not be shared by the children.
        connections.close_all()
        worker = argparse.Namespace(
            concurrency=options["concurrency"],
            hostname=options["hostname"],
            loglevel=options["loglevel"],
        )
        try:
            status = _cli_scale.run_worker(config, worker)
        except ConfigError as exc:
            raise CommandError(f"configuration error: {exc}", returncode=2) from exc
        if status:
            sys.exit(status)
