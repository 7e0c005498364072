"""The loop token stays secret: our mail carries an HMAC of it, never the token (#12).

Outgoing mail is marked with ``X-Halomail-Loop: HMAC(token, its Message-ID)``, so our
own mail fetched back is recognised, a stranger who copies the header onto another
email gains nothing, and the token can be rotated without losing mail in flight.
"""

from __future__ import annotations

import base64
import email
import quopri
import re
import subprocess
import sys
import tomllib
from email.policy import compat32
from pathlib import Path

import pytest

from halomail.app import build_processor, send_test_email
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.config.loader import parse_config
from halomail.errors import ConfigError
from halomail.inbound.classify import loop_signature
from halomail.outbound.outbox import LOOP_HEADER, MessageIdFactory, SenderIdentity, compose
from halomail.outbound.sms import SmsSettings
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.services import ServiceDefinition
from halomail.templates.render import MessageKind
from halomail.tickets.models import OutboxMail, OutboxStatus, utcnow
from halomail.tickets.sqlite import SQLiteTicketRepository
from halomail.tickets.staff import Agent
from tests.conftest import HELPDESK, make_email

TOKEN = "Zq9-loop-SECRET-token-4711"
OLD_TOKEN = "old-loop-SECRET-token-0815"
AMY = Agent("Amy Pond", "amy@helpdesk.example")
SMS = SmsSettings(
    provider_domain="sms.example.net",
    from_address="sms-account@helpdesk.example",
    default_country_code="44",
)


def _settings(token: str = TOKEN, previous: tuple[str, ...] = ()) -> ProcessorSettings:
    return ProcessorSettings(
        loop_token=token,
        previous_loop_tokens=previous,
        domain="helpdesk.example",
        default_sender=SenderIdentity(HELPDESK, "Support"),
    )


def _processor(
    repository: SQLiteTicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> MailProcessor:
    return MailProcessor(
        repository, [Mailbox(connector)], settings, transport=transport, agents=[AMY], sms=SMS
    )


def _texts(raw: bytes) -> list[bytes]:
    """The raw message, and every part's body decoded (quoted-printable, base64)."""
    decoded = [raw]
    for part in email.message_from_bytes(raw, policy=compat32).walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            decoded.append(payload)
    return decoded


def _leaks(raw: bytes, token: str) -> bool:
    """True when ``token`` appears in ``raw`` as written, or encoded as headers may be."""
    forms = {
        token.encode(),
        base64.b64encode(token.encode()),
        quopri.encodestring(token.encode()).strip(),
    }
    return any(form in text for text in _texts(raw) for form in forms)


def _loop_header(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=compat32)[LOOP_HEADER])


def _message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=compat32)["Message-ID"]).strip("<>")


def test_no_outgoing_email_contains_the_token(tmp_path: Path) -> None:
    """Acknowledgement, agent mail, closure, SMS and service notices: the token is in none."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    repository.add_user("alice@customer.example", "Alice Martin", mobile="07700 900123")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    processor = _processor(repository, connector, transport, _settings())
    connector.add(make_email(body=f"Is {TOKEN[:6]} part of your token?\n"))
    processor.run_once()
    assert processor.notifier.ticket_email(
        1, MessageKind.TICKET_UPDATE, note="On it.", agent=AMY.email
    ).sent
    assert processor.notifier.ticket_email(1, MessageKind.TICKET_CLOSED).sent
    assert processor.notifier.sms(1, text="Engineer on site at 14:00.").sent
    service = ServiceDefinition("Nightly backup", subscribers=("ops@customer.example",))
    (notice,) = processor.notifier.service_changed(service, "failed", "Backup failed", 1)
    assert notice.sent
    processor.send_outbox()
    assert len({_message_id(mail.data) for mail in transport.sent}) == 5
    for mail in transport.sent:
        assert not _leaks(mail.data, TOKEN)
        assert _loop_header(mail.data) == loop_signature(TOKEN, _message_id(mail.data))
    repository.close()


def test_the_test_email_does_not_contain_the_token(tmp_path: Path) -> None:
    """`send-test-email` composes like the outbox: an HMAC in the loop header, no token."""
    for folder in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / folder).mkdir(parents=True)
    config = parse_config(
        tomllib.loads(
            f"""
            [processing]
            loop_token = "{TOKEN}"

            [outgoing]
            transport = "maildir"
            path = "{tmp_path / "sent"}"
            from_address = "{HELPDESK}"

            [[mailboxes]]
            name = "Support"
            connection = "maildir"
            path = "{tmp_path / "inbox"}"
            """
        ),
        base_dir=tmp_path,
    )
    sent, _route = send_test_email(config, "Support", "me@customer.example")
    (written,) = [p for p in (tmp_path / "sent").rglob("*") if p.is_file()]
    for raw in (sent.data, written.read_bytes()):
        assert not _leaks(raw, TOKEN)
        assert _loop_header(raw) == loop_signature(TOKEN, sent.message_id)


def test_the_leak_check_finds_a_token_written_into_a_mail() -> None:
    """The check above is not blind: a mail whose text quotes the token is caught, encoded."""
    mail = OutboxMail(
        id=1,
        message_id="halomail.1.abc.def@helpdesk.example",
        to=("alice@customer.example",),
        subject="Hello",
        text=f"The token is {TOKEN}, ünïcode forces quoted-printable.\n",
        html=None,
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
    )
    assert _leaks(compose(mail, SenderIdentity(HELPDESK), loop_token="other").data, TOKEN)


def test_a_copied_loop_header_on_a_new_message_id_becomes_a_ticket(tmp_path: Path) -> None:
    """A stranger's email with our loop header copied from our mail is a ticket, not skipped."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    processor = _processor(repository, connector, transport, _settings())
    connector.add(make_email())
    processor.run_once()
    copied = _loop_header(transport.sent[0].data)
    connector.add(
        make_email(
            sender="Mallory <mallory@stranger.example>",
            subject="Please wire the money",
            message_id="<forged-1@stranger.example>",
            headers={LOOP_HEADER: copied},
        )
    )
    (outcome,) = processor.run_once().outcomes
    assert outcome.outcome is Outcome.CREATED
    assert outcome.reason != "own-message"
    assert sorted(t.summary for t in repository.list_tickets()) == [
        "Please wire the money",
        "Printer is jammed",
    ]
    repository.close()


