"""The floors' no-op activity and the plans of bench/bare.py's workflows.

Imported by the workflows through the sandbox's passthrough, once per process, as tocsin's workflows import
tocsin.core.contracts: a pydantic model class built again in every workflow run would be counted in the floor.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

NOOP = "bench.noop"


class Noop(BaseModel):
    """A no-op activity's input: `pad` brings it to an input size; the result is `result_chars` long."""

    pad: str = ""
    result_chars: int = 0


class Step(BaseModel):
    """One activity of a plan, as a journey's history shows it: its payload sizes and what followed it."""

    pad: int = 0
    result_chars: int = 0
    local: bool = False  # a local activity (run by the workflow's worker, no activity task)
    upsert: bool = False  # the journey's five search attributes upserted after it, as after each progress_run


class Plan(BaseModel):
    steps: list[Step]


@activity.defn(name=NOOP)
async def noop(request: Noop) -> str:
    return "x" * request.result_chars
