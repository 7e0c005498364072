"""The Django application: ``"halomail.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class HalomailConfig(AppConfig):
    """halomail's tickets, ledger and outbox as a Django app (its tables start ``halomail_``).

    The label is ``halomail``: models are ``halomail.Ticket``, ``halomail.OutboxMail``, …
    """

    name = "halomail.contrib.django"
    label = "halomail"
    verbose_name = "halomail"
    default_auto_field = "django.db.models.BigAutoField"
