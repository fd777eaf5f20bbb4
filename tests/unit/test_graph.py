"""`tocsin definitions graph` output (tocsin.core.graph): every rule kind against the exact expected text."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.core.definitions import WorkflowDefinition
from tocsin.core.graph import dot, iso_duration, mermaid, render

# Every rule kind: on_outcome, stop, a wait (default anchor) with cancel signals, a wait from the step's
# activation, a step whose other outcomes complete the run, a required step with no rules at all.
EVERY_RULE: dict[str, Any] = {
    "key": "every_rule",
    "version": 3,
    "steps": [
        {
            "key": "first",
            "channel": "in_app",
            "progress": [
                {"kind": "on_outcome", "outcome": "bounced", "to_step": "fallback"},
                {"kind": "stop", "outcome": "permanent_failure"},
                {
                    "kind": "wait_until",
                    "delay": "P1DT2H30M",
                    "to_step": "reminder",
                    "cancel_signals": ["notification.read", "order.paid"],
                },
            ],
        },
        {
            "key": "reminder",
            "channel": "email",
            "progress": [
                {"kind": "wait_until", "anchor": "step_activated_at", "delay_seconds": 45, "to_step": "fallback"}
            ],
        },
        {
            "key": "fallback",
            "channel": "webhook",
            "progress": [{"kind": "on_outcome", "outcome": "temporary_failure", "to_step": "last"}],
        },
        {"key": "last", "channel": "sms", "required": True},
    ],
}

EVERY_RULE_MERMAID = """\
%% every_rule version 3
flowchart TD
    start((start))
    s0["first<br/>channel: in_app"]
    s1["reminder<br/>channel: email"]
    s2["fallback<br/>channel: webhook"]
    s3["last<br/>channel: sms<br/>required"]
    stopped(["stopped"])
    completed(["completed"])
    start --> s0
    s0 -->|"bounced"| s2
    s0 -->|"permanent_failure"| stopped
    s0 -->|"wait P1DT2H30M"| s1
    s0 -->|"signal notification.read"| stopped
    s0 -->|"signal order.paid"| stopped
    s1 -->|"wait PT45S after activation"| s2
    s2 -->|"temporary_failure"| s3
    s2 -->|"otherwise"| completed
    s3 --> completed
"""

EVERY_RULE_DOT = """\
digraph "every_rule v3" {
    start [shape=circle, label="start"];
    s0 [shape=box, label="first\\nchannel: in_app"];
    s1 [shape=box, label="reminder\\nchannel: email"];
    s2 [shape=box, label="fallback\\nchannel: webhook"];
    s3 [shape=box, label="last\\nchannel: sms\\nrequired"];
    stopped [shape=doublecircle, label="stopped"];
    completed [shape=doublecircle, label="completed"];
    start -> s0;
    s0 -> s2 [label="bounced"];
    s0 -> stopped [label="permanent_failure"];
    s0 -> s1 [label="wait P1DT2H30M"];
    s0 -> stopped [label="signal notification.read"];
    s0 -> stopped [label="signal order.paid"];
    s1 -> s2 [label="wait PT45S after activation"];
    s2 -> s3 [label="temporary_failure"];
    s2 -> completed [label="otherwise"];
    s3 -> completed;
}
"""


def test_every_rule_kind_as_mermaid() -> None:
    assert mermaid(WorkflowDefinition.parse(EVERY_RULE)) == EVERY_RULE_MERMAID


def test_every_rule_kind_as_dot() -> None:
    assert dot(WorkflowDefinition.parse(EVERY_RULE)) == EVERY_RULE_DOT


def test_render_picks_the_format() -> None:
    definition = WorkflowDefinition.parse(EVERY_RULE)
    assert (render(definition, "mermaid"), render(definition, "dot")) == (EVERY_RULE_MERMAID, EVERY_RULE_DOT)


def test_only_the_end_nodes_a_journey_reaches_are_drawn() -> None:
    # A loop that only ever stops: no `completed` node.
    looping = {
        "key": "loop",
        "version": 1,
        "steps": [
            {"key": "ping", "channel": "log", "progress": [{"kind": "wait_until", "delay": "P2W", "to_step": "ping"}]}
        ],
    }
    assert mermaid(WorkflowDefinition.parse(looping)) == (
        "%% loop version 1\n"
        "flowchart TD\n"
        "    start((start))\n"
        '    s0["ping<br/>channel: log"]\n'
        "    start --> s0\n"
        '    s0 -->|"wait P14D"| s0\n'
    )


def test_labels_are_escaped_and_nodes_never_named_after_keys() -> None:
    tricky = {
        "key": 'say "hi" <now>',
        "version": 1,
        "steps": [{"key": 'a"b#c', "channel": "in\\app\nx", "progress": [{"kind": "stop", "outcome": "bounced"}]}],
    }
    definition = WorkflowDefinition.parse(tricky)
    assert mermaid(definition) == (
        "%% say #quot;hi#quot; #lt;now#gt; version 1\n"
        "flowchart TD\n"
        "    start((start))\n"
        '    s0["a#quot;b#35;c<br/>channel: in\\app\\nx"]\n'
        '    stopped(["stopped"])\n'
        '    completed(["completed"])\n'
        "    start --> s0\n"
        '    s0 -->|"bounced"| stopped\n'
        '    s0 -->|"otherwise"| completed\n'
    )
    assert dot(definition).splitlines()[:3] == [
        'digraph "say \\"hi\\" <now> v1" {',
        '    start [shape=circle, label="start"];',
        '    s0 [shape=box, label="a\\"b#c\\nchannel: in\\\\app\\\\nx"];',
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "PT1S"), (90, "PT1M30S"), (7200, "PT2H"), (86400, "P1D"), (3 * 86400 + 61, "P3DT1M1S"), (14 * 86400, "P14D")],
)
def test_delays_are_iso_8601(seconds: int, text: str) -> None:
    assert iso_duration(seconds) == text
