"""Temporal workflow code only: deterministic, sandbox-safe, no I/O.

The workflow classes are imported lazily: the workflow sandbox re-imports a workflow's module, and this package
with it, for every run it holds, so a journey's run does not carry a copy of the reconcile workflow (nor one of
the journey workflow a reconcile tick) in the worker's memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin import _lazy_exports

_EXPORTS = {
    "JourneyWorkflow": "tocsin.workflows.journey",
    "ReconcileWorkflow": "tocsin.workflows.reconcile",
}

__all__ = ["JourneyWorkflow", "ReconcileWorkflow"]


__getattr__ = _lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:
    from tocsin.workflows.journey import JourneyWorkflow
    from tocsin.workflows.reconcile import ReconcileWorkflow
