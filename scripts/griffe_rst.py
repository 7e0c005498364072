"""Griffe extensions for halomail's API reference: attrs classes, and reStructuredText.

``AttrsInit`` gives each attrs class (``@attrs.frozen``, ``@attrs.define``) the
``__init__`` attrs generates, read from its fields: their names (an ``alias``, or the
name without its leading underscore), annotations and defaults, ``kw_only`` and
``init=False`` included. griffe knows dataclasses but not attrs; without it a class's
documented ``Args:`` would match no parameter. The site is built from the source
alone, importing nothing, so no extra (psycopg, pytest) is needed to build it.


halomail's docstrings are Google style, with Sphinx's cross-reference roles
(:class:`~halomail.Notice`), version directives (.. versionadded:: 0.1.0) and literal
blocks introduced by ``::``. mkdocstrings renders docstrings as Markdown, where those
would show as written; this extension rewrites them, as the docs site is built, into
what Sphinx would have shown: the name in code, the version in a sentence, the colon.
The source keeps its docstrings as they are (``help()`` and editors read them there).

mkdocs.yml loads both (``extensions:``); tests/test_docs_site.py checks the built site
shows every class's parameters and none of the reStructuredText.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

# :class:`~halomail.Notice`, :meth:`transaction`, :data:`MAX <halomail.x.MAX>` …
# Role names are short words and a target holds no backquote, so matching is linear.
_ROLE = re.compile(r":(?:py:)?([a-z]{2,10}):`([^`\n]{1,300})`")
# .. versionadded:: 0.1.0 [text], with an indented continuation.
_VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?P<kind>versionadded|versionchanged|deprecated)::[ \t]*"
    r"(?P<version>[^\s]+)[ \t]*(?P<text>[^\n]*)(?P<more>(?:\n(?P=indent)[ \t]+[^\n]*)*)",
    re.MULTILINE,
)
_VERSION_WORDS = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}
# A paragraph ending in "::" introduces a literal block: Sphinx shows one colon (or none
# when "::" stands alone); the indented block below is already code in Markdown.
_LITERAL = re.compile(r"(?P<text>\S)?[ \t]*::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    """A cross-reference role as Sphinx shows it: the (short) name, in code."""
    role, target = match.group(1), match.group(2)
    titled = re.fullmatch(r"(.+?)\s*<([^<>]+)>", target)
    if titled:
        return f"`{titled.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    if role in {"meth", "func"} and not target.endswith(")"):
        target += "()"
    return f"`{target}`"


def _version(match: re.Match[str]) -> str:
    """A version directive as a sentence: *Added in version 0.1.0.* and its text."""
    words = _VERSION_WORDS[match.group("kind")]
    text = " ".join([match.group("text"), *match.group("more").split()]).strip()
    indent = match.group("indent")
    version = match.group("version")
    return f"{indent}*{words} {version}*" + (f": {text}" if text else ".")


def markdown(docstring: str) -> str:
    """``docstring`` with its reStructuredText roles, directives and ``::`` as Markdown."""
    text = _VERSION.sub(_version, docstring)
    text = _ROLE.sub(_role, text)
    return _LITERAL.sub(lambda m: f"{m.group('text')}:" if m.group("text") else "", text)


class RstToMarkdown(griffe.Extension):
    """Rewrites each object's docstring (see the module's docstring) as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of ``obj`` as Markdown."""
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)


# -- attrs -------------------------------------------------------------------------------------

_ATTRS_CLASS = {"attrs.frozen", "attrs.define", "attrs.mutable", "attr.s", "attr.attrs"}
_ATTRS_FIELD = {"attrs.field", "attr.ib", "attr.attrib"}


class AttrsInit(griffe.Extension):
    """Adds the ``__init__`` attrs generates to every attrs class of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Give each attrs class of ``pkg``, however deeply nested, its ``__init__``."""
        for cls in _classes(pkg):
            if "__init__" not in cls.members and _attrs_decorator(cls) is not None:
                _set_init(cls)


def _classes(scope: griffe.Module | griffe.Class) -> Iterator[griffe.Class]:
    """Every class defined in ``scope`` and in its submodules and classes."""
    for member in scope.members.values():
        if member.is_alias:
            continue
        if isinstance(member, griffe.Class):
            yield member
        if isinstance(member, griffe.Module | griffe.Class):
            yield from _classes(member)


def _attrs_decorator(cls: griffe.Class) -> griffe.Expr | str | None:
    """The ``@attrs.frozen`` (or another attrs class decorator) of ``cls``, if any."""
    for decorator in cls.decorators:
        if getattr(decorator.value, "canonical_path", None) in _ATTRS_CLASS:
            return decorator.value
    return None


def _keywords(expression: griffe.Expr | str | None) -> dict[str, str]:
    """The keyword arguments of a call, as source text (``kw_only`` → ``"True"``)."""
    if not isinstance(expression, griffe.ExprCall):
        return {}
    return {
        argument.name: str(argument.value)
        for argument in expression.arguments
        if isinstance(argument, griffe.ExprKeyword)
    }


def _set_init(cls: griffe.Class) -> None:
    """Add ``__init__`` to ``cls``, with the attrs fields of its bases first."""
    parameters: list[griffe.Parameter] = []
    try:
        bases = [base for base in reversed(cls.mro()) if _attrs_decorator(base) is not None]
    except ValueError:  # a base griffe cannot resolve: document this class's own fields
        bases = []
    for attrs_class in [*bases, cls]:
        parameters.extend(_fields(attrs_class))
    by_name = {parameter.name: parameter for parameter in parameters}  # a subclass redefines
    ordered = sorted(by_name.values(), key=lambda p: p.kind is griffe.ParameterKind.keyword_only)
    self = griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(self, *ordered),
        returns="None",
    )
    cls.set_member("__init__", init)


def _fields(cls: griffe.Class) -> Iterator[griffe.Parameter]:
    """The ``__init__`` parameters of the attrs fields ``cls`` itself defines, in order."""
    kw_only = _keywords(_attrs_decorator(cls)).get("kw_only") == "True"
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, griffe.Attribute):
            continue
        if member.annotation is None or "property" in member.labels:
            continue  # attrs makes fields of annotated names only
        if "instance-attribute" not in member.labels:
            continue  # a ClassVar
        field = member.value if _is_field(member.value) else None
        options = _keywords(field)
        if options.get("init") == "False":
            continue
        yield griffe.Parameter(
            options.get("alias", "").strip("'\"") or member.name.lstrip("_"),
            annotation=member.annotation,
            kind=griffe.ParameterKind.keyword_only
            if kw_only or options.get("kw_only") == "True"
            else griffe.ParameterKind.positional_or_keyword,
            default=_default(member, field),
            docstring=member.docstring,
        )


def _is_field(value: griffe.Expr | str | None) -> bool:
    """Whether ``value`` is a call of ``attrs.field`` (or ``attr.ib``)."""
    return isinstance(value, griffe.ExprCall) and value.canonical_path in _ATTRS_FIELD


def _default(member: griffe.Attribute, field: griffe.Expr | str | None) -> griffe.Expr | str | None:
    """The default of a field: ``attrs.field``'s ``default`` or ``factory``, or its value."""
    if not isinstance(field, griffe.ExprCall):
        return member.value  # ``name: int = 3``, or None: required
    for argument in field.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "default":
            return argument.value
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "factory":
            factory = argument.value
            if isinstance(factory, griffe.Expr):
                return griffe.ExprCall(function=factory, arguments=[])
            return f"{factory}()"
    return None
