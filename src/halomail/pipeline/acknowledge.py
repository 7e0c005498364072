"""Whether a new ticket is acknowledged by email: loops, bounces and throttling.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from halomail.inbound.models import Classification, InboundEmail
from halomail.pipeline.context import Context
from halomail.pipeline.results import Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox

__all__ = ["UNDELIVERABLE", "decide_new"]

# The state key prefix of a sender whose address bounced: never acknowledged again.
UNDELIVERABLE = "undeliverable:"


def decide_new(
    ctx: Context,
    mailbox: Mailbox,
    email: InboundEmail,
    classification: Classification,
    reason: Reason | None,
    *,
    acknowledge: bool = True,
) -> Decision:
    """A new ticket, acknowledged when the mailbox, the sender and the throttle allow."""
    may = False
    if acknowledge and mailbox.send_acknowledgement and email.sender is not None:
        may, why_not = _may_acknowledge(ctx, email, classification)
        if not may and why_not:
            reason = reason or why_not
    return Decision(Outcome.CREATED, reason, acknowledge=may)


def _may_acknowledge(
    ctx: Context, email: InboundEmail, classification: Classification
) -> tuple[bool, Reason | None]:
    if not classification.may_acknowledge:
        return False, None
    assert email.sender is not None
    address = email.sender.normalized
    if ctx.repository.get_state(UNDELIVERABLE + address) is not None:
        return False, Reason.UNDELIVERABLE_SENDER
    settings = ctx.settings
    now = ctx.clock()
    since = now - settings.ack_throttle_window
    if ctx.repository.count_outgoing(to=address, since=since) >= settings.ack_throttle_count:
        ctx.throttle_warnings.warn(address, now, since)
        return False, Reason.ACKNOWLEDGEMENT_THROTTLED
    # The long window: a responder answering every acknowledgement within the rate above
    # would otherwise get one every minute, all day long.
    day = now - settings.loop_window
    if ctx.repository.count_outgoing(to=address, since=day) >= settings.ack_daily_count:
        limit = (settings.ack_daily_count, settings.loop_window)
        ctx.throttle_warnings.warn(address, now, day, limit=limit)
        return False, Reason.ACKNOWLEDGEMENT_THROTTLED
    return True, None
