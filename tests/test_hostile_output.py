"""Issue 13, items 7, 8 and 11: nothing secret or hostile reaches a terminal or a header,
and a configuration that would read nothing is an error.

Everything runs through the real ``halomail`` command in a subprocess, on a Maildir
inbox and a Maildir outbox, with SQLite storage.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from halomail import RedactingFilter
from halomail._text import clean_text, redact_secrets
from halomail.backends.auth.oauth import MicrosoftTokenProvider
from halomail.config.loader import load_config
from halomail.errors import ConfigError, TransientConnectorError
from halomail.outbound.outbox import SenderIdentity, compose
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from tests.conftest import make_email

SECRET = "S3cr3t-pw"

#: What a hostile email carries: a window-title OSC, a clear-screen CSI, a bidi override.
OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR_SCREEN = "\x1b[2J"
RLO_NAME = "\u202egpj.exe"
#: Characters none of which may reach a terminal or a header. (The parser already drops
#: the ESC of a Subject, leaving harmless text such as "]0;pwned".)
FORBIDDEN = ("\x1b", "\x07", "\u202e", "\u2066", "\u2069", "\x9b")

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"
display_name = "Support"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
send_acknowledgement = true
"""


def _halomail(
    *args: str, cwd: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def _setup(tmp_path: Path, text: str = CONFIG) -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(text, encoding="utf-8")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    return config


def _hostile_email() -> bytes:
    """Escapes and a bidi override in the Subject (RFC 2047, so they survive transport)
    and raw in the body, as an attacker sends them."""
    subject = "=?utf-8?b?" + _b64(f"Invoice {OSC_TITLE}{CLEAR_SCREEN}{RLO_NAME}") + "?="
    body = f"Open {OSC_TITLE}the file{CLEAR_SCREEN} {RLO_NAME}\n\u2066isolated\u2069 text\n"
    return make_email(subject=subject, body=body, message_id="<hostile@evil.example>")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- item 8: terminal output and headers -------------------------------------------------


def test_a_hostile_email_reaches_no_terminal_and_no_header(tmp_path: Path) -> None:
    """run --once, tickets, ticket 1 and quarantine print none of the email's escapes or bidi
    controls; the ticket summary and the acknowledgement's Subject hold none of them."""
    config = _setup(tmp_path)
    (tmp_path / "inbox" / "new" / "1.hostile").write_bytes(_hostile_email())

    ran = _halomail("-c", str(config), "run", "--once", cwd=tmp_path)
    listed = _halomail("-c", str(config), "tickets", cwd=tmp_path)
    shown = _halomail("-c", str(config), "ticket", "1", cwd=tmp_path)
    quarantined = _halomail("-c", str(config), "quarantine", cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert "1 emails: 1 created" in ran.stdout
    assert "Invoice" in listed.stdout
    assert "the file" in shown.stdout
    assert "gpj.exe" in shown.stdout  # the text stays; only the override is gone
    assert "isolated text" in shown.stdout
    for result in (ran, listed, shown, quarantined):
        for char in FORBIDDEN:
            assert char not in result.stdout + result.stderr, (result.args, char)

    ticket = json.loads(_halomail("-c", str(config), "ticket", "1", "--json", cwd=tmp_path).stdout)
    assert ticket["summary"].startswith("Invoice")
    assert not any(char in ticket["summary"] for char in FORBIDDEN)

    (ack_file,) = (tmp_path / "outbox").glob("*.eml")
    ack = email.message_from_bytes(ack_file.read_bytes(), policy=email.policy.default)
    subject = str(ack["Subject"])
    assert "Invoice" in subject
    assert not any(char in subject for char in FORBIDDEN)


def test_json_output_stays_exact(tmp_path: Path) -> None:
    """ticket --json keeps the body as stored, escapes and all: JSON escapes them itself."""
    config = _setup(tmp_path)
    (tmp_path / "inbox" / "new" / "1.hostile").write_bytes(_hostile_email())
    assert _halomail("-c", str(config), "run", "--once", cwd=tmp_path).returncode == 0

    shown = _halomail("-c", str(config), "ticket", "1", "--json", cwd=tmp_path)

    assert "\x1b" not in shown.stdout  # the raw byte never reaches the terminal ...
    body = json.loads(shown.stdout)["actions"][0]["body"]
    assert CLEAR_SCREEN in body  # ... but the value is exact once decoded
    assert RLO_NAME in body


def test_simulate_prints_no_escape_from_the_email(tmp_path: Path) -> None:
    """simulate's human output names the email without its escapes or bidi controls."""
    config = _setup(tmp_path)
    eml = tmp_path / "hostile.eml"
    eml.write_bytes(_hostile_email())

    result = _halomail("-c", str(config), "simulate", str(eml), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    for char in FORBIDDEN:
        assert char not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"Re: {RLO_NAME}", "Re: gpj.exe"),
        (f"Hello{OSC_TITLE}{CLEAR_SCREEN} there", "Hello there"),
        ("Re: a\r\nBcc: victim@example.com", "Re: a Bcc: victim@example.com"),
        ("\u2066Isolated\u2069 \u200fmark\u200e \u061cArabic \u202aembedded\u202c", None),
        ("C1 \x85next\x9b2J", "C1  next"),
    ],
    ids=["rlo", "escapes", "crlf", "isolates-and-marks", "c1"],
)
def test_every_header_we_write_is_clean(value: str, expected: str | None) -> None:
    """compose() strips escapes, controls and bidi controls from Subject and display name."""
    mail = OutboxMail(
        id=1,
        message_id="m1@helpdesk.example",
        to=("alice@customer.example",),
        subject=value,
        text="body",
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
    )
    sender = SenderIdentity("support@helpdesk.example", f"Support {value}")
    sent = compose(mail, sender, loop_token="t")
    parsed = email.message_from_bytes(sent.data, policy=email.policy.default)
    subject, from_header = str(parsed["Subject"]), str(parsed["From"])
    for header in (subject, from_header):
        assert not any(c in header for c in ("\x1b", "\x07", "\r", "\n", "\x85", "\x9b"))
        assert not any(0x200E <= ord(c) <= 0x200F or 0x202A <= ord(c) <= 0x202E for c in header)
        assert not any(0x2066 <= ord(c) <= 0x2069 or ord(c) == 0x061C for c in header)
    assert "Bcc" not in parsed  # CR/LF never start a header
    if expected is not None:
        assert subject == expected


