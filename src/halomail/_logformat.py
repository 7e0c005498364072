"""The ``halomail`` command's log lines: text for people, JSON for log shippers.

``--log-format json`` writes one JSON object per line, with ``time``, ``level``,
``logger`` and ``message``, and the structured fields a record carries (the per-email
line's ``mailbox``, ``source_id``, ``outcome``, ``reason``, ``rule``, ``seconds``...).
The record has passed :class:`~halomail.RedactingFilter` first, and every structured
string is redacted here too: a URL's password never reaches the shipper.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from halomail._text import RedactingFilter, redact_secrets

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every attribute a plain LogRecord has: what is left on a record is what `extra=` gave.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON (a traceback goes in ``exc_info``)."""
        data: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = _structured(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = redact_secrets(record.exc_text)
        return json.dumps(data)


def _structured(value: object) -> object:
    """A field as JSON can hold it: numbers, booleans and None as they are, text redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_secrets(str(value))


def configure_logging(verbose: int, log_format: str = "text") -> None:
    """Warnings to stderr (``-v`` info, ``-vv`` debug), every line redacted.

    Args:
        verbose: How many ``-v`` were given.
        log_format: ``text`` (cleaned of terminal controls) or ``json`` (one object a line).
    """
    handler = logging.StreamHandler(sys.stderr)
    # A log line can quote a server's reply or an email's Message-ID: both are cleaned
    # of terminal controls (JSON escapes them), and every URL's secrets are masked,
    # whatever logger wrote it.
    handler.addFilter(RedactingFilter(terminal=log_format == "text"))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        handlers=[handler],
    )
