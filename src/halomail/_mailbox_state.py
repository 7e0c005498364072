"""What a runner keeps about each mailbox, and where: its lease, sync state and health.

Several runners (processes, machines, Celery workers) may take turns at one mailbox, so
what one learned about it lives in the ledger, not in the process:

* ``mailbox:<name>`` is the **lease** a runner holds while it reads the mailbox
  (:class:`MailboxLease`).
* ``mailbox:<name>:sync`` is the connector's **sync state**
  (:class:`~halomail.backends.base.SyncState`: a Graph delta link, a Gmail history id,
  with the messages they left in the folder). It is restored under the lease at the
  start of every pass, since another runner may have advanced it, and saved after the
  pass's dispositions when it changed: one write per pass, never one per email.
* ``mailbox:<name>:health`` is its **health** (consecutive failures, the last error,
  redacted of secrets, and the next attempt: the backoff's, or the wait the server
  asked for with a ``retry_after``), as JSON. It is read at the start of every pass and
  written when the failures change, so a mailbox refusing its password backs off for
  every runner, a throttled one waits in every runner and after a restart, and a
  success anywhere clears it. A mailbox that keeps succeeding costs no write.

The :class:`MailboxLedger` remembers the text it last read or wrote for each key, so a
runner that is the only one reading a mailbox skips parsing what it wrote itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import attrs

from halomail._text import redact_secrets
from halomail.pipeline.reports import MailboxHealth
from halomail.pipeline.settings import Mailbox
from halomail.tickets.repository import TicketRepository

__all__ = ["LeaseLost", "MailboxLease", "MailboxLedger", "OneWriter"]

log = logging.getLogger("halomail.runner")

_HEALTH_VERSION = 1


class OneWriter(AbstractContextManager[None]):
    """The lock held around every use of the repository: one writer at a time.

    Reentrant, so a step that holds it may call another that takes it. A repository
    that declares ``thread_safe = True`` gets no lock: it is entered concurrently.
    """

    def __init__(self, *, exclusive: bool) -> None:
        self._lock = threading.RLock() if exclusive else None

    def __enter__(self) -> None:
        if self._lock is not None:
            self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.release()


class LeaseLost(Exception):
    """Another runner took over a mailbox's lease while this one was reading it."""


class MailboxLease:
    """The ledger's lease on one mailbox, held while a runner reads it.

    Used only with a repository that has ``acquire_lease`` and ``release_lease``.

    Args:
        repository: Has ``acquire_lease`` and ``release_lease``.
        mailbox: The mailbox's name.
        owner: Who holds the lease (unique per process and processor).
        clock: The current time.
        writer: The repository's one-writer lock.
        ttl: How long the lease lasts unless renewed; renewed at a third of that.
    """

    def __init__(
        self,
        repository: Any,  # has acquire_lease and release_lease (not yet in the Protocol)
        mailbox: str,
        owner: str,
        clock: Callable[[], dt.datetime],
        writer: OneWriter,
        ttl: dt.timedelta,
    ) -> None:
        self.name = f"mailbox:{mailbox}"
        self._repository = repository
        self._owner = owner
        self._clock = clock
        self._writer = writer
        self._ttl = ttl
        self._renew_at: dt.datetime | None = None

    def acquire(self) -> bool:
        """Take (or renew) the lease; False when another runner holds it."""
        now = self._clock()
        with self._writer:
            held = bool(
                self._repository.acquire_lease(self.name, self._owner, now=now, ttl=self._ttl)
            )
        self._renew_at = now + self._ttl / 3 if held else None
        return held

    def renew_if_due(self) -> None:
        """Renew the lease when a third of it has passed.

        Raises:
            LeaseLost: Another runner holds it now.
        """
        if self._renew_at is not None and self._clock() >= self._renew_at and not self.acquire():
            raise LeaseLost(f"lease {self.name} was taken over by another runner")

    def release(self) -> None:
        """Give the lease back (a failure only means it expires)."""
        try:
            with self._writer:
                self._repository.release_lease(self.name, self._owner)
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            log.warning("releasing %s failed: %s", self.name, exc)


