"""Text that leaves the process: secrets redacted, terminal controls removed.

Two jobs, kept in one low-level module (standard library only) so that every layer
can use them:

- :func:`redact_secrets` hides the password of every ``scheme://user:password@host``
  and the value of query parameters named like secrets (``?token=…``), wherever a URL
  or DSN reaches an error message or a log line. :class:`RedactingFilter` applies it
  to every log record.
- :func:`clean_text` removes what a terminal or a mail client would act on instead of
  showing: C0 and C1 control characters, escape sequences (``ESC [ 2 J`` clears the
  screen, ``ESC ] 0 ; … BEL`` retitles the window) and the Unicode bidi controls that
  make ``exe.jpg`` out of ``\u202egpj.exe``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["RedactingFilter", "clean_text", "redact_secrets"]

#: What a redacted secret is replaced with.
MASK: Final = "***"

# scheme://user:password@ — the password may hold anything but whitespace, quotes and
# "@" (an unencoded "/" in a hand-written DSN still counts as password). The bounded
# repeats keep a long line of letters from costing quadratic time.
_USERINFO: Final = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://[^:/@\s'\"<>]{0,256}:)"
    r"(?P<secret>[^@\s'\"<>]+)(?=@)"
)
# ?password=… &access_token=… ;sig=… : a query parameter whose name says it is a secret.
_QUERY: Final = re.compile(
    r"(?P<head>[?&;][^=&;?#\s'\"]{0,64}(?:pass|pwd|token|key|secret|sig|code|auth)"
    r"[^=&;?#\s'\"]{0,64}=)"
    r"(?P<secret>[^&;#\s'\"<>]+)",
    re.IGNORECASE,
)
# libpq's keyword form of a DSN: "host=db password=S3cr3t".
_KEYWORD: Final = re.compile(
    r"(?P<head>(?<![\w.-])(?:password|passwd|pwd)\s*=\s*)(?P<secret>[^\s'\"&;]+)", re.IGNORECASE
)


def redact_secrets(text: str) -> str:
    """``text`` with the secrets of every URL or DSN in it replaced by ``***``.

    ``postgres://helpdesk:S3cr3t@db/helpdesk`` becomes
    ``postgres://helpdesk:***@db/helpdesk``; ``https://h/x?access_token=abc&n=1``
    becomes ``https://h/x?access_token=***&n=1``; ``host=db password=S3cr3t``
    becomes ``host=db password=***``. Everything else is left as it is.

    Args:
        text: An error message, a log line, a URL.

    Returns:
        The same text, secrets masked.
    """
    if "=" not in text and "@" not in text:
        return text  # the common case, and the cheap one
    for pattern in (_USERINFO, _QUERY, _KEYWORD):
        text = pattern.sub(rf"\g<head>{MASK}", text)
    return text


# Escape sequences: CSI (ESC [ … final byte, or the 8-bit CSI U+009B), OSC, DCS, PM,
# APC and SOS strings (ended by BEL or ESC \, or running to the end of the text), and
# any other two-character ESC sequence.
_ESCAPES: Final = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
# What is left to remove once the sequences are gone: C0 and C1 controls, DEL, the
# line and paragraph separators, and the bidi controls (U+202A-U+202E embeddings and
# overrides, U+2066-U+2069 isolates, U+200E/U+200F marks, U+061C Arabic letter mark).
_BIDI: Final = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_CONTROLS_MULTILINE: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_CONTROLS: Final = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_LINE_BREAKS: Final = re.compile(r"\r\n|[\r\n\t\u2028\u2029\x85\x0b\x0c]")


def clean_text(text: str, *, multiline: bool = False) -> str:
    """``text`` without escape sequences, control characters or bidi controls.

    Args:
        text: Text from outside (an email's subject or body, a server's reply).
        multiline: Keep ``\\n`` and ``\\t`` (a ticket's body, a listing); a bare CR,
            which would let a line overwrite itself, becomes a line break. Otherwise
            every line break and tab becomes a space (a header, a one-line field).

    Returns:
        What is safe to print on a terminal or put in a header (for a header, CR/LF
        are gone: nothing can start a new one).
    """
    if text.isprintable() and (multiline or "\n" not in text):
        return text  # nothing to remove: the common case costs one scan
    text = _ESCAPES.sub("", text)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return _CONTROLS_MULTILINE.sub("", text)
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the secrets of URLs and DSNs in every record.

    The ``halomail`` command installs it on its log handler; install it on yours to
    get the same guarantee for your application's handlers (it sees the records of
    every logger, the client libraries' included)::

        handler.addFilter(halomail.RedactingFilter())

    The record's message is formatted once, redacted, and stored back (with no
    arguments left), and a traceback is formatted and redacted the same way.

    Args:
        terminal: Also remove escape sequences and control characters (line breaks
            and tabs are kept), for a handler that writes to a terminal.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, terminal: bool = False) -> None:
        super().__init__()
        self.terminal = terminal

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drops a record.

        Args:
            record: The record on its way to a handler.

        Returns:
            Always True.
        """
        record.msg = self._clean(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True

    def _clean(self, text: str) -> str:
        text = redact_secrets(text)
        return clean_text(text, multiline=True) if self.terminal else text
