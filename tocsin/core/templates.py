"""Journey content: compile-checking at registration, rendering against a run's data at planning time."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from tocsin.core.errors import Problem, TocsinError
from tocsin.core.limits import printable, text_fault

# Content goes out over sms, email, webhooks, ...: escaping is each channel's business, not ours.
# The sandbox matters because definitions are data, possibly authored outside the codebase.
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class RenderError(TocsinError):
    """Content could not be rendered against a run's data; the message names the field and the cause."""


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Template:
    # The same few step templates are rendered for every run: compile each source once.
    return _ENV.from_string(source)


def _child(path: str, key: object) -> str:
    # Locations and messages are printed on one line: a key with a NUL or a newline in it is shown escaped.
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{printable(str(key))}"


def _invalid(location: str, message: str) -> Problem:
    return Problem(location, "invalid_template", message)


def _check(value: object, path: str, problems: list[Problem]) -> None:
    if isinstance(value, str):
        # Rendered content is stored in Postgres, which holds no NUL and no lone surrogate.
        fault = text_fault(value)
        if fault is not None:
            problems.append(Problem(path, "invalid_text", f"the text {fault}"))
            return
        try:
            _compile(value)
        except TemplateSyntaxError as exc:
            problems.append(_invalid(path, f"template does not compile: {exc.message} (line {exc.lineno})"))
        except RecursionError:  # Jinja's parser and Python's compiler recurse once per nested expression
            problems.append(_invalid(path, "template does not compile: its expressions are nested too deeply"))
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


def template_problems(content: object, location: str) -> list[Problem]:
    """Every reason `content` (a step's content mapping, found at `location`) cannot be rendered later."""
    if not isinstance(content, Mapping):
        return [_invalid(location, "content must be a mapping of field names to templates")]
    problems: list[Problem] = []
    _check(content, location, problems)
    return problems


def _render(value: Any, data: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, str):
        try:
            return _compile(value).render(data)
        except Exception as exc:  # undefined names, SecurityError, errors raised by filters or data
            raise RenderError(f"cannot render {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, Mapping):
        return {key: _render(item, data, _child(path, key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, data, _child(path, index)) for index, item in enumerate(value)]
    return value


def render_content(content: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Render every string of `content` against `data`; RenderError names the first field that fails."""
    return {key: _render(value, data, _child("content", key)) for key, value in content.items()}
