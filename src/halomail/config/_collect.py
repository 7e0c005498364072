"""Every problem of a configuration at once, not only the first.

The loader reads each table in turn through a :class:`Collector`: a table that fails
records its :class:`~halomail.errors.ConfigError` and the next table is read anyway
(a table that needs a failed one, as ``[[mailboxes]]`` needs ``[outgoing]``, is not:
its errors would only repeat the first). At the end, one error is raised as it was;
several are raised together as :class:`ConfigErrors`, which is a ``ConfigError`` too
(naming the first), so code that catches ``ConfigError`` is unchanged.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from halomail.errors import ConfigError

__all__ = ["Collector", "ConfigErrors", "Problem", "describe_all", "located", "problems_of"]

T = TypeVar("T")


@attrs.frozen
class Problem:
    """One problem of a configuration file.

    Args:
        key_path: Where, e.g. ``mailboxes[1].port`` (``""``: the file as a whole).
        message: What is wrong.
        line: The file's line it is on (or its table's), when known.
    """

    key_path: str
    message: str
    line: int | None = None

    def located(self, file: str) -> str:
        """``halomail.toml:12: mailboxes[1].port: message`` (no line: no number)."""
        where = f"{file}:{self.line}" if self.line is not None else file
        return (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else (f"{where}: {self.message}")
        )


class ConfigErrors(ConfigError):
    """Several problems of one configuration, each with its key path (and line).

    Its own ``key_path`` and message are the first problem's, with how many more follow.

    Args:
        problems: Every problem, in the order the file was read.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        more = len(self.problems) - 1
        message = first.message
        if more:
            message += f" (and {more} more; `halomail check-config` lists them all)"
        super().__init__(first.key_path, message)


def problems_of(error: ConfigError) -> tuple[Problem, ...]:
    """The problems an error holds: its own, or each of a :class:`ConfigErrors`."""
    if isinstance(error, ConfigErrors):
        return error.problems
    return (Problem(error.key_path, error.message),)


class Collector:
    """Runs each step of reading a configuration, keeping every error it raises."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def run(self, step: Callable[[], T]) -> T | None:
        """``step()``, or ``None`` when it raised a ``ConfigError`` (which is kept)."""
        try:
            return step()
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def raise_any(self) -> None:
        """Raise what was kept: one error as it was, several as :class:`ConfigErrors`."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors([p for error in self.errors for p in problems_of(error)])


def located(error: ConfigError, lines: Callable[[str], int | None]) -> ConfigErrors:
    """``error``'s problems, each given its line by ``lines`` (a key path's line)."""
    return ConfigErrors([attrs.evolve(p, line=lines(p.key_path)) for p in problems_of(error)])


def describe_all(error: ConfigError, file: str | Path) -> list[str]:
    """One ``file:LINE: key.path: message`` line per problem of ``error``."""
    return [problem.located(str(file)) for problem in problems_of(error)]
