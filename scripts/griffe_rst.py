"""A griffe extension: the reStructuredText in halomail's docstrings, as Markdown.

halomail's docstrings are Google style, with Sphinx's cross-reference roles
(:class:`~halomail.Notice`), version directives (.. versionadded:: 0.1.0) and literal
blocks introduced by ``::``. mkdocstrings renders docstrings as Markdown, where those
would show as written; this extension rewrites them, as the docs site is built, into
what Sphinx would have shown: the name in code, the version in a sentence, the colon.
The source keeps its docstrings as they are (``help()`` and editors read them there).

mkdocs.yml loads it (``extensions: [scripts/griffe_rst.py]``); tests/test_docs_site.py
checks the built site shows none of the reStructuredText.
"""

from __future__ import annotations

import inspect
import re
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

    def on_instance(self, *, node: Any, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of ``obj``, read from source or by inspection."""
        if obj.docstring is None:
            return
        if isinstance(obj, griffe.Attribute) and _borrowed(obj.docstring.value, node):
            obj.docstring = None
            return
        obj.docstring.value = markdown(obj.docstring.value)


def _borrowed(docstring: str, node: Any) -> bool:
    """Whether an inspected attribute's docstring is only its value's type's (``str(object=…``)."""
    value = getattr(node, "obj", None)  # the runtime value, when griffe inspected it
    if value is None or callable(value):
        return False
    own = getattr(type(value), "__doc__", None)
    return isinstance(own, str) and docstring.strip() in {own.strip(), inspect.cleandoc(own)}
