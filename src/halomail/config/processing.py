"""``[storage]``, ``[processing]``, ``[limits]``, ``[sms]``, ``[[agents]]`` and ``[[teams]]``."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from halomail._validate import (
    check_keys,
    join_key,
)
from halomail.config._read import (
    _ADDRESS,
    Context,
    _choice,
    _int,
    _multiline,
    _opt_address,
    _opt_str,
    _positive_number,
    _required_str,
    _secret,
    _str,
    array_of_tables,
    sub_table,
)
from halomail.config.mailboxes import MailboxSettings
from halomail.config.outgoing import OutgoingSettings
from halomail.errors import ConfigError
from halomail.inbound.models import ParseLimits
from halomail.outbound.sms import NUMBER_FORMATS, PIN_PLACEMENTS, SmsSettings
from halomail.pipeline.settings import COPIES, UNMATCHED_BOUNCES
from halomail.templates.render import MessageGroup
from halomail.tickets.staff import Agent, Team

__all__ = ["BULK", "SPAM", "ProcessingSettings", "StorageSettings"]

BULK = ("ticket", "ignore")
#: What mail the spam filter upstream marked may become (``[processing] spam``).
SPAM = ("ticket", "ignore", "quarantine")


_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

_STORAGE_KEYS = ("url", "repository", "password", "password_env")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# package.module:factory, the factory possibly an attribute of a class or object.
_FACTORY = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


_SMS_KEYS = (
    "provider_domain",
    "from_address",
    "password",
    "password_env",
    "pin_placement",
    "display_name",
    "max_length",
    "default_country_code",
    "address_format",
    "ellipsis",
    "number_format",
    "trunk_prefix",
)


_PROCESSING_KEYS = (
    "loop_token",
    "previous_loop_tokens",
    "bulk",
    "spam",
    "ack_throttle_count",
    "ack_throttle_window_minutes",
    "ack_daily_count",
    "loop_repeat_count",
    "loop_window_hours",
    "max_send_attempts",
    "domain",
    "concurrent_mailboxes",
    "ticket_url",
    "mailbox_lease_seconds",
    "outbox_claim_seconds",
    "unmatched_bounces",
    "undeliverable_days",
    "batch_size",
    "batch_max_ms",
    "copies",
    "ledger_retention_days",
)


_LIMITS_KEYS = ("max_message_bytes", "max_depth", "max_parts", "max_header_bytes")


@attrs.frozen
class StorageSettings:
    """Where tickets are kept (``[storage]``).

    Args:
        url: ``sqlite:///relative/or/abs/path.db``, ``memory://``, or a PostgreSQL
            database: ``postgresql://user@host:port/dbname`` (``postgres://`` too; needs
            ``pip install 'halomail[postgres]'``). Shown without its password.
        sqlite_path: The SQLite file, resolved against the configuration file's folder;
            ``None`` for ``memory://``, PostgreSQL and a host's repository. When not
            given it is derived from ``url`` (relative to the working directory).
        repository: ``package.module:factory``: the host's repository, made by calling
            ``factory(config)`` (:func:`halomail.app.open_repository`); ``None`` for
            the repository ``url`` names.
        password: The PostgreSQL password (``password``, or better ``password_env``
            naming an environment variable), when it is not in ``url``; never shown.

    Raises:
        ConfigError: ``url`` has an unsupported scheme.
    """

    url: str = attrs.field(default="sqlite:///halomail.db", repr=lambda url: repr(redact_url(url)))
    sqlite_path: Path | None = attrs.field(
        default=attrs.Factory(lambda self: _sqlite_path(self.url, Path.cwd()), takes_self=True)
    )
    repository: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def is_postgres(self) -> bool:
        """Whether ``url`` names a PostgreSQL database."""
        return self.repository is None and self.url.startswith(_POSTGRES_SCHEMES)

    @property
    def location(self) -> str:
        """Where the tickets are, safe to print: the url without its password, or the
        host's factory."""
        return self.repository or redact_url(self.url)


