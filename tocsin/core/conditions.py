"""Conditions (`when`, SPEC 11.1): Jinja2 expressions, compiled at registration, evaluated against the render
context (tocsin.core.context) in the same sandboxed environment as the templates."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.environment import TemplateExpression

from tocsin.core.errors import Problem, TocsinError
from tocsin.core.limits import printable, text_fault
from tocsin.core.templates import ENVIRONMENT


class ConditionError(TocsinError):
    """A condition failed to evaluate. The message names the expression and the kind of error, never the data."""


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> TemplateExpression:
    # Each step's few conditions are evaluated for every run: compile each source once. An undefined name must
    # raise (StrictUndefined), not quietly become None and so false.
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False)


def condition_problems(source: object, location: str) -> list[Problem]:
    """Every reason `source`, a `when` found at `location`, cannot be evaluated later."""
    if not isinstance(source, str) or not source.strip():
        return [Problem(location, "invalid_condition", f"when must be a non-blank expression, got {source!r}")]
    fault = text_fault(source)
    if fault is not None:
        return [Problem(location, "invalid_text", f"the condition {fault}")]
    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        return [Problem(location, "invalid_condition", f"not a Jinja expression: {exc.message}")]
    except RecursionError:  # Jinja's parser and Python's compiler recurse once per nested expression
        return [Problem(location, "invalid_condition", "not a Jinja expression: it is nested too deeply")]
    return []


def evaluate_condition(source: str, context: Mapping[str, Any]) -> bool:
    """The truth of the expression `source` against the render context; ConditionError on any failure."""
    try:
        return bool(_compile(source)(context))
    except Exception as exc:  # undefined names, SecurityError, type errors, errors raised by filters or data
        # The exception's text may quote the data: only its type is named.
        raise ConditionError(f"condition {printable(source)!r} failed to evaluate: {type(exc).__name__}") from exc
