"""Reading delivery reports: what happened to each recipient of a bounced mail.

A bounce answers one question for the processor: which of the addresses our mail went
to failed for good, which are only delayed, and which got it. The answer comes, in
order of trust, from

1. the ``message/delivery-status`` (or ``message/global-delivery-status``) part of an
   RFC 3464 report: one block per recipient with its ``Final-Recipient``, ``Action``,
   ``Status`` and ``Diagnostic-Code``;
2. Exim's ``X-Failed-Recipients`` header, which lists permanent failures only;
3. the text of the common non-standard bounces (qmail's "failure notice", Exim,
   Postfix and Sendmail text, Exchange and Gmail notices), where a recipient stands on
   a line of its own or in a fixed phrase, with the status code beside it.

An abuse feedback report (ARF, RFC 5965) names the recipient who complained: it is
read here too, from ``Original-Rcpt-To`` or the returned message's ``To``. So is the
JSON notification Amazon SES sends through an SNS topic's email subscription (a bounce,
a complaint or a delivery, :func:`ses_notification`), whose recipients are named in it.

Every scan is bounded: a report part is read up to :data:`MAX_REPORT_BYTES`, the text
up to :data:`MAX_TEXT_CHARS` (and only above the returned message), at most
:data:`MAX_RECIPIENTS` recipients are kept, and every pattern has bounded repeats.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

import attrs

from halomail.inbound.models import InboundEmail

__all__ = [
    "DELIVERY_STATUS_TYPES",
    "MAX_RECIPIENTS",
    "MAX_REPORT_BYTES",
    "MAX_TEXT_CHARS",
    "RETURNED_MESSAGE_TYPES",
    "DeliveryReport",
    "RecipientStatus",
    "ReportKind",
    "read_report",
    "ses_kind",
    "ses_message_id",
    "ses_notification",
    "ses_type",
]

#: The MIME types of an RFC 3464 (and RFC 6533) per-recipient report.
DELIVERY_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
#: Bytes of one report part read; a real one is a few hundred bytes per recipient.
MAX_REPORT_BYTES = 64 * 1024
#: Characters of a bounce's text scanned for failed recipients.
MAX_TEXT_CHARS = 16 * 1024
#: Recipients kept from one report.
MAX_RECIPIENTS = 100
#: Characters kept of a diagnostic.
_MAX_DIAGNOSTIC = 300

_FEEDBACK_TYPE = "message/feedback-report"
#: The MIME types of the returned message (or its headers) a bounce carries.
RETURNED_MESSAGE_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/global"})

# An addr-spec as bounces print it: no quotes, no comments, bounded on both sides.
_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"
_ADDR_ONLY = re.compile(_ADDR)
# RFC 3463 enhanced status codes, then plain SMTP reply codes after the words that
# introduce a server's answer ("said: 550", "returned '550", "(reason: 550").
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_REPLY = re.compile(
    r"(?:said:|returned\s'|reason:|error:|reply:|^)\s{0,4}([45])\d\d(?=[\s:-])", re.I | re.M
)

# Where the returned message starts in a text bounce: nothing below it is the report.
_RETURNED_MARKER = re.compile(
    r"^[ \t]{0,8}-{2,}[^\n]{0,40}?(?:copy of the message|below this line|original message"
    r"|returned message|message headers|undelivered message)",
    re.I | re.M,
)
# A recipient opening a line: on its own (qmail, Exim, Sendmail), at the head of
# Postfix's "<addr>: host ... said:" paragraph (its "(expanded from" may wrap), after a
# bullet ("* addr", ActiveHunter's ">>> addr") or Sendmail's reply code ("550
# <addr>... User unknown"), quoted (GMX: '"addr":'), or followed by the reason
# ("addr [User unknown]", Zoho's "addr Invalid Address", Exchange 2003's "addr on
# 4/29/01 11:34 PM").
_RECIPIENT_LINE = re.compile(
    rf"^[ \t]{{0,8}}(?:[*\u2022-][ \t]{{1,4}}|>>>[ \t]{{0,4}}|[45]\d\d[ -])?[<\"]?({_ADDR})[>\"]?"
    r"(?=[ \t]|:|\.\.\.|$)",
    re.M,
)
# A recipient in the fixed sentence of Exchange, Gmail and other notices.
_RECIPIENT_PHRASE = re.compile(
    rf"(?:your message to|wasn't delivered to|was not delivered to|couldn't be delivered to"
    rf"|could not be delivered to|delivery to the following recipients? failed[^\n]{{0,20}}"
    rf"|delivery has failed to these recipients or groups:"
    rf"|did not reach the following recipient\(?s?\)?:|addressed to"
    rf"|unable to find user:|user unknown:|no such user:|message delivery to"
    rf"|there was an error delivering your mail to|unable to deliver message to:?"
    rf"|unknown user:|delivery failed:?|recipient:|mailbox is full:"
    rf"|returned permanent errors?:)"
    rf":?\s{{0,8}}['<]?({_ADDR})[>']?",
    re.I,
)
_DELAY_WORDS = re.compile(
    r"\bdelayed\b|not yet been delivered|will (?:continue|keep) (?:trying|to try)|still trying"
    r"|will be retried|will retry",
    re.I,
)
_SYSTEM_LOCALS = frozenset({"postmaster", "mailer-daemon", "mailerdaemon", "abuse"})
_PERMANENT_WORDS = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|given up|giving up|user unknown|unknown user"
    r"|unknown recipient|not recognized|no mx record|unknown host|host unknown"
    r"|no such (?:user|mailbox|recipient)|does not exist|doesn't exist"
    r"|invalid (?:address|recipient)"
    r"|could not be reached|mailbox unavailable|recipient rejected|address rejected",
    re.I,
)


class ReportKind:
    """What kind of automatic report a bounce is (the values of ``bounce_kind``)."""

    DELIVERY = "delivery-report"  # a delivery status notification, standard or not
    FEEDBACK = "feedback-report"  # an abuse complaint (ARF)
    LIST = "list-error"  # a mailing list manager refusing or holding a post


@attrs.frozen
class RecipientStatus:
    """What happened to one recipient of the bounced mail.

    Args:
        address: The recipient's addr-spec, lower-cased.
        action: ``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded`` (RFC 3464),
            or ``complained`` (an abuse report).
        status: The RFC 3463 status code (``5.1.1``), or ``""`` when none was given.
        diagnostic: The remote server's answer, if any (bounded).
    """

    address: str
    action: str
    status: str = ""
    diagnostic: str = ""

    @property
    def permanent(self) -> bool:
        """A permanent failure: ``failed`` with a 5.x.x status."""
        return self.action == "failed" and self.status.startswith("5.")

    @property
    def delayed(self) -> bool:
        """A delay: the mail is still queued (``delayed``, or a 4.x.x not given up on)."""
        return self.action == "delayed"

    @property
    def stops_mail(self) -> bool:
        """Whether automatic mail to this address must stop: a permanent failure or a
        complaint."""
        return self.permanent or self.action == "complained"

    def describe(self) -> str:
        """One line for the ticket's note, e.g. ``bob@x: failed (5.1.1) user unknown``."""
        status = f" ({self.status})" if self.status else ""
        diagnostic = f": {self.diagnostic}" if self.diagnostic else ""
        return f"{self.address}: {self.action}{status}{diagnostic}"


