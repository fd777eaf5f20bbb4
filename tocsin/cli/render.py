"""Rich renderables of runs, their audit trails and definitions, and JSON for scripts. No I/O here.

Every value from the database goes through `Text`, never through markup: a recipient or an error
message containing `[bold]` must be shown as it is.

Runs, transitions and deliveries have two layouts: a table when it fits the terminal's width without
cutting a value, else a compact list of a few lines per row, where ids, states and reasons (what a user
copies into the next command) always stand whole on a line of their own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tocsin.core.models import Attempt, DefinitionRecord, Delivery, Run, RunDetail, RunItem, Transition

STATE_STYLES = {"active": "cyan", "waiting": "yellow", "collecting": "blue", "completed": "green", "stopped": "red"}
STATUS_STYLES = {
    "pending": "yellow",
    "dispatched": "yellow",
    "succeeded": "green",
    "failed": "red",
    "suppressed": "magenta",
    "cancelled": "red",
}
UNBOUNDED = 100_000
# The context keys that explain a transition at a glance, with their short labels; the rest is in --json.
FACTS = (
    ("workflow_outcome", "outcome"),
    ("to_step", "to"),
    ("due_at", "due"),
    ("event_name", "signal"),
    ("reason", "reason"),
    ("max_step_activations", "limit"),
    ("position", "item"),
    ("items", "items"),
)


def run_timeline(detail: RunDetail, width: int) -> RenderableType:
    """A run explained from its rows: the run, a batch's items, its transitions in `seq` order, its deliveries and
    attempts. An item's data is not shown (it is personal, and in `--json`)."""
    transitions = sorted(detail.transitions, key=lambda tr: tr.seq)
    deliveries = sorted(detail.deliveries, key=lambda d: d.activation)
    attempts = _attempts_by_delivery(detail.attempts)
    items = sorted(detail.items, key=lambda item: item.position)
    return Group(
        _run_panel(detail.run),
        *([_fitting(width, _items_table(items), lambda: _items_compact(items))] if items else []),
        _fitting(width, _transitions_table(transitions), lambda: _transitions_compact(transitions)),
        _fitting(width, _deliveries_table(deliveries, attempts), lambda: _deliveries_compact(deliveries, attempts)),
    )


def runs_view(runs: list[Run], width: int) -> RenderableType:
    return _fitting(width, _runs_table(runs), lambda: _runs_compact(runs))


def _fitting(width: int, table: Table, compact: Callable[[], RenderableType]) -> RenderableType:
    """`table` if its natural width fits `width` (nothing wrapped or cut), else the compact layout."""
    # Measured with room to spare: a measurement is capped at the console's width.
    console = Console(width=UNBOUNDED)
    if Measurement.get(console, console.options, table).maximum <= width:
        return table
    return compact()


def _runs_table(runs: list[Run]) -> Table:
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


def _runs_compact(runs: list[Run]) -> RenderableType:
    """Per run: `id  state  step`, then its reason and due time, then its journey and recipient."""
    lines: list[RenderableType] = [Text("runs (times in UTC)", style="italic")]
    for run in runs:
        lines.append(Text.assemble(str(run.id), "  ", _state(run.state), f"  step {run.current_step}"))
        due = f" · due {_moment(run.due_at)}" if run.due_at is not None else ""
        lines.append(_indented(Text(f"{run.status_reason}{due}")))
        lines.append(_indented(Text(f"{_workflow(run)} for {run.recipient}", style="dim")))
    return Group(*lines)


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


def _items_table(items: list[RunItem]) -> Table:
    table = Table(title=f"items ({len(items)})", title_justify="left")
    table.add_column("#")
    table.add_column("idempotency key", no_wrap=True)  # whole: what the caller's trigger was
    table.add_column("joined at (UTC)")
    for item in items:
        table.add_row(_text(item.position), _text(item.idempotency_key), _text(_moment(item.created_at)))
    return table


def _items_compact(items: list[RunItem]) -> RenderableType:
    """Per item: `#position  joined at`, then its idempotency key on a line of its own."""
    lines: list[RenderableType] = [Text(f"items ({len(items)}, UTC)", style="italic")]
    for item in items:
        lines.append(Text(f"#{item.position}  joined {_moment(item.created_at)}"))
        lines.append(_indented(Text(f"key {item.idempotency_key}")))
    return Group(*lines)


