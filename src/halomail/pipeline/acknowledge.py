"""Whether a new ticket is acknowledged by email: loops, bounces and throttling.

An address our mail failed to reach for good (a 5.x.x ``failed`` in a delivery report),
or whose owner reported our mail as abuse, is *marked undeliverable*: a small state
value ``undeliverable:<address>`` in the ledger, holding when it was set and why. The
mark stops acknowledgements to that address for ``undeliverable_for`` (30 days by
default); an empty value is a cleared mark. Marks written by 0.2 hold only the time,
and expire the same way.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import logging

from halomail.inbound.dsn import RecipientStatus
from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox

__all__ = ["UNDELIVERABLE", "decide_new", "mark_value", "marked_since", "still_marked"]

log = logging.getLogger(__name__)

#: The state key prefix of an address marked undeliverable.
UNDELIVERABLE = "undeliverable:"


def mark_value(now: dt.datetime, recipient: RecipientStatus) -> str:
    """The state value marking ``recipient`` undeliverable from ``now``: the time, then why."""
    return f"{now.isoformat()} {recipient.status or recipient.action}"


def marked_since(value: str | None) -> dt.datetime | None:
    """When a mark was set, or ``None`` for no mark (absent, cleared or unreadable)."""
    if not value:
        return None
    try:
        since = dt.datetime.fromisoformat(value.split(" ", 1)[0])
    except ValueError:
        log.debug("unreadable undeliverable mark %r: ignored", value[:80])
        return None
    # A naive time can only be UTC: halomail has always written aware UTC times.
    return since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)


def still_marked(ctx: Context, value: str | None) -> bool:
    """Whether a mark's value still blocks acknowledgements (set, and not expired)."""
    since = marked_since(value)
    return since is not None and ctx.clock() - since < ctx.settings.undeliverable_for


def decide_new(
    ctx: Context,
    mailbox: Mailbox,
    email: InboundEmail,
    classification: Classification,
    reason: Reason | None,
    *,
    acknowledge: bool = True,
    repeat_state: tuple[str, str] | None = None,
) -> Decision:
    """A new ticket, acknowledged when the mailbox, the sender and the throttle allow
    (``repeat_state``: what counts it towards the loop cap, see :class:`Decision`)."""
    may = False
    if acknowledge and mailbox.send_acknowledgement and email.sender is not None:
        may, why_not = _may_acknowledge(ctx, email, classification)
        if not may and why_not:
            reason = reason or why_not
    return Decision(Outcome.CREATED, reason, acknowledge=may, repeat_state=repeat_state)


def _may_acknowledge(
    ctx: Context, email: InboundEmail, classification: Classification
) -> tuple[bool, Reason | None]:
    if not classification.may_acknowledge:
        return False, None
    assert email.sender is not None
    address = email.sender.normalized
    if still_marked(ctx, ctx.repository.get_state(UNDELIVERABLE + address)):
        return False, Reason.UNDELIVERABLE_SENDER
    return _within_rate(ctx, address)


def _within_rate(ctx: Context, address: str) -> tuple[bool, Reason | None]:
    """Whether ``address`` may have one more acknowledgement under both throttles.

    The wider window is counted first: when it holds fewer than the narrower window's
    limit, so does the narrower one, and a sender writing now and then (nearly every
    one) costs one count, not two.
    """
    settings = ctx.settings
    now = ctx.clock()
    since = now - settings.ack_throttle_window
    # The long window: a responder answering every acknowledgement within the rate above
    # would otherwise get one every minute, all day long.
    day = now - settings.loop_window
    wider = ctx.repository.count_outgoing(to=address, since=min(since, day))
    if wider < settings.ack_throttle_count and wider < settings.ack_daily_count:
        return True, None
    in_window = wider if since <= day else ctx.repository.count_outgoing(to=address, since=since)
    if in_window >= settings.ack_throttle_count:
        ctx.throttle_warnings.warn(address, now, since)
        return False, Reason.ACKNOWLEDGEMENT_THROTTLED
    in_day = wider if day <= since else ctx.repository.count_outgoing(to=address, since=day)
    if in_day >= settings.ack_daily_count:
        limit = (settings.ack_daily_count, settings.loop_window)
        ctx.throttle_warnings.warn(address, now, day, limit=limit)
        return False, Reason.ACKNOWLEDGEMENT_THROTTLED
    return True, None
