"""``halomail authorize MAILBOX``: sign-in without copying tokens by hand (#17).

The real command runs as a subprocess, msal and requests talk to the local token
endpoint; the test plays the user: it reads the code (Microsoft) or the consent page's
address (Google) the command prints, approves it as the identity provider's page would,
and (Google) brings the browser back to the command's loopback redirect. The sign-in
stored then serves a ``halomail run`` against the Graph or Gmail endpoint.
"""

from __future__ import annotations

import email
import email.utils
import json
import queue
import re
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import MicrosoftTokenProvider
from halomail.errors import AuthenticationError
from tests.conftest import make_email
from tests.servers.gmail import GmailState, running_gmail_server
from tests.servers.graph import GraphServer, GraphState, running_graph_server
from tests.servers.token_endpoint import DEVICE_CODE, TokenEndpoint

SUPPORT = "support@contoso.example"
CUSTOMER = "alice@customer.example"
PUBLIC_CLIENT = "3f1d7a52-6b8e-4c1d-9e2f-0a1b2c3d4e5f"
GOOGLE_CLIENT_ID = "5678-desktop.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-installed-app-secret"
_CODE = re.compile(r"enter the code (\w+) to authenticate")
_DOCS = Path(__file__).parent.parent / "docs" / "mailboxes.md"
# What differs between the guide's session and a real one: addresses, paths, the code.
_VARIABLE = re.compile(r"(https?://\S+|/[^\s;]+|\b[A-Z0-9]{8}\b)")


def _documented_sessions() -> list[tuple[list[str], list[str]]]:
    """docs/mailboxes.md's ``authorize`` sessions: the command's arguments, its lines."""
    blocks = re.findall(r"^( *)```console\n(.*?)^\1```", _DOCS.read_text(), re.M | re.S)
    sessions = []
    for indent, body in blocks:
        lines = [line.removeprefix(indent) for line in body.splitlines()]
        if lines and lines[0].startswith("$ halomail -c halomail.toml authorize "):
            sessions.append((lines[0].split()[4:], lines[1:]))
    return sessions


def _matches_the_guide(args: tuple[str, ...], printed: str) -> None:
    """The guide shows this very command, and each line it shows has the real line's shape."""
    (documented,) = [lines for command, lines in _documented_sessions() if command == list(args)]
    real = printed.splitlines()
    for line in documented:
        pieces = _VARIABLE.split(line)
        shape = "".join(re.escape(p) if n % 2 == 0 else r"\S+" for n, p in enumerate(pieces))
        assert any(re.fullmatch(shape, r) for r in real), (line, real)


class Command:
    """A running ``halomail`` subprocess whose output lines the test can wait for."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "halomail.cli", "-c", "halomail.toml", *args],
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], deadline: float = 60) -> re.Match[str]:
        """The first output line matching ``pattern`` (fails after a generous deadline)."""
        while True:
            try:
                line = self.lines.get(timeout=deadline)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern.pattern!r}; saw {self.seen}")
            self.seen.append(line)
            found = pattern.search(line)
            if found:
                return found

    def finish(self) -> tuple[int, str, str]:
        """Exit status, the rest of stdout, and stderr, once the command has ended."""
        assert self.process.stderr is not None
        code = self.process.wait(timeout=120)
        stderr = self.process.stderr.read()
        self._reader.join(10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "\n".join(self.seen), stderr

    def stop(self) -> None:
        """Kill the command if it still runs (a failed test leaves nothing behind)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    """The commands a test started; all stopped at the end."""
    started: list[Command] = []
    yield started
    for command in started:
        command.stop()


