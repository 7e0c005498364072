"""Classifying an email for loop safety: auto-replies, bounces, bulk mail, spam, our own mail.

Each test reads only what the parser put on :class:`~halomail.inbound.models.InboundEmail`
(top-level headers, addresses, Message-IDs of embedded messages, attachment types and the
text), so classification is cheap, deterministic and never touches the network.

The flags answer one question for the processor: may this sender be answered
automatically (design §4 "Loops")? Every flag set comes with a reason for logs and
``halomail simulate``.

Spam is not judged here: the verdict of the filter upstream (SpamAssassin, rspamd,
Microsoft 365, Barracuda …) is read from the headers it added (:func:`spam_verdict`).
A verdict only ever adds the flag; a "no" from one filter never clears another's "yes".

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any

from halomail.inbound.dsn import (
    DELIVERY_STATUS_TYPES,
    RETURNED_MESSAGE_TYPES,
    ReportKind,
    ses_kind,
    ses_message_id,
    ses_notification,
    ses_type,
)
from halomail.inbound.models import Classification, InboundEmail

__all__ = ["classify", "loop_signature", "spam_verdict"]

# Keeps the loop header's HMAC apart from the Message-ID signatures made with the same
# token (outbound.outbox.MessageIdFactory): one can never stand in for the other.
_LOOP_CONTEXT = b"halomail-loop-header\x00"

# Subject prefixes only automatic responders use. A human rarely starts a subject with
# "Automatic reply:", so these count on their own (Exchange, Outlook, Gmail vacation
# responders in several languages all use one of them).
_AUTO_SUBJECT = re.compile(
    r"""^\s*(?:
        automatic\ reply | auto(?:matic)?[\s-]?(?:reply|response|responder) | autoreply
      | out\ of\ (?:the\ )?office(?:\ (?:auto\s?reply|reply|notification))?
      | abwesenheitsnotiz | automatische\ antwort | abwesend
      | r[ée]ponse\ automatique | absence\ du\ bureau | message\ d'absence
      | respuesta\ autom[áa]tica | fuera\ de\ la\ oficina
      | automatisch\ antwoord | afwezig
      | risposta\ automatica | fuori\ sede | resposta\ autom[áa]tica
      | autosvar | automaattinen\ vastaus | automatick[áa]\ odpov[ěe][ďd]
      | 自动回复 | 自動回覆 | 自動応答 | 不在通知
    )\s*[:\uff1a]""",
    re.IGNORECASE | re.VERBOSE,
)

# Words that make a subject look like an out-of-office notice. Weaker than the prefixes
# above, so they count only together with an auto-reply header such as Exchange's
# X-Auto-Response-Suppress, which Outlook also puts on ordinary mail.
_OOF_SHAPE = re.compile(
    r"out of (?:the )?office|automatic reply|auto[\s-]?reply|autoreply|vacation|on leave"
    r"|away from (?:the )?office|abwesen|urlaub|absence|absent|cong[ée]s|vacaciones"
    r"|ausente|afwezig|vakantie",
    re.IGNORECASE,
)

_BOUNCE_SUBJECT = re.compile(
    r"""^\s*(?:
        undeliver(?:ed|able)\ mail\ returned\ to\ sender
      | undeliverable\b | undelivered\ mail | undeliverable\ mail
      | (?:mail\ )?delivery\ status\ notification
      | mail\ could\ not\ be\ delivered | permanent\ delivery\ failure
      | mail\ system\ error | failure\ delivery
      | delivery\ (?:has\ )?fail(?:ed|ure)
      | mail\ delivery\ (?:failed|failure|subsystem)
      | failure\ notice | returned\ mail | returned\ to\ sender
      | message\ not\ delivered | delivery\ notification:\ delivery\ has\ failed
      | unzustellbar | nicht\ zustellbar | non\ remis | non\ distribuable
      | no\ se\ puede\ entregar | onbestelbaar
      | delayed\ mail | mail\ failed,\ returning
    )""",
    re.IGNORECASE | re.VERBOSE,
)

_NO_REPLY_LOCALS = frozenset(
    {
        "mailer-daemon",
        "mailerdaemon",
        "postmaster",
        "post_master",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "bounce",
        "bounces",
    }
)
# Prefixes that name the same kind of sender with a suffix ("no-reply-alerts@",
# VERP "bounces-1234@"): a '+' sub-address is removed before these are checked.
_NO_REPLY_PREFIXES = (
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "bounce-",
    "bounces-",
    "mailer-daemon",
)
_DAEMON_LOCALS = frozenset(
    {"mailer-daemon", "mailerdaemon", "mail-daemon", "maildaemon", "postmaster", "post_master"}
)
# Sendmail's local delivery writes the null sender as "Return-Path: <MAILER-DAEMON>".
_DAEMON_PATH = re.compile(r"\s*<\s*(?:mailer-daemon|mailerdaemon)\s*>\s*", re.IGNORECASE)
# A mail system's failure in the opening of a text: an SMTP reply code opening a line,
# or the words of one.
_FAILURE_TEXT = re.compile(
    r"^[ \t]{0,8}[45]\d\d\b|user unknown|unknown user|no such (?:user|mailbox)"
    r"|invalid (?:user|recipient|address)|could not be delivered|undeliverable",
    re.IGNORECASE | re.MULTILINE,
)
_FAILURE_SCAN = 2000

_LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Post")
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_FEEDBACK_TYPE = "message/feedback-report"
# Hotmail's complaint loop (JMRP) in its older shape: a plain multipart/mixed holding the
# complained-of message, with no report-type to say what it is.
_COMPLAINT_SUBJECT = re.compile(r"^\s*complaint about message from\s", re.I)
# A From naming a mail system without a usable address: "MAILER-DAEMON <>",
# "<MAILER-DAEMON>", "Mail Delivery Subsystem <postmaster>".
_DAEMON_FROM = re.compile(
    r'[^<]{0,200}?<?\s{0,4}"?(?:mailer-daemon|mailerdaemon|postmaster)\b', re.IGNORECASE
)
_FROM_SCAN = 400
# List managers by their sender's local part, or its suffix ("support-owner@",
# "support-bounces@", "support-request@") or prefix ("owner-support@", majordomo).
_LIST_MANAGER_LOCALS = frozenset({"mailman", "listserv", "majordomo", "sympa", "lyris"})
_LIST_MANAGER_SUFFIXES = ("-owner", "-bounces", "-request", "-admin")
_LIST_ERROR = re.compile(
    r"""awaits?\ moderator | awaiting\ moderat | held\ for\ moderat
      | moderated\ list | post(?:ing)?\ (?:to\ [^\n]{1,80}?\ )?(?:was\ |has\ been\ )?rejected
      | message\ (?:was\ |has\ been\ )?rejected | rejected\ posting | not\ a\ member
      | non-?member\ (?:submission|post)
      | not\ (?:allowed|authori[sz]ed|permitted)\ to\ (?:post|send)
      | (?:do|does)\ not\ have\ permission\ to\ post | don't\ have\ permission\ to\ post
      | majordomo\ results
      | loop\ alert | duplicated\ message-id""",
    re.IGNORECASE | re.VERBOSE,
)
# Mailman's notices to a list's administrator ("X post from Y requires approval"): work
# for a person, not an answer to our mail.
_LIST_ADMIN_REQUEST = re.compile(
    r"requires approval|as list administrator|your authori[sz]ation is requested", re.I
)
# Characters of the text searched for a list manager's words: they open its notice.
_LIST_TEXT_SCAN = 2000
# A "Message-ID: <...>" line quoted in a non-standard bounce (O3).
_QUOTED_MESSAGE_ID = re.compile(r"^[ \t>]*message-id:[ \t]*<([^<>\s]{1,255})>", re.I | re.M)


def loop_signature(loop_token: str, message_id: str) -> str:
    """The loop header's value for our mail with ``message_id``.

    An HMAC-SHA256 of the Message-ID keyed by the loop token, truncated to 128 bits
    (32 hex digits): the header proves the mail is ours without revealing the token,
    and a header copied onto another Message-ID proves nothing.

    Args:
        loop_token: The instance's secret (``[processing] loop_token``).
        message_id: The mail's Message-ID, without angle brackets.

    Returns:
        32 lower-case hex digits.

    .. versionadded:: 0.1.0
    """
    payload = _LOOP_CONTEXT + message_id.encode("utf-8", "surrogatepass")
    return hmac.new(loop_token.encode("utf-8"), payload, hashlib.sha256).hexdigest()[:32]


def classify(
    email: InboundEmail,
    *,
    loop_token: str | None = None,
    previous_loop_tokens: Sequence[str] = (),
    is_own_message_id: Callable[[str], bool] | None = None,
) -> Classification:
    """Decide whether ``email`` is an auto-reply, a bounce, bulk mail, spam or our own mail.

    Args:
        email: The parsed email.
        loop_token: Our secret loop token; an email whose loop header holds
            :func:`loop_signature` of the token and of **its own** Message-ID is our own
            mail fetched back (O5). ``None`` turns that test off.
        previous_loop_tokens: Tokens used before the last rotation; mail signed with
            one of them is ours too.
        is_own_message_id: Tells whether a Message-ID is one we generated; the
            email's own Message-ID is checked with it (O5).

    Returns:
        The flags, with a reason for each flag that is set. ``may_acknowledge`` on the
        result says whether an automatic acknowledgement may be sent.

    .. versionadded:: 0.1.0
    """
    reasons: list[str] = []
    tokens = tuple(t for t in (loop_token, *previous_loop_tokens) if t)
    own = _own_message(email, tokens, is_own_message_id, reasons)
    auto = _auto_reply(email, reasons)
    notification = ses_notification(email)  # read once: both steps below need it
    bounce_kind = _bounce(email, reasons, notification)
    bounced_id = _bounced_message_id(email, notification) if bounce_kind else None
    bulk = _bulk(email, reasons)
    spam = spam_verdict(email)
    reasons.extend(spam)
    no_reply = _no_reply_sender(email, reasons)
    return Classification(
        auto_reply=auto,
        bounce=bool(bounce_kind),
        bounced_message_id=bounced_id,
        bounce_kind=bounce_kind,
        bulk=bulk,
        spam=bool(spam),
        own_message=own,
        no_reply_sender=no_reply,
        reasons=tuple(reasons),
    )


def _token(value: str | None) -> str:
    """The first ``;``-separated token of a header value, trimmed and lower-cased."""
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def _own_message(
    email: InboundEmail,
    tokens: Sequence[str],
    is_own_message_id: Callable[[str], bool] | None,
    reasons: list[str],
) -> bool:
    if _signed_loop_header(email, tokens):
        reasons.append("own-message: loop header signs its Message-ID")
        return True
    if is_own_message_id is not None and email.message_id and is_own_message_id(email.message_id):
        reasons.append("own-message: Message-ID is one we generated")
        return True
    return False


def _signed_loop_header(email: InboundEmail, tokens: Sequence[str]) -> bool:
    """True when a loop marker is our signature of this email's own Message-ID."""
    if not tokens or not email.message_id or not email.loop_markers:
        return False
    expected = [loop_signature(token, email.message_id).encode() for token in tokens]
    for marker in email.loop_markers:
        given = marker.strip().lower().encode("utf-8", "surrogatepass")
        # A signature is as good as a password: compare in constant time.
        if any(hmac.compare_digest(given, wanted) for wanted in expected):
            return True
    return False


