"""One Microsoft 365 (or Google) sign-in reads and sends (#17).

An ``office365`` mailbox without a ``[mailboxes.outgoing]`` table sends its mail through
Graph with its own credentials, as its own address, unless ``send_with = "outgoing"``
says otherwise. Proven with the real ``halomail`` command against the local Graph and
Gmail endpoints and the local token endpoint (msal and google-auth talk to it).
"""

from __future__ import annotations

import email
import email.utils
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.config.loader import load_config
from halomail.errors import ConfigError
from tests.conftest import make_email
from tests.servers.gmail import GmailServer, GmailState, running_gmail_server
from tests.servers.graph import GraphServer, GraphState, running_graph_server
from tests.servers.token_endpoint import TokenEndpoint

SUPPORT = "support@contoso.example"
CLIENT_ID = "7c0e2d61-5d9a-4b0e-8a8b-1f2e3d4c5b6a"
CLIENT_SECRET = "Q~one-sign-in-secret-never-printed"
GOOGLE_CLIENT_ID = "1234-desktop.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-one-sign-in-secret"
GOOGLE_REFRESH = "1//google-refresh-token-of-support"
CUSTOMER = "alice@customer.example"


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


@pytest.fixture
def state(graph: GraphServer, token_endpoint: TokenEndpoint) -> GraphState:
    """A store with the support mailbox that accepts the tokens the endpoint issued."""
    store = GraphState(accept=token_endpoint.issued.__contains__)
    store.mailbox(SUPPORT)
    graph.state = store
    token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
    return store


def _office365(graph: GraphServer, endpoint: TokenEndpoint, extra: str = "") -> str:
    return f"""
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "office365"
host = "{graph.url}"
user_id = "{SUPPORT}"
tenant_id = "{endpoint.tenant}"
client_id = "{CLIENT_ID}"
client_secret_env = "GRAPH_SECRET"
authority = "{endpoint.authority}"
tls_ca_file = "{endpoint.ca_file}"
{extra}"""


