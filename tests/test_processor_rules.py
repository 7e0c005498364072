"""Every rule type end to end: realistic emails in, the effect an administrator expects out."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.cli import main
from halomail.rules import rules_from_config
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.services import services_from_config
from halomail.tickets.models import TicketStatus
from halomail.tickets.repository import TicketRepository
from halomail.tickets.templates import ticket_templates_from_config
from tests.conftest import make_email

SERVICES = [
    {
        "name": "Nightly backup",
        "check_interval_minutes": 1560,
        "success": {"subject": ["Success"]},
        "failure": {"subject": ["Failed", "Warning"]},
        "failure_ticket_type": "Backup Failure",
        "close_on_success": True,
        "unknown_ticket": True,
    }
]
TEMPLATES = [
    {
        "name": "New starter",
        "ticket_type": "Service Request",
        "summary_prefix": "[Onboarding] ",
        "priority": "P3",
        "team": "Service Desk",
        "fields": {"CF_department": "Unknown"},
    }
]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A hand-moved clock starting on 20 November 2026, 08:00 UTC."""
    return Clock()


Build = Callable[[Sequence[Mapping[str, Any]]], MailProcessor]


@pytest.fixture
def build(
    repository: TicketRepository,
    connector: MemoryConnector,
    transport: MemoryTransport,
    settings: ProcessorSettings,
    clock: Clock,
) -> Build:
    """A processor over the Support mailbox with the given [[rules]] tables."""

    def make(rules: Sequence[Mapping[str, Any]]) -> MailProcessor:
        services = services_from_config(SERVICES)
        templates = ticket_templates_from_config(TEMPLATES)
        return MailProcessor(
            repository,
            [Mailbox(connector)],
            settings,
            transport=transport,
            rules=rules_from_config(
                rules, services=[s.name for s in services], templates=[t.name for t in templates]
            ),
            services=services,
            ticket_templates=templates,
            clock=clock,
        )

    return make


def _process(processor: MailProcessor, connector: MemoryConnector, raw: bytes) -> Any:
    connector.add(raw)
    (outcome,) = processor.run_once().outcomes
    return outcome


BACKUP_RULE = {
    "name": "Backups",
    "type": "service_status",
    "sequence": 20,
    "from": "backup@example.com",
    "from_exact": True,
    "service": "Nightly backup",
}


def _backup(result: str, n: int) -> bytes:
    return make_email(
        sender="Veeam Backup <backup@example.com>",
        subject=f"[{result}] Nightly backup job (3 VMs) {n}",
        message_id=f"<backup-{n}@example.com>",
        body=f"Backup job: Nightly backup\nResult: {result}\nProcessed: 3 of 3 VMs\n",
    )