def _auto_reply(email: InboundEmail, reasons: list[str]) -> bool:
    found = False
    auto_submitted = _token(email.header("Auto-Submitted"))
    # RFC 3834: any value other than "no" marks automatic mail; "no" is a human (O7).
    if auto_submitted and auto_submitted != "no":
        reasons.append(f"auto-submitted: {auto_submitted}")
        found = True
    present = email._header_names()
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = email.header(name) if name.lower() in present else None
        if value is not None and _token(value) not in {"no", "false", "0"}:
            reasons.append(f"auto-reply header: {name}")
            found = True
    precedence = _token(email.header("Precedence")) or _token(email.header("X-Precedence"))
    if precedence == "auto_reply":
        reasons.append("precedence: auto_reply")
        found = True
    if "x-ms-exchange-generated-message-source" in present:
        reasons.append("exchange generated message")
        found = True
    if _AUTO_SUBJECT.search(email.subject):
        reasons.append("subject: automatic reply")
        found = True
    elif (
        email.header("X-Auto-Response-Suppress") is not None
        and _OOF_SHAPE.search(email.subject)
        and not _is_reply_subject(email.subject)
    ):
        # Outlook sets X-Auto-Response-Suppress on ordinary mail too, so it counts
        # only with an out-of-office subject that is not a person's "RE:" to one.
        reasons.append("x-auto-response-suppress with an out-of-office subject")
        found = True
    content_type = (email.header("Content-Type") or "").lower()
    if "multipart/report" in content_type and "disposition-notification" in content_type:
        reasons.append("read receipt (disposition notification)")
        found = True
    return found