# -- item 7: secrets of URLs and DSNs ------------------------------------------------------

_MAILDIR_MAILBOX = '[[mailboxes]]\nname = "S"\nconnection = "maildir"\npath = "inbox"\n'


@pytest.mark.parametrize(
    ("toml", "shown"),
    [
        (
            f'[storage]\nurl = "mysql://helpdesk:{SECRET}@db.example/helpdesk"\n'
            + _MAILDIR_MAILBOX,
            "'mysql://helpdesk:***@db.example/helpdesk'",
        ),
        (
            '[[mailboxes]]\nname = "EWS"\nconnection = "ews"\nusername = "u@example.com"\n'
            f'password = "pw"\nhost = "ftp://admin:{SECRET}@ews.example/EWS/Exchange.asmx"\n',
            "'ftp://admin:***@ews.example/EWS/Exchange.asmx'",
        ),
        (
            '[[mailboxes]]\nname = "G"\nconnection = "google"\nsubject = "s@example.com"\n'
            f'token_env = "HALOMAIL_TEST_TOKEN"\nhost = "http://gmail.example/x?access_token={SECRET}"\n',
            "'http://gmail.example/x?access_token=***'",
        ),
    ],
    ids=["storage-dsn", "ews-endpoint", "gmail-endpoint-token"],
)
def test_a_configuration_error_never_shows_a_url_password(
    tmp_path: Path, toml: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config and run exit 2 and show the URL with its secret masked, never the secret."""
    monkeypatch.setenv("HALOMAIL_TEST_TOKEN", "token-value")
    config = _setup(tmp_path, toml)
    for command in (["check-config"], ["run", "--once"]):
        result = _halomail("-c", str(config), *command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert shown in result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_a_host_factory_logging_its_dsn_is_redacted_by_the_command(tmp_path: Path) -> None:
    """A host repository that logs its DSN, then fails with it in the message: the command's
    log handler and its error line both mask the password."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostrepo_dsn.py").write_text(
        "import logging\n"
        f"DSN = 'postgresql://helpdesk:{SECRET}@db.example:5432/helpdesk?sslpassword={SECRET}'\n"
        "def make(config):\n"
        "    logging.getLogger('hostapp').warning('connecting to %s', DSN)\n"
        "    raise ConnectionError(f'could not connect to {DSN}')\n",
        encoding="utf-8",
    )
    config = _setup(
        tmp_path,
        CONFIG.replace('url = "sqlite:///halomail.db"', 'repository = "hostrepo_dsn:make"'),
    )

    result = _halomail("-c", str(config), "run", "--once", cwd=tmp_path, pythonpath=host)

    assert result.returncode != 0
    assert "connecting to postgresql://helpdesk:***@db.example:5432/helpdesk" in result.stderr
    assert "sslpassword=***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_an_unreachable_token_endpoint_is_named_without_its_password() -> None:
    """The OAuth error names the authority it could not reach, with the password masked."""
    provider = MicrosoftTokenProvider(
        tenant_id="t",
        client_id="11111111-2222-3333-4444-555555555555",
        client_secret="client-secret",
        authority=f"https://proxyuser:{SECRET}@127.0.0.1:9/t",
        timeout=2,
    )
    with pytest.raises(TransientConnectorError) as raised:
        provider.token()
    assert "https://proxyuser:***@127.0.0.1:9/t" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_the_redacting_filter_masks_messages_arguments_and_tracebacks() -> None:
    """A host installs RedactingFilter on its handler: message, args and traceback are masked."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.hostile_output.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("fetching %s", f"https://graph.example/me?access_token={SECRET}&top=5")
        try:
            raise OSError(f"cannot reach amqp://guest:{SECRET}@broker.example//")
        except OSError:
            logger.exception("broker down")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = "\n".join(lines)
    assert "https://graph.example/me?access_token=***&top=5" in text
    assert "amqp://guest:***@broker.example//" in text
    assert "Traceback" in text
    assert SECRET not in text


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("postgres://helpdesk:S3cr3t@db/x", "postgres://helpdesk:***@db/x"),
        ("redis://:S3cr3t@cache:6379/0", "redis://:***@cache:6379/0"),
        ("https://h/cb?code=abc&state=1", "https://h/cb?code=***&state=1"),
        ("https://h/x?sig=abc;api_key=def#top", "https://h/x?sig=***;api_key=***#top"),
        ("host=db user=h password=S3cr3t", "host=db user=h password=***"),
        ("https://user@example.com/no-password", "https://user@example.com/no-password"),
        ("mailto:alice@example.com?subject=hi", "mailto:alice@example.com?subject=hi"),
    ],
)
def test_redact_secrets_masks_only_the_secrets(text: str, redacted: str) -> None:
    """Passwords and secret-named parameters are masked; the rest of the URL stays readable."""
    assert redact_secrets(text) == redacted


def test_clean_text_keeps_lines_only_where_asked() -> None:
    """Multi-line text keeps newlines and tabs; a bare CR becomes a newline; one-line text
    turns every break into a space."""
    text = f"a{CLEAR_SCREEN}\tb\r\nc\rd{OSC_TITLE}\u202ee"
    assert clean_text(text, multiline=True) == "a\tb\nc\nde"
    assert clean_text(text) == "a b c de"


def test_a_host_calling_load_config_gets_a_redacted_config_error(tmp_path: Path) -> None:
    """From Python too, the ConfigError's text and message show the DSN without its password."""
    config = _setup(
        tmp_path, f'[storage]\nurl = "mysql://helpdesk:{SECRET}@db.example/h"\n' + _MAILDIR_MAILBOX
    )
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert raised.value.key_path == "storage.url"
    assert "'mysql://helpdesk:***@db.example/h'" in raised.value.message
    assert SECRET not in str(raised.value)
    assert SECRET not in raised.value.message
