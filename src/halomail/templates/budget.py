"""The budgets an administrator's template renders under: steps, time, output and sizes.

Jinja2's sandbox keeps a template away from Python's internals, not from the machine's
memory and time: ``'%(a)0999999999s' % {...}`` builds a gigabyte, two nested loops over
``range(100000)`` run 10¹⁰ times. Every render here is bounded:

* **steps**: each loop iteration (those a loop's ``if`` skips included) is a step, each
  macro or call-block invocation a hundred; a render may take :data:`MAX_STEPS` steps and
  :data:`MAX_RENDER_SECONDS` seconds, checked at every step;
* **output**: rendering stops once the output passes :data:`MAX_OUTPUT` characters;
* **sizes**: an operation whose result would pass a cap is refused *before* it is
  made: repetition (``'x' * n``), concatenation (``+``, ``~``, ``join``), ``replace``,
  ``wordwrap``, ``indent``, ``batch``, ``slice``, ``range()`` (Jinja2's own cap of
  100,000), integers (:data:`MAX_INT_BITS`), and every ``%``-format and ``str.format``
  width or precision (:data:`MAX_WIDTH`; ``*`` widths are refused).

Past a budget the render raises :class:`~jinja2.exceptions.SecurityError`, which the
template turns into a :class:`~halomail.errors.TemplateError`: at load, when the sample
ticket already exceeds it, else when that mail is rendered (and then nothing is sent).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
import string
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs
from jinja2 import nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.filters import (
    do_batch,
    do_center,
    do_format,
    do_indent,
    do_join,
    do_replace,
    do_slice,
    do_sum,
    do_wordwrap,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join

__all__: list[str] = []

#: The longest output, and the longest string or list a template may build.
MAX_OUTPUT: Final = 5_000_000
#: The largest width or precision (formats, padding, indent) a template may ask for.
MAX_WIDTH: Final = 1_000
#: The largest repeat count (``'x' * n``), batch or slice count.
MAX_REPEAT: Final = 100_000
#: The largest exponent.
MAX_EXPONENT: Final = 100
#: The largest integer, in bits, a multiplication or power may make.
MAX_INT_BITS: Final = 65_536
#: The steps one render may take: a loop iteration is one, a macro or call-block call 100.
MAX_STEPS: Final = 1_000_000
#: The longest a render may run, checked at each step.
MAX_RENDER_SECONDS: Final = 20.0

# The filters compiled templates count steps with and join with; templates cannot name
# them (sandbox.check refuses filter names that start with "_").
STEP_FILTER: Final = "_halomail_step"
CONCAT_FILTER: Final = "_halomail_concat"

# One %-conversion, after the "%" and its "(key)": flags, width, precision.
_PERCENT_SPEC: Final = re.compile(r"[#0 +\-]*(\*|\d*)(?:\.(\*|\d*))?")
_DIGITS: Final = re.compile(r"\d+")
# A macro call costs about as much as this many loop iterations: it counts as many steps.
_MACRO_STEPS: Final = 100
# The clock is read once per this many steps.
_STEPS_PER_CLOCK_CHECK: Final = 1024


# -- steps and time -----------------------------------------------------------------------


@attrs.define
class _Budget:
    deadline: float
    steps: int = 0
    check_clock_at: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "halomail_template_budget", default=None
)


@contextlib.contextmanager
def rendering() -> Iterator[None]:
    """A fresh step and time budget for the render run inside it (thread- and task-local)."""
    token = _BUDGET.set(_Budget(time.monotonic() + MAX_RENDER_SECONDS))
    try:
        yield
    finally:
        _BUDGET.reset(token)


@pass_context
def _step(_context: Context, value: Any, weight: int = 1) -> Any:
    """Count ``weight`` steps of the current render and return ``value`` unchanged."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.steps += weight
        if budget.steps > MAX_STEPS:
            raise SecurityError(f"more than {MAX_STEPS} loop iterations or macro calls")
        if budget.steps >= budget.check_clock_at:
            budget.check_clock_at = budget.steps + _STEPS_PER_CLOCK_CHECK
            if time.monotonic() > budget.deadline:
                raise SecurityError(f"the render took more than {MAX_RENDER_SECONDS:g} seconds")
    return value


