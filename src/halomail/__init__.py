"""halomail: turn mailboxes into helpdesk tickets, exactly once."""

from halomail._version import __version__

__all__ = ["__version__"]
