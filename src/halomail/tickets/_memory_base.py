"""The transactions of the in-memory repository: an undo log over plain dicts.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from halomail.errors import RepositoryError

__all__ = ["UndoLogStore"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class _Missing(enum.Enum):
    """Marks, in the undo log, a key that did not exist before the change."""

    MISSING = enum.auto()


_MISSING = _Missing.MISSING

# One undo entry: the dict changed, the key, and the value it had before (or _MISSING).
_UndoEntry = tuple[dict[Any, Any], Any, Any]


class UndoLogStore:
    """Dicts changed through :meth:`_put` and :meth:`_pop`, in transactions that undo.

    A transaction keeps an undo log of the entries it changes and replays it backwards
    on an exception, so a rollback costs as much as the transaction changed, never a
    copy of the whole store. One re-entrant lock guards everything; a transaction
    holds it from start to end.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._in_transaction = False
        self._undo: list[_UndoEntry] | None = None
        self._sequences: dict[str, int] = {}

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: committed when the block exits normally, rolled back on an exception.

        Raises:
            RepositoryError: When a transaction is already open on this repository
                (transactions do not nest).
        """
        with self._lock:
            if self._in_transaction:
                raise RepositoryError("transactions do not nest: one is already open")
            self._in_transaction = True
            self._undo = []
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            finally:
                self._undo = None
                self._in_transaction = False

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the lock; outside a transaction, make this one write all-or-nothing."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            self._undo = []
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            finally:
                self._undo = None

    def _rollback(self) -> None:
        undo = self._undo or []
        for table, key, old in reversed(undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        undo.clear()

    def _put(self, table: dict[_K, _V], key: _K, value: _V) -> None:
        if self._undo is not None:
            self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def _pop(self, table: dict[_K, _V], key: _K) -> None:
        if key in table:
            if self._undo is not None:
                self._undo.append((table, key, table[key]))
            del table[key]

    def _next_id(self, name: str) -> int:
        value = self._sequences.get(name, 0) + 1
        self._put(self._sequences, name, value)
        return value
