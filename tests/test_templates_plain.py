"""Template parts rendered without Jinja2 give exactly what Jinja2 gives.

A part that only prints and tests variables (``$name``, ``{{ name }}``, ``{% if name %}``
with ``elif``/``else``) renders by a join (:mod:`halomail.templates.plain`). These tests
render random templates of that kind, and some that are not, both ways and compare the
text, or the error and its line, character for character.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError, UndefinedError
from markupsafe import Markup

from halomail.errors import TemplateError
from halomail.templates import plain
from halomail.templates.budget import MAX_OUTPUT
from halomail.templates.defaults import SAMPLE
from halomail.templates.render import (
    _HTML,
    _TEXT,
    VARIABLES,
    MessageKind,
    Template,
    TemplateRenderer,
    TemplateValues,
    default_message_group,
)
from halomail.templates.sandbox import Compiled, Problem, Sandbox, compile_part, translate

# Names as administrators write them: canonical, aliases, any case, with underscores.
_WRITTEN = sorted(
    {v.name for v in VARIABLES}
    | {a for v in VARIABLES for a in v.aliases}
    | {"TicketID", "ticket_id", "Summary", "USER_NAME", "Faultid"}
)
_FIELDS = ("Serial Number", "serial_number", "Größe", "x²", "Site")
# Literal text: HTML specials, CR and LF, spaces and tabs (whitespace control), `$` not
# followed by a name, braces, accents. A `{` next to generated markup may make a syntax
# error (the example is rejected), never markup that compiles: `{{{ name }}` does not.
_LITERAL = st.text(alphabet="<>&\"' \t\r\n$-.:{}%#aé€", max_size=12)
_VALUE_TEXT = st.text(alphabet="<>&\"' \r\n\t{}%#$-*7aZé\u2028\x00", max_size=20)

# A value as hosts pass them: text (with template syntax: values are values), None, numbers.
_VALUE = st.one_of(
    _VALUE_TEXT,
    st.sampled_from(["{{ 7*7 }}", "$ticketid", "{% if x %}", "</p><script>", "a\r\nb\rc\nd"]),
    st.none(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
)


def _dollar(name: str) -> str:
    return "$" + name


_PRINT = st.one_of(
    st.sampled_from(_WRITTEN).map(_dollar),
    st.sampled_from(_FIELDS).map(lambda field: "$CF_" + field.replace(" ", "_")),
    st.sampled_from(_WRITTEN).map(lambda name: "$-" + name),  # an escape: literal `$name`
    st.sampled_from(_WRITTEN).map(lambda name: "{{ " + name + " }}"),
    st.sampled_from(
        [
            "{{ range }}",
            "{{ self }}",  # Jinja2's own, not a context variable: the plain path defers
            "{{cf_site}}",
            "{{- summary -}}",
            "{# a comment #}",
            "{% raw %}{{ $summary }}{% endraw %}",
        ]
    ),
)
# Block tags with and without whitespace control, so that trim and lstrip are compared.
_OPEN = st.sampled_from(["{% ", "{%- ", "{%+ "])
_CLOSE = st.sampled_from([" %}", " -%}", " %}\n", "  %}\n  "])
# Jinja2 constructs the plain path does not take: a part with one stays on Jinja2.
_NOT_PLAIN = st.sampled_from(
    [
        "{{ summary|upper }}",
        "{% for n in range(2) %}$ticketid{% endfor %}",
        "{% if not tag %}no tag{% endif %}",
        "{{ 'x' }}",
        "{% set s = summary %}{{ s }}",
        "{{ summary ~ tag }}",
    ]
)


@st.composite
def _body(draw: st.DrawFn, depth: int = 0) -> tuple[str, bool]:
    """A template body and whether it should be plain (no construct outside the subset)."""
    pieces: list[str] = []
    plain = True
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(
            st.sampled_from(
                ["literal", "print", "if", "other"] if depth < 2 else ["literal", "print"]
            )
        )
        if kind == "literal":
            pieces.append(draw(_LITERAL))
        elif kind == "print":
            pieces.append(draw(_PRINT))
        elif kind == "if":
            source, inner_plain = draw(_if(depth + 1))
            pieces.append(source)
            plain = plain and inner_plain
        elif draw(st.integers(0, 3)) == 0:  # now and then a construct Jinja2 keeps
            pieces.append(draw(_NOT_PLAIN))
            plain = False
    return "".join(pieces), plain


@st.composite
def _if(draw: st.DrawFn, depth: int) -> tuple[str, bool]:
    def tag(words: str) -> str:
        return draw(_OPEN) + words + draw(_CLOSE)

    def test() -> str:
        return draw(st.sampled_from([*_WRITTEN, "CF_Site"]))

    body, plain = draw(_body(depth))
    source = tag("if " + test()) + body
    for _ in range(draw(st.integers(0, 2))):
        body, inner = draw(_body(depth))
        source += tag("elif " + test()) + body
        plain = plain and inner
    if draw(st.booleans()):
        body, inner = draw(_body(depth))
        source += tag("else") + body
        plain = plain and inner
    return source + tag("endif"), plain


@st.composite
def _values(draw: st.DrawFn) -> TemplateValues:
    """Some catalogue variables and custom fields set, the others left without a value."""
    names = draw(st.lists(st.sampled_from(_WRITTEN), max_size=8, unique=True))
    values: dict[str, Any] = {name: draw(_VALUE) for name in names}
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
        values["CF_" + field] = draw(_VALUE)
    return TemplateValues(values)


def _outcome(compiled: Compiled, render: str, variables: dict[str, Any]) -> tuple[Any, ...]:
    """What a render gives: its text, or its error, message and template line."""
    try:
        return ("text", getattr(compiled, render)(variables))
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return ("error", type(exc), str(exc), compiled.line_of(exc))


def _compiled(source: str, env: Sandbox) -> Compiled:
    try:
        return compile_part(source, env)
    except Problem:  # an invalid template is refused the same way either path
        reject()


def _assert_same(compiled: Compiled, variables: dict[str, Any]) -> tuple[Any, ...]:
    plain = _outcome(compiled, "render", variables)
    assert plain == _outcome(compiled, "render_jinja", variables)
    return plain


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_body(), html=st.booleans(), values=_values())
def test_plain_parts_render_exactly_as_jinja2(
    body: tuple[str, bool], html: bool, values: TemplateValues
) -> None:
    """Random $variable and if/elif/else templates render the same text with or without Jinja2."""
    source, is_plain = body
    compiled = _compiled(source, _HTML if html else _TEXT)
    if is_plain:
        assert compiled.plain is not None, source
    elif "{#" not in source:  # a `{` and a `#` in literal text may comment the rest out
        assert compiled.plain is None, source
    _assert_same(compiled, values._variables)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_body(),
    html=st.booleans(),
    char=st.sampled_from("x<&"),
    size=st.sampled_from(
        [MAX_OUTPUT // 4 + 1, MAX_OUTPUT // 2 + 1, MAX_OUTPUT - 3, MAX_OUTPUT + 1]
    ),
    name=st.sampled_from(["summary", "tag", "username", "signature", "cf_site"]),
)
def test_huge_values_meet_the_same_output_budget(
    body: tuple[str, bool], html: bool, char: str, size: int, name: str
) -> None:
    """A huge value passes or breaks the output budget alike with or without Jinja2."""
    source = f"$summary {body[0]} $tag $username{{% if signature %}}$signature{{% endif %}}$CF_Site"
    compiled = _compiled(source, _HTML if html else _TEXT)
    values = TemplateValues({name: char * size, "signature": "s"})
    _assert_same(compiled, values._variables)


@pytest.mark.parametrize("html", [False, True])
def test_the_output_budget_holds_at_its_exact_limit(html: bool) -> None:
    """MAX_OUTPUT characters render; one more is refused, by the plain path as by Jinja2."""
    compiled = compile_part("ab$summary", _HTML if html else _TEXT)
    assert compiled.plain is not None
    at_limit = TemplateValues({"summary": "x" * (MAX_OUTPUT - 2)})._variables
    over = TemplateValues({"summary": "x" * (MAX_OUTPUT - 1)})._variables
    assert _assert_same(compiled, at_limit) == ("text", "ab" + "x" * (MAX_OUTPUT - 2))
    outcome = _assert_same(compiled, over)
    assert outcome[:2] == ("error", SecurityError)


def test_a_name_without_a_value_falls_back_to_jinja2_and_its_error() -> None:
    """A name the variables lack and that resolves to nothing raises Jinja2's own error."""
    compiled = compile_part("before {{ range }} after", _TEXT)
    assert compiled.plain is not None
    with pytest.raises(UndefinedError):
        compiled.render({})
    assert _assert_same(compiled, {})[:2] == ("error", UndefinedError)
    special = compile_part("{% if self %}{{ self }}{% endif %}", _HTML)  # Jinja2's own name
    assert _assert_same(special, TemplateValues({})._variables) == (
        "text",
        "&lt;TemplateReference None&gt;",
    )
    with_globals = dict(_TEXT.globals)
    assert compiled.render(with_globals) == f"before {with_globals['range']} after"


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_built_in_part_renders_without_jinja2_and_the_same(kind: MessageKind) -> None:
    """The built-in templates are all plain, and render as Jinja2 with full and empty values."""
    template = default_message_group().templates[kind]
    parts = [part for part in template._parts if part is not None]
    assert all(part.plain is not None for part in parts)
    hostile = {"tag": "<b>&amp;", "signature": "Amy\r\n<Agent>", "summary": "{{ 7*7 }} $ticketid"}
    for values in (SAMPLE, {}, hostile):
        for part in parts:
            _assert_same(part, TemplateValues(values)._variables)