def test_our_own_mail_fetched_back_is_still_own_message(tmp_path: Path) -> None:
    """Our acknowledgement landing in the mailbox (same Message-ID) is skipped as own-message."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    processor = _processor(repository, connector, transport, _settings())
    connector.add(make_email())
    processor.run_once()
    connector.add(transport.sent[0].data)
    (outcome,) = processor.run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
    assert len(repository.list_tickets()) == 1
    repository.close()


def test_the_loop_header_alone_marks_our_mail(tmp_path: Path) -> None:
    """Mail under a host's own Message-ID is recognised by its signed loop header alone."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    processor = _processor(repository, connector, transport, _settings())
    mail = OutboxMail(
        id=1,
        message_id="host-sent-1@helpdesk.example",
        to=(HELPDESK,),
        subject="Sent by the host application",
        text="Hello.\n",
        html=None,
        status=OutboxStatus.PENDING,
        created_at=utcnow(),
    )
    connector.add(compose(mail, SenderIdentity("agent@helpdesk.example"), loop_token=TOKEN).data)
    (outcome,) = processor.run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
    repository.close()


def test_mail_sent_before_a_rotation_is_still_ours_with_the_previous_token(
    tmp_path: Path,
) -> None:
    """After rotating, mail sent under the old token is ours while it is a previous token."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    before = _processor(repository, connector, transport, _settings(OLD_TOKEN))
    connector.add(make_email())
    before.run_once()
    in_flight = transport.sent[0].data
    rotated = _processor(repository, connector, transport, _settings(TOKEN, (OLD_TOKEN,)))
    connector.add(in_flight)
    (outcome,) = rotated.run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
    # Once the old token is dropped, the same mail is no longer recognised as ours.
    forgotten = _processor(repository, connector, transport, _settings(TOKEN))
    connector.add(in_flight.replace(b"Message-ID: <", b"Message-ID: <again-"))
    (later,) = forgotten.run_once().outcomes
    assert later.reason != "own-message"
    repository.close()


def test_message_ids_signed_with_a_previous_token_are_recognised() -> None:
    """MessageIdFactory signs with the current token and accepts ids of previous ones."""
    old = MessageIdFactory(OLD_TOKEN, "helpdesk.example").new(7)
    rotated = MessageIdFactory(TOKEN, "helpdesk.example", previous_tokens=(OLD_TOKEN,))
    assert rotated.is_ours(old)
    assert rotated.is_ours(rotated.new(7))
    assert not MessageIdFactory(TOKEN, "helpdesk.example").is_ours(old)
    assert TOKEN not in rotated.new(7)
    assert TOKEN not in repr(rotated)
    assert OLD_TOKEN not in repr(rotated)


def test_previous_loop_tokens_come_from_the_configuration(tmp_path: Path) -> None:
    """[processing] previous_loop_tokens reaches the processor; its values are never shown."""
    text = f"""
        [processing]
        loop_token = "{TOKEN}"
        previous_loop_tokens = ["{OLD_TOKEN}"]
        """
    config = parse_config(tomllib.loads(text), base_dir=tmp_path)
    assert config.processing.previous_loop_tokens == (OLD_TOKEN,)
    assert OLD_TOKEN not in repr(config)
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    processor = build_processor(config, repository)
    assert processor.settings.previous_loop_tokens == (OLD_TOKEN,)
    processor.close()
    repository.close()


@pytest.mark.parametrize("value", ['"one-token"', '[""]', "[42]"])
def test_previous_loop_tokens_must_be_an_array_of_strings(tmp_path: Path, value: str) -> None:
    """A malformed previous_loop_tokens is refused with its key path, without the value."""
    text = f"[processing]\nloop_token = '{TOKEN}'\nprevious_loop_tokens = {value}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads(text), base_dir=tmp_path)
    assert "processing.previous_loop_tokens" in str(raised.value)
    assert "one-token" not in str(raised.value)


SECURITY_MD = Path(__file__).parent.parent / "docs" / "security.md"


def _blocks(language: str) -> list[str]:
    text = SECURITY_MD.read_text()
    section = text[text.index("## The loop token") :]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_documented_command_makes_a_strong_token() -> None:
    """docs/security.md's command prints a fresh URL-safe token of 43 characters each run."""
    (command,) = _blocks("sh")
    argv = command.split(maxsplit=2)
    assert argv[:2] == ["python", "-c"]
    runs = [
        subprocess.run(
            [sys.executable, "-c", argv[2].strip().strip('"')],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert runs[0] != runs[1]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", token) for token in runs)


def test_the_documented_rotation_recognises_mail_signed_before_it(tmp_path: Path) -> None:
    """The two configurations of docs/security.md: mail signed under the first is ours after."""
    before_text, after_text = _blocks("toml")
    before = parse_config(tomllib.loads(before_text), base_dir=tmp_path).processing
    after = parse_config(tomllib.loads(after_text), base_dir=tmp_path).processing
    assert after.previous_loop_tokens == (before.loop_token,)
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    connector.add(make_email())
    _processor(repository, connector, transport, _settings(before.loop_token)).run_once()
    connector.add(transport.sent[0].data)
    rotated = _settings(after.loop_token, after.previous_loop_tokens)
    (outcome,) = _processor(repository, connector, transport, rotated).run_once().outcomes
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
    repository.close()


def _unset_token_config(tmp_path: Path, database: str) -> str:
    """A configuration that sets no loop_token, on the SQLite file ``database``."""
    return f"""
        [storage]
        url = "sqlite:///{tmp_path / database}"

        [outgoing]
        transport = "memory"
        from_address = "{HELPDESK}"
        """


def test_without_a_configured_token_an_instance_signs_with_a_random_one_it_keeps(
    tmp_path: Path,
) -> None:
    """No loop_token: a random token, kept in the repository, the same for every runner of it."""
    config = parse_config(tomllib.loads(_unset_token_config(tmp_path, "a.db")), base_dir=tmp_path)
    derived = config.processing.loop_token
    assert config.processing.loop_token_set is False
    with build_processor(config) as first, build_processor(config) as second:
        token = first.settings.loop_token
        assert second.settings.loop_token == token
    assert token != derived  # not guessable from from_address and the storage url
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    other = parse_config(tomllib.loads(_unset_token_config(tmp_path, "b.db")), base_dir=tmp_path)
    with build_processor(other) as elsewhere:
        assert elsewhere.settings.loop_token not in (token, derived)


def test_mail_signed_with_the_derived_token_before_an_upgrade_is_still_ours(
    tmp_path: Path,
) -> None:
    """The derived token becomes a previous one: mail it signed is recognised, not a ticket."""
    config = parse_config(tomllib.loads(_unset_token_config(tmp_path, "a.db")), base_dir=tmp_path)
    derived = config.processing.loop_token
    with build_processor(config) as processor:
        assert processor.settings.previous_loop_tokens == (derived,)
        old = OutboxMail(
            id=1,
            message_id=MessageIdFactory(derived, "helpdesk.example").new(7),
            to=("customer@example.com",),
            subject="Re: [ID:7] Printer",
            text="Sent before the upgrade.",
            html=None,
            status=OutboxStatus.PENDING,
            created_at=utcnow(),
            mailbox="Support",
            kind="ack",
            auto_submitted=True,
        )
        raw = compose(old, SenderIdentity(HELPDESK), loop_token=derived).data
        outcome = processor.simulate(raw, Mailbox(MemoryConnector("Support")))
    assert (outcome.outcome, outcome.reason) == (Outcome.SKIPPED, "own-message")
