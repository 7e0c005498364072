"""Field extraction and every rule type's reading of realistic emails (parsed from bytes)."""

from __future__ import annotations

import datetime as dt
import json
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest

from halomail import parse_email
from halomail.inbound.models import InboundEmail
from halomail.rules import (
    AssetMatch,
    EmailRule,
    Extraction,
    FieldMapping,
    RuleEngine,
    alert_key_from_subject,
    extract,
)


def mail(
    *,
    sender: str,
    subject: str,
    body: str,
    to: str = "support@corp.example",
    cc: str | None = None,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> InboundEmail:
    """Build a realistic email as bytes (CRLF, MIME) and parse it like fetched mail."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = "Fri, 31 May 2024 02:00:00 +0000"
    message["Message-ID"] = "<sample@corp.example>"
    message.set_content(body)
    for filename, content_type, payload in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    email = parse_email(message.as_bytes())
    assert email.quarantine_reason is None
    return email


def mapping(target: str, **kwargs: Any) -> FieldMapping:
    """A field mapping; the match type is inferred from the keys given."""
    if "label" in kwargs:
        kwargs.setdefault("match", "line")
    elif "pattern" in kwargs:
        kwargs.setdefault("match", "regex")
    else:
        kwargs.setdefault("match", "between")
    return FieldMapping(target=target, **kwargs)


def help_request(*fields: FieldMapping, **kwargs: Any) -> EmailRule:
    """A help_request rule with the given field mappings."""
    return EmailRule(name="Help", type="help_request", sequence=1, fields=fields, **kwargs)


TICKET_BODY = """\
Hello,

Priority: high
Site:   Leeds warehouse
Due date: 2024-06-14
Estimate: 3.5
Users affected: 12
Asset: PRN-0042
Reference [REF-7781] please keep it.
Company Name: Acme Ltd
Name: Jane Doe
"""


@pytest.fixture(scope="module")
def ticket_email() -> InboundEmail:
    """A customer request with labelled values in its body."""
    return mail(
        sender="Jane Doe <jane@customer.example>",
        subject="Printer PRN-0042 jams [urgent]",
        body=TICKET_BODY,
    )


class TestMatchTypes:
    """Each match type finds the value a person would read."""

    def test_between_runs_to_the_end_of_the_line_by_default(
        self, ticket_email: InboundEmail
    ) -> None:
        """`between` with no end tag takes the rest of the line, trimmed."""
        rule = help_request(mapping("CF_site", start="site:"))
        assert extract(rule, ticket_email).custom_fields == {"site": "Leeds warehouse"}

    def test_between_with_an_end_tag(self, ticket_email: InboundEmail) -> None:
        """`between` stops at the first end tag after the start tag."""
        rule = help_request(mapping("CF_ref", start="[", end="]"))
        assert extract(rule, ticket_email).custom_fields == {"ref": "REF-7781"}

    def test_between_with_a_newline_end_tag(self, ticket_email: InboundEmail) -> None:
        """An end tag of "\\n" means the end of the line, as TOML users write it."""
        rule = help_request(mapping("CF_asset", start="Asset:", end="\n"))
        assert extract(rule, ticket_email).custom_fields == {"asset": "PRN-0042"}

    def test_between_without_its_end_tag_finds_nothing(self, ticket_email: InboundEmail) -> None:
        """A start tag whose end tag never follows yields no value."""
        rule = help_request(mapping("CF_x", start="Asset:", end="<<END>>"))
        assert extract(rule, ticket_email).custom_fields == {}

    def test_line_prefers_a_line_that_starts_with_the_label(
        self, ticket_email: InboundEmail
    ) -> None:
        """`line` with label "Name:" reads "Jane Doe", not the "Company Name:" line."""
        rule = help_request(mapping("CF_contact", label="Name:"))
        assert extract(rule, ticket_email).custom_fields == {"contact": "Jane Doe"}

    def test_line_falls_back_to_the_label_anywhere(self) -> None:
        """A label in the middle of a line still gives the rest of that line."""
        email = mail(sender="a@b.example", subject="x", body="Device ID: 77, Site: York\n")
        rule = help_request(mapping("CF_site", label="site:"))
        assert extract(rule, email).custom_fields == {"site": "York"}

    def test_regex_group_one_or_whole_match(self, ticket_email: InboundEmail) -> None:
        """A regex gives its first group, or the whole match when it has no group."""
        rule = help_request(
            mapping("CF_ref", pattern=r"\[(REF-\d+)\]"),
            mapping("CF_printer", pattern=r"prn-\d{4}", source="subject"),
        )
        assert extract(rule, ticket_email).custom_fields == {
            "ref": "REF-7781",
            "printer": "PRN-0042",
        }

    def test_regex_is_case_insensitive_and_multiline(self, ticket_email: InboundEmail) -> None:
        """`^` anchors at each line and letter case does not matter."""
        rule = help_request(mapping("CF_due", pattern=r"^DUE DATE:\s*(\S+)$"))
        assert extract(rule, ticket_email).custom_fields == {"due": "2024-06-14"}

    def test_subject_source(self, ticket_email: InboundEmail) -> None:
        """source = subject reads the subject, not the body."""
        rule = help_request(mapping("summary", start="printer", end="jams", source="subject"))
        assert extract(rule, ticket_email).fields == {"summary": "PRN-0042"}

    def test_first_mapping_with_a_value_wins(self, ticket_email: InboundEmail) -> None:
        """Two mappings of one target act as a fallback: the first that finds a value."""
        rule = help_request(
            mapping("priority", label="Urgency:"),
            mapping("priority", label="Priority:"),
            mapping("priority", label="Site:"),
        )
        assert extract(rule, ticket_email).fields == {"priority": "high"}


class TestConversions:
    """Values are trimmed and converted to the mapping's type."""

    @pytest.mark.parametrize(
        ("kind", "text", "expected"),
        [
            ("text", "  a value\t", "a value"),
            ("number", "12", 12),
            ("number", "-7", -7),
            ("number", "3.5", 3.5),
            ("number", "1e3", 1000.0),
            ("date", "2024-06-14", dt.date(2024, 6, 14)),
            ("date", "2024-06-14T09:30:00Z", dt.date(2024, 6, 14)),
            ("date", "14/06/2024", dt.date(2024, 6, 14)),
            ("date", "4/6/2024", dt.date(2024, 6, 4)),
            ("date", "14.06.2024", dt.date(2024, 6, 14)),
        ],
    )
    def test_value_converts(self, kind: str, text: str, expected: object) -> None:
        """Each documented form converts to its Python value and type."""
        email = mail(sender="a@b.example", subject="x", body=f"Value: {text}\n")
        result = extract(help_request(mapping("details", label="Value:", type=kind)), email)
        assert result.fields == {"details": expected}
        assert type(result.fields["details"]) is type(expected)
        assert result.problems == ()

    @pytest.mark.parametrize(
        ("kind", "text", "problem"),
        [
            ("number", "12 GB", "field 'details': '12 GB' is not a number"),
            ("number", "1,200", "field 'details': '1,200' is not a number"),
            ("date", "05/13/2024", "field 'details': '05/13/2024' is not a date"),
            ("date", "2024-02-30", "field 'details': '2024-02-30' is not a date"),
            ("date", "next Tuesday", "field 'details': 'next Tuesday' is not a date"),
        ],
    )
    def test_unconvertible_value_is_missing_with_a_problem(
        self, kind: str, text: str, problem: str
    ) -> None:
        """A value that does not convert is left out and the reason recorded."""
        email = mail(sender="a@b.example", subject="x", body=f"Value: {text}\n")
        result = extract(help_request(mapping("details", label="Value:", type=kind)), email)
        assert result.fields == {}
        assert len(result.problems) == 1
        assert result.problems[0].startswith(problem)

    def test_us_dates_are_not_guessed(self) -> None:
        """Slashes are read day first: 05/12/2024 is 5 December, never 12 May."""
        email = mail(sender="a@b.example", subject="x", body="Value: 05/12/2024\n")
        result = extract(help_request(mapping("details", label="Value:", type="date")), email)
        assert result.fields == {"details": dt.date(2024, 12, 5)}

    def test_choice_takes_the_canonical_spelling(self) -> None:
        """`high` matches the choice "High" case-insensitively and takes its spelling."""
        email = mail(sender="a@b.example", subject="x", body="Priority: high\n")
        rule = help_request(
            mapping("priority", label="Priority:", type="choice", choices=["Low", "High"])
        )
        assert extract(rule, email).fields == {"priority": "High"}

    def test_choice_outside_the_list(self) -> None:
        """A value that is none of the choices is reported with the choices."""
        email = mail(sender="a@b.example", subject="x", body="Priority: urgent\n")
        rule = help_request(
            mapping("priority", label="Priority:", type="choice", choices=["Low", "High"])
        )
        result = extract(rule, email)
        assert result.fields == {}
        assert result.problems == ("field 'priority': 'urgent' is not one of 'Low', 'High'",)

    def test_custom_fields_are_strings(self, ticket_email: InboundEmail) -> None:
        """Converted custom field values are kept as text: numbers by str, dates in ISO."""
        rule = help_request(
            mapping("CF_users", label="Users affected:", type="number"),
            mapping("CF_estimate", label="Estimate:", type="number"),
            mapping("CF_due", label="Due date:", type="date"),
        )
        assert extract(rule, ticket_email).custom_fields == {
            "users": "12",
            "estimate": "3.5",
            "due": "2024-06-14",
        }

    def test_empty_value_is_missing_without_a_problem(self) -> None:
        """A label followed by nothing is simply not found."""
        email = mail(sender="a@b.example", subject="x", body="Priority:   \nNext: 1\n")
        result = extract(help_request(mapping("priority", label="Priority:")), email)
        assert result.fields == {}
        assert result.problems == ()

    def test_required_missing_and_unconvertible_are_listed(self) -> None:
        """Required mappings without a usable value are named in missing_required."""
        email = mail(sender="a@b.example", subject="x", body="Users: many\n")
        rule = help_request(
            mapping("CF_users", label="Users:", type="number", required=True),
            mapping("CF_host", label="Host:", required=True),
            mapping("CF_site", label="Site:"),
        )
        result = extract(rule, email)
        assert result.missing_required == ("CF_users", "CF_host")
        assert result.problems == ("field 'CF_users': 'many' is not a number",)


class TestAsset:
    """An asset tag is read between the rule's asset tags."""

    def test_asset_tag_to_end_of_line(self, ticket_email: InboundEmail) -> None:
        """`[rules.asset] start = "Asset:"` reads the tag to the end of the line."""
        rule = help_request(asset=AssetMatch(start="asset:"))
        assert extract(rule, ticket_email).asset_tag == "PRN-0042"

    def test_no_asset_tag(self) -> None:
        """An email without the start tag has no asset tag."""
        email = mail(sender="a@b.example", subject="x", body="No tag here\n")
        assert extract(help_request(asset=AssetMatch(start="Asset:")), email).asset_tag is None


# -- realistic emails, one rule type at a time -------------------------------------------

VEEAM_SUCCESS = """\
Backup job: Nightly file servers
Success
3 of 3 VMs processed

Start time:     30/05/2024 22:00:04
End time:       31/05/2024 00:14:11
Total size:     1.2 TB
Backup size:    380 GB
Dedupe:         3.1x

VM name   Status    Start time  End time  Size    Read    Transferred  Duration
fs01      Success   22:00:31    23:41:02  600 GB  580 GB  190 GB       1:40:31
fs02      Success   22:00:33    23:58:40  500 GB  490 GB  160 GB       1:58:07
dc01      Success   22:00:35    22:31:12  100 GB  96 GB   30 GB        0:30:37

Veeam Backup & Replication 12.1.2.172
"""

VEEAM_FAILURE = """\
Backup job: Nightly file servers
Failed
1 of 3 VMs processed

Error: Insufficient free disk space on repository NAS02 (12 GB free, 380 GB required)

VM name   Status    Details
fs01      Failed    Processing fs01 Error: Insufficient free disk space
fs02      Success
dc01      Success

Veeam Backup & Replication 12.1.2.172
"""


class TestBackupReports:
    """Veeam-style job reports go to the service_status rule; failures can raise tickets."""

    @pytest.fixture
    def engine(self) -> RuleEngine:
        """Failures ticketed first (with the job and error read out), then the heartbeat."""
        return RuleEngine(
            [
                EmailRule(
                    name="Backup failures",
                    type="help_request",
                    sequence=10,
                    from_="veeam@backup.corp.example",
                    from_exact=True,
                    subject=["[failed]", "[warning]"],
                    ticket_type="Backup",
                    fields=[
                        mapping("summary", start="Backup job:"),
                        mapping("details", label="Error:", required=True),
                        mapping("CF_repository", pattern=r"repository (\w+)"),
                    ],
                ),
                EmailRule(
                    name="Backups",
                    type="service_status",
                    sequence=20,
                    from_="veeam@backup.corp.example",
                    from_exact=True,
                    service="Nightly backup",
                ),
            ]
        )

    def test_success_report_is_a_service_heartbeat(self, engine: RuleEngine) -> None:
        """ "[Success] Nightly file servers" from Veeam matches the service_status rule."""
        email = mail(
            sender="Veeam Backup & Replication <veeam@backup.corp.example>",
            subject="[Success] Nightly file servers (3 VMs)",
            body=VEEAM_SUCCESS,
        )
        match = engine.evaluate(email, "Support")
        assert match is not None
        assert match.rule.name == "Backups"
        assert match.rule.service == "Nightly backup"
        assert match.extraction == Extraction()

    def test_failure_report_raises_a_ticket_with_the_error(self, engine: RuleEngine) -> None:
        """ "[Failed] …" matches the help_request rule with the job, error and repository."""
        email = mail(
            sender="Veeam Backup & Replication <veeam@backup.corp.example>",
            subject="[Failed] Nightly file servers (1 of 3 VMs failed)",
            body=VEEAM_FAILURE,
        )
        match = engine.evaluate(email, "Support")
        assert match is not None
        assert match.rule.name == "Backup failures"
        assert match.extraction.fields == {
            "summary": "Nightly file servers",
            "details": "Insufficient free disk space on repository NAS02 "
            "(12 GB free, 380 GB required)",
        }
        assert match.extraction.custom_fields == {"repository": "NAS02"}

    def test_warning_without_an_error_line_falls_through_to_the_heartbeat(
        self, engine: RuleEngine
    ) -> None:
        """A [Warning] report without the required Error: line is recorded as status."""
        email = mail(
            sender="veeam@backup.corp.example",
            subject="[Warning] Nightly file servers (3 VMs)",
            body=VEEAM_SUCCESS.replace("Success\n3 of 3", "Warning\n3 of 3"),
        )
        match = engine.evaluate(email, "Support")
        assert match is not None
        assert match.rule.name == "Backups"
        explanation = engine.explain(email, "Support")
        assert explanation.steps[0].reason == "required field 'details' not found"

    def test_acronis_style_report_from_another_sender_matches_neither(
        self, engine: RuleEngine
    ) -> None:
        """An Acronis report from another address is not taken by the Veeam rules."""
        email = mail(
            sender="Acronis Cyber Protect <noreply@acronis.corp.example>",
            subject="Backup failed: 'SRV-DC01' - Daily plan",
            body="Plan: Daily plan\nResource: SRV-DC01\nStatus: Failed\n",
        )
        assert engine.evaluate(email, "Support") is None


NAGIOS_PROBLEM = """\
***** Nagios *****

Notification Type: PROBLEM

Service: HTTP
Host: web01
Address: 10.0.4.21
State: CRITICAL

Date/Time: Fri May 31 02:13:07 UTC 2024

Additional Info:

connect to address 10.0.4.21 and port 80: Connection refused
"""


class TestMonitoringAlerts:
    """A Nagios PROBLEM opens an alert; its RECOVERY carries the same key and closes it."""

    @pytest.fixture
    def rule(self) -> EmailRule:
        """The monitoring alert rule of docs/rules.md, with the host read out."""
        return EmailRule(
            name="Monitoring",
            type="alert",
            sequence=10,
            from_="nagios@",
            ticket_type="Alert",
            closure_string="RECOVERY",
            fields=[
                mapping("CF_host", label="Host:", required=True),
                mapping("CF_state", label="State:", type="choice", choices=["OK", "CRITICAL"]),
            ],
        )

    def test_problem_opens_with_a_key(self, rule: EmailRule) -> None:
        """The PROBLEM email is not closing and gets the key of its service."""
        email = mail(
            sender="Nagios <nagios@mon.corp.example>",
            subject="** PROBLEM Service Alert: web01/HTTP is CRITICAL **",
            body=NAGIOS_PROBLEM,
        )
        result = extract(rule, email)
        assert result.closing is False
        assert result.alert_key == "service alert: web01/http"
        assert result.custom_fields == {"host": "web01", "state": "CRITICAL"}

    def test_recovery_closes_the_same_key(self, rule: EmailRule) -> None:
        """The RECOVERY email is closing and has the PROBLEM's key."""
        email = mail(
            sender="Nagios <nagios@mon.corp.example>",
            subject="** RECOVERY Service Alert: web01/HTTP is OK **",
            body=NAGIOS_PROBLEM.replace("PROBLEM", "RECOVERY").replace("CRITICAL", "OK"),
        )
        result = extract(rule, email)
        assert result.closing is True
        assert result.alert_key == "service alert: web01/http"
        assert result.custom_fields == {"host": "web01", "state": "OK"}

    def test_zabbix_problem_and_resolved(self) -> None:
        """Zabbix's "Problem:" and "Resolved in 5m 0s:" subjects share one key."""
        rule = EmailRule(
            name="Zabbix", type="alert", sequence=1, from_="zabbix@", closure_string="Resolved"
        )
        problem = mail(
            sender="zabbix@mon.corp.example",
            subject="Problem: High CPU utilization on db01",
            body="Problem started at 02:10:00 on 2024.05.31\nProblem name: High CPU\n",
        )
        resolved = mail(
            sender="zabbix@mon.corp.example",
            subject="Resolved in 5m 0s: High CPU utilization on db01",
            body="Problem has been resolved at 02:15:00 on 2024.05.31\n",
        )
        first, second = extract(rule, problem), extract(rule, resolved)
        assert first.alert_key == second.alert_key == "high cpu utilization on db01"
        assert (first.closing, second.closing) == (False, True)

    def test_mapped_alert_key_wins(self) -> None:
        """An alert_key mapping replaces the subject-based key, normalized."""
        rule = EmailRule(
            name="PRTG",
            type="alert",
            sequence=1,
            fields=[mapping("alert_key", label="Sensor ID:")],
        )
        email = mail(sender="prtg@x.example", subject="Down", body="Sensor ID:  Ping   4021\n")
        assert extract(rule, email).alert_key == "ping 4021"

    def test_off_alert_carries_the_key_of_the_alert_it_clears(self) -> None:
        """An "alert cleared" email gets the same mapped key as the alert it clears."""
        key = mapping("alert_key", start="Alert ID:")
        alert = EmailRule(name="SAN", type="alert", sequence=1, subject="alert", fields=[key])
        cleared = EmailRule(
            name="SAN cleared",
            type="off_alert",
            sequence=0,
            subject="cleared",
            alert_rule="SAN",
            fields=[key],
        )
        raised = mail(
            sender="san@storage.example",
            subject="SAN alert: volume vol7 latency",
            body="Alert ID: 88123\nSeverity: major\n",
        )
        gone = mail(
            sender="san@storage.example",
            subject="SAN alert cleared: volume vol7 latency",
            body="Alert ID: 88123\nCleared at 03:01\n",
        )
        engine = RuleEngine([alert, cleared])
        first, second = engine.evaluate(raised, "Alerts"), engine.evaluate(gone, "Alerts")
        assert first is not None
        assert second is not None
        assert (first.rule.name, second.rule.name) == ("SAN", "SAN cleared")
        assert first.extraction.alert_key == second.extraction.alert_key == "88123"

    @pytest.mark.parametrize(
        ("subject", "closure", "key"),
        [
            ("PROBLEM: web01 HTTP is CRITICAL", None, "web01 http"),
            ("RECOVERY: web01 HTTP is OK", "RECOVERY", "web01 http"),
            ("Re: Fwd: [PROBLEM] Disk   full on  db1", None, "disk full on db1"),
            ("** PROBLEM Host Alert: web01 is DOWN **", None, "host alert: web01"),
            ("[RESOLVED] Backup Exec job 12", "RESOLVED", "backup exec job 12"),
            ("OK - Ping web02", None, "ping web02"),
            ("Okta sign-in failures", None, "okta sign-in failures"),
            ("Problems with the printer", None, "problems with the printer"),
            ("RECOVERY", "RECOVERY", None),
        ],
    )
    def test_default_alert_key(self, subject: str, closure: str | None, key: str | None) -> None:
        """The default key drops reply and state markers but keeps real words."""
        assert alert_key_from_subject(subject, closure) == key


DEFENDER_ALERT = """\
Microsoft Defender for Endpoint has detected a threat.

Threat detected on PC-0042, severity: High
Threat name: Trojan:Win32/Wacatac.B!ml
File: C:\\Users\\amy\\Downloads\\invoice_0529.exe
Action taken: Quarantined
Detected by: Antivirus
User: CORP\\amy
"""


class TestAntivirus:
    """Antivirus detections name the asset and map the severity word to a priority."""

    @pytest.fixture
    def rule(self) -> EmailRule:
        """The virus rule of docs/rules.md."""
        return EmailRule(
            name="Defender",
            type="virus",
            sequence=15,
            from_="defender@",
            ticket_type="Security",
            severity={"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"},
            asset=AssetMatch(start="detected on", end=","),
            fields=[mapping("CF_threat", label="Threat name:")],
        )

    def test_defender_detection(self, rule: EmailRule) -> None:
        """ "Threat detected on PC-0042, severity: High" → asset PC-0042, high → P2."""
        email = mail(
            sender="Microsoft Defender <defender@security.microsoft.example>",
            subject="Informational alert: Threat detected on PC-0042",
            body=DEFENDER_ALERT,
        )
        result = extract(rule, email)
        assert result.asset_tag == "PC-0042"
        assert (result.severity, result.priority) == ("high", "P2")
        assert result.custom_fields == {"threat": "Trojan:Win32/Wacatac.B!ml"}

    def test_sophos_detection_in_the_subject(self, rule: EmailRule) -> None:
        """The severity word may be in the subject; the map's order decides ties."""
        rule = EmailRule(
            name="Sophos",
            type="virus",
            sequence=1,
            severity={"critical": "P1", "medium": "P3", "low": "P4"},
            asset=AssetMatch(start="Device:"),
        )
        email = mail(
            sender="do-not-reply@central.sophos.example",
            subject="[Medium] Malware detected: 'EICAR-AV-Test'",
            body="Event: Malware detected\nDevice: LAPTOP-17\nLow disk space warning cleared\n",
        )
        result = extract(rule, email)
        assert (result.severity, result.priority, result.asset_tag) == ("medium", "P3", "LAPTOP-17")

    def test_severity_words_are_whole_words(self, rule: EmailRule) -> None:
        """ "highlighted" does not read as severity "high"."""
        email = mail(
            sender="defender@x.example",
            subject="Threat detected on PC-7",
            body="Threat detected on PC-7, see the highlighted file.\n",
        )
        result = extract(rule, email)
        assert (result.severity, result.priority) == (None, None)
        assert result.asset_tag == "PC-7"


class TestInventory:
    """Auto-inventory reports: key: value lines, or a JSON or XML attachment."""

    @pytest.fixture
    def rule(self) -> EmailRule:
        """An inventory rule reading the asset tag from the body."""
        return EmailRule(
            name="Inventory",
            type="inventory",
            sequence=5,
            subject="inventory",
            asset=AssetMatch(start="Asset Tag:"),
        )

    def test_key_value_lines(self, rule: EmailRule) -> None:
        """Each "Key: value" line becomes a normalized key with its value."""
        email = mail(
            sender="agent@pc-0042.corp.example",
            subject="Inventory report PC-0042",
            body="Hostname: PC-0042\nAsset Tag: PC-0042\nSerial Number: 5CG1234XYZ\n"
            "OS: Windows 11 Pro 23H2\nIP Address: 10.0.8.42\nRAM (GB): 16\n",
        )
        result = extract(rule, email)
        assert result.inventory == {
            "hostname": "PC-0042",
            "asset_tag": "PC-0042",
            "serial_number": "5CG1234XYZ",
            "os": "Windows 11 Pro 23H2",
            "ip_address": "10.0.8.42",
            "ram_gb": "16",
        }
        assert result.asset_tag == "PC-0042"

    def test_json_attachment(self, rule: EmailRule) -> None:
        """A flat JSON object attachment is read; nested values are skipped and reported."""
        report = {
            "Hostname": "SRV-DB01",
            "asset_tag": "SRV-DB01",
            "cores": 16,
            "virtual": False,
            "disks": [{"size": 512}],
            "notes": None,
        }
        email = mail(
            sender="agent@srv-db01.corp.example",
            subject="Inventory SRV-DB01",
            body="Inventory report attached.\n",
            attachments=(("inventory.json", "application/json", json.dumps(report).encode()),),
        )
        result = extract(rule, email)
        assert result.inventory == {
            "hostname": "SRV-DB01",
            "asset_tag": "SRV-DB01",
            "cores": "16",
            "virtual": "false",
        }
        assert result.problems == ("inventory: nested values skipped in inventory.json: disks",)

    def test_xml_attachment(self, rule: EmailRule) -> None:
        """Child elements of an XML root give their text."""
        xml = (
            b'<?xml version="1.0" encoding="utf-8"?>\n<asset><hostname>NAS02</hostname>'
            b"<serial> QN-77 </serial><disks><disk>8TB</disk></disks></asset>"
        )
        email = mail(
            sender="nas02@corp.example",
            subject="Inventory NAS02",
            body="See attachment.\n",
            attachments=(("nas02.xml", "application/xml", xml),),
        )
        result = extract(rule, email)
        assert result.inventory == {"hostname": "NAS02", "serial": "QN-77"}
        assert result.problems == ("inventory: nested values skipped in nas02.xml: disks",)

    def test_xml_with_a_dtd_is_refused(self, rule: EmailRule) -> None:
        """An entity-expansion bomb is never expanded: a DTD means the file is not read."""
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">'
            b'<!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;&x;&x;">]><a><b>&y;</b></a>'
        )
        email = mail(
            sender="x@corp.example",
            subject="Inventory",
            body="Hostname: FALLBACK\n",
            attachments=(("bomb.xml", "text/xml", bomb),),
        )
        result = extract(rule, email)
        assert result.inventory == {"hostname": "FALLBACK"}
        assert result.problems == ("inventory: bomb.xml declares a DTD and was not read",)

    def test_broken_and_compressed_attachments_fall_back_to_the_body(self, rule: EmailRule) -> None:
        """Invalid JSON is reported; a zip is never opened; the body lines are used."""
        email = mail(
            sender="x@corp.example",
            subject="Inventory",
            body="Hostname: PC-9\n",
            attachments=(
                ("report.zip", "application/zip", b"PK\x03\x04" + b"\0" * 40),
                ("report.json", "application/json", b"{not json"),
                ("deep.json", "application/json", b"[" * 100_000),
            ),
        )
        result = extract(rule, email)
        assert result.inventory == {"hostname": "PC-9"}
        assert result.problems == (
            "inventory: report.json is not valid JSON",
            "inventory: deep.json is not valid JSON",
        )