def _is_reply_subject(subject: str) -> bool:
    return re.match(r"\s*(?:re|aw|sv|antw|r|rif|wg|fw|fwd|tr)\s*:", subject, re.I) is not None


def _sender_local(email: InboundEmail) -> str:
    if email.sender is None:
        return ""
    local = email.sender.normalized.rsplit("@", 1)[0]
    return local.split("+", 1)[0]


def _bounce(email: InboundEmail, reasons: list[str], notification: dict[str, Any] | None) -> str:
    """The kind of report ``email`` is (:class:`~halomail.inbound.dsn.ReportKind`), or
    ``""``; ``notification`` is its Amazon SES notification, if it carries one."""
    content_type = (email.header("Content-Type") or "").lower()
    part_types = {att.content_type for att in email.attachments}
    if "feedback-report" in content_type or _FEEDBACK_TYPE in part_types:
        reasons.append("bounce: abuse feedback report (ARF)")
        return ReportKind.FEEDBACK
    if _COMPLAINT_SUBJECT.match(email.subject) and email.embedded_message_ids:
        reasons.append("bounce: complaint report holding the complained-of message")
        return ReportKind.FEEDBACK
    if "multipart/report" in content_type and "delivery-status" in content_type:
        reasons.append("bounce: multipart/report; report-type=delivery-status")
        return ReportKind.DELIVERY
    if part_types & DELIVERY_STATUS_TYPES:
        # A multipart/report without its report-type (or another container): the
        # delivery-status part decides.
        reasons.append("bounce: message/delivery-status part")
        return ReportKind.DELIVERY
    if (
        "multipart/report" in content_type
        and "report-type" not in content_type
        and "message/disposition-notification" not in part_types
    ):
        # Only mail systems write multipart/report (RFC 6522); without its report-type,
        # and not a read receipt or an abuse report (both read above), it reports a
        # delivery.
        reasons.append("bounce: multipart/report without a report-type")
        return ReportKind.DELIVERY
    present = email._header_names()
    if "x-failed-recipients" in present:
        reasons.append("bounce: X-Failed-Recipients")
        return ReportKind.DELIVERY
    if "x-ms-exchange-message-is-ndr" in present:
        reasons.append("bounce: Exchange non-delivery report")
        return ReportKind.DELIVERY
    daemon = _daemon_sender(email)
    null_path = email.return_path == "" or (
        email.return_path is None
        and _DAEMON_PATH.fullmatch((email.header("Return-Path") or "")[:_FROM_SCAN]) is not None
    )
    automatic = null_path or _token(email.header("Auto-Submitted")) not in {"", "no"}
    if _BOUNCE_SUBJECT.search(email.subject) and (daemon or automatic):
        # A bounce-like subject alone could be a person forwarding a bounce to ask for
        # help; it counts only from a mail daemon or with a null/automatic envelope.
        reasons.append("bounce: delivery failure subject from a mail system")
        return ReportKind.DELIVERY
    if daemon and (null_path or email.sender is None):
        # "MAILER-DAEMON <>" or "<MAILER-DAEMON>": a mail system's own notice; no
        # person writes from an address without a domain.
        reasons.append("bounce: mail daemon sender with a null return path")
        return ReportKind.DELIVERY
    if daemon and part_types & RETURNED_MESSAGE_TYPES:
        # postmaster@ or mailer-daemon@ sending a message back (Trend Micro's
        # InterScan, qmail behind a list's envelope): a notice about that message.
        reasons.append("bounce: mail daemon sender returning a message")
        return ReportKind.DELIVERY
    if (
        part_types & RETURNED_MESSAGE_TYPES
        and _no_reply_local(email)
        and _FAILURE_TEXT.search(email.text[:_FAILURE_SCAN])
    ):
        # KDDI's "Could not be delivered to: <…>" from no-reply@, the message returned:
        # a mail system's notice whatever its sender's name.
        reasons.append("bounce: no-reply sender returning a message with a failure")
        return ReportKind.DELIVERY
    if notification is not None:
        reasons.append(f"bounce: Amazon SES notification ({ses_type(notification)})")
        return ses_kind(notification)
    if daemon and email.thread_ids and _FAILURE_TEXT.search(email.text[:_FAILURE_SCAN]):
        # An SMS gateway's "550 - no such user here" in reply to our mail. Only a reply:
        # a mail admin writing from postmaster@ about a failure opens a ticket, and one
        # answering ours is a note on that ticket, never lost.
        reasons.append("bounce: mail daemon sender reporting a failure in a reply")
        return ReportKind.DELIVERY
    if _list_error(email):
        reasons.append("bounce: mailing list manager error")
        return ReportKind.LIST
    return ""


