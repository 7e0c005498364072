"""Hostile template input: adversarial-cases.md V1-V5 and L1 (customer text, sandbox, headers).

Customer text only ever reaches a template as a value, so what a customer types is shown,
never run; an administrator's template runs in Jinja2's immutable sandbox and is refused
at load when it reaches for Python internals; a subject never carries a line break into
the raw message (CVE-2024-6923 is unfixed on the Python 3.11 these tests run on).
"""

from __future__ import annotations

import datetime as dt
import email
import sys
from email import policy
from email.message import EmailMessage

import pytest
from jinja2.exceptions import SecurityError

from halomail.errors import TemplateError
from halomail.outbound.outbox import LOOP_HEADER, SenderIdentity, compose
from halomail.templates.render import (
    MessageGroup,
    MessageKind,
    Template,
    TemplateRenderer,
    TemplateValues,
    default_message_group,
)
from halomail.tickets.models import OutboxMail, OutboxStatus, Ticket, TicketStatus

WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


def ticket(summary: str = "Printer jammed", details: str = "It jams.", **fields: str) -> Ticket:
    """A ticket whose customer-typed fields are given."""
    return Ticket(
        id=42,
        summary=summary,
        details=details,
        ticket_type="Incident",
        user_email="alice@customer.example",
        status=TicketStatus.NEW,
        created_at=WHEN,
        updated_at=WHEN,
        user_name="Alice",
        custom_fields=fields,
    )


def render(kind: MessageKind, values: TemplateValues) -> tuple[str, str, str]:
    """Subject, text and HTML of a built-in template."""
    rendered = TemplateRenderer().render(kind, values)
    assert rendered.html is not None
    return rendered.subject, rendered.text, rendered.html


# -- V1: Jinja2 typed by a customer is shown, never evaluated --------------------------

V1_INPUTS = [
    "{{ 7*7 }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{# hidden #}{%- raw %}",
]


@pytest.mark.parametrize("typed", V1_INPUTS)
def test_v1_customer_jinja_in_the_summary_appears_literally_in_the_acknowledgement(
    typed: str,
) -> None:
    """A customer's Jinja2 summary shows as typed in subject and text, escaped in HTML."""
    values = TemplateValues.for_ticket(ticket(summary=typed), tag="[ID:42]")
    subject, text, html = render(MessageKind.NEW_TICKET_LOGGED, values)
    assert subject == f"[ID:42] Received: {typed}"
    assert f"Summary:  {typed}\n" in text
    escaped = typed.replace("'", "&#39;")
    assert f">{escaped}</td>" in html
    assert "49" not in text
    assert "49" not in html


@pytest.mark.parametrize("typed", V1_INPUTS)
def test_v1_customer_jinja_in_a_note_appears_literally_in_an_update(typed: str) -> None:
    """An agent or customer note with Jinja2 syntax is shown as written in an update."""
    values = TemplateValues.for_ticket(ticket(details=typed), note=typed, tag="[ID:42]")
    _, text, _ = render(MessageKind.TICKET_UPDATE, values)
    assert f"\n\n{typed}\n\n" in text


# -- V2: $variables typed by a customer are not expanded on a second pass -----------------


def test_v2_customer_dollar_variables_appear_literally_and_leak_nothing() -> None:
    """``$ticketid``, ``$CF_secret`` and ``$-name`` in customer text stay as typed."""
    typed = "See $ticketid and $CF_secret and $-name and $faultid"
    values = TemplateValues.for_ticket(
        ticket(summary=typed, secret="hunter2"), note=typed, tag="[ID:42]"
    )
    subject, text, html = render(MessageKind.TICKET_UPDATE, values)
    assert subject == f"[ID:42] Update: {typed}"
    assert text.count(typed) == 2  # in the summary line and as the note
    assert html.count(typed) == 2
    assert "hunter2" not in subject + text + html


def test_v2_a_value_is_never_template_source_even_for_the_template_of_another_ticket() -> None:
    """A value holding ``$summary`` renders as itself; the template runs once only."""
    template = Template("$summary", "$details")
    rendered = template.render(TemplateValues({"summary": "$details", "details": "{{ summary }}"}))
    assert (rendered.subject, rendered.text) == ("$details", "{{ summary }}")


# -- V3: sandbox breakouts in an admin template are refused when it is loaded --------------

