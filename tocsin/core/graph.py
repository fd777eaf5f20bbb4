"""A journey definition as a diagram (SPEC 13, `tocsin definitions graph`): Mermaid or Graphviz DOT.

Steps are nodes (key, channel, `required`); rules are labelled edges: an outcome to its step, a stop to the
`stopped` end, a wait to its step with its delay in ISO-8601 (`PT2H`) and to `stopped` for each cancel
signal; a step that completes the run on its other outcomes (no wait rule) has an edge to `completed`. A
start node points at the first step. Pure: no I/O.

What the diagrams show follows the rules engine (tocsin.core.rules): an outcome without a rule waits when
the step has a wait rule, and completes the run otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tocsin.core.definitions import OnOutcomeRule, Step, StopRule, WaitUntilRule, WorkflowDefinition
from tocsin.core.limits import printable

GraphFormat = Literal["mermaid", "dot"]
GRAPH_FORMATS: tuple[GraphFormat, ...] = ("mermaid", "dot")

START, STOPPED, COMPLETED = "start", "stopped", "completed"
END_NODES = (STOPPED, COMPLETED)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None


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
    if rule.delay_seconds is None:  # a wait until a moment from the data (SPEC 11.2)
        if not rule.offset_seconds:
            return "wait until"
        side = "before" if rule.offset_seconds < 0 else "after"
        return f"wait until, {iso_duration(abs(rule.offset_seconds))} {side}"
    after = "" if rule.anchor == "prior_delivery_terminal_at" else " after activation"
    return f"wait {iso_duration(rule.delay_seconds)}{after}"


def edges(definition: WorkflowDefinition) -> list[Edge]:
    """Every edge of the diagram, in the order of the steps and of their rules."""
    ids = {step.key: _node_id(i) for i, step in enumerate(definition.steps)}
    found = [Edge(START, ids[definition.first_step.key], None)]
    for step in definition.steps:
        source = ids[step.key]
        for rule in step.progress:
            if isinstance(rule, OnOutcomeRule):
                found.append(Edge(source, ids[rule.to_step], rule.outcome))
            elif isinstance(rule, StopRule):
                found.append(Edge(source, STOPPED, rule.outcome))
            else:
                found.append(Edge(source, ids[rule.to_step], _wait_label(rule)))
                found.extend(Edge(source, STOPPED, f"signal {name}") for name in rule.cancel_signals)
        if step.wait_rule is None:
            found.append(Edge(source, COMPLETED, "otherwise" if step.progress else None))
    return found


def _step_lines(step: Step) -> list[str]:
    return [step.key, f"channel: {step.channel}", *(["required"] if step.required else [])]


def _used_ends(found: list[Edge]) -> list[str]:
    return [end for end in END_NODES if any(edge.target == end for edge in found)]


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label, quotes and markup characters are written as entity codes.
    text = printable(text)
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def mermaid(definition: WorkflowDefinition) -> str:
    """The definition as a Mermaid flowchart (GitHub renders a ```mermaid block)."""
    found = edges(definition)
    lines = [f"%% {_mermaid_text(definition.key)} version {definition.version}", "flowchart TD"]
    lines.append(f"    {START}(({START}))")
    for i, step in enumerate(definition.steps):
        label = "<br/>".join(_mermaid_text(line) for line in _step_lines(step))
        lines.append(f'    {_node_id(i)}["{label}"]')
    lines.extend(f'    {end}(["{end}"])' for end in _used_ends(found))
    for edge in found:
        arrow = f'-->|"{_mermaid_text(edge.label)}"|' if edge.label else "-->"
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
        label = "\\n".join(_dot_text(line) for line in _step_lines(step))
        lines.append(f'    {_node_id(i)} [shape=box, label="{label}"];')
    lines.extend(f'    {end} [shape=doublecircle, label="{end}"];' for end in _used_ends(found))
    for edge in found:
        attributes = f' [label="{_dot_text(edge.label)}"]' if edge.label else ""
        lines.append(f"    {edge.source} -> {edge.target}{attributes};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(definition: WorkflowDefinition, format: GraphFormat) -> str:
    return mermaid(definition) if format == "mermaid" else dot(definition)
