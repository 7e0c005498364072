"""The composition root: from a :class:`~halomail.Config` to running objects.

:func:`build_processor` turns a configuration into a :class:`~halomail.MailProcessor`:
the repository ``[storage]`` names (or the host's), a connector per mailbox and the
transports, each built through :mod:`halomail.backends.registry`. The ``halomail``
command uses it, and so may a host that keeps its settings in ``halomail.toml``::

    from halomail import build_processor, load_config

    with build_processor(load_config("halomail.toml"), repository=host_repository) as p:
        p.run_once()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from halomail.backends import registry
from halomail.backends.base import MailboxConnector, MailTransport, OutgoingEmail
from halomail.config.loader import Config, MailboxSettings, OutgoingSettings
from halomail.errors import ConfigError
from halomail.outbound.outbox import Backoff, MessageIdFactory, SenderIdentity, compose, header_safe
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.render import MessageKind, TemplateRenderer, TemplateValues
from halomail.tickets.memory import InMemoryTicketRepository
from halomail.tickets.models import OutboxMail, OutboxStatus, RecordKind
from halomail.tickets.repository import TicketRepository
from halomail.tickets.sqlite import SQLiteTicketRepository

__all__ = [
    "build_mailbox",
    "build_processor",
    "check_config",
    "mailbox_transport",
    "open_connector",
    "open_repository",
    "open_transport",
    "repository_factory",
    "send_test_email",
    "sender_identity",
]

log = logging.getLogger(__name__)

_REPOSITORY_KEY = "storage.repository"


def open_repository(config: Config) -> TicketRepository:
    """The repository ``[storage]`` names: the host's factory, PostgreSQL, SQLite, or memory.

    The caller owns it: close it when done (``close()``, when it has one).

    Raises:
        ConfigError: ``storage.repository`` cannot be imported or called, or its factory
            returned nothing; or a PostgreSQL url without the ``postgres`` extra.
        RepositoryError: The database cannot be opened (transient when the server
            cannot be reached for now).
    """
    if config.storage.repository is not None:
        repository = repository_factory(config)(config)
        if repository is None:
            raise ConfigError(_REPOSITORY_KEY, "the factory returned None, not a repository")
        return repository
    if config.storage.is_postgres:
        return _open_postgres(config)
    path = config.storage.sqlite_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteTicketRepository(path)
    return InMemoryTicketRepository()


def _open_postgres(config: Config) -> TicketRepository:
    try:
        # Imported here: psycopg is an extra, and SQLite users never need it.
        from halomail.tickets.postgres import PostgreSQLTicketRepository
    except ImportError as exc:
        raise ConfigError(
            "storage.url",
            f"a postgresql url needs psycopg: pip install 'halomail[postgres]' ({exc})",
        ) from exc
    return PostgreSQLTicketRepository(config.storage.url, password=config.storage.password)


def repository_factory(config: Config) -> Callable[[Config], TicketRepository]:
    """The callable ``[storage] repository = "package.module:factory"`` names, imported.

    Nothing is called: ``check-config`` uses this to find a wrong name without opening
    the host's database.

    Raises:
        ConfigError: No ``repository`` is set, the module cannot be imported, it has no
            such attribute, or the attribute is not callable.
    """
    spec = config.storage.repository
    if spec is None:
        raise ConfigError(_REPOSITORY_KEY, "not set")
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(_REPOSITORY_KEY, f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(_REPOSITORY_KEY, f"module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(_REPOSITORY_KEY, f"{spec!r} is not callable")
    factory: Callable[[Config], TicketRepository] = target
    return factory


def open_transport(
    outgoing: OutgoingSettings, *, key_path: str = "outgoing", token_provider: Any = None
) -> MailTransport:
    """The transport named by ``transport`` in these settings (nothing is connected).

    Args:
        outgoing: ``[outgoing]``, or a mailbox's merged override or own settings.
        key_path: Where the settings are in the file, for errors.
        token_provider: The token provider to send with (a mailbox's own), or ``None``
            to build one from ``outgoing``.

    Raises:
        ConfigError: The settings are incomplete, or the backend's extra is missing.
    """
    backend = registry.transport_backend(outgoing.transport, key_path)
    typed = backend.settings(outgoing.as_table(), key_path)
    return registry.open_transport(typed, token_provider=token_provider)


def mailbox_transport(
    settings: MailboxSettings, outgoing: OutgoingSettings, connector: MailboxConnector
) -> MailTransport | None:
    """The transport of a mailbox that does not send with ``[outgoing]``, else ``None``.

    A mailbox sending with its own sign-in (``send_with = "mailbox"``) shares its
    connector's token provider: one sign-in, one token, reads and sends.
    """
    if settings.outgoing is not None:
        return open_transport(outgoing, key_path=f"{settings.key_path}.outgoing")
    if settings.send_with == "mailbox":
        provider = getattr(connector, "token_provider", None)
        return open_transport(outgoing, key_path=settings.key_path, token_provider=provider)
    return None


def open_connector(config: Config, settings: MailboxSettings) -> MailboxConnector:
    """The connector of one ``[[mailboxes]]`` entry (nothing is connected).

    Raises:
        ConfigError: The settings are incomplete, or the backend's extra is missing.
    """
    backend = registry.mailbox_backend(settings.connection, settings.key_path)
    typed = backend.settings(settings.as_table(), settings.key_path)
    return registry.open_mailbox(typed, max_message_bytes=config.limits.max_message_bytes)


def sender_identity(outgoing: OutgoingSettings) -> SenderIdentity:
    """Who mail sent with these settings is from."""
    return SenderIdentity(
        from_address=outgoing.from_address or "helpdesk@halomail.invalid",
        display_name=outgoing.display_name or "",
        reply_address=outgoing.reply_address,
    )


def build_mailbox(config: Config, settings: MailboxSettings) -> Mailbox:
    """A processor :class:`Mailbox` for one ``[[mailboxes]]`` entry."""
    outgoing = settings.effective_outgoing(config.outgoing)
    with _closed_on_error() as opened:
        connector = open_connector(config, settings)
        opened.append(connector)
        # A mailbox that overrides [outgoing], or sends with its own sign-in, gets a
        # transport of its own; the others share the processor's.
        transport = mailbox_transport(settings, outgoing, connector)
    return Mailbox(
        connector=connector,
        name=settings.name,
        ticket_type=settings.ticket_type,
        record=RecordKind(settings.record),
        send_acknowledgement=settings.send_acknowledgement,
        subject_tag=settings.subject_tag,
        start_from=settings.start_from,
        hijack=settings.hijack,
        sender=sender_identity(outgoing),
        enabled=settings.enabled,
        transport=transport,
        message_group=outgoing.message_group,
        signature=settings.signature,
        agent_signatures=settings.agent_signatures,
        allowed_teams=settings.allowed_teams,
        allowed_departments=settings.allowed_departments,
    )


def build_processor(
    config: Config,
    repository: TicketRepository | None = None,
    *,
    transport: MailTransport | None = None,
) -> MailProcessor:
    """A :class:`~halomail.MailProcessor` for every enabled mailbox of ``config``.

    Every connector and transport is built (nothing connects yet), so a setting that
    only building can check fails here, before any email is read.

    Args:
        config: The configuration (:func:`~halomail.load_config`).
        repository: Where tickets live. ``None`` opens the one ``[storage]`` names
            (``url``, or the host's ``repository`` factory); the processor then owns it
            and :meth:`~halomail.MailProcessor.close` closes it. A repository given here
            stays the caller's to close.
        transport: How mail is sent by default; ``None`` builds the one ``[outgoing]``
            names (none without an ``[outgoing]`` table: mail then waits in the outbox).

    Returns:
        The processor; close it (or use it in a ``with`` block) when done.

    Raises:
        ConfigError: A setting is invalid, a backend's extra is missing, or the storage
            cannot be opened; the error names the key path.

    Example::

        from halomail import build_processor, load_config

        processor = build_processor(load_config("halomail.toml"))
        try:
            report = processor.run_once()
        finally:
            processor.close()
    """
    with _closed_on_error() as opened:
        mailboxes = [build_mailbox(config, m) for m in config.mailboxes if m.enabled]
        for mailbox in mailboxes:
            opened.append(mailbox.connector)
            opened.append(mailbox.transport)
        if transport is None and config.outgoing.explicit_keys:
            # Without an [outgoing] table nothing is configured to send with: mail waits.
            transport = open_transport(config.outgoing)
            opened.append(transport)
        owns_repository = repository is None
        if repository is None:
            repository = open_repository(config)
            opened.append(repository)
        return MailProcessor(
            repository,
            mailboxes,
            _processor_settings(config, repository),
            transport=transport,
            rules=config.rules,
            services=config.services,
            ticket_templates=config.ticket_templates,
            renderer=TemplateRenderer(config.message_groups),
            agents=config.agents,
            teams=config.teams,
            ticket_url=config.processing.ticket_url,
            sms=config.sms,
            owns_repository=owns_repository,
        )


#: Where an instance keeps the loop token it made itself (``[processing]`` sets none).
LOOP_TOKEN_STATE = "halomail:loop-token"  # noqa: S105 - a state key, not a secret


#: How long the lease that guards making the loop token may be held (it is released in
#: the same transaction; the time only matters if a release were lost).
_LOOP_TOKEN_LEASE = dt.timedelta(seconds=60)


def instance_loop_token(repository: TicketRepository) -> str:
    """The instance's own random loop token, made and kept in ``repository`` on first use.

    Used when ``halomail.toml`` sets no ``loop_token``: a secret no one can guess from the
    configuration, the same for every runner that shares the repository. The first one
    makes it, inside a transaction that first takes the lease ``halomail:loop-token``:
    SQLite's write lock already serialises such transactions, but PostgreSQL's READ
    COMMITTED does not, and two workers starting at once would each make a token. There
    the second worker's lease insert waits for the first transaction to end, and then
    reads the token the first one committed.

    .. versionadded:: 0.1.0
    """
    token = repository.get_state(LOOP_TOKEN_STATE)  # a read: no write lock to wait for
    if token is not None:
        return token
    owner = f"loop-token-{secrets.token_hex(8)}"
    with repository.transaction():
        repository.acquire_lease(
            LOOP_TOKEN_STATE, owner, now=dt.datetime.now(dt.UTC), ttl=_LOOP_TOKEN_LEASE
        )
        token = repository.get_state(LOOP_TOKEN_STATE)  # another runner may have been first
        if token is None:
            token = secrets.token_urlsafe(32)
            repository.set_state(LOOP_TOKEN_STATE, token)
            log.info("made a random loop token for this instance (kept in the repository)")
        repository.release_lease(LOOP_TOKEN_STATE, owner)
    return token


def _processor_settings(config: Config, repository: TicketRepository) -> ProcessorSettings:
    processing = config.processing
    loop_token, previous = processing.loop_token, processing.previous_loop_tokens
    if not processing.loop_token_set:
        # The derived token is guessable from the configuration: sign with a random one,
        # and only recognise mail the derived one signed before this version.
        loop_token, previous = instance_loop_token(repository), (loop_token, *previous)
    return ProcessorSettings(
        loop_token=loop_token,
        previous_loop_tokens=previous,
        domain=processing.domain,
        default_sender=sender_identity(config.outgoing),
        limits=config.limits,
        bulk=processing.bulk,
        spam=processing.spam,
        ack_throttle_count=processing.ack_throttle_count,
        ack_throttle_window=dt.timedelta(minutes=processing.ack_throttle_window_minutes),
        ack_daily_count=processing.ack_daily_count,
        loop_repeat_count=processing.loop_repeat_count,
        loop_window=dt.timedelta(hours=processing.loop_window_hours),
        backoff=Backoff(max_attempts=processing.max_send_attempts),
        concurrent_mailboxes=processing.concurrent_mailboxes,
        mailbox_lease=dt.timedelta(seconds=processing.mailbox_lease_seconds),
        outbox_claim=dt.timedelta(seconds=processing.outbox_claim_seconds),
        unmatched_bounces=processing.unmatched_bounces,
        undeliverable_for=dt.timedelta(days=processing.undeliverable_days),
        batch_size=processing.batch_size,
        batch_max_wait=dt.timedelta(milliseconds=processing.batch_max_ms),
        copies=processing.copies,
        ledger_retention=(
            dt.timedelta(days=processing.ledger_retention_days)
            if processing.ledger_retention_days
            else None
        ),
    )


@contextlib.contextmanager
def _closed_on_error() -> Iterator[list[Any]]:
    """Collects what is opened; closes all of it when the block fails half-way."""
    opened: list[Any] = []
    try:
        yield opened
    except BaseException:
        for thing in reversed(opened):
            _close(thing)
        raise


def _close(thing: Any) -> None:
    close = getattr(thing, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - the first error is the one to report
            log.warning("closing %r failed: %s", thing, exc)


def check_config(config: Config) -> None:
    """Build every backend of ``config`` without connecting, then close them.

    What ``halomail check-config`` runs after loading: it refuses everything ``run``
    would refuse when building, such as a login that lacks its password or a backend
    whose extra is missing. The storage repository factory is imported, not called.

    Raises:
        ConfigError: The first setting that would stop ``run``, with its key path.
    """
    built: list[Any] = []
    try:
        for settings in config.mailboxes:
            if settings.enabled:
                mailbox = build_mailbox(config, settings)
                built += [mailbox.connector, mailbox.transport]
        if config.outgoing.explicit_keys:
            built.append(open_transport(config.outgoing))
        if config.storage.repository is not None:
            repository_factory(config)
    finally:
        for thing in built:
            _close(thing)


def send_test_email(config: Config, mailbox_name: str, to: str) -> tuple[OutgoingEmail, str]:
    """Send the Test Email template from ``mailbox_name``'s outgoing settings to ``to``, now.

    Nothing is queued: the mail goes straight through the mailbox's transport (its
    ``[mailboxes.outgoing]``, else ``[outgoing]``) so that the administrator sees at once
    whether sending works.

    Returns:
        The mail as sent, and a description of the route (``smtp to host:port``).

    Raises:
        ConfigError: No such mailbox, the address is not one, or the settings name no
            transport that can send.
        TransportError: The server refused or could not be reached.
    """
    settings = config.mailbox(mailbox_name)
    address = to.strip()
    if not address or "@" not in address or header_safe(address) != address or " " in address:
        raise ConfigError("--to", f"expected one email address, got {to!r}")
    outgoing = settings.effective_outgoing(config.outgoing)
    where = f"{settings.key_path}.outgoing" if settings.outgoing is not None else "outgoing"
    renderer = TemplateRenderer(config.message_groups)
    values = TemplateValues({"mailboxname": settings.name, "useremail": address})
    rendered = renderer.render(MessageKind.TEST_EMAIL, values, group=outgoing.message_group)
    ids = MessageIdFactory(config.processing.loop_token, config.processing.domain)
    mail = OutboxMail(
        id=0,
        message_id=ids.new(None),
        to=(address,),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        status=OutboxStatus.PENDING,
        created_at=dt.datetime.now(dt.UTC),
        mailbox=settings.name,
        kind="test",
        auto_submitted=True,
    )
    outgoing_email = compose(
        mail, sender_identity(outgoing), loop_token=config.processing.loop_token
    )
    transport = open_transport(outgoing, key_path=where)
    try:
        transport.send(outgoing_email)
    finally:
        _close(transport)
    route = outgoing.transport
    if outgoing.host:
        route += f" to {outgoing.host}:{outgoing.port}"
    elif outgoing.path is not None:
        route += f" to {outgoing.path}"
    return outgoing_email, route
