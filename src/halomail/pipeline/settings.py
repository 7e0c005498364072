"""The settings the pipeline reads: each mailbox's, and those shared by every mailbox.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import attrs

from halomail.backends.base import MailboxConnector, MailTransport
from halomail.inbound.models import ParseLimits
from halomail.outbound.notifier import MailboxProfile
from halomail.outbound.outbox import Backoff, SenderIdentity
from halomail.tickets.models import RecordKind

__all__ = [
    "COPIES",
    "DEFAULT_MAILBOX_LEASE",
    "SPAM_OUTCOMES",
    "UNMATCHED_BOUNCES",
    "Mailbox",
    "ProcessorSettings",
]

#: What spam may become (``[processing] spam``): a ticket, nothing, or a quarantine entry.
SPAM_OUTCOMES = ("ticket", "ignore", "quarantine")
#: What a bounce naming none of our mail may become (``unmatched_bounces``).
UNMATCHED_BOUNCES = ("ignore", "quarantine", "ticket")
#: What becomes of the copy of an email another mailbox handled (``copies``): skipped,
#: or processed in each mailbox it reached.
COPIES = ("skip", "process")


@attrs.frozen
class Mailbox:
    """A mailbox the processor reads, with its per-mailbox settings.

    Args:
        connector: How to read it.
        name: Its name (defaults to the connector's).
        ticket_type: The type of the tickets it creates.
        record: Whether it creates tickets or opportunities.
        send_acknowledgement: Whether new tickets are acknowledged by email.
        subject_tag: The threading tag's opening, closed by ``]`` (``[ID:`` → ``[ID:123]``).
        start_from: ``"all"``, or ``"now"`` to leave alone the mail already there when
            the mailbox is first read (safe onboarding of a busy mailbox).
        hijack: What a follow-up from an address unrelated to the ticket becomes:
            ``"new-ticket"`` or ``"quarantine"``.
        sender: Who acknowledgements from this mailbox are from.
        enabled: Disabled mailboxes are not read.
        transport: How this mailbox's mail is sent, when it overrides the processor's
            transport (``[mailboxes.outgoing]``).
        message_group: The message group its mail is rendered from.
        signature: The signature of mail sent from it (``$signature``).
        agent_signatures: Per agent (by email), a signature replacing theirs and the
            mailbox's on mail from this mailbox.
        allowed_teams: Only agents of these teams may send from it (empty: anyone).
        allowed_departments: Agents of these departments may send from it too.
    """

    connector: MailboxConnector
    name: str = ""
    ticket_type: str = "Incident"
    record: RecordKind = RecordKind.TICKET
    send_acknowledgement: bool = True
    subject_tag: str = "[ID:"
    start_from: str = "all"
    hijack: str = "new-ticket"
    sender: SenderIdentity | None = None
    enabled: bool = True
    transport: MailTransport | None = None
    message_group: str = "Default"
    signature: str = ""
    agent_signatures: Mapping[str, str] = attrs.field(factory=dict)
    allowed_teams: tuple[str, ...] = ()
    allowed_departments: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", getattr(self.connector, "name", "") or "mailbox")
        if self.start_from not in ("all", "now"):
            raise ValueError(f"start_from must be 'all' or 'now', not {self.start_from!r}")
        if self.hijack not in ("new-ticket", "quarantine"):
            raise ValueError(f"hijack must be 'new-ticket' or 'quarantine', not {self.hijack!r}")

    @property
    def tag_pattern(self) -> re.Pattern[str]:
        """Matches this mailbox's tag in a subject: ``[ID:123]`` and the bare ``[ID 123]``."""
        return _tag_pattern(self.subject_tag)

    def tag(self, ticket_id: int) -> str:
        """The tag for ``ticket_id``, e.g. ``[ID:123]``."""
        return f"{self.subject_tag}{ticket_id}]"

    @property
    def profile(self) -> MailboxProfile:
        """What this mailbox's outgoing mail looks like, for the :class:`Notifier`."""
        return MailboxProfile(
            name=self.name,
            message_group=self.message_group,
            signature=self.signature,
            agent_signatures={k.lower(): v for k, v in self.agent_signatures.items()},
            allowed_teams=self.allowed_teams,
            allowed_departments=self.allowed_departments,
            subject_tag=self.subject_tag,
        )


def _tag_pattern(subject_tag: str) -> re.Pattern[str]:
    opening = subject_tag.rstrip(":#- ")
    return re.compile(re.escape(opening) + r"(?:[:#-]\s*|\s+)(\d{1,12})\s*\]", re.IGNORECASE)


#: How long a mailbox lease lasts unless renewed, by default.
DEFAULT_MAILBOX_LEASE = dt.timedelta(minutes=5)


_ONE_DAY = dt.timedelta(days=1)


@attrs.frozen
class ProcessorSettings:
    """Settings that apply to every mailbox.

    Args:
        loop_token: Marks our own mail (loop header and Message-ID signature).
        previous_loop_tokens: Tokens used before a rotation; mail they marked is ours too.
        domain: The domain of our Message-IDs.
        default_sender: Who acknowledgements are from when a mailbox names nobody.
        limits: Parsing limits (design §4).
        bulk: What list or bulk mail becomes: ``"ticket"`` or ``"ignore"``.
        spam: What mail the spam filter upstream marked becomes, when no rule takes it:
            ``"ticket"`` (the default), ``"ignore"`` or ``"quarantine"``. It is never
            acknowledged, whatever this says.
        ack_throttle_count: At most this many acknowledgements …
        ack_throttle_window: … to one address (and per ticket) in this window.
        ack_daily_count: At most this many acknowledgements to one address in
            ``loop_window`` (the long-window cap: the throttle bounds the rate, this the
            total).
        loop_repeat_count: At most this many tickets from identical emails (one sender,
            the same subject and body) in ``loop_window``; the next copies are ignored
            as ``loop-suspected``.
        loop_window: The long window of ``ack_daily_count`` and ``loop_repeat_count``.
        backoff: The outbox's retry strategy.
        mailbox_backoff: How long a mailbox that keeps failing is left alone before the
            next attempt (its ``max_attempts`` is not used: a mailbox is never given up).
        concurrent_mailboxes: At most this many mailboxes are read at once, each in its
            own thread with its own connection, while the writes go one at a time (a
            repository that declares ``thread_safe = True`` is entered concurrently).
            Waiting on a server costs no CPU, so the default is high enough that 50
            mailboxes behind 20 ms of latency take under 3x the slowest one alone
            (``benchmarks/bench_mailboxes.py``: 1.9x at 16, 5.4x at 4).
        mailbox_lease: How long a runner's lease on a mailbox lasts unless renewed (it is
            renewed at a third of that as each email arrives and before each batch is
            committed). A runner that dies holding it frees the mailbox after this long;
            shorter means a quicker takeover, and it must outlast a third of the longest
            wait for one email plus the processing of one batch.
        outbox_claim: How long a runner's claim on a batch of outgoing mail lasts; it
            must outlast sending one batch, or another runner may send the same mail.
        unmatched_bounces: What a bounce naming none of our mail becomes (often
            backscatter): ``"ignore"`` (the default), ``"quarantine"``, or ``"ticket"``
            (a new ticket, never acknowledged).
        undeliverable_for: How long an address whose mail failed for good (or that
            complained of abuse) gets no acknowledgement.
        batch_size: At most this many emails of one mailbox are committed in one
            transaction (:mod:`halomail.pipeline.batch`; 10 by default); each is disposed
            of in its mailbox only after that commit. 1 commits every email on its own.
        batch_max_wait: A batch is committed once its first email has waited this long
            for the rest (checked as each email arrives, and at the mailbox's end).
        copies: What becomes of an email sent to several of our mailboxes (support@ and
            sales@ in one To): ``"skip"`` (the default) makes one ticket, or one update,
            of the copy handled first, and skips the others as ``copy``; ``"process"``
            processes the copy in each mailbox, as if they were different emails.
        ledger_retention: With a repository that implements
            :class:`~halomail.tickets.repository.LedgerRetention`, the ledger's rows
            older than this are forgotten, once a day (:meth:`MailProcessor.purge_ledger`):
            dedupe records whose emails were neither handled nor fetched again within
            it (a mailbox with ``processed = "keep"`` keeps its own), attempts, and the
            sent mail that the sending limits count. ``None`` (the default) keeps every
            row. It must be at least a day, ``loop_window`` and ``ack_throttle_window``.

    .. versionchanged:: 0.3.0
       ``copies``: an email sent to several mailboxes makes one ticket.
       ``ledger_retention``: the ledger stops growing.
    """

    loop_token: str = attrs.field(repr=False)
    previous_loop_tokens: tuple[str, ...] = attrs.field(default=(), repr=False, kw_only=True)
    domain: str = "halomail.invalid"
    default_sender: SenderIdentity = attrs.field(
        factory=lambda: SenderIdentity("helpdesk@halomail.invalid", "Helpdesk")
    )
    limits: ParseLimits = attrs.field(factory=ParseLimits)
    bulk: str = "ticket"
    spam: str = attrs.field(default="ticket", validator=attrs.validators.in_(SPAM_OUTCOMES))
    ack_throttle_count: int = 10
    ack_throttle_window: dt.timedelta = dt.timedelta(minutes=10)
    ack_daily_count: int = attrs.field(default=30, validator=attrs.validators.ge(1))
    loop_repeat_count: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    loop_window: dt.timedelta = dt.timedelta(hours=24)
    backoff: Backoff = attrs.field(factory=Backoff)
    mailbox_backoff: Backoff = attrs.field(
        factory=lambda: Backoff(base_seconds=30.0, cap_seconds=900.0)
    )
    concurrent_mailboxes: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    mailbox_lease: dt.timedelta = attrs.field(
        default=DEFAULT_MAILBOX_LEASE, validator=attrs.validators.gt(dt.timedelta(0))
    )
    outbox_claim: dt.timedelta = attrs.field(
        default=dt.timedelta(minutes=5), validator=attrs.validators.gt(dt.timedelta(0))
    )
    unmatched_bounces: str = attrs.field(
        default="ignore", validator=attrs.validators.in_(UNMATCHED_BOUNCES)
    )
    undeliverable_for: dt.timedelta = attrs.field(
        default=dt.timedelta(days=30), validator=attrs.validators.gt(dt.timedelta(0))
    )
    batch_size: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    batch_max_wait: dt.timedelta = attrs.field(
        default=dt.timedelta(seconds=1), validator=attrs.validators.gt(dt.timedelta(0))
    )
    copies: str = attrs.field(default="skip", validator=attrs.validators.in_(COPIES))
    ledger_retention: dt.timedelta | None = attrs.field(default=None)

    @ledger_retention.validator
    def _check_retention(self, _: attrs.Attribute[object], value: dt.timedelta | None) -> None:
        # The sending limits and the loop guard count rows back over these windows.
        if value is not None and value < max(_ONE_DAY, self.loop_window, self.ack_throttle_window):
            raise ValueError(
                "ledger_retention must be at least a day, loop_window and "
                f"ack_throttle_window; got {value}"
            )
