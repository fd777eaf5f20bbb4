"""Recipients' preferences (SPEC 12.1): the rows, and which one decides a send. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Preference(BaseModel):
    """One scope a recipient set: `workflow_key` / `channel` None means "any"."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    recipient: str
    workflow_key: str | None
    channel: str | None
    opted_in: bool
    updated_at: datetime


class Preferences(BaseModel):
    """A recipient's rows, and the resolved choice for every registered workflow and the channels it uses."""

    rows: list[Preference]
    resolved: dict[str, dict[str, bool]]


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    recipient: str
    timezone: str | None
    updated_at: datetime


def specificity(row: Preference) -> int:
    """(workflow, channel) 3 > (workflow, any) 2 > (any, channel) 1 > (any, any) 0."""
    return 2 * (row.workflow_key is not None) + (row.channel is not None)


def applies(row: Preference, workflow_key: str, channel: str) -> bool:
    return row.workflow_key in (None, workflow_key) and row.channel in (None, channel)


def opted_in(rows: Iterable[Preference], workflow_key: str, channel: str) -> bool:
    """The most specific row that covers (workflow_key, channel) decides; with none, the recipient is opted in."""
    matching = [row for row in rows if applies(row, workflow_key, channel)]
    if not matching:
        return True
    return max(matching, key=specificity).opted_in


def resolve(
    rows: Iterable[Preference], channels_by_workflow: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, bool]]:
    """{workflow_key: {channel: opted_in}} for each workflow and each channel it uses."""
    kept = list(rows)
    return {
        key: {channel: opted_in(kept, key, channel) for channel in sorted(set(channels))}
        for key, channels in sorted(channels_by_workflow.items())
    }
