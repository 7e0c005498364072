"""halomail's Django settings: ``HALOMAIL = {"config": "path/to/halomail.toml"}``.

Keys of ``settings.HALOMAIL``:

``config``
    The ``halomail.toml`` whose mailboxes, rules, templates and outgoing settings the
    management commands use (required). Its ``[storage]`` table is ignored: Django's
    database holds the tickets.
``database``
    The alias in ``settings.DATABASES`` of the database to use (``"default"``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from halomail import app
from halomail.config.loader import Config, load_config
from halomail.config.processing import StorageSettings
from halomail.runner import MailProcessor

__all__ = ["REPOSITORY_FACTORY", "build_processor", "config_path", "database_alias", "load"]

log = logging.getLogger(__name__)

REPOSITORY_FACTORY = "halomail.contrib.django.repository:from_config"
"""What ``[storage] repository`` becomes: Django's database in place of the file's storage."""


def _settings() -> Mapping[str, Any]:
    value = getattr(settings, "HALOMAIL", None)
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            'settings.HALOMAIL must be a dict such as {"config": "path/to/halomail.toml"}'
        )
    return value


def config_path() -> Path:
    """The configuration file ``settings.HALOMAIL["config"]`` names.

    Raises:
        ImproperlyConfigured: When ``HALOMAIL`` or its ``config`` is missing.
    """
    path = _settings().get("config")
    if not path:
        raise ImproperlyConfigured('settings.HALOMAIL has no "config" (path/to/halomail.toml)')
    return Path(path)


def database_alias() -> str:
    """The database alias ``settings.HALOMAIL["database"]`` names (``"default"``)."""
    value = getattr(settings, "HALOMAIL", None)
    alias = value.get("database", "default") if isinstance(value, Mapping) else "default"
    return str(alias)


def load() -> Config:
    """The configuration, with Django's database in place of its ``[storage]``.

    Raises:
        ImproperlyConfigured: When ``HALOMAIL`` or its ``config`` is missing.
        ConfigError: When the file is invalid (the message names the key path).
    """
    path = config_path()
    config = load_config(path)
    if _has_storage_table(path):
        log.info(
            "%s: [storage] is ignored: the tickets are in Django's database %r",
            path,
            database_alias(),
        )
    storage = StorageSettings(url="memory://", sqlite_path=None, repository=REPOSITORY_FACTORY)
    return attrs.evolve(config, storage=storage)


def build_processor() -> MailProcessor:
    """A :class:`~halomail.MailProcessor` for ``settings.HALOMAIL``'s configuration on
    Django's database (what an admin action or a view uses); close it when done.

    Raises:
        ImproperlyConfigured: When ``settings.HALOMAIL`` has no ``config``.
        ConfigError: When the configuration file is invalid.
    """
    return app.build_processor(load())


def _has_storage_table(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return "storage" in tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_config read it already; nothing more to say here