def test_values_stay_values_in_the_acknowledgement() -> None:
    """Template syntax in a customer's subject is printed as written, escaped in HTML."""
    summary = "{{ 7*7 }} {% if tag %}$ticketid <b>"
    rendered = TemplateRenderer().render(
        MessageKind.NEW_TICKET_LOGGED,
        TemplateValues({"summary": summary, "ticketid": 7, "tag": "[ID:7]"}),
    )
    assert rendered.subject == f"[ID:7] Received: {summary}"
    assert f"Summary:  {summary}\n" in rendered.text
    assert rendered.html is not None
    assert "{{ 7*7 }} {% if tag %}$ticketid &lt;b&gt;" in rendered.html


def test_a_huge_value_printed_many_times_stops_at_the_budget() -> None:
    """Escaping stops once the values pass the budget: the peak stays near one budget."""
    compiled = compile_part("$details " * 50, _HTML)
    assert compiled.plain is not None
    values = TemplateValues({"details": "<" * (MAX_OUTPUT // 4 + 1)})._variables
    tracemalloc.start()
    try:
        with pytest.raises(SecurityError, match="output is over the limit"):
            compiled.render(values)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One escaped copy is MAX_OUTPUT bytes (ASCII); all fifty would be 250 MB.
    assert peak < 3 * MAX_OUTPUT


def test_an_over_budget_render_names_the_template_part() -> None:
    """The plain path's budget error reaches the administrator as Jinja2's did."""
    template = Template("$summary", "$details", name="Big/new_ticket_logged")
    with pytest.raises(TemplateError, match="output is over the limit") as caught:
        template.render(TemplateValues({"details": "d" * (MAX_OUTPUT + 1)}))
    assert caught.value.template == "Big/new_ticket_logged.text"


def _nested_ifs(depth: int) -> str:
    """``depth`` ifs, each inside the one before, printing a value at the bottom."""
    opened = "".join(f"{{% if {'summary' if n % 2 else 'tag'} %}}<{n}>" for n in range(depth))
    return opened + "$summary$tag" + "{% endif %}" * depth


@pytest.mark.parametrize("depth", [25, 60])
@pytest.mark.parametrize("html", [False, True])
def test_deeply_nested_ifs_render_as_jinja2(depth: int, html: bool) -> None:
    """Ifs nested past Python's static block limit (20) still compile and render the same."""
    compiled = compile_part(_nested_ifs(depth), _HTML if html else _TEXT)
    assert compiled.plain is not None
    for values in ({"summary": "<s>", "tag": "t"}, {"summary": "", "tag": "t"}, {}):
        _assert_same(compiled, TemplateValues(values)._variables)
    full = _assert_same(compiled, TemplateValues({"summary": "s", "tag": "t"})._variables)
    assert full == ("text", "".join(f"<{n}>" for n in range(depth)) + "st")


def test_ifs_nested_past_what_python_compiles_stay_on_jinja2() -> None:
    """Generated code Python cannot compile (too many indentation levels) gives no plain form.

    Jinja2's own generated code nests as deep and fails as well (from about 99 ifs): such
    a part is refused either way, never rendered wrong.
    """
    tree = _HTML.parse(translate(_nested_ifs(200), _HTML.names))
    assert plain.from_tree(tree, finalize=None, html=False, resolve=str) is None
    assert plain.from_tree(tree, finalize=_HTML.finalize, html=True, resolve=str) is None


@pytest.mark.parametrize("depth", [200, 5000])
def test_generating_too_deep_a_part_fails_and_does_not_render(depth: int) -> None:
    """Code for choices nested past Python's limits is refused by Python's compiler (or
    this module's recursion), which :func:`~halomail.templates.plain.from_tree` catches."""
    pieces: plain.Pieces = ("x", plain.Value("summary"))
    for _ in range(depth):
        pieces = (plain.Choice((("summary", pieces),), ()),)
    with pytest.raises((SyntaxError, RecursionError, MemoryError)):
        plain._generated(pieces, ("summary",), finalize=None, html=False, resolve=str)


class _Loud:
    """A value whose ``str`` raises, and counts its calls."""

    calls = 0

    def __str__(self) -> str:
        _Loud.calls += 1
        raise ValueError("no text")


class _Counted:
    """A value whose ``str`` counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return "<c>"


@pytest.mark.parametrize("html", [False, True])
def test_a_value_printed_only_in_a_branch_not_taken_is_not_converted(html: bool) -> None:
    """A value whose ``str`` raises renders, as in Jinja2, when its branch is not taken."""
    compiled = compile_part(
        "[{% if tag %}$summary{% elif username %}x$summary{% endif %}$tag]",
        _HTML if html else _TEXT,
    )
    assert compiled.plain is not None
    _Loud.calls = 0
    untaken = {"tag": "", "username": "", "summary": _Loud()}
    assert compiled.plain.render(untaken) == "[]"
    assert _Loud.calls == 0
    assert _assert_same(compiled, untaken) == ("text", "[]")
    taken = {"tag": "", "username": "u", "summary": _Loud()}
    assert compiled.plain.render(taken) is None  # Jinja2 renders it and raises its error
    assert _assert_same(compiled, taken)[:3] == ("error", ValueError, "no text")


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize(
    "source",
    [
        "$summary {% if tag %}$summary{% else %}$summary{% endif %} $summary",
        "{% if tag %}$summary{% endif %}{% if username %}{% if tag %}$summary{% endif %}"
        "{% else %}$summary{% endif %}$summary$summary",
    ],
)
def test_each_value_is_converted_once_per_render(html: bool, source: str) -> None:
    """A value printed many times, in branches or not, is converted once, and only once."""
    compiled = compile_part(source, _HTML if html else _TEXT)
    assert compiled.plain is not None
    for tag in ("", "t"):
        for username in ("", "u"):
            value = _Counted()
            variables = {"tag": tag, "username": username, "summary": value}
            rendered = compiled.plain.render(variables)
            assert value.calls == 1
            assert ("text", rendered) == _assert_same(compiled, variables)


def test_literal_text_is_printed_exactly_never_run() -> None:
    """Quotes, backslashes, braces, triple quotes, newlines and NUL print as written."""
    literal = (
        "q\"u'o\\te \\\\ \\n \\x00 { } {} \"\"\" ''' \n\t\x00 é \u2028"
        "\")\nimport os\nos._exit(1)\n(\" '+__import__('os')+' f\"{summary}\" %s"
    )
    for env in (_TEXT, _HTML):
        compiled = compile_part(literal + "{{ summary }}" + literal, env)
        assert compiled.plain is not None
        variables = {"summary": "<v>"}
        value = "&lt;v&gt;" if env is _HTML else "<v>"
        assert compiled.plain.render(variables) == literal + value + literal
        assert _assert_same(compiled, variables) == ("text", literal + value + literal)


class _Html:
    """A value with its own HTML form, as MarkupSafe's ``escape`` honours it."""

    def __html__(self) -> str:
        return "<i>own</i>"

    def __str__(self) -> str:
        return "<own>"


class _Text(str):
    """A ``str`` subclass: escaped as a ``str``, but not taken for exactly one."""


@pytest.mark.parametrize(
    "value",
    [
        "a<b>&\"'",
        "line\r\none\rtwo\n<three>",
        Markup("<b>safe</b>"),
        _Text("<sub>"),
        _Html(),
        7,
        -1.5,
        None,
        True,
        "",
    ],
)
@pytest.mark.parametrize("html", [False, True])
def test_every_kind_of_value_prints_as_jinja2_prints_it(value: Any, html: bool) -> None:
    """Plain strings, Markup, str subclasses, ``__html__`` objects, numbers and None."""
    compiled = compile_part(
        "[$summary|{% if summary %}$summary{% endif %}]", _HTML if html else _TEXT
    )
    assert compiled.plain is not None
    variables = {"summary": value}
    outcome = _assert_same(compiled, variables)
    assert outcome == ("text", compiled.plain.render(variables))