def _daemon_sender(email: InboundEmail) -> bool:
    """The sender is a mail system: ``mailer-daemon@``/``postmaster@``, or a From that
    names one without a usable address (``MAILER-DAEMON <>``, ``<MAILER-DAEMON>``)."""
    if _sender_local(email) in _DAEMON_LOCALS:
        return True
    if email.sender is not None:
        return False
    return _DAEMON_FROM.match((email.header("From") or "")[:_FROM_SCAN]) is not None


def _list_error(email: InboundEmail) -> bool:
    """A list manager (Mailman, LISTSERV, Google Groups, majordomo, Sympa) refusing a
    post, holding it for moderation or telling a non-member: its sender shape *and* its
    words, so that a person writing about a list is still a person."""
    administrivia = _token(email.header("X-List-Administrivia")) == "yes"
    local = _sender_local(email)
    domain = email.sender.normalized.rpartition("@")[2] if email.sender is not None else ""
    manager = (
        administrivia
        or local in _LIST_MANAGER_LOCALS
        or local.endswith(_LIST_MANAGER_SUFFIXES)
        or local.startswith("owner-")
        or domain == "googlegroups.com"
    )
    if not manager:
        return False
    opening = email.text[:_LIST_TEXT_SCAN]
    if _LIST_ADMIN_REQUEST.search(email.subject) or _LIST_ADMIN_REQUEST.search(opening):
        return False  # a request to the list's administrator: someone must act on it
    return _LIST_ERROR.search(email.subject) is not None or (
        _LIST_ERROR.search(opening) is not None
    )


