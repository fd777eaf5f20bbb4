"""Rich renderables of runs, their audit trails and definitions, and JSON for scripts. No I/O here.

Every value from the database goes through `Text`, never through markup: a recipient or an error
message containing `[bold]` must be shown as it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tocsin.core.models import Attempt, DefinitionRecord, Delivery, Run, RunDetail, Transition

STATE_STYLES = {"active": "cyan", "waiting": "yellow", "completed": "green", "stopped": "red"}
STATUS_STYLES = {
    "pending": "yellow",
    "dispatched": "yellow",
    "succeeded": "green",
    "failed": "red",
    "suppressed": "magenta",
    "cancelled": "red",
}
# The context keys that explain a transition at a glance, with their short labels; the rest is in --json.
FACTS = (
    ("workflow_outcome", "outcome"),
    ("to_step", "to"),
    ("due_at", "due"),
    ("event_name", "signal"),
    ("reason", "reason"),
    ("max_step_activations", "limit"),
)


def run_timeline(detail: RunDetail) -> RenderableType:
    """A run explained from its rows: the run, its transitions in `seq` order, its deliveries and attempts."""
    return Group(
        _run_panel(detail.run),
        _transitions_table(detail.transitions),
        _deliveries_table(detail.deliveries, detail.attempts),
    )


def runs_table(runs: list[Run]) -> Table:
    table = Table(title="runs", title_justify="left")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to be copied into `tocsin runs show`
    for column in ("workflow", "recipient", "state", "step", "status reason", "due at (UTC)"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            _text(run.id),
            _text(_workflow(run)),
            _text(run.recipient),
            _state(run.state),
            _text(run.current_step),
            _text(run.status_reason),
            _text(_moment(run.due_at)),
        )
    return table


def definitions_table(records: Iterable[DefinitionRecord]) -> Table:
    table = Table(title="definitions", title_justify="left")
    for column in ("key", "version", "steps", "checksum", "registered (UTC)"):
        table.add_column(column)
    for record in records:
        steps = record.spec.get("steps", [])
        table.add_row(
            _text(record.key),
            _text(record.version),
            _text(" → ".join(str(step.get("key")) for step in steps)),
            _text(record.checksum[:12]),
            _text(_moment(record.created_at)),
        )
    return table


def as_json(value: BaseModel | Sequence[BaseModel] | Mapping[str, Any]) -> str:
    """`model_dump(mode="json")` of models, lists of models and dicts holding them, indented."""
    return json.dumps(to_jsonable_python(value), indent=2)


def _run_panel(run: Run) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Text]] = [
        ("tenant", _text(run.tenant_id)),
        ("workflow", _text(_workflow(run))),
        ("recipient", _text(run.recipient)),
        ("state", _state(run.state)),
        ("current step", _text(f"{run.current_step} (activation {run.step_activation})")),
        ("status reason", _text(run.status_reason)),
        ("terminal reason", _text(run.terminal_reason)),
        ("due at (UTC)", _text(_moment(run.due_at))),
        ("started (UTC)", _text(_moment(run.started_at))),
    ]
    for label, value in rows:
        grid.add_row(label, value)
    return Panel(grid, title=Text(f"run {run.id}"), title_align="left", expand=False)


def _transitions_table(transitions: list[Transition]) -> Table:
    table = Table(title="transitions", title_justify="left")
    for column in ("seq", "time (UTC)"):
        table.add_column(column)
    table.add_column("reason", no_wrap=True)
    for column in ("state", "step", "context"):
        table.add_column(column)
    for row in sorted(transitions, key=lambda tr: tr.seq):
        table.add_row(
            _text(row.seq),
            _text(_moment(row.created_at)),
            _text(row.reason),
            _text(f"{row.from_state or '∅'} → {row.to_state}"),
            _text(row.step_key),
            _text(_facts(row.context)),
        )
    return table


def _deliveries_table(deliveries: list[Delivery], attempts: list[Attempt]) -> Table:
    by_delivery: dict[uuid.UUID, list[Attempt]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    table = Table(title="deliveries", title_justify="left")
    for column in ("#", "step", "channel", "status", "suppression", "attempts", "terminal at (UTC)", "read at (UTC)"):
        table.add_column(column)
    for delivery in sorted(deliveries, key=lambda d: d.activation):
        table.add_row(
            _text(delivery.activation),
            _text(delivery.step_key),
            _text(delivery.channel),
            Text(delivery.status, style=STATUS_STYLES.get(delivery.status, "")),
            _text(delivery.suppression_reason),
            _attempts(by_delivery.get(delivery.id, [])),
            _text(_moment(delivery.terminal_at)),
            _text(_moment(delivery.read_at)),
        )
    return table


def _attempts(attempts: list[Attempt]) -> Text:
    """One line per attempt: `1 failed (temporary): smtp 451`."""
    if not attempts:
        return _text(None)
    lines = []
    for attempt in sorted(attempts, key=lambda a: a.attempt_number):
        line = f"{attempt.attempt_number} {attempt.outcome}"
        if attempt.error_class:
            line += f" ({attempt.error_class})"
        if attempt.error:
            line += f": {attempt.error}"
        lines.append(line)
    return Text("\n".join(lines))


def _facts(context: Mapping[str, Any]) -> str | None:
    facts = [f"{label}={_fact(key, context[key])}" for key, label in FACTS if context.get(key) is not None]
    return " ".join(facts) or None


def _fact(key: str, value: object) -> str:
    # Context timestamps are ISO strings (SPEC 4.3): show them like every other time here.
    if key == "due_at" and isinstance(value, str):
        return _moment(datetime.fromisoformat(value)) or value
    return str(value)


def _workflow(run: Run) -> str:
    return f"{run.workflow_key}@{run.workflow_version}"


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _moment(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else None


def _text(value: object) -> Text:
    return Text("—", style="dim") if value is None else Text(str(value))
