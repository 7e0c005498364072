"""The machinery behind :mod:`halomail.templates.render`: ``$`` translation, the sandbox, checks.

An administrator's template is compiled once, here, in three steps:

1. ``$name`` in the template's *data* (outside ``{{ }}``, ``{% %}``, ``{# #}`` and
   ``{% raw %}``) becomes a Jinja2 variable lookup, ``$-name`` the literal ``$name``;
   newlines are never added, so Jinja2's line numbers are the template's own.
2. The Jinja2 syntax tree is checked: only known variables, no attribute or item
   whose name starts with ``_`` (nor ``format``/``format_map``), no ``attr`` filter,
   no ``safe`` filter or ``autoescape`` block in HTML, no include/import/extends.
3. Its loops and macros are made to count steps, and it is compiled in an
   :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` subclass that renders under
   the budgets of :mod:`halomail.templates.budget`: steps, time, output size, and the
   size of what an operation builds (``'x' * 10**9``, ``2 ** 10**9``,
   ``'%(a)0999999999s' % {...}``, ``'x'.center(10**9)``, ``join``, ``replace`` …).

A part that only prints and tests variables (``$name``, ``{% if name %}`` with ``elif``
and ``else``: all the built-in templates) also gets a plain form, built from the same
parsed tree, that renders by a join to the same text (:mod:`halomail.templates.plain`).

Values are never template source: they reach Jinja2 only as context variables, and the
plain form only prints and tests them.
"""

from __future__ import annotations

import difflib
import re
import types
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2 import Template as JinjaTemplate
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from markupsafe import Markup, escape

from halomail.templates import budget, plain
from halomail.templates.plain import Plain

__all__: list[str] = []

# `$name`, `$-name`: a name starts with a letter and runs over letters, digits and `_`.
_DOLLAR: Final = re.compile(r"\$(-?)([^\W\d_]\w*)")
# The parts of a template that are Jinja2 markup, not data: raw blocks (their content is
# literal), expressions, statements and comments. They are found by `_markup_spans`, in
# one pass: a regex such as `\{\{.*?\}\}` would rescan to the end from every `{{` of a
# text that never closes one (quadratic on `{{` * 50,000).
_OPENER: Final = re.compile(r"\{[{%#]")
_CLOSERS: Final = {"{{": "}}", "{%": "%}", "{#": "#}"}
_RAW_OPEN: Final = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_RAW_CLOSE: Final = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_FIELD_JUNK: Final = re.compile(r"\W+")
_UNSAFE_NAMES: Final = frozenset({"format", "format_map", "mro"})


