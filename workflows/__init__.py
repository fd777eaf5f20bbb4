"""Temporal workflow code only: deterministic, sandbox-safe, no I/O.

The workflow classes are imported lazily: the workflow sandbox re-imports a workflow's module, and this package
with it, for every run it holds, so a journey's run does not carry a copy of the reconcile workflow (nor one of
the journey workflow a reconcile tick) in the worker's memory.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "JourneyWorkflow": "tocsin.workflows.journey",
    "ReconcileWorkflow": "tocsin.workflows.reconcile",
}

__all__ = ["JourneyWorkflow", "ReconcileWorkflow"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tocsin.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from tocsin.workflows.journey import JourneyWorkflow
    from tocsin.workflows.reconcile import ReconcileWorkflow
