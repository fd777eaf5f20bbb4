"""Temporal activities: thin adapters from Temporal to the tocsin engine and channels."""

from activities.journey import JourneyActivities
from activities.reconcile import ReconcileActivities

__all__ = ["JourneyActivities", "ReconcileActivities"]
