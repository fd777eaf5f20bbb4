"""Replay saved journey histories: a non-deterministic change to workflow code fails here.

The histories under tests/histories/ were recorded from tests/temporal/test_journeys.py and
tests/temporal/test_no_stall.py with `TOCSIN_RECORD_HISTORIES=1 pytest <file>`. Re-record them only for an
intended, versioned change to workflow code. render_failure_before_no_stall is the render-failure journey of
test_no_stall.py recorded under the workflow code of df6eec0, before the no-stall patch: a workflow that was
already sleeping then must still replay (the old branch of `workflow.patched`). The histories recorded before
the Web UI's summaries existed carry none, and still replay under the code that sets them: summaries and
details are metadata, not commands. cancelled_through_temporal (tests/temporal/test_web_ui_and_cancel.py) has them.
Those are the generations before `local-decisions-and-instant-sends` (issue 14: the engine's decisions and the
sends of instant channels as local activities); tests/histories/local-decisions-and-instant-sends/ holds the same
journeys recorded under it (tests/recording.py's GENERATION).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from recording import GENERATION, LOCAL_ACTIVITY_MARKER
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tocsin.temporal.worker import SANDBOX
from tocsin.workflows import JourneyWorkflow, ReconcileWorkflow

ROOT = Path(__file__).parents[1] / "histories"
# `name` for the histories recorded before the newest patch, `<generation>/name` for those recorded under it.
HISTORIES = {p.relative_to(ROOT).with_suffix("").as_posix(): p.read_text() for p in sorted(ROOT.rglob("*.json"))}
NEWEST = {name.removeprefix(f"{GENERATION}/") for name in HISTORIES if name.startswith(f"{GENERATION}/")}


def test_histories_are_present() -> None:
    assert {
        "mention_completed",
        "mention_read_during_wait",
        "dunning_completed",
        "retries_exhausted",
        "render_failure_progressed_at_once",
        "render_failure_before_no_stall",
        "cancelled_through_temporal",
        # SPEC 11.3's paths (tests/temporal/test_journey_features.py): the workflow sleeps until the times
        # Postgres holds, behind the `send-times-in-postgres` patch.
        "send_window_across_dst",
        "retry_waits_for_window",
        "feedback_deadline",
        # SPEC 11.5 (tests/temporal/test_digests.py): a batch collecting until its window closes, woken by joins.
        "digest_of_five",
    } <= set(HISTORIES)
    assert "userMetadata" not in HISTORIES["mention_completed"]
    assert "userMetadata" in HISTORIES["cancelled_through_temporal"]


def test_the_newest_generation_covers_every_recorded_journey() -> None:
    """Each journey recorded before the newest patch is recorded under it too (its decisions as local activities),
    so both branches of `workflow.patched(LOCAL_ACTIVITIES)` replay."""
    older = {name for name in HISTORIES if "/" not in name} - {"render_failure_before_no_stall"}
    assert older <= NEWEST
    for name in NEWEST:
        assert LOCAL_ACTIVITY_MARKER in HISTORIES[f"{GENERATION}/{name}"], name
        assert LOCAL_ACTIVITY_MARKER not in HISTORIES.get(name, ""), name


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_replay(name: str) -> None:
    history = WorkflowHistory.from_json(f"tocsin-replay-{name}", HISTORIES[name])
    replayer = Replayer(
        workflows=[JourneyWorkflow, ReconcileWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=SANDBOX,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"
