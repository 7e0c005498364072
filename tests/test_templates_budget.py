"""Templates render under budgets (issue 13, item 6): steps, output, widths, sizes.

Each hostile template is refused with a TemplateError, at load when the sample ticket
already exceeds a budget, else when that mail is rendered; tracemalloc shows that the
refusal comes before the memory is taken.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import TemplateError
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.templates.budget import (
    MAX_INT_BITS,
    MAX_OUTPUT,
    MAX_RENDER_SECONDS,
    MAX_REPEAT,
    MAX_STEPS,
    MAX_WIDTH,
)
from halomail.templates.render import (
    MessageGroup,
    MessageKind,
    Template,
    TemplateRenderer,
    TemplateValues,
)
from halomail.templates.sandbox import Compiled, Names, Sandbox
from halomail.tickets.repository import TicketRepository
from tests.conftest import make_email

#: The most a refused template may allocate while it is refused (the bombs ask for 1 GB
#: and more; the largest refused step, a doubling just under the cap, holds ~5 MB).
FEW_MB = 8_000_000

DOUBLE_8 = "{% set a = a ~ a %}" * 8
ADD_8 = "{% set a = a + a %}" * 8
SQUARE_12 = "{% set n = n * n %}" * 12

# (template, what the error says): each is a way to make a huge string or run for ever.
VECTORS = [
    pytest.param("{{ '%(a)0999999999s' % {'a': 1} }}", "format widths", id="percent-key-width"),
    pytest.param(
        "{{ '%(a(b))0999999999s' % {'a(b)': 1} }}", "format widths", id="percent-nested-key"
    ),
    pytest.param("{{ '%.999999999f' % 1.5 }}", "format widths", id="percent-precision"),
    pytest.param("{{ '%*d' % (10**9, 1) }}", "format widths", id="percent-star"),
    pytest.param("{{ '%(a)0999999999s'|format(a=1) }}", "format widths", id="format-filter"),
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        f"more than {MAX_STEPS} loop iterations",
        id="nested-loops",
    ),
    pytest.param(
        "{% for a in range(100000) %}{% for b in range(100000) if b < 0 %}{% endfor %}{% endfor %}",
        f"more than {MAX_STEPS} loop iterations",
        id="loop-whose-if-skips-everything",
    ),
    pytest.param(
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(40) }}",
        "macro calls",
        id="exponential-macro",
    ),
    pytest.param("{% for i in range(10**10) %}{% endfor %}", "Range too big", id="range"),
    pytest.param("{{ 'x' * 10**9 }}", "a repeat over 100000 items", id="repeat"),
    pytest.param(
        "{% set a = 'x' * 100000 %}" + DOUBLE_8, "a concatenation of", id="tilde-doubling"
    ),
    pytest.param("{% set a = 'x' * 100000 %}" + ADD_8, "a concatenation of", id="plus-doubling"),
    pytest.param("{{ range(100000)|join('x' * 99999) }}", "a join of", id="join-filter"),
    pytest.param("{{ ('x' * 99999).join(['a'] * 100000) }}", "a join of", id="join-method"),
    pytest.param("{{ ('x' * 99999)|replace('', 'y' * 99) }}", "a replace of", id="replace"),
    pytest.param("{{ ('x' * 99999).replace('', 'y' * 99) }}", "a replace of", id="replace-method"),
    pytest.param(
        "{{ ('x' * 99999)|wordwrap(1, wrapstring='y' * 999) }}", "a word wrap of", id="wordwrap"
    ),
    pytest.param("{{ ('-\\n' * 49999)|indent(999) }}", "an indent of", id="indent"),
    pytest.param("{{ [1]|batch(10**9, 'x')|list }}", "a batch of", id="batch"),
    pytest.param("{{ [1]|slice(10**9)|list }}", "a slice of", id="slice"),
    pytest.param("{{ [[1]] * 99999|sum(start=[]) }}", "sum only adds numbers", id="sum-lists"),
    pytest.param("{% set n = 2 ** 100 %}" + SQUARE_12, "bits", id="integer-squaring"),
    pytest.param("{{ ((2 ** 100) ** 100) ** 100 }}", "bits", id="integer-power"),
]


def _peak_while(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What ``action`` raised, and the peak memory it allocated meanwhile."""
    tracemalloc.start()
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the caller asserts what it is
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


@pytest.mark.parametrize(("source", "reason"), VECTORS)
def test_a_hostile_template_is_refused_at_load_within_a_few_mb(source: str, reason: str) -> None:
    """The sample ticket already exceeds the budget: TemplateError at load, memory small."""
    error, peak = _peak_while(lambda: Template("s", source, name="Bad/sms"))
    assert isinstance(error, TemplateError), error
    assert reason in str(error)
    assert str(error).startswith("Bad/sms.text")
    assert peak < FEW_MB


def test_output_stops_at_the_cap_and_keeps_memory_near_it() -> None:
    """Loops writing 100 million characters stop at MAX_OUTPUT; the peak stays near the cap."""
    source = (
        "{% for a in range(100000) %}{% for b in range(100) %}0123456789{% endfor %}{% endfor %}"
    )
    error, peak = _peak_while(lambda: Template("s", source, name="Bad/sms"))
    assert isinstance(error, TemplateError)
    assert f"the output is over the limit of {MAX_OUTPUT} characters" in str(error)
    assert peak < MAX_OUTPUT + FEW_MB


