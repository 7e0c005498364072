"""SMS: "send SMS" on a ticket from the user's mobile, and service subscribers told of changes."""

from __future__ import annotations

import email
from email.policy import compat32
from pathlib import Path

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.config.loader import load_config
from halomail.outbound.sms import SmsSettings
from halomail.rules import rules_from_config
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.services import ServiceCriteria, ServiceDefinition
from halomail.tickets.memory import InMemoryTicketRepository
from tests.conftest import make_email

SMS = SmsSettings(
    provider_domain="sms.example.net",
    from_address="sms-account@helpdesk.example",
    password="4711",
    pin_placement="subject",
    max_length=70,
    default_country_code="44",
)


def _processor(
    settings: ProcessorSettings, **kwargs: object
) -> tuple[MailProcessor, MemoryConnector, MemoryTransport, InMemoryTicketRepository]:
    repository = InMemoryTicketRepository()
    connector, transport = MemoryConnector("Support"), MemoryTransport()
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        settings,
        transport=transport,
        sms=SMS,
        **kwargs,  # type: ignore[arg-type]
    )
    return processor, connector, transport, repository


def test_send_sms_goes_to_the_users_mobile_through_the_gateway(
    settings: ProcessorSettings,
) -> None:
    """The user's mobile becomes {phone}@gateway; PIN as subject; short; from the SMS account."""
    processor, connector, transport, repository = _processor(settings)
    repository.add_user("alice@customer.example", "Alice Martin", mobile="07700 900123")
    connector.add(make_email())
    processor.run_once()
    notice = processor.notifier.sms(1, text="Engineer on site at 14:00, please be at your desk.")
    assert notice.sent
    processor.send_outbox()
    sms = transport.sent[-1]
    assert sms.recipients == ("447700900123@sms.example.net",)
    assert sms.envelope_from == "sms-account@helpdesk.example"
    message = email.message_from_bytes(sms.data, policy=compat32)
    assert message["Subject"] == "4711"
    body = message.get_payload(decode=True).decode("utf-8").strip()
    assert len(body) <= 70
    assert body.startswith("Ticket 1: Printer is jammed")


def test_an_invalid_or_missing_number_is_refused_with_the_reason(
    settings: ProcessorSettings,
) -> None:
    """No mobile on file, or a number that is not one: nothing queued, and the reason why."""
    processor, connector, _transport, _repository = _processor(settings)
    connector.add(make_email())
    processor.run_once()
    assert processor.notifier.sms(1).reason == "no-phone"
    refused = processor.notifier.sms(1, phone="call me maybe")
    assert not refused.sent
    assert (refused.reason or "").startswith("invalid-phone: ")


def test_service_subscribers_hear_of_each_change_by_email_and_sms(
    settings: ProcessorSettings,
) -> None:
    """A failure tells the subscribers (email and SMS) once; the next failure does not repeat it."""
    service = ServiceDefinition(
        "Nightly backup",
        failure=ServiceCriteria(subject_contains=("[Failed]",)),
        subscribers=("ops@customer.example", "+44 7700 900456"),
    )
    rules = rules_from_config(
        [
            {
                "name": "Backups",
                "sequence": 10,
                "type": "service_status",
                "from": "backup@example.com",
                "service": "Nightly backup",
            }
        ],
        services=["Nightly backup"],
    )
    processor, connector, transport, _repository = _processor(
        settings, rules=rules, services=[service]
    )
    for n in (1, 2):
        connector.add(
            make_email(
                sender="Veeam <backup@example.com>",
                subject=f"[Failed] Nightly backup job {n}",
                message_id=f"<b{n}@example.com>",
                body="Result: Failed\n",
            )
        )
    processor.run_once()
    told = {mail.recipients[0]: mail for mail in transport.sent}
    assert len(transport.sent) == 2  # the second failure is no change: nobody told again
    assert set(told) == {"ops@customer.example", "447700900456@sms.example.net"}
    mail = email.message_from_bytes(told["ops@customer.example"].data, policy=compat32)
    assert mail["Subject"] == "[ID:1] Nightly backup: Failed"


def test_the_sms_table_loads_from_the_configuration(tmp_path: Path) -> None:
    """[sms] becomes the provider settings, the PIN read from the environment."""
    config_file = tmp_path / "halomail.toml"
    config_file.write_text(
        """
[sms]
provider_domain = "sms.example.net"
from_address = "sms-account@helpdesk.example"
password_env = "SMS_PIN"
pin_placement = "body-prefix"
default_country_code = "44"
"""
    )
    config = load_config(config_file, env={"SMS_PIN": "4711"}, require_mailbox=False)
    assert config.sms is not None
    assert config.sms.provider_domain == "sms.example.net"
    assert config.sms.password == "4711"
    assert "4711" not in repr(config)