def redact_url(url: str) -> str:
    """``url`` without the password of its user part or its query (``password=``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an invalid url>"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = [(key, value) for key, value in query if key.lower() != "password"]
    if password is None and len(kept) == len(query):
        return url  # nothing to hide: the url exactly as written
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(kept))
    )


def _sqlite_path(url: str, base_dir: Path) -> Path | None:
    if url == "memory://" or url.startswith(_POSTGRES_SCHEMES):
        return None
    prefix = "sqlite:///"
    if url.startswith(prefix) and len(url) > len(prefix):
        rest = url[len(prefix) :]
        # sqlite:////abs/x.db is absolute (the fourth slash starts the path), as in SQLAlchemy.
        path = Path(rest).expanduser()
        return path if path.is_absolute() else base_dir / path
    raise ConfigError(
        "storage.url",
        # ConfigError masks a password in the url as ***.
        f"unsupported storage url {url!r}; the supported schemes are sqlite "
        "('sqlite:///path/to/file.db'), postgresql ('postgresql://user@host:port/dbname') "
        "and memory ('memory://'); for another database name a factory of your own with "
        "repository = 'package.module:factory'",
    )


@attrs.frozen
class ProcessingSettings:
    """How emails are processed (``[processing]``).

    Args:
        loop_token: Marks our own mail so it is recognised when fetched back; never
            shown. When the file sets none, this is a value derived from the outgoing
            from-address and the storage url, and :func:`halomail.build_processor` uses a
            random token kept in the repository instead (the derived one then only
            recognises mail sent before).
        loop_token_set: True when the file sets ``loop_token``.
        previous_loop_tokens: Tokens used before the last rotation: mail they signed is
            still recognised as ours; never shown.
        bulk: What list and bulk mail becomes: ``ticket`` or ``ignore``.
        spam: What mail the spam filter upstream marked becomes when no rule takes it:
            ``ticket``, ``ignore`` or ``quarantine``; never acknowledged in any case.
        ack_throttle_count: At most this many acknowledgements to one address …
        ack_throttle_window_minutes: … in this many minutes.
        ack_daily_count: At most this many acknowledgements to one address in the loop
            window (the long-window cap).
        loop_repeat_count: At most this many tickets from identical emails (one sender,
            the same subject and body) in the loop window; later copies are ignored as
            ``loop-suspected``.
        loop_window_hours: The loop window, in hours.
        max_send_attempts: Attempts before an outgoing email is given up.
        domain: The right-hand side of our Message-IDs.
        concurrent_mailboxes: At most this many mailboxes are read at once (each holds
            one connection to its server while it is read).
        ticket_url: The address of a ticket in the helpdesk, with ``{id}`` where the
            ticket's number goes (``$ticketurl`` in templates); empty when there is none.
        mailbox_lease_seconds: How long a runner's lease on a mailbox lasts unless renewed.
        outbox_claim_seconds: How long a runner's claim on outgoing mail lasts.
        unmatched_bounces: What a bounce naming none of our mail becomes: ``ignore``
            (logged), ``quarantine``, or ``ticket`` (never acknowledged).
        undeliverable_days: How many days an address our mail failed to reach for good
            (or that reported it as abuse) gets no acknowledgement.
        batch_size: At most this many emails of a mailbox committed in one transaction
            (group commit; 10 by default); each is disposed of only after that commit.
            1 commits each email on its own. At most 1000.
        batch_max_ms: A batch is committed once its first email has waited this many
            milliseconds for the rest (checked as each email arrives, and when the
            mailbox has no more), full or not.
        copies: An email sent to several of our mailboxes: ``skip`` (one ticket, the
            other copies skipped as ``copy``) or ``process`` (each copy processed).
        ledger_retention_days: Forget the ledger's rows (dedupe records, attempts, the
            sent mail the limits count) that are older than this many days and whose
            emails were not fetched again since; 0 (the default) keeps them for ever.
    """

    loop_token: str = attrs.field(repr=False)
    previous_loop_tokens: tuple[str, ...] = attrs.field(default=(), repr=False, kw_only=True)
    loop_token_set: bool = attrs.field(default=True, kw_only=True)
    bulk: str = "ticket"
    spam: str = "ticket"
    ack_throttle_count: int = 10
    ack_throttle_window_minutes: float = 10.0
    ack_daily_count: int = 30
    loop_repeat_count: int = 3
    loop_window_hours: float = 24.0
    max_send_attempts: int = 8
    domain: str = "halomail.invalid"
    concurrent_mailboxes: int = 16
    ticket_url: str = ""
    mailbox_lease_seconds: float = 300.0
    outbox_claim_seconds: float = 300.0
    unmatched_bounces: str = "ignore"
    undeliverable_days: float = 30.0
    batch_size: int = 10
    batch_max_ms: float = 1000.0
    copies: str = "skip"
    ledger_retention_days: int = 0


def parse_storage(table: Mapping[str, Any], ctx: Context) -> StorageSettings:
    """``[storage]``: a ``url`` or a host's ``repository`` factory, not both; a
    PostgreSQL url's ``password`` or ``password_env``."""
    check_keys(table, "storage", _STORAGE_KEYS)
    if "repository" in table:
        if "url" in table:
            raise ConfigError("storage.repository", "give either url or repository, not both")
        _refuse_password(table, "a host's repository")
        factory = _str(table, "repository", "storage", default="")
        if not _FACTORY.fullmatch(factory):
            raise ConfigError(
                "storage.repository",
                f"expected 'package.module:factory', got {factory!r}",
            )
        return StorageSettings(sqlite_path=None, repository=factory)
    url = _str(table, "url", "storage", default="sqlite:///halomail.db")
    sqlite_path = _sqlite_path(url, ctx.base_dir)
    password = None
    if url.startswith(_POSTGRES_SCHEMES):
        if "password" in table or "password_env" in table:
            password, _ = _secret(table, "password", "storage", ctx, lenient=False)
    else:
        _refuse_password(table, "this url")
    return StorageSettings(url=url, sqlite_path=sqlite_path, password=password)


