"""The built-in texts of the ``Default`` message group, and the sample values of checks.

Each template is written in the same ``$`` language administrators use, so that the
built-in texts are also the examples a new message group starts from. HTML versions
are plain fragments with inline styles (mail clients drop ``<style>`` blocks and
ignore most CSS) and a small bordered table of the ticket's details.

Automatic replies deliberately never echo ``$details``: a helpdesk that repeats the
body of any email to its (forgeable) sender is a spam relay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

__all__: list[str] = []

_FONT: Final = "font-family: Arial, Helvetica, sans-serif; font-size: 14px; line-height: 1.5;"
_TABLE: Final = 'style="border-collapse: collapse; margin: 16px 0;"'
_TH: Final = (
    'style="text-align: left; padding: 6px 12px; background: #f3f4f6; '
    'border: 1px solid #d0d7de; font-weight: bold;"'
)
_TD: Final = 'style="padding: 6px 12px; border: 1px solid #d0d7de;"'

_HELLO_TEXT: Final = "Hello{% if username %} $username{% endif %},\n\n"
_HELLO_HTML: Final = "<p>Hello{% if username %} $username{% endif %},</p>\n"

_SIGN_OFF_TEXT: Final = """\
Kind regards,
{% if signature %}
$signature
{% elif agentname %}
$agentname
{% elif mailboxname %}
$mailboxname
{% else %}
The helpdesk
{% endif %}
"""

_SIGN_OFF_HTML: Final = """\
<p>Kind regards,<br>
{% if signature %}
$signature
{% elif agentname %}
$agentname
{% elif mailboxname %}
$mailboxname
{% else %}
The helpdesk
{% endif %}
</p>
"""

_KEEP_TAG_TEXT: Final = """\
{% if tag %}
When you reply, please keep $tag in the subject
so that your message reaches the right ticket.

{% endif %}
"""

_KEEP_TAG_HTML: Final = """\
{% if tag %}
<p>When you reply, please keep <strong>$tag</strong> in the subject so that your message \
reaches the right ticket.</p>
{% endif %}
"""

_LINK_TEXT: Final = """\
{% if ticketurl %}
You can follow it at $ticketurl

{% endif %}
"""

_LINK_HTML: Final = """\
{% if ticketurl %}
<p><a href="$ticketurl">View the ticket</a></p>
{% endif %}
"""

_NOTE_TEXT: Final = """\
{% if actionnote %}
$actionnote