V3_BREAKOUTS = [
    ("{{ ''.__class__ }}", "access to attribute '__class__' is not allowed"),
    ("{{ cycler.__init__.__globals__ }}", "access to attribute '__globals__' is not allowed"),
    ("{{ summary|attr('format') }}", "the attr filter is not allowed"),
    ("{{ summary|attr('__class__') }}", "the attr filter is not allowed"),
    ("{{ '{0.__class__}'.format(summary) }}", "access to attribute 'format' is not allowed"),
    ("{% set f = summary.format_map %}{{ f }}", "access to attribute 'format_map'"),
    ("{{ summary['__class__'] }}", "access to item '__class__' is not allowed"),
    ("{{ summary|map(attribute='__class__')|list }}", "attribute '__class__' is not allowed"),
    ("{{ (summary|list|first).__class__ }}", "access to attribute '__class__'"),
    ("{{ namespace.__init__ }}", "access to attribute '__init__'"),
    ("{% include 'secrets.txt' %}", "cannot extend, include or import"),
    ("{% import 'x' as y %}", "cannot extend, include or import"),
    ("{{ lipsum(10**9) }}", "unknown variable lipsum"),
    ("{{ self.__dict__ }}", "access to attribute '__dict__' is not allowed"),
]


@pytest.mark.parametrize(("source", "reason"), V3_BREAKOUTS)
def test_v3_a_sandbox_breakout_in_an_admin_template_is_refused_at_load(
    source: str, reason: str
) -> None:
    """Each breakout attempt raises TemplateError naming the template part and line."""
    with pytest.raises(TemplateError) as caught:
        Template("subject", f"Hello\n{source}", name="Evil/ticket_update")
    assert caught.value.template == "Evil/ticket_update.text"
    assert caught.value.line == 2
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    "source",
    ["{{ summary|safe }}", "{% autoescape false %}{{ summary }}{% endautoescape %}"],
)
def test_v3_html_templates_cannot_turn_escaping_off(source: str) -> None:
    """The safe filter and autoescape blocks are refused in HTML: every value is escaped."""
    with pytest.raises(TemplateError, match=r"html:1: .*(safe filter|autoescape)"):
        Template("s", "t", source, name="Evil/k")


def test_v3_a_breakout_only_a_value_reveals_fails_at_render_with_a_security_error() -> None:
    """An item name taken from a value is caught by the sandbox at send time: no mail."""
    template = Template(
        "s", "a\n{% if cf_key %}{{ summary[cf_key] }}{% endif %}", name="Evil/ticket_update"
    )
    renderer = TemplateRenderer()
    assert template.render(TemplateValues({"summary": "x"})).text == "a\n"
    values = TemplateValues({"summary": "x", "CF_key": "__class__"})
    with pytest.raises(TemplateError) as caught:
        template.render(values)
    assert (caught.value.template, caught.value.line) == ("Evil/ticket_update.text", 2)
    assert str(caught.value).startswith("Evil/ticket_update.text:2: sandbox: access to attribute")
    assert isinstance(caught.value.__cause__, SecurityError)
    assert renderer.render("ticket_update", values).subject == "Update: x"  # others unaffected


# -- V4: a template that raises sends nothing, with a reason ---------------------------------

V4_LOAD = [
    ("{% for x in range(10**9) %}{% endfor %}", "OverflowError: Range too big"),
    ("{{ missing_thing }}", "unknown variable missing_thing"),
    ("{{ summary.nothing }}", "UndefinedError"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ 'x' * 10**9 }}", "sandbox: a repeat over 100000 items"),
    ("{{ [1] * 10**9 }}", "sandbox: a repeat over 100000 items"),
    ("{{ 2 ** (10 ** 9) }}", "sandbox: an exponent over 100"),
    ("{{ '%0999999999d' % 1 }}", "sandbox: format widths"),
    ("{{ '%0999999999d'|format(1) }}", "sandbox: format widths"),
    ("{{ summary.center(10**9) }}", "sandbox: a width of 1000000000"),
    ("{{ summary.zfill(width=10**9) }}", "sandbox: a width of 1000000000"),
    ("{{ summary|center(10**9) }}", "sandbox: a width of 1000000000"),
    ("{{ summary|indent(10**9) }}", "sandbox: a width of 1000000000"),
]


@pytest.mark.parametrize(("source", "reason"), V4_LOAD)
def test_v4_a_template_that_cannot_render_is_refused_at_load(source: str, reason: str) -> None:
    """Runaway ranges, undefined names, errors and memory bombs fail at load, with the line."""
    with pytest.raises(TemplateError) as caught:
        Template("s", f"\n\n{source}", name="Bad/sms")
    assert caught.value.line == 3
    assert reason in str(caught.value)