def _refuse_password(table: Mapping[str, Any], what: str) -> None:
    for key in ("password", "password_env"):
        if key in table:
            raise ConfigError(
                f"storage.{key}", f"only a postgresql url takes a password, not {what}"
            )


def parse_processing(
    table: Mapping[str, Any], outgoing: OutgoingSettings, storage: StorageSettings
) -> ProcessingSettings:
    """``[processing]``, with the loop token and domain derived when not given."""
    kp = "processing"
    check_keys(table, kp, _PROCESSING_KEYS)
    from_address = outgoing.from_address or ""
    if "loop_token" in table:
        loop_token = _str(table, "loop_token", kp, default="", secret=True)
    else:
        # Stable across runs and restarts, different between installations, so our own
        # mail is recognised when fetched back without anyone choosing a token.
        where = storage.location
        seed = f"halomail-loop\n{from_address.lower()}\n{where}".encode()
        loop_token = hashlib.sha256(seed).hexdigest()[:32]
    previous = table.get("previous_loop_tokens", [])
    if not isinstance(previous, list) or not all(isinstance(t, str) and t for t in previous):
        # The values are secrets: the message names the key, never the value.
        raise ConfigError(f"{kp}.previous_loop_tokens", "expected an array of non-empty strings")
    derived_domain = from_address.rpartition("@")[2].lower()
    if not _DOMAIN.fullmatch(derived_domain):
        derived_domain = "halomail.invalid"
    domain = _str(table, "domain", kp, default=derived_domain)
    if not _DOMAIN.fullmatch(domain):
        raise ConfigError(
            f"{kp}.domain", f"expected a domain name like 'example.com', got {domain!r}"
        )
    throttle_minutes = _positive_number(table, "ack_throttle_window_minutes", kp, default=10)
    loop_hours = _positive_number(table, "loop_window_hours", kp, default=24)
    return ProcessingSettings(
        loop_token=loop_token,
        previous_loop_tokens=tuple(previous),
        loop_token_set="loop_token" in table,
        bulk=_choice(table, "bulk", kp, BULK, default="ticket"),
        spam=_choice(table, "spam", kp, SPAM, default="ticket"),
        ack_throttle_count=_int(table, "ack_throttle_count", kp, default=10, minimum=1),
        ack_throttle_window_minutes=throttle_minutes,
        ack_daily_count=_int(table, "ack_daily_count", kp, default=30, minimum=1),
        loop_repeat_count=_int(table, "loop_repeat_count", kp, default=3, minimum=1),
        loop_window_hours=loop_hours,
        max_send_attempts=_int(table, "max_send_attempts", kp, default=8, minimum=1),
        domain=domain.lower(),
        concurrent_mailboxes=_int(table, "concurrent_mailboxes", kp, default=16, minimum=1),
        ticket_url=_ticket_url(table, kp),
        mailbox_lease_seconds=_positive_number(table, "mailbox_lease_seconds", kp, default=300),
        outbox_claim_seconds=_positive_number(table, "outbox_claim_seconds", kp, default=300),
        unmatched_bounces=_choice(
            table, "unmatched_bounces", kp, UNMATCHED_BOUNCES, default="ignore"
        ),
        undeliverable_days=_positive_number(table, "undeliverable_days", kp, default=30),
        batch_size=_batch_size(table, kp),
        batch_max_ms=_positive_number(table, "batch_max_ms", kp, default=1000),
        copies=_choice(table, "copies", kp, COPIES, default="skip"),
        ledger_retention_days=_retention_days(
            table, kp, max(1.0, loop_hours / 24, throttle_minutes / 1440)
        ),
    )