@attrs.frozen
class DeliveryReport:
    """What a bounce says, per recipient.

    Args:
        kind: One of :class:`ReportKind`'s values.
        recipients: Each recipient it names, in order, without repeats.
        feedback_type: For an abuse report, its ``Feedback-Type`` (``abuse``, ``fraud`` …).
    """

    kind: str
    recipients: tuple[RecipientStatus, ...] = ()
    feedback_type: str = ""

    @property
    def title(self) -> str:
        """What the report is, for a note: ``Delivery report``, ``Abuse report (abuse)`` …"""
        if self.kind == ReportKind.FEEDBACK:
            return f"Abuse report ({self.feedback_type or 'unspecified'})"
        if self.kind == ReportKind.LIST:
            return "Mailing list error"
        return "Delivery report"

    def summary(self) -> str:
        """One line per recipient under the title, or why there is none."""
        if not self.recipients:
            return f"{self.title}: no recipient named."
        return "\n".join([f"{self.title}:", *(f"- {r.describe()}" for r in self.recipients)])


def read_report(email: InboundEmail, kind: str = ReportKind.DELIVERY) -> DeliveryReport:
    """Read the per-recipient outcome of a bounce (never raises).

    Args:
        email: The parsed bounce.
        kind: What classification found it to be (:class:`ReportKind`).

    Returns:
        The report; its ``recipients`` are empty when nothing could be read reliably.
    """
    notification = ses_notification(email)
    if notification is not None:
        return _ses_report(notification)
    if kind == ReportKind.FEEDBACK:
        return _feedback_report(email)
    if kind == ReportKind.LIST:
        return DeliveryReport(kind)
    recipients = list(_standard_recipients(email))
    if not recipients:
        recipients = list(_failed_recipients_header(email))
    if not recipients:
        recipients = list(_text_recipients(email.text))
    return DeliveryReport(kind, _unique(recipients))


