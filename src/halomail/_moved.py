"""Old import paths that still work for one release, with a DeprecationWarning.

halomail 0.2 moved its modules into one folder per layer (see ``docs/architecture.md``).
Importing a module by its old name gives the module at its new place, so code written
for 0.1 keeps running while it is updated.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: Each old module name, and where that module lives now.
MOVED = {
    "halomail._runtime": "halomail.app",
    "halomail._templates_defaults": "halomail.templates.defaults",
    "halomail._templates_sandbox": "halomail.templates.sandbox",
    "halomail.connectors": "halomail.backends",
    "halomail.connectors.base": "halomail.backends.base",
    "halomail.connectors.ews": "halomail.backends.ews",
    "halomail.connectors.files": "halomail.backends.files",
    "halomail.connectors.gmail": "halomail.backends.gmail",
    "halomail.connectors.graph": "halomail.backends.graph",
    "halomail.connectors.imap": "halomail.backends.imap",
    "halomail.connectors.local": "halomail.backends.local",
    "halomail.connectors.memory": "halomail.backends.memory",
    "halomail.connectors.oauth": "halomail.backends.auth.oauth",
    "halomail.connectors.pop3": "halomail.backends.pop3",
    "halomail.connectors.sms": "halomail.outbound.sms",
    "halomail.connectors.smtp": "halomail.backends.smtp",
    "halomail.notifications": "halomail.outbound.notifier",
    "halomail.outbox": "halomail.outbound.outbox",
    "halomail.processor": "halomail.runner",
    "halomail.staff": "halomail.tickets.staff",
    "halomail.ticket_templates": "halomail.tickets.templates",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads the module from its new place."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, self, is_package=fullname == "halomail.connectors"
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        """The module was executed under its new name already."""


def install() -> None:
    """Let the old names import (once per interpreter)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
