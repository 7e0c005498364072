"""``halomail check-config``: every problem of the file at once, each with its line.

A file with several mistakes is fixed in one pass: each problem is printed as
``halomail.toml:12: mailboxes[1].port: message`` (a compiler's form, which editors
can jump to), or with ``--json`` as an ``{"event": "error", ...}`` object, and the
command exits 2.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import json
import sys

from halomail import app
from halomail._text import clean_text
from halomail.config._collect import ConfigErrors, located
from halomail.config._lines import KeyLines
from halomail.config.loader import Config, load_config
from halomail.errors import ConfigError

__all__ = ["load_reporting_every_error"]


def load_reporting_every_error(path: str, *, json_output: bool) -> Config | None:
    """The configuration at ``path``, built as ``run`` would build it (connecting to
    nothing), or ``None`` once every problem of it was printed.

    Problems of the file as a whole (missing, not TOML) raise as before: there is one.

    Args:
        path: The file, as the operator named it (the lines name it so).
        json_output: One JSON object per problem on stdout, instead of lines on stderr.
    """
    try:
        config = load_config(path)
        try:
            # Build every backend: what `run` would refuse is refused here.
            app.check_config(config)
        except ConfigError as exc:
            if config.path is None:
                raise
            text = config.path.read_text(encoding="utf-8-sig")
            raise located(exc, KeyLines(text).line) from exc
        return config
    except ConfigErrors as exc:
        for problem in exc.problems:
            if json_output:
                fields = {"file": path, "line": problem.line, "key_path": problem.key_path}
                print(json.dumps({"event": "error", **fields, "message": problem.message}))
            else:
                print(clean_text(problem.located(path), multiline=True), file=sys.stderr)
        print(_closing_line(exc, path), file=sys.stderr)
        return None


def _closing_line(exc: ConfigErrors, path: str) -> str:
    """One problem ends as every command says it; several, with how many."""
    if len(exc.problems) > 1:
        return f"halomail: {len(exc.problems)} configuration errors in {path}"
    only = exc.problems[0]
    where = f"{only.key_path}: " if only.key_path else ""
    return clean_text(f"halomail: configuration error: {where}{only.message}", multiline=True)
