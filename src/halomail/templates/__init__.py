"""The ``$`` template language on Jinja2's sandbox, message groups and the standard templates.

The names here are what :mod:`halomail.templates.render` exports.
"""

from halomail.templates.render import *  # noqa: F403 - this package's public face
from halomail.templates.render import __all__ as __all__