# -- RFC 3464 ---------------------------------------------------------------------------


#: Fields a report may repeat, each time naming one more of the same thing.
_LISTED_FIELDS = frozenset({"original-rcpt-to"})


def _fields(payload: bytes) -> list[dict[str, str]]:
    """The blocks of a report part, each as its fields (lower-case names, first wins,
    but for the :data:`_LISTED_FIELDS`, whose values are all kept); a second
    ``Final-Recipient`` starts a block of its own."""
    text = payload[:MAX_REPORT_BYTES].decode("utf-8", "replace")
    blocks: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, name = {}, ""
        elif line[0] in " \t" and name:
            current[name].append(line.strip())  # a folded line continues the field
        elif ":" in line:
            field, _, value = line.partition(":")
            field = field.strip().lower()
            if field == "final-recipient" and field in current:
                # AOL writes its recipients' blocks with no blank line between them.
                blocks.append(current)
                current = {}
            if field in _LISTED_FIELDS and field in current:
                current[field].append(value.strip())  # every complainant (ARF)
                name = field
            elif field in current:
                name = ""  # a repeated field keeps its first value, folded lines and all
            else:
                current[field] = [value.strip()]
                name = field
    if current:
        blocks.append(current)
    # Joined once at the end: a field folded over thousands of lines costs linear time.
    return [{key: " ".join(parts) for key, parts in block.items()} for block in blocks]


