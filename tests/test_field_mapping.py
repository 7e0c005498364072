"""Field mapping as an administrator uses it: every target a rule can set, custom fields
with spaces, assets named in the subject or several times, asset fields in any spelling,
and rules scoped to a mailbox that exists."""

from __future__ import annotations

import re
import sqlite3
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.cli import main
from halomail.errors import ConfigError
from halomail.inbound.parse import parse_email
from halomail.rules import AssetMatch, EmailRule, rules_from_config
from halomail.rules.extract import extract
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.templates.render import Template, TemplateValues
from halomail.tickets._schema import MIGRATIONS, migrate
from halomail.tickets.models import TicketStatus
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email


def _run(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
    rules: Sequence[Mapping[str, Any]],
    *emails: bytes,
) -> list[Any]:
    processor = MailProcessor(
        repository,
        [Mailbox(connector)],
        settings,
        transport=transport,
        rules=rules_from_config(rules, mailboxes=["Support"]),
    )
    outcomes = []
    for raw in emails:
        connector.add(raw)
        outcomes.extend(processor.run_once().outcomes)
    return outcomes


def _line(target: str, label: str, **more: Any) -> dict[str, Any]:
    return {"target": target, "match": "line", "label": label, **more}


HELP_FORM = {
    "name": "IT request form",
    "type": "help_request",
    "sequence": 10,
    "from": "itforms@",
    "fields": [
        _line("status", "Status:"),
        _line("impact", "Impact:"),
        _line("urgency", "Urgency:"),
        _line("site", "Site:"),
        _line("CF_Serial Number", "Serial number:"),
    ],
}


def _request(body: str, n: int = 1, subject: str = "Laptop will not boot") -> bytes:
    return make_email(
        sender="IT Forms <itforms@customer.example>",
        subject=subject,
        message_id=f"<form-{n}@customer.example>",
        body=body,
    )


class TestTargets:
    def test_status_impact_urgency_site_and_a_custom_field_with_spaces_reach_the_ticket(
        self,
        repository: TicketRepository,
        connector: MemoryConnector,
        transport: MemoryTransport,
        settings: ProcessorSettings,
    ) -> None:
        """Each mapped line lands in its ticket field; CF_Serial Number keeps its spaces."""
        body = (
            "Status: Open\nImpact: Whole floor\nUrgency: High\nSite: Leeds office\n"
            "Serial number: CZC-1234\nDescription: it beeps three times\n"
        )
        (outcome,) = _run(repository, connector, transport, settings, [HELP_FORM], _request(body))
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert ticket.status is TicketStatus.OPEN
        assert (ticket.impact, ticket.urgency, ticket.site) == (
            "Whole floor",
            "High",
            "Leeds office",
        )
        assert dict(ticket.custom_fields) == {"Serial Number": "CZC-1234"}

    def test_a_status_no_ticket_can_have_is_left_unset_and_explained(self) -> None:
        """'Status: Escalated' is no ticket status: left unset (the ticket starts new), said why."""
        (rule,) = rules_from_config([HELP_FORM])
        email = parse_email(_request("Status: Escalated\nImpact: Low\n"))
        extraction = extract(rule, email)
        assert "status" not in extraction.fields
        assert extraction.fields["impact"] == "Low"
        assert any("'Escalated'" in problem for problem in extraction.problems)

    def test_a_custom_field_with_spaces_is_written_with_underscores_in_templates(
        self,
        repository: TicketRepository,
        connector: MemoryConnector,
        transport: MemoryTransport,
        settings: ProcessorSettings,
    ) -> None:
        """$CF_Serial_Number renders the field mapped as CF_Serial Number."""
        body = "Serial number: CZC-1234\n"
        (outcome,) = _run(repository, connector, transport, settings, [HELP_FORM], _request(body))
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        template = Template(subject="Ticket $TicketID", text="Serial: $CF_Serial_Number")
        assert template.render(TemplateValues.for_ticket(ticket)).text == "Serial: CZC-1234"

    def test_a_mapped_site_is_the_templates_sitename_unless_the_host_names_one(
        self,
        repository: TicketRepository,
        connector: MemoryConnector,
        transport: MemoryTransport,
        settings: ProcessorSettings,
    ) -> None:
        """$SiteName is the site a rule mapped; the host's site_name still wins."""
        body = "Site: Leeds office\n"
        (outcome,) = _run(repository, connector, transport, settings, [HELP_FORM], _request(body))
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        template = Template(subject="Ticket $TicketID", text="Site: $SiteName")
        assert template.render(TemplateValues.for_ticket(ticket)).text == "Site: Leeds office"
        chosen = TemplateValues.for_ticket(ticket, site_name="York")
        assert template.render(chosen).text == "Site: York"

    @pytest.mark.parametrize("target", ["CF_", "CF_ Serial", "CF_Serial ", "Serial Number"])
    def test_a_custom_field_name_that_is_empty_or_padded_is_refused(self, target: str) -> None:
        """A target must be a known field or CF_ and a name without surrounding spaces."""
        table = {**HELP_FORM, "fields": [_line(target, "Serial number:")]}
        with pytest.raises(ConfigError) as caught:
            rules_from_config([table])
        assert caught.value.key_path == "rules[0].fields[0].target"


