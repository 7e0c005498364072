"""Why an email would or would not be acknowledged, in words, for ``halomail simulate``.

The decision itself is made where it always was (:mod:`halomail.pipeline.acknowledge`
and the rule handlers); this module only explains a :class:`Decision` after the fact,
naming everything that stands in the way, so an administrator sees at once whether a
missing acknowledgement is the mailbox's setting, a rule's, the email's classification
(spam, auto-reply …) or a throttle.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from halomail.inbound.models import Classification
from halomail.pipeline.results import AcknowledgementVerdict, Decision, Outcome, Reason
from halomail.pipeline.settings import Mailbox
from halomail.rules import RuleType

__all__ = ["acknowledgement_verdict"]

# The rule types whose new tickets are acknowledged like mail from a person.
_ACKNOWLEDGING_TYPES = frozenset(
    {RuleType.HELP_REQUEST, RuleType.APPLY_TEMPLATE, RuleType.FORMATTED_EMAIL}
)
# Reasons that are themselves why no acknowledgement goes out.
_BLOCKING_REASONS = {
    Reason.UNDELIVERABLE_SENDER: "the sender's address bounced (undeliverable)",
    Reason.ACKNOWLEDGEMENT_THROTTLED: "too many acknowledgements to this sender lately (throttled)",
}


def acknowledgement_verdict(
    decision: Decision, classification: Classification, mailbox: Mailbox
) -> AcknowledgementVerdict:
    """Whether ``decision`` acknowledges the email, and every reason why (not).

    Args:
        decision: What :func:`~halomail.pipeline.decide.decide` made of the email.
        classification: The email's classification.
        mailbox: The mailbox it came from.

    Returns:
        ``would`` as the decision says, with the reasons in words.
    """
    if decision.acknowledge:
        return AcknowledgementVerdict(
            True, ("a new ticket from a sender who may be answered automatically",)
        )
    reasons: list[str] = []
    if decision.outcome is not Outcome.CREATED:
        why = f": {decision.reason.value}" if decision.reason is not None else ""
        reasons.append(f"no new ticket ({decision.outcome.value}{why})")
    if not mailbox.send_acknowledgement:
        reasons.append(f"mailbox {mailbox.name!r} sends no acknowledgements")
    rule = decision.match.rule if decision.match is not None else None
    if rule is not None and decision.outcome is Outcome.CREATED:
        if rule.type not in _ACKNOWLEDGING_TYPES:
            reasons.append(f"rule {rule.name!r}: {rule.type.value} rules send none")
        elif not rule.send_acknowledgement:
            reasons.append(f"rule {rule.name!r}: send_acknowledgement = false")
    reasons.extend(_classification_reasons(classification))
    if decision.reason in _BLOCKING_REASONS:
        reasons.append(_BLOCKING_REASONS[decision.reason])
    return AcknowledgementVerdict(False, tuple(reasons))


def _classification_reasons(classification: Classification) -> list[str]:
    """The classification's reasons when it forbids an acknowledgement, else none."""
    if classification.may_acknowledge:
        return []
    return [f"classified: {reason}" for reason in classification.reasons]
