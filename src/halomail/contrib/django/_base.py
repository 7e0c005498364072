"""The Django repository's foundation: the database alias, transactions, errors and times.

The role parts (:mod:`._tickets`, :mod:`._directory`, :mod:`._ledger`, :mod:`._outbox`)
build on :class:`DjangoBase`; :class:`~halomail.contrib.django.DjangoRepository`
combines them.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

from halomail.errors import RepositoryError, TransientRepositoryError
from halomail.tickets._common import to_utc
from halomail.tickets.models import utcnow

__all__ = ["DjangoBase", "aware", "opt_aware", "payload"]

log = logging.getLogger(__name__)

# What a retry may cure: a locked SQLite file, a PostgreSQL server restarting or out of
# reach, a serialization failure. Django raises OperationalError for all of them.
_TRANSIENT = (OperationalError, InterfaceError)


def aware(value: dt.datetime) -> dt.datetime:
    """A time read from Django, aware and in UTC (Django gives UTC when ``USE_TZ``)."""
    return to_utc(value)


def opt_aware(value: dt.datetime | None) -> dt.datetime | None:
    """:func:`aware`, or ``None``."""
    return None if value is None else to_utc(value)


def payload(value: Any) -> bytes:
    """Bytes read from a ``BinaryField`` (PostgreSQL gives a memoryview, SQLite bytes)."""
    return bytes(value)


class _ClosedWithThread:
    """Closes one thread's connection when the thread ends.

    Django closes connections at the end of a request; a thread of halomail's (the
    runner's committer) or of a thread pool has no request, and its connection would be
    left for the garbage collector (a PostgreSQL session held open until then, and a
    ``ResourceWarning``). Kept in :data:`_THREADS`, this object is dropped, and so closes
    the connection, when its thread ends.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __del__(self) -> None:
        try:
            if not self._connection.in_atomic_block:
                self._connection.close()
        except Exception:
            log.debug("closing a thread's connection failed", exc_info=True)


# Per thread: a _ClosedWithThread for each database alias the thread used.
_THREADS = threading.local()


def _close_with_thread(alias: str, connection: Any) -> None:
    closers: dict[str, _ClosedWithThread] | None = getattr(_THREADS, "closers", None)
    if closers is None:
        closers = _THREADS.closers = {}
    if alias not in closers:
        closers[alias] = _ClosedWithThread(connection)


class DjangoBase:
    """The database alias, the transaction flag of each thread, and error translation.

    See :class:`~halomail.contrib.django.DjangoRepository` for the arguments.
    """

    def __init__(
        self, using: str = "default", *, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        if not getattr(settings, "USE_TZ", False):
            # Without USE_TZ Django stores naive local times: halomail's aware UTC times
            # would be refused on SQLite and shifted on PostgreSQL.
            raise RepositoryError("halomail's Django repository needs USE_TZ = True in settings")
        self._using = using
        self._clock = clock
        # Django's connections are per thread, and so is the transaction each one holds.
        self._local = threading.local()

    @property
    def using(self) -> str:
        """The alias of the Django database the repository reads and writes."""
        return self._using

    def __repr__(self) -> str:
        return f"<DjangoRepository using {self._using!r}>"

    def close(self) -> None:
        """Close this thread's connection to the database (Django reopens it when needed)."""
        connection = connections[self._using]
        if not connection.in_atomic_block:
            connection.close()

    # -- transactions ------------------------------------------------------------

    @property
    def _in_transaction(self) -> bool:
        return bool(getattr(self._local, "in_transaction", False))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: committed when the block exits normally, rolled back on an exception.

        The block is a :func:`django.db.transaction.atomic` block: inside the host's own
        ``atomic`` it becomes a savepoint, and commits when the host's does.

        Raises:
            RepositoryError: When a transaction of this repository is already open on
                this thread (transactions do not nest), or the commit failed.
            TransientRepositoryError: When the database is locked or out of reach.
        """
        if self._in_transaction:
            raise RepositoryError("transactions do not nest: one is already open")
        self._refresh()
        self._local.in_transaction = True
        try:
            with self._translated(), transaction.atomic(using=self._using):
                yield
        finally:
            self._local.in_transaction = False

    def _refresh(self) -> None:
        """Drop a connection that broke (a server restart) so that Django opens a new one.

        Not Django's ``close_if_unusable_or_obsolete``: with the default ``CONN_MAX_AGE``
        of 0 it closes the connection every time (a request's end), and halomail's runs
        and workers are long, with no requests.
        """
        connection = connections[self._using]
        # Inside the host's own atomic block, an error is the host's to handle.
        suspect = connection.connection is not None and connection.errors_occurred
        if suspect and not connection.in_atomic_block:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()
        _close_with_thread(self._using, connection)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn Django's database errors into halomail's."""
        try:
            yield
        except _TRANSIENT as exc:
            raise TransientRepositoryError(f"database {self._using!r}: {exc}") from exc
        except DatabaseError as exc:
            raise RepositoryError(f"database {self._using!r}: {exc}") from exc

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[None]:
        """A read: errors translated, a broken connection replaced outside a transaction;
        ``snapshot`` makes several statements see one state (a read transaction)."""
        if self._in_transaction:
            with self._translated():
                yield
            return
        self._refresh()
        with self._translated():
            if not snapshot:
                yield
                return
            with transaction.atomic(using=self._using):
                yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write, all of it or nothing: outside a transaction in an ``atomic`` block of its
        own; inside one, part of it (a unique key taken is caught in a savepoint of its own,
        :meth:`_savepoint`)."""
        if self._in_transaction:
            with self._translated():
                yield
            return
        self._refresh()
        with self._translated(), transaction.atomic(using=self._using):
            yield

    def _savepoint(self) -> Any:
        """A savepoint inside a write: what fails in it (a unique key taken) is undone
        alone, and the write around it goes on."""
        return transaction.atomic(using=self._using)

    def _now(self) -> dt.datetime:
        """The clock's time, in UTC."""
        return to_utc(self._clock())
