"""HTML: sanitizing what customers send, and reading text out of it.

(Placeholder implementation; being completed.)
"""

from __future__ import annotations

import nh3
from selectolax.lexbor import LexborHTMLParser

__all__ = ["html_to_text", "sanitize_html"]


def sanitize_html(html: str) -> str:
    """Return ``html`` with everything active removed (scripts, handlers, remote loads)."""
    return str(nh3.clean(html))


def html_to_text(html: str) -> str:
    """Return the readable text of ``html``."""
    tree = LexborHTMLParser(html)
    return str(tree.text(separator="\n")) if tree.body is not None else ""
