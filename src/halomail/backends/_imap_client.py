"""imaplib, bounded: the client classes and wire helpers behind :mod:`halomail.backends.imap`.

imaplib protects lines (``_MAXLINE``, 1 MB) but reads a literal of whatever size the
server announces: ``{2000000000}`` makes it allocate 2 GB before reading a byte. The
classes here refuse a literal over ``max_literal`` before reading it, and cap the bytes
one command's response may bring in, so a hostile or broken server can neither exhaust
memory with one huge literal nor with an endless stream of small responses. They also
close the socket when a TLS handshake fails (imaplib leaves it open), and keep no
in-memory log of the protocol (imaplib's ring buffer would hold the LOGIN line).

They read the socket through :class:`SocketLines` rather than imaplib's buffered file:
its buffer can be asked whether it holds a line already, so an IDLE connection can wait
on the socket with ``select`` (see :mod:`halomail.backends._imap_idle`) without ever
letting a read time out (a timed-out buffered file cannot be read again).
"""

from __future__ import annotations

import base64
import imaplib
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

__all__ = [
    "BoundedIMAP4",
    "BoundedIMAP4_SSL",
    "FetchRecord",
    "Selected",
    "SocketLines",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "expand_uid_set",
    "parse_fetch",
    "parse_list",
    "parse_status",
    "quote",
    "uid_set",
]


# imaplib's own line limit (``imaplib._MAXLINE``), kept with our reader.
_MAXLINE = 1_000_000
_CHUNK = 64 * 1024


@attrs.frozen
class Selected:
    """What SELECT / EXAMINE (or STATUS) told us about the folder."""

    uidvalidity: int
    uidnext: int
    exists: int