def _after_type(value: str) -> str:
    """``rfc822; bob@x`` → ``bob@x``: the part after the address or diagnostic type."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _standard_recipients(email: InboundEmail) -> Iterator[RecipientStatus]:
    for part in email.attachments:
        if part.content_type not in DELIVERY_STATUS_TYPES:
            continue
        for block in _fields(part.payload):
            address = _recipient_address(block)
            if address is None:
                continue  # the per-message block (Reporting-MTA, Arrival-Date …)
            diagnostic = _after_type(block.get("diagnostic-code", ""))[:_MAX_DIAGNOSTIC]
            status = _status(block.get("status", "")) or _status(diagnostic)
            action = _action(block.get("action", "")) or _guess(status)
            yield RecipientStatus(address, action, status, diagnostic)


def _recipient_address(block: dict[str, str]) -> str | None:
    """The recipient a report block names: its ``Final-Recipient`` when that is an
    address, else its ``Original-Recipient``. A source route (``@relay:bob@x``) is read
    as its address; a pipe command (``|/usr/bin/procmail``) or a bare domain is none."""
    for field in ("final-recipient", "original-recipient"):
        value = _after_type(block.get(field, "")).strip("<>").strip()
        if value.startswith("@") and ":" in value:
            value = value.rpartition(":")[2]
        if _ADDR_ONLY.fullmatch(value):
            return value.lower()
    return None


def _status(text: str) -> str:
    """The first enhanced status code in ``text``, else one made of an SMTP reply code."""
    bounded = text[:MAX_TEXT_CHARS]
    found = _ENHANCED.search(bounded)
    if found:
        return ".".join(found.groups())
    reply = _SMTP_REPLY.search(bounded)
    return f"{reply.group(1)}.0.0" if reply else ""


def _action(value: str) -> str:
    """An ``Action`` field's value, with the variants some servers write ("failure",
    "Delayed") brought back to RFC 3464's words."""
    action = value.split(";")[0].strip().lower()[:20]
    for word in ("failed", "delayed", "delivered", "relayed", "expanded"):
        if action[:4] == word[:4]:
            return word
    return action


def _guess(status: str) -> str:
    """The action of a report that gives none, from its status."""
    if status.startswith("4."):
        return "delayed"
    if status.startswith("2."):
        return "delivered"
    return "failed"


# -- X-Failed-Recipients and text bounces -------------------------------------------------


def _failed_recipients_header(email: InboundEmail) -> Iterator[RecipientStatus]:
    """Exim lists the permanent failures of a bounce in ``X-Failed-Recipients``."""
    header = " ".join(email.header_all("X-Failed-Recipients"))[:MAX_TEXT_CHARS]
    if not header:
        return
    scanned = _report_text(email.text)
    for address in re.findall(_ADDR, header)[:MAX_RECIPIENTS]:
        # Exim writes no status for a permanent failure; the text may hold one.
        status = _status(_paragraph_of(scanned, address)) or "5.0.0"
        yield RecipientStatus(address.lower(), "failed", status if status[0] == "5" else "5.0.0")


def _report_text(text: str) -> str:
    """The part of a bounce's text above the returned message, bounded."""
    bounded = text[:MAX_TEXT_CHARS]
    marker = _RETURNED_MARKER.search(bounded)
    return bounded[: marker.start()] if marker else bounded


def _paragraph_of(text: str, address: str) -> str:
    """The paragraph of ``text`` where ``address`` first appears (blank-line separated)."""
    at = text.lower().find(address.lower())
    if at < 0:
        return ""
    start = text.rfind("\n\n", 0, at)
    end = text.find("\n\n", at)
    paragraph = text[start + 1 if start >= 0 else 0 : end if end >= 0 else len(text)]
    # Exim and qmail put the reason on the lines below the address, in the same paragraph
    # or the next one when a blank line separates them.
    if _status(paragraph) == "" and end >= 0:
        following = text.find("\n\n", end + 2)
        paragraph += text[end : following if following >= 0 else len(text)]
    return paragraph


def _text_recipients(text: str) -> Iterator[RecipientStatus]:
    """Failed or delayed recipients of a non-standard bounce, from its text."""
    scanned = _report_text(text)
    found = [m.group(1) for m in _RECIPIENT_LINE.finditer(scanned)]
    found += [m.group(1) for m in _RECIPIENT_PHRASE.finditer(scanned)]
    # "Please send mail to <postmaster@…>" on a line of its own names no recipient.
    people = (a.lower() for a in found if a.partition("@")[0].lower() not in _SYSTEM_LOCALS)
    addresses = list(dict.fromkeys(people))[:MAX_RECIPIENTS]
    delayed = _DELAY_WORDS.search(scanned) is not None
    permanent = _PERMANENT_WORDS.search(scanned) is not None
    for address in addresses:
        # The status beside the address; with a single recipient, any in the report
        # (Gmail and Exchange print the server's answer paragraphs below the address).
        status = _status(_paragraph_of(scanned, address))
        if not status and len(addresses) == 1:
            status = _status(scanned)
        if not status and permanent and not delayed:
            status = "5.0.0"
        action = "delayed" if delayed and not status.startswith("5") else "failed"
        yield RecipientStatus(address, action, status)


