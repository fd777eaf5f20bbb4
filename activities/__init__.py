"""Temporal activities: thin adapters from Temporal to the tocsin engine and channels."""

from tocsin.activities.journey import JourneyActivities
from tocsin.activities.reconcile import ReconcileActivities

__all__ = ["JourneyActivities", "ReconcileActivities"]
