"""A TCP proxy on loopback that injects faults between a client and a real server.

Put it between a connector and the private Dovecot (``FaultProxy(dovecot.host,
dovecot.imap_port)``, then point the connector at ``proxy.port``). Faults apply to the
connections accepted after they are set:

* ``cut_after``: close both sides once this many bytes came from the server (a server
  dropping mid-FETCH, F1);
* ``stall_after``: after this many bytes from the server, forward nothing more and
  keep the connection open (a server that accepts and stalls, F3; 0 = no greeting);
* ``cut_on_client``: close both sides, without forwarding it, when the client sends
  data containing this pattern (a crash just before a command, e.g. ``b"UID EXPUNGE"``);
* ``rewrite``: a function applied to every line from the server (strip ``MOVE`` or
  ``STARTTLS`` from CAPABILITY with :func:`strip_capabilities`);
* ``latency``: seconds slept before forwarding each chunk the server sends, as a server
  across a network answers (every IMAP round trip pays it once). The proxy sleeps, it
  does not spin, so a hundred slow connections cost no CPU; :attr:`FaultProxy.delays`
  counts the sleeps.

Every line the clients sent is recorded in :attr:`FaultProxy.client_lines`, so a test can
prove which commands were (not) used.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator

import attrs
import pytest

__all__ = ["FaultProxy", "fault_proxy_factory", "strip_capabilities"]

_CHUNK = 64 * 1024


@attrs.frozen
class _Faults:
    """The faults of one connection, fixed when it is accepted."""

    cut_after: int | None
    stall_after: int | None
    cut_on_client: bytes | None
    rewrite: Callable[[bytes], bytes] | None
    latency: float


def strip_capabilities(*names: str) -> Callable[[bytes], bytes]:
    """A ``rewrite`` removing the named capabilities from every CAPABILITY list."""
    words = {n.upper().encode() for n in names}

    def rewrite(line: bytes) -> bytes:
        if b"CAPABILITY" not in line.upper():
            return line

        def strip(match: re.Match[bytes]) -> bytes:
            kept = [w for w in match.group(2).split(b" ") if w.upper() not in words]
            return match.group(1) + b" ".join(kept)

        return re.sub(rb"(CAPABILITY )([^\]\r\n]*)", strip, line, flags=re.IGNORECASE)

    return rewrite


class FaultProxy:
    """A loopback TCP proxy to ``upstream_host:upstream_port`` (see the module docstring).

    Args:
        upstream_host: The real server.
        upstream_port: Its port.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.cut_on_client: bytes | None = None
        self.rewrite: Callable[[bytes], bytes] | None = None
        self.latency = 0.0
        #: Every line clients sent (CRLF stripped), in order, across connections.
        self.client_lines: list[bytes] = []
        #: Connections accepted so far.
        self.connections = 0
        #: Connections a fault ended.
        self.faults = 0
        #: Server chunks held back by ``latency`` before being forwarded.
        self.delays = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.host = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._accepting.start()

    def __repr__(self) -> str:
        return f"FaultProxy({self.port} -> {self.upstream[0]}:{self.upstream[1]})"

    def commands(self) -> list[str]:
        """The client lines as text, tags removed (``"UID MOVE 1 Trash"``)."""
        with self._lock:
            lines = list(self.client_lines)
        return [
            line.decode("utf-8", "replace").partition(" ")[2]
            for line in lines
            if line and not line.startswith(b"DONE")
        ]

    def open_connections(self) -> int:
        """Client connections open now (each holds one to the server too)."""
        with self._lock:
            return len(self._sockets) // 2

    def imap_logins(self) -> int:
        """How many IMAP logins (``LOGIN`` or ``AUTHENTICATE``) went through so far."""
        return sum(1 for c in self.commands() if c.upper().startswith(("LOGIN ", "AUTHENTICATE ")))

    def drop_connections(self) -> None:
        """Cut every open connection (a network failure); new ones are still accepted."""
        with self._lock:
            sockets = list(self._sockets)
        self._end(*sockets, fault=True)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closing.set()
        self._accepting.join(5)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(5)

    # -- plumbing ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.connections += 1
                self._sockets.update((client, server))
            faults = _Faults(
                self.cut_after, self.stall_after, self.cut_on_client, self.rewrite, self.latency
            )
            for target, args in (
                (self._downstream, (server, client, faults)),
                (self._upstream, (client, server, faults)),
            ):
                thread = threading.Thread(target=target, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _end(self, *sockets: socket.socket, fault: bool = False) -> None:
        with self._lock:
            if fault:
                self.faults += 1
            for sock in sockets:
                self._sockets.discard(sock)
        for sock in sockets:
            _close(sock)

    def _downstream(self, server: socket.socket, client: socket.socket, faults: _Faults) -> None:
        cut_after, stall_after, rewrite = faults.cut_after, faults.stall_after, faults.rewrite
        sent = 0
        held = b""
        while True:
            try:
                data = server.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                self._end(server, client)
                return
            if rewrite is not None:
                held += data
                lines = held.split(b"\n")
                held = lines.pop()
                data = b"".join(rewrite(line + b"\n") for line in lines)
            if faults.latency > 0:
                self._delay(faults.latency)
            if stall_after is not None and sent + len(data) >= stall_after:
                self._send(client, data[: stall_after - sent])
                self._closing.wait()  # hold the connection open, silent, until close()
                self._end(server, client, fault=True)
                return
            if cut_after is not None and sent + len(data) >= cut_after:
                self._send(client, data[: cut_after - sent])
                self._end(server, client, fault=True)
                return
            if not self._send(client, data):
                self._end(server, client)
                return
            sent += len(data)

    def _upstream(self, client: socket.socket, server: socket.socket, faults: _Faults) -> None:
        cut_on_client = faults.cut_on_client
        held = b""
        while True:
            try:
                data = client.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                self._end(server, client)
                return
            held += data
            lines = held.split(b"\r\n")
            held = lines.pop()[-4096:]
            with self._lock:
                self.client_lines.extend(line[:4096] for line in lines)
            if cut_on_client is not None and cut_on_client in data:
                self._end(server, client, fault=True)
                return
            if not self._send(server, data):
                self._end(server, client)
                return

    def _delay(self, seconds: float) -> None:
        # A wait, as on a network: the sleep is cut short when the proxy closes.
        with self._lock:
            self.delays += 1
        self._closing.wait(seconds)

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
        except OSError:
            return False
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[[str, int], FaultProxy]]:
    """Make proxies to any upstream; all are closed after the test."""
    made: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