# -- ARF ---------------------------------------------------------------------------------


def _feedback_report(email: InboundEmail) -> DeliveryReport:
    """An abuse report: who complained, and what about."""
    feedback_type = ""
    addresses: list[str] = []
    for part in email.attachments:
        if part.content_type == _FEEDBACK_TYPE:
            for block in _fields(part.payload):
                feedback_type = feedback_type or block.get("feedback-type", "").lower()[:40]
                rcpt = block.get("original-rcpt-to", "")
                addresses += [a.lower() for a in re.findall(_ADDR, rcpt[:_MAX_DIAGNOSTIC])]
    if not addresses:
        addresses = list(_returned_to(email))
    recipients = tuple(
        RecipientStatus(a, "complained") for a in dict.fromkeys(addresses[:MAX_RECIPIENTS])
    )
    return DeliveryReport(ReportKind.FEEDBACK, recipients, feedback_type)


def _returned_to(email: InboundEmail) -> Iterable[str]:
    """The ``To`` addresses of the returned message (its headers only, bounded)."""
    for part in email.attachments:
        if part.content_type in RETURNED_MESSAGE_TYPES:
            parser = BytesHeaderParser(policy=compat32)
            headers = parser.parsebytes(part.payload[:MAX_REPORT_BYTES])
            values = [str(v) for v in headers.get_all("To", [])]
            pairs = getaddresses(values)
            return [addr.lower() for _, addr in pairs if "@" in addr][:MAX_RECIPIENTS]
    return []


def _unique(recipients: list[RecipientStatus]) -> tuple[RecipientStatus, ...]:
    """One entry per address (the first), at most :data:`MAX_RECIPIENTS`."""
    seen: dict[str, RecipientStatus] = {}
    for recipient in recipients:
        seen.setdefault(recipient.address, recipient)
    return tuple(seen.values())[:MAX_RECIPIENTS]


# -- Amazon SES notifications, as an SNS topic emails them -------------------------------

#: The most of an SNS email's text read for its JSON (an SNS message is at most 256 KB).
MAX_SES_CHARS = 256 * 1024
_SNS_DOMAIN = "@sns.amazonaws.com"
_SES_KINDS = {
    "Bounce": ReportKind.DELIVERY,
    "Complaint": ReportKind.FEEDBACK,
    "Delivery": ReportKind.DELIVERY,
}


def ses_notification(email: InboundEmail) -> dict[str, Any] | None:
    """The Amazon SES notification an email from Amazon SNS carries, or ``None``.

    SES reports each bounce, complaint and delivery of the mail it sent to an SNS topic;
    a topic's email subscription mails the notification's JSON (``email``), or SNS's
    envelope around it (``email-json``), from ``no-reply@sns.amazonaws.com``. Only an
    email from there whose text opens with a JSON object is read, at most
    :data:`MAX_SES_CHARS` of it; anything else, or JSON that does not parse, is ``None``.

    Args:
        email: The parsed email.

    Returns:
        The notification (its ``notificationType``, or ``eventType`` for a
        configuration set's events, is ``Bounce``, ``Complaint`` or ``Delivery``).

    .. versionadded:: 0.2.0
    """
    if email.sender is None or not email.sender.normalized.endswith(_SNS_DOMAIN):
        return None
    text = email.text[:MAX_SES_CHARS]
    start = text.find("{")
    if start < 0 or text[:start].strip():
        return None
    try:
        # Not strict: SMTP's line limit folds a long notification inside a string.
        value, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
        if isinstance(value, dict) and isinstance(value.get("Message"), str):
            value = json.loads(value["Message"][:MAX_SES_CHARS], strict=False)  # SNS's envelope
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None
    if not isinstance(value, dict) or ses_type(value) not in _SES_KINDS:
        return None
    return value