class Problem(Exception):
    """Why a template part does not compile, at which line (turned into a public error).

    Args:
        message: What is wrong, for an administrator.
        line: The line in the part, when known.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


def field_key(field: str) -> str:
    """The ``cf_`` variable a custom field is known by: ``Serial Number`` → ``cf_serial_number``."""
    folded = unicodedata.normalize("NFKC", field).lower()
    return "cf_" + _FIELD_JUNK.sub("_", folded).strip("_")


# -- names ---------------------------------------------------------------------------


@attrs.frozen
class Names:
    """The variables a template may use: canonical names and the aliases leading to them."""

    canonical: frozenset[str]
    aliases: Mapping[str, str]  # alias → canonical, both lower-case

    def resolve(self, name: str) -> str | None:
        """The canonical variable for ``name`` (any case, alias or ``CF_…``), or ``None``.

        Underscores in a catalogue name are ignored: ``$ticket_id`` is ``$ticketid``.
        """
        lowered = name.lower()
        if lowered.startswith("cf_"):
            key = field_key(name[3:])
            return key if len(key) > 3 else None
        squeezed = lowered.replace("_", "")
        if squeezed in self.canonical:
            return squeezed
        return self.aliases.get(squeezed)


# -- the environment -------------------------------------------------------------------


class _Context(Context):
    """Resolves aliases, any case, and absent catalogue or custom-field variables as ``""``.

    Only reached for names the template was allowed to use (checked at load), so a
    miss here is an absent value, never a typo.
    """

    names: Names  # set on the subclass made per environment

    def resolve_or_missing(self, key: str) -> Any:
        # The first two lookups are Jinja2's own; the rest only runs on a miss.
        if key in self.vars:
            return self.vars[key]
        if key in self.parent:
            return self.parent[key]
        canonical = self.names.resolve(key)
        if canonical is None:
            return missing
        return self.parent.get(canonical, "")


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with the memory bombs it lets through refused.

    Args:
        html: Autoescape every value (and turn line breaks in values into ``<br>``).
        names: The variables templates may use.
    """

    # Intercepting these also stops Jinja2 folding `10**10**10` at compile time.
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, html: bool, names: Names) -> None:
        super().__init__(
            autoescape=html,
            undefined=StrictUndefined,
            # Friendly to text templates: a block tag's own line leaves no blank line.
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            finalize=_html_value if html else None,
            auto_reload=False,
            cache_size=0,
        )
        self.html = html
        self.names = names
        self.context_class = type("_BoundContext", (_Context,), {"names": names})
        # lipsum(10**9) builds gigabytes of text; nothing in an email needs it.
        self.globals.pop("lipsum", None)
        self.filters.update(budget.FILTERS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse the operations whose result would be huge, then apply ``operator``."""
        budget.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Refuse a string method call whose result would be huge, then call as the sandbox does."""
        if isinstance(__obj, types.BuiltinMethodType):
            owner = getattr(__obj, "__self__", None)
            if isinstance(owner, str):
                budget.check_str_method(__obj.__name__, owner, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` as the sandbox wraps it, refusing huge widths and precisions first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            budget.check_str_format(text)
            return wrapped(*args, **kwargs)

        return checked


def _html_value(value: Any) -> Any:
    """A value's line breaks as ``<br>`` in HTML (escaped first; others escape as usual)."""
    if type(value) is str and "\n" in value:
        lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return Markup("<br>\n").join(escape(line) for line in lines)
    return value


# -- compiling ---------------------------------------------------------------------------


def translate(source: str, names: Names) -> str:
    """``source`` with every ``$name`` in its data made a Jinja2 variable lookup.

    Raises:
        Problem: An unknown ``$name``, with its line.
    """
    out: list[str] = []
    position = 0
    for start, end in _markup_spans(source):
        out.append(_translate_data(source, position, start, names))
        out.append(source[start:end])
        position = end
    out.append(_translate_data(source, position, len(source), names))
    return "".join(out)


class _Finder:
    """``str.find`` (or a regex search) from ever later starts, each character read once.

    A search from ``start`` that found ``at`` answers every later search starting at or
    before ``at``; one that found nothing answers every later search.
    """

    def __init__(self, source: str, needle: str | re.Pattern[str]) -> None:
        self.source = source
        self.needle = needle
        self.found: tuple[int, int] | None = None  # (start, end) of the last match
        self.exhausted_from: int | None = None

    def find(self, start: int) -> tuple[int, int] | None:
        """The first match at or after ``start``, as (start, end), or ``None``."""
        if self.exhausted_from is not None and start >= self.exhausted_from:
            return None
        if self.found is not None and start <= self.found[0]:
            return self.found
        if isinstance(self.needle, str):
            at = self.source.find(self.needle, start)
            match = None if at < 0 else (at, at + len(self.needle))
        else:
            found = self.needle.search(self.source, start)
            match = None if found is None else found.span()
        if match is None:
            self.exhausted_from = start
        self.found = match
        return match


def _markup_spans(source: str) -> list[tuple[int, int]]:
    """The (start, end) of each raw block, expression, statement and comment, in order.

    An opener that is never closed makes the rest of the source markup: Jinja2 then
    reports the syntax error.
    """
    closers = {opener: _Finder(source, closer) for opener, closer in _CLOSERS.items()}
    raw_close = _Finder(source, _RAW_CLOSE)
    spans: list[tuple[int, int]] = []
    position = 0
    while (opener := _OPENER.search(source, position)) is not None:
        start = opener.start()
        raw = _RAW_OPEN.match(source, start)
        closed = raw_close.find(raw.end()) if raw else None
        if closed is None:
            closed = closers[opener.group()].find(start + 2)
        end = len(source) if closed is None else closed[1]
        spans.append((start, end))
        position = end
    return spans


def _translate_data(source: str, start: int, end: int, names: Names) -> str:
    def replace(match: re.Match[str]) -> str:
        dash, name = match.groups()
        if dash:
            return "$" + name
        canonical = names.resolve(name)
        if canonical is None:
            line = source.count("\n", 0, start + match.start()) + 1
            raise Problem(f"unknown variable ${name}{_suggest(name, names)}", line)
        return "{{ " + canonical + " }}"

    return _DOLLAR.sub(replace, source[start:end])


def _suggest(name: str, names: Names) -> str:
    known = sorted(names.canonical | set(names.aliases))
    close = difflib.get_close_matches(name.lower(), known, n=1)
    return f" (did you mean ${close[0]}?)" if close else ""


def check(tree: nodes.Template, env: Sandbox) -> None:
    """Refuse what the sandbox would only catch at send time, or not at all.

    Raises:
        Problem: The first unknown variable or unsafe construct, with its line.
    """
    known = set(env.globals)
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in known and env.names.resolve(name) is None:
            line = next(n.lineno for n in tree.find_all(nodes.Name) if n.name == name)
            raise Problem(f"unknown variable {name}{_suggest(name, env.names)}", line)
    for node in tree.find_all(nodes.Node):
        reason = _unsafe(node, env.html)
        if reason is not None:
            raise Problem(reason, node.lineno)


def _unsafe_name(name: Any) -> bool:
    return isinstance(name, str) and any(
        part.startswith("_") or part in _UNSAFE_NAMES for part in name.split(".")
    )


def _unsafe(node: nodes.Node, html: bool) -> str | None:
    if isinstance(node, nodes.Getattr) and _unsafe_name(node.attr):
        return f"sandbox: access to attribute {node.attr!r} is not allowed"
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and _unsafe_name(node.arg.value)
    ):
        return f"sandbox: access to item {node.arg.value!r} is not allowed"
    if isinstance(node, nodes.Filter | nodes.Test):
        if node.name == "attr":
            return "sandbox: the attr filter is not allowed"
        if node.name.startswith("_"):
            return f"sandbox: the {node.name} filter is not allowed"
        if html and node.name == "safe":
            return "the safe filter is not allowed in HTML: every value is escaped"
        for keyword in node.kwargs:
            if isinstance(keyword.value, nodes.Const) and _unsafe_name(keyword.value.value):
                return f"sandbox: attribute {keyword.value.value!r} is not allowed"
    if isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
        return "templates cannot extend, include or import other templates"
    if isinstance(node, nodes.EvalContextModifier):
        return "autoescape cannot be changed: every value in HTML is escaped"
    return None


@attrs.frozen
class Compiled:
    """One compiled template part, rendered against a prepared variables dict.

    Args:
        template: The Jinja2 template, its loops and macros counting steps
            (:func:`~halomail.templates.budget.count_steps`).
        variables: The canonical names of the catalogue and custom-field variables the
            part reads: a value no part reads need not be looked up.
    """

    template: JinjaTemplate
    variables: frozenset[str] = frozenset()
    plain: Plain | None = None

    def render(self, variables: dict[str, Any]) -> str:
        """The rendered text, within the budgets (any exception from the template propagates).

        A part that only prints and tests variables renders without Jinja2, to the same
        text (:mod:`halomail.templates.plain`); every other part, or render, with Jinja2.
        """
        if self.plain is not None:
            rendered = self.plain.render(variables)
            if rendered is not None:
                return rendered
        return self.render_jinja(variables)

    def render_jinja(self, variables: dict[str, Any]) -> str:
        """The rendered text, always through Jinja2 (what :meth:`render` must equal)."""
        # shared=True: `variables` already holds the globals; no copy per render.
        context = self.template.new_context(variables, shared=True)
        with budget.rendering():
            return budget.capped(self.template.root_render_func(context))

    def line_of(self, exc: BaseException) -> int | None:
        """The template line ``exc`` was raised at, from its traceback."""
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals.get("__jinja_template__") is self.template:
                line = self.template.get_corresponding_lineno(tb.tb_lineno)
            tb = tb.tb_next
        return line


def compile_part(source: str, env: Sandbox) -> Compiled:
    """Translate, check and compile one part (subject, text or HTML).

    Raises:
        Problem: The part is invalid or unsafe, with its line.
    """
    translated = translate(source, env.names)
    try:
        tree = env.parse(translated)
        check(tree, env)
        variables = _variables(tree, env)
        budget.count_steps(tree)
        fast = plain.from_tree(
            tree, finalize=env.finalize, html=env.html, resolve=env.names.resolve
        )
        template = env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise Problem(f"syntax error: {exc.message}", exc.lineno) from exc
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # `{{ {{ {{ …`: Jinja2's parser recurses per bracket; a hundred nested ifs make
        # code Python's compiler refuses (too deeply indented or nested)
        raise Problem("syntax error: nested too deeply") from exc
    return Compiled(template, variables, fast)


def _variables(tree: nodes.Template, env: Sandbox) -> frozenset[str]:
    """The canonical names of the variables ``tree`` reads (only by name: checked)."""
    found = (env.names.resolve(name) for name in meta.find_undeclared_variables(tree))
    return frozenset(name for name in found if name is not None)
