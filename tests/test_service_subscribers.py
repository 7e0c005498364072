"""A typed message to every subscriber of a monitored service, by email and by SMS (#17).

The configuration is a real ``halomail.toml`` (SQLite file, SMTP to the aiosmtpd server
of ``tests/servers/smtp.py``, an email-to-SMS provider); the SMS go through the same
server, addressed to the provider's gateway.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.message import Message
from email.policy import compat32
from pathlib import Path

import attrs
import pytest

from halomail.app import build_processor
from halomail.config.loader import Config, load_config
from halomail.runner import MailProcessor
from halomail.services import ServiceDefinition
from tests.servers.smtp import SmtpServer

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "smtp"
host = "{server.host}"
port = {server.port}
security = "starttls"
tls_ca_file = "{server.ca_file}"
username = "{server.username}"
password = "{server.password}"
from_address = "support@helpdesk.example"

[sms]
provider_domain = "sms.example.net"
from_address = "sms-account@helpdesk.example"
password_env = "SMS_PIN"
pin_placement = "subject"
default_country_code = "44"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"

[[services]]
name = "Nightly backup"
failure = {{ subject = "[Failed]" }}
subscribers = ["ops@customer.example", "+44 7700 900456", "Boss@Customer.example", "07700 900789"]
"""
SMS_TO = {"447700900456@sms.example.net", "447700900789@sms.example.net"}
EMAIL_TO = {"ops@customer.example", "boss@customer.example"}


@pytest.fixture
def config(tmp_path: Path, smtp_server: SmtpServer) -> Config:
    """The configuration: SQLite, SMTP to the test server, an SMS provider, one service."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    path = tmp_path / "halomail.toml"
    path.write_text(CONFIG.format(server=smtp_server))
    return load_config(path, env={"SMS_PIN": "4711"})


@pytest.fixture
def processor(config: Config) -> Iterator[MailProcessor]:
    """The configuration's processor, closed afterwards."""
    with build_processor(config) as built:
        yield built


@pytest.fixture
def service(config: Config) -> ServiceDefinition:
    """The configured service, Nightly backup."""
    (only,) = config.services
    return only


def _received(server: SmtpServer) -> dict[str, list[Message]]:
    by_recipient: dict[str, list[Message]] = {}
    for captured in server.messages:
        for rcpt in captured.rcpt_tos:
            parsed = email.message_from_bytes(captured.raw, policy=compat32)
            by_recipient.setdefault(rcpt, []).append(parsed)
    return by_recipient


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


def test_every_subscriber_gets_the_message_once_by_email_or_sms(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """Two addresses by email, two numbers by SMS through the gateway: one message each."""
    notices = processor.notifier.message_subscribers(
        service,
        "Maintenance tonight",
        "The backup server restarts at 22:00.\nBackups resume at 23:00.",
    )
    assert [n.sent for n in notices] == [True] * 4
    report = processor.send_outbox()
    assert report.sent == 4
    received = _received(smtp_server)
    assert set(received) == EMAIL_TO | SMS_TO
    assert all(len(messages) == 1 for messages in received.values())
    mail = received["ops@customer.example"][0]
    assert mail["Subject"] == "Maintenance tonight"
    assert "Backups resume at 23:00." in _body(mail)
    sms = received["447700900456@sms.example.net"][0]
    assert sms["Subject"] == "4711"  # the provider reads the PIN from the subject
    assert _body(sms).strip().startswith("The backup server restarts at 22:00.")
    assert {c.mail_from for c in smtp_server.messages if SMS_TO & set(c.rcpt_tos)} == {
        "sms-account@helpdesk.example"
    }


def test_the_same_message_again_tells_nobody_twice(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """Asking again with the same text queues nothing; another text is a new message."""
    processor.notifier.message_subscribers(service, "Maintenance", "Restart at 22:00.")
    processor.send_outbox()
    again = processor.notifier.message_subscribers(service, "Maintenance", "Restart at 22:00.")
    assert [n.reason for n in again] == ["already-sent"] * 4
    assert processor.send_outbox().sent == 0
    assert len(smtp_server.messages) == 4
    other = processor.notifier.message_subscribers(service, "Maintenance", "Moved to 23:00.")
    assert all(n.sent for n in other)
    assert processor.send_outbox().sent == 4


def test_the_same_message_asked_for_again_deliberately_is_sent_again(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """again=True repeats a message (next week's reminder), still once per subscriber."""
    processor.notifier.message_subscribers(service, "Maintenance", "Restart at 22:00.")
    processor.send_outbox()
    repeat = processor.notifier.message_subscribers(
        service, "Maintenance", "Restart at 22:00.", again=True
    )
    assert all(n.sent for n in repeat)
    assert processor.send_outbox().sent == 4
    assert len(smtp_server.messages) == 8


def test_channels_choose_email_or_sms_subscribers(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """channels=("sms",) texts the numbers only; ("email",) then mails the addresses only."""
    texted = processor.notifier.message_subscribers(service, "", "Down", channels=("sms",))
    processor.send_outbox()
    assert {rcpt for c in smtp_server.messages for rcpt in c.rcpt_tos} == SMS_TO
    assert len(texted) == 2
    processor.notifier.message_subscribers(service, "", "Down", channels=("email",))
    processor.send_outbox()
    assert set(_received(smtp_server)) == SMS_TO | EMAIL_TO
    with pytest.raises(ValueError, match="channels"):
        processor.notifier.message_subscribers(service, "", "Down", channels=("fax",))


def test_crlf_and_variables_in_a_typed_message_are_harmless(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """A CR/LF in the subject adds no header; $servicename expands; {{ }} stays as typed."""
    processor.notifier.message_subscribers(
        service,
        "$ServiceName down\r\nBcc: victim@evil.example",
        "$servicename is $servicestatus.\r\nCost: $5 {{ 7 * 7 }} {% if 1 %}x{% endif %}",
        channels=("email",),
    )
    processor.send_outbox()
    received = _received(smtp_server)
    assert set(received) == EMAIL_TO  # nobody else, whatever the subject said
    mail = received["ops@customer.example"][0]
    assert mail["Bcc"] is None
    assert mail["Subject"] == "Nightly backup down Bcc: victim@evil.example"
    body = _body(mail)
    assert "Nightly backup is Unknown.\n" in body.replace("\r\n", "\n")
    assert "Cost: $5 {{ 7 * 7 }} {% if 1 %}x{% endif %}" in body


def test_an_empty_message_is_refused(processor: MailProcessor, service: ServiceDefinition) -> None:
    """A blank text queues nothing and says why."""
    with pytest.raises(ValueError, match="empty"):
        processor.notifier.message_subscribers(service, "Subject", " \r\n ")


def test_one_number_written_two_ways_gets_one_sms(
    processor: MailProcessor, service: ServiceDefinition, smtp_server: SmtpServer
) -> None:
    """ "+44 7700 900456" and "07700 900456" are one phone: it is texted once."""
    twice = attrs.evolve(service, subscribers=("+44 7700 900456", "07700 900456"))
    notices = processor.notifier.message_subscribers(twice, "", "Down", channels=("sms",))
    assert [n.reason for n in notices] == [None, "already-sent"]
    processor.send_outbox()
    assert [c.rcpt_tos for c in smtp_server.messages] == [("447700900456@sms.example.net",)]
