"""tocsin: durable, multi-step notification journeys for Python services, on Temporal and Postgres.

Names are imported lazily, so that workflow code can import tocsin's pure modules (definitions, contracts)
without pulling in the database and client layers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Tocsin": "tocsin.client",
    "Database": "tocsin.db.database",
    "build_worker": "tocsin.temporal.worker",
    "ensure_reconcile_schedule": "tocsin.temporal.worker",
    "WorkflowDefinition": "tocsin.core.definitions",
    "load_definition": "tocsin.core.definitions",
    "Settings": "tocsin.settings",
    "OutboundMessage": "tocsin.channels",
    "SendReceipt": "tocsin.channels",
    "Channel": "tocsin.channels",
    "TemporaryDeliveryError": "tocsin.channels",
    "PermanentDeliveryError": "tocsin.channels",
    "DeliveryBounced": "tocsin.channels",
    "TocsinError": "tocsin.core.errors",
    "DefinitionError": "tocsin.core.errors",
    "DefinitionConflict": "tocsin.core.errors",
    "DefinitionNotFound": "tocsin.core.errors",
    "RunNotFound": "tocsin.core.errors",
    "DeliveryNotFound": "tocsin.core.errors",
    "InvalidDeliveryTransition": "tocsin.core.errors",
    "InvalidRequest": "tocsin.core.errors",
    "Run": "tocsin.core.models",
    "RunDetail": "tocsin.core.models",
    "RunItem": "tocsin.core.models",
    "StartedRun": "tocsin.core.models",
    "Delivery": "tocsin.core.models",
    "Transition": "tocsin.core.models",
    "Attempt": "tocsin.core.models",
    "Progress": "tocsin.core.models",
}

__all__ = sorted(_EXPORTS)


def _lazy_exports(namespace: dict[str, Any], exports: dict[str, str]) -> Callable[[str], Any]:
    """A package's module `__getattr__` that imports each of `exports` (name -> module) at its first use and
    keeps it in the package's `namespace`. Here, not in a module of its own: `import tocsin` loads no other
    tocsin module, and tocsin.testing and tocsin.workflows use it too."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__


__getattr__ = _lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:
    from tocsin.channels import (
        Channel,
        DeliveryBounced,
        OutboundMessage,
        PermanentDeliveryError,
        SendReceipt,
        TemporaryDeliveryError,
    )
    from tocsin.client import Tocsin
    from tocsin.core.definitions import WorkflowDefinition, load_definition
    from tocsin.core.errors import (
        DefinitionConflict,
        DefinitionError,
        DefinitionNotFound,
        DeliveryNotFound,
        InvalidDeliveryTransition,
        InvalidRequest,
        RunNotFound,
        TocsinError,
    )
    from tocsin.core.models import Attempt, Delivery, Progress, Run, RunDetail, RunItem, StartedRun, Transition
    from tocsin.db.database import Database
    from tocsin.settings import Settings
    from tocsin.temporal.worker import build_worker, ensure_reconcile_schedule
