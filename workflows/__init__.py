"""Temporal workflow code only: deterministic, sandbox-safe, no I/O."""

from tocsin.workflows.journey import JourneyWorkflow
from tocsin.workflows.reconcile import ReconcileWorkflow

__all__ = ["JourneyWorkflow", "ReconcileWorkflow"]