{% endif %}
"""

_NOTE_HTML: Final = """\
{% if actionnote %}
<p style="margin: 16px 0; padding: 8px 12px; border-left: 3px solid #d0d7de;">$actionnote</p>
{% endif %}
"""

# (label, variable, shown only when not empty)
_Row = tuple[str, str, bool]
_TICKET_ROWS: Final[Sequence[_Row]] = (
    ("Ticket", "ticketid", False),
    ("Summary", "summary", False),
    ("Status", "status", False),
    ("Priority", "priority", True),
    ("Logged", "dateoccurred", True),
)


def _table_text(rows: Sequence[_Row]) -> str:
    width = max(len(label) for label, _, _ in rows) + 2
    lines = []
    for label, variable, optional in rows:
        line = f"{label + ':':<{width}}${variable}\n"
        lines.append(f"{{% if {variable} %}}\n{line}{{% endif %}}\n" if optional else line)
    return "".join(lines) + "\n"


def _table_html(rows: Sequence[_Row]) -> str:
    lines = [f"<table {_TABLE}>\n"]
    for label, variable, optional in rows:
        row = f"<tr><th {_TH}>{label}</th><td {_TD}>${variable}</td></tr>\n"
        lines.append(f"{{% if {variable} %}}\n{row}{{% endif %}}\n" if optional else row)
    lines.append("</table>\n")
    return "".join(lines)


def _html(*blocks: str) -> str:
    return f'<div style="{_FONT}">\n' + "".join(blocks) + "</div>\n"


_ROWS = _TICKET_ROWS

#: kind → (subject, text, html or None), in the order of MessageKind.
BUILT_IN: Final[Mapping[str, tuple[str, str, str | None]]] = {
    "new_ticket_logged": (
        "$tag Received: $summary",
        _HELLO_TEXT
        + "Thank you for your email. We have logged it as ticket $ticketid.\n\n"
        + _table_text(_ROWS)
        + _LINK_TEXT
        + _KEEP_TAG_TEXT
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            "<p>Thank you for your email. We have logged it as ticket "
            "<strong>$ticketid</strong>.</p>\n",
            _table_html(_ROWS),
            _LINK_HTML,
            _KEEP_TAG_HTML,
            _SIGN_OFF_HTML,
        ),
    ),
    "ticket_update": (
        "$tag Update: $summary",
        _HELLO_TEXT
        + 'There is an update on your ticket $ticketid, "$summary":\n\n'
        + _NOTE_TEXT
        + "Status: $status\n\n"
        + _LINK_TEXT
        + _KEEP_TAG_TEXT
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            '<p>There is an update on your ticket <strong>$ticketid</strong>, "$summary":</p>\n',
            _NOTE_HTML,
            "<p>Status: <strong>$status</strong></p>\n",
            _LINK_HTML,
            _KEEP_TAG_HTML,
            _SIGN_OFF_HTML,
        ),
    ),
    "ticket_closed": (
        "$tag Closed: $summary",
        _HELLO_TEXT
        + 'Your ticket $ticketid, "$summary", has been closed.\n\n'
        + _NOTE_TEXT
        + "If the problem is not solved, reply to this email"
        + "{% if tag %} and keep\n$tag in the subject{% endif %}"
        + ": the ticket will be reopened.\n\n"
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            '<p>Your ticket <strong>$ticketid</strong>, "$summary", has been closed.</p>\n',
            _NOTE_HTML,
            "<p>If the problem is not solved, reply to this email"
            "{% if tag %} and keep <strong>$tag</strong> in the subject{% endif %}"
            ": the ticket will be reopened.</p>\n",
            _SIGN_OFF_HTML,
        ),
    ),
    "ticket_assigned": (
        "$tag Assigned: $summary",
        _HELLO_TEXT
        + "Your ticket $ticketid is now in the hands of "
        + "{% if agentname %}$agentname{% else %}our team{% endif %}"
        + "{% if teamname %} ($teamname){% endif %}.\n\n"
        + _table_text(_ROWS)
        + _LINK_TEXT
        + _KEEP_TAG_TEXT
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            "<p>Your ticket <strong>$ticketid</strong> is now in the hands of "
            "{% if agentname %}<strong>$agentname</strong>{% else %}our team{% endif %}"
            "{% if teamname %} ($teamname){% endif %}.</p>\n",
            _table_html(_ROWS),
            _LINK_HTML,
            _KEEP_TAG_HTML,
            _SIGN_OFF_HTML,
        ),
    ),
    "note_added": (
        "$tag New note: $summary",
        _HELLO_TEXT
        + "{% if actionby %}$actionby{% else %}We{% endif %}"
        + ' added a note to your ticket $ticketid, "$summary":\n\n'
        + _NOTE_TEXT
        + _LINK_TEXT
        + _KEEP_TAG_TEXT
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            "<p>{% if actionby %}$actionby{% else %}We{% endif %}"
            ' added a note to your ticket <strong>$ticketid</strong>, "$summary":</p>\n',
            _NOTE_HTML,
            _LINK_HTML,
            _KEEP_TAG_HTML,
            _SIGN_OFF_HTML,
        ),
    ),
    "service_status_changed": (
        "$tag $servicename: $servicestatus",
        _HELLO_TEXT
        + "The status of $servicename is now: $servicestatus"
        + "{% if dateoccurred %} (since $dateoccurred){% endif %}.\n\n"
        + "{% if details %}\n$details\n\n{% endif %}\n"
        + "{% if ticketid %}\nWe are tracking this as ticket $ticketid.\n\n{% endif %}\n"
        + _LINK_TEXT
        + _SIGN_OFF_TEXT,
        _html(
            _HELLO_HTML,
            "<p>The status of <strong>$servicename</strong> is now: "
            "<strong>$servicestatus</strong>"
            "{% if dateoccurred %} (since $dateoccurred){% endif %}.</p>\n",
            "{% if details %}\n<p>$details</p>\n{% endif %}\n",
            "{% if ticketid %}\n<p>We are tracking this as ticket "
            "<strong>$ticketid</strong>.</p>\n{% endif %}\n",
            _LINK_HTML,
            _SIGN_OFF_HTML,
        ),
    ),
    # Short on purpose: the SMS connector cuts the text to the provider's limit.
    "sms": (
        "",
        "{% if servicename %}$servicename: $servicestatus"
        "{% else %}Ticket $ticketid: $summary ($status)"
        "{% if actionnote %} - $actionnote{% endif %}{% endif %}",
        None,
    ),
    "test_email": (
        "Test email{% if mailboxname %} from $mailboxname{% endif %}",
        "This is a test email from halomail"
        "{% if mailboxname %}, sent for the mailbox $mailboxname{% endif %}.\n\n"
        "If you can read it, outgoing mail works: there is nothing else to do.\n",
        _html(
            "<p>This is a test email from halomail"
            "{% if mailboxname %}, sent for the mailbox <strong>$mailboxname</strong>"
            "{% endif %}.</p>\n",
            "<p>If you can read it, outgoing mail works: there is nothing else to do.</p>\n",
        ),
    ),
}

#: The values a template is tried with when it is loaded: every variable set, so that
#: each ``{% if %}`` branch that tests a variable is taken.
SAMPLE: Final[Mapping[str, str]] = {
    "ticketid": "1234",
    "summary": "Printer on floor 3 is jammed",
    "details": "The printer jams on every page.\nIt started this morning.",
    "status": "Open",
    "tickettype": "Incident",
    "priority": "P2",
    "category": "Hardware",
    "username": "Alice Martin",
    "useremail": "alice@customer.example",
    "userphone": "+44 20 7946 0000",
    "customername": "Customer Ltd",
    "sitename": "Head Office",
    "agentname": "Amy Agent",
    "agentemail": "amy@helpdesk.example",
    "teamname": "Service Desk",
    "dateoccurred": "2024-05-01 09:30 UTC",
    "actionnote": "A replacement part is on its way.",
    "actionby": "Amy Agent",
    "mailboxname": "Support",
    "ticketurl": "https://helpdesk.example/tickets/1234",
    "tag": "[ID:1234]",
    "servicename": "Nightly backup",
    "servicestatus": "Failed",
    "signature": "Amy Agent\nService Desk",
}
