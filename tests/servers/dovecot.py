"""A private Dovecot 2.3 (IMAP, IMAPS, POP3, POP3S) on loopback for the connector tests.

Everything here follows ``reference/mailservers.md`` (measured on this kind of machine):
``dovecot -F -c <conf>`` started by root with its own ``base_dir`` and four free ports,
mail owned by the unprivileged ``vmail`` user, a self-signed certificate made with
``cryptography`` (SAN ``127.0.0.1`` and ``localhost``), plain-text passwords in a
passwd-file, and XOAUTH2 / OAUTHBEARER through Dovecot's ``oauth2`` passdb, which asks
a tiny local HTTP :class:`Introspection` server whether a bearer token is active.

Settings that keep the tests fast: ``auth_failure_delay = 0`` and the anvil brute-force
penalty listener disabled (a failed login costs 0.5 s instead of 1.5-6 s),
``mail_fsync = never``, ``auth_cache_size = 0`` (the default: every OAuth login asks
the introspection server, so a revoked token fails at once).

Folders: ``Drafts``, ``Sent`` and ``Junk`` are created on login with their SPECIAL-USE
flag. ``Trash`` carries ``\\Trash`` but is **not** created automatically, and neither is
``Deleted Items`` (no special use): a fresh account therefore has no trash at all, so a
test proves either that a connector creates ``Deleted Items`` (fresh account) or that it
finds ``\\Trash`` (the test creates ``Trash`` first).

The instance lives in a fresh ``/tmp/halomail-dovecot-XXXX`` made 0755: pytest's
``tmp_path`` is 0700, and Dovecot's auth process (user ``dovecot``) and mail processes
(user ``vmail``) need ``+x`` on every parent directory. About 300 users (``u0001`` …,
password ``pw-u0001`` …) are written at start; :meth:`Dovecot.new_account` hands out the
next unused one, so each test gets an empty mailbox. More are appended to the passwd-file
when they run out (Dovecot re-reads it when it changes; no restart).

Run alone to see it work: ``python -m tests.servers.dovecot``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Account", "Dovecot", "Introspection", "dovecot", "find_dovecot", "start_dovecot"]

#: Users written to the passwd-file at start (more are added on demand).
PRECREATED_USERS = 300
MAIL_USER = "vmail"
_START_TIMEOUT = 10.0


@attrs.frozen
class Account:
    """One mailbox user of the private Dovecot.

    Args:
        username: The login name, e.g. ``"u0007"``.
        password: Its password, e.g. ``"pw-u0007"``.
    """

    username: str
    password: str = attrs.field(repr=False)


def _username(n: int) -> str:
    return f"u{n:04d}"


def _account(n: int) -> Account:
    return Account(_username(n), f"pw-{_username(n)}")


# -- OAuth2 token introspection (what Dovecot's oauth2 passdb calls) ---------------------


class Introspection:
    """A tiny HTTP server on ``127.0.0.1`` answering Dovecot's token introspection.

    Dovecot sends ``POST /introspect`` with the form body ``token=<bearer token>``; the
    answer is ``{"active": true, "username": "<user>"}`` for a granted token and
    ``{"active": false}`` otherwise. Dovecot then checks that ``username`` equals the
    user named in the SASL exchange.

    Attributes:
        url: The introspection URL Dovecot is configured with.
        calls: How many introspection requests arrived.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, str] = {}
        self.calls = 0
        introspection = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # Dovecot keeps the connection alive

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet; tests read ``calls``."""

            def do_POST(self) -> None:
                """Answer one introspection request."""
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                data = json.dumps(introspection._answer(form.get("token", ""))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/introspect"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="introspection", daemon=True
        )
        self._thread.start()

    def grant(self, token: str, username: str) -> None:
        """Make ``token`` an active bearer token of ``username``."""
        with self._lock:
            self._grants[token] = username

    def revoke(self, token: str) -> None:
        """Make ``token`` inactive (the next login with it fails)."""
        with self._lock:
            self._grants.pop(token, None)

    def _answer(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            user = self._grants.get(token)
        return {"active": True, "username": user} if user else {"active": False}

    def close(self) -> None:
        """Stop the HTTP server."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# -- the Dovecot instance ------------------------------------------------------------------


