"""The journey features of SPEC 11 in definitions: the new fields, their normalization and their checksums."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.core.data import data_schema_problems
from tocsin.core.definitions import Batch, Throttle, WorkflowDefinition, load_definition, parse_offset
from tocsin.core.errors import DefinitionError, Problem
from tocsin.core.limits import MAX_DURATION_SECONDS
from tocsin.core.windows import SendWindow

# Checksums computed before any SPEC 11 field existed: a definition that uses none of them must keep its
# checksum, or every registered definition would become a new version to the registry.
MENTION_ESCALATION_CHECKSUM = "c592de82cff365144a9106e1f48e6740dbd61a51b538601c70efc7c725ccbc8f"
OLD_STYLE_CHECKSUM = "f867588a5ce32d095c6df58f01316a0c99b65129a79c45e161c11591f23b04de"


def old_style() -> dict[str, Any]:
    return {
        "key": "k",
        "version": 3,
        "max_step_activations": 7,
        "steps": [
            {
                "key": "a",
                "channel": "sms",
                "required": True,
                "content": {"t": "{{ x }}"},
                "progress": [
                    {"kind": "wait_until", "anchor": "step_activated_at", "delay_seconds": 45, "to_step": "a"},
                    {"kind": "stop", "outcome": "delivered"},
                ],
            }
        ],
    }


def test_definitions_without_the_new_fields_keep_their_checksums() -> None:
    assert load_definition("tocsin/examples/mention_escalation.yaml").checksum() == MENTION_ESCALATION_CHECKSUM
    definition = WorkflowDefinition.parse(old_style())
    assert definition.checksum() == OLD_STYLE_CHECKSUM
    for name in (
        "when",
        "send_window",
        "feedback_timeout",
        "throttle",
        "data_schema",
        "default_timezone",
        "until",
        "batch",
    ):
        assert f'"{name}' not in definition.canonical_json()


def test_the_new_fields_at_their_defaults_read_back_from_the_stored_form() -> None:
    definition = WorkflowDefinition.parse(old_style())
    stored = definition.model_dump(mode="json")
    again = WorkflowDefinition.model_validate(stored)  # as tocsin.db reads a registered definition back
    assert again == definition
    step = again.first_step
    assert (step.when, step.send_window, step.feedback_timeout_seconds) == (None, None, 259200)
    assert (again.throttle, again.data_schema, again.default_timezone, again.batch) == (None, None, "UTC", None)
    wait = step.wait_rules[0]
    assert (wait.delay_seconds, wait.until, wait.offset_seconds, wait.when) == (45, None, 0, None)


STOP_IF_VIP = {"kind": "stop", "outcome": "bounced", "when": "vip"}
WAIT_IF_VIP = {"kind": "wait_until", "delay_seconds": 5, "to_step": "b", "when": "vip"}


def journey(*first_rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A two-step definition whose first step has `first_rules`; `fields` go on the first step, or on the
    definition for the definition's own fields."""
    top: dict[str, Any] = {
        name: fields.pop(name) for name in ("throttle", "data_schema", "default_timezone", "batch") if name in fields
    }
    return {
        "key": "reminder",
        "version": 1,
        "steps": [
            {"key": "a", "channel": "sms", "content": {"body": "hi"}, "progress": list(first_rules), **fields},
            {"key": "b", "channel": "email"},
        ],
        **top,
    }


def round_trips(definition: WorkflowDefinition) -> None:
    """The stored form reads back as the same definition: through parse (registration), model_validate (tocsin.db)."""
    stored = definition.model_dump(mode="json")
    assert WorkflowDefinition.parse(stored) == definition
    assert WorkflowDefinition.model_validate(stored) == definition
    assert WorkflowDefinition.parse(stored).checksum() == definition.checksum()


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("-P1D", -86400), ("PT30M", 1800), ("+PT30M", 1800), ("-PT1H30M", -5400), (-3600, -3600), (0, 0), ("PT0S", 0)],
)
def test_an_until_wait_keeps_the_template_and_the_signed_offset(written: object, seconds: int) -> None:
    until = {"kind": "wait_until", "until": "{{ appointment_at }}", "offset": written, "to_step": "b"}
    definition = WorkflowDefinition.parse(journey(until))
    rule = definition.first_step.wait_rules[0]
    assert (rule.until, rule.offset_seconds, rule.delay_seconds) == ("{{ appointment_at }}", seconds, None)
    dumped = definition.model_dump(mode="json")["steps"][0]["progress"][0]
    # No anchor (it does not apply) and no delay; no offset at all when it is zero.
    expected = {"kind": "wait_until", "until": "{{ appointment_at }}", "to_step": "b", "cancel_signals": []}
    assert dumped == (expected | {"offset_seconds": seconds} if seconds else expected)
    round_trips(definition)