def _bounced_message_id(email: InboundEmail, notification: dict[str, Any] | None) -> str | None:
    if notification is not None:
        return ses_message_id(notification)
    if email.embedded_message_ids:
        return email.embedded_message_ids[0]
    if email.thread_ids:
        return email.thread_ids[0]
    # O3: a non-standard bounce quotes the returned headers in its text.
    for match in _QUOTED_MESSAGE_ID.finditer(email.text):
        found = match.group(1)
        if found != email.message_id:
            return found
    return None


def _bulk(email: InboundEmail, reasons: list[str]) -> bool:
    found = False
    precedence = _token(email.header("Precedence"))
    if precedence in _BULK_PRECEDENCE:
        reasons.append(f"precedence: {precedence}")
        found = True
    present = email._header_names()
    for name in _LIST_HEADERS:
        if name.lower() in present:
            reasons.append(f"list mail: {name}")
            found = True
            break
    return found


def _no_reply_sender(email: InboundEmail, reasons: list[str]) -> bool:
    found = False
    if email.return_path == "":
        reasons.append("null return path <>")
        found = True
    if _no_reply_local(email):
        reasons.append(f"no-reply sender: {_sender_local(email)}@")
        found = True
    return found


def _no_reply_local(email: InboundEmail) -> bool:
    """The sender's local part says nobody reads replies (``no-reply@``, ``postmaster@`` …)."""
    local = _sender_local(email)
    return bool(local) and (local in _NO_REPLY_LOCALS or local.startswith(_NO_REPLY_PREFIXES))


