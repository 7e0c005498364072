"""One handler per rule type, found by :class:`~halomail.RuleType`.

Each handler keeps its rule type's decide (what a matching email means; reads only)
beside its apply (what is written). Adding a rule type means adding a handler here,
not a branch in several modules.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Mapping

from halomail.pipeline.handlers.alert import AlertHandler, OffAlertHandler, VirusHandler
from halomail.pipeline.handlers.base import Applied, RuleHandler
from halomail.pipeline.handlers.files import FileTransferHandler
from halomail.pipeline.handlers.human import HumanHandler
from halomail.pipeline.handlers.ignore import IgnoreHandler
from halomail.pipeline.handlers.inventory import InventoryHandler
from halomail.pipeline.handlers.service import ServiceStatusHandler
from halomail.rules import RuleType

__all__ = ["HANDLERS", "Applied", "RuleHandler", "handler_for"]

HANDLERS: Mapping[RuleType, RuleHandler] = {
    RuleType.IGNORE: IgnoreHandler(),
    RuleType.HELP_REQUEST: HumanHandler(),
    RuleType.APPLY_TEMPLATE: HumanHandler(applies_template=True),
    RuleType.FORMATTED_EMAIL: HumanHandler(),
    RuleType.SERVICE_STATUS: ServiceStatusHandler(),
    RuleType.ALERT: AlertHandler(),
    RuleType.OFF_ALERT: OffAlertHandler(),
    RuleType.VIRUS: VirusHandler(),
    RuleType.FILE_TRANSFER: FileTransferHandler(),
    RuleType.INVENTORY: InventoryHandler(),
}


def handler_for(rule_type: RuleType) -> RuleHandler:
    """The handler of ``rule_type`` (every rule type has one; a test checks it)."""
    return HANDLERS[rule_type]
