"""Content templates: compile checks at registration, sandboxed strict rendering at planning time."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from tocsin.core.errors import Problem, TocsinError
from tocsin.core.templates import RenderError, render_content, template_problems


def test_renders_nested_content_and_keeps_other_leaves() -> None:
    content: dict[str, Any] = {
        "title": "{{ actor }} mentioned you",
        "body": {"html": "<b>{{ actor }}</b>", "lines": ["{{ n + 1 }}", 3, None, True, 1.5]},
        "badge": 2,
        "meta": None,
    }
    rendered = render_content(content, {"actor": "<Ann>", "n": 41})
    # No autoescaping: content is not only HTML, escaping belongs to the channel.
    assert rendered == {
        "title": "<Ann> mentioned you",
        "body": {"html": "<b><Ann></b>", "lines": ["42", 3, None, True, 1.5]},
        "badge": 2,
        "meta": None,
    }
    assert content["title"] == "{{ actor }} mentioned you"  # the input is left alone


def test_render_error_is_a_tocsin_error() -> None:
    assert issubclass(RenderError, TocsinError)


def test_undefined_variable_names_the_field() -> None:
    with pytest.raises(RenderError, match=r"content\.body\.html.*missing") as caught:
        render_content({"title": "ok", "body": {"html": "{{ missing }}"}}, {})
    assert isinstance(caught.value.__cause__, UndefinedError)


def test_undefined_attribute_names_the_list_item() -> None:
    with pytest.raises(RenderError, match=r"content\.lines\[1\].*name"):
        render_content({"lines": ["fine", "{{ user.name }}"]}, {"user": {}})


@pytest.mark.parametrize(
    "template",
    ["{{ ''.__class__.__mro__ }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ f.__globals__ }}"],
)
def test_sandbox_blocks_unsafe_attributes(template: str) -> None:
    with pytest.raises(RenderError, match=r"content\.title.*unsafe") as caught:
        render_content({"title": template}, {"f": render_content})
    assert isinstance(caught.value.__cause__, SecurityError)


def test_any_exception_while_rendering_becomes_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"content\.ratio: ZeroDivisionError"):
        render_content({"ratio": "{{ a / b }}"}, {"a": 1, "b": 0})


def test_content_that_does_not_compile_fails_to_render() -> None:
    with pytest.raises(RenderError, match=r"content\.title: TemplateSyntaxError"):
        render_content({"title": "{{ oops "}, {})


def test_valid_content_has_no_problems() -> None:
    content = {"title": "{{ a }}", "body": {"html": "{% if a %}{{ a|upper }}{% endif %}"}, "n": 1, "x": None}
    assert template_problems(content, "steps[0].content") == []


@pytest.mark.parametrize(
    ("content", "location"),
    [
        ({"title": "{{ name "}, "steps[0].content.title"),
        ({"body": {"html": "{% if x %}"}}, "steps[0].content.body.html"),
        ({"lines": ["a", "b", "{{ x|no_such_filter }}"]}, "steps[0].content.lines[2]"),
        ({"body": {"lines": [{"text": "{# unclosed"}]}}, "steps[0].content.body.lines[0].text"),
    ],
)
def test_compile_failure_is_reported_where_it_is(content: dict[str, Any], location: str) -> None:
    [problem] = template_problems(content, "steps[0].content")
    assert (problem.location, problem.code) == (location, "invalid_template")
    assert "does not compile" in problem.message


def test_every_broken_template_is_reported() -> None:
    problems = template_problems({"a": "{{", "b": "fine", "c": ["{%"]}, "content")
    assert [p.location for p in problems] == ["content.a", "content.c[0]"]


@pytest.mark.parametrize("content", ["{{ title }}", ["x"], None, 3])
def test_content_must_be_a_mapping(content: object) -> None:
    assert template_problems(content, "steps[1].content") == [
        Problem("steps[1].content", "invalid_template", "content must be a mapping of field names to templates")
    ]


@pytest.mark.parametrize(
    ("content", "location"),
    [
        ({"sent": datetime.date(2024, 1, 1)}, "content.sent"),
        ({"n": float("nan")}, "content.n"),
        ({"body": {1: "one"}}, "content.body.1"),
    ],
)
def test_leaves_that_json_cannot_hold_are_problems(content: dict[str, Any], location: str) -> None:
    [problem] = template_problems(content, "content")
    assert (problem.location, problem.code) == (location, "invalid_template")
