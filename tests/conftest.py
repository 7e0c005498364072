"""Shared fixtures: repositories, processors, and a small email builder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from pathlib import Path

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.inbound.models import ParseLimits
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import utcnow
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

# The real servers the tests start on loopback, and their fixtures (smtp_server,
# smtp_server_factory, smtp_tls, token_endpoint, token_tls, dovecot, fault_proxy_factory,
# postgres, postgres_url, redis_server, redis_broker, processes), and a headless
# Chromium (browser).
pytest_plugins = (
    "tests.servers.browser",
    "tests.servers.celery_workers",
    "tests.servers.dovecot",
    "tests.servers.fault_proxy",
    "tests.servers.postgres",
    "tests.servers.redis",
    "tests.servers.smtp",
    "tests.servers.token_endpoint",
)

LOOP_TOKEN = "test-loop-token"
HELPDESK = "support@helpdesk.example"


def make_email(
    *,
    subject: str = "Printer is jammed",
    sender: str = "Alice Martin <alice@customer.example>",
    to: str = HELPDESK,
    body: str = "The printer on floor 3 jams on every page.\n",
    message_id: str | None = "<msg-1@customer.example>",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A small, well-formed plain-text email as raw bytes (CRLF line endings)."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(utcnow())}",
    ]
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', ""]
    return ("\r\n".join(lines) + "\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def spamassassin(count: int) -> list[Path]:
    """The first ``count`` emails of the SpamAssassin corpus, in name order (easy ham
    first); a missing corpus fails the test."""
    folder = os.environ.get("HALOMAIL_CORPUS", "")
    if not folder or not Path(folder).is_dir():
        pytest.fail(f"HALOMAIL_CORPUS is not set to the SpamAssassin corpus folder ({folder!r})")
    return sorted(Path(folder).glob("*.eml"))[:count]


#: One line of the plain-text body of :func:`big_text_email`.
TEXT_LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"


def big_text_email(line_break: bytes = b"\r\n") -> tuple[bytes, int]:
    """An email whose plain-text body fills the default 25 MB message limit, and the
    body's size."""
    head = b"From: a@customer.example\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n"
    line = TEXT_LINE.replace(b"\r\n", line_break)
    body = line * ((ParseLimits().max_message_bytes - len(head)) // len(line))
    return head + body, len(body)


@pytest.fixture(params=["memory", "sqlite"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TicketRepository]:
    """Each implementation the processor must work with, fresh and empty."""
    if request.param == "memory":
        yield InMemoryTicketRepository()
        return
    repo = SQLiteTicketRepository(tmp_path / "halomail.db")
    yield repo
    repo.close()


def batch_settings(batch_size: int) -> ProcessorSettings:
    """Processor settings with a known loop token and sender, committing ``batch_size``
    emails per transaction."""
    return ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
        batch_size=batch_size,
    )


@pytest.fixture
def settings() -> ProcessorSettings:
    """Processor settings with a known loop token and sender."""
    return ProcessorSettings(
        loop_token=LOOP_TOKEN,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
    )


@pytest.fixture
def connector() -> MemoryConnector:
    """An empty in-memory mailbox called Support."""
    return MemoryConnector("Support")


@pytest.fixture
def transport() -> MemoryTransport:
    """An in-memory transport that records what is sent."""
    return MemoryTransport()


@pytest.fixture
def make_processor(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
) -> Callable[..., MailProcessor]:
    """Build a processor over the Support mailbox, with per-test mailbox settings."""

    def build(**mailbox_settings: object) -> MailProcessor:
        mailbox = Mailbox(connector, **mailbox_settings)  # type: ignore[arg-type]
        return MailProcessor(repository, [mailbox], settings, transport=transport)

    return build