ASSET_RULE = {
    "name": "Hardware fault",
    "type": "help_request",
    "sequence": 10,
    "from": "itforms@",
    "asset": [
        {"start": "Device:", "field": "Serial Number", "source": ["subject", "body"]},
        {"start": "Also affected:", "field": "tag"},
    ],
}


class TestAssets:
    def test_an_asset_rule_by_serial_number_finds_an_inventoried_asset(
        self,
        repository: TicketRepository,
        connector: MemoryConnector,
        transport: MemoryTransport,
        settings: ProcessorSettings,
    ) -> None:
        """Inventory stores serial_number; a rule on "Serial Number" links that asset."""
        inventory = {
            "name": "Inventory",
            "type": "inventory",
            "sequence": 5,
            "from": "agent@inventory.example",
        }
        report = make_email(
            sender="Inventory agent <agent@inventory.example>",
            subject="Inventory WS-0107",
            message_id="<inv-1@inventory.example>",
            body="Asset tag: WS-0107\nSerial Number: CZC1234XYZ\nModel: EliteDesk\n",
        )
        request = _request("Device: czc1234xyz\nIt will not boot.\n", n=2)
        rule = {**ASSET_RULE, "asset": {"start": "Device:", "field": "Serial Number"}}
        stored, opened = _run(
            repository, connector, transport, settings, [inventory, rule], report, request
        )
        assert stored.outcome is Outcome.CREATED
        asset = repository.find_asset("tag", "WS-0107")
        assert asset is not None
        assert dict(asset.fields)["serial_number"] == "CZC1234XYZ"
        ticket = repository.get_ticket(opened.ticket_id)
        assert ticket is not None
        assert (ticket.asset_id, ticket.asset_ids) == (asset.id, (asset.id,))

    def test_assets_named_in_the_subject_and_several_times_in_the_body_are_all_linked(
        self,
        repository: TicketRepository,
        connector: MemoryConnector,
        transport: MemoryTransport,
        settings: ProcessorSettings,
    ) -> None:
        """The subject's device first, then each body match once; unknown tags are skipped."""
        add_asset = repository.add_asset  # type: ignore[attr-defined]
        first = add_asset("PC-1", {"Serial Number": "SN-1"})
        second = add_asset("PC-2", {"Serial Number": "SN-2"})
        printer = add_asset("PRN-7")
        body = (
            "Device: SN-2\nDevice: sn-1\nDevice: SN-404\n"
            "Also affected: prn-7\nAlso affected: PRN-7\n"
        )
        email = _request(body, subject="Blue screen on Device: SN-1")
        (outcome,) = _run(repository, connector, transport, settings, [ASSET_RULE], email)
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert ticket.asset_ids == (first.id, second.id, printer.id)
        assert ticket.asset_id == first.id

    def test_a_body_of_many_asset_tags_is_read_up_to_the_bound(self) -> None:
        """100,000 start tags without an end tag: the search stops, 20 tags at most are read."""
        rule = EmailRule(
            name="Bound",
            type="help_request",
            sequence=1,
            asset=AssetMatch(start="Device:", end=";"),
        )
        hostile = parse_email(_request("Device: x;" * 100_000))
        extraction = extract(rule, hostile)
        assert len(extraction.asset_tags) == 1  # one distinct tag, found once
        many = parse_email(_request("".join(f"Device: T{n};" for n in range(100_000))))
        assert len(extract(rule, many).asset_tags) == 20
        unclosed = parse_email(_request("Device: " * 100_000))
        assert extract(rule, unclosed).asset_tags == ()


