"""Real mail for the benchmarks, and the stdlib baseline they are measured against.

**The corpus.** The SpamAssassin public corpus (5,983 emails of 2002-2005: ham, hard
ham and spam, many with HTML, legacy charsets and broken MIME) is not part of halomail:
:func:`corpus_dir` finds it in ``HALOMAIL_CORPUS`` or, failing that, in
``../shared/corpus/spamassassin`` next to the checkout, and :func:`load` reads it.

**The baseline** (:func:`compat32_baseline`) is what any program must do at least to
read what halomail reads from an email, in the stdlib's fastest mode:

1. parse with ``email.message_from_bytes(raw, policy=compat32)``;
2. read the headers the pipeline reads (:data:`READ_HEADERS`: the addresses, subject,
   date, Message-IDs, and the ones classification checks), decoding RFC 2047 words
   with ``email.header.decode_header``, the addresses with ``email.utils.getaddresses``
   and the date with ``email.utils.parsedate_to_datetime``;
3. decode every leaf part the pipeline decodes (the inline text parts to ``str`` in
   their charset, the attachments to bytes) with ``get_payload(decode=True)``.

It converts no HTML, strips no quotes and stores nothing: the ratios against it say
how close halomail's parse (or whole pipeline) comes to that floor.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.utils
import os
from collections.abc import Sequence
from email import policy
from pathlib import Path

__all__ = ["READ_HEADERS", "compat32_baseline", "corpus_dir", "load", "run_baseline"]

ROOT = Path(__file__).resolve().parent.parent
#: Where the corpus is when ``HALOMAIL_CORPUS`` is not set.
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "spamassassin"
#: The top-level headers processing reads: identity, threading and classification.
READ_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "return-path",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "precedence",
    "x-autoreply",
    "x-auto-response-suppress",
    "list-id",
    "list-unsubscribe",
    "content-type",
)
_ADDRESS_HEADERS = ("from", "sender", "reply-to", "to", "cc")


def corpus_dir() -> Path:
    """The SpamAssassin corpus folder (``HALOMAIL_CORPUS``, else next to the checkout).

    Raises:
        SystemExit: When it is missing: the benchmark leads with real mail, so a missing
            corpus is an error, not something to skip.
    """
    folder = Path(os.environ.get("HALOMAIL_CORPUS") or DEFAULT_CORPUS)
    if not folder.is_dir() or not any(folder.glob("*.eml")):
        raise SystemExit(
            f"no SpamAssassin corpus at {folder}: set HALOMAIL_CORPUS to the folder of .eml files"
        )
    return folder


def load(limit: int | None = None) -> list[bytes]:
    """The corpus's emails in name order; ``limit`` takes that many, spread evenly over it.

    Args:
        limit: How many emails, or ``None`` for all 5,983.

    Returns:
        The raw emails.
    """
    paths = sorted(corpus_dir().glob("*.eml"))
    if limit is not None and limit < len(paths):
        step = len(paths) / limit  # every kind of the corpus (ham, hard ham, spam) in turn
        paths = [paths[int(index * step)] for index in range(limit)]
    return [path.read_bytes() for path in paths]


def compat32_baseline(raw: bytes) -> int:
    """Parse ``raw`` and decode what the pipeline decodes, with the stdlib (see above).

    Returns:
        How many characters and bytes were decoded (so that nothing is optimised away).
    """
    message = email.message_from_bytes(raw, policy=policy.compat32)
    decoded = 0
    for name in READ_HEADERS:
        value = message.get(name)
        if value is None:
            continue
        value = str(value)
        try:
            decoded += sum(len(chunk) for chunk, _charset in email.header.decode_header(value))
        except Exception:  # noqa: BLE001, S112 - a header the stdlib cannot decode is skipped
            continue
        if name in _ADDRESS_HEADERS:
            decoded += len(email.utils.getaddresses([value]))
        elif name == "date":
            with contextlib.suppress(TypeError, ValueError, IndexError):
                email.utils.parsedate_to_datetime(value)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if part.get_content_maintype() == "text" and part.get_filename() is None:
            charset = part.get_content_charset() or "us-ascii"
            try:
                decoded += len(payload.decode(charset, "replace"))
            except LookupError:
                decoded += len(payload.decode("latin-1"))
        else:
            decoded += len(payload)
    return decoded


def run_baseline(messages: Sequence[bytes]) -> int:
    """:func:`compat32_baseline` over every email; returns the total it decoded."""
    return sum(compat32_baseline(raw) for raw in messages)
