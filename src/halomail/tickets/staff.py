"""The people who send mail: agents and their teams.

Both come from ``[[agents]]`` and ``[[teams]]`` in ``halomail.toml``, or from the host
application's own records when halomail is embedded.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import attrs

__all__ = ["Agent", "Team"]


def _address(value: str) -> str:
    return value.strip().lower()


@attrs.frozen
class Agent:
    """An agent who sends mail (``[[agents]]``, or the host's own records).

    Args:
        name: Shown as ``$agentname``.
        email: The agent's address (lower-case); how callers name the agent.
        team: The agent's team, for sending restrictions and message groups.
        signature: The agent's own signature (a mailbox may override it).
        department: The agent's department, for sending restrictions.
    """

    name: str
    email: str = attrs.field(converter=_address)
    team: str | None = None
    signature: str = ""
    department: str | None = None


@attrs.frozen
class Team:
    """A team (``[[teams]]``).

    Args:
        name: The team's name.
        message_group: The message group of mail about the team's tickets, when it
            differs from the mailbox's.
    """

    name: str
    message_group: str | None = None
