"""Outgoing mail: our Message-IDs, composing the MIME message, and sending the outbox.

The processor writes outgoing mail to the repository's outbox inside the same
transaction as the ticket it belongs to. :class:`Outbox` sends it afterwards: it
composes the MIME message only then (composing is costly and has no place on the
ingest path), hands it to a :class:`~halomail.backends.base.MailTransport`, and
records the result. A transient failure is retried with backoff under the same
Message-ID; a permanent one is recorded on the ticket. A refused login or a TLS failure
(:class:`~halomail.errors.TransportConfigError`) is the configuration's, not the mail's:
the pass stops using that transport, the mail stays pending, and the transport is not
tried again before a backoff ends (:class:`TransportHalts`).

A send that may have been delivered (:class:`~halomail.errors.AmbiguousSendError`: a
timeout or a 5xx after the request reached the service) is recorded as *maybe sent*
(:data:`~halomail.tickets.models.MAYBE_SENT`). Before sending it again, a transport that
can look among its sent mail (:class:`~halomail.backends.base.SentLookup`) is asked
whether it is there; so is it before sending mail whose last send began and was never
recorded (the process died in between: see :class:`SendIntents`). A server's requested
wait (``retry_after``) postpones the mail, and every mail of that transport, at least
that long (at most :data:`MAX_SERVER_WAIT`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import random
import secrets
import socket
import uuid
from collections.abc import Callable
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr

import attrs

from halomail._text import clean_text
from halomail.backends.base import MailTransport, OutgoingEmail, SentLookup
from halomail.errors import (
    AmbiguousSendError,
    PermanentTransportError,
    TransientTransportError,
    TransportConfigError,
    TransportError,
)
from halomail.inbound.classify import loop_signature
from halomail.tickets.models import (
    MAYBE_SENT,
    ActionKind,
    NewAction,
    OutboxMail,
    OutboxStatus,
    utcnow,
)
from halomail.tickets.repository import TicketRepository

__all__ = [
    "CLAIM_BATCH",
    "DEFAULT_CLAIM_LEASE",
    "HALTS_STATE",
    "LOOP_HEADER",
    "MAX_SERVER_WAIT",
    "Backoff",
    "MessageIdFactory",
    "Outbox",
    "SendIntents",
    "SendReport",
    "SenderIdentity",
    "TransportHalts",
    "compose",
    "header_safe",
    "server_wait",
]

log = logging.getLogger(__name__)

#: The header that marks mail we sent, so that we recognise it if it comes back.
LOOP_HEADER = "X-Halomail-Loop"


def header_safe(value: str, *, limit: int = 900) -> str:
    """Make ``value`` safe for a header: one line, no control characters, bounded.

    The stdlib on Python 3.11 folds a value holding CR/LF into a new header
    (CVE-2024-6923), so every value we put in a header goes through here first.
    Line breaks become spaces; escape sequences, other control characters and bidi
    controls (a customer's ``\u202egpj.exe`` echoed in our Subject) are removed.
    """
    return clean_text(value).strip()[:limit]


@attrs.frozen
class SenderIdentity:
    """Who our mail is from.

    Args:
        from_address: The From addr-spec (also the envelope sender).
        display_name: The From display name.
        reply_address: A Reply-To address, when replies should go elsewhere.
    """

    from_address: str
    display_name: str = ""
    reply_address: str | None = None


@attrs.frozen
class MessageIdFactory:
    """Makes our Message-IDs and recognises them when they come back.

    An id looks like ``halomail.42.1f2e3d4c5b6a7988.9a8b7c6d5e4f@example.com``: the
    ticket, a random part, and an HMAC of both keyed by the loop token (never the
    token itself), so a forged id that merely looks like ours is not mistaken for ours.

    Args:
        loop_token: The instance's token (``[processing] loop_token``); new ids are
            signed with it.
        domain: The right-hand side of our ids.
        previous_tokens: Tokens used before a rotation (``[processing]
            previous_loop_tokens``): ids they signed are still recognised, so our
            mail sent before the rotation is still ours when it comes back.
    """

    loop_token: str = attrs.field(repr=False)
    domain: str = "halomail.invalid"
    previous_tokens: tuple[str, ...] = attrs.field(default=(), repr=False)

    @staticmethod
    def _sign(token: str, local: str) -> str:
        return hmac.new(token.encode(), local.encode(), hashlib.sha256).hexdigest()[:12]

    def new(self, ticket_id: int | None) -> str:
        """A fresh Message-ID (without angle brackets) for mail about ``ticket_id``."""
        local = f"halomail.{ticket_id or 0}.{secrets.token_hex(8)}"
        return f"{local}.{self._sign(self.loop_token, local)}@{self.domain}"

    def is_ours(self, message_id: str) -> bool:
        """True when ``message_id`` was made with our token or a previous one (any domain)."""
        local, _, _domain = message_id.partition("@")
        head, _, signature = local.rpartition(".")
        if not head.startswith("halomail.") or len(signature) != 12:
            return False
        tokens = (self.loop_token, *self.previous_tokens)
        return any(hmac.compare_digest(signature, self._sign(t, head)) for t in tokens if t)


def compose(
    mail: OutboxMail, sender: SenderIdentity, *, loop_token: str, now: dt.datetime | None = None
) -> OutgoingEmail:
    """Compose ``mail`` as a MIME message ready for a transport.

    The body is plain text, or ``multipart/alternative`` with an HTML part when the
    mail has one. Every header value is made single-line first (:func:`header_safe`);
    non-ASCII values are RFC 2047-encoded. Automatic replies carry ``Auto-Submitted:
    auto-replied`` (RFC 3834) and ``X-Auto-Response-Suppress: All`` so that
    well-behaved autoresponders do not answer them, and every mail carries our
    loop header: :func:`~halomail.inbound.classify.loop_signature` of the token and
    the mail's Message-ID, never the token itself.
    """
    # Quoted-printable keeps the text readable in the raw message, unlike base64. The
    # legacy email.mime classes are used on purpose: measured, they compose 2.5x faster
    # than EmailMessage with policy.default.
    charset = Charset("utf-8")
    charset.body_encoding = QP
    text = MIMEText(mail.text, "plain", charset)  # type: ignore[arg-type]
    body: Message
    if mail.html is None:
        body = text
    else:
        body = MIMEMultipart("alternative")
        body.attach(text)
        body.attach(MIMEText(mail.html, "html", charset))  # type: ignore[arg-type]

    def put(name: str, value: str) -> None:
        value = header_safe(value)
        body[name] = Header(value, "utf-8").encode() if not value.isascii() else value

    display = header_safe(sender.display_name)
    from_address = header_safe(sender.from_address)
    body["From"] = formataddr((str(Header(display, "utf-8")) if display else "", from_address))
    body["To"] = ", ".join(header_safe(address) for address in mail.to)
    put("Subject", mail.subject)
    body["Date"] = format_datetime(now or utcnow())
    body["Message-ID"] = f"<{header_safe(mail.message_id)}>"
    if sender.reply_address:
        body["Reply-To"] = header_safe(sender.reply_address)
    if mail.in_reply_to:
        body["In-Reply-To"] = f"<{header_safe(mail.in_reply_to)}>"
    if mail.references:
        body["References"] = " ".join(f"<{header_safe(ref)}>" for ref in mail.references[-20:])
    if mail.auto_submitted:
        body["Auto-Submitted"] = "auto-replied"
        body["X-Auto-Response-Suppress"] = "All"
    body[LOOP_HEADER] = loop_signature(loop_token, mail.message_id)
    data = body.as_bytes(policy=compat32.clone(linesep="\r\n"))
    return OutgoingEmail(
        message_id=mail.message_id,
        envelope_from=from_address,
        recipients=tuple(header_safe(address) for address in mail.to),
        data=data,
    )


MAX_SERVER_WAIT = dt.timedelta(hours=1)
"""The longest wait a server may impose (Graph ``Retry-After``, EWS
``BackOffMilliseconds``): a longer one, by mistake or malice, is cut to this."""


def server_wait(seconds: float | None) -> dt.timedelta | None:
    """The wait a server asked for, bounded by :data:`MAX_SERVER_WAIT`.

    ``None`` when it asked nothing usable (no value, zero, negative, not a number).
    """
    try:
        wait = float(seconds) if seconds is not None else math.nan
    except (TypeError, ValueError):
        return None  # a backend passed something odd: as if the server asked nothing
    if not math.isfinite(wait) or wait <= 0:
        return None
    return min(MAX_SERVER_WAIT, dt.timedelta(seconds=wait))


@attrs.frozen
class Backoff:
    """When to try a failed send again: exponential, capped, with jitter.

    Args:
        base_seconds: The first delay.
        cap_seconds: The longest delay.
        max_attempts: Attempts after which a transient failure counts as permanent.
    """

    base_seconds: float = 60.0
    cap_seconds: float = 3600.0
    max_attempts: int = 8

    def delay(self, attempt: int) -> dt.timedelta:
        """The delay after the ``attempt``-th failed attempt (1-based)."""
        seconds = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        # Jitter spreads retries of many mails that failed together (a server outage).
        return dt.timedelta(seconds=seconds * random.uniform(0.8, 1.2))


@attrs.frozen
class SendReport:
    """What one pass over the outbox did.

    Args:
        sent: Mail sent.
        retrying: Mail left pending for a later attempt (a transient failure, or a
            transport stopped by a configuration error).
        failed: Mail given up for good.
        halted: One line per transport whose login or TLS failed in this pass
            (:class:`~halomail.errors.TransportConfigError`): nothing more was sent
            through it, and it is not tried again before the time the line names.
        maybe_sent: Of the mail left pending, how much may have been delivered (an
            ambiguous answer, or a failed look among the sent mail): recorded as
            *maybe sent*, looked for before it is sent again.
        throttled: One line per transport whose server asked us to wait (a
            ``retry_after``): nothing more is sent through it before the time the line
            names. Not a failure: the run stays ok.
    """

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    halted: tuple[str, ...] = ()
    maybe_sent: int = 0
    throttled: tuple[str, ...] = ()


HALTS_STATE = "outbox-halts"
"""The repository state key of the transports stopped by a configuration error: JSON,
``{transport: [consecutive halts, ISO time of the next try]}``."""

DEFAULT_CLAIM_LEASE = dt.timedelta(minutes=5)
"""How long a claim on outgoing mail holds before another runner may take it over."""

CLAIM_BATCH = 50
"""How many mails :meth:`Outbox.send_due` claims at a time."""


def _claim_owner() -> str:
    """A name unique to one Outbox: host, process, and a random part for this object."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outbox:
    """Sends the repository's pending outgoing mail through a transport.

    Each pass claims the due mail first (:meth:`~halomail.TicketRepository.claim_outgoing`)
    under a name unique to this object, sends it, and marks it; so two runners on one
    repository, or a host sending while the daemon runs, send each email once. A claim
    left by a runner that died is taken over once its lease runs out.

    Args:
        repository: Where the outbox rows live.
        transport: How mail leaves: one transport, or a function giving each mail's
            (``None`` leaves that mail queued, untouched).
        sender_for: The identity to send a row's mail as (per mailbox, per customer).
        loop_token: Our loop header's value.
        backoff: The retry strategy.
        clock: The current time (replaceable in tests).
        lease: How long a claim holds; longer than one pass takes to send.
        owner: The name to claim mail under; by default one unique to this object
            (host, process id, random part). Pass the same name to the outboxes
            one runner makes, never to two runners.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        repository: TicketRepository,
        transport: MailTransport | Callable[[OutboxMail], MailTransport | None],
        sender_for: Callable[[OutboxMail], SenderIdentity],
        *,
        loop_token: str,
        backoff: Backoff | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        lease: dt.timedelta = DEFAULT_CLAIM_LEASE,
        owner: str | None = None,
    ) -> None:
        self._repository = repository
        self._transport_for: Callable[[OutboxMail], MailTransport | None] = (
            transport if not isinstance(transport, MailTransport) else lambda _mail: transport
        )
        self._sender_for = sender_for
        self._loop_token = loop_token
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._lease = lease
        self._owner = owner or _claim_owner()
        self._halts = TransportHalts(repository, self._backoff, clock)
        self._intents = SendIntents(repository, clock)
        self._halted_now: list[str] = []
        self._throttled_now: list[str] = []
        self._maybe_sent_now = 0

    @property
    def owner(self) -> str:
        """The name this outbox claims mail under."""
        return self._owner

    def send_due(self, *, limit: int = 1000) -> SendReport:
        """Claim the pending mail that is due, send it, and mark it; return what happened.

        Mail is claimed :data:`CLAIM_BATCH` at a time, so a claim's lease has to outlast
        the sending of one batch, not of the whole queue. Mail whose transport is
        ``None`` stays claimed by this outbox until the lease runs out (this outbox
        claims it again on its next pass).

        Args:
            limit: The most mail one pass handles.
        """
        results: collections.Counter[OutboxStatus] = collections.Counter()
        seen: set[int] = set()
        # Seen mail still pending (left waiting, or to retry): it comes back in the claim.
        waiting = 0
        self._halted_now = self._halts.begin_pass()
        self._throttled_now = list(self._halts.throttled)
        self._maybe_sent_now = 0
        with contextlib.ExitStack() as sessions:
            opened: set[int] = set()
            while len(seen) < limit:
                fresh = self._claim_fresh(seen, min(CLAIM_BATCH, limit - len(seen)), waiting)
                if not fresh:
                    break
                for mail in fresh:
                    seen.add(mail.id)
                    transport = self._transport_for(mail)
                    if transport is None:
                        waiting += 1  # this mailbox sends nothing here (yet); the mail waits
                        continue
                    name = _transport_name(transport)
                    if self._halts.stopped(name):
                        # Its login or TLS failed: no more logins until the backoff ends.
                        # The mail waits, claimed, as mail with no transport does.
                        waiting += 1
                        continue
                    if id(transport) not in opened and isinstance(
                        transport, contextlib.AbstractContextManager
                    ):
                        # A transport that can keep its connection open (SMTP) does so
                        # for the whole pass instead of reconnecting for every mail.
                        sessions.enter_context(transport)
                        opened.add(id(transport))
                    status = self._send_one(mail, transport, name)
                    if status is OutboxStatus.PENDING:
                        waiting += 1
                    results[status] += 1
        return SendReport(
            sent=results[OutboxStatus.SENT],
            retrying=results[OutboxStatus.PENDING],
            failed=results[OutboxStatus.FAILED],
            halted=tuple(self._halted_now),
            maybe_sent=self._maybe_sent_now,
            throttled=tuple(self._throttled_now),
        )

    def _claim_fresh(self, seen: set[int], batch: int, waiting: int) -> list[OutboxMail]:
        """Claim up to ``batch`` due mails this pass has not handled yet.

        The ``waiting`` mails this pass saw and left pending (no transport, a retry)
        may come back in the claim, still ours; asking for that many more keeps them
        from crowding out the mail behind them. Asking for more than that would claim
        mail this pass may never reach (it stops at its limit), left claimed in its
        name, out of other senders' reach, until the lease runs out.
        """
        claimed = self._repository.claim_outgoing(
            self._clock(), owner=self._owner, lease=self._lease, limit=waiting + batch
        )
        return [mail for mail in claimed if mail.id not in seen][:batch]

    def _send_one(self, mail: OutboxMail, transport: MailTransport, name: str) -> OutboxStatus:
        lookup = transport if isinstance(transport, SentLookup) else None
        if lookup is not None and (mail.maybe_sent or self._intents.began(mail)):
            # The last send may have been delivered: look before sending it twice.
            found = self._look(mail, lookup, name)
            if found is None:
                return OutboxStatus.PENDING
            if found:
                return self._mark_sent(mail, name, found=True)
        try:
            outgoing = compose(mail, self._sender_for(mail), loop_token=self._loop_token)
        except Exception as exc:  # noqa: BLE001 - a mail we cannot compose must not stop the others
            self._fail(mail, f"could not compose: {type(exc).__name__}: {exc}")
            return OutboxStatus.FAILED
        if lookup is not None:
            # Written before the send, so a process that dies before recording the
            # outcome leaves the next claimant a reason to look first.
            self._intents.begin(mail)
        try:
            transport.send(outgoing)
        except TransportConfigError as exc:
            # Our login or TLS, not this mail: stop using the transport, keep the mail.
            self._halt(mail, name, exc)
            return OutboxStatus.PENDING
        except AmbiguousSendError as exc:
            # It may have been delivered: never plain pending, so no blind re-send.
            return self._retry(mail, name, exc, maybe_sent=True)
        except TransientTransportError as exc:
            # A 4xx or a refused connection: the server asked us to come back later.
            return self._retry(mail, name, exc, maybe_sent=False)
        except PermanentTransportError as exc:
            self._fail(mail, str(exc))
            return OutboxStatus.FAILED
        return self._mark_sent(mail, name, found=False)

    def _look(self, mail: OutboxMail, lookup: SentLookup, name: str) -> bool | None:
        """Whether ``mail`` is among the transport's sent mail; ``None`` when the lookup
        failed (the mail is then left maybe sent, to look again later, never sent)."""
        try:
            found = lookup.was_sent(mail.message_id)
        except TransportError as exc:
            error = TransientTransportError(
                f"looking among the sent mail failed: {exc}",
                retry_after=getattr(exc, "retry_after", None),
            )
            self._retry(mail, name, error, maybe_sent=True)
            return None
        if found:
            log.info(
                "outbox %s to %s: found among the sent mail after an unrecorded or "
                "ambiguous send; not sent again",
                mail.message_id,
                ",".join(mail.to),
            )
        return found

    def _mark_sent(self, mail: OutboxMail, name: str, *, found: bool) -> OutboxStatus:
        self._repository.mark_outgoing(mail.id, OutboxStatus.SENT)
        self._halts.clear(name)
        if not found:
            log.info("outbox %s sent to %s", mail.message_id, ",".join(mail.to))
        return OutboxStatus.SENT

    def _retry(
        self, mail: OutboxMail, name: str, exc: TransientTransportError, *, maybe_sent: bool
    ) -> OutboxStatus:
        """Leave ``mail`` pending for a later attempt, or fail it after the last one.

        The next attempt waits for the backoff, or longer when the server asked (its
        ``retry_after``, bounded by :data:`MAX_SERVER_WAIT`); a server's wait also
        stops every mail of the transport until then (:meth:`TransportHalts.throttle`).
        """
        attempt = mail.attempts + 1
        prefix = MAYBE_SENT if maybe_sent else ""
        wait = server_wait(exc.retry_after)
        now = self._clock()
        if wait is not None:
            self._throttle(name, now + wait)
        if attempt >= self._backoff.max_attempts:
            self._fail(mail, f"{prefix}gave up after {attempt} attempts: {exc}")
            return OutboxStatus.FAILED
        retry_at = now + max(self._backoff.delay(attempt), wait or dt.timedelta(0))
        self._repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error=f"{prefix}{exc}", next_attempt_at=retry_at
        )
        if maybe_sent:
            self._maybe_sent_now += 1
        log.warning(
            "outbox %s to %s: %s (attempt %d), retry at %s: %s",
            mail.message_id,
            ",".join(mail.to),
            "may have been sent" if maybe_sent else "transient failure",
            attempt,
            retry_at.isoformat(),
            exc,
        )
        return OutboxStatus.PENDING

    def _throttle(self, name: str, until: dt.datetime) -> None:
        """The server asked us to wait: no mail through ``name`` before ``until``."""
        until = self._halts.throttle(name, until)
        line = (
            f"{name}: the server asked us to wait; sending through it resumes at "
            f"{until.isoformat(timespec='seconds')}"
        )
        self._throttled_now.append(line)
        log.warning("outbox: %s", line)

    def _halt(self, mail: OutboxMail, name: str, exc: TransportConfigError) -> None:
        """Stop sending through ``name`` until a backoff ends; ``mail`` stays pending.

        The mail counts the attempt it was, and is due again when the transport may be
        tried: a configuration error never makes it ``failed``.
        """
        until = self._halts.stop(name)
        self._repository.mark_outgoing(
            mail.id, OutboxStatus.PENDING, error=str(exc), next_attempt_at=until
        )
        line = (
            f"{exc}; sending through it stopped until {until.isoformat(timespec='seconds')}: "
            "the mail stays queued (fix the configuration, then `halomail outbox retry --all`)"
        )
        self._halted_now.append(line)
        log.error("outbox: %s", line)

    def _fail(self, mail: OutboxMail, reason: str) -> None:
        log.error("outbox %s to %s failed: %s", mail.message_id, ",".join(mail.to), reason)
        with self._repository.transaction():
            self._repository.mark_outgoing(mail.id, OutboxStatus.FAILED, error=reason)
            if mail.ticket_id is not None:
                self._repository.add_action(
                    NewAction(
                        ticket_id=mail.ticket_id,
                        kind=ActionKind.SEND_FAILED,
                        body=f"The {mail.kind} to {', '.join(mail.to)} could not be sent: {reason}",
                        public=False,
                        message_id=None,
                    )
                )


def _transport_name(transport: MailTransport) -> str:
    """A transport's name for its halt: its repr (server, port, user; never a secret)."""
    return repr(transport)[:200]


class TransportHalts:
    """The transports stopped by a configuration error, and until when.

    Kept in this object for its passes, and in the repository's ``outbox-halts`` state
    key for every process: a ``halomail run`` started by cron a minute later does not log
    in again before the backoff ends. Consecutive halts of one transport back off
    exponentially (the outbox's :class:`Backoff`, without its attempt limit); a mail sent
    through it ends them.

    Args:
        repository: Where the state key lives.
        backoff: The delays between tries.
        clock: The current time.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        repository: TicketRepository,
        backoff: Backoff,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._repository = repository
        self._backoff = backoff
        self._clock = clock
        self._local: dict[str, dt.datetime] = {}
        self._stored: dict[str, tuple[int, dt.datetime]] = {}
        #: One line per transport whose server's requested wait holds (read by
        #: :meth:`begin_pass`; not a halt: nothing is wrong with the configuration).
        self.throttled: list[str] = []

    def begin_pass(self) -> list[str]:
        """Read the halts recorded (once a pass, not once a mail); one line for each
        that still holds, so every pass reports it until it ends or is cleared.

        The server-requested waits that still hold go to :attr:`throttled` instead.
        """
        self._stored = self.load()
        now = self._clock()
        lines = []
        self.throttled = []
        for name, (count, until) in sorted(self._stored.items()):
            if until <= now:
                continue
            if not count:
                line = (
                    f"{name}: sending waits until {until.isoformat(timespec='seconds')}, "
                    "as its server asked"
                )
                log.info("outbox: %s", line)
                self.throttled.append(line)
                continue
            line = (
                f"{name}: sending stopped until {until.isoformat(timespec='seconds')} "
                f"after {count} refused login(s) or TLS failure(s); the mail waits "
                "(`halomail outbox` lists it)"
            )
            log.warning("outbox: %s", line)
            lines.append(line)
        return lines

    def stopped(self, name: str) -> bool:
        """True while ``name`` may not be tried (here or in the repository)."""
        now = self._clock()
        local = self._local.get(name)
        stored = self._stored.get(name)
        return (local is not None and local > now) or (stored is not None and stored[1] > now)

    def throttle(self, name: str, until: dt.datetime) -> dt.datetime:
        """Record that ``name``'s server asked us to wait until ``until``; return when it
        may be tried again (a later halt already recorded is kept).

        .. versionadded:: 0.1.0
        """
        halts = self.load()
        count, known = halts.get(name, (0, until))
        until = max(until, known)
        halts[name] = (count, until)
        self._local[name] = until
        self._stored = halts
        self._save(halts)
        return until

    def stop(self, name: str) -> dt.datetime:
        """Record a halt of ``name``; return when it may be tried again."""
        halts = self.load()
        count = halts[name][0] + 1 if name in halts else 1
        until = self._clock() + self._backoff.delay(count)
        halts[name] = (count, until)
        self._local[name] = until
        self._stored = halts
        self._save(halts)
        return until

    def clear(self, name: str) -> None:
        """``name`` works again: forget its halts (writes only when it had some)."""
        if self._local.pop(name, None) is None and name not in self._stored:
            return
        halts = self.load()
        halts.pop(name, None)
        self._stored = halts
        self._save(halts)

    def load(self) -> dict[str, tuple[int, dt.datetime]]:
        """Every recorded halt: transport → (consecutive halts, next try)."""
        raw = self._repository.get_state(HALTS_STATE)
        try:
            stored = json.loads(raw) if raw else {}
            return {
                str(name): (int(count), dt.datetime.fromisoformat(until))
                for name, (count, until) in stored.items()
            }
        except (ValueError, TypeError, AttributeError):
            return {}  # unreadable: as if nothing were halted (the next failure says so)

    def _save(self, halts: dict[str, tuple[int, dt.datetime]]) -> None:
        value = {name: [count, until.isoformat()] for name, (count, until) in halts.items()}
        self._repository.set_state(HALTS_STATE, json.dumps(value, sort_keys=True))


class SendIntents:
    """The sends begun through a transport that can look among its sent mail.

    Before such a transport is handed a mail, the ledger key ``outbox-sending:<Message-ID>``
    gets the time the send began. A process killed after the service took the mail and
    before the outcome was recorded leaves the mail pending and claimed; the runner that
    takes it over once the claim's lease runs out finds the key, and looks among the sent
    mail (:class:`~halomail.backends.base.SentLookup`) before sending. The key is not
    removed afterwards (a later look costs one request, a missed one a duplicate): it is
    one small ledger row per mail sent through a cloud API.

    Args:
        repository: Where the keys live (``get_state``/``set_state``).
        clock: The current time.

    .. versionadded:: 0.1.0
    """

    def __init__(self, repository: TicketRepository, clock: Callable[[], dt.datetime]) -> None:
        self._repository = repository
        self._clock = clock

    @staticmethod
    def key(mail: OutboxMail) -> str:
        """The ledger key of ``mail``'s send."""
        return f"outbox-sending:{mail.message_id}"

    def begin(self, mail: OutboxMail) -> None:
        """Record that a send of ``mail`` begins now."""
        self._repository.set_state(self.key(mail), self._clock().isoformat())

    def began(self, mail: OutboxMail) -> bool:
        """True when a send of ``mail`` began before (its outcome is unknown here)."""
        return bool(self._repository.get_state(self.key(mail)))
