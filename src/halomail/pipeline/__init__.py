"""The pipeline: one email, one unit of work, no threads.

:class:`~halomail.pipeline.unit.UnitOfWork` takes one fetched email through

- :mod:`~halomail.pipeline.decide` — parse result and repository lookups → a
  :class:`~halomail.pipeline.results.Decision` (reads only; ``simulate`` uses it),
- :mod:`~halomail.pipeline.handlers` — one handler per rule type, its decide and its
  apply side by side, found by :class:`~halomail.RuleType`,
- :mod:`~halomail.pipeline.apply` — the decision and the dedupe record written in one
  transaction,

and returns a :class:`~halomail.pipeline.results.ProcessingOutcome`. The runner
(:class:`halomail.MailProcessor`) owns the threads and disposes of the source email.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.pipeline.context import Context
from halomail.pipeline.results import Decision, Outcome, ProcessingOutcome, Reason, Simulation
from halomail.pipeline.settings import Mailbox, ProcessorSettings
from halomail.pipeline.unit import Guard, UnitOfWork

__all__ = [
    "Context",
    "Decision",
    "Guard",
    "Mailbox",
    "Outcome",
    "ProcessingOutcome",
    "ProcessorSettings",
    "Reason",
    "Simulation",
    "UnitOfWork",
]