WEB_FORM = """\
A new submission of the form "Contact IT" was received.

Name: Jane Doe
Email: jane.doe@customer.example
Phone: +44 20 7946 0000
Department: Finance
Issue: The invoice portal rejects my password after the reset.

Submitted from 203.0.113.7 at 2024-05-31 09:12
"""


class TestFormattedEmail:
    """Web-form emails: every Label: value line, and declared labels mapped to fields."""

    def test_web_form(self) -> None:
        """The form's lines are all read; the declared ones land in ticket fields."""
        rule = EmailRule(
            name="Website contact form",
            type="formatted_email",
            sequence=50,
            from_="forms@corp.example",
            from_exact=True,
            fields=[
                mapping("user_email", label="Email:"),
                mapping("summary", label="Issue:"),
                mapping("CF_phone", label="Phone:"),
                mapping("team", label="Department:", type="choice", choices=["Finance", "HR"]),
            ],
        )
        email = mail(
            sender="Website <forms@corp.example>",
            subject="New submission: Contact IT",
            body=WEB_FORM,
        )
        engine = RuleEngine([rule])
        match = engine.evaluate(email, "Support")
        assert match is not None
        assert match.extraction.formatted == {
            "Name": "Jane Doe",
            "Email": "jane.doe@customer.example",
            "Phone": "+44 20 7946 0000",
            "Department": "Finance",
            "Issue": "The invoice portal rejects my password after the reset.",
        }
        assert match.extraction.fields == {
            "user_email": "jane.doe@customer.example",
            "summary": "The invoice portal rejects my password after the reset.",
            "team": "Finance",
        }
        assert match.extraction.custom_fields == {"phone": "+44 20 7946 0000"}


