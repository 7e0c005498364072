"""The IMAP IDLE watcher: one held connection per mailbox, waited on with ``select``.

:meth:`ImapConnector.wait_for_mail <halomail.backends.imap.ImapConnector.wait_for_mail>`
delegates to an :class:`IdleWatcher`. The watcher logs in once and keeps that
connection across waits:

* **IDLE** (RFC 2177) when the server offers it: the folder is examined once, then each
  wait sends ``IDLE`` and waits on the socket with ``select`` until the server reports
  ``EXISTS`` or the wait's time is up, and ends with ``DONE``. A long wait re-issues IDLE
  every 25 minutes, inside the RFC's 29. The connection stays logged in for the next
  wait.
* **STATUS polling** every ``poll_interval`` seconds when it does not.
* **Reconnects** only after the connection broke (the next wait logs in again).
* **Stoppable**: :meth:`IdleWatcher.close`, from any thread, shuts the socket down under a
  blocked ``select`` or read, so the wait returns ``False`` at once; a watcher that is not
  waiting logs out right away.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from halomail.backends._imap_client import Selected, SocketLines
from halomail.backends._imap_session import ImapLogin, logout_quietly, text_of
from halomail.errors import ConnectorError

__all__ = ["IDLE_SLICE", "IdleWatcher"]

log = logging.getLogger("halomail.backends.imap")

# RFC 2177: a client should re-issue IDLE at least every 29 minutes.
IDLE_SLICE = 25 * 60.0
_EXISTS = re.compile(rb"\* (\d+) EXISTS", re.IGNORECASE)


class IdleWatcher:
    """Waits for new mail in one folder on a connection it holds (see the module docstring).

    Args:
        login: Opens a logged-in connection.
        examine: Selects the folder read-only on a connection; returns what it said.
        status: Asks ``STATUS`` of the folder on a connection (nothing selected).
        poll_interval: Seconds between ``STATUS`` checks when the server has no IDLE.
    """

    def __init__(
        self,
        login: ImapLogin,
        *,
        examine: Callable[[imaplib.IMAP4], Selected],
        status: Callable[[imaplib.IMAP4], Selected],
        poll_interval: float,
    ) -> None:
        self._login = login
        self._examine = examine
        self._status = status
        self._poll_interval = poll_interval
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _client and _waiting
        self._wait_lock = threading.Lock()  # one wait at a time on the connection
        self._client: imaplib.IMAP4 | None = None
        self._idle = False  # the held connection's server offers IDLE
        self._seen: Selected | None = None  # the folder's STATUS when last polled
        self._waiting = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed.is_set()

    def wait(self, timeout: float, mark: tuple[int, int] | None) -> bool:
        """Wait up to ``timeout`` seconds for new mail.

        Args:
            timeout: The longest wait, in seconds.
            mark: ``(UIDVALIDITY, UIDNEXT)`` after the last read, or ``None``: when a
                fresh connection finds the folder past it, the mail is new at once.

        Returns:
            True when new mail was reported; False on timeout or after :meth:`close`.

        Raises:
            AuthenticationError: The credentials were refused.
            TransientConnectorError: The connection failed (the next wait reconnects).
            ConnectorError: TLS failed or the folder is missing.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._wait_lock:
            self._set_waiting(True)
            try:
                while not self.closed and (remaining := deadline - time.monotonic()) > 0:
                    if self._wait_once(remaining, mark):
                        return True
                return False
            finally:
                self._set_waiting(False)

    def close(self) -> None:
        """Stop: end a blocked wait at once (from any thread) and release the connection."""
        self._closed.set()
        with self._lock:
            client, waiting = self._client, self._waiting
            if not waiting:
                self._client = None
        if client is None:
            return
        if waiting:
            # The waiting thread sees the shutdown as end-of-stream and drops the
            # connection itself. The plain socket's shutdown, not SSLSocket's: that one
            # would tear down TLS state under the other thread's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(client.sock, socket.SHUT_RDWR)
        else:
            logout_quietly(client, polite=True)

    # -- one wait ----------------------------------------------------------------------

    def _wait_once(self, remaining: float, mark: tuple[int, int] | None) -> bool:
        """Wait on the held connection; a kept one found broken is replaced once."""
        retried = False
        while True:
            kept = self._client is not None
            try:
                return self._wait_on_connection(remaining, mark)
            except ConnectorError as exc:
                self._drop()
                if self.closed:
                    return False  # the error is our own close() shutting the socket
                if retried or not kept:
                    raise
                # Held since an earlier wait and dropped by the server or the network
                # since: log in again; a fresh connection that fails raises.
                retried = True
                log.info(
                    "mailbox %s: IDLE connection lost (%s); reconnecting", self._login.name, exc
                )

    def _wait_on_connection(self, remaining: float, mark: tuple[int, int] | None) -> bool:
        client = self._client
        if client is None:
            client, found = self._reconnect(mark)
            if found:
                return True
        if not self._idle:
            return self._poll(client, remaining)
        with self._login.io("wait for mail", self._drop):
            return self._idle_slice(client, min(remaining, IDLE_SLICE))

    def _reconnect(self, mark: tuple[int, int] | None) -> tuple[imaplib.IMAP4, bool]:
        """A fresh held connection, and whether the folder is already past ``mark``."""
        client, caps = self._login.connect()
        with self._lock:
            self._client = client
        if self.closed:  # close() came while we logged in
            raise ConnectorError("the watcher was closed", mailbox=self._login.name)
        self._idle = "IDLE" in caps
        with self._login.io("wait for mail", self._drop):
            # IDLE needs the folder selected; polling must not select it, as STATUS of
            # the selected folder may answer from the session's view.
            now = self._examine(client) if self._idle else self._status(client)
        self._seen = None if self._idle else now
        how = "with IDLE" if self._idle else "by polling STATUS"
        log.debug("mailbox %s: watching %s", self._login.name, how)
        return client, mark is not None and (now.uidvalidity != mark[0] or now.uidnext > mark[1])

    def _idle_slice(self, client: imaplib.IMAP4, seconds: float) -> bool:
        """One IDLE of up to ``seconds``: True when the server reports EXISTS."""
        wire: Any = client
        tag: bytes = wire.new_tag()
        wire.send(tag + b" IDLE\r\n")
        found = False
        while not (line := wire.next_line()).startswith(b"+"):
            if line.startswith(tag + b" "):
                # NO/BAD: the server does not IDLE after all; poll from now on.
                self._idle = False
                return False
            found = found or bool(_EXISTS.match(line))
        deadline = time.monotonic() + seconds
        lines: SocketLines = wire.lines()
        while not found and (left := deadline - time.monotonic()) > 0:
            if not (lines.pending() or _readable(client.sock, left)):
                break
            line = wire.next_line()
            if not line or line.upper().startswith(b"* BYE"):
                raise imaplib.IMAP4.abort(text_of(line) or "connection closed")
            found = bool(_EXISTS.match(line))
        # End the IDLE politely either way: the connection is kept for the next wait.
        wire.send(b"DONE\r\n")
        while not (line := wire.next_line()).startswith(tag + b" "):
            if not line:
                raise imaplib.IMAP4.abort("connection closed")
        if found:
            log.debug("mailbox %s: new mail reported by IDLE", self._login.name)
        return found

    def _poll(self, client: imaplib.IMAP4, remaining: float) -> bool:
        """Without IDLE: ``STATUS`` every ``poll_interval`` seconds until time is up.

        Compared with the last answer, kept across waits: mail that arrived between two
        waits is news at the start of the second.
        """
        deadline = time.monotonic() + remaining
        while True:
            with self._login.io("wait for mail", self._drop):
                now = self._status(client)
            seen, self._seen = self._seen, now
            if seen is not None and (
                now.uidvalidity != seen.uidvalidity or now.uidnext > seen.uidnext
            ):
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self._closed.wait(min(self._poll_interval, left)):
                return False

    # -- the held connection -----------------------------------------------------------

    def _set_waiting(self, waiting: bool) -> None:
        with self._lock:
            self._waiting = waiting
            # A close() during the wait left the connection to this thread.
            leftover = self._client if not waiting and self.closed else None
            if leftover is not None:
                self._client = None
        logout_quietly(leftover, polite=False)

    def _drop(self) -> None:
        """Forget a broken connection; the next wait logs in again."""
        with self._lock:
            client, self._client = self._client, None
        logout_quietly(client, polite=False)


def _readable(sock: socket.socket, seconds: float) -> bool:
    """Wait until ``sock`` can be read (or was shut down), at most ``seconds``."""
    ready, _, _ = select.select([sock], [], [], max(0.0, seconds))
    return bool(ready)
