"""The journey features of SPEC 11 in definitions: the new fields, their normalization and their checksums."""

from __future__ import annotations

from typing import Any

from tocsin.core.definitions import WorkflowDefinition, load_definition

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
    for name in ("when", "send_window", "feedback_timeout", "throttle", "data_schema", "default_timezone", "until"):
        assert f'"{name}' not in definition.canonical_json()


def test_the_new_fields_at_their_defaults_read_back_from_the_stored_form() -> None:
    definition = WorkflowDefinition.parse(old_style())
    stored = definition.model_dump(mode="json")
    again = WorkflowDefinition.model_validate(stored)  # as tocsin.db reads a registered definition back
    assert again == definition
    step = again.first_step
    assert (step.when, step.send_window, step.feedback_timeout_seconds) == (None, None, 259200)
    assert (again.throttle, again.data_schema, again.default_timezone) == (None, None, "UTC")
    wait = step.wait_rules[0]
    assert (wait.delay_seconds, wait.until, wait.offset_seconds, wait.when) == (45, None, 0, None)
