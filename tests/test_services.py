"""Monitored services: judging status emails, overdue silence, and ``[[services]]`` config."""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Any

import pytest

from halomail import parse_email
from halomail.errors import ConfigError
from halomail.inbound.models import InboundEmail
from halomail.services import (
    DEFAULT_CHECK_INTERVAL,
    ServiceCriteria,
    ServiceDefinition,
    ServiceStatus,
    is_overdue,
    judge,
    services_from_config,
)
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import NewServiceStatus, ServiceStatusEntry
from halomail.tickets.models import ServiceStatus as ModelServiceStatus

T0 = dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
TICK = dt.timedelta(microseconds=1)


def report(subject: str, body: str, *, html: bool = False) -> InboundEmail:
    """A status email from a backup server, parsed the way the processor parses it."""
    content_type = "text/html" if html else "text/plain"
    raw = (
        "From: Veeam Backup <veeam@backup.example.com>\r\n"
        "To: alerts@helpdesk.example\r\n"
        f"Subject: {subject}\r\n"
        "Date: Wed, 01 May 2024 02:00:00 +0000\r\n"
        "Message-ID: <job-17.2024-05-01@backup.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()
    email = parse_email(raw)
    assert email.quarantine_reason is None
    return email


SUCCESS = report(
    "[Success] Nightly backup (3 machines)",
    "Backup job: Nightly backup\r\n"
    "Result: Success\r\n"
    "Processed: 3 of 3 machines, 412.7 GB read, 38.1 GB transferred\r\n"
    "Duration: 01:12:44\r\n",
)
FAILURE = report(
    "[Failed] Nightly backup (1 of 3 machines failed)",
    "Backup job: Nightly backup\r\n"
    "Result: Failed\r\n"
    "FS01: Error: Failed to create VM snapshot: timeout\r\n"
    "Processed: 2 of 3 machines\r\n",
)
WARNING = report(
    "[Warning] Nightly backup (3 machines)",
    "Backup job: Nightly backup\r\nResult: Warning\r\nFS01: low free space on the repository\r\n",
)
WITH_ERRORS = report(
    "Nightly backup completed",
    "The backup job completed with errors.\r\n2 files were skipped because they were locked.\r\n",
)

VEEAM = ServiceDefinition(
    name="Nightly backup",
    success=ServiceCriteria(subject_contains=("[Success]",), body_contains=("Result: Success",)),
    failure=ServiceCriteria(subject_contains=("[Failed]", "[Error]")),
)


class TestJudge:
    def test_a_success_report_is_ok(self) -> None:
        """A report that meets the success subject and body phrases is OK."""
        assert judge(VEEAM, SUCCESS) is ServiceStatus.OK

    def test_a_failure_report_is_failed(self) -> None:
        """A report whose subject holds one of the failure phrases is FAILED."""
        assert judge(VEEAM, FAILURE) is ServiceStatus.FAILED

    def test_a_report_that_says_neither_is_unknown(self) -> None:
        """A warning report meets neither criteria, so the status is UNKNOWN."""
        assert judge(VEEAM, WARNING) is ServiceStatus.UNKNOWN

    def test_failure_is_checked_before_success(self) -> None:
        """'completed with errors' is a failure although 'completed' is a success phrase."""
        service = ServiceDefinition(
            "File backup",
            success=ServiceCriteria(subject_contains=("completed",)),
            failure=ServiceCriteria(body_contains=("with errors", "failed")),
        )
        assert service.success.matches(WITH_ERRORS)
        assert judge(service, WITH_ERRORS) is ServiceStatus.FAILED

    def test_without_success_criteria_anything_not_failed_is_ok(self) -> None:
        """With failure criteria only, a warning and a success are both OK, a failure FAILED."""
        service = ServiceDefinition(
            "Nightly backup", failure=ServiceCriteria(subject_contains=("[Failed]",))
        )
        assert judge(service, WARNING) is ServiceStatus.OK
        assert judge(service, SUCCESS) is ServiceStatus.OK
        assert judge(service, FAILURE) is ServiceStatus.FAILED

    def test_without_any_criteria_every_email_is_ok(self) -> None:
        """A service with no criteria at all reads every email, a failure report too, as OK."""
        service = ServiceDefinition("Heartbeat")
        assert not service.failure.defined
        assert [judge(service, e) for e in (SUCCESS, FAILURE, WARNING)] == [ServiceStatus.OK] * 3

    def test_phrases_compare_case_insensitively(self) -> None:
        """Phrases match in any case, with Unicode case folding ("STRASSE" finds "Straße")."""
        service = ServiceDefinition(
            "Nightly backup",
            success=ServiceCriteria(
                subject_contains=("[SUCCESS]",), body_contains=("result: success",)
            ),
        )
        assert judge(service, SUCCESS) is ServiceStatus.OK
        folded = report("Sicherung Hauptstraße", "Ergebnis: ERFOLGREICH")
        german = ServiceDefinition(
            "Sicherung",
            success=ServiceCriteria(
                subject_contains=("HAUPTSTRASSE",), body_contains=("erfolgreich",)
            ),
        )
        assert judge(german, folded) is ServiceStatus.OK

    def test_every_list_given_must_hold(self) -> None:
        """A subject phrase that matches is not enough when the body phrase does not."""
        service = ServiceDefinition(
            "Nightly backup",
            success=ServiceCriteria(
                subject_contains=("Nightly backup",), body_contains=("Result: Success",)
            ),
        )
        assert service.success.matches(SUCCESS)
        assert not service.success.matches(WARNING)
        assert judge(service, WARNING) is ServiceStatus.UNKNOWN

    def test_any_phrase_of_a_list_will_do(self) -> None:
        """The second of two subject phrases matching is enough for the criterion."""
        service = ServiceDefinition(
            "Nightly backup", failure=ServiceCriteria(subject_contains=("[Error]", "[Failed]"))
        )
        assert judge(service, FAILURE) is ServiceStatus.FAILED

    def test_the_body_of_an_html_only_report_is_read(self) -> None:
        """A report with only an HTML part is judged on the text read from its HTML."""
        email = report(
            "Windows Server Backup",
            "<html><body><table><tr><td>Status</td><td><b>Failed</b></td></tr>"
            "<tr><td>Error</td><td>The disk is full</td></tr></table></body></html>",
            html=True,
        )
        service = ServiceDefinition(
            "WSB",
            success=ServiceCriteria(body_contains=("completed successfully",)),
            failure=ServiceCriteria(body_contains=("disk is full",)),
        )
        assert "The disk is full" in email.text
        assert judge(service, email) is ServiceStatus.FAILED

    def test_criteria_never_match_when_empty(self) -> None:
        """ServiceCriteria with no phrases match no email."""
        assert not ServiceCriteria().matches(SUCCESS)

    def test_a_blank_phrase_is_refused(self) -> None:
        """A blank phrase would match every email, so making criteria with one raises ValueError."""
        with pytest.raises(ValueError, match="subject_contains"):
            ServiceCriteria(subject_contains=("ok", " "))
        with pytest.raises(ValueError, match="body_contains"):
            ServiceCriteria(body_contains=("",))


class TestOverdue:
    SERVICE = ServiceDefinition("Nightly backup", check_interval=DAY)

    @staticmethod
    def entry(status: str, at: dt.datetime) -> ServiceStatusEntry:
        """A history entry of the service."""
        return ServiceStatusEntry(1, "Nightly backup", status, at)

    def test_without_history_the_interval_runs_from_watching_since(self) -> None:
        """With no status yet, the interval is counted from when watching began."""
        assert not is_overdue(self.SERVICE, None, T0 + DAY - TICK, watching_since=T0)
        assert is_overdue(self.SERVICE, None, T0 + DAY + TICK, watching_since=T0)

    def test_an_email_at_exactly_the_interval_is_on_time(self) -> None:
        """Exactly one interval of silence is not overdue; a microsecond more is."""
        last = self.entry("ok", T0)
        assert not is_overdue(self.SERVICE, last, T0 + DAY, watching_since=T0)
        assert is_overdue(self.SERVICE, last, T0 + DAY + TICK, watching_since=T0)

    def test_the_interval_runs_from_the_last_status_of_any_kind(self) -> None:
        """A failure two days after watching began restarts the interval like a success does."""
        failed = self.entry("failed", T0 + 2 * DAY)
        assert not is_overdue(self.SERVICE, failed, T0 + 3 * DAY, watching_since=T0)
        assert is_overdue(self.SERVICE, failed, T0 + 3 * DAY + TICK, watching_since=T0)

    def test_a_service_already_unknown_is_not_overdue_again(self) -> None:
        """After turning Unknown, the service is never overdue again until an email arrives."""
        unknown = self.entry("unknown", T0)
        assert not is_overdue(self.SERVICE, unknown, T0 + 365 * DAY, watching_since=T0)

    def test_history_from_before_watching_began_gets_a_fresh_interval(self) -> None:
        """A status older than watching_since (a re-added service) is not overdue at once."""
        old = self.entry("ok", T0 - 30 * DAY)
        assert not is_overdue(self.SERVICE, old, T0 + DAY, watching_since=T0)
        assert is_overdue(self.SERVICE, old, T0 + DAY + TICK, watching_since=T0)

    def test_a_clock_behind_the_last_status_is_not_overdue(self) -> None:
        """A check time earlier than the last status (clock skew) never counts as silence."""
        last = self.entry("ok", T0 + DAY)
        assert not is_overdue(self.SERVICE, last, T0, watching_since=T0)

    def test_the_service_interval_is_used(self) -> None:
        """A 15-minute service is overdue after 15 minutes, not after a day."""
        quick = ServiceDefinition("Replication", check_interval=dt.timedelta(minutes=15))
        last = self.entry("ok", T0)
        assert is_overdue(quick, last, T0 + dt.timedelta(minutes=15, seconds=1), watching_since=T0)

    def test_naive_times_are_refused(self) -> None:
        """A naive now or watching_since raises ValueError naming it."""
        naive = dt.datetime(2024, 5, 1, 2, 0)
        with pytest.raises(ValueError, match="now"):
            is_overdue(self.SERVICE, None, naive, watching_since=T0)
        with pytest.raises(ValueError, match="watching_since"):
            is_overdue(self.SERVICE, None, T0, watching_since=naive)

    def test_a_silent_service_turns_unknown_once_with_its_history_recorded(self) -> None:
        """Checks over three silent days record one Unknown; the next report restarts the clock."""
        repository = InMemoryTicketRepository()
        service = VEEAM
        repository.record_service_status(
            NewServiceStatus(service.name, judge(service, SUCCESS), T0, SUCCESS.subject)
        )
        for hours in range(1, 73):
            now = T0 + dt.timedelta(hours=hours)
            if is_overdue(
                service, repository.last_service_status(service.name), now, watching_since=T0
            ):
                repository.record_service_status(
                    NewServiceStatus(service.name, ServiceStatus.UNKNOWN, now, "no email")
                )
        history = list(repository.service_history(service.name))
        assert [(e.status, e.at) for e in history] == [
            (ServiceStatus.UNKNOWN, T0 + dt.timedelta(hours=25)),
            (ServiceStatus.OK, T0),
        ]
        back = T0 + dt.timedelta(hours=80)
        repository.record_service_status(
            NewServiceStatus(service.name, judge(service, FAILURE), back, FAILURE.subject)
        )
        last = repository.last_service_status(service.name)
        assert last is not None
        assert last.status is ServiceStatus.FAILED
        assert not is_overdue(service, last, back + DAY, watching_since=T0)
        assert is_overdue(service, last, back + DAY + TICK, watching_since=T0)


class TestDefinition:
    def test_the_defaults(self) -> None:
        """A definition with only a name checks daily, opens Incidents, closes on success."""
        service = ServiceDefinition("Nightly backup")
        assert service.check_interval == DEFAULT_CHECK_INTERVAL == DAY
        assert (service.failure_ticket_type, service.close_on_success) == ("Incident", True)
        assert (service.unknown_ticket, service.subscribers) == (False, ())
        assert not service.success.defined
        assert not service.failure.defined

    def test_a_blank_name_or_a_non_positive_interval_is_refused(self) -> None:
        """A blank name or an interval of zero raises ValueError."""
        with pytest.raises(ValueError, match="name"):
            ServiceDefinition("  ")
        with pytest.raises(ValueError, match="check_interval"):
            ServiceDefinition("Backup", check_interval=dt.timedelta(0))

    def test_the_status_enum_is_the_repository_one(self) -> None:
        """halomail.services.ServiceStatus is the enum the repository's models hold."""
        assert ServiceStatus is ModelServiceStatus
        assert [s.value for s in ServiceStatus] == ["ok", "failed", "unknown"]


FULL = """
[[services]]
name = "Nightly backup"
check_interval_minutes = 90
success = { subject = "[Success]", body = ["Result: Success", "0 errors"] }
failure = { subject = ["[Failed]", "[Error]"] }
failure_ticket_type = "Backup failure"
close_on_success = false
unknown_ticket = true
subscribers = ["ops@example.com", "+44 7700 900123"]

[[services]]
name = "UPS self-test"
check_interval_minutes = 0.5
failure_ticket_type = false
"""


def load(text: str, **kwargs: Any) -> tuple[ServiceDefinition, ...]:
    """The services of a TOML text, as the config loader passes them."""
    return services_from_config(tomllib.loads(text).get("services", []), **kwargs)


class TestConfig:
    def test_every_key_is_read(self) -> None:
        """A full table becomes the definition it describes, in file order."""
        backup, ups = load(FULL)
        assert backup == ServiceDefinition(
            name="Nightly backup",
            check_interval=dt.timedelta(minutes=90),
            success=ServiceCriteria(("[Success]",), ("Result: Success", "0 errors")),
            failure=ServiceCriteria(("[Failed]", "[Error]")),
            failure_ticket_type="Backup failure",
            close_on_success=False,
            unknown_ticket=True,
            subscribers=("ops@example.com", "+44 7700 900123"),
        )
        assert ups.check_interval == dt.timedelta(seconds=30)
        assert ups.failure_ticket_type is None

    def test_a_table_with_only_a_name_takes_the_defaults(self) -> None:
        """Only a name gives a daily check, no criteria, Incident tickets, close on success."""
        (service,) = load('[[services]]\nname = "Heartbeat"\n')
        assert service == ServiceDefinition("Heartbeat")

    def test_no_services_is_an_empty_tuple(self) -> None:
        """A file without [[services]] gives no definitions."""
        assert load("") == ()

    def test_a_configured_service_judges_real_reports(self) -> None:
        """The definition read from TOML judges the sample success, failure and warning reports."""
        backup, _ = load(FULL)
        assert judge(backup, SUCCESS) is ServiceStatus.OK
        assert judge(backup, FAILURE) is ServiceStatus.FAILED
        assert judge(backup, WARNING) is ServiceStatus.UNKNOWN

    @pytest.mark.parametrize(
        ("toml", "key_path", "message"),
        [
            ("foo = 1", "services[0].foo", "unknown key 'foo'; known keys: name"),
            ("nmae = 'x'", "services[0].nmae", "did you mean 'name'?"),
            ("check_interval = 5", "services[0].check_interval", "'check_interval_minutes'"),
            ("check_interval_minutes = 5", "services[0].name", "required"),
            ("name = 5", "services[0].name", "expected a string, got 5"),
            ("name = ''", "services[0].name", "must not be empty"),
            ('name = "a\\nb"', "services[0].name", "control characters"),
            (
                "name = 'x'\ncheck_interval_minutes = 0",
                "services[0].check_interval_minutes",
                "positive",
            ),
            ("name = 'x'\ncheck_interval_minutes = -5", "services[0].check_interval_minutes", "-5"),
            (
                "name = 'x'\ncheck_interval_minutes = nan",
                "services[0].check_interval_minutes",
                "nan",
            ),
            (
                "name = 'x'\ncheck_interval_minutes = inf",
                "services[0].check_interval_minutes",
                "inf",
            ),
            (
                "name = 'x'\ncheck_interval_minutes = true",
                "services[0].check_interval_minutes",
                "got true",
            ),
            (
                "name = 'x'\ncheck_interval_minutes = '60'",
                "services[0].check_interval_minutes",
                "'60'",
            ),
            (
                "name = 'x'\ncheck_interval_minutes = 600000",
                "services[0].check_interval_minutes",
                "at most",
            ),
            ("name = 'x'\nsuccess = 'ok'", "services[0].success", "expected a table"),
            ("name = 'x'\nsuccess = {}", "services[0].success", "no criteria"),
            (
                "name = 'x'\nsuccess = { subjects = 'ok' }",
                "services[0].success.subjects",
                "did you mean 'subject'?",
            ),
            (
                "name = 'x'\nfailure = { subject = '' }",
                "services[0].failure.subject",
                "must not be empty",
            ),
            (
                "name = 'x'\nfailure = { subject = [] }",
                "services[0].failure.subject",
                "leave the key out",
            ),
            (
                "name = 'x'\nfailure = { subject = ['a', 3] }",
                "services[0].failure.subject[1]",
                "got 3",
            ),
            (
                "name = 'x'\nfailure = { subject = \"a\\tb\" }",
                "services[0].failure.subject",
                "one line",
            ),
            (
                "name = 'x'\nfailure = { body = 7 }",
                "services[0].failure.body",
                "string or an array",
            ),
            (
                "name = 'x'\nfailure = { body = ['ok', ' '] }",
                "services[0].failure.body[1]",
                "every email",
            ),
            (
                "name = 'x'\nfailure_ticket_type = ''",
                "services[0].failure_ticket_type",
                "use false",
            ),
            (
                "name = 'x'\nfailure_ticket_type = true",
                "services[0].failure_ticket_type",
                "or false",
            ),
            (
                "name = 'x'\nclose_on_success = 'yes'",
                "services[0].close_on_success",
                "true or false",
            ),
            ("name = 'x'\nunknown_ticket = 1", "services[0].unknown_ticket", "true or false"),
            ("name = 'x'\nsubscribers = 'ops@example.com'", "services[0].subscribers", "an array"),
            (
                "name = 'x'\nsubscribers = ['ops@example.com', 'ops']",
                "services[0].subscribers[1]",
                "phone",
            ),
            (
                "name = 'x'\nsubscribers = ['ops@example.com', 'OPS@example.com']",
                "services[0].subscribers[1]",
                "twice",
            ),
            ("name = 'x'\nsubscribers = ['+1 (5)']", "services[0].subscribers[0]", "phone number"),
        ],
    )
    def test_errors_name_the_exact_key(self, toml: str, key_path: str, message: str) -> None:
        """Each mistake raises ConfigError at the key that holds it, saying what is wrong."""
        with pytest.raises(ConfigError) as raised:
            load("[[services]]\n" + toml + "\n")
        assert raised.value.key_path == key_path
        assert message in str(raised.value)
        assert str(raised.value).startswith(key_path + ": ")

    def test_errors_in_a_later_table_name_its_index(self) -> None:
        """A mistake in the second service is reported under services[1]."""
        text = FULL.replace("failure_ticket_type = false", "failure = { subjct = 'x' }")
        with pytest.raises(ConfigError, match=r"did you mean 'subject'\?") as raised:
            load(text)
        assert raised.value.key_path == "services[1].failure.subjct"

    def test_a_duplicate_name_is_refused_in_any_case(self) -> None:
        """Two services whose names differ only in case are refused, naming the first."""
        text = '[[services]]\nname = "Backup"\n[[services]]\nname = "BACKUP"\n'
        with pytest.raises(
            ConfigError, match=r"duplicate service name 'BACKUP' \(also in services\[0\]\)"
        ) as raised:
            load(text)
        assert raised.value.key_path == "services[1].name"

    def test_an_entry_that_is_not_a_table_is_refused(self) -> None:
        """An array entry that is not a table is refused at its index."""
        with pytest.raises(ConfigError, match="expected a table") as raised:
            services_from_config([{"name": "ok"}, "Backup"])  # type: ignore[list-item]
        assert raised.value.key_path == "services[1]"

    def test_the_key_path_prefix_is_the_callers(self) -> None:
        """key_path replaces "services" in every error's path."""
        with pytest.raises(ConfigError) as raised:
            load("[[services]]\nname = 'x'\nsuccess = { body = [] }\n", key_path="monitoring")
        assert raised.value.key_path == "monitoring[0].success.body"

    def test_an_odd_key_is_quoted_in_the_path(self) -> None:
        """An unknown key with spaces appears quoted in the key path."""
        with pytest.raises(ConfigError) as raised:
            load('[[services]]\nname = "x"\n"check interval" = 5\n')
        assert raised.value.key_path == 'services[0]."check interval"'