class MailboxLedger:
    """Each mailbox's sync state and health, kept in the repository's ledger.

    Args:
        repository: Where the state lives (``get_state``/``set_state``).
        writer: The repository's one-writer lock.
        names: The mailboxes.
    """

    def __init__(self, repository: TicketRepository, writer: OneWriter, names: list[str]) -> None:
        self._repository = repository
        self._writer = writer
        #: Each mailbox's health as this runner last knew it.
        self.health: dict[str, MailboxHealth] = {name: MailboxHealth(name) for name in names}
        # The text last read or written under each key; None: nothing yet.
        self._seen: dict[str, str | None] = {}

    # -- sync state ----------------------------------------------------------------------

    def restore_sync(self, mailbox: Mailbox) -> None:
        """Hand the connector the sync state stored for it, when it changed since.

        Raises:
            TransientRepositoryError: The repository is busy (the pass stops).
        """
        restore = getattr(mailbox.connector, "restore_sync_state", None)
        if not callable(restore):
            return
        key = f"mailbox:{mailbox.name}:sync"
        with self._writer:
            text = self._repository.get_state(key)
        if key in self._seen and text == self._seen[key]:
            return  # what this runner last read or wrote: its connector holds it already
        restore(text)
        self._seen[key] = text

    def save_sync(self, mailbox: Mailbox) -> None:
        """Store the connector's sync state, when it changed (one write per pass at most).

        A failure is logged, not raised: the state stored before stays, and it still
        leads the next reader to every email not yet disposed of.
        """
        export = getattr(mailbox.connector, "export_sync_state", None)
        if not callable(export):
            return
        key = f"mailbox:{mailbox.name}:sync"
        text = export()
        if text is None or text == self._seen.get(key):
            return
        try:
            with self._writer:
                self._repository.set_state(key, text)
        except Exception as exc:  # noqa: BLE001 - the older state is safe, only slower
            log.warning("mailbox %s: saving its sync state failed: %s", mailbox.name, exc)
            return
        self._seen[key] = text

    # -- health --------------------------------------------------------------------------

    def load_health(self, name: str) -> MailboxHealth:
        """The mailbox's health as the ledger has it (another runner may have changed it).

        A repository that cannot answer keeps what this runner knew: the pass's own
        writes will say whether the repository can be used.
        """
        key = f"mailbox:{name}:health"
        known = self.health.setdefault(name, MailboxHealth(name))
        try:
            with self._writer:
                text = self._repository.get_state(key)
        except Exception as exc:  # noqa: BLE001 - health is advice; the pass decides
            log.debug("mailbox %s: health not read (%s); using the last known", name, exc)
            return known
        if text is not None and text != self._seen.get(key):
            self._seen[key] = text
            stored = _health_from_text(name, text)
            if stored is not None:
                local = known.last_success
                if local is not None and (stored.last_success or local) <= local:
                    stored = attrs.evolve(stored, last_success=local)
                self.health[name] = stored
        return self.health[name]

    def record_health(self, health: MailboxHealth) -> None:
        """Keep ``health``, and store it when its failures changed (a success after a
        success writes nothing)."""
        previous = self.health.get(health.name, MailboxHealth(health.name))
        self.health[health.name] = health
        if _failures(previous) == _failures(health):
            return
        key = f"mailbox:{health.name}:health"
        text = _health_to_text(health)
        try:
            with self._writer:
                self._repository.set_state(key, text)
        except Exception as exc:  # noqa: BLE001 - health is advice; processing goes on
            log.warning("mailbox %s: saving its health failed: %s", health.name, exc)
            return
        self._seen[key] = text


def _failures(health: MailboxHealth) -> tuple[object, ...]:
    """What other runners must learn of: the failures and the backoff."""
    return (health.consecutive_failures, health.last_error, health.next_attempt_at)


def _health_to_text(health: MailboxHealth) -> str:
    data = health.as_dict()
    data["last_error"] = redact_secrets(health.last_error) if health.last_error else None
    data["version"] = _HEALTH_VERSION
    return json.dumps(data, sort_keys=True)


def _health_from_text(name: str, text: str) -> MailboxHealth | None:
    """The health stored as ``text``; ``None`` (logged) when it cannot be read."""

    def when(value: object) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

    try:
        data = json.loads(text)
        if data.get("version") != _HEALTH_VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        error = data.get("last_error")
        return MailboxHealth(
            name,
            last_success=when(data.get("last_success")),
            last_error=error if isinstance(error, str) else None,
            last_error_at=when(data.get("last_error_at")),
            consecutive_failures=int(data.get("consecutive_failures") or 0),
            next_attempt_at=when(data.get("next_attempt_at")),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("mailbox %s: the stored health is ignored: %s", name, exc)
        return None
