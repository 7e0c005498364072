"""The in-memory repository's optional roles
:class:`~halomail.tickets.repository.QuarantineAdmin` and
:class:`~halomail.tickets.repository.LedgerRetention`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs

from halomail.tickets._common import TIMED_STATE_PREFIXES, state_time, to_utc
from halomail.tickets._memory_base import UndoLogStore
from halomail.tickets.models import DedupeRecord, QuarantineEntry

__all__ = ["QuarantineAdminPart", "RetentionPart"]


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


class RetentionPart(UndoLogStore):
    """Old dedupe records and timed state rows forgotten (``[processing]
    ledger_retention_days``)."""

    _dedupe: dict[str, DedupeRecord]  # filled by the repository
    _state: dict[str, str]

    def touch_dedupe(self, key: str, *, now: dt.datetime) -> None:
        """Mark the dedupe record ``key`` seen at ``now`` (its email was fetched again)."""
        seen = to_utc(now)
        with self._writing():
            record = self._dedupe.get(key)
            if record is not None and record.created_at < seen:
                self._put(self._dedupe, key, attrs.evolve(record, created_at=seen))

    def purge_ledger(
        self, *, before: dt.datetime, keep: Sequence[str] = (), limit: int = 10_000
    ) -> int:
        """Forget at most ``limit`` dedupe records neither written nor seen since ``before``
        (keys under a ``keep`` prefix stay), and as many timed state rows (loop counts,
        cloud send marks) whose time has passed. Attempts carry no time here: they stay."""
        cutoff = to_utc(before)
        prefixes = tuple(keep)
        with self._writing():
            old = [
                key
                for key, record in self._dedupe.items()
                if record.created_at < cutoff and not key.startswith(prefixes)
            ][:limit]
            for key in old:
                self._pop(self._dedupe, key)
            timed = [
                key
                for key, value in self._state.items()
                if key.startswith(TIMED_STATE_PREFIXES) and _before(state_time(value), cutoff)
            ][:limit]
            for key in timed:
                self._pop(self._state, key)
            return len(old) + len(timed)


def _before(text: str, cutoff: dt.datetime) -> bool:
    """True when ``text`` is an ISO time with its zone before ``cutoff``."""
    try:
        return to_utc(dt.datetime.fromisoformat(text)) < cutoff
    except ValueError:  # not a time with its zone: left alone
        return False
