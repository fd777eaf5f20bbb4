"""Saving workflow histories for the replay test (tests/temporal/test_replay.py).

With TOCSIN_RECORD_HISTORIES=1, a journey test that calls `record_history` writes its run's history to
tests/histories/<name>.json. Re-record only for an intended, versioned change to workflow code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("TOCSIN_RECORD_HISTORIES") == "1"


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    if RECORD:
        history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))