def _transitions_table(transitions: list[Transition]) -> Table:
    table = Table(title="transitions", title_justify="left")
    for column in ("seq", "time (UTC)"):
        table.add_column(column)
    table.add_column("reason", no_wrap=True)
    for column in ("state", "step", "context"):
        table.add_column(column)
    for row in transitions:
        table.add_row(
            _text(row.seq),
            _text(_moment(row.created_at)),
            _text(row.reason),
            _text(_states(row)),
            _text(row.step_key),
            _text(_facts(row.context)),
        )
    return table


def _transitions_compact(transitions: list[Transition]) -> RenderableType:
    """Per transition: `seq  time  reason`, then the state change, the step and the context's facts."""
    lines: list[RenderableType] = [Text("transitions (UTC)", style="italic")]
    for row in transitions:
        lines.append(Text(f"{row.seq:>3}  {_moment(row.created_at)}  {row.reason}"))
        details = [_states(row), f"step {row.step_key}" if row.step_key else None, _facts(row.context)]
        lines.append(_indented(Text(" · ".join(d for d in details if d)), by=5))
    return Group(*lines)


def _deliveries_table(deliveries: list[Delivery], attempts: Mapping[uuid.UUID, list[Attempt]]) -> Table:
    table = Table(title="deliveries", title_justify="left")
    table.add_column("#")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to be copied into `tocsin deliveries feedback`
    for column in ("step", "channel", "status", "suppression", "attempts", "terminal at (UTC)", "read at (UTC)"):
        table.add_column(column)
    for delivery in deliveries:
        table.add_row(
            _text(delivery.activation),
            _text(delivery.id),
            _text(delivery.step_key),
            _text(delivery.channel),
            _status(delivery),
            _text(delivery.suppression_reason),
            _text("\n".join(_attempt_lines(attempts.get(delivery.id, []))) or None),
            _text(_moment(delivery.terminal_at)),
            _text(_moment(delivery.read_at)),
        )
    return table


def _deliveries_compact(deliveries: list[Delivery], attempts: Mapping[uuid.UUID, list[Attempt]]) -> RenderableType:
    """Per delivery: `#activation step via channel: status (suppression)`, its id, its times, its attempts."""
    lines: list[RenderableType] = [Text("deliveries (UTC)", style="italic")]
    for delivery in deliveries:
        why = f" ({delivery.suppression_reason})" if delivery.suppression_reason else ""
        lines.append(
            Text.assemble(
                f"#{delivery.activation} {delivery.step_key} via {delivery.channel}: ", _status(delivery), why
            )
        )
        lines.append(_indented(Text(f"id {delivery.id}")))
        moments = [
            f"{label} {_moment(moment)}"
            for label, moment in (("terminal", delivery.terminal_at), ("read", delivery.read_at))
            if moment is not None
        ]
        if moments:
            lines.append(_indented(Text(" · ".join(moments), style="dim")))
        lines.extend(_indented(Text(f"attempt {line}")) for line in _attempt_lines(attempts.get(delivery.id, [])))
    return Group(*lines)


def _attempts_by_delivery(attempts: list[Attempt]) -> dict[uuid.UUID, list[Attempt]]:
    by_delivery: dict[uuid.UUID, list[Attempt]] = {}
    for attempt in sorted(attempts, key=lambda a: a.attempt_number):
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return by_delivery


def _attempt_lines(attempts: list[Attempt]) -> list[str]:
    """One line per attempt: `1 failed (temporary): smtp 451`."""
    lines = []
    for attempt in attempts:
        line = f"{attempt.attempt_number} {attempt.outcome}"
        if attempt.error_class:
            line += f" ({attempt.error_class})"
        if attempt.error:
            line += f": {attempt.error}"
        lines.append(line)
    return lines


def _states(row: Transition) -> str:
    return f"{row.from_state or '∅'} → {row.to_state}"


def _status(delivery: Delivery) -> Text:
    return Text(delivery.status, style=STATUS_STYLES.get(delivery.status, ""))


def _indented(text: Text, by: int = 4) -> Padding:
    """Continuation lines of a compact row; a long value wraps under itself, not under the row's id."""
    return Padding(text, (0, 0, 0, by), expand=False)


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