class Dovecot:
    """A running private Dovecot; made by :func:`start_dovecot`.

    Attributes:
        host: ``"127.0.0.1"``.
        imap_port: Plain IMAP (STARTTLS offered).
        imaps_port: IMAP over implicit TLS.
        pop3_port: Plain POP3 (STLS offered).
        pop3s_port: POP3 over implicit TLS.
        ca_file: The server's self-signed certificate (PEM); clients trust it.
        introspection: The OAuth2 introspection server Dovecot asks.
        log_path: Dovecot's log file.
        root: The instance's directory (removed by :meth:`stop`).
    """

    def __init__(
        self,
        *,
        root: Path,
        process: subprocess.Popen[bytes],
        ports: dict[str, int],
        ca_file: Path,
        introspection: Introspection,
        users_file: Path,
    ) -> None:
        self.host = "127.0.0.1"
        self.root = root
        self.imap_port = ports["imap"]
        self.imaps_port = ports["imaps"]
        self.pop3_port = ports["pop3"]
        self.pop3s_port = ports["pop3s"]
        self.ca_file = ca_file
        self.introspection = introspection
        self.log_path = root / "dovecot.log"
        self.process = process
        self._users_file = users_file
        self._lock = threading.Lock()
        self._handed_out = 0
        self._created = PRECREATED_USERS

    def __repr__(self) -> str:
        return f"Dovecot(imap={self.imap_port}, imaps={self.imaps_port}, root={self.root})"

    # -- accounts --------------------------------------------------------------------

    def new_account(self) -> Account:
        """A user nobody has used yet: an empty mailbox (created on first login)."""
        with self._lock:
            self._handed_out += 1
            n = self._handed_out
            if n > self._created:
                self._created += PRECREATED_USERS
                _write_users(self._users_file, self._created)
                # passwd-file notices a change by stat() at most once a second.
                time.sleep(1.1)
        return _account(n)

    # -- direct access over IMAP (for test setup and assertions) -----------------------

    @contextlib.contextmanager
    def imap(self, account: Account) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib client on the plain port, logged out afterwards."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            client.login(account.username, account.password)
            yield client
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def append(self, account: Account, raw: bytes, folder: str = "INBOX", flags: str = "") -> int:
        """APPEND ``raw`` to ``folder`` (created when missing) and return its UID.

        Args:
            account: Whose mailbox.
            raw: The message bytes (CRLF line endings).
            folder: The destination folder.
            flags: IMAP flags, e.g. ``"\\\\Seen \\\\Deleted"`` (empty: none).

        Returns:
            The UID the server gave the message (from the UIDPLUS ``APPENDUID`` code).
        """
        with self.imap(account) as client:
            if folder.upper() != "INBOX":
                client.create(_quote(folder))  # "NO ... already exists" is fine
            typ, data = client.append(_quote(folder), f"({flags})" if flags else None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder!r} failed: {data!r}")
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            if match is None:
                raise RuntimeError(f"no APPENDUID in {data!r}")
            return int(match.group(1))

    def messages(self, account: Account, folder: str = "INBOX") -> list[bytes]:
        """Every message of ``folder`` as raw bytes, in UID order (``[]``: no such folder).

        Messages flagged ``\\Deleted`` but not yet expunged are included.
        """
        with self.imap(account) as client:
            typ, _ = client.select(_quote(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH in {folder!r} failed: {data!r}")
            found: list[tuple[int, bytes]] = []
            for item in data:
                if isinstance(item, tuple):
                    uid = re.search(rb"UID (\d+)", item[0])
                    if uid is not None:
                        found.append((int(uid.group(1)), item[1]))
            return [raw for _, raw in sorted(found)]

    def folders(self, account: Account) -> list[str]:
        """The names of the account's folders (from ``LIST "" "*"``), sorted."""
        with self.imap(account) as client:
            typ, data = client.list('""', "*")
            if typ != "OK":
                raise RuntimeError(f"LIST failed: {data!r}")
            names = []
            for line in data:
                if not isinstance(line, bytes):
                    continue
                match = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', line)
                if match is not None:
                    names.append(_unquote(match.group(1).decode()))
            return sorted(names)

    # -- lifecycle --------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of Dovecot's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the master and wait (SIGKILL after 5 s), then remove :attr:`root`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                # A login stuck on a broken auth can hold SIGTERM for >10 s (mailservers.md).
                self.process.kill()
                self.process.wait(5)
        self.introspection.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _passwd_line(account: Account) -> str:
    return f"{account.username}:{{PLAIN}}{account.password}::::::\n"


def _write_users(path: Path, count: int) -> None:
    # Written whole and renamed into place: Dovecot never reads a half-written file.
    partial = path.with_suffix(".tmp")
    partial.write_text(
        "".join(_passwd_line(_account(i)) for i in range(1, count + 1)), encoding="ascii"
    )
    partial.chmod(0o644)
    partial.replace(path)


def _free_ports(count: int) -> list[int]:
    # Keep every socket open until all are chosen so the kernel hands out distinct ports.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 / localhost: (cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


_CONFIG = """\
# Private Dovecot 2.3 test instance for halomail (started by root, loopback only)
base_dir = {root}/run
state_dir = {root}/state
instance_name = halomail-dovecot-{tag}
protocols = imap pop3
listen = 127.0.0.1
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log

# the master runs as root; helpers as Debian's dovecot/dovenull; mail never as root
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
mail_uid = {mail_user}
mail_gid = {mail_user}
first_valid_uid = 100
first_valid_gid = 100

# speed and robustness for tests
mail_fsync = never
auth_failure_delay = 0
mail_max_userip_connections = 1000
service anvil {{
  unix_listener anvil-auth-penalty {{
    # mode 0 disables the listener: no brute-force penalty for failed logins
    mode = 0
  }}
}}

disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = allow_all_users=yes home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  # Not created automatically, so tests can prove a connector finds \\Trash or creates
  # the folder it was told to use.
  mailbox Trash {{
    special_use = \\Trash
    auto = no
  }}
  mailbox "Deleted Items" {{
    auto = no
  }}
}}
pop3_uidl_format = %08Xu%08Xv

ssl = yes
ssl_cert = <{root}/ssl/cert.pem
ssl_key = <{root}/ssl/key.pem

service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
{extra}
"""

_OAUTH2 = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
"""


def find_dovecot() -> str | None:
    """The path of the ``dovecot`` binary (also looked for in /usr/sbin), or None."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def _wait_for_greeting(process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(256).startswith(b"* OK"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def start_dovecot(root: Path, *, extra_config: str = "") -> Dovecot:
    """Start a private Dovecot in ``root`` (an existing, empty, 0755 directory).

    Args:
        root: Where its configuration, state, log and mail live.
        extra_config: Dovecot settings appended to the configuration (e.g. an
            ``imap_capability`` line for a server without MOVE).

    Returns:
        The running server, ready: its IMAP greeting has arrived.

    Raises:
        RuntimeError: Dovecot is missing or did not start; the message holds the log tail.
    """
    binary = find_dovecot()
    if binary is None:
        raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    try:
        mail_uid = pwd.getpwnam(MAIL_USER)
    except KeyError:
        raise RuntimeError(
            f"user {MAIL_USER!r} is missing: useradd --system --user-group {MAIL_USER}"
        ) from None
    root.chmod(0o755)
    for sub in ("run", "state", "mail", "ssl"):
        (root / sub).mkdir(exist_ok=True)
    os.chown(root / "mail", mail_uid.pw_uid, mail_uid.pw_gid)
    _, _ = _write_certificate(root / "ssl")
    users_file = root / "users"
    _write_users(users_file, PRECREATED_USERS)
    introspection = Introspection()
    (root / "oauth2.conf.ext").write_text(_OAUTH2.format(url=introspection.url))
    error = "did not start"
    for _attempt in range(3):  # free ports are chosen racily; retry when one is taken
        ports = dict(zip(("imap", "imaps", "pop3", "pop3s"), _free_ports(4), strict=True))
        conf = root / "dovecot.conf"
        conf.write_text(
            _CONFIG.format(
                root=root, tag=root.name, mail_user=MAIL_USER, extra=extra_config, **ports
            )
        )
        stdout = (root / "dovecot.stdout").open("ab")
        process = subprocess.Popen(
            [binary, "-F", "-c", str(conf)], stdout=stdout, stderr=subprocess.STDOUT
        )
        stdout.close()
        server = Dovecot(
            root=root,
            process=process,
            ports=ports,
            ca_file=root / "ssl" / "cert.pem",
            introspection=introspection,
            users_file=users_file,
        )
        if _wait_for_greeting(process, ports["imap"], time.monotonic() + _START_TIMEOUT):
            return server
        output = (root / "dovecot.stdout").read_text(errors="replace")
        error = f"{server.log_tail()}\n{output[-2000:]}"
        if process.poll() is None:
            process.kill()
        process.wait(5)
        if "in use" not in error:
            break
    introspection.close()
    raise RuntimeError(f"Dovecot did not start; log tail:\n{error}")


def make_root() -> Path:
    """A fresh ``/tmp/halomail-dovecot-XXXX`` directory, mode 0755."""
    root = Path(tempfile.mkdtemp(prefix="halomail-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """The session's private Dovecot; fails (never skips) when it cannot run here."""
    if find_dovecot() is None:
        pytest.fail(
            "Dovecot is not installed; the IMAP/POP3 tests need it: "
            "apt-get install dovecot-imapd dovecot-pop3d (scripts/test does this as root)",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the private Dovecot must be started by root", pytrace=False)
    root = make_root()
    try:
        server = start_dovecot(root)
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # pragma: no cover - a manual check
    started = time.monotonic()
    running = start_dovecot(make_root())
    print(running, f"ready in {time.monotonic() - started:.3f}s")
    user = running.new_account()
    uid = running.append(user, b"Subject: hi\r\n\r\nhello\r\n")
    print("appended uid", uid, running.messages(user), running.folders(user))
    stopped = time.monotonic()
    running.stop()
    print(f"stopped in {time.monotonic() - stopped:.3f}s")
