"""What both management commands share: halomail's logging at Django's verbosity, and the
configuration with Django's database in place of ``[storage]``."""

from __future__ import annotations

from halomail._logformat import configure_logging
from halomail.config.loader import Config
from halomail.contrib.django import conf

__all__ = ["prepared"]


def prepared(verbosity: int) -> Config:
    """Log as ``halomail -v`` would at Django's ``--verbosity`` (2: info, 3: debug), and
    load ``settings.HALOMAIL["config"]`` with Django's database as its storage.

    Raises:
        ImproperlyConfigured: When ``settings.HALOMAIL`` has no ``config``.
        ConfigError: When the configuration file is invalid.
    """
    configure_logging(max(0, verbosity - 1))
    return conf.load()
