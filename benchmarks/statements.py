"""(S) the SQL statements of (C) alone: what SQLite spends storing what halomail stores.

(C) writes each email's ticket, its first action and its acknowledgement, and keeps its
ledger (dedupe keys, loop state, attempts) in a few statements per batch. To know how
much of (C) is SQLite's own work, :class:`Recorder` stands in for the repository's
connection during one untimed run of (C) and keeps every call: each statement with its
parameters, in order, and what is written into a streamed BLOB. :class:`Replay` then
runs exactly those calls on a fresh database with the repository's settings, with
nothing between them, and fails unless they change as many rows as they did in (C).

(P) + (S) is the least any pipeline can spend that parses as halomail does and stores
these rows this way: what (C) spends beyond it is Python deciding what to store.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from halomail import SQLiteTicketRepository

__all__ = ["Call", "Recorder", "Recording", "Replay"]

#: One recorded call: ``("execute", sql, parameters)``, ``("executemany", sql, rows)``
#: or ``("blob", table, column, rowid, offset, bytes)``.
Call = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Recording:
    """What one recorded run asked of SQLite: its calls, and the rows they changed."""

    calls: list[Call]
    changes: int


class _RecordingBlob:
    """A BLOB opened through :class:`Recorder`: its writes are run and kept."""

    def __init__(self, blob: sqlite3.Blob, where: tuple[str, str, int], calls: list[Call]) -> None:
        self._blob = blob
        self._where = where
        self._calls = calls

    def write(self, data: bytes | memoryview, /) -> None:
        self._calls.append(("blob", *self._where, self._blob.tell(), bytes(data)))
        self._blob.write(data)

    def __enter__(self) -> _RecordingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self._blob.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)


class Recorder:
    """Runs every call on ``connection`` and keeps a copy of it in :attr:`calls`.

    The bundled repository reaches its connection only through its ``_connection``
    attribute; :meth:`attach` replaces it with a recorder (outside what is measured,
    and only in this benchmark).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.calls: list[Call] = []
        self._connection = connection
        self._changes_before = connection.total_changes

    @classmethod
    def attach(cls, repository: SQLiteTicketRepository) -> Recorder:
        """Record what ``repository`` runs from now on (its schema is made already)."""
        recorder = cls(repository._open())
        repository._connection = recorder  # type: ignore[assignment]
        return recorder

    def recording(self) -> Recording:
        """The calls kept so far, and the rows they inserted, updated or deleted (read it
        before the repository closes its connection)."""
        return Recording(list(self.calls), self._connection.total_changes - self._changes_before)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run one statement and keep it with a copy of its parameters."""
        kept = dict(parameters) if isinstance(parameters, dict) else tuple(parameters)
        self.calls.append(("execute", sql, kept))
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        """Run one statement per set of parameters (read once, and kept)."""
        rows = [tuple(row) for row in parameters]
        self.calls.append(("executemany", sql, rows))
        return self._connection.executemany(sql, rows)

    def blobopen(self, table: str, column: str, row: int, /, **options: Any) -> _RecordingBlob:
        """Open a BLOB whose writes are kept too."""
        blob = self._connection.blobopen(table, column, row, **options)
        return _RecordingBlob(blob, (table, column, row), self.calls)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class Replay:
    """A fresh database for (S), made at construction (outside what is measured).

    Args:
        path: The database file to create, with halomail's schema.
    """

    def __init__(self, path: Path) -> None:
        SQLiteTicketRepository(path).close()  # the schema, WAL mode set in the file
        self._connection = sqlite3.connect(path, isolation_level=None)
        # The repository's connection settings (WAL is a property of the file).
        self._connection.execute("PRAGMA foreign_keys = ON")
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._changes_before = self._connection.total_changes

    def run(self, recording: Recording) -> None:
        """Run the recorded calls in order, reading every result as the repository does.

        Raises:
            RuntimeError: They changed another number of rows than in the recorded run.
        """
        connection = self._connection
        execute = connection.execute
        for call in recording.calls:
            kind = call[0]
            if kind == "execute":
                execute(call[1], call[2]).fetchall()
            elif kind == "executemany":
                connection.executemany(call[1], call[2])
            else:
                with connection.blobopen(call[1], call[2], call[3]) as blob:
                    blob.seek(call[4])
                    blob.write(call[5])
        changes = connection.total_changes - self._changes_before
        if changes != recording.changes:
            raise RuntimeError(f"the replay changed {changes} rows, the run {recording.changes}")

    def close(self) -> None:
        """Close the database."""
        self._connection.close()