# -- the upstream spam filter's verdict ------------------------------------------------

# A filter's verdict sits at the start of its header; nothing past this is read, so a
# 200 KB header costs no more than a short one.
_VERDICT_CHARS = 4096
_YES = frozenset({"yes", "true"})
# rspamd's actions that mean spam (the others: "no action", "greylist", "soft reject").
_RSPAMD_SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
# Microsoft's spam confidence level: 5 and 6 are spam, 7 to 9 high-confidence spam;
# -1 (a trusted sender) and 0 to 4 are not.
_SCL_SPAM = range(5, 10)
# X-Forefront-Antispam-Report's SFV (spam filtering verdict) values that mean spam:
# SPM spam, SKS marked spam before filtering, SKB a blocked sender or domain, BLK a
# user's Blocked Senders list. NSPM, SKA, SKN, SKI, SKQ … are not spam.
_SFV_SPAM = frozenset({"spm", "sks", "skb", "blk"})
# Its CAT (the protection that applied): spam, high-confidence spam, phishing.
_CAT_SPAM = frozenset({"spm", "hspm", "phsh", "hphsh", "hphish"})
# The subject tags filters write when told to rewrite it: SpamAssassin's
# "*****SPAM*****" and rspamd's "*** SPAM ***" (at the very start: "Fwd: [SPAM] …" is a
# person forwarding spam to the helpdesk, which deserves an answer).
_SPAM_SUBJECT = re.compile(r"\*{3,5} ?spam ?\*{3,5}|\[spam\]", re.IGNORECASE)