def _halomail(folder: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", "halomail.toml", *args],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


def _office365(graph: GraphServer, endpoint: TokenEndpoint, keep: str) -> str:
    return f"""
[[mailboxes]]
name = "Support"
connection = "office365"
host = "{graph.url}"
user_id = "{SUPPORT}"
tenant_id = "{endpoint.tenant}"
client_id = "{PUBLIC_CLIENT}"
authority = "{endpoint.authority}"
tls_ca_file = "{endpoint.ca_file}"
{keep}
"""


def _sign_in_with_a_device_code(
    folder: Path, endpoint: TokenEndpoint, commands: list[Command]
) -> tuple[str, str]:
    """Run ``authorize``, approve the code it prints as the user; its output."""
    command = Command(folder, "authorize", "Support")
    commands.append(command)
    user_code = command.wait_for(_CODE).group(1)
    endpoint.approve_device(user_code, SUPPORT)
    code, stdout, stderr = command.finish()
    assert code == 0, stdout + stderr
    return stdout, stderr


def test_the_device_code_sign_in_is_kept_in_the_token_cache_and_serves_a_run(
    tmp_path: Path, graph: GraphServer, token_endpoint: TokenEndpoint, commands: list[Command]
) -> None:
    """authorize prints the page and code, waits while the sign-in is pending, keeps it in
    token_cache (0600); the run then reads and sends as the user with no secret at all."""
    graph.state = state = GraphState(accept=token_endpoint.issued.__contains__)
    state.mailbox(SUPPORT)
    (tmp_path / "halomail.toml").write_text(
        _office365(graph, token_endpoint, 'token_cache = "signin.json"')
    )

    stdout, stderr = _sign_in_with_a_device_code(tmp_path, token_endpoint, commands)

    assert f"{token_endpoint.base_url}/devicelogin" in stdout
    assert f"The sign-in is kept in {tmp_path / 'signin.json'};" in stdout
    _matches_the_guide(("authorize", "Support"), stdout)
    polls = token_endpoint.token_requests(DEVICE_CODE)
    assert len(polls) >= 2  # authorization_pending first, then the user's approval
    (start,) = [r for r in token_endpoint.requests if r.path.endswith("/devicecode")]
    assert start.form["client_id"] == PUBLIC_CLIENT
    assert "https://graph.microsoft.com/.default" in start.form["scope"].split()
    cache = tmp_path / "signin.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert SUPPORT in cache.read_text()
    (issued,) = token_endpoint.issued
    assert issued not in stdout + stderr

    asked = len(token_endpoint.token_requests())
    state.deliver(SUPPORT, make_email(to=SUPPORT, message_id="<signed-in@customer.example>"))
    _halomail(tmp_path, "run", "--once")

    assert state.in_folder(SUPPORT, "inbox") == []
    (sent,) = state.in_folder(SUPPORT, "sentitems")
    assert email.utils.parseaddr(email.message_from_bytes(sent.mime)["From"])[1] == SUPPORT
    # The run used the token the sign-in left in the cache: no new grant was needed.
    assert len(token_endpoint.token_requests()) == asked
    assert {r.headers["authorization"] for r in state.requests} == {f"Bearer {issued}"}


def test_a_refresh_token_env_gets_the_export_line_and_it_serves_a_run(
    tmp_path: Path, graph: GraphServer, token_endpoint: TokenEndpoint, commands: list[Command]
) -> None:
    """With refresh_token_env the command prints the export line (it is unset: no error);
    that value, exported, lets the run read and send."""
    graph.state = state = GraphState(accept=token_endpoint.issued.__contains__)
    state.mailbox(SUPPORT)
    (tmp_path / "halomail.toml").write_text(
        _office365(graph, token_endpoint, 'refresh_token_env = "SUPPORT_REFRESH_TOKEN"')
    )

    stdout, stderr = _sign_in_with_a_device_code(tmp_path, token_endpoint, commands)

    assert "reads the refresh token from $SUPPORT_REFRESH_TOKEN" in stderr
    (export,) = re.findall(r"^export SUPPORT_REFRESH_TOKEN=(\S+)$", stdout, re.MULTILINE)
    assert not (tmp_path / "signin.json").exists()
    state.deliver(SUPPORT, make_email(to=SUPPORT))
    _halomail(tmp_path, "run", "--once", env={"SUPPORT_REFRESH_TOKEN": export})
    assert len(state.in_folder(SUPPORT, "sentitems")) == 1
    renewals = token_endpoint.token_requests("refresh_token")
    assert [r.form["refresh_token"] for r in renewals] == [export]


def test_a_token_cache_without_a_sign_in_tells_the_administrator_to_authorize(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """Only token_cache, nobody signed in yet: the mailbox fails saying which command to run,
    and asks the identity provider for nothing it cannot have."""
    provider = MicrosoftTokenProvider(
        tenant_id=token_endpoint.tenant,
        client_id=PUBLIC_CLIENT,
        token_cache=tmp_path / "signin.json",
        authority=token_endpoint.authority,
        verify=str(token_endpoint.ca_file),
        mailbox="Support",
    )
    assert provider.delegated
    with pytest.raises(AuthenticationError, match="run `halomail authorize Support`"):
        provider.token()
    assert token_endpoint.token_requests() == []


def test_the_guide_shows_both_sign_in_sessions() -> None:
    """docs/mailboxes.md holds the Microsoft and the Google session the tests compare."""
    commands = [command for command, _ in _documented_sessions()]
    assert commands == [["authorize", "Support"], ["authorize", "Support", "--no-browser"]]


def test_a_mailbox_that_cannot_be_signed_in_is_refused_with_the_key_to_fix(
    tmp_path: Path, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """No place to keep the sign-in, an app secret, a password login, an unknown name."""
    cases = {
        _office365(graph, token_endpoint, ""): "mailboxes[0].token_cache: say where to keep",
        _office365(graph, token_endpoint, 'client_secret = "s"'): "nothing to authorize",
        '[[mailboxes]]\nname = "Support"\nconnection = "imap"\nhost = "h"\n': "password",
    }
    for text, message in cases.items():
        (tmp_path / "halomail.toml").write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "halomail.cli", "-c", "halomail.toml", "authorize", "Support"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", "halomail.toml", "authorize", "Sales"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 2
    assert "no mailbox named 'Sales'" in unknown.stderr
    assert token_endpoint.requests == []


def _google(gmail_url: str, endpoint: TokenEndpoint) -> str:
    return f"""
[[mailboxes]]
name = "Support"
connection = "google"
host = "{gmail_url}"
user_id = "{SUPPORT}"
client_id = "{GOOGLE_CLIENT_ID}"
client_secret = "{GOOGLE_SECRET}"
credentials_file = "google-user.json"
token_uri = "{endpoint.google_token_uri}"
tls_ca_file = "{endpoint.ca_file}"
"""


def _browser(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_the_google_installed_app_sign_in_writes_the_credentials_file_and_serves_a_run(
    tmp_path: Path, token_endpoint: TokenEndpoint, commands: list[Command]
) -> None:
    """authorize prints Google's consent page; a forged answer is turned away, the real one
    is exchanged with PKCE; the authorized-user file (0600) then serves a run through Gmail."""

    def user_of(token: str) -> str | None:
        return SUPPORT if token in token_endpoint.issued else None

    with running_gmail_server(GmailState(accept=user_of)) as gmail:
        gmail.state.mailbox(SUPPORT)
        (tmp_path / "halomail.toml").write_text(_google(gmail.url, token_endpoint))
        command = Command(tmp_path, "authorize", "Support", "--no-browser")
        commands.append(command)
        page = command.wait_for(re.compile(r"^https://accounts\.google\.com/o/oauth2/auth\?.+"))
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.group()).query))
        assert (query["client_id"], query["access_type"]) == (GOOGLE_CLIENT_ID, "offline")
        assert query["scope"] == "https://www.googleapis.com/auth/gmail.modify"
        assert query["code_challenge_method"] == "S256"
        redirect = query["redirect_uri"]
        assert redirect.startswith("http://127.0.0.1:")
        code = token_endpoint.issue_code(
            client_id=GOOGLE_CLIENT_ID,
            client_secret=GOOGLE_SECRET,
            user=SUPPORT,
            redirect_uri=redirect,
            challenge=query["code_challenge"],
        )
        forged = {"code": "4/forged", "state": "not-the-state"}
        assert _browser(f"{redirect}?{urllib.parse.urlencode(forged)}") == 400
        answer = {"code": code, "state": query["state"]}
        assert _browser(f"{redirect}?{urllib.parse.urlencode(answer)}") == 200
        status, stdout, stderr = command.finish()

        assert status == 0, stdout + stderr
        assert f"The credentials are kept in {tmp_path / 'google-user.json'};" in stdout
        _matches_the_guide(("authorize", "Support", "--no-browser"), stdout)
        (exchange,) = token_endpoint.token_requests("authorization_code")
        assert exchange.form["redirect_uri"] == redirect
        stored = tmp_path / "google-user.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        user = json.loads(stored.read_text())
        assert user["type"] == "authorized_user"
        assert user["refresh_token"] not in stdout + stderr

        gmail.state.deliver(SUPPORT, make_email(to=SUPPORT))
        _halomail(tmp_path, "run", "--once")
        (sent,) = gmail.state.sent
        assert sent.user == SUPPORT
        assert email.utils.parseaddr(email.message_from_bytes(sent.mime)["To"])[1] == CUSTOMER
        renewals = token_endpoint.token_requests("refresh_token")
        assert {r.form["refresh_token"] for r in renewals} == {user["refresh_token"]}
