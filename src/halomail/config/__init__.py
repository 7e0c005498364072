"""``halomail.toml`` to typed settings.

The names here are what :mod:`halomail.config.loader` exports.
"""

from halomail.config.loader import *  # noqa: F403 - this package's public face
from halomail.config.loader import __all__ as __all__
