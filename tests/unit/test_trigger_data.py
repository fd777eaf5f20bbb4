"""Trigger data (SPEC 11.7): the names a definition's templates and conditions require, found from Jinja's
syntax tree, and check_trigger_data (data_schema first, then the first missing name). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.core.data import check_trigger_data, required_names
from tocsin.core.definitions import WorkflowDefinition
from tocsin.core.errors import InvalidRequest


def definition_with(body: str, **more: Any) -> WorkflowDefinition:
    step: dict[str, Any] = {"key": "a", "channel": "sms", "content": {"body": body}}
    top = {name: more.pop(name) for name in ("throttle", "data_schema", "batch") if name in more}
    return WorkflowDefinition.parse({"key": "j", "version": 1, "steps": [step | more], **top})


def names(body: str) -> list[str]:
    return [name for name, _ in required_names(definition_with(body))]


@pytest.mark.parametrize(
    ("body", "required"),
    [
        ("Hi {{ name }}, {{ name }} again", ["name"]),
        ("{{ user.name }} {{ order['id'] }} {{ f(arg) }}", ["user", "order", "f", "arg"]),  # the top-level names
        # A default filter, an `is defined` test, a block or expression guarded by one: not required.
        ("{{ carrier | default('the carrier') }} {{ coupon | d('') }}", []),
        ("{{ 'yes' if vip is defined else 'no' }} {{ vip is undefined }}", []),
        ("{% if carrier is defined %}via {{ carrier }}{% endif %}", []),
        ("{% if carrier is not defined %}-{% else %}{{ carrier }}{% endif %}", []),
        ("{% if a is defined and b is defined %}{{ a }}{{ b }}{% elif c is defined %}{{ c }}{% endif %}", []),
        ("{{ x if x is defined else y }}", ["y"]),
        ("{% if x is defined or y is defined %}{{ x }}{% endif %}", ["x"]),  # either may be the defined one
        ("{% if x is defined %}{% endif %}{{ x }}", ["x"]),  # the guard ends with its block
        ("{% if x is defined %}{% else %}{{ x }}{% endif %}", ["x"]),
        ("{{ user.name | default('') }}", ["user"]),  # only the name itself may be missing, not its parent
        ("{% if user.name is defined %}{{ user.name }}{% endif %}", ["user"]),
        # Loop variables, set names, macro and call arguments are no data; what they are made from is.
        ("{% for line in lines %}{{ line }}{{ loop.index }}{% else %}none{% endfor %}", ["lines"]),
        ("{% for k, v in pairs if v %}{{ k }}={{ v }}{% endfor %}{{ k }}", ["pairs", "k"]),  # k after the loop
        ("{% set total = price * count %}{{ total }}", ["price", "count"]),
        ("{{ total }}{% set total = 1 %}", ["total"]),  # used before it is set
        ("{% set a, b = pair %}{{ a }}{{ b }}", ["pair"]),
        ("{% set block %}{{ inner }}{% endset %}{{ block }}", ["inner"]),
        ("{% set ns = namespace(n=0) %}{% for i in xs %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", ["xs"]),
        ("{% if flag %}{% set label = 'on' %}{% endif %}{{ label }}", ["flag"]),
        ("{% macro greet(who, greeting='Hi') %}{{ greeting }} {{ who }} {{ caller() }}{% endmacro %}", []),
        ("{% macro m(p) %}{{ p }}{{ outer }}{% endmacro %}{{ m(1) }}", ["outer"]),
        ("{% call(u) greet(who) %}{{ u }}{% endcall %}", ["greet", "who"]),
        ("{% with w = v %}{{ w }}{% endwith %}", ["v"]),
        ("{% filter upper %}{{ shout }}{% endfilter %}", ["shout"]),
        # The render context's names and the environment's globals are provided.
        ("{{ recipient }} {{ tenant_id }} {{ workflow_key }} {{ items_count }} {% for i in items %}{% endfor %}", []),
        ("{% for n in range(3) %}{{ n }}{% endfor %}{{ dict(a=1) }}", []),
    ],
)
def test_the_names_a_template_requires(body: str, required: list[str]) -> None:
    assert names(body) == required


def test_each_name_is_reported_at_its_first_use_in_render_order() -> None:
    definition = WorkflowDefinition.parse(
        {
            "key": "appointment",
            "version": 1,
            "throttle": {"limit": 3, "period": "PT1H", "key": "{{ account }}"},
            "batch": {"window": "PT10M", "key": "{{ clinic }}-{{ account }}"},
            "steps": [
                {
                    "key": "remind",
                    "channel": "sms",
                    "when": "plan == 'pro' and account",
                    "content": {"title": "Hi", "body": {"lines": ["{{ name }}", "{{ at }}"]}},
                    "send_window": {"timezone": "{{ tz }}", "start": "08:00", "end": "20:00"},
                    "progress": [
                        {"kind": "stop", "outcome": "bounced", "when": "strict"},
                        {"kind": "wait_until", "until": "{{ at2 }}", "to_step": "follow_up", "when": "late"},
                    ],
                },
                {"key": "follow_up", "channel": "email", "content": {"body": "{{ name }} {{ carrier }}"}},
            ],
        }
    )
    assert definition.required_data == (
        # The batch key is rendered first (to find the trigger's batch), then the throttle key.
        ("clinic", "batch.key"),
        ("account", "batch.key"),
        ("plan", "steps[0].when"),
        ("name", "steps[0].content.body.lines[0]"),
        ("at", "steps[0].content.body.lines[1]"),
        ("tz", "steps[0].send_window.timezone"),
        ("strict", "steps[0].progress[0].when"),
        ("late", "steps[0].progress[1].when"),
        ("at2", "steps[0].progress[1].until"),
        ("carrier", "steps[1].content.body"),
    )
    assert definition.required_data is definition.required_data  # computed once


def test_a_step_s_condition_guards_its_content_and_window_and_a_rule_s_its_until() -> None:
    definition = WorkflowDefinition.parse(
        {
            "key": "j",
            "version": 1,
            "steps": [
                {
                    "key": "a",
                    "channel": "sms",
                    "when": "phone is defined and tz is defined",
                    "content": {"body": "{{ phone }}"},
                    "send_window": {"timezone": "{{ tz }}", "start": "08:00", "end": "20:00"},
                    "progress": [
                        {"kind": "wait_until", "until": "{{ at }}", "to_step": "a", "when": "at is defined"},
                    ],
                }
            ],
        }
    )
    assert definition.required_data == ()


SCHEMA = {
    "type": "object",
    "properties": {
        "appointment_at": {"type": "string", "format": "date-time"},
        "carrier": {"type": "string", "minLength": 1, "maxLength": 100},
        "stops": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["appointment_at"],
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"appointment_at": "tomorrow"}, "data.appointment_at: 'tomorrow' is not a 'date-time'"),
        ({"appointment_at": "2027-03-01T09:00:00"}, "data.appointment_at: '2027-03-01T09:00:00' is not a 'date-time'"),
        ({}, "data: 'appointment_at' is a required property"),
        ({"appointment_at": 5, "carrier": ""}, "data.appointment_at: 5 is not of type 'string'"),  # the first path
        ({"appointment_at": "2027-03-01T09:00:00Z", "stops": [1, "x"]}, "data.stops[1]: 'x' is not of type 'integer'"),
        (
            {"appointment_at": "2027-03-01T09:00:00Z", "carrier": "x" * 500},
            "data.carrier: '" + "x" * 38 + "… is too long",  # the value is cut, not what is wrong with it
        ),
    ],
)
def test_data_that_fails_the_schema_names_the_first_failing_path(data: dict[str, Any], message: str) -> None:
    definition = definition_with("{{ carrier }}", data_schema=SCHEMA)
    with pytest.raises(InvalidRequest) as caught:
        check_trigger_data(definition, data)
    assert str(caught.value) == message


def test_the_schema_is_checked_before_the_names() -> None:
    definition = definition_with("{{ carrier }}", data_schema=SCHEMA)
    check_trigger_data(definition, {"appointment_at": "2027-03-01T09:00:00+01:00", "carrier": "DHL"})
    with pytest.raises(InvalidRequest, match=r"^data is missing 'carrier' \(steps\[0\]\.content\.body\)$"):
        check_trigger_data(definition, {"appointment_at": "2027-03-01T09:00:00+01:00"})


def test_without_a_schema_the_first_missing_name_is_refused() -> None:
    definition = definition_with("{{ greeting | default('Hi') }} {{ name }}, {{ carrier }}")
    check_trigger_data(definition, {"name": "Ada", "carrier": None})  # present is enough
    with pytest.raises(InvalidRequest, match=r"^data is missing 'name' \(steps\[0\]\.content\.body\)$"):
        check_trigger_data(definition, {"recipient": "r", "carrier": "DHL"})


def test_the_render_context_s_names_are_never_required() -> None:
    check_trigger_data(definition_with("{{ recipient }} {{ tenant_id }} {{ workflow_key }} {{ items_count }}"), {})