def test_str_format_widths_are_refused_by_the_environment_itself() -> None:
    """Even past the load-time check, the sandbox's str.format refuses a huge width."""
    env = Sandbox(html=False, names=Names(frozenset({"summary"}), {}))
    template = Compiled(env.from_string("{{ '{:>999999999}'.format(summary) }}"))
    error, peak = _peak_while(lambda: template.render({"summary": "x"}))
    assert isinstance(error, SecurityError)
    assert "format widths over 999" in str(error)
    nested = Compiled(env.from_string("{{ '{:>{w}}'.format(summary, w=10**9) }}"))
    with pytest.raises(SecurityError, match="format specs taken from the values"):
        nested.render({"summary": "x"})
    assert peak < FEW_MB


def test_template_names_cannot_reach_the_budget_filters() -> None:
    """The step and concat filters are the compiler's; a template naming them is refused."""
    with pytest.raises(TemplateError, match="the _halomail_step filter is not allowed"):
        Template("s", "{{ summary|_halomail_step }}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{% for line in summary.split() %}{{ line|center(9) }}|{% endfor %}",
            " Printer |    on   |  floor  |    3    |",
        ),
        ("{{ '%-10s|%5.2f' % (summary[:4], 3.14159) }}", "Prin      | 3.14"),
        (
            "{{ summary ~ ' / ' ~ ticketid }}{{ [summary, ticketid]|join(', ') }}",
            "Printer on floor 3 / 42Printer on floor 3, 42",
        ),
        ("{{ summary|replace('floor', 'level')|wordwrap(10) }}", "Printer on\nlevel 3"),
        ("{% macro line(x) %}- {{ x }}{% endmacro %}{{ line(summary) }}", "- Printer on floor 3"),
    ],
)
def test_ordinary_templates_render_as_before(source: str, expected: str) -> None:
    """Loops, formats, joins and macros of a normal size render exactly as Jinja2 renders them."""
    values = TemplateValues({"summary": "Printer on floor 3", "ticketid": "42"})
    assert Template("s", source).render(values).text == expected


def test_an_ordinary_template_gives_the_exact_text() -> None:
    """Counting steps adds nothing to the output: a loop renders exactly its text."""
    template = Template("s", "{% for w in summary.split() %}[{{ w }}]{% endfor %} #$ticketid")
    values = TemplateValues({"summary": "a b c", "ticketid": "7"})
    assert template.render(values).text == "[a][b][c] #7"


def test_a_value_that_breaks_a_budget_sends_nothing_and_the_ticket_is_still_created(
    repository: TicketRepository,
    settings: ProcessorSettings,
    connector: MemoryConnector,
    transport: MemoryTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A subject used as a format string asks for a 1 GB width: refused, no mail, one ticket."""
    group = MessageGroup(
        "Formats",
        {
            MessageKind.NEW_TICKET_LOGGED: Template(
                subject="$tag Received", text="{{ summary % {'a': ticketid} }}\n"
            )
        },
    )
    processor = MailProcessor(
        repository,
        [Mailbox(connector, message_group="Formats")],
        settings,
        transport=transport,
        renderer=TemplateRenderer([group]),
    )
    connector.add(make_email(subject="%(a)0999999999s"))
    tracemalloc.start()
    try:
        report = processor.run_once()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (outcome,) = report.outcomes
    assert outcome.outcome.value == "created"
    assert outcome.acknowledged is False
    assert transport.sent == []
    assert len(repository.list_tickets()) == 1
    assert "format widths over 999" in caplog.text
    assert peak < 50_000_000  # the whole run, parsing and storage included; not 1 GB


def test_a_loop_over_a_long_value_is_stopped_at_render_time() -> None:
    """Loops the sample passes but a long subject multiplies past MAX_STEPS: TemplateError."""
    template = Template(
        "s",
        "{% for a in summary %}{% for b in summary %}{% for c in summary %}"
        "{% endfor %}{% endfor %}{% endfor %}done",
        name="Ops/ack",
    )
    assert template.render(TemplateValues({"summary": "short"})).text == "done"
    with pytest.raises(TemplateError, match=f"more than {MAX_STEPS} loop iterations"):
        template.render(TemplateValues({"summary": "x" * 200}))


def test_the_docs_state_the_budgets_the_code_applies() -> None:
    """docs/templates.md and docs/security.md give the limits of halomail.templates.budget."""
    docs = Path(__file__).parent.parent / "docs"
    for name in ("templates.md", "security.md"):
        text = docs.joinpath(name).read_text("utf-8")
        for limit in (MAX_STEPS, MAX_OUTPUT, MAX_REPEAT, MAX_INT_BITS):
            assert f"{limit:,}" in text, (name, limit)
        assert f"{MAX_RENDER_SECONDS:g} seconds" in text
        assert f"{MAX_WIDTH - 1}" in text