def test_parse_offset_refuses_what_is_no_signed_duration() -> None:
    assert parse_offset("-P2W") == -2 * 604800
    for bad in (
        "--P1D",
        "-",
        "P1M",
        "-PT0.5S",
        1.5,
        True,
        None,
        MAX_DURATION_SECONDS + 1,
        f"-PT{MAX_DURATION_SECONDS + 1}S",
    ):
        with pytest.raises(ValueError):
            parse_offset(bad)


def test_conditions_are_kept_on_steps_and_rules() -> None:
    rules = [
        {"kind": "on_outcome", "outcome": "delivered", "to_step": "b", "when": "plan == 'pro'"},
        {"kind": "stop", "outcome": "bounced", "when": "seats > 10"},
        {"kind": "wait_until", "delay": "PT1H", "to_step": "b", "when": "reminders"},
    ]
    definition = WorkflowDefinition.parse(journey(*rules, when="opted_in"))
    step = definition.first_step
    assert step.when == "opted_in"
    assert [rule.when for rule in step.progress] == ["plan == 'pro'", "seats > 10", "reminders"]
    assert definition.steps[1].when is None
    round_trips(definition)


@pytest.mark.parametrize(
    "rules",
    [
        # Conditioned rules for one outcome, and an unconditioned one after them: each may fire.
        [STOP_IF_VIP, STOP_IF_VIP, {"kind": "on_outcome", "outcome": "bounced", "to_step": "b"}],
        [WAIT_IF_VIP, WAIT_IF_VIP, {"kind": "wait_until", "delay_seconds": 5, "to_step": "b"}],
        # An unconditioned rule for one outcome does not shadow a conditioned rule for another.
        [{"kind": "stop", "outcome": "delivered"}, STOP_IF_VIP],
        # Waits and outcome rules are tried separately: an unconditioned wait shadows no outcome rule.
        [{"kind": "wait_until", "delay_seconds": 5, "to_step": "b"}, STOP_IF_VIP],
    ],
)
def test_rules_that_can_still_fire_are_no_duplicates(rules: list[dict[str, Any]]) -> None:
    assert WorkflowDefinition.parse(journey(*rules)).first_step.progress


def test_the_second_of_two_unconditioned_rules_stays_a_duplicate_not_unreachable() -> None:
    stop = {"kind": "stop", "outcome": "bounced"}
    wait = {"kind": "wait_until", "delay_seconds": 5, "to_step": "b"}
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(journey(stop, STOP_IF_VIP, stop, wait, WAIT_IF_VIP, wait))
    assert [(p.code, p.location) for p in caught.value.problems] == [
        ("unreachable_rule", "steps[0].progress[1]"),
        ("duplicate_outcome_rule", "steps[0].progress[2].outcome"),
        ("unreachable_rule", "steps[0].progress[4]"),
        ("duplicate_wait_rule", "steps[0].progress[5]"),
    ]


def test_wait_rules_lists_every_wait_in_order() -> None:
    first = {"kind": "wait_until", "delay_seconds": 5, "to_step": "b", "when": "vip"}
    second = {"kind": "wait_until", "until": "{{ at }}", "to_step": "a"}
    step = WorkflowDefinition.parse(journey(first, STOP_IF_VIP, second)).first_step
    assert [rule.to_step for rule in step.wait_rules] == ["b", "a"]
    assert step.wait_rule == step.wait_rules[0]


def test_a_send_window_is_normalized() -> None:
    window = {"timezone": "{{ tz }}", "days": ["fri", "mon", "mon"], "start": "8:00", "end": "20:30"}
    definition = WorkflowDefinition.parse(journey(send_window=window))
    assert definition.first_step.send_window == SendWindow(
        timezone="{{ tz }}", days=("mon", "fri"), start="08:00", end="20:30"
    )
    assert definition.steps[1].send_window is None
    round_trips(definition)