def _retention_days(table: Mapping[str, Any], kp: str, longest: float) -> int:
    """``ledger_retention_days``: 0, or at least ``longest`` days, the longest window the
    sending limits and the loop guard count back over."""
    days = _int(table, "ledger_retention_days", kp, default=0, minimum=0)
    if days and days < longest:
        raise ConfigError(
            join_key(kp, "ledger_retention_days"),
            f"must be 0 (keep for ever) or at least {longest:g} days, the longest window the "
            f"sending limits and the loop guard count back over; got {days}",
        )
    return days


MAX_BATCH_SIZE = 1000
"""The largest ``batch_size``: a batch's reads name every email's keys in one statement."""


def _batch_size(table: Mapping[str, Any], kp: str) -> int:
    size = _int(table, "batch_size", kp, default=10, minimum=1)
    if size > MAX_BATCH_SIZE:
        raise ConfigError(
            join_key(kp, "batch_size"), f"must be at most {MAX_BATCH_SIZE}, got {size}"
        )
    return size


def _ticket_url(table: Mapping[str, Any], kp: str) -> str:
    url = _str(table, "ticket_url", kp, default="")
    if url and (not url.startswith(("https://", "http://")) or "{id}" not in url):
        raise ConfigError(
            join_key(kp, "ticket_url"),
            f"expected an http(s) address with {{id}} for the ticket number, got {url!r}",
        )
    return url


def parse_limits(table: Mapping[str, Any]) -> ParseLimits:
    """``[limits]``: the parsing bounds."""
    kp = "limits"
    check_keys(table, kp, _LIMITS_KEYS)
    defaults = ParseLimits()
    return ParseLimits(
        **{
            key: _int(table, key, kp, default=getattr(defaults, key), minimum=1)
            for key in _LIMITS_KEYS
        }
    )


