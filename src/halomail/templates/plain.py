"""Rendering without Jinja2 the template parts that only print and test variables.

Most templates, the built-in ones included, are text with ``$variables`` and a few
``{% if name %}…{% elif name %}…{% else %}…{% endif %}``. For those, a render through
Jinja2's sandbox (a context per render, generated code, the budgets' generators) costs
more than the result needs: the pieces joined. Such a part is compiled here,
once, from the syntax tree Jinja2 parsed, into a :class:`Plain`: literal text (exactly
the ``TemplateData`` Jinja2's lexer left, whitespace control and newlines already
applied), values, and choices on a value's truth. It renders by a join, to the same
characters as Jinja2's code:

* a value prints as ``str(value)`` in text, ``escape(finalize(value))`` in HTML;
* a test is Python's truth of the value (an empty string is false);
* a name is looked up as the sandbox's context does (:func:`lookup`);
* the output budget (:data:`~halomail.templates.budget.MAX_OUTPUT`) is the same.

Anything else in the tree (a filter, a loop, a constant, ``not``…) keeps the part on
Jinja2, and so does any render this path cannot finish exactly as Jinja2 would (a name
that resolves to nothing, which Jinja2 reports as undefined; an exception from a
value's ``str``): :meth:`Plain.render` returns ``None`` and the caller renders with
Jinja2, which raises the error it always raised. Values are never template source
either way: they are only printed or tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
from jinja2 import nodes
from markupsafe import escape

from halomail.templates import budget

__all__: list[str] = []

# A name's value is missing: Jinja2 would make it a StrictUndefined and raise.
_MISSING: Final = object()


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
        convert: A value as printed: ``str``, or escaped and finalized in HTML.
        resolve: The canonical variable of a name (the sandbox's ``Names.resolve``).
    """

    pieces: Pieces
    names: tuple[str, ...]
    convert: Callable[[Any], str]
    resolve: Callable[[str], str | None]

    def render(self, variables: Mapping[str, Any]) -> str | None:
        """The part rendered with ``variables``, or ``None`` where Jinja2 must render it.

        Raises:
            SecurityError: The output is over the budget (as Jinja2's render would be).
        """
        values = {}
        for name in self.names:
            value = variables.get(name, _MISSING)
            if value is _MISSING:  # not under the name written: resolve it as the context does
                value = lookup(variables, name, self.resolve)
                if value is _MISSING:
                    return None
            values[name] = value
        chunks: list[str] = []
        try:
            _emit(self.pieces, values, {}, self.convert, chunks)
        except Exception:  # noqa: BLE001 - Jinja2 renders it again and raises it, with its line
            return None
        return budget.joined(chunks)


def lookup(variables: Mapping[str, Any], name: str, resolve: Callable[[str], str | None]) -> Any:
    """``name``'s value as the sandbox's context finds it: as written, else under its
    canonical name (``""`` when absent), else missing."""
    value = variables.get(name, _MISSING)
    if value is not _MISSING:
        return value
    canonical = resolve(name)
    return _MISSING if canonical is None else variables.get(canonical, "")


def _emit(
    pieces: Pieces,
    values: dict[str, Any],
    printed: dict[str, str],
    convert: Callable[[Any], str],
    chunks: list[str],
) -> None:
    """Append what ``pieces`` print to ``chunks``.

    Each value is converted (escaped) once per render and its text reused wherever it is
    printed again: a 25 MB value printed fifty times into HTML is escaped once, not into
    1.25 GB, before :func:`~halomail.templates.budget.joined` refuses the total.
    """
    for piece in pieces:
        if type(piece) is str:
            chunks.append(piece)
        elif type(piece) is Value:
            name = piece.name
            text = printed.get(name)
            if text is None:
                text = printed[name] = convert(values[name])
            chunks.append(text)
        else:
            assert type(piece) is Choice
            for name, body in piece.branches:
                if values[name]:
                    _emit(body, values, printed, convert, chunks)
                    break
            else:
                _emit(piece.otherwise, values, printed, convert, chunks)


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
        pieces = _pieces(tree.body, names)
    except (_NotPlain, RecursionError):  # ifs nested past Python's stack stay on Jinja2
        return None
    return Plain(_merged(pieces), tuple(names), _converter(finalize, html), resolve)


def _converter(finalize: Callable[[Any], Any] | None, html: bool) -> Callable[[Any], str]:
    # What Jinja2's generated code wraps a printed name in (`str(…)` or `escape(…)`).
    if not html:
        return str if finalize is None else lambda value: str(finalize(value))
    if finalize is None:
        return escape
    return lambda value: escape(finalize(value))


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