@pytest.mark.parametrize(
    ("fields", "seconds"), [({"feedback_timeout": "P1D"}, 86400), ({"feedback_timeout_seconds": 600}, 600)]
)
def test_a_feedback_timeout_is_kept_in_seconds(fields: dict[str, Any], seconds: int) -> None:
    definition = WorkflowDefinition.parse(journey(**fields))
    assert [step.feedback_timeout_seconds for step in definition.steps] == [seconds, 259200]
    assert definition.model_dump(mode="json")["steps"][0]["feedback_timeout_seconds"] == seconds
    round_trips(definition)


def test_defaults_written_out_are_the_same_definition() -> None:
    plain = WorkflowDefinition.parse(journey())
    spelled = WorkflowDefinition.parse(journey(feedback_timeout="P3D", default_timezone="UTC"))
    assert spelled == plain
    assert spelled.checksum() == plain.checksum()


@pytest.mark.parametrize(
    ("throttle", "expected", "stored"),
    [
        ({"limit": 3, "period": "PT1H"}, Throttle(limit=3, period_seconds=3600), {"limit": 3, "period_seconds": 3600}),
        (
            {"limit": 1, "period_seconds": 60, "key": "{{ account }}"},
            Throttle(limit=1, period_seconds=60, key="{{ account }}"),
            {"limit": 1, "period_seconds": 60, "key": "{{ account }}"},
        ),
    ],
)
def test_a_throttle_is_kept_with_its_period_in_seconds(
    throttle: dict[str, Any], expected: Throttle, stored: dict[str, Any]
) -> None:
    definition = WorkflowDefinition.parse(journey(throttle=throttle))
    assert definition.throttle == expected
    assert definition.model_dump(mode="json")["throttle"] == stored
    round_trips(definition)


@pytest.mark.parametrize(
    ("batch", "expected", "stored"),
    [
        ({"window": "PT10M"}, Batch(window_seconds=600), {"window_seconds": 600, "max_items": 100}),
        (
            {"window_seconds": 60, "key": "{{ post_id }}", "max_items": 1000},
            Batch(window_seconds=60, key="{{ post_id }}", max_items=1000),
            {"window_seconds": 60, "key": "{{ post_id }}", "max_items": 1000},
        ),
    ],
)
def test_a_batch_is_kept_with_its_window_in_seconds(
    batch: dict[str, Any], expected: Batch, stored: dict[str, Any]
) -> None:
    definition = WorkflowDefinition.parse(journey(batch=batch))
    assert definition.batch == expected
    assert definition.model_dump(mode="json")["batch"] == stored
    round_trips(definition)
    spelled = WorkflowDefinition.parse(journey(batch={**batch, "max_items": expected.max_items}))
    assert spelled.checksum() == definition.checksum()


def test_a_data_schema_and_a_default_timezone_are_kept() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"at": {"$ref": "#/$defs/moment"}},
        "required": ["at"],
        "$defs": {"moment": {"type": "string", "format": "date-time"}},
    }
    doc = journey(data_schema=schema, default_timezone="Europe/Berlin")
    definition = WorkflowDefinition.parse(doc)
    assert definition.data_schema == schema
    assert definition.default_timezone == "Europe/Berlin"
    schema["required"].append("later")  # a definition is immutable: it shares nothing with the document
    assert definition.data_schema["required"] == ["at"]
    round_trips(definition)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"properties": {"at": {"type": 3}}},
            "not a valid JSON Schema (draft 2020-12) at properties.at.type: "
            "3 is not valid under any of the given schemas",
        ),
        ({"pattern": "("}, "not a valid JSON Schema (draft 2020-12) at pattern: '(' is not a 'regex'"),
        ({"$ref": "#/$defs/missing"}, "'#/$defs/missing' does not resolve within data_schema"),
        ({"$ref": "other.json"}, "'other.json': only references within data_schema ('#/$defs/...') resolve"),
        ({"properties": {"x": {"const": float("nan")}}}, "at properties.x.const: a float is not a JSON value"),
        ({"required": ["x\x00"]}, "at required[0]: a string contains a NUL character (at index 1)"),
    ],
)
def test_a_bad_data_schema_names_where_in_the_schema(schema: dict[str, Any], message: str) -> None:
    assert data_schema_problems(schema) == [Problem("data_schema", "invalid_data_schema", message)]


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}}, "$ref": "#/$defs/a"},
        {"$id": "https://example.com/reminder", "$ref": "#/$defs/a", "$defs": {"a": {}}},
        {"$anchor": "top", "properties": {"self": {"$ref": "#top"}}},
    ],
)
def test_references_within_the_schema_resolve(schema: dict[str, Any]) -> None:
    assert data_schema_problems(schema) == []