class SocketLines:
    """Lines and literals read from a socket through a buffer we can inspect.

    Args:
        sock: The connected (plain or TLS) socket; its timeout bounds every read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def pending(self) -> bool:
        """True when a read would find bytes without waiting on the socket."""
        if self._buffer:
            return True
        # TLS may hold decrypted bytes that select() on the socket cannot see.
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def readline(self, limit: int) -> bytes:
        """One line with its ending, at most ``limit`` bytes; ``b""`` at end of stream."""
        while True:
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                return self._take(limit)
            if not self._fill(_CHUNK):
                return self._take(len(self._buffer))

    def read(self, size: int) -> bytes:
        """``size`` bytes, or fewer at end of stream."""
        while len(self._buffer) < size:
            if not self._fill(min(max(size - len(self._buffer), _CHUNK), 1024 * 1024)):
                break
        return self._take(min(size, len(self._buffer)))

    def close(self) -> None:
        """Forget the buffer (the client closes the socket)."""
        self._buffer.clear()

    def _fill(self, size: int) -> bool:
        chunk = self.sock.recv(size)
        self._buffer += chunk
        return bool(chunk)

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class _Bounds:
    """Mixed into both client classes: the literal and per-command byte limits."""

    max_literal: int
    command_budget: int
    _left: int
    sock: socket.socket
    _lines: SocketLines | None

    def _init_bounds(self, max_literal: int, command_budget: int) -> None:
        self.max_literal = max_literal
        self.command_budget = command_budget
        # The greeting and CAPABILITY answer share one budget, like a command.
        self._left = command_budget
        self._lines = None

    def lines(self) -> SocketLines:
        """The reader of the current socket (a new one after STARTTLS)."""
        if self._lines is None or self._lines.sock is not self.sock:
            self._lines = SocketLines(self.sock)
        return self._lines

    def read(self, size: int) -> bytes:
        """Read a literal of ``size`` bytes, refusing one over :attr:`max_literal`."""
        if size > self.max_literal:
            # Refused before reading: the announced size is never allocated.
            raise imaplib.IMAP4.error(f"the server announced a literal of {size} bytes; refused")
        self._spend(size)
        data = self.lines().read(size)
        if len(data) < size:
            raise imaplib.IMAP4.abort("socket error: EOF inside a literal")
        return data

    def readline(self) -> bytes:
        """Read one line (imaplib's 1 MB bound), counted against the budget."""
        line = self.lines().readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise imaplib.IMAP4.error(f"got more than {_MAXLINE} bytes")
        self._spend(len(line))
        return line

    def _spend(self, size: int) -> None:
        self._left -= size
        if self._left < 0:
            raise imaplib.IMAP4.error(
                f"the server sent more than {self.command_budget} bytes for one command"
            )

    def _log(self, line: str) -> None:
        """Keep no protocol log: imaplib's would hold the LOGIN line, password included."""

    def new_tag(self) -> bytes:
        """A fresh command tag (for commands imaplib lacks, such as IDLE)."""
        tag: bytes = self._new_tag()  # type: ignore[attr-defined]
        return tag

    def next_line(self) -> bytes:
        """Read one response line outside a command (IDLE), with a fresh budget."""
        self._left = self.command_budget
        line: bytes = self._get_line()  # type: ignore[attr-defined]
        return line


class BoundedIMAP4(_Bounds, imaplib.IMAP4):
    """imaplib's client over a plain socket (STARTTLS-able), with bounded reads.

    Args:
        host: The server.
        port: Its port.
        timeout: Seconds for connecting and for every socket read and write.
        max_literal: The largest literal accepted (bytes).
        command_budget: The most bytes one command's response may bring in.
    """

    def __init__(
        self, host: str, port: int, *, timeout: float, max_literal: int, command_budget: int
    ) -> None:
        self._init_bounds(max_literal, command_budget)
        super().__init__(host, port, timeout)

    def _command(self, name: str, *args: Any) -> bytes:
        self._left = self.command_budget
        tag: bytes = super()._command(name, *args)  # type: ignore[misc]
        return tag


class BoundedIMAP4_SSL(_Bounds, imaplib.IMAP4_SSL):
    """imaplib's implicit-TLS client, with bounded reads, closing its socket on failure.

    Args:
        host: The server (also the name its certificate must carry).
        port: Its port.
        ssl_context: The verifying TLS context.
        timeout: Seconds for connecting and for every socket read and write.
        max_literal: The largest literal accepted (bytes).
        command_budget: The most bytes one command's response may bring in.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        timeout: float,
        max_literal: int,
        command_budget: int,
    ) -> None:
        self._init_bounds(max_literal, command_budget)
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = imaplib.IMAP4._create_socket(self, timeout)  # type: ignore[attr-defined]
        try:
            wrapped: socket.socket = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()  # imaplib would leave the plain socket open
            raise
        return wrapped

    def _command(self, name: str, *args: Any) -> bytes:
        self._left = self.command_budget
        tag: bytes = super()._command(name, *args)  # type: ignore[misc]
        return tag


# -- strings on the wire ---------------------------------------------------------------


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3): backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_mailbox_name(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 §5.1.3), e.g. ``Éléments``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


_UTF7_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mailbox_name(name: str) -> str:
    """The Unicode name of a folder listed in modified UTF-7 (invalid runs kept as sent)."""

    def decode(match: re.Match[str]) -> str:
        run = match.group(1)
        if not run:
            return "&"
        data = run.replace(",", "/")
        try:
            return base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)

    return _UTF7_RUN.sub(decode, name)


def uid_set(uids: Iterable[int]) -> str:
    """A compact UID set: ``[1, 2, 3, 7]`` → ``"1:3,7"``."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = -1
    for uid in ordered:
        if uid == prev + 1:
            prev = uid
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start >= 0:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def expand_uid_set(text: str, limit: int) -> list[int]:
    """The UIDs of a set like ``"1:3,7"``, at most ``limit`` of them.

    Raises:
        ValueError: The set is malformed or names more than ``limit`` UIDs (a server
            answering ``1:4294967295`` must not make us build four billion integers).
    """
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        low, high = int(first), int(last or first)
        if low > high:
            low, high = high, low
        if low < 1 or len(uids) + (high - low + 1) > limit:
            raise ValueError(f"UID set {text[:80]!r} is invalid or larger than {limit}")
        uids.extend(range(low, high + 1))
    return uids


# -- responses -------------------------------------------------------------------------


class FetchRecord:
    """What one ``* n FETCH (...)`` response said: its UID, size and body, when present."""

    __slots__ = ("body", "size", "uid")

    def __init__(self) -> None:
        self.uid: int | None = None
        self.size: int | None = None
        self.body: bytes | None = None


_START = re.compile(rb"\d+ \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_BODY_LITERAL = re.compile(rb"\bBODY\[\] \{\d+\}$")


def parse_fetch(data: Iterable[Any]) -> Iterator[FetchRecord]:
    """Turn imaplib's FETCH data (bytes, and (head, literal) tuples) into records.

    A response is split by imaplib at each literal: ``(b'1 (UID 5 BODY[] {42}', raw)``
    then the rest, ``b')'`` (or ``b' UID 5)'`` when the server put the UID last).
    """
    record: FetchRecord | None = None
    text = b""

    def finish() -> Iterator[FetchRecord]:
        if record is not None:
            uid = _UID.search(text)
            size = _SIZE.search(text)
            record.uid = int(uid.group(1)) if uid else None
            record.size = int(size.group(1)) if size else None
            yield record

    for item in data:
        if isinstance(item, tuple):
            head, literal = item[0], item[1]
            if _START.match(head):
                yield from finish()
                record, text = FetchRecord(), b""
            if record is None:
                continue
            text += b" " + head
            if _BODY_LITERAL.search(head):
                record.body = literal
        elif isinstance(item, bytes) and item:
            if _START.match(item):
                yield from finish()
                record, text = FetchRecord(), item
            elif record is not None:
                text += b" " + item
    yield from finish()


_LIST = re.compile(rb'\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) ?(?P<name>.*)$')


def parse_list(data: Iterable[Any]) -> list[tuple[frozenset[str], str]]:
    """``LIST`` answers → (attributes in lower case, decoded folder name) pairs."""
    folders: list[tuple[frozenset[str], str]] = []
    for item in data:
        if isinstance(item, tuple):
            match = _LIST.match(item[0])
            raw_name = bytes(item[1])
        elif isinstance(item, bytes):
            match = _LIST.match(item)
            raw_name = match.group("name") if match else b""
            if len(raw_name) >= 2 and raw_name[:1] == raw_name[-1:] == b'"':
                raw_name = re.sub(rb"\\(.)", rb"\1", raw_name[1:-1])
        else:
            continue
        if match is None:
            continue
        flags = frozenset(
            f.lower() for f in match.group("flags").decode("ascii", "replace").split()
        )
        name = raw_name.decode("utf-8", "replace")
        folders.append((flags, decode_mailbox_name(name)))
    return folders


_STATUS_ITEM = re.compile(rb"\b(UIDNEXT|UIDVALIDITY) (\d+)", re.IGNORECASE)


def parse_status(data: Iterable[Any]) -> Selected:
    """``STATUS (UIDNEXT UIDVALIDITY)`` answers → the folder's UIDVALIDITY and UIDNEXT."""
    found = dict.fromkeys((b"UIDNEXT", b"UIDVALIDITY"), 0)
    for item in data:
        text = item[0] if isinstance(item, tuple) else item
        if isinstance(text, bytes):
            for name, value in _STATUS_ITEM.findall(text):
                found[name.upper()] = int(value)
    return Selected(found[b"UIDVALIDITY"], found[b"UIDNEXT"], 0)