class TestFileTransfer:
    """File-transfer emails: matched by attachment name, the asset read from the body."""

    def test_file_transfer_with_attachments(self) -> None:
        """A scanner's email with two PDFs matches by attachment and names its asset."""
        rule = EmailRule(
            name="Scans",
            type="file_transfer",
            sequence=60,
            attachment=".pdf",
            send_acknowledgement=False,
            asset=AssetMatch(start="Device:", end="("),
        )
        email = mail(
            sender="scanner@mfp-3f.corp.example",
            subject="Scanned documents",
            body="Device: MFP-3F (3rd floor)\nPages: 4\n",
            attachments=(
                ("scan_0001.PDF", "application/pdf", b"%PDF-1.7\n1"),
                ("scan_0002.pdf", "application/pdf", b"%PDF-1.7\n2"),
            ),
        )
        match = RuleEngine([rule]).evaluate(email, "Scans")
        assert match is not None
        assert match.rule.send_acknowledgement is False
        assert match.extraction.asset_tag == "MFP-3F"
        assert [a.filename for a in email.attachments] == ["scan_0001.PDF", "scan_0002.pdf"]


class TestOtherTypes:
    """ignore, apply_template and help_request carry what the processor needs."""

    def test_help_request_with_asset_fields_and_visibility(
        self, ticket_email: InboundEmail
    ) -> None:
        """A private help_request reads its fields and the asset tag."""
        rule = EmailRule(
            name="Printers",
            type="help_request",
            sequence=30,
            subject="printer",
            ticket_type="Printer Fault",
            public=False,
            asset=AssetMatch(start="Asset:", field="tag"),
            fields=[
                mapping("priority", label="Priority:", type="choice", choices=["Low", "High"]),
                mapping("CF_due", label="Due date:", type="date"),
            ],
        )
        match = RuleEngine([rule]).evaluate(ticket_email, "Support")
        assert match is not None
        assert match.rule.public is False
        assert match.rule.ticket_type == "Printer Fault"
        assert match.extraction.fields == {"priority": "High"}
        assert match.extraction.custom_fields == {"due": "2024-06-14"}
        assert match.extraction.asset_tag == "PRN-0042"

    def test_apply_template_and_ignore_read_nothing(self, ticket_email: InboundEmail) -> None:
        """Rules whose effect is fixed extract nothing from the email."""
        for rule in (
            EmailRule(name="T", type="apply_template", sequence=1, template="Printer fault"),
            EmailRule(name="I", type="ignore", sequence=1),
            EmailRule(name="S", type="service_status", sequence=1, service="Nightly backup"),
        ):
            assert extract(rule, ticket_email) == Extraction()

    def test_as_dict_is_json_ready(self, ticket_email: InboundEmail) -> None:
        """Extraction.as_dict() serializes dates as ISO strings."""
        rule = help_request(mapping("details", label="Due date:", type="date"))
        data = extract(rule, ticket_email).as_dict()
        assert data["fields"] == {"details": "2024-06-14"}
        assert json.loads(json.dumps(data)) == data
