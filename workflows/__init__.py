"""Temporal workflow code only: deterministic, sandbox-safe, no I/O."""

from workflows.journey import JourneyWorkflow
from workflows.reconcile import ReconcileWorkflow

__all__ = ["JourneyWorkflow", "ReconcileWorkflow"]
