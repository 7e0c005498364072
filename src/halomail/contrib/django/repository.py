"""The repository over the Django ORM: halomail's roles on the app's models.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halomail.contrib.django._directory import DirectoryPart
from halomail.contrib.django._ledger import LedgerPart
from halomail.contrib.django._outbox import OutboxPart
from halomail.contrib.django._tickets import TicketsPart

if TYPE_CHECKING:
    from halomail.config.loader import Config
    from halomail.tickets.repository import (
        AttemptLedger,
        Browsing,
        LedgerRetention,
        OutboxAdmin,
        QuarantineAdmin,
        TicketRepository,
    )

__all__ = ["DjangoRepository", "from_config"]


class DjangoRepository(TicketsPart, DirectoryPart, LedgerPart, OutboxPart):
    """A :class:`~halomail.TicketRepository` in Django's database, on the app's models.

    It implements every role halomail's SQLite repository does (the five of
    :class:`~halomail.TicketRepository`, :class:`~halomail.Browsing`,
    :class:`~halomail.OutboxAdmin`, :class:`~halomail.QuarantineAdmin`,
    :class:`~halomail.AttemptLedger` and
    :class:`~halomail.tickets.repository.LedgerRetention`) and passes the whole contract
    suite on SQLite and PostgreSQL.

    :meth:`transaction` is a :func:`django.db.transaction.atomic` block: everything of
    one email is committed together or not at all, and inside the host's own ``atomic``
    block (an agent's reply through :meth:`~halomail.Notifier.ticket_email`) it commits
    with the host's writes. Each write outside a transaction is atomic on its own.
    Uniqueness (dedupe keys, Message-IDs, leases) is kept by unique constraints, so two
    processes at once never both win; PostgreSQL claims outgoing mail with ``SELECT …
    FOR UPDATE SKIP LOCKED``. On SQLite, set ``"OPTIONS": {"transaction_mode":
    "IMMEDIATE"}`` (Django 5.1 and later) so that two processes queue for the write lock
    instead of one failing with "database is locked" (a
    :class:`~halomail.errors.TransientRepositoryError`, retried later).

    Django's connections belong to threads: each thread that calls the repository uses
    its own, and a transaction is open on the thread that opened it.

    Args:
        using: The alias of the database in ``settings.DATABASES``.
        clock: Returns the current time (aware); tests pass a fixed clock.

    Raises:
        RepositoryError: When ``settings.USE_TZ`` is not true.

    .. versionadded:: 0.1.0
    """

    thread_safe: bool = True
    """Concurrent calls from several threads are safe: each thread has its own connection."""


def from_config(config: Config) -> DjangoRepository:
    """The factory ``[storage] repository`` names in the management commands.

    The database is the alias ``settings.HALOMAIL["database"]`` names (``"default"``).
    """
    from halomail.contrib.django.conf import database_alias

    return DjangoRepository(database_alias())


if TYPE_CHECKING:
    # mypy proves the class satisfies the Protocols, signature by signature.
    _: type[TicketRepository] = DjangoRepository
    _browsing: type[Browsing] = DjangoRepository
    _outbox_admin: type[OutboxAdmin] = DjangoRepository
    _quarantine_admin: type[QuarantineAdmin] = DjangoRepository
    _attempts: type[AttemptLedger] = DjangoRepository
    _retention: type[LedgerRetention] = DjangoRepository