def count_steps(tree: nodes.Template) -> None:
    """Make every loop iteration and macro call of ``tree`` count a step.

    A step statement is put first in each loop, macro and call-block body, and in front
    of a loop's ``if``, so that iterations the ``if`` skips count too. The step filter takes
    the context, so Jinja2 never folds it away at compile time.
    """
    for node in list(tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock))):
        assert isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock)
        lineno = node.lineno
        weight = 1 if isinstance(node, nodes.For) else _MACRO_STEPS
        # A statement, not output: the step costs a call, not a chunk to join.
        step = _step_of(nodes.Const(None, lineno=lineno), lineno, weight)
        node.body.insert(0, nodes.ExprStmt(step, lineno=lineno))
        if isinstance(node, nodes.For) and node.test is not None:
            node.test = nodes.And(_step_of(nodes.Const(True), lineno, 1), node.test, lineno=lineno)
    for concat in list(tree.find_all(nodes.Concat)):
        # `a ~ b` becomes a filter that checks the size before joining.
        parts = nodes.List(list(concat.nodes), lineno=concat.lineno)
        concat.nodes = [nodes.Filter(parts, CONCAT_FILTER, [], [], None, None)]
    tree.set_lineno(1)


def _step_of(value: nodes.Expr, lineno: int, weight: int) -> nodes.Filter:
    weight_node = nodes.Const(weight, lineno=lineno)
    return nodes.Filter(value, STEP_FILTER, [weight_node], [], None, None, lineno=lineno)


# -- output ---------------------------------------------------------------------------------


def capped(chunks: Iterable[str]) -> str:
    """The chunks joined, stopping as soon as they pass :data:`MAX_OUTPUT` characters."""
    counted, kept = itertools.tee(chunks)
    # In C, chunk by chunk: the running total, up to the first total over the cap (the
    # render stops there) or the end; `kept` holds the chunks counted so far.
    over = next(filter(MAX_OUTPUT.__lt__, itertools.accumulate(map(len, counted))), None)
    if over is not None:
        raise _output_over()
    return "".join(kept)


def joined(chunks: list[str]) -> str:
    """The chunks joined, if they hold at most :data:`MAX_OUTPUT` characters (as :func:`capped`)."""
    if sum(map(len, chunks)) > MAX_OUTPUT:
        raise _output_over()
    return "".join(chunks)


def _output_over() -> SecurityError:
    return SecurityError(f"the output is over the limit of {MAX_OUTPUT} characters")


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise SecurityError(f"{what} of {size} characters is over the limit of {MAX_OUTPUT}")


# -- formats and widths ---------------------------------------------------------------------


def check_width(width: Any) -> None:
    """Refuse a padding width over :data:`MAX_WIDTH`."""
    if isinstance(width, int) and width > MAX_WIDTH:
        raise SecurityError(f"a width of {width} is over the limit of {MAX_WIDTH}")


def check_percent_format(value: Any) -> None:
    """Refuse a ``%``-format string with a ``*`` width or a width or precision over the cap."""
    if isinstance(value, str):
        for number in _percent_numbers(value):
            if number == "*" or (number and int(number) >= MAX_WIDTH):
                raise SecurityError(f"format widths over {MAX_WIDTH - 1} or '*' are not allowed")


def _percent_numbers(text: str) -> Iterator[str]:
    """Every width and precision of a ``%``-format string, as written ("" when absent)."""
    index = text.find("%")
    while index >= 0:
        index += 1
        if text.startswith("%", index):  # "%%" is a literal percent sign
            index = text.find("%", index + 1)
            continue
        if text.startswith("(", index):
            index = _key_end(text, index)
        spec = _PERCENT_SPEC.match(text, index)
        assert spec is not None  # every part of the pattern is optional
        yield spec.group(1)
        yield spec.group(2) or ""
        index = text.find("%", spec.end())


def _key_end(text: str, index: int) -> int:
    """Past the mapping key ``(…)`` opening at ``index``; nested parentheses count, as in C."""
    depth = 0
    while index < len(text):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return index