def spam_verdict(email: InboundEmail) -> list[str]:
    """Why the spam filter upstream called ``email`` spam; empty when none did.

    Read from the headers filters add when they let spam through tagged:

    * SpamAssassin (and Amavis, MIMEDefang, rspamd's compatible headers):
      ``X-Spam-Flag: YES``, ``X-Spam-Status: Yes, score=…``;
    * rspamd: ``X-Spam: Yes``, ``X-Rspamd-Action: add header`` (or ``rewrite subject``,
      ``reject``), ``X-Spamd-Result: default: True [...]``;
    * Microsoft Exchange and 365: ``X-MS-Exchange-Organization-SCL`` of 5 to 9,
      ``X-Forefront-Antispam-Report`` with ``SFV:SPM`` (or SKS, SKB, BLK), ``SCL:5`` or
      more, or ``CAT:SPM`` (HSPM, PHSH …);
    * Barracuda: ``X-Barracuda-Spam-Flag: YES``, ``X-Barracuda-Spam-Status: Yes, …``;
    * Proofpoint: ``X-Proofpoint-Spam-Details: rule=spam …``;
    * AOL: ``X-AOL-Global-Disposition: S``; GMX and web.de:
      ``X-UI-Out-Filterresults: junk:…``;
    * a subject the filter rewrote: ``*****SPAM*****``, ``*** SPAM ***``, ``[SPAM]``.

    Only the top-level headers are read (a forwarded message's verdict is not this
    email's), each header's first few kilobytes only. A header saying "no" never
    clears another's "yes": forging a verdict can only get one's own mail treated
    as spam.

    Args:
        email: The parsed email.

    Returns:
        One reason per header that says spam, e.g. ``"spam: X-Spam-Flag: YES"``.
    """
    reasons: list[str] = []
    present = email._header_names()
    for name, says_spam in _VERDICT_HEADERS:
        if name.lower() not in present:  # most mail carries none: nothing is decoded
            continue
        for value in email.header_all(name):
            value = value[:_VERDICT_CHARS].strip()
            if says_spam(value):
                reasons.append(f"spam: {name}: {_shorten(value)}")
                break
    if _SPAM_SUBJECT.match(email.subject.lstrip()[:32]):
        reasons.append("spam: subject tagged by a spam filter")
    return reasons


def _shorten(value: str) -> str:
    """A verdict as shown in a reason: its first line, at most 60 characters."""
    first = " ".join(value.split())
    return first if len(first) <= 60 else first[:59] + "…"


def _first_word_yes(value: str) -> bool:
    """``YES``, ``Yes, score=8.2 …``, ``true``: the first word says yes."""
    word = re.split(r"[\s,;]", value, maxsplit=1)[0]
    return word.lower() in _YES


def _rspamd_action(value: str) -> bool:
    return " ".join(value.lower().split()) in _RSPAMD_SPAM_ACTIONS


def _rspamd_result(value: str) -> bool:
    # "default: True [12.30 / 15.00]; SYMBOL(1.0)[…] …": True is rspamd's is-spam.
    head = value.lower().split("[", 1)[0]
    return head.replace(" ", "").startswith("default:true")


def _scl(value: str) -> bool:
    try:
        return int(value.split(";", 1)[0].strip()) in _SCL_SPAM
    except ValueError:
        return False


def _forefront(value: str) -> bool:
    # "CIP:1.2.3.4;CTRY:US;LANG:en;SCL:5;SRV:;IPV:NLI;SFV:SPM;H:…;CAT:SPM;…", with or
    # without a space after each semicolon.
    fields: dict[str, str] = {}
    for item in value.split(";"):
        key, _, field = item.partition(":")
        fields.setdefault(key.strip().lower(), field.strip().lower())
    return (
        fields.get("sfv") in _SFV_SPAM
        or fields.get("cat") in _CAT_SPAM
        or _scl(fields.get("scl", ""))
    )


def _proofpoint(value: str) -> bool:
    return value.lower().split(None, 1)[0:1] == ["rule=spam"]


def _aol(value: str) -> bool:
    # "S" spam, "G" good, "U" unknown … (one letter, sometimes followed by more).
    return value[:1].upper() == "S"


def _united_internet(value: str) -> bool:
    return value.lower().startswith("junk:")


_VERDICT_HEADERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("X-Spam-Flag", _first_word_yes),
    ("X-Spam-Status", _first_word_yes),
    ("X-Spam", _first_word_yes),
    ("X-Rspamd-Action", _rspamd_action),
    ("X-Spamd-Result", _rspamd_result),
    ("X-MS-Exchange-Organization-SCL", _scl),
    ("X-Forefront-Antispam-Report", _forefront),
    ("X-Barracuda-Spam-Flag", _first_word_yes),
    ("X-Barracuda-Spam-Status", _first_word_yes),
    ("X-Proofpoint-Spam-Details", _proofpoint),
    ("X-AOL-Global-Disposition", _aol),
    ("X-UI-Out-Filterresults", _united_internet),
)
