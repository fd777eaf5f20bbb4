"""Saving workflow histories for the replay test (tests/temporal/test_replay.py), and reading what they hold.

With TOCSIN_RECORD_HISTORIES=1, a journey test that calls `record_history` writes its run's history to
tests/histories/<GENERATION>/<name>.json. Record only for an intended, versioned change to workflow code (a new
`workflow.patched`): name the new patch in GENERATION, so that the histories of the generations before stay as
they were recorded and keep proving that runs started under them still replay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"
# The newest patch of JourneyWorkflow (workflows/journey.py). The histories directly under HISTORIES were
# recorded before it, under the patches before.
GENERATION = "local-decisions-and-instant-sends"
RECORD = os.environ.get("TOCSIN_RECORD_HISTORIES") == "1"
# The marker the SDK records for a local activity (the engine's decisions run as local activities).
LOCAL_ACTIVITY_MARKER = "core_local_activity"


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    if RECORD:
        history = await handle.fetch_history()
        (HISTORIES / GENERATION).mkdir(parents=True, exist_ok=True)
        (HISTORIES / GENERATION / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))


def activity_type(event: HistoryEvent) -> str | None:
    """The activity an event schedules: an activity task, or a local activity's marker (a retried local activity
    has one marker per attempt, its failure in all but the last); None for any other event."""
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return event.activity_task_scheduled_event_attributes.activity_type.name
    marker = event.marker_recorded_event_attributes
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED or marker.marker_name != LOCAL_ACTIVITY_MARKER:
        return None
    (data,) = marker.details["data"].payloads
    name: str = json.loads(data.data)["activity_type"]
    return name
