"""The in-memory repository's :class:`~halomail.tickets.repository.QuarantineAdmin` role.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.tickets._memory_base import UndoLogStore
from halomail.tickets.models import QuarantineEntry

__all__ = ["QuarantineAdminPart"]


class QuarantineAdminPart(UndoLogStore):
    """One quarantined email, read or forgotten (``halomail quarantine show``, ``delete``)."""

    _quarantine: dict[int, QuarantineEntry]  # filled by the repository, newest last

    def get_quarantine(self, quarantine_id: int) -> QuarantineEntry | None:
        """The quarantined email with this id, its bytes included, or ``None``."""
        with self._lock:
            return self._quarantine.get(quarantine_id)

    def delete_quarantine(self, quarantine_id: int) -> bool:
        """Forget a quarantined email and its bytes (its dedupe record stays)."""
        with self._writing():
            existed = quarantine_id in self._quarantine
            self._pop(self._quarantine, quarantine_id)
            return existed
