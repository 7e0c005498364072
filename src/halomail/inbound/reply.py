"""Finding the new text of a reply: quoted history and signature removed.

(Placeholder implementation; being completed.)
"""

from __future__ import annotations

__all__ = ["strip_reply"]


def strip_reply(text: str) -> str:
    """Return the part of ``text`` the sender wrote, without quoted history or signature."""
    lines = [line for line in text.splitlines() if not line.startswith(">")]
    return "\n".join(lines).strip()
