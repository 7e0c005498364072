"""``expand_text``: ``$variables`` in what agents write, with the templates' sandbox."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from halomail import (
    MailProcessor,
    MemoryConnector,
    TemplateError,
    TemplateValues,
    TicketRepository,
    expand_text,
)
from halomail.templates.render import MAX_TEXT_LENGTH
from halomail.tickets.models import Ticket
from tests.conftest import make_email


def _ticket_from_mail(
    make_processor: Callable[..., MailProcessor],
    connector: MemoryConnector,
    repository: TicketRepository,
    subject: str,
) -> Ticket:
    """A ticket logged the real way from an email with ``subject``, a custom field added."""
    connector.add(make_email(subject=subject))
    make_processor().run_once()
    ticket = repository.get_ticket(1)
    assert ticket is not None
    assert ticket.summary == subject
    # A custom field whose value looks like a variable: it must stay a value.
    return attrs.evolve(ticket, custom_fields={"Serial Number": "SN-778 $ticketid"})


def test_a_canned_reply_expands_ids_custom_fields_and_keeps_dollar_dash_literal(
    make_processor: Callable[..., MailProcessor],
    connector: MemoryConnector,
    repository: TicketRepository,
) -> None:
    """$ticket_id, $CF_Serial_Number and $agentname expand; $-ticketid stays as written."""
    ticket = _ticket_from_mail(make_processor, connector, repository, "Printer jammed")
    values = TemplateValues.for_ticket(ticket, agent_name="Amy Agent")
    canned = "Ticket $ticket_id, serial $CF_Serial_Number, by $agentname. Type $-ticketid."
    assert expand_text(canned, values) == (
        f"Ticket {ticket.id}, serial SN-778 $ticketid, by Amy Agent. Type $ticketid."
    )


def test_a_customer_subject_with_variables_and_jinja_comes_out_literally(
    make_processor: Callable[..., MailProcessor],
    connector: MemoryConnector,
    repository: TicketRepository,
) -> None:
    """A subject holding $agent_name and {{ 7*7 }} is inserted as written, never expanded."""
    subject = "Help $agent_name {{ 7*7 }} {% for x in range(9) %}x{% endfor %}"
    ticket = _ticket_from_mail(make_processor, connector, repository, subject)
    values = TemplateValues.for_ticket(ticket, agent_name="Amy Agent")
    assert expand_text("Re: $summary ($agent_name)", values) == f"Re: {subject} (Amy Agent)"


def test_html_text_escapes_every_value() -> None:
    """With html=True the customer's markup arrives escaped, the agent's own is kept."""
    values = TemplateValues({"summary": "<script>alert(1)</script>", "username": "Al"})
    assert expand_text("<p>$username: $summary</p>", values, html=True) == (
        "<p>Al: &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    )


def test_an_unknown_variable_is_refused_with_its_line_and_a_suggestion() -> None:
    """A typo in a note is a TemplateError naming the text, the line and the variable."""
    with pytest.raises(TemplateError, match=r"canned/reset:2: unknown variable \$ticktid") as err:
        expand_text("Hello\nticket $ticktid", {"ticketid": 1}, name="canned/reset")
    assert "did you mean $ticketid?" in str(err.value)
    assert err.value.line == 2


def test_the_sandbox_and_budgets_of_templates_apply() -> None:
    """Unsafe attributes and memory bombs are refused, as in an administrator's template."""
    with pytest.raises(TemplateError, match="sandbox"):
        expand_text("{{ summary.__class__ }}", {"summary": "x"})
    with pytest.raises(TemplateError):
        expand_text("{{ 'x' * 10**9 }}", {})


def test_a_text_over_the_limit_is_refused_before_it_is_compiled() -> None:
    """The input is bounded: a text one character over MAX_TEXT_LENGTH is refused."""
    expand_text("a" * MAX_TEXT_LENGTH, {})
    with pytest.raises(TemplateError, match="at most 100,000"):
        expand_text("$summary " * (MAX_TEXT_LENGTH // 9 + 1), {"summary": "x"})


def test_a_values_mapping_with_an_unknown_key_is_refused() -> None:
    """Values given as a mapping are checked like TemplateValues: a stray key is an error."""
    with pytest.raises(ValueError, match="not a template variable"):
        expand_text("$ticketid", {"ticket": 1})


# Openers that are never closed: a markup regex that rescans to the end from each one
# needs minutes on these (quadratic); one pass takes a fraction of a second.
UNCLOSED = ["{{", "{{ ", "{#", "{%", "{% raw %}", "{%raw%}x{%endraw%}{{", "{", "{% if x %}"]


@pytest.mark.timeout(60)  # a generous deadline, not a measurement: quadratic takes minutes
@pytest.mark.parametrize("unit", UNCLOSED)
def test_hostile_markup_at_the_size_limit_is_refused_in_one_pass(unit: str) -> None:
    """100,000 characters of unclosed or nested markup are a TemplateError, never a hang."""
    text = (unit * (MAX_TEXT_LENGTH // len(unit) + 1))[: MAX_TEXT_LENGTH - 10]
    with pytest.raises(TemplateError, match="syntax error"):
        expand_text(text + " $ticketid", {"ticketid": 1})