def check_str_format(text: str) -> None:
    """Refuse a ``str.format`` string with a nested or over-the-cap width or precision."""
    for _literal, field, spec, _conversion in string.Formatter().parse(text):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise SecurityError("format specs taken from the values are not allowed")
        if any(int(number) >= MAX_WIDTH for number in _DIGITS.findall(spec)):
            raise SecurityError(f"format widths over {MAX_WIDTH - 1} are not allowed")


# -- operators ------------------------------------------------------------------------------


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``%`` and ``+`` whose result would be huge."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > MAX_REPEAT
            ):
                raise SecurityError(f"a repeat over {MAX_REPEAT} items is not allowed")
        if _is_int(left) and _is_int(right):
            _check_bits(abs(left).bit_length() + abs(right).bit_length())
    elif operator == "**":
        if _is_int(right) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent over {MAX_EXPONENT} is not allowed")
        if _is_int(left) and _is_int(right) and right > 0:
            _check_bits(abs(left).bit_length() * right)
    elif operator == "%":
        check_percent_format(left)
    elif operator == "+" and _is_sized(left) and _is_sized(right):
        _check_size(len(left) + len(right), "a concatenation")


def _is_sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(f"a number over {MAX_INT_BITS} bits is not allowed")


def check_str_method(name: str, text: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call of ``text.<name>(…)`` whose result would pass a cap."""
    if name in {"center", "ljust", "rjust", "zfill", "expandtabs"}:
        for arg in (*args, *kwargs.values()):
            check_width(arg)
    elif name == "join" and args:
        items = args[0]
        if isinstance(items, list | tuple):
            parts = sum(len(item) for item in items if isinstance(item, str))
            _check_size(parts + len(text) * max(len(items) - 1, 0), "a join")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_replace(text, args[0], args[1], count)


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    _check_size(len(text) + found * (len(new) - len(old)), "a replace")


# -- filters --------------------------------------------------------------------------------


def _center(value: str, width: int = 80) -> str:
    check_width(width)
    return do_center(value, width)


def _indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    check_width(width)
    if isinstance(width, str) and len(width) > MAX_WIDTH:
        raise SecurityError(f"an indent of {len(width)} characters is over the limit")
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(value)
    _check_size(len(text) + (text.count("\n") + 1) * per_line, "an indent")
    return do_indent(value, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    check_percent_format(value)
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)
    sized = sum(len(item) for item in items if isinstance(item, str)) if attribute is None else 0
    _check_size(sized + len(str(d)) * max(len(items) - 1, 0), "a join")
    return _checked(do_join(eval_ctx, items, d, attribute), "a join")


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    _check_replace(str(s), old, new, -1 if count is None else count)
    return do_replace(eval_ctx, s, old, new, count)


@pass_context
def _wordwrap(
    context: Context,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    if wrapstring is not None and isinstance(width, int):
        lines = len(s) // max(width, 1) + 1
        _check_size(len(s) + lines * len(wrapstring), "a word wrap")
    return do_wordwrap(
        context.environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count(linecount, "batch")
    return do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count(slices, "slice")
    sliced: Iterator[list[Any]] = do_slice(value, slices, fill_with)
    return sliced


@pass_context
def _sum(
    context: Context, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    # Adding lists or strings one at a time copies them over and over: quadratic.
    if not isinstance(start, int | float):
        raise SecurityError("sum only adds numbers")
    return do_sum(context.environment, iterable, attribute, start)


def _check_count(count: Any, what: str) -> None:
    if isinstance(count, int) and count > MAX_REPEAT:
        raise SecurityError(f"a {what} of {count} is over the limit of {MAX_REPEAT}")


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: list[Any]) -> str:
    # What Jinja2 compiles `a ~ b` to, with the size checked before the join.
    texts = [part if isinstance(part, str) else str(part) for part in parts]
    _check_size(sum(map(len, texts)), "a concatenation")
    joined = markup_join(parts) if eval_ctx.autoescape else str_join(texts)
    return _checked(joined, "a concatenation")


def _checked(result: str, what: str) -> str:
    _check_size(len(result), what)
    return result


#: The filters that replace Jinja2's own, and the two the compiled templates call.
FILTERS: Final[dict[str, Any]] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "wordwrap": _wordwrap,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    STEP_FILTER: _step,
    CONCAT_FILTER: _concat,
}