def parse_sms(root: Mapping[str, Any], ctx: Context) -> SmsSettings | None:
    """``[sms]``, or ``None`` when the file has no such table."""
    if "sms" not in root:
        return None
    kp = "sms"
    table = sub_table(root, "sms", "")
    check_keys(table, kp, _SMS_KEYS)
    password: str | None = None
    if "password" in table or "password_env" in table:
        password, _env = _secret(table, "password", kp, ctx, lenient=False)
    from_address = _opt_address(table, "from_address", kp)
    if from_address is None:
        raise ConfigError(join_key(kp, "from_address"), "required (the address the provider knows)")
    if password and "pin_placement" not in table:
        # Refused rather than guessed: a PIN in the wrong place is shown to every
        # recipient (body-prefix) or makes the provider drop every SMS (subject).
        raise ConfigError(
            join_key(kp, "pin_placement"),
            "required with a password (PIN): where does the provider want it? "
            "'subject' or 'body-prefix'",
        )
    try:
        return SmsSettings(
            provider_domain=_required_str(table, "provider_domain", kp),
            from_address=from_address,
            password=password,
            pin_placement=_choice(table, "pin_placement", kp, PIN_PLACEMENTS, default="none"),
            display_name=_str(table, "display_name", kp, default=""),
            max_length=_int(table, "max_length", kp, default=160, minimum=20),
            default_country_code=_str(table, "default_country_code", kp, default=""),
            address_format=_str(table, "address_format", kp, default="{phone}@{domain}"),
            ellipsis=_str(table, "ellipsis", kp, default="…"),
            number_format=_choice(
                table, "number_format", kp, NUMBER_FORMATS, default="international"
            ),
            trunk_prefix=_str(table, "trunk_prefix", kp, default="0"),
        )
    except ValueError as exc:
        raise ConfigError(kp, str(exc)) from exc


def check_message_groups(
    groups: Sequence[MessageGroup],
    outgoing: OutgoingSettings,
    mailboxes: Sequence[MailboxSettings],
    teams: Sequence[Team],
) -> None:
    """Every message group named by [outgoing], a mailbox or a team must exist."""
    known = {"default"} | {group.name.casefold() for group in groups}
    names = ", ".join(["Default", *(group.name for group in groups)])
    wanted: list[tuple[str, str]] = [("outgoing.message_group", outgoing.message_group)]
    for mailbox in mailboxes:
        if mailbox.outgoing is not None:
            where = f"{mailbox.key_path}.outgoing.message_group"
            wanted.append((where, mailbox.effective_outgoing(outgoing).message_group))
    for index, team in enumerate(teams):
        if team.message_group is not None:
            wanted.append((f"teams[{index}].message_group", team.message_group))
    for where, name in wanted:
        if name.casefold() not in known:
            raise ConfigError(where, f"no message group {name!r} (known: {names})")


def parse_agents(root: Mapping[str, Any], teams: Collection[str]) -> tuple[Agent, ...]:
    """``[[agents]]``, each in a known team."""
    agents: list[Agent] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(array_of_tables(root, "agents")):
        kp = f"agents[{index}]"
        check_keys(table, kp, ("name", "email", "team", "department", "signature"))
        email = _required_str(table, "email", kp).strip().lower()
        if not _ADDRESS.fullmatch(email):
            raise ConfigError(join_key(kp, "email"), f"expected an email address, got {email!r}")
        if email in seen:
            raise ConfigError(
                join_key(kp, "email"), f"duplicate agent {email!r} (also agents[{seen[email]}])"
            )
        seen[email] = index
        team = _opt_str(table, "team", kp)
        if team is not None and team.casefold() not in teams:
            known = ", ".join(sorted(teams)) or "none"
            raise ConfigError(join_key(kp, "team"), f"no [[teams]] named {team!r} (known: {known})")
        agents.append(
            Agent(
                name=_str(table, "name", kp, default=email),
                email=email,
                team=team,
                signature=_multiline(table, "signature", kp),
                department=_opt_str(table, "department", kp),
            )
        )
    return tuple(agents)


def parse_teams(root: Mapping[str, Any]) -> tuple[Team, ...]:
    """``[[teams]]``, names unique ignoring case."""
    teams: list[Team] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(array_of_tables(root, "teams")):
        kp = f"teams[{index}]"
        check_keys(table, kp, ("name", "message_group"))
        name = _required_str(table, "name", kp)
        if name.casefold() in seen:
            raise ConfigError(
                join_key(kp, "name"),
                f"duplicate team {name!r} (also teams[{seen[name.casefold()]}])",
            )
        seen[name.casefold()] = index
        teams.append(Team(name, _opt_str(table, "message_group", kp)))
    return tuple(teams)
