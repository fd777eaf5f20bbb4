"""Journey definitions (SPEC 3): validation codes and locations, normalization, loading, helpers."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tocsin.cli.definitions import channel_problems
from tocsin.core.definitions import (
    ANCHORS,
    DEFAULT_MAX_STEP_ACTIVATIONS,
    MAX_CANCEL_SIGNALS,
    OUTCOMES,
    OnOutcomeRule,
    RetryPolicy,
    StopRule,
    WaitUntilRule,
    WorkflowDefinition,
    load_definition,
    parse_duration,
)
from tocsin.core.errors import DefinitionError, ProblemCode
from tocsin.core.limits import INT4_MAX, MAX_DURATION_SECONDS

SPEC_EXAMPLE = """
key: mention_escalation
version: 1
steps:                         # the first step is where a run starts
  - key: in_app
    channel: in_app
    content: {title: "{{ actor }} mentioned you", body: "{{ excerpt }}"}
    progress:
      - {kind: on_outcome, outcome: bounced, to_step: email}
      - {kind: wait_until, anchor: prior_delivery_terminal_at, delay: PT2H,
         to_step: email, cancel_signals: [notification.read]}
  - key: email
    channel: email
    content: {subject: "You were mentioned", body: "{{ actor }} wrote: {{ excerpt }}"}
    retry: {max_attempts: 5, initial_interval: PT30S, backoff_coefficient: 2, maximum_interval: PT1H}
