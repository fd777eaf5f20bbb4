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


# SPEC 11 on the diagram: a step's `when` and send window (its zone as written, or the recipient's and the
# definition's default), a rule's `when` under its label, `until` waits with and without an offset. A step whose
# wait rules all carry `when` may still complete the run: it has the `otherwise` edge.
JOURNEY_FEATURES: dict[str, Any] = {
    "key": "features",
    "version": 1,
    "default_timezone": "Europe/Berlin",
    "steps": [
        {
            "key": "booked",
            "channel": "in_app",
            "required": True,
            "progress": [
                {"kind": "stop", "outcome": "bounced", "when": "plan == 'free'"},
                {"kind": "wait_until", "until": "{{ starts_at }}", "offset": "-P1D", "to_step": "sms"},
            ],
        },
        {
            "key": "sms",
            "channel": "sms",
            "when": "phone is defined",
            "send_window": {"timezone": "{{ tz }}", "start": "09:00", "end": "20:00"},
            "progress": [
                {"kind": "on_outcome", "outcome": "suppressed", "to_step": "email", "when": "email | length > 0"},
                {"kind": "wait_until", "until": "{{ ends_at }}", "to_step": "email", "when": "follow_up"},
                {"kind": "wait_until", "until": "{{ ends_at }}", "offset": "PT2H", "to_step": "email", "when": "late"},
            ],
        },
        {
            "key": "email",
            "channel": "email",
            "send_window": {"days": ["sat", "mon"], "start": "22:00", "end": "06:00"},
        },
    ],
}

JOURNEY_FEATURES_MERMAID = """\
%% features version 1
flowchart TD
    start((start))
    s0["booked<br/>channel: in_app<br/>required"]
    s1["sms<br/>channel: sms<br/>when: phone is defined<br/>window: 09:00-20:00 in {{ tz }}"]
    s2["email<br/>channel: email<br/>window: 22:00-06:00 mon,sat in recipient's zone or Europe/Berlin"]
    stopped(["stopped"])
    completed(["completed"])
    start --> s0
    s0 -->|"bounced<br/>when plan == 'free'"| stopped
    s0 -->|"wait until {{ starts_at }}, P1D before"| s1
    s1 -->|"suppressed<br/>when email #124; length #gt; 0"| s2
    s1 -->|"wait until {{ ends_at }}<br/>when follow_up"| s2
    s1 -->|"wait until {{ ends_at }}, PT2H after<br/>when late"| s2
    s1 -->|"otherwise"| completed
    s2 --> completed
"""

JOURNEY_FEATURES_DOT = """\
digraph "features v1" {
    start [shape=circle, label="start"];
    s0 [shape=box, label="booked\\nchannel: in_app\\nrequired"];
    s1 [shape=box, label="sms\\nchannel: sms\\nwhen: phone is defined\\nwindow: 09:00-20:00 in {{ tz }}"];
    s2 [shape=box, label="email\\nchannel: email\\nwindow: 22:00-06:00 mon,sat in recipient's zone or Europe/Berlin"];
    stopped [shape=doublecircle, label="stopped"];
    completed [shape=doublecircle, label="completed"];
    start -> s0;
    s0 -> stopped [label="bounced\\nwhen plan == 'free'"];
    s0 -> s1 [label="wait until {{ starts_at }}, P1D before"];
    s1 -> s2 [label="suppressed\\nwhen email | length > 0"];
    s1 -> s2 [label="wait until {{ ends_at }}\\nwhen follow_up"];
    s1 -> s2 [label="wait until {{ ends_at }}, PT2H after\\nwhen late"];
    s1 -> completed [label="otherwise"];
    s2 -> completed;
}
"""


def test_conditions_windows_and_until_waits_as_mermaid() -> None:
    assert mermaid(WorkflowDefinition.parse(JOURNEY_FEATURES)) == JOURNEY_FEATURES_MERMAID


def test_conditions_windows_and_until_waits_as_dot() -> None:
    assert dot(WorkflowDefinition.parse(JOURNEY_FEATURES)) == JOURNEY_FEATURES_DOT


def test_a_batched_journey_s_start_edge_says_its_batch() -> None:
    digest = {
        "key": "digest",
        "version": 1,
        "batch": {"window": "PT10M", "key": "{{ post_id }}", "max_items": 50},
        "steps": [{"key": "email", "channel": "email"}],
    }
    definition = WorkflowDefinition.parse(digest)
    assert '    start -->|"batch PT10M per {{ post_id }}<br/>up to 50 items"| s0\n' in mermaid(definition)
    unkeyed = WorkflowDefinition.parse({**digest, "batch": {"window": "P1D"}})
    assert '    start -> s0 [label="batch P1D\\nup to 100 items"];\n' in dot(unkeyed)
