"""Journey templates: compile-checking at registration, rendering against a run's render context (SPEC 11.6)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from tocsin.core.errors import Problem, TocsinError
from tocsin.core.limits import printable, text_fault

# Content goes out over sms, email, webhooks, ...: escaping is each channel's business, not ours.
# The sandbox matters because definitions are data, possibly authored outside the codebase. Conditions
# (tocsin.core.conditions) and the data analysis (tocsin.core.data) use this same environment.
ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class RenderError(TocsinError):
    """Content could not be rendered against a run's data; the message names the field and the cause."""


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Template:
    # The same few step templates are rendered for every run: compile each source once.
    template = ENVIRONMENT.from_string(source)
    # Every render copies the template's globals (the environment's, behind a ChainMap) into its context; from a
    # plain dict of the same names (the environment's never change) a short template renders in 2 us, not 6.
    template.globals = dict(template.globals)
    return template


def _child(path: str, key: object) -> str:
    # Locations and messages are printed on one line: a key with a NUL or a newline in it is shown escaped.
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{printable(str(key))}"


def _invalid(location: str, message: str) -> Problem:
    return Problem(location, "invalid_template", message)


def _check(value: object, path: str, problems: list[Problem]) -> None:
    if isinstance(value, str):
        problems.extend(_string_problems(value, path))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(_invalid(_child(path, repr(key)), "field names must be strings"))
            elif (fault := text_fault(key)) is not None:
                problems.append(Problem(_child(path, key), "invalid_text", f"the field name {fault}"))
            else:
                _check(item, _child(path, key), problems)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, _child(path, index), problems)
    # Rendered content is stored as jsonb: a leaf JSON cannot hold exactly would fail at run time instead.
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(_invalid(path, f"{value} is not a JSON number"))
    elif not (value is None or isinstance(value, bool | int | float)):
        problems.append(_invalid(path, f"a {type(value).__name__} is not a JSON value"))


def _string_problems(value: str, path: str) -> list[Problem]:
    # Rendered text is stored in Postgres, which holds no NUL and no lone surrogate.
    fault = text_fault(value)
    if fault is not None:
        return [Problem(path, "invalid_text", f"the text {fault}")]
    try:
        _compile(value)
    except TemplateSyntaxError as exc:
        return [_invalid(path, f"template does not compile: {exc.message} (line {exc.lineno})")]
    except RecursionError:  # Jinja's parser and Python's compiler recurse once per nested expression
        return [_invalid(path, "template does not compile: its expressions are nested too deeply")]
    return []


def text_template_problems(value: object, location: str) -> list[Problem]:
    """Every reason `value`, one template string at `location` (an `until`, a timezone, a key), cannot be
    rendered later."""
    if not isinstance(value, str) or not value.strip():
        return [_invalid(location, f"must be a non-blank template string, got {value!r}")]
    return _string_problems(value, location)


def template_problems(content: object, location: str) -> list[Problem]:
    """Every reason `content` (a step's content mapping, found at `location`) cannot be rendered later."""
    if not isinstance(content, Mapping):
        return [_invalid(location, "content must be a mapping of field names to templates")]
    problems: list[Problem] = []
    _check(content, location, problems)
    return problems


def render_text(source: str, context: Mapping[str, Any], location: str) -> str:
    """`source` rendered against `context`; RenderError names `location` and the cause."""
    try:
        return _compile(source).render(context)
    except Exception as exc:  # undefined names, SecurityError, errors raised by filters or data
        raise RenderError(f"cannot render {location}: {type(exc).__name__}: {exc}") from exc


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return render_text(value, context, path)
    if isinstance(value, Mapping):
        return {key: _render(item, context, _child(path, key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, context, _child(path, index)) for index, item in enumerate(value)]
    return value


def render_content(content: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Render every string of `content` against the render context (tocsin.core.context.render_context);
    RenderError names the first field that fails."""
    return {key: _render(value, context, _child("content", key)) for key, value in content.items()}


def content_templates(content: Mapping[str, Any], location: str) -> Iterator[tuple[str, str]]:
    """(template, location) for every string of `content`, in document order: what tocsin.core.data reads."""
    stack: list[tuple[object, str]] = [(content, location)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            yield value, path
        elif isinstance(value, Mapping):
            stack.extend((item, _child(path, key)) for key, item in reversed(list(value.items())))
        elif isinstance(value, list | tuple):
            stack.extend((item, _child(path, index)) for index, item in reversed(list(enumerate(value))))
