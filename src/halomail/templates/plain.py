"""Rendering without Jinja2 the template parts that only print and test variables.

Most templates, the built-in ones included, are text with ``$variables`` and a few
``{% if name %}…{% elif name %}…{% else %}…{% endif %}``. For those, a render through
Jinja2's sandbox (a context per render, generated code, the budgets' generators) costs
more than the result needs: the pieces joined. Such a part is compiled here,
once, from the syntax tree Jinja2 parsed, into a :class:`Plain`: literal text (exactly
the ``TemplateData`` Jinja2's lexer left, whitespace control and newlines already
applied), values, and choices on a value's truth; and these into a Python function of
the variables (generated source, with the text and the names in it only as ``repr()``
literals: template text never becomes code) that lists the chunks and joins them, to
the same characters as Jinja2's code:

* a value prints as ``str(value)`` in text, ``escape(finalize(value))`` in HTML,
  converted once per render, where first printed on the branches taken;
* a test is Python's truth of the value (an empty string is false);
* a name is looked up as the sandbox's context does (:func:`lookup`);
* the output budget (:data:`~halomail.templates.budget.MAX_OUTPUT`) is the same.

Anything else in the tree (a filter, a loop, a constant, ``not``…) keeps the part on
Jinja2, and so does any render this path cannot finish exactly as Jinja2 would (a name
that resolves to nothing, which Jinja2 reports as undefined; an exception from a
value's ``str``): :meth:`Plain.render` returns ``None`` and the caller renders with
Jinja2, which raises the error it always raised. A part Python cannot compile (ifs
nested past its parser's limits) stays on Jinja2 too. Values are never template source
either way: they are only printed or tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import markupsafe
from jinja2 import nodes
from markupsafe import escape

from halomail.templates import budget

__all__: list[str] = []

# A name's value is missing: Jinja2 would make it a StrictUndefined and raise.
_MISSING: Final = object()


def _quoter() -> Callable[[str], str]:
    """``escape``'s text for a ``str``, without the ``Markup`` around it.

    ``escape(text)`` is ``Markup(_escape_inner(text))`` for a ``str``: the same
    characters, and ``Markup()`` is most of its cost (about 0.5 µs a value). The chunks
    are joined into a ``str`` anyway. MarkupSafe's ``_escape_inner`` is private: where it
    is missing, or escapes otherwise than ``escape``, ``escape`` itself is used.
    """
    inner = getattr(markupsafe, "_escape_inner", None)
    sample = "<a href='x'>\"&amp;\"</a> é"
    if callable(inner) and type(inner(sample)) is str and inner(sample) == str(escape(sample)):
        quote: Callable[[str], str] = inner
        return quote
    return escape


_quote: Final = _quoter()


@attrs.frozen
class Value:
    """Print the variable ``name``."""

    name: str


@attrs.frozen
class Choice:
    """The body of the first branch whose variable is true, else ``otherwise``."""

    branches: tuple[tuple[str, Pieces], ...]
    otherwise: Pieces


Piece = str | Value | Choice
Pieces = tuple[Piece, ...]


@attrs.frozen
class Plain:
    """A template part that prints literal text and values, and tests values.

    Args:
        pieces: What it prints, in order.
        names: Every variable it reads, each once.
        code: ``pieces`` compiled to a Python function (:func:`_generated`), which
            :meth:`render` calls: what it returns. A value prints as ``str(value)`` in
            text, escaped and finalized in HTML (a ``str`` without ``Markup``); a name is
            resolved as the sandbox's ``Names.resolve`` does.
    """

    pieces: Pieces
    names: tuple[str, ...]
    code: Callable[[Mapping[str, Any]], str | None] = attrs.field(eq=False, repr=False)

    def render(self, variables: Mapping[str, Any]) -> str | None:
        """The part rendered with ``variables``, or ``None`` where Jinja2 must render it.

        Every name is looked up first (:func:`lookup`; one that resolves to nothing gives
        ``None``), then the pieces are printed: each value converted once, when first
        printed on the branches taken, an exception from a test or a conversion giving
        ``None``; then the chunks are joined within the budget.

        Raises:
            SecurityError: The output is over the budget (as Jinja2's render would be).
        """
        return self.code(variables)


def lookup(variables: Mapping[str, Any], name: str, resolve: Callable[[str], str | None]) -> Any:
    """``name``'s value as the sandbox's context finds it: as written, else under its
    canonical name (``""`` when absent), else missing."""
    value = variables.get(name, _MISSING)
    if value is not _MISSING:
        return value
    canonical = resolve(name)
    return _MISSING if canonical is None else variables.get(canonical, "")


# -- compiling ------------------------------------------------------------------------------


class _NotPlain(Exception):
    """The tree holds a node this module does not render."""


def from_tree(
    tree: nodes.Template,
    *,
    finalize: Callable[[Any], Any] | None,
    html: bool,
    resolve: Callable[[str], str | None],
) -> Plain | None:
    """The plain form of a parsed (and checked) template part, or ``None`` if it has none.

    Args:
        tree: The part as Jinja2 parsed it.
        finalize: The environment's ``finalize`` (applied to printed values), if any.
        html: The environment autoescapes: printed values are escaped.
        resolve: The canonical variable of a name.
    """
    names: dict[str, None] = {}  # ordered, each once
    try:
        pieces = _merged(_pieces(tree.body, names))
        code = _generated(pieces, tuple(names), finalize=finalize, html=html, resolve=resolve)
    except _NotPlain:
        return None
    except Exception:  # noqa: BLE001 - too deep for Python's parser or compiler: Jinja2's
        # ifs nested past the stack (RecursionError), or past the indentation or the
        # compiler's limits (SyntaxError, RecursionError, MemoryError): stay on Jinja2
        return None
    return Plain(pieces, tuple(names), code)


def _pieces(body: Iterable[nodes.Node], names: dict[str, None]) -> list[Piece]:
    pieces: list[Piece] = []
    for node in body:
        if isinstance(node, nodes.Output):
            pieces.extend(_output(child, names) for child in node.nodes)
        elif type(node) is nodes.If:
            pieces.append(_choice(node, names))
        else:
            raise _NotPlain
    return pieces


def _output(node: nodes.Node, names: dict[str, None]) -> Piece:
    if type(node) is nodes.TemplateData:
        return str(node.data)
    return Value(_name(node, names))


def _choice(node: nodes.If, names: dict[str, None]) -> Choice:
    branches = [(_name(node.test, names), _merged(_pieces(node.body, names)))]
    for branch in node.elif_:
        if branch.elif_ or branch.else_:  # the parser makes them flat; anything else is not
            raise _NotPlain
        branches.append((_name(branch.test, names), _merged(_pieces(branch.body, names))))
    return Choice(tuple(branches), _merged(_pieces(node.else_, names)))


def _name(node: nodes.Node, names: dict[str, None]) -> str:
    if type(node) is not nodes.Name or node.ctx != "load":
        raise _NotPlain
    names[node.name] = None
    return str(node.name)


def _merged(pieces: list[Piece]) -> Pieces:
    """Adjacent literal texts as one, empty ones dropped: fewer pieces to join."""
    out: list[Piece] = []
    for piece in pieces:
        if type(piece) is str:
            if not piece:
                continue
            if out and type(out[-1]) is str:
                out[-1] = out[-1] + piece
                continue
        out.append(piece)
    return tuple(out)


# -- generating the code --------------------------------------------------------------------


def _generated(
    pieces: Pieces,
    names: tuple[str, ...],
    *,
    finalize: Callable[[Any], Any] | None,
    html: bool,
    resolve: Callable[[str], str | None],
) -> Callable[[Mapping[str, Any]], str | None]:
    """``pieces`` compiled into a Python function of the variables (:meth:`Plain.render`).

    Its source (:func:`_source`) holds literal text and variable names only as ``repr()``
    literals: template text never becomes code. It runs in a namespace of its own, with
    no builtins but the few it calls.

    Raises:
        SyntaxError, RecursionError, MemoryError: Python cannot compile it (ifs nested too
            deeply).
    """
    if not html:
        conversion = "str(v{})" if finalize is None else "str(finalize(v{}))"
    elif finalize is None:  # escape(), without Markup() for a str (see _quoter)
        conversion = "quote(v{0}) if type(v{0}) is str else escape(v{0})"
    else:
        conversion = "quote(f) if type(f := finalize(v{})) is str else escape(f)"
    source = _source(pieces, names, conversion)
    namespace: dict[str, Any] = {
        "__builtins__": {},
        "Exception": Exception,
        "MISSING": _MISSING,
        "escape": escape,
        "finalize": finalize,
        "joined": budget.joined,
        "lookup": lookup,
        "quote": _quote,
        "resolve": resolve,
        "str": str,
        "type": type,
    }
    exec(compile(source, "<halomail plain template>", "exec"), namespace)  # noqa: S102
    code: Callable[[Mapping[str, Any]], str | None] = namespace["render"]
    return code


def _source(pieces: Pieces, names: tuple[str, ...], conversion: str) -> str:
    """The Python source of ``render(variables)`` for ``pieces``.

    Variable ``i`` of ``names`` is the local ``v{i}``, its printed text ``t{i}``
    (``conversion`` of ``v{i}``). Each text is converted where the value is first printed
    on the branches taken, and reused after: a 25 MB value printed fifty times into HTML
    is escaped once, not into 1.25 GB, before :func:`~halomail.templates.budget.joined`
    refuses the total; a value printed only in a branch not taken is never converted (its
    ``str`` may raise, where Jinja2 would not). Where a text may or may not have been
    converted yet (printed in some earlier branch only), the code tests it.
    """
    index = {name: i for i, name in enumerate(names)}
    body = _Body(index, conversion)
    body.block(pieces, 2)
    lines = ["def render(variables):", "    get = variables.get"]
    for name, i in index.items():
        lines += [
            f"    v{i} = get({name!r}, MISSING)",
            f"    if v{i} is MISSING:",
            f"        v{i} = lookup(variables, {name!r}, resolve)",
            f"        if v{i} is MISSING:",
            "            return None",
        ]
    lines += [f"    t{i} = None" for i in sorted(body.tested)]
    lines += ["    try:", *body.lines, "    except Exception:", "        return None"]
    lines.append("    return joined(chunks)")
    return "\n".join(lines) + "\n"


@attrs.define
class _Body:
    """The statements that print pieces into the list ``chunks``, as they are generated.

    Args:
        index: Each variable's number (its locals ``v{i}`` and ``t{i}``).
        conversion: A value's printed text, as an expression of ``v{i}``.
        lines: The statements so far, indented.
        done: The variables whose text is converted on every path to this point.
        maybe: The variables whose text is converted on some path to this point.
        tested: The variables whose text is tested (``t{i} is None``) somewhere: these
            start as ``None``.
        created: ``chunks`` is created: the first statement, at the top, creates it
            (a choice at the top creates it empty first).
    """

    index: dict[str, int]
    conversion: str
    lines: list[str] = attrs.Factory(list)
    done: frozenset[str] = frozenset()
    maybe: frozenset[str] = frozenset()
    tested: set[int] = attrs.Factory(set)
    created: bool = False

    def block(self, pieces: Pieces, depth: int) -> None:
        """Add the statements of ``pieces`` at indentation ``depth``."""
        pad = "    " * depth
        start = len(self.lines)
        run: list[str] = []  # the expressions of the pieces since the last choice
        for piece in pieces:
            if type(piece) is str:
                run.append(repr(piece))
            elif type(piece) is Value:
                run.append(self.text(piece.name, pad))
            else:
                assert type(piece) is Choice
                self.extend(run, pad)
                run = []
                self.choice(piece, depth)
        self.extend(run, pad)
        if len(self.lines) == start:
            self.lines.append(pad + "pass")

    def text(self, name: str, pad: str) -> str:
        """The local holding ``name``'s printed text, converted first if it may not be yet."""
        i = self.index[name]
        value = self.conversion.format(i)
        if name not in self.maybe:  # converted on no path to here
            self.lines.append(f"{pad}t{i} = {value}")
        elif name not in self.done:  # converted on some paths only
            self.tested.add(i)
            self.lines += [f"{pad}if t{i} is None:", f"{pad}    t{i} = {value}"]
        self.done |= {name}
        self.maybe |= {name}
        return f"t{i}"

    def extend(self, run: list[str], pad: str) -> None:
        """Add the statement appending ``run`` to ``chunks`` (the first one creates it)."""
        if not self.created:
            self.lines.append(f"{pad}chunks = [{', '.join(run)}]")
            self.created = True
        elif len(run) == 1:
            self.lines.append(f"{pad}chunks.append({run[0]})")
        elif run:
            self.lines.append(f"{pad}chunks += ({', '.join(run)})")

    def choice(self, choice: Choice, depth: int) -> None:
        """Add the ``if``/``elif``/``else`` of ``choice``."""
        pad = "    " * depth
        done, maybe = self.done, self.maybe
        done_after: frozenset[str] | None = None
        maybe_after = maybe
        branches: list[tuple[str, Pieces]] = [
            (f"{'if' if n == 0 else 'elif'} v{self.index[name]}:", body)
            for n, (name, body) in enumerate(choice.branches)
        ]
        if choice.otherwise:
            branches.append(("else:", choice.otherwise))
        else:  # no else: the path past every test converts nothing
            done_after = done
        for head, body in branches:
            self.done, self.maybe = done, maybe
            self.lines.append(pad + head)
            self.block(body, depth + 1)
            done_after = self.done if done_after is None else done_after & self.done
            maybe_after |= self.maybe
        assert done_after is not None
        self.done, self.maybe = done_after, maybe_after
