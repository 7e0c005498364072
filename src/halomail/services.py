"""Monitored services: what a status email says, and when silence means Unknown.

A monitored service is something that reports by email (a nightly backup job, a
replication check, a UPS self-test). A ``service_status`` rule routes its emails here;
:func:`judge` reads each one as OK, FAILED or UNKNOWN, and :func:`is_overdue` tells
when the service has been silent for longer than its checking interval (HaloPSA's
"Status Checking Interval"). This module only decides; the processor writes the
status history (:meth:`~halomail.TicketRepository.record_service_status`) and the
failure tickets, which it finds again by the alert key ``service:<name>``.

How an email is judged, in this order:

1. It meets the **failure** criteria → ``FAILED``. Failure is checked first, so a
   report saying "completed with errors" is a failure even when "completed" is
   also a success phrase.
2. The service has **no success criteria** → ``OK``: any email that is not a
   failure counts as a success.
3. It meets the **success** criteria → ``OK``.
4. Otherwise → ``UNKNOWN``: an email arrived but said neither.

Criteria (:class:`ServiceCriteria`) compare case-insensitively (Unicode case
folding). Within one list, any phrase will do; every list given must hold (a
subject phrase *and* a body phrase, when both are given). Criteria with no lists
never match, so a service without failure criteria never fails by email.

Every key a ``[[services]]`` table may hold (:func:`services_from_config`)::

    [[services]]
    name = "Nightly backup"           # required, unique (case-insensitively)
    check_interval_minutes = 1440     # silent longer → Unknown (> 0, max 366 days; default 1 day)
    success = { subject = "Backup completed", body = ["Result: Success", "0 errors"] }
    failure = { subject = ["failed", "error"] }
    failure_ticket_type = "Incident"  # the type of the ticket it opens; false: record failures only
    subscribers = ["ops@example.com", "+44 7700 900123"]   # told of status changes (email or SMS)
    on_failure = "open"               # open | note | close | nothing (see ServiceAction)
    on_success = "close"              # default "close" (close_on_success = false: "nothing")
    on_unknown = "nothing"            # default "nothing" (unknown_ticket = true: "open")
    priority = "P1"                   # set on the tickets it opens …
    team = "Infrastructure"           # … with this team …
    agent = "amy@helpdesk.example"    # … and this agent (an email address)
    reopen = false                    # true: "open" reopens the service's last ticket when closed

``close_on_success`` and ``unknown_ticket`` are the older spellings of ``on_success``
and ``on_unknown``; a table may give one or the other, not both.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from halomail._validate import as_table, check_keys, describe, join_key
from halomail.errors import ConfigError
from halomail.inbound.models import InboundEmail
from halomail.tickets.models import ServiceStatus, ServiceStatusEntry

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "ServiceAction",
    "ServiceCriteria",
    "ServiceDefinition",
    "ServiceStatus",
    "is_overdue",
    "judge",
    "services_from_config",
]

DEFAULT_CHECK_INTERVAL: Final = dt.timedelta(days=1)
"""How long a service may stay silent before it turns Unknown, unless configured."""

_MAX_INTERVAL_MINUTES: Final = 366 * 24 * 60  # a yearly job still fits; larger is a typo
_SERVICE_KEYS: Final = (
    "name",
    "check_interval_minutes",
    "success",
    "failure",
    "failure_ticket_type",
    "close_on_success",
    "unknown_ticket",
    "subscribers",
    "on_failure",
    "on_success",
    "on_unknown",
    "priority",
    "team",
    "agent",
    "reopen",
)
_CRITERIA_KEYS: Final = ("subject", "body")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]*[0-9]")
_MIN_PHONE_DIGITS: Final = 5


def _phrases(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(values)


def _no_blank_phrase(_: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    # An empty phrase is contained in every text: it would make the criterion a
    # catch-all, which is never what was meant.
    for phrase in value:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(f"{attribute.name}: phrases must be non-blank strings, got {phrase!r}")


@attrs.frozen
class ServiceCriteria:
    """What an email must say to count as a success (or a failure).

    Any phrase of a list will do; every list given must hold. Comparison is
    case-insensitive. Criteria with no phrases at all never match.

    Args:
        subject_contains: Phrases, one of which the subject must contain.
        body_contains: Phrases, one of which the body text (``InboundEmail.text``,
            quoted history included) must contain.

    Raises:
        ValueError: When a phrase is blank.

    .. versionadded:: 0.1.0
    """

    subject_contains: tuple[str, ...] = attrs.field(
        default=(), converter=_phrases, validator=_no_blank_phrase
    )
    body_contains: tuple[str, ...] = attrs.field(
        default=(), converter=_phrases, validator=_no_blank_phrase
    )

    @property
    def defined(self) -> bool:
        """True when there is at least one phrase to look for."""
        return bool(self.subject_contains or self.body_contains)

    def matches(self, email: InboundEmail) -> bool:
        """Whether the email meets these criteria.

        Args:
            email: The parsed email.

        Returns:
            True when every list given has a phrase the email contains; False for
            criteria without phrases.
        """
        if not self.defined:
            return False
        # The body is folded only when a body phrase needs it: reports can be long.
        if self.subject_contains and not _contains_any(email.subject, self.subject_contains):
            return False
        return not self.body_contains or _contains_any(email.text, self.body_contains)


def _contains_any(text: str, phrases: Sequence[str]) -> bool:
    folded = text.casefold()
    return any(phrase.casefold() in folded for phrase in phrases)


class ServiceAction(enum.StrEnum):
    """What a service's status (failure, success, Unknown) does to its ticket.

    The service's ticket is the open one with its alert key ``service:<name>``.

    .. versionadded:: 0.1.0
    """

    OPEN = "open"  # open a ticket, or add the email to the open one as a private note
    NOTE = "note"  # add the email (or the silence) to the open ticket; never open one
    CLOSE = "close"  # add it to the open ticket and close that ticket
    NOTHING = "nothing"  # record the status only


def _positive_interval(_: object, attribute: attrs.Attribute[Any], value: dt.timedelta) -> None:
    if value <= dt.timedelta(0):
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_blank(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be blank")


@attrs.frozen
class ServiceDefinition:
    """A monitored service: how to read its emails and what to do about them.

    Args:
        name: The service's name; ``service_status`` rules name it, and its history
            and failure tickets (alert key ``service:<name>``) are kept under it.
        check_interval: How long the service may stay silent before it turns
            Unknown (HaloPSA's "Status Checking Interval").
        success: What a success email says; with no phrases, every email that is
            not a failure is a success.
        failure: What a failure email says; checked before ``success``.
        failure_ticket_type: The type of the ticket a failure opens (or updates,
            while one is open); ``None`` records the status without a ticket.
        close_on_success: A success closes the open failure ticket.
        unknown_ticket: Turning Unknown opens a ticket too (of
            ``failure_ticket_type``, else ``"Incident"``).
        subscribers: Who is told when the status changes: addresses get the Service
            Status Changed email, phone numbers an SMS (with ``[sms]`` set up).
        on_failure: What a failure does; by default ``open``, or ``nothing`` when
            ``failure_ticket_type`` is ``None``.
        on_success: What a success does; by default ``close``, or ``nothing`` when
            ``close_on_success`` is false.
        on_unknown: What turning Unknown does (an email that says neither, or
            silence past the interval); by default ``nothing``, or ``open`` when
            ``unknown_ticket`` is true.
        priority: The priority of the ticket the service opens.
        team: The team of the ticket the service opens.
        agent: The agent (email address) of the ticket the service opens.
        reopen: ``open`` reopens the service's last ticket when it was closed; by
            default a closed ticket stays closed and ``open`` opens a new one.

    Raises:
        ValueError: When ``name`` is blank or ``check_interval`` is not positive.

    .. versionadded:: 0.1.0
    """

    name: str = attrs.field(validator=_non_blank)
    check_interval: dt.timedelta = attrs.field(
        default=DEFAULT_CHECK_INTERVAL, validator=_positive_interval
    )
    success: ServiceCriteria = attrs.field(factory=ServiceCriteria)
    failure: ServiceCriteria = attrs.field(factory=ServiceCriteria)
    failure_ticket_type: str | None = "Incident"
    close_on_success: bool = True
    unknown_ticket: bool = False
    subscribers: tuple[str, ...] = attrs.field(default=(), converter=_phrases)
    on_failure: ServiceAction = attrs.field(converter=ServiceAction)
    on_success: ServiceAction = attrs.field(converter=ServiceAction)
    on_unknown: ServiceAction = attrs.field(converter=ServiceAction)
    priority: str | None = None
    team: str | None = None
    agent: str | None = None
    reopen: bool = False

    # The older switches decide the defaults, so that a definition written before
    # the actions existed behaves as it always did.
    @on_failure.default
    def _on_failure(self) -> ServiceAction:
        return ServiceAction.OPEN if self.failure_ticket_type else ServiceAction.NOTHING

    @on_success.default
    def _on_success(self) -> ServiceAction:
        return ServiceAction.CLOSE if self.close_on_success else ServiceAction.NOTHING

    @on_unknown.default
    def _on_unknown(self) -> ServiceAction:
        return ServiceAction.OPEN if self.unknown_ticket else ServiceAction.NOTHING

    @property
    def ticket_type(self) -> str:
        """The type of the tickets the service opens (``"Incident"`` unless configured)."""
        return self.failure_ticket_type or "Incident"

    def action_for(self, status: ServiceStatus) -> ServiceAction:
        """What ``status`` does to the service's ticket."""
        if status is ServiceStatus.FAILED:
            return self.on_failure
        if status is ServiceStatus.OK:
            return self.on_success
        return self.on_unknown


def judge(service: ServiceDefinition, email: InboundEmail) -> ServiceStatus:
    """What a status email says about its service.

    Failure criteria first, then success (see the module's docstring for the order).

    Args:
        service: The service the email belongs to.
        email: The parsed email.

    Returns:
        ``FAILED`` when it meets the failure criteria; else ``OK`` when the service
        has no success criteria or the email meets them; else ``UNKNOWN``.
    """
    if service.failure.matches(email):
        return ServiceStatus.FAILED
    if not service.success.defined or service.success.matches(email):
        return ServiceStatus.OK
    return ServiceStatus.UNKNOWN


def is_overdue(
    service: ServiceDefinition,
    last: ServiceStatusEntry | None,
    now: dt.datetime,
    *,
    watching_since: dt.datetime,
) -> bool:
    """Whether a silent service should now turn Unknown.

    The silence is measured from the later of the last status recorded (of any
    kind) and ``watching_since``, so a service gets a whole interval of grace when
    halomail starts watching it, even with history from an earlier watch. It is
    overdue once *more* than ``check_interval`` has passed: an email arriving at
    exactly the interval is on time.

    Args:
        service: The service.
        last: Its newest status entry, or ``None`` when it has no history.
        now: The current time (aware).
        watching_since: When halomail began watching the service (aware).

    Returns:
        True when the silence is longer than the interval and the last status is
        not already ``UNKNOWN`` (a service turns Unknown once, not at every check).

    Raises:
        ValueError: When ``now`` or ``watching_since`` is naive.
    """
    for name, value in (("now", now), ("watching_since", watching_since)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime, got {value.isoformat()}")
    if last is not None and last.status is ServiceStatus.UNKNOWN:
        return False
    since = watching_since if last is None else max(last.at, watching_since)
    return now - since > service.check_interval


# -- configuration ------------------------------------------------------------------


def services_from_config(
    tables: Sequence[Mapping[str, Any]], *, key_path: str = "services"
) -> tuple[ServiceDefinition, ...]:
    """Validate ``[[services]]`` tables from ``halomail.toml`` into definitions.

    The keys are listed in this module's docstring.

    Args:
        tables: The array of tables, as :mod:`tomllib` read it.
        key_path: Where the array is in the file, for error messages.

    Returns:
        One definition per table, in the file's order.

    Raises:
        ConfigError: For the first problem found, with its key path, e.g.
            ``services[1].failure.subject: must not be empty``; an unknown key
            suggests the closest known one.
    """
    services: list[ServiceDefinition] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        kp = f"{key_path}[{index}]"
        service = _parse_service(table, kp)
        folded = service.name.casefold()
        if folded in seen:
            first = f"{key_path}[{seen[folded]}]"
            raise ConfigError(
                join_key(kp, "name"), f"duplicate service name {service.name!r} (also in {first})"
            )
        seen[folded] = index
        services.append(service)
    return tuple(services)


def _parse_service(table: Any, kp: str) -> ServiceDefinition:
    table = as_table(table, kp)
    check_keys(table, kp, _SERVICE_KEYS)
    if "name" not in table:
        raise ConfigError(join_key(kp, "name"), "required (a string)")
    name = _text(table["name"], join_key(kp, "name"))
    ticket_type = _ticket_type(table, kp)
    return ServiceDefinition(
        name=name,
        check_interval=_interval(table, kp),
        success=_criteria(table, "success", kp),
        failure=_criteria(table, "failure", kp),
        failure_ticket_type=ticket_type,
        close_on_success=_bool(table, "close_on_success", kp, default=True),
        unknown_ticket=_bool(table, "unknown_ticket", kp, default=False),
        subscribers=_subscribers(table, kp),
        priority=_optional_text(table, "priority", kp),
        team=_optional_text(table, "team", kp),
        agent=_agent(table, kp),
        reopen=_bool(table, "reopen", kp, default=False),
        **_actions(table, kp, ticket_type),
    )


# Each action key, and the older switch it replaces (a table gives one or the other).
_ACTION_KEYS: Final = (
    ("on_failure", "failure_ticket_type"),
    ("on_success", "close_on_success"),
    ("on_unknown", "unknown_ticket"),
)


def _actions(table: Mapping[str, Any], kp: str, ticket_type: str | None) -> dict[str, Any]:
    """The ``on_*`` actions given; those left out follow the older switches' defaults."""
    actions: dict[str, ServiceAction] = {}
    for key, older in _ACTION_KEYS:
        if key not in table:
            continue
        where = join_key(kp, key)
        value = table[key]
        choices = ", ".join(repr(a.value) for a in ServiceAction)
        if not isinstance(value, str) or value not in {a.value for a in ServiceAction}:
            raise ConfigError(where, f"expected one of {choices}, got {describe(value)}")
        if older in table and older != "failure_ticket_type":
            raise ConfigError(where, f"give {key} or {older}, not both ({key} replaces {older})")
        actions[key] = ServiceAction(value)
    if ticket_type is None and actions.get("on_failure") is ServiceAction.OPEN:
        # `failure_ticket_type = false` says "no ticket for a failure": an action that
        # opens one contradicts it, and which was meant cannot be guessed.
        raise ConfigError(
            join_key(kp, "on_failure"),
            '"open" contradicts failure_ticket_type = false (record failures only)',
        )
    return actions


def _optional_text(table: Mapping[str, Any], key: str, kp: str) -> str | None:
    return _text(table[key], join_key(kp, key)).strip() if key in table else None


def _agent(table: Mapping[str, Any], kp: str) -> str | None:
    agent = _optional_text(table, "agent", kp)
    if agent is not None and not _ADDRESS.fullmatch(agent):
        raise ConfigError(
            join_key(kp, "agent"), f"expected the agent's email address, got {agent!r}"
        )
    return agent.lower() if agent is not None else None


def _interval(table: Mapping[str, Any], kp: str) -> dt.timedelta:
    key = "check_interval_minutes"
    if key not in table:
        return DEFAULT_CHECK_INTERVAL
    value = table[key]
    where = join_key(kp, key)
    # bool is an int in Python; `check_interval_minutes = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a number of minutes, got {describe(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(where, f"expected a positive number of minutes, got {value!r}")
    if value > _MAX_INTERVAL_MINUTES:
        raise ConfigError(
            where, f"expected at most {_MAX_INTERVAL_MINUTES} minutes (366 days), got {value!r}"
        )
    return dt.timedelta(minutes=value)


def _criteria(table: Mapping[str, Any], key: str, kp: str) -> ServiceCriteria:
    if key not in table:
        return ServiceCriteria()
    where = join_key(kp, key)
    criteria = as_table(table[key], where)
    check_keys(criteria, where, _CRITERIA_KEYS)
    if not criteria:
        raise ConfigError(where, "no criteria: give subject and/or body, or leave the table out")
    return ServiceCriteria(
        subject_contains=_phrase_list(criteria, "subject", where, one_line=True),
        body_contains=_phrase_list(criteria, "body", where, one_line=False),
    )


def _phrase_list(table: Mapping[str, Any], key: str, kp: str, *, one_line: bool) -> tuple[str, ...]:
    if key not in table:
        return ()
    value = table[key]
    where = join_key(kp, key)
    if isinstance(value, str):
        return (_phrase(value, where, one_line=one_line),)
    if not isinstance(value, list | tuple):
        raise ConfigError(where, f"expected a string or an array of strings, got {describe(value)}")
    if not value:
        raise ConfigError(where, "must not be empty (leave the key out instead)")
    return tuple(_phrase(item, f"{where}[{n}]", one_line=one_line) for n, item in enumerate(value))


def _phrase(value: Any, where: str, *, one_line: bool) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value)}")
    if not value.strip():
        # "" is contained in every text: the criterion would match every email.
        raise ConfigError(where, "must not be empty (an empty phrase matches every email)")
    if one_line and _CONTROL.search(value):
        # Subjects are decoded to one line without control characters, so such a
        # phrase could never match.
        raise ConfigError(where, "must not contain control characters (a subject is one line)")
    return value


