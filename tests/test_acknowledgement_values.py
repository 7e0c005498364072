"""Acknowledgements read only the values their template shows (#18).

Each compiled template knows the variables its parts read
(:attr:`~halomail.templates.render.Template.variables`); the notifier looks up the
host's user and customer records only when the template shows what they hold. The mail
sent is the same as before; what changes is the work done for values nobody reads.
"""

from __future__ import annotations

import email
from email.policy import compat32
from pathlib import Path

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.render import (
    MessageGroup,
    MessageKind,
    Template,
    TemplateRenderer,
)
from halomail.tickets.models import Customer, User
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email


class RecordingRepository(SQLiteTicketRepository):
    """A real SQLite repository that also records the user and customer look-ups asked of it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups: list[tuple[str, str]] = []

    def find_user(self, email: str) -> User | None:
        """Records the look-up, then answers from SQLite."""
        self.lookups.append(("user", email))
        return super().find_user(email)

    def find_customer(self, email: str) -> Customer | None:
        """Records the look-up, then answers from SQLite."""
        self.lookups.append(("customer", email))
        return super().find_customer(email)


def _text(message: email.message.Message) -> str:
    part = message.get_payload()[0] if message.is_multipart() else message
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8").replace("\r\n", "\n")


def _acknowledge(
    tmp_path: Path,
    settings: ProcessorSettings,
    raw: bytes,
    group: MessageGroup | None = None,
) -> tuple[list[tuple[str, str]], str]:
    """Process ``raw`` in a mailbox on ``group`` (else Default), then acknowledge its ticket.

    Returns:
        The look-ups the acknowledgement itself made, and its text, checked to be the
        text of the acknowledgement the processor sent.
    """
    repository = RecordingRepository(tmp_path / "halomail.db")
    customer = repository.add_customer("Customer Ltd", domains=["customer.example"])
    repository.add_user(
        "alice@customer.example", "Alice Martin", customer_id=customer.id, phone="+44 1"
    )
    connector = MemoryConnector("Support")
    transport = MemoryTransport()
    processor = MailProcessor(
        repository,
        [Mailbox(connector, message_group=group.name if group else "Default")],
        settings,
        transport=transport,
        renderer=TemplateRenderer([group] if group else []),
    )
    connector.add(raw)
    try:
        processor.run_once()
        (ticket,) = repository.list_tickets()
        repository.lookups.clear()  # creating the ticket looks the sender up on its own
        notifier = processor.notifier
        new = notifier.acknowledgement(
            ticket, notifier.profile("Support"), to=ticket.user_email, in_reply_to=None,
            references=(),
        )  # fmt: skip
    finally:
        repository.close()
    assert new is not None
    (sent,) = transport.sent
    assert _text(email.message_from_bytes(sent.data, policy=compat32)) == new.text
    return repository.lookups, new.text


def test_a_template_knows_the_variables_it_reads_by_their_canonical_names() -> None:
    """Aliases, any case and custom fields are named canonically; loop names and globals not."""
    template = Template(
        subject="$tag $FaultID",
        text="{% for i in range(2) %}{{ i }}{% endfor %}$CF_Serial_Number $note",
        html="<p>{% if UserName %}$username{% endif %}</p>",
    )
    assert template.variables == {
        "tag",
        "ticketid",
        "cf_serial_number",
        "actionnote",
        "username",
    }


def test_the_renderer_gives_the_template_a_group_uses() -> None:
    """template() is what render() renders: the group's own, else Default's."""
    own = Template(subject="$tag Hi", text="$summary\n")
    renderer = TemplateRenderer([MessageGroup("Short", {MessageKind.NEW_TICKET_LOGGED: own})])
    assert renderer.template(MessageKind.NEW_TICKET_LOGGED, group="Short") is own
    default = renderer.template(MessageKind.NEW_TICKET_LOGGED, group="no such group")
    assert default is renderer.template("new_ticket_logged")
    assert "customername" not in default.variables
    assert "username" in default.variables


def test_the_default_acknowledgement_looks_up_no_user_and_no_customer(
    tmp_path: Path, settings: ProcessorSettings
) -> None:
    """The sender's display name gives $username; the default template shows no customer."""
    lookups, text = _acknowledge(tmp_path, settings, make_email())
    assert lookups == []
    assert text.startswith("Hello Alice Martin,\n")


def test_a_template_showing_customer_and_phone_looks_them_up(
    tmp_path: Path, settings: ProcessorSettings
) -> None:
    """$customername and $userphone are read from the host's records when shown."""
    group = MessageGroup(
        "Account",
        {
            MessageKind.NEW_TICKET_LOGGED: Template(
                subject="$tag Logged", text="$customername / $userphone / $username\n"
            )
        },
    )
    lookups, text = _acknowledge(tmp_path, settings, make_email(), group)
    assert sorted(kind for kind, _email in lookups) == ["customer", "user"]
    assert text == "Customer Ltd / +44 1 / Alice Martin\n"


def test_a_sender_without_a_display_name_gets_the_name_the_host_knows(
    tmp_path: Path, settings: ProcessorSettings
) -> None:
    """No display name: $username needs the user record, so it is looked up and shown."""
    raw = make_email(sender="alice@customer.example")
    lookups, text = _acknowledge(tmp_path, settings, raw)
    assert lookups == [("user", "alice@customer.example")]
    assert text.startswith("Hello Alice Martin,\n")
