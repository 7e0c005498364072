"""``manage.py halomail_run [--once] [--json]``: ``halomail run`` on Django's database.

The mailboxes, rules, templates and outgoing settings come from the ``halomail.toml``
that ``settings.HALOMAIL["config"]`` names; tickets, the outbox and halomail's ledger go
to Django's database (its ``[storage]`` is ignored). Output and exit status are those of
``halomail run``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from halomail import _cli_run
from halomail.contrib.django.management.commands._shared import prepared
from halomail.errors import ConfigError


class Command(BaseCommand):
    """Process every mailbox into Django's database, then send the outbox; once or for ever."""

    help = "process every mailbox into Django's database, then send the outbox (halomail run)"

    def add_arguments(self, parser: Any) -> None:
        """``halomail run``'s options."""
        parser.add_argument("--once", action="store_true", help="one cycle, then exit")
        parser.add_argument(
            "--json", action="store_true", help="one JSON object per line on stdout"
        )
        parser.add_argument(
            "--interval",
            type=_cli_run._positive_seconds,
            default=60.0,
            help="seconds between cycles",
        )
        parser.add_argument(
            "--fail-on",
            choices=_cli_run.FAIL_ON,
            default="error",
            help="exit 1 on a quarantined email, on an error (the default), or never",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run, and exit with ``halomail run``'s status."""
        try:
            config = prepared(options["verbosity"])
        except ConfigError as exc:
            raise CommandError(f"configuration error: {exc}", returncode=2) from exc
        run = argparse.Namespace(
            once=options["once"],
            json=options["json"],
            interval=options["interval"],
            fail_on=options["fail_on"],
        )
        status = _cli_run.run_config(config, run)
        if status:
            sys.exit(status)