def test_the_guides_hardware_rule_links_both_assets_it_describes(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
) -> None:
    """docs/rules.md's "Hardware faults" example does what its prose says."""
    doc = (Path(__file__).parent.parent / "docs" / "rules.md").read_text()
    blocks = re.findall(r"^```toml\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if 'name = "Hardware faults"' in b]
    add_asset = repository.add_asset  # type: ignore[attr-defined]
    fan = add_asset("WS-9", {"serial_number": "CZC1234"})
    printer = add_asset("PRN-0042")
    raw = make_email(
        sender="Dana <dana@customer.example>",
        to="hardware@helpdesk.example",
        subject="Fan noise, Serial: CZC1234",
        body="The fan is loud.\nAlso affected: PRN-0042\nUrgency: High\n",
    )
    rules = tomllib.loads(block)["rules"]
    (outcome,) = _run(repository, connector, transport, settings, rules, raw)
    ticket = repository.get_ticket(outcome.ticket_id)
    assert ticket is not None
    assert ticket.asset_ids == (fan.id, printer.id)
    assert (ticket.urgency, dict(ticket.custom_fields)) == ("High", {"Serial Number": "CZC1234"})


class TestMailboxScope:
    def test_a_rule_for_an_unknown_mailbox_is_refused_naming_the_known_ones(self) -> None:
        """mailbox = "Suport" is refused at load with its key path and the mailboxes there are."""
        table = {**HELP_FORM, "mailbox": "Suport"}
        with pytest.raises(ConfigError) as caught:
            rules_from_config([HELP_FORM, table], mailboxes=["Support", "Sales"])
        assert caught.value.key_path == "rules[1].mailbox"
        assert "'Support', 'Sales'" in str(caught.value)
        assert "did you mean 'Support'" in str(caught.value)

    def test_a_mailbox_in_another_case_or_every_mailbox_is_accepted(self) -> None:
        """'support' names Support; '*' is every mailbox."""
        tables = [{**HELP_FORM, "mailbox": "support"}, {**HELP_FORM, "name": "b", "mailbox": "*"}]
        assert len(rules_from_config(tables, mailboxes=["Support"])) == 2

    def test_check_config_refuses_a_rule_scoped_to_an_unknown_mailbox(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`halomail check-config` exits 2 and names rules[0].mailbox."""
        (tmp_path / "inbox" / "new").mkdir(parents=True)
        config = tmp_path / "halomail.toml"
        config.write_text(
            '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n\n'
            '[[rules]]\nname = "Printers"\ntype = "help_request"\nsequence = 1\n'
            'mailbox = "Helpdesk"\nsubject = "printer"\n'
        )
        assert main(["check-config", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "rules[0].mailbox" in err
        assert "'Helpdesk'" in err
        assert "'Support'" in err


class TestMigration:
    def test_a_version_5_database_finds_its_assets_by_any_spelling_and_keeps_ticket_links(
        self, tmp_path: Path
    ) -> None:
        """Field names written before version 6 are found in any spelling; asset_id is kept."""
        db = tmp_path / "old.db"
        old = sqlite3.connect(db, isolation_level=None)
        try:
            assert migrate(old, MIGRATIONS[:5]) == 5
            old.execute(
                "INSERT INTO assets (id, tag, tag_key, fields) VALUES "
                "(1, 'PC-1', 'pc-1', '{\"Serial Number\": \"SN-1\"}')"
            )
            old.execute(
                "INSERT INTO asset_fields (name, value_key, asset_id) "
                "VALUES ('Serial Number', 'sn-1', 1)"
            )
            old.execute(
                "INSERT INTO tickets (summary, details, ticket_type, user_email, record, status, "
                "created_at, updated_at, asset_id) VALUES ('Old', 'd', 'Incident', 'a@x', "
                "'ticket', 'open', '2024-01-01T00:00:00.000000+00:00', "
                "'2024-01-01T00:00:00.000000+00:00', 1)"
            )
        finally:
            old.close()
        with SQLiteTicketRepository(db) as repository:
            asset = repository.find_asset("serial_number", "SN-1")
            assert asset is not None
            assert asset.tag == "PC-1"
            (ticket,) = repository.list_tickets()
            assert (ticket.asset_id, ticket.asset_ids, ticket.impact) == (1, (1,), None)


@pytest.mark.parametrize("source", ["attachment", ["subject", "headers"], []])
def test_an_asset_source_other_than_body_or_subject_is_refused(source: Any) -> None:
    """[rules.asset] source must name the body, the subject or both."""
    table = {**ASSET_RULE, "asset": {"start": "Device:", "source": source}}
    with pytest.raises(ConfigError) as caught:
        rules_from_config([table])
    assert caught.value.key_path.startswith("rules[0].asset.source")
    with pytest.raises(ConfigError):
        AssetMatch(start="Device:", source=source)
