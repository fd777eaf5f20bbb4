"""Conditions (SPEC 11.1) and the render context they and the templates see (SPEC 11.6). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.core.conditions import ConditionError, condition_problems, evaluate_condition
from tocsin.core.context import CONTEXT_NAMES, render_context
from tocsin.core.errors import Problem
from tocsin.core.templates import RenderError, render_content, render_text, text_template_problems

DATA = {"plan": "pro", "seats": 12, "user": {"name": "Ada"}, "tags": ["beta"]}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('plan == "pro" and seats > 10', True),
        ('plan == "pro" and seats > 20', False),
        ("user.name == 'Ada'", True),
        ("'beta' in tags", True),
        ("tags", True),  # truthiness: a non-empty list
        ("tags | length == 0", False),
        ("coupon is defined and coupon", False),  # a guarded name may be missing
        ("coupon | default(false)", False),
        ("recipient.startswith('user:')", True),  # the render context's own names
    ],
)
def test_a_condition_is_its_expression_s_truth(source: str, expected: bool) -> None:
    context = render_context(DATA, recipient="user:42", tenant_id="acme", workflow_key="journey")
    assert evaluate_condition(source, context) is expected


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("coupon", "UndefinedError"),  # StrictUndefined: a missing name is an error, never false
        ("user.missing == 1", "UndefinedError"),
        ("plan > 3", "TypeError"),
        ("seats / 0", "ZeroDivisionError"),
        ("plan.__class__.__mro__", "SecurityError"),  # the sandbox
        ("undefined_filter_is_not_compiled |", "TemplateSyntaxError"),  # a source registration never saw
    ],
)
def test_a_condition_that_fails_raises_condition_error_naming_no_data(source: str, error: str) -> None:
    with pytest.raises(ConditionError) as caught:
        evaluate_condition(source, {"plan": "secret-plan-name", "seats": 12})
    assert str(caught.value) == f"condition {source!r} failed to evaluate: {error}"
    assert "secret-plan-name" not in str(caught.value)


def test_condition_problems() -> None:
    assert condition_problems("plan == 'pro'", "steps[0].when") == []
    assert condition_problems("a +", "steps[0].when") == [
        Problem("steps[0].when", "invalid_condition", "not a Jinja expression: unexpected 'end of template'")
    ]
    assert condition_problems("x }} {{ y", "w")[0].message == "not a Jinja expression: chunk after expression"
    assert condition_problems("(" * 3000 + "x" + ")" * 3000, "w") == [
        Problem("w", "invalid_condition", "not a Jinja expression: it is nested too deeply")
    ]
    assert condition_problems("x\x00", "w") == [
        Problem("w", "invalid_text", "the condition contains a NUL character (at index 1)")
    ]
    for source in ("", "  ", None, 1, ["a"]):
        assert [p.code for p in condition_problems(source, "w")] == ["invalid_condition"]


def test_the_render_context_puts_the_data_at_the_top_and_its_own_names_over_it() -> None:
    data: dict[str, Any] = {"recipient": "spoofed", "items_count": 99, "plan": "pro"}
    context = render_context(data, recipient="user:42", tenant_id="acme", workflow_key="journey")
    assert context == {
        "recipient": "user:42",
        "tenant_id": "acme",
        "workflow_key": "journey",
        "items_count": 99,
        "plan": "pro",
    }
    assert data == {"recipient": "spoofed", "items_count": 99, "plan": "pro"}  # the stored data is not changed


def test_a_batched_run_s_context_has_its_items() -> None:
    items = [{"n": 1}, {"n": 2}]
    context = render_context({"items": "spoofed"}, recipient="r", tenant_id="t", workflow_key="w", items=items)
    assert (context["items"], context["items_count"]) == (items, 2)
    assert set(context) == CONTEXT_NAMES
    assert (
        render_text("{{ items | map(attribute='n') | join(',') }} of {{ items_count }}", context, "body") == "1,2 of 2"
    )


def test_render_text_names_its_location() -> None:
    assert render_text("{{ user.name }}", DATA, "steps[0].progress[1].until") == "Ada"
    with pytest.raises(RenderError, match=r"^cannot render steps\[0\]\.progress\[1\]\.until: UndefinedError: "):
        render_text("{{ at }}", DATA, "steps[0].progress[1].until")


def test_render_content_renders_against_a_context() -> None:
    context = render_context(DATA, recipient="user:42", tenant_id="acme", workflow_key="journey")
    assert render_content({"body": "{{ user.name }} ({{ recipient }})"}, context) == {"body": "Ada (user:42)"}


def test_text_template_problems() -> None:
    assert text_template_problems("{{ tz }}", "steps[0].send_window.timezone") == []
    assert text_template_problems("Europe/Berlin", "x") == []  # a literal is a template too
    assert [(p.code, p.location) for p in text_template_problems("{{ at ", "throttle.key")] == [
        ("invalid_template", "throttle.key")
    ]
    assert [p.code for p in text_template_problems("{{ at }}\x00", "k")] == ["invalid_text"]
    for value in ("", " ", None, 3, {"a": "b"}):
        assert [p.code for p in text_template_problems(value, "k")] == ["invalid_template"]