def ses_kind(notification: dict[str, Any]) -> str:
    """The :class:`ReportKind` of an SES notification from :func:`ses_notification`.

    .. versionadded:: 0.2.0
    """
    return _SES_KINDS[ses_type(notification)]


def ses_message_id(notification: dict[str, Any]) -> str | None:
    """The Message-ID the reported mail was sent with, when the notification holds its
    headers (SES's own ``messageId`` names SES's copy, not ours).

    .. versionadded:: 0.2.0
    """
    mail = _object(notification.get("mail"))
    for header in _objects(mail.get("headers")):
        if str(header.get("name", "")).lower() == "message-id":
            return _bare_id(header.get("value"))
    return _bare_id(_object(mail.get("commonHeaders")).get("messageId"))


def ses_type(notification: dict[str, Any]) -> str:
    """What an SES notification reports: ``Bounce``, ``Complaint`` or ``Delivery`` (its
    ``notificationType``, or a configuration set's ``eventType``).

    .. versionadded:: 0.2.0
    """
    return str(notification.get("notificationType") or notification.get("eventType") or "")


def _ses_report(notification: dict[str, Any]) -> DeliveryReport:
    """Each recipient the notification names, with what happened to it."""
    kind = ses_type(notification)
    recipients: list[RecipientStatus] = []
    if kind == "Complaint":
        complaint = _object(notification.get("complaint"))
        for entry in _objects(complaint.get("complainedRecipients")):
            if address := _address(entry.get("emailAddress")):
                recipients.append(RecipientStatus(address, "complained"))
        feedback_type = str(complaint.get("complaintFeedbackType") or "").lower()[:40]
        return DeliveryReport(ReportKind.FEEDBACK, _unique(recipients), feedback_type)
    if kind == "Delivery":
        delivery = _object(notification.get("delivery"))
        answer = str(delivery.get("smtpResponse") or "")[:_MAX_DIAGNOSTIC]
        listed = delivery.get("recipients")
        for value in listed[:MAX_RECIPIENTS] if isinstance(listed, list) else ():
            if address := _address(value):
                recipients.append(RecipientStatus(address, "delivered", "2.0.0", answer))
        return DeliveryReport(ReportKind.DELIVERY, _unique(recipients))
    bounce = _object(notification.get("bounce"))
    # A transient bounce is SES giving up on a soft failure (a full mailbox): no block.
    given = "5.0.0" if bounce.get("bounceType") == "Permanent" else "4.0.0"
    for entry in _objects(bounce.get("bouncedRecipients")):
        if address := _address(entry.get("emailAddress")):
            status = _status(str(entry.get("status") or "")) or given
            diagnostic = str(entry.get("diagnosticCode") or "")[:_MAX_DIAGNOSTIC]
            recipients.append(RecipientStatus(address, "failed", status, diagnostic))
    return DeliveryReport(ReportKind.DELIVERY, _unique(recipients))


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: object) -> list[dict[str, Any]]:
    items = value[:MAX_RECIPIENTS] if isinstance(value, list) else []
    return [item for item in items if isinstance(item, dict)]


def _address(value: object) -> str | None:
    """A JSON value that is an addr-spec, lower-cased; ``None`` for anything else."""
    if isinstance(value, str) and _ADDR_ONLY.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def _bare_id(value: object) -> str | None:
    """A Message-ID header's value without its angle brackets, if it is one."""
    if not isinstance(value, str):
        return None
    bare = value.strip()[:255].removeprefix("<").removesuffix(">")
    return bare if bare and "@" in bare and not any(c.isspace() for c in bare) else None