class TestServiceStatus:
    def test_backup_success_and_failure_reports_build_the_status_history(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A success is recorded as ok, a failure opens a ticket, the next success closes it."""
        processor = build([BACKUP_RULE])
        ok = _process(processor, connector, _backup("Success", 1))
        assert (ok.outcome, ok.rule, ok.reason) == (Outcome.STATUS, "Backups", "service-ok")
        failed = _process(processor, connector, _backup("Failed", 2))
        assert (failed.outcome, failed.reason) == (Outcome.CREATED, "service-failed")
        ticket = repository.get_ticket(failed.ticket_id)
        assert ticket is not None
        assert ticket.ticket_type == "Backup Failure"
        assert ticket.summary.startswith("Nightly backup: [Failed]")
        again = _process(processor, connector, _backup("Warning", 3))
        assert (again.outcome, again.ticket_id) == (Outcome.UPDATED, failed.ticket_id)
        recovered = _process(processor, connector, _backup("Success", 4))
        assert (recovered.outcome, recovered.ticket_id) == (Outcome.CLOSED, failed.ticket_id)
        closed = repository.get_ticket(failed.ticket_id)
        assert closed is not None
        assert closed.status is TicketStatus.CLOSED
        history = repository.service_history("Nightly backup")
        assert [entry.status for entry in history] == ["ok", "failed", "failed", "ok"]

    def test_a_silent_service_turns_unknown_after_its_interval_and_raises_a_ticket(
        self,
        build: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
        clock: Clock,
    ) -> None:
        """No email for longer than the checking interval: Unknown once, with a ticket."""
        processor = build([BACKUP_RULE])
        _process(processor, connector, _backup("Success", 1))
        clock.now += dt.timedelta(hours=25)
        (check,) = processor.check_services()
        assert (check.status, check.turned_unknown) == ("ok", False)
        clock.now += dt.timedelta(hours=2)  # 27 h since the last email: past 26 h
        (check,) = processor.check_services()
        assert (check.status, check.turned_unknown) == ("unknown", True)
        assert check.ticket_id is not None
        clock.now += dt.timedelta(hours=5)
        (check,) = processor.check_services()
        assert check.turned_unknown is False  # recorded once, not every cycle
        history = repository.service_history("Nightly backup")
        assert [entry.status for entry in history] == ["unknown", "ok"]
        assert history[0].at == dt.datetime(2026, 11, 21, 11, 0, tzinfo=dt.UTC)


class TestAlerts:
    RULES = (
        {
            "name": "Monitoring",
            "type": "alert",
            "sequence": 10,
            "from": "nagios@",
            "ticket_type": "Alert",
            "closure_string": "RECOVERY",
            "fields": [
                {"target": "CF_host", "match": "line", "label": "Host:"},
                {
                    "target": "priority",
                    "match": "line",
                    "label": "Severity:",
                    "type": "choice",
                    "choices": ["Critical", "Warning"],
                },
            ],
        },
        {
            "name": "Monitoring cleared",
            "type": "off_alert",
            "sequence": 9,
            "from": "nagios@",
            "subject": "CLEARED",
            "alert_rule": "Monitoring",
        },
    )

    @staticmethod
    def _alert(kind: str, n: int, service: str = "HTTP") -> bytes:
        return make_email(
            sender="Nagios <nagios@monitor.example.com>",
            subject=f"** {kind}: web01/{service} is CRITICAL **",
            message_id=f"<nagios-{n}@monitor.example.com>",
            body=f"Notification Type: {kind}\nHost: web01\nService: {service}\n"
            "Severity: critical\nInfo: connection refused\n",
        )

    def test_a_monitoring_alert_opens_a_ticket_with_its_fields(
        self,
        build: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
        transport: MemoryTransport,
    ) -> None:
        """A PROBLEM alert becomes an Alert ticket with the host and severity read from it."""
        outcome = _process(build(self.RULES), connector, self._alert("PROBLEM", 1))
        assert (outcome.outcome, outcome.rule) == (Outcome.CREATED, "Monitoring")
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert ticket.ticket_type == "Alert"
        assert ticket.custom_fields == {"host": "web01"}
        assert ticket.priority == "Critical"
        assert transport.sent == []  # monitoring systems are not acknowledged

    def test_a_repeated_alert_adds_to_the_open_ticket_and_recovery_closes_it(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """The same alert again updates its ticket; the RECOVERY email closes it (unassigned)."""
        processor = build(self.RULES)
        first = _process(processor, connector, self._alert("PROBLEM", 1))
        second = _process(processor, connector, self._alert("PROBLEM", 2))
        assert (second.outcome, second.ticket_id) == (Outcome.UPDATED, first.ticket_id)
        other = _process(processor, connector, self._alert("PROBLEM", 3, service="SSH"))
        assert other.outcome is Outcome.CREATED
        recovery = _process(processor, connector, self._alert("RECOVERY", 4))
        assert (recovery.outcome, recovery.ticket_id) == (Outcome.CLOSED, first.ticket_id)
        statuses = {t.id: t.status for t in repository.list_tickets()}
        assert statuses == {first.ticket_id: TicketStatus.CLOSED, other.ticket_id: TicketStatus.NEW}

    def test_a_recovery_for_an_assigned_ticket_only_adds_a_note(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """Closure of an alert someone is working on leaves the ticket open with a note."""
        processor = build(self.RULES)
        first = _process(processor, connector, self._alert("PROBLEM", 1))
        repository.assign(first.ticket_id, agent="tech@helpdesk.example", team=None)
        recovery = _process(processor, connector, self._alert("RECOVERY", 2))
        assert (recovery.outcome, recovery.reason) == (Outcome.UPDATED, "cleared-while-assigned")
        ticket = repository.get_ticket(first.ticket_id)
        assert ticket is not None
        assert ticket.is_open
        assert len(repository.list_actions(first.ticket_id)) == 2

    def test_an_off_alert_email_closes_the_ticket_its_alert_raised(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A separate "CLEARED" email closes the open ticket of the matching alert."""
        processor = build(self.RULES)
        first = _process(processor, connector, self._alert("PROBLEM", 1))
        cleared = _process(processor, connector, self._alert("CLEARED", 2))
        assert (cleared.outcome, cleared.rule, cleared.ticket_id) == (
            Outcome.CLOSED,
            "Monitoring cleared",
            first.ticket_id,
        )

    def test_a_clearance_with_nothing_open_is_ignored_with_its_reason(
        self, build: Build, connector: MemoryConnector
    ) -> None:
        """A recovery for a problem that has no open ticket changes nothing, and says so."""
        outcome = _process(build(self.RULES), connector, self._alert("RECOVERY", 1))
        assert (outcome.outcome, outcome.reason) == (Outcome.IGNORED, "nothing-open-to-close")


class TestOtherRuleTypes:
    def test_ignore_disposes_of_the_email_and_writes_nothing(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """An ignore rule: outcome ignored, email processed, no ticket."""
        rules = [{"name": "Receipts", "type": "ignore", "sequence": 1, "subject": "Read:"}]
        outcome = _process(build(rules), connector, make_email(subject="Read: Printer"))
        assert (outcome.outcome, outcome.rule) == (Outcome.IGNORED, "Receipts")
        assert repository.list_tickets() == []
        assert connector.acks[0][1].value == "processed"

    def test_help_request_sets_type_fields_asset_and_private_action(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A help request rule sets the ticket type, mapped fields, the asset and visibility."""
        asset = repository.add_asset("PRN-0042", {"model": "LaserJet"})  # type: ignore[attr-defined]
        rules = [
            {
                "name": "Printers",
                "type": "help_request",
                "sequence": 30,
                "to": "printers@",
                "ticket_type": "Printer Fault",
                "public": False,
                "asset": {"start": "Asset:", "field": "tag"},
                "fields": [
                    {"target": "CF_floor", "match": "line", "label": "Floor:", "type": "number"}
                ],
            }
        ]
        raw = make_email(
            to="printers@helpdesk.example", body="It jams.\nAsset: PRN-0042\nFloor: 3\n"
        )
        outcome = _process(build(rules), connector, raw)
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert (ticket.ticket_type, ticket.asset_id) == ("Printer Fault", asset.id)
        assert ticket.custom_fields == {"floor": "3"}
        assert repository.list_actions(ticket.id)[0].public is False

    def test_a_rule_can_turn_off_the_acknowledgement(
        self, build: Build, connector: MemoryConnector, transport: MemoryTransport
    ) -> None:
        """send_acknowledgement = false: the ticket is made and nothing is sent."""
        rules = [
            {"name": "Quiet", "type": "help_request", "sequence": 1, "send_acknowledgement": False}
        ]
        assert _process(build(rules), connector, make_email()).outcome is Outcome.CREATED
        assert transport.sent == []

    def test_apply_template_starts_the_ticket_from_the_template(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """apply_template gives the ticket the template's type, prefix, priority and team."""
        rules = [
            {
                "name": "HR",
                "type": "apply_template",
                "sequence": 40,
                "from": "hr@example.com",
                "from_exact": True,
                "template": "New starter",
            }
        ]
        raw = make_email(sender="HR <hr@example.com>", subject="Jane Doe starts Monday")
        outcome = _process(build(rules), connector, raw)
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert (ticket.ticket_type, ticket.summary, ticket.priority, ticket.team) == (
            "Service Request",
            "[Onboarding] Jane Doe starts Monday",
            "P3",
            "Service Desk",
        )
        assert ticket.custom_fields == {"department": "Unknown"}

    def test_a_web_form_email_maps_its_labels_to_ticket_fields(
        self,
        build: Build,
        connector: MemoryConnector,
        repository: TicketRepository,
        transport: MemoryTransport,
    ) -> None:
        """A web form's Email and Subject lines become the ticket's user and summary."""
        rules = [
            {
                "name": "Contact form",
                "type": "formatted_email",
                "sequence": 50,
                "from": "forms@example.com",
                "fields": [
                    {"target": "user_email", "match": "line", "label": "Email:"},
                    {"target": "summary", "match": "line", "label": "Subject:"},
                    {"target": "CF_phone", "match": "line", "label": "Phone:"},
                ],
            }
        ]
        raw = make_email(
            sender="Website <forms@example.com>",
            subject="New submission: Contact us",
            body="Name: Jane Doe\nEmail: Jane.Doe@customer.example\nPhone: +44 20 7946 0000\n"
            "Subject: Invoice 1042 is wrong\nMessage: Please call me.\n",
        )
        outcome = _process(build(rules), connector, raw)
        ticket = repository.get_ticket(outcome.ticket_id)
        assert ticket is not None
        assert (ticket.user_email, ticket.summary) == (
            "jane.doe@customer.example",
            "Invoice 1042 is wrong",
        )
        assert ticket.custom_fields == {"phone": "+44 20 7946 0000"}
        assert [sent.recipients for sent in transport.sent] == [("jane.doe@customer.example",)]

    def test_a_virus_alert_raises_a_ticket_against_the_asset_with_its_severity(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """An antivirus detection names the device; the ticket links it with the mapped priority."""
        asset = repository.add_asset("PC-0042")  # type: ignore[attr-defined]
        rules = [
            {
                "name": "Defender",
                "type": "virus",
                "sequence": 15,
                "from": "defender@",
                "ticket_type": "Security",
                "severity": {"high": "P1", "low": "P3"},
                "asset": {"start": "Device:", "field": "tag"},
            }
        ]
        processor = build(rules)

        def detection(n: int) -> bytes:
            return make_email(
                sender="Microsoft Defender <defender@security.example.com>",
                subject="Threat detected: Trojan:Win32/Wacatac.B!ml",
                message_id=f"<defender-{n}@security.example.com>",
                body="Device: PC-0042\nThreat: Trojan:Win32/Wacatac.B!ml\nSeverity: High\n"
                "Action taken: Quarantined\n",
            )

        first = _process(processor, connector, detection(1))
        ticket = repository.get_ticket(first.ticket_id)
        assert ticket is not None
        assert (ticket.ticket_type, ticket.priority, ticket.asset_id) == (
            "Security",
            "P1",
            asset.id,
        )
        second = _process(processor, connector, detection(2))
        assert (second.outcome, second.ticket_id) == (Outcome.UPDATED, first.ticket_id)

    def test_an_inventory_report_creates_then_updates_the_asset(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """Auto-inventory emails create the asset they name, then update its fields."""
        rules = [
            {"name": "Inventory", "type": "inventory", "sequence": 5, "subject": "Inventory report"}
        ]
        processor = build(rules)

        def report(n: int, ram: str) -> bytes:
            return make_email(
                sender="agent@rmm.example.com",
                subject=f"Inventory report {n}",
                message_id=f"<inv-{n}@rmm.example.com>",
                body=f"Hostname: LAPTOP-17\nSerial Number: 5CG1234XYZ\nOS: Windows 11 Pro\n"
                f"RAM: {ram}\n",
            )

        created = _process(processor, connector, report(1, "16 GB"))
        assert (created.outcome, created.reason, created.ticket_id) == (
            Outcome.CREATED,
            "asset-created",
            None,
        )
        updated = _process(processor, connector, report(2, "32 GB"))
        assert (updated.outcome, updated.reason) == (Outcome.UPDATED, "asset-updated")
        asset = repository.find_asset("tag", "LAPTOP-17")
        assert asset is not None
        assert asset.fields["ram"] == "32 GB"
        assert asset.fields["serial_number"] == "5CG1234XYZ"
        assert repository.list_tickets() == []

    def test_a_file_transfer_stores_the_attachments_against_the_customer(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """File-transfer emails store their attachments with the sender's customer; no ticket."""
        customer = repository.add_customer("Acme", domains=("customer.example",))  # type: ignore[attr-defined]
        rules = [
            {
                "name": "Files",
                "type": "file_transfer",
                "sequence": 5,
                "to": "files@helpdesk.example",
                "to_exact": True,
            }
        ]
        raw = (
            b"From: Alice <alice@customer.example>\r\nTo: files@helpdesk.example\r\n"
            b"Subject: Monthly exports\r\nMessage-ID: <files-1@customer.example>\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n"
            b'--b\r\nContent-Type: text/csv; name="sales.csv"\r\n'
            b'Content-Disposition: attachment; filename="sales.csv"\r\n\r\nmonth,total\r\n11,42\r\n'
            b'--b\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
            b'Content-Disposition: attachment; filename="report.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
        )
        outcome = _process(build(rules), connector, raw)
        assert (outcome.outcome, outcome.reason, outcome.ticket_id) == (
            Outcome.UPDATED,
            "files-stored",
            None,
        )
        files = repository.list_files(owner="customer", owner_id=customer.id)
        assert [(f.filename, f.payload) for f in files] == [
            ("sales.csv", b"month,total\r\n11,42"),  # the CRLF before a boundary is the boundary's
            ("report.pdf", b"%PDF-1.4\n"),
        ]
        assert repository.list_tickets() == []

    def test_a_follow_up_still_threads_before_rules_but_ignore_rules_apply_to_all(
        self, build: Build, connector: MemoryConnector, repository: TicketRepository
    ) -> None:
        """A reply with [ID:n] updates ticket n even if a rule matches; ignore rules still win."""
        rules = [
            {"name": "Alerts", "type": "alert", "sequence": 10, "subject": "disk"},
            {"name": "Drop", "type": "ignore", "sequence": 20, "subject": "unsubscribe"},
        ]
        processor = build(rules)
        first = _process(processor, connector, make_email(subject="Printer", message_id="<p@c>"))
        reply = _process(
            processor,
            connector,
            make_email(subject=f"Re: [ID:{first.ticket_id}] disk full", message_id="<r@c>"),
        )
        assert (reply.outcome, reply.ticket_id) == (Outcome.UPDATED, first.ticket_id)
        drop = _process(
            processor,
            connector,
            make_email(subject=f"Re: [ID:{first.ticket_id}] unsubscribe", message_id="<u@c>"),
        )
        assert (drop.outcome, drop.rule) == (Outcome.IGNORED, "Drop")


def test_simulate_explains_every_rule_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`halomail simulate` lists each rule with why it did or did not match, and the decision."""
    config = tmp_path / "halomail.toml"
    config.write_text(
        '[storage]\nurl = "sqlite:///h.db"\n'
        '[[mailboxes]]\nname = "Support"\nconnection = "eml-dir"\npath = "in"\n'
        '[[rules]]\nname = "Backups"\ntype = "ignore"\nsequence = 1\nfrom = "backup@"\n'
        '[[rules]]\nname = "Printers"\ntype = "help_request"\nsequence = 2\nsubject = "printer"\n'
        'ticket_type = "Printer Fault"\n'
        '[[rules]]\nname = "Later"\ntype = "ignore"\nsequence = 3\n'
    )
    (tmp_path / "in").mkdir()
    sample = tmp_path / "sample.eml"
    sample.write_bytes(make_email(subject="Printer is jammed"))
    assert main(["-c", str(config), "simulate", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "created by rule 'Printers'" in out
    assert "MATCHED" in out
    assert "backup@" in out  # the first criterion that failed for "Backups"
    assert main(["-c", str(config), "simulate", str(sample), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    steps = data["rules"]["rules"]
    assert [(s["name"], s["matched"]) for s in steps] == [
        ("Backups", False),
        ("Printers", True),
        ("Later", False),
    ]
    assert data["rules"]["decision"]["rule"] == "Printers"
    assert main(["-c", str(config), "tickets", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_check_config_names_the_key_path_of_a_bad_rule(tmp_path: Path) -> None:
    """A rule naming an unknown service is a configuration error at rules[0].service."""
    from halomail.config.loader import load_config
    from halomail.errors import ConfigError

    config = tmp_path / "halomail.toml"
    config.write_text(
        '[[rules]]\nname = "B"\ntype = "service_status"\nsequence = 1\nservice = "Nope"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key_path == "rules[0].service"


def test_unknown_services_stay_unknown_without_email_even_on_a_fresh_install(
    repository: TicketRepository, settings: ProcessorSettings, clock: Clock
) -> None:
    """A service never heard from turns Unknown one interval after halomail started watching it."""
    services = services_from_config([{"name": "Payroll export", "check_interval_minutes": 60}])
    processor = MailProcessor(repository, [], settings, services=services, clock=clock)
    assert processor.check_services()[0].status is None
    clock.now += dt.timedelta(minutes=61)
    (check,) = processor.check_services()
    assert (check.status, check.turned_unknown, check.ticket_id) == ("unknown", True, None)
    (entry,) = repository.service_history("Payroll export")
    assert (entry.status, entry.at) == ("unknown", clock.now)