@pytest.mark.parametrize("depth", [120, 400])
def test_v4_ifs_nested_past_what_python_compiles_are_refused_at_load(depth: int) -> None:
    """Jinja2 parses a hundred nested ifs, but Python will not compile the code it makes
    of them: the template is refused with a reason, not an IndentationError."""
    source = "{% if summary %}x" * depth + "{% endif %}" * depth
    with pytest.raises(TemplateError, match="nested too deeply"):
        Template("s", source, name="Deep/sms")


def test_v4_nested_loops_are_stopped_by_the_output_cap() -> None:
    """Loops that would write 100 million characters stop at the cap with a TemplateError."""
    source = (
        "{% for a in range(100000) %}{% for b in range(100) %}0123456789{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateError) as caught:
        Template("s", source, name="Bad/sms")
    assert str(caught.value) == (
        "Bad/sms.text: fails on a sample ticket:"
        " sandbox: the output is over the limit of 5000000 characters"
    )


def test_v4_a_render_that_raises_for_some_values_raises_template_error_not_a_mail() -> None:
    """A value-dependent failure raises TemplateError from render: there is nothing to send."""
    renderer = TemplateRenderer(
        [
            MessageGroup(
                "Ops",
                {
                    "new_ticket_logged": Template(
                        "$tag $summary",
                        "Per hour: {% if cf_minutes %}{{ 60 // (cf_minutes|int) }}{% endif %}",
                        name="Ops/ack",
                    )
                },
            )
        ]
    )
    fine = TemplateValues.for_ticket(ticket(minutes="15"), tag="[ID:42]")
    assert renderer.render("new_ticket_logged", fine, group="Ops").text == "Per hour: 4"
    broken = TemplateValues.for_ticket(ticket(minutes="0"), tag="[ID:42]")
    with pytest.raises(TemplateError, match=r"^Ops/ack.text:1: ZeroDivisionError"):
        renderer.render("new_ticket_logged", broken, group="Ops")


# -- V5 and L1: no header injection through a subject ---------------------------------------


def test_v5_an_unknown_custom_field_renders_empty() -> None:
    """``$CF_`` naming a field the ticket lacks renders as nothing, not an error."""
    template = Template("[$CF_nothing] $summary", "<$CF_nothing>")
    rendered = template.render(TemplateValues.for_ticket(ticket()))
    assert (rendered.subject, rendered.text) == ("[] Printer jammed", "<>")


@pytest.mark.parametrize(
    "field",
    ["x\r\nBcc: victim@evil.example", "x\nBcc: victim@evil.example", "x\rBcc: victim@evil.example"],
)
def test_v5_a_custom_field_with_a_line_break_cannot_add_a_header(field: str) -> None:
    """A custom field with CR/LF used in the subject renders on one line."""
    template = Template("$tag Asset $CF_asset", "ok")
    rendered = template.render(TemplateValues.for_ticket(ticket(asset=field), tag="[ID:42]"))
    assert rendered.subject == "[ID:42] Asset x Bcc: victim@evil.example"


INJECTION = "Re: Help\r\nBcc: victim@evil.example\r\nX-Evil: 1\r\n\r\n<html>spam"


def _composed(subject: str) -> tuple[bytes, EmailMessage]:
    mail = OutboxMail(
        id=1,
        message_id="halomail.42.abc@helpdesk.example",
        to=("alice@customer.example",),
        subject=subject,
        text="body",
        status=OutboxStatus.PENDING,
        created_at=WHEN,
        html="<p>body</p>",
        in_reply_to="orig@customer.example",
    )
    outgoing = compose(mail, SenderIdentity("support@helpdesk.example", "Support"), loop_token="t")
    parsed = email.message_from_bytes(outgoing.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return outgoing.data, parsed


def test_l1_a_crlf_subject_echoed_in_the_acknowledgement_leaves_exactly_our_headers() -> None:
    """A ``Re:`` subject with CR/LF yields one Subject line and exactly the expected header set."""
    assert sys.version_info[:2] >= (3, 11)
    values = TemplateValues.for_ticket(ticket(summary=INJECTION), tag="[ID:42]")
    rendered = default_message_group().templates[MessageKind.NEW_TICKET_LOGGED].render(values)
    assert rendered.subject == (
        "[ID:42] Received: Re: Help Bcc: victim@evil.example X-Evil: 1 <html>spam"
    )
    data, message = _composed(rendered.subject)
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert not any(
        line.startswith((b"Bcc:", b"X-Evil:", b"<html>")) for line in header_block.split(b"\r\n")
    )
    assert sorted(message.keys()) == sorted(
        [
            "Content-Type",
            "MIME-Version",
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "Auto-Submitted",
            "X-Auto-Response-Suppress",
            LOOP_HEADER,
        ]
    )
    assert message["Subject"] == rendered.subject
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