def _ticket_type(table: Mapping[str, Any], kp: str) -> str | None:
    key = "failure_ticket_type"
    if key not in table:
        return "Incident"
    value = table[key]
    where = join_key(kp, key)
    if value is False:
        return None
    if not isinstance(value, str):
        raise ConfigError(
            where, f"expected a ticket type or false (record only), got {describe(value)}"
        )
    if not value.strip():
        raise ConfigError(
            where, "must not be empty (use false to record failures without a ticket)"
        )
    return _text(value, where)


def _subscribers(table: Mapping[str, Any], kp: str) -> tuple[str, ...]:
    key = "subscribers"
    if key not in table:
        return ()
    value = table[key]
    where = join_key(kp, key)
    if not isinstance(value, list | tuple):
        raise ConfigError(
            where, f"expected an array of addresses or phone numbers, got {describe(value)}"
        )
    subscribers: list[str] = []
    for n, item in enumerate(value):
        item_where = f"{where}[{n}]"
        text = _text(item, item_where).strip()
        if not (_ADDRESS.fullmatch(text) or _is_phone(text)):
            raise ConfigError(
                item_where, f"expected an email address or a phone number, got {describe(text)}"
            )
        if text.casefold() in (s.casefold() for s in subscribers):
            raise ConfigError(item_where, f"{text!r} is listed twice")
        subscribers.append(text)
    return tuple(subscribers)


def _is_phone(text: str) -> bool:
    return bool(_PHONE.fullmatch(text)) and sum(c.isdigit() for c in text) >= _MIN_PHONE_DIGITS


# -- value readers (the same messages as halomail.config.loader's) ---------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {describe(value)}")
    if not value.strip():
        raise ConfigError(where, "must not be empty")
    # Names and types end up in subjects, logs and alert keys: no line breaks.
    if _CONTROL.search(value):
        raise ConfigError(where, "must not contain control characters (line breaks, NUL …)")
    return value


def _bool(table: Mapping[str, Any], key: str, kp: str, *, default: bool) -> bool:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise ConfigError(join_key(kp, key), f"expected true or false, got {describe(value)}")
    return value
