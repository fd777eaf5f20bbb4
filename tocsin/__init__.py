"""tocsin: durable, multi-step notification journeys for Python services, on Temporal and Postgres.

Names are imported lazily, so that workflow code can import tocsin's pure modules (definitions, contracts)
without pulling in the database and client layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Tocsin": "tocsin.client",
    "Database": "tocsin.db.database",
    "build_worker": "tocsin.worker",
    "ensure_reconcile_schedule": "tocsin.worker",
    "WorkflowDefinition": "tocsin.definitions",
    "load_definition": "tocsin.definitions",
    "Settings": "tocsin.settings",
    "OutboundMessage": "tocsin.channels",
    "SendReceipt": "tocsin.channels",
    "Channel": "tocsin.channels",
    "TemporaryDeliveryError": "tocsin.channels",
    "PermanentDeliveryError": "tocsin.channels",
    "DeliveryBounced": "tocsin.channels",
    "TocsinError": "tocsin.errors",
    "DefinitionError": "tocsin.errors",
    "DefinitionConflict": "tocsin.errors",
    "DefinitionNotFound": "tocsin.errors",
    "RunNotFound": "tocsin.errors",
    "DeliveryNotFound": "tocsin.errors",
    "InvalidDeliveryTransition": "tocsin.errors",
    "InvalidRequest": "tocsin.errors",
    "Run": "tocsin.models",
    "RunDetail": "tocsin.models",
    "Delivery": "tocsin.models",
    "Transition": "tocsin.models",
    "Attempt": "tocsin.models",
    "Progress": "tocsin.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tocsin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    from tocsin.db.database import Database
    from tocsin.definitions import WorkflowDefinition, load_definition
    from tocsin.errors import (
        DefinitionConflict,
        DefinitionError,
        DefinitionNotFound,
        DeliveryNotFound,
        InvalidDeliveryTransition,
        InvalidRequest,
        RunNotFound,
        TocsinError,
    )
    from tocsin.models import Attempt, Delivery, Progress, Run, RunDetail, Transition
    from tocsin.settings import Settings
    from tocsin.worker import build_worker, ensure_reconcile_schedule