"""


def valid() -> dict[str, Any]:
    """A fresh valid definition; each case below breaks exactly one thing in it."""
    return {
        "key": "journey",
        "version": 1,
        "steps": [
            {
                "key": "a",
                "channel": "in_app",
                "content": {"title": "Hi {{ name }}"},
                "progress": [
                    {"kind": "on_outcome", "outcome": "bounced", "to_step": "b"},
                    {"kind": "wait_until", "delay": "PT2H", "to_step": "b", "cancel_signals": ["read"]},
                ],
            },
            {
                "key": "b",
                "channel": "email",
                "content": {"subject": "s", "body": {"html": "<p>{{ name }}</p>", "lines": ["x", "y", "z"]}},
                "progress": [{"kind": "stop", "outcome": "permanent_failure"}],
                "retry": {"max_attempts": 3, "initial_interval": "PT30S", "maximum_interval": "PT1H"},
            },
        ],
    }


Path_ = tuple[str | int, ...]
Edit = Callable[[dict[str, Any]], None]


def _parent(doc: dict[str, Any], path: Path_) -> Any:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    return node


def put(path: Path_, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        _parent(doc, path)[path[-1]] = value

    return edit


def drop(path: Path_) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        del _parent(doc, path)[path[-1]]

    return edit


def push(path: Path_, value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        _parent(doc, path)[path[-1]].append(value)

    return edit


A = ("steps", 0)
B = ("steps", 1)
ON_BOUNCED = (*A, "progress", 0)
WAIT = (*A, "progress", 1)
STOP = (*B, "progress", 0)
RETRY = (*B, "retry")
WAIT_RULE = {"kind": "wait_until", "delay_seconds": 60, "to_step": "b"}
UNTIL_RULE = {"kind": "wait_until", "until": "{{ at }}", "to_step": "a"}

CASES: list[tuple[str, Edit, str, str]] = [
    ("key missing", drop(("key",)), "blank_key", "key"),
    ("key not a string", put(("key",), 3), "blank_key", "key"),
    ("key blank", put(("key",), "  "), "blank_key", "key"),
    ("version missing", drop(("version",)), "invalid_version", "version"),
    ("version a string", put(("version",), "1"), "invalid_version", "version"),
    ("version a bool", put(("version",), True), "invalid_version", "version"),
    ("version zero", put(("version",), 0), "invalid_version", "version"),
    ("version negative", put(("version",), -2), "invalid_version", "version"),
    ("steps missing", drop(("steps",)), "no_steps", "steps"),
    ("steps empty", put(("steps",), []), "no_steps", "steps"),
    ("steps a mapping", put(("steps",), {"a": {}}), "no_steps", "steps"),
    ("step key blank", put((*A, "key"), " "), "blank_step_key", "steps[0].key"),
    ("step key missing", drop((*A, "key")), "blank_step_key", "steps[0].key"),
    ("step key not a string", put((*A, "key"), 7), "blank_step_key", "steps[0].key"),
    ("step key with a NUL", put((*A, "key"), "a\x00"), "invalid_text", "steps[0].key"),
    (
        "content with a lone surrogate",
        put((*A, "content", "title"), "Hi \udc80"),
        "invalid_text",
        "steps[0].content.title",
    ),
    ("step not a mapping", push(("steps",), "c"), "blank_step_key", "steps[2]"),
    (
        "step key twice",
        push(("steps",), {"key": "a", "channel": "sms"}),
        "duplicate_step_key",
        "steps[2].key",
    ),
    ("channel missing", drop((*A, "channel")), "blank_channel", "steps[0].channel"),
    ("channel blank", put((*A, "channel"), ""), "blank_channel", "steps[0].channel"),
    ("channel not a string", put((*B, "channel"), ["email"]), "blank_channel", "steps[1].channel"),
    ("kind unknown", put((*ON_BOUNCED, "kind"), "later"), "unknown_rule_kind", "steps[0].progress[0].kind"),
    ("kind missing", drop((*WAIT, "kind")), "unknown_rule_kind", "steps[0].progress[1].kind"),
    ("kind unhashable", put((*STOP, "kind"), ["stop"]), "unknown_rule_kind", "steps[1].progress[0].kind"),
    ("rule not a mapping", put(ON_BOUNCED, "stop"), "unknown_rule_kind", "steps[0].progress[0]"),
    (
        "progress not a list",
        put((*B, "progress"), {"kind": "stop"}),
        "unknown_rule_kind",
        "steps[1].progress",
    ),
    ("top-level field", put(("colour",), "red"), "unexpected_field", "colour"),
    ("step field", put((*A, "colour"), "red"), "unexpected_field", "steps[0].colour"),
    ("rule field", put((*WAIT, "colour"), "red"), "unexpected_field", "steps[0].progress[1].colour"),
    (
        "field of another kind",
        put((*STOP, "to_step"), "a"),
        "unexpected_field",
        "steps[1].progress[0].to_step",
    ),
    ("retry field", put((*RETRY, "jitter"), 0.1), "unexpected_field", "steps[1].retry.jitter"),
    ("anchor unknown", put((*WAIT, "anchor"), "sent_at"), "invalid_anchor", "steps[0].progress[1].anchor"),
    ("anchor null", put((*WAIT, "anchor"), None), "invalid_anchor", "steps[0].progress[1].anchor"),
    (
        "outcome unknown",
        put((*ON_BOUNCED, "outcome"), "read"),
        "invalid_outcome",
        "steps[0].progress[0].outcome",
    ),
    ("outcome missing", drop((*STOP, "outcome")), "invalid_outcome", "steps[1].progress[0].outcome"),
    ("both delays", put((*WAIT, "delay_seconds"), 60), "invalid_delay", "steps[0].progress[1].delay"),
    ("no delay", drop((*WAIT, "delay")), "invalid_delay", "steps[0].progress[1].delay_seconds"),
    ("delay not ISO", put((*WAIT, "delay"), "2 hours"), "invalid_delay", "steps[0].progress[1].delay"),
    ("delay in months", put((*WAIT, "delay"), "P1M"), "invalid_delay", "steps[0].progress[1].delay"),
    ("delay fractional", put((*WAIT, "delay"), "PT0.5S"), "invalid_delay", "steps[0].progress[1].delay"),
    ("delay zero", put((*WAIT, "delay"), "PT0S"), "invalid_delay", "steps[0].progress[1].delay"),
    (
        "delay_seconds zero",
        push((*B, "progress"), {**WAIT_RULE, "delay_seconds": 0}),
        "invalid_delay",
        "steps[1].progress[1].delay_seconds",
    ),
    (
        "delay_seconds a string",
        push((*B, "progress"), {**WAIT_RULE, "delay_seconds": "60"}),
        "invalid_delay",
        "steps[1].progress[1].delay_seconds",
    ),
    (
        "delay_seconds a bool",
        push((*B, "progress"), {**WAIT_RULE, "delay_seconds": True}),
        "invalid_delay",
        "steps[1].progress[1].delay_seconds",
    ),
    (
        "to_step unknown",
        put((*ON_BOUNCED, "to_step"), "c"),
        "unknown_to_step",
        "steps[0].progress[0].to_step",
    ),
    ("to_step missing", drop((*WAIT, "to_step")), "unknown_to_step", "steps[0].progress[1].to_step"),
    ("to_step unhashable", put((*WAIT, "to_step"), ["b"]), "unknown_to_step", "steps[0].progress[1].to_step"),
    (
        "cancel_signals a string",
        put((*WAIT, "cancel_signals"), "read"),
        "invalid_cancel_signals",
        "steps[0].progress[1].cancel_signals",
    ),
    (
        "cancel signal blank",
        put((*WAIT, "cancel_signals"), ["read", " \t"]),
        "invalid_cancel_signals",
        "steps[0].progress[1].cancel_signals[1]",
    ),
    (
        "cancel signal not a string",
        put((*WAIT, "cancel_signals"), ["read", 3]),
        "invalid_cancel_signals",
        "steps[0].progress[1].cancel_signals[1]",
    ),
    (
        "eleven cancel signals",
        put((*WAIT, "cancel_signals"), [f"s{n}" for n in range(MAX_CANCEL_SIGNALS + 1)]),
        "too_many_cancel_signals",
        "steps[0].progress[1].cancel_signals",
    ),
    (
        "two rules for bounced",
        push((*A, "progress"), {"kind": "stop", "outcome": "bounced"}),
        "duplicate_outcome_rule",
        "steps[0].progress[2].outcome",
    ),
    (
        "two waits",
        push((*A, "progress"), {"kind": "wait_until", "delay_seconds": 5, "to_step": "a"}),
        "duplicate_wait_rule",
        "steps[0].progress[2]",
    ),
    (
        "template syntax",
        put((*A, "content", "title"), "{{ name "),
        "invalid_template",
        "steps[0].content.title",
    ),
    (
        "nested template",
        put((*B, "content", "body", "html"), "{% if %}"),
        "invalid_template",
        "steps[1].content.body.html",
    ),
    (
        "template in a list",
        put((*B, "content", "body", "lines", 2), "{{ x|no_such_filter }}"),
        "invalid_template",
        "steps[1].content.body.lines[2]",
    ),
    ("content not a mapping", put((*A, "content"), "Hi"), "invalid_template", "steps[0].content"),
    ("retry not a mapping", put(RETRY, "fast"), "invalid_retry", "steps[1].retry"),
    ("max_attempts zero", put((*RETRY, "max_attempts"), 0), "invalid_retry", "steps[1].retry.max_attempts"),
    (
        "max_attempts a float",
        put((*RETRY, "max_attempts"), 2.5),
        "invalid_retry",
        "steps[1].retry.max_attempts",
    ),
    (
        "initial interval not a duration",
        put((*RETRY, "initial_interval"), "soon"),
        "invalid_retry",
        "steps[1].retry.initial_interval",
    ),
    (
        "initial interval and seconds",
        put((*RETRY, "initial_interval_seconds"), 30),
        "invalid_retry",
        "steps[1].retry.initial_interval",
    ),
    (
        "maximum seconds zero",
        put(RETRY, {"maximum_interval_seconds": 0}),
        "invalid_retry",
        "steps[1].retry.maximum_interval_seconds",
    ),
    (
        "coefficient below one",
        put((*RETRY, "backoff_coefficient"), 0.5),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    (
        "coefficient a string",
        put((*RETRY, "backoff_coefficient"), "2"),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    (
        "coefficient infinite",
        put((*RETRY, "backoff_coefficient"), float("inf")),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    ("maximum below initial", put((*RETRY, "maximum_interval"), "PT10S"), "invalid_retry", "steps[1].retry"),
    ("step limit zero", put(("max_step_activations",), 0), "invalid_step_limit", "max_step_activations"),
    ("step limit a bool", put(("max_step_activations",), True), "invalid_step_limit", "max_step_activations"),
    (
        "step limit a string",
        put(("max_step_activations",), "50"),
        "invalid_step_limit",
        "max_step_activations",
    ),
    ("required a string", put((*A, "required"), "yes"), "invalid_required", "steps[0].required"),
    ("required a number", put((*B, "required"), 1), "invalid_required", "steps[1].required"),
    # --- the journey features of SPEC 11 (their valid forms: tests/unit/test_definitions_features.py) ---
    ("step when does not compile", put((*A, "when"), "plan =="), "invalid_condition", "steps[0].when"),
    ("step when a template", put((*A, "when"), "{% if x %}"), "invalid_condition", "steps[0].when"),
    ("step when blank", put((*A, "when"), " "), "invalid_condition", "steps[0].when"),
    ("step when null", put((*A, "when"), None), "invalid_condition", "steps[0].when"),
    ("rule when not a string", put((*STOP, "when"), True), "invalid_condition", "steps[1].progress[0].when"),
    (
        "rule when does not compile",
        put((*ON_BOUNCED, "when"), "a b"),
        "invalid_condition",
        "steps[0].progress[0].when",
    ),
    (
        "conditioned rule after an unconditioned one for its outcome",
        push((*A, "progress"), {"kind": "stop", "outcome": "bounced", "when": "vip"}),
        "unreachable_rule",
        "steps[0].progress[2]",
    ),
    (
        "conditioned wait after an unconditioned wait",
        push((*A, "progress"), {**WAIT_RULE, "when": "vip"}),
        "unreachable_rule",
        "steps[0].progress[2]",
    ),
    ("until and delay", put((*WAIT, "until"), "{{ at }}"), "invalid_delay", "steps[0].progress[1].delay"),
    ("offset without until", put((*WAIT, "offset"), "-P1D"), "invalid_delay", "steps[0].progress[1].offset"),
    (
        "offset not a duration",
        push((*B, "progress"), {**UNTIL_RULE, "offset": "-1 day"}),
        "invalid_delay",
        "steps[1].progress[1].offset",
    ),
    (
        "offset and offset_seconds",
        push((*B, "progress"), {**UNTIL_RULE, "offset": "-P1D", "offset_seconds": -86400}),
        "invalid_delay",
        "steps[1].progress[1].offset",
    ),
    (
        "offset_seconds past ten years",
        push((*B, "progress"), {**UNTIL_RULE, "offset_seconds": -MAX_DURATION_SECONDS - 1}),
        "invalid_delay",
        "steps[1].progress[1].offset_seconds",
    ),
    (
        "until does not compile",
        push((*B, "progress"), {**UNTIL_RULE, "until": "{{ at "}),
        "invalid_template",
        "steps[1].progress[1].until",
    ),
    (
        "until not a string",
        push((*B, "progress"), {**UNTIL_RULE, "until": 1700000000}),
        "invalid_template",
        "steps[1].progress[1].until",
    ),
    (
        "anchor with until",
        push((*B, "progress"), {**UNTIL_RULE, "anchor": "step_activated_at"}),
        "invalid_anchor",
        "steps[1].progress[1].anchor",
    ),
    (
        "send window never opens",
        put((*A, "send_window"), {"start": "09:00", "end": "09:00"}),
        "invalid_send_window",
        "steps[0].send_window",
    ),
    (
        "send window start not a time",
        put((*A, "send_window"), {"start": "25:00", "end": "09:00"}),
        "invalid_send_window",
        "steps[0].send_window.start",
    ),
    (
        "send window zone unknown",
        put((*A, "send_window"), {"timezone": "Mars/Olympus", "start": "08:00", "end": "20:00"}),
        "invalid_timezone",
        "steps[0].send_window.timezone",
    ),
    (
        "send window zone template does not compile",
        put((*A, "send_window"), {"timezone": "{{ tz ", "start": "08:00", "end": "20:00"}),
        "invalid_template",
        "steps[0].send_window.timezone",
    ),
    ("default timezone unknown", put(("default_timezone",), "Nowhere/Land"), "invalid_timezone", "default_timezone"),
    ("default timezone a template", put(("default_timezone",), "{{ tz }}"), "invalid_timezone", "default_timezone"),
    (
        "feedback timeout in months",
        put((*A, "feedback_timeout"), "P1M"),
        "invalid_feedback_timeout",
        "steps[0].feedback_timeout",
    ),
    (
        "feedback timeout seconds zero",
        put((*A, "feedback_timeout_seconds"), 0),
        "invalid_feedback_timeout",
        "steps[0].feedback_timeout_seconds",
    ),
    (
        "feedback timeout and seconds",
        lambda doc: doc["steps"][0].update(feedback_timeout="P1D", feedback_timeout_seconds=86400),
        "invalid_feedback_timeout",
        "steps[0].feedback_timeout",
    ),
    ("throttle not a mapping", put(("throttle",), 3), "invalid_throttle", "throttle"),
    ("throttle limit zero", put(("throttle",), {"limit": 0, "period": "PT1H"}), "invalid_throttle", "throttle.limit"),
    (
        "throttle limit past int4",
        put(("throttle",), {"limit": INT4_MAX + 1, "period": "PT1H"}),
        "invalid_throttle",
        "throttle.limit",
    ),
    ("throttle without period", put(("throttle",), {"limit": 3}), "invalid_throttle", "throttle.period"),
    (
        "throttle period not a duration",
        put(("throttle",), {"limit": 3, "period": "1h"}),
        "invalid_throttle",
        "throttle.period",
    ),
    (
        "throttle key does not compile",
        put(("throttle",), {"limit": 3, "period": "PT1H", "key": "{{ account "}),
        "invalid_template",
        "throttle.key",
    ),
    (
        "throttle field",
        put(("throttle",), {"limit": 3, "period": "PT1H", "per": 1}),
        "unexpected_field",
        "throttle.per",
    ),
    ("batch not a mapping", put(("batch",), "PT10M"), "invalid_batch", "batch"),
    ("batch without window", put(("batch",), {"key": "{{ post }}"}), "invalid_batch", "batch.window"),
    ("batch window in months", put(("batch",), {"window": "P1M"}), "invalid_batch", "batch.window"),
    ("batch window seconds zero", put(("batch",), {"window_seconds": 0}), "invalid_batch", "batch.window_seconds"),
    (
        "batch window and seconds",
        put(("batch",), {"window": "PT1M", "window_seconds": 60}),
        "invalid_batch",
        "batch.window",
    ),
    ("batch max_items zero", put(("batch",), {"window": "PT1M", "max_items": 0}), "invalid_batch", "batch.max_items"),
    (
        "batch max_items past 1000",
        put(("batch",), {"window": "PT1M", "max_items": 1001}),
        "invalid_batch",
        "batch.max_items",
    ),
    (
        "batch max_items not an int",
        put(("batch",), {"window": "PT1M", "max_items": True}),
        "invalid_batch",
        "batch.max_items",
    ),
    (
        "batch key does not compile",
        put(("batch",), {"window": "PT1M", "key": "{{ post "}),
        "invalid_template",
        "batch.key",
    ),
    ("batch field", put(("batch",), {"window": "PT1M", "size": 3}), "unexpected_field", "batch.size"),
    ("data schema not a mapping", put(("data_schema",), True), "invalid_data_schema", "data_schema"),
    ("data schema not a schema", put(("data_schema",), {"type": "strin"}), "invalid_data_schema", "data_schema"),
    (
        "data schema with a remote reference",
        put(("data_schema",), {"$ref": "https://example.com/schema.json"}),
        "invalid_data_schema",
        "data_schema",
    ),
]


def problems_of(raw: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(raw)
    return [(p.code, p.location) for p in caught.value.problems]


def test_the_valid_base_parses() -> None:
    # Every problem case below edits this base: it must itself be valid, so each problem is the edit's.
    parsed = WorkflowDefinition.parse(valid())
    assert [step.key for step in parsed.steps] == ["a", "b"]
    assert parsed.steps[1].retry.max_attempts == 3


@pytest.mark.parametrize(("edit", "code", "location"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_each_problem_has_its_code_and_location(edit: Edit, code: str, location: str) -> None:
    doc = valid()
    edit(doc)
    assert problems_of(doc) == [(code, location)]


def test_every_code_is_covered() -> None:
    """A case above for each code validation can report (ProblemCode, which `Problem.code` is typed as)."""
    # invalid_document is about the whole document (not a mapping, an unreadable file): tested further down;
    # unknown_channel comes from `definitions check --channels`, not from parsing: the next test.
    outside = {"invalid_document", "unknown_channel"}
    assert {case[2] for case in CASES} | outside == set(get_args(ProblemCode))


def test_a_step_on_a_channel_outside_the_given_ones_is_unknown_channel() -> None:
    doc = valid()
    doc["steps"][0]["version"] = "and another problem"  # found alongside, by parsing
    assert [(p.code, p.location) for p in channel_problems(doc, ["email", "sms"])] == [
        ("unknown_channel", "steps[0].channel")
    ]
    assert channel_problems(doc, ["in_app", "email"]) == []
    assert channel_problems(["not", "a", "mapping"], ["email"]) == []


def test_all_problems_are_reported_at_once() -> None:
    doc = valid()
    doc["version"] = 0
    doc["steps"][0]["progress"][1]["to_step"] = "nowhere"
    doc["steps"][1]["content"]["subject"] = "{{"
    problems = problems_of(doc)
    assert problems == [
        ("invalid_version", "version"),
        ("unknown_to_step", "steps[0].progress[1].to_step"),
        ("invalid_template", "steps[1].content.subject"),
    ]
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(doc)
    assert isinstance(caught.value, ValueError)
    assert caught.value.codes == ["invalid_version", "unknown_to_step", "invalid_template"]


def test_a_definition_must_be_a_mapping() -> None:
    assert problems_of(["key", "version"]) == [("invalid_document", "")]


def test_delay_is_normalized_to_seconds() -> None:
    definition = WorkflowDefinition.parse(valid())
    wait = definition.step("a").wait_rule
    assert wait is not None
    assert wait.delay_seconds == 7200
    assert wait.anchor == "prior_delivery_terminal_at"
    dumped = definition.model_dump()["steps"][0]["progress"][1]
    assert "delay" not in dumped
    assert dumped["delay_seconds"] == 7200


def test_cancel_signals_are_trimmed_and_deduplicated_in_order() -> None:
    doc = valid()
    # Eleven entries but only ten distinct names once trimmed: allowed.
    names = [" read ", "clicked", "read", *(f"s{n}" for n in range(8)), "clicked\t"]
    doc["steps"][0]["progress"][1]["cancel_signals"] = names
    wait = WorkflowDefinition.parse(doc).step("a").wait_rule
    assert wait is not None
    assert wait.cancel_signals == ("read", "clicked", *(f"s{n}" for n in range(8)))


def test_retry_defaults_are_filled_in() -> None:
    definition = WorkflowDefinition.parse(valid())
    assert definition.step("a").retry == RetryPolicy()
    assert definition.step("b").retry == RetryPolicy(
        max_attempts=3, initial_interval_seconds=30, backoff_coefficient=2.0, maximum_interval_seconds=3600
    )
    doc = valid()
    doc["steps"][1]["retry"] = {"max_attempts": 2}
    assert WorkflowDefinition.parse(doc).step("b").retry == RetryPolicy(max_attempts=2)
    assert definition.max_step_activations == DEFAULT_MAX_STEP_ACTIVATIONS


def test_retry_intervals_accept_seconds_and_normalized_fields() -> None:
    doc = valid()
    doc["steps"][1]["retry"] = {
        "initial_interval": 10,
        "maximum_interval_seconds": 600,
        "backoff_coefficient": 3,
    }
    retry = WorkflowDefinition.parse(doc).step("b").retry
    assert retry == RetryPolicy(initial_interval_seconds=10, maximum_interval_seconds=600, backoff_coefficient=3.0)
    assert isinstance(retry.backoff_coefficient, float)


def test_dumped_definition_parses_back_to_itself() -> None:
    definition = WorkflowDefinition.parse(valid())
    assert WorkflowDefinition.parse(definition.model_dump()) == definition
    assert WorkflowDefinition.parse(definition.model_dump(mode="json")) == definition
    assert WorkflowDefinition.parse(definition) == definition


def test_a_model_built_by_hand_gets_the_cross_reference_checks() -> None:
    doc = WorkflowDefinition.parse(valid()).model_dump(mode="json")
    doc["steps"][0]["progress"][0]["to_step"] = "nowhere"
    unchecked = WorkflowDefinition.model_validate(doc)
    assert problems_of(unchecked) == [("unknown_to_step", "steps[0].progress[0].to_step")]


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


def test_equivalent_definitions_have_the_same_checksum() -> None:
    written = WorkflowDefinition.parse(valid())
    doc = _reversed_keys(valid())
    doc["steps"][0]["progress"][1]["delay_seconds"] = 7200
    del doc["steps"][0]["progress"][1]["delay"]
    doc["steps"][0]["progress"][1]["cancel_signals"] = ["read ", "read"]
    doc["steps"][0]["retry"] = {}
    doc["steps"][1]["retry"] = {"max_attempts": 3, "initial_interval_seconds": 30, "backoff_coefficient": 2}
    doc["max_step_activations"] = 50
    normalized = WorkflowDefinition.parse(doc)
    assert normalized == written
    assert normalized.checksum() == written.checksum()
    assert normalized.canonical_json() == written.canonical_json()


def test_content_is_not_shared_with_the_input() -> None:
    doc = valid()
    definition = WorkflowDefinition.parse(doc)
    checksum = definition.checksum()
    doc["steps"][1]["content"]["body"]["lines"].append("{{ late }}")
    assert definition.checksum() == checksum


def test_checksum_changes_with_content() -> None:
    doc = valid()
    before = WorkflowDefinition.parse(doc).checksum()
    doc["steps"][0]["content"]["title"] = "Hello {{ name }}"
    after = WorkflowDefinition.parse(doc).checksum()
    assert before != after
    assert len(after) == 64


def test_canonical_json_is_compact_sorted_and_unescaped() -> None:
    doc = valid()
    doc["steps"][0]["content"]["title"] = "Grüß {{ name }}"
    text = WorkflowDefinition.parse(doc).canonical_json()
    assert "Grüß" in text
    assert text.startswith('{"key":"journey","max_step_activations":50,"steps":[')
    assert json.loads(text)["version"] == 1


# valid()'s checksum from before steps had `required`: a definition without it must keep it (a changed checksum
# would make every registered definition a new version to the registry).
VALID_CHECKSUM = "6de0b307887b38092a809b03467a30fbe498379209976fb05ce9e7e0294c90ca"


def test_a_definition_without_required_normalizes_and_checksums_as_before() -> None:
    definition = WorkflowDefinition.parse(valid())
    assert definition.checksum() == VALID_CHECKSUM
    assert "required" not in definition.canonical_json()
    assert [step.required for step in definition.steps] == [False, False]
    doc = valid()
    doc["steps"][0]["required"] = False  # written out, the default is the same definition
    assert WorkflowDefinition.parse(doc).checksum() == VALID_CHECKSUM


def test_a_required_step_is_kept_in_the_normalized_spec() -> None:
    doc = valid()
    doc["steps"][1]["required"] = True
    definition = WorkflowDefinition.parse(doc)
    assert [step.required for step in definition.steps] == [False, True]
    dumped = definition.model_dump(mode="json")
    assert [step.get("required") for step in dumped["steps"]] == [None, True]
    assert definition.checksum() != VALID_CHECKSUM
    assert WorkflowDefinition.parse(dumped) == definition  # as the registry stores it, and reads it back


def test_spec_example_parses() -> None:
    definition = load_definition(yaml.safe_load(SPEC_EXAMPLE))
    assert definition.key == "mention_escalation"
    assert definition.first_step.key == "in_app"
    in_app, email = definition.steps
    assert in_app.content == {"title": "{{ actor }} mentioned you", "body": "{{ excerpt }}"}
    assert in_app.progress == (
        OnOutcomeRule(kind="on_outcome", outcome="bounced", to_step="email"),
        WaitUntilRule(
            kind="wait_until",
            anchor="prior_delivery_terminal_at",
            delay_seconds=7200,
            to_step="email",
            cancel_signals=("notification.read",),
        ),
    )
    assert email.retry == RetryPolicy()


def test_load_yaml_and_json_files(tmp_path: Path) -> None:
    expected = load_definition(yaml.safe_load(SPEC_EXAMPLE))
    for name in ("journey.yaml", "journey.YML"):
        (tmp_path / name).write_text(SPEC_EXAMPLE, encoding="utf-8")
        assert load_definition(tmp_path / name) == expected
    json_path = tmp_path / "journey.json"
    json_path.write_text(json.dumps(yaml.safe_load(SPEC_EXAMPLE)), encoding="utf-8")
    assert load_definition(str(json_path)) == expected


def test_load_accepts_a_model() -> None:
    definition = WorkflowDefinition.parse(valid())
    assert load_definition(definition) == definition


@pytest.mark.parametrize(
    ("name", "text", "cause"),
    [
        ("bad.yaml", "key: [unclosed", "not valid YAML"),
        ("bad.json", '{"key": ', "not valid JSON"),
        ("list.yaml", "- key: a\n- key: b\n", "must be a mapping, not list"),
        ("empty.yml", "", "must be a mapping, not NoneType"),
        ("journey.txt", "key: a", "must end in .json, .yaml or .yml"),
        ("missing.yaml", None, "cannot read the file"),
    ],
)
def test_unusable_documents(tmp_path: Path, name: str, text: str | None, cause: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    [problem] = caught.value.problems
    assert (problem.code, problem.location) == ("invalid_document", "")
    assert str(path) in problem.message
    assert cause in problem.message


def test_backoff_seconds() -> None:
    policy = RetryPolicy()
    assert [policy.backoff_seconds(n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert policy.backoff_seconds(10_000) == 3600  # no overflow far past the cap
    slow = RetryPolicy(initial_interval_seconds=10, backoff_coefficient=1.5, maximum_interval_seconds=100)
    assert [slow.backoff_seconds(n) for n in (1, 2, 3, 7)] == [10, 15, 22, 100]
    assert RetryPolicy(backoff_coefficient=1.0).backoff_seconds(50) == 30
    with pytest.raises(ValueError, match="numbered from 1"):
        policy.backoff_seconds(0)


def test_rule_helpers() -> None:
    doc = valid()
    doc["steps"][0]["progress"].append({"kind": "stop", "outcome": "permanent_failure"})
    definition = WorkflowDefinition.parse(doc)
    a, b = definition.steps
    assert a.rule_for("bounced") == OnOutcomeRule(kind="on_outcome", outcome="bounced", to_step="b")
    assert a.rule_for("permanent_failure") == StopRule(kind="stop", outcome="permanent_failure")
    assert a.rule_for("delivered") is None
    assert a.wait_rule is not None and a.wait_rule.to_step == "b"
    assert b.wait_rule is None
    assert definition.first_step is a
    assert definition.step("b") is b
    with pytest.raises(KeyError):
        definition.step("c")


def test_vocabularies() -> None:
    assert OUTCOMES == (
        "delivered",
        "suppressed",
        "temporary_failure",
        "retries_exhausted",
        "permanent_failure",
        "bounced",
    )
    assert ANCHORS == ("prior_delivery_terminal_at", "step_activated_at")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT2H", 7200),
        ("P3D", 259200),
        ("PT1H30M", 5400),
        ("P2W", 1209600),
        ("P1DT1S", 86401),
        ("PT1.0S", 1),
        ("PT90S", 90),
        (45, 45),
    ],
)
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("PT0.5S", "whole number of seconds"),
        ("P1Y", "years and months"),
        ("P1M", "years and months"),
        ("P1Y2DT3H", "years and months"),
        ("PT0S", "positive"),
        (0, "positive"),
        (-5, "positive"),
        (True, "ISO-8601 duration or a number of seconds"),
        (1.5, "ISO-8601 duration or a number of seconds"),
        (None, "ISO-8601 duration or a number of seconds"),
        ("P", "not an ISO-8601 duration"),
        ("PT", "not an ISO-8601 duration"),
        ("P1DT", "not an ISO-8601 duration"),
        ("PT1.5H", "not an ISO-8601 duration"),
        ("P1W2D", "not an ISO-8601 duration"),
        ("7200", "not an ISO-8601 duration"),
        ("pt2h", "not an ISO-8601 duration"),
        ("PT2H ", "not an ISO-8601 duration"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


small = st.integers(min_value=0, max_value=10_000)


@given(days=small, hours=small, minutes=small, seconds=small)
def test_parse_duration_round_trip(days: int, hours: int, minutes: int, seconds: int) -> None:
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    text = f"P{days}DT{hours}H{minutes}M{seconds}S"
    if not 0 < total <= MAX_DURATION_SECONDS:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


# Plain text that Jinja sees as literal output: no delimiters.
plain = st.text(alphabet="ab Zé-_.<>&\n'\"", max_size=12)
json_leaf = st.one_of(
    plain,
    st.sampled_from(["{{ name }}", "{% if x %}{{ x|upper }}{% endif %}"]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
contents = st.dictionaries(
    st.text(alphabet="abcé_", min_size=1, max_size=6),
    st.recursive(
        json_leaf,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet="xyz", max_size=3), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


@st.composite
def raw_definitions(draw: st.DrawFn) -> dict[str, Any]:
    keys = [f"step{n}" for n in range(draw(st.integers(min_value=1, max_value=4)))]
    steps: list[dict[str, Any]] = []
    for key in keys:
        rules: list[dict[str, Any]] = []
        for outcome in draw(st.lists(st.sampled_from(OUTCOMES), unique=True, max_size=3)):
            if draw(st.booleans()):
                rules.append({"kind": "on_outcome", "outcome": outcome, "to_step": draw(st.sampled_from(keys))})
            else:
                rules.append({"kind": "stop", "outcome": outcome})
        if draw(st.booleans()):
            seconds = draw(st.integers(min_value=1, max_value=10**7))
            wait: dict[str, Any] = {"kind": "wait_until", "to_step": draw(st.sampled_from(keys))}
            wait.update({"delay": f"PT{seconds}S"} if draw(st.booleans()) else {"delay_seconds": seconds})
            if draw(st.booleans()):
                wait["anchor"] = draw(st.sampled_from(ANCHORS))
            signals = st.sampled_from(["read", " read", "clicked\t", "archived", "x.y"])
            wait["cancel_signals"] = draw(st.lists(signals, max_size=8))
            rules.insert(draw(st.integers(min_value=0, max_value=len(rules))), wait)
        step: dict[str, Any] = {"key": key, "channel": draw(st.sampled_from(["in_app", "email", "sms"]))}
        if draw(st.booleans()) or rules:  # an empty list and a missing one are the same journey
            step["progress"] = rules
        if draw(st.booleans()):
            step["content"] = draw(contents)
        if draw(st.booleans()):
            initial = draw(st.integers(min_value=1, max_value=600))
            step["retry"] = {
                "max_attempts": draw(st.integers(min_value=1, max_value=20)),
                "initial_interval": draw(st.sampled_from([initial, f"PT{initial}S"])),
                "backoff_coefficient": draw(st.floats(min_value=1, max_value=10)),
                "maximum_interval_seconds": draw(st.integers(min_value=initial, max_value=86400)),
            }
        steps.append(step)
    raw: dict[str, Any] = {
        "key": "generated",
        "version": draw(st.integers(min_value=1, max_value=INT4_MAX)),
        "steps": steps,
    }
    if draw(st.booleans()):
        raw["max_step_activations"] = draw(st.integers(min_value=1, max_value=1000))
    return raw


@given(raw_definitions())
def test_parse_is_idempotent(raw: dict[str, Any]) -> None:
    original = copy.deepcopy(raw)
    definition = WorkflowDefinition.parse(raw)
    assert raw == original  # the input is not modified
    again = WorkflowDefinition.parse(definition.model_dump())
    assert again == definition
    assert again.checksum() == definition.checksum()
    assert WorkflowDefinition.parse(json.loads(definition.canonical_json())) == definition