def _halomail(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", "halomail.toml", *args],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "GRAPH_SECRET": CLIENT_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(folder: Path, text: str) -> Path:
    path = folder / "halomail.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_office365_mailbox_without_outgoing_sends_its_acknowledgement_through_graph(
    tmp_path: Path, state: GraphState, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """No [outgoing]: the acknowledgement lands in the mailbox's Sent Items, from its address,
    with one token from one app registration serving both the reading and the sending."""
    _write(tmp_path, _office365(graph, token_endpoint))
    state.deliver(SUPPORT, make_email(message_id="<jam@customer.example>", to=SUPPORT))

    done = _halomail(tmp_path, "run", "--once")

    assert done.returncode == 0, done.stdout + done.stderr
    (sent,) = state.in_folder(SUPPORT, "sentitems")
    message = email.message_from_bytes(sent.mime)
    assert email.utils.parseaddr(message["From"])[1] == SUPPORT
    assert email.utils.parseaddr(message["To"])[1] == CUSTOMER
    assert message["In-Reply-To"] == "<jam@customer.example>"
    assert [s.user for s in state.sent] == [SUPPORT]
    grants = token_endpoint.token_requests()
    assert [(g.grant_type, g.form["client_id"]) for g in grants] == [
        ("client_credentials", CLIENT_ID)
    ]
    (token,) = token_endpoint.issued
    assert {r.headers["authorization"] for r in state.requests} == {f"Bearer {token}"}
    assert CLIENT_SECRET not in done.stdout + done.stderr


def test_check_config_says_the_mailbox_sends_with_its_own_sign_in(
    tmp_path: Path, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """check-config names the transport and address each mailbox sends with, and why."""
    _write(tmp_path, _office365(graph, token_endpoint))
    done = _halomail(tmp_path, "check-config")
    assert done.returncode == 0, done.stderr
    assert f"mailbox Support sends with graph as {SUPPORT} (its own sign-in)" in (
        done.stdout.splitlines()
    )
    as_json = _halomail(tmp_path, "check-config", "--json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {
        "event": "sending",
        "mailbox": "Support",
        "transport": "graph",
        "from": SUPPORT,
        "with": "mailbox",
    } in events


def test_the_guides_sending_example_prints_the_documented_line(tmp_path: Path) -> None:
    """docs/mailboxes.md's Sending section: its configuration gives its check-config line."""
    text = (Path(__file__).parent.parent / "docs" / "mailboxes.md").read_text()
    section = text.split("## Sending: the mailbox's own sign-in", 1)[1].split("\n## ", 1)[0]
    (configuration,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    (session,) = re.findall(r"```console\n(.*?)```", section, re.S)
    command, *documented = session.splitlines()
    assert command == "$ halomail -c halomail.toml check-config"
    _write(tmp_path, configuration)
    done = subprocess.run(
        [sys.executable, "-m", "halomail.cli", *command.split()[2:]],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HALOMAIL_GRAPH_SECRET": CLIENT_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == documented
    assert "outgoing via smtp" in done.stdout.splitlines()[0]


def test_a_mailbox_outgoing_table_overrides_the_own_sign_in(
    tmp_path: Path, state: GraphState, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """With [mailboxes.outgoing] the mail goes where the override says, not through Graph."""
    extra = '\n[mailboxes.outgoing]\ntransport = "maildir"\npath = "outbox"\n'
    _write(tmp_path, _office365(graph, token_endpoint, extra))
    state.deliver(SUPPORT, make_email(to=SUPPORT))

    done = _halomail(tmp_path, "run", "--once")

    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(written.read_bytes())
    assert email.utils.parseaddr(message["To"])[1] == CUSTOMER
    assert state.sent == []
    assert state.in_folder(SUPPORT, "sentitems") == []
    checked = _halomail(tmp_path, "check-config")
    assert "mailbox Support sends with maildir ([mailboxes.outgoing])" in checked.stdout


def test_send_with_outgoing_uses_the_top_level_table(
    tmp_path: Path, state: GraphState, graph: GraphServer, token_endpoint: TokenEndpoint
) -> None:
    """send_with = "outgoing" sends with [outgoing] as before, never through Graph."""
    text = _office365(graph, token_endpoint, 'send_with = "outgoing"\n')
    text += '\n[outgoing]\ntransport = "maildir"\npath = "sent"\nfrom_address = "hd@x.example"\n'
    _write(tmp_path, text)
    state.deliver(SUPPORT, make_email(to=SUPPORT))

    done = _halomail(tmp_path, "run", "--once")

    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = (tmp_path / "sent").glob("*.eml")
    assert email.message_from_bytes(written.read_bytes())["From"] == "hd@x.example"
    assert state.sent == []


def test_send_with_mailbox_is_refused_where_it_cannot_work(tmp_path: Path) -> None:
    """An IMAP mailbox has no API to send with, and the own sign-in excludes an override."""
    imap = '[[mailboxes]]\nname = "A"\nconnection = "imap"\nhost = "h"\nsend_with = "mailbox"\n'
    with pytest.raises(ConfigError, match="no API to send with") as no_api:
        load_config(_write(tmp_path, imap))
    assert no_api.value.key_path == "mailboxes[0].send_with"
    both = (
        '[[mailboxes]]\nname = "A"\nconnection = "office365"\nuser_id = "a@x.example"\n'
        'send_with = "mailbox"\n'
        '[mailboxes.outgoing]\ntransport = "maildir"\npath = "o"\n'
    )
    with pytest.raises(ConfigError, match="remove it, or the") as conflict:
        load_config(_write(tmp_path, both))
    assert conflict.value.key_path == "mailboxes[0].send_with"


def test_a_google_mailbox_without_outgoing_sends_through_the_gmail_api(
    tmp_path: Path, token_endpoint: TokenEndpoint
) -> None:
    """A google mailbox reads and sends with one refresh token: the reply is in its SENT."""
    token_endpoint.register_refresh_token(
        GOOGLE_REFRESH,
        client_id=GOOGLE_CLIENT_ID,
        user=SUPPORT,
        provider="google",
        client_secret=GOOGLE_SECRET,
    )

    def user_of(token: str) -> str | None:
        return SUPPORT if token in token_endpoint.issued else None

    with running_gmail_server(GmailState(accept=user_of)) as gmail:
        _run_google(tmp_path, gmail, token_endpoint)
        (sent,) = gmail.state.sent
        message = email.message_from_bytes(sent.mime)
        assert sent.user == SUPPORT
        assert email.utils.parseaddr(message["From"])[1] == SUPPORT
        assert email.utils.parseaddr(message["To"])[1] == CUSTOMER
    assert {r.grant_type for r in token_endpoint.token_requests()} == {"refresh_token"}


def _run_google(folder: Path, gmail: GmailServer, endpoint: TokenEndpoint) -> None:
    gmail.state.mailbox(SUPPORT)
    gmail.state.deliver(SUPPORT, make_email(to=SUPPORT))
    _write(
        folder,
        f"""
[[mailboxes]]
name = "Support"
connection = "google"
host = "{gmail.url}"
user_id = "{SUPPORT}"
client_id = "{GOOGLE_CLIENT_ID}"
client_secret = "{GOOGLE_SECRET}"
refresh_token = "{GOOGLE_REFRESH}"
token_uri = "{endpoint.google_token_uri}"
tls_ca_file = "{endpoint.ca_file}"
""",
    )
    done = _halomail(folder, "run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
