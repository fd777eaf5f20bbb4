"""A journey definition as a diagram (SPEC 13, `tocsin definitions graph`): Mermaid or Graphviz DOT.

Steps are nodes (key, channel, `when`, send window, `required`); rules are labelled edges: an outcome to its
step, a stop to the `stopped` end, a wait to its step with its delay in ISO-8601 (`PT2H`) or its `until`
template and offset, and to `stopped` for each cancel signal; a rule's `when` is a second line of its label. A
step that may complete the run on its other outcomes (no wait rule without `when`) has an edge to `completed`.
A start node points at the first step; for a batched journey (SPEC 11.5) that edge says the batch's window, key
and max_items. Pure: no I/O.

What the diagrams show follows the rules engine (tocsin.core.rules): an outcome without a rule waits when
a wait rule fires, and completes the run when none does (there is none, or every one's `when` is false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tocsin.core.definitions import OnOutcomeRule, Step, StopRule, WaitUntilRule, WorkflowDefinition
from tocsin.core.limits import printable
from tocsin.core.windows import WEEKDAYS, SendWindow

GraphFormat = Literal["mermaid", "dot"]
GRAPH_FORMATS: tuple[GraphFormat, ...] = ("mermaid", "dot")

START, STOPPED, COMPLETED = "start", "stopped", "completed"
END_NODES = (STOPPED, COMPLETED)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: tuple[str, ...] = ()  # its lines; none: an edge with no label


def iso_duration(seconds: int) -> str:
    """Whole seconds as an ISO-8601 duration: `PT2H`, `P3D`, `P1DT2H30M`, `PT45S`."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def _node_id(index: int) -> str:
    # Step keys may hold any text: nodes are numbered, and the key is only ever a label.
    return f"s{index}"


def _wait_label(rule: WaitUntilRule) -> str:
    if rule.delay_seconds is not None:
        after = "" if rule.anchor == "prior_delivery_terminal_at" else " after activation"
        return f"wait {iso_duration(rule.delay_seconds)}{after}"
    # A wait until a moment from the data (SPEC 11.2): its template as written, and the offset from it.
    if not rule.offset_seconds:
        return f"wait until {rule.until}"
    side = "before" if rule.offset_seconds < 0 else "after"
    return f"wait until {rule.until}, {iso_duration(abs(rule.offset_seconds))} {side}"


def _rule_label(text: str, rule: OnOutcomeRule | StopRule | WaitUntilRule) -> tuple[str, ...]:
    return (text,) if rule.when is None else (text, f"when {rule.when}")


def _start_label(definition: WorkflowDefinition) -> tuple[str, ...]:
    batch = definition.batch
    if batch is None:
        return ()
    scope = f" per {batch.key}" if batch.key is not None else ""
    return (f"batch {iso_duration(batch.window_seconds)}{scope}", f"up to {batch.max_items} items")


def edges(definition: WorkflowDefinition) -> list[Edge]:
    """Every edge of the diagram, in the order of the steps and of their rules."""
    ids = {step.key: _node_id(i) for i, step in enumerate(definition.steps)}
    found = [Edge(START, ids[definition.first_step.key], _start_label(definition))]
    for step in definition.steps:
        source = ids[step.key]
        for rule in step.progress:
            if isinstance(rule, OnOutcomeRule):
                found.append(Edge(source, ids[rule.to_step], _rule_label(rule.outcome, rule)))
            elif isinstance(rule, StopRule):
                found.append(Edge(source, STOPPED, _rule_label(rule.outcome, rule)))
            else:
                found.append(Edge(source, ids[rule.to_step], _rule_label(_wait_label(rule), rule)))
                found.extend(Edge(source, STOPPED, (f"signal {name}",)) for name in rule.cancel_signals)
        # A wait rule without `when` always fires on a terminal outcome; conditioned ones may all be passed over.
        if all(rule.when is not None for rule in step.wait_rules):
            found.append(Edge(source, COMPLETED, ("otherwise",) if step.progress else ()))
    return found


def _window_line(window: SendWindow, default_timezone: str) -> str:
    days = "" if window.days == WEEKDAYS else " " + ",".join(window.days)
    # Without a timezone of its own the window is the recipient's, else the definition's default (SPEC 11.3).
    zone = window.timezone or f"recipient's zone or {default_timezone}"
    return f"window: {window.start}-{window.end}{days} in {zone}"


def _step_lines(step: Step, default_timezone: str) -> list[str]:
    lines = [step.key, f"channel: {step.channel}"]
    if step.when is not None:
        lines.append(f"when: {step.when}")
    if step.send_window is not None:
        lines.append(_window_line(step.send_window, default_timezone))
    return [*lines, *(["required"] if step.required else [])]


def _used_ends(found: list[Edge]) -> list[str]:
    return [end for end in END_NODES if any(edge.target == end for edge in found)]


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label, quotes and markup characters are written as entity codes; so is `|`, which
    # ends an edge's label (a `when` may hold a Jinja filter).
    text = printable(text)
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;")):
        text = text.replace(char, code)
    return text


def mermaid(definition: WorkflowDefinition) -> str:
    """The definition as a Mermaid flowchart (GitHub renders a ```mermaid block)."""
    found = edges(definition)
    lines = [f"%% {_mermaid_text(definition.key)} version {definition.version}", "flowchart TD"]
    lines.append(f"    {START}(({START}))")
    for i, step in enumerate(definition.steps):
        label = "<br/>".join(_mermaid_text(line) for line in _step_lines(step, definition.default_timezone))
        lines.append(f'    {_node_id(i)}["{label}"]')
    lines.extend(f'    {end}(["{end}"])' for end in _used_ends(found))
    for edge in found:
        label = "<br/>".join(_mermaid_text(line) for line in edge.label)
        arrow = f'-->|"{label}"|' if label else "-->"
        lines.append(f"    {edge.source} {arrow} {edge.target}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def dot(definition: WorkflowDefinition) -> str:
    """The definition as a Graphviz DOT digraph (`dot -Tsvg`)."""
    found = edges(definition)
    lines = [
        f'digraph "{_dot_text(definition.key)} v{definition.version}" {{',
        f'    {START} [shape=circle, label="{START}"];',
    ]
    for i, step in enumerate(definition.steps):
        label = "\\n".join(_dot_text(line) for line in _step_lines(step, definition.default_timezone))
        lines.append(f'    {_node_id(i)} [shape=box, label="{label}"];')
    lines.extend(f'    {end} [shape=doublecircle, label="{end}"];' for end in _used_ends(found))
    for edge in found:
        label = "\\n".join(_dot_text(line) for line in edge.label)
        attributes = f' [label="{label}"]' if label else ""
        lines.append(f"    {edge.source} -> {edge.target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(definition: WorkflowDefinition, format: GraphFormat) -> str:
    return mermaid(definition) if format == "mermaid" else dot(definition)
