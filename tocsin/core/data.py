"""Trigger data (SPEC 11.7): the definition's `data_schema`, and the top-level names its templates need.

The names come from Jinja's syntax tree, read the way a render reads it: a name counts as required where a
render would look it up in the data with nothing to fall back on. So a name is not required where it is only
given to `default`, only tested with `is defined`, or used under a guard that tested it (`{% if x is defined %}`,
`x is defined and x > 3`, `x if x is defined`); loop variables, `{% set %}` names, macro arguments and the
environment's globals are not data at all, and the render-context names (tocsin.core.context) are provided.
A step's `when` guards the step's content and send window (they are not rendered when it is false), and a
rule's `when` its `until`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import nodes
from jinja2.parser import Parser
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from tocsin.core.context import CONTEXT_NAMES
from tocsin.core.errors import InvalidRequest, Problem
from tocsin.core.limits import printable, shape_fault
from tocsin.core.templates import ENVIRONMENT, content_templates

if TYPE_CHECKING:
    from tocsin.core.definitions import WorkflowDefinition

_PROVIDED = CONTEXT_NAMES | frozenset(ENVIRONMENT.globals)
_DEFAULT_FILTERS = frozenset({"default", "d"})
# A jsonschema message quotes the failing value: a long one is cut, the message stays one short line.
_MAX_MESSAGE = 200
_MAX_VALUE = 40
_FORMATS = FormatChecker()

Known = frozenset[str]


def _target_names(node: nodes.Node) -> Known:
    """The names a `for` target, a `set`, `with` or macro argument binds."""
    found = [node, *node.find_all(nodes.Name)]  # a target is a name, or a tuple of them
    return frozenset(name.name for name in found if isinstance(name, nodes.Name) and name.ctx in ("store", "param"))


def _guards(test: nodes.Node) -> tuple[Known, Known]:
    """(names certainly defined where `test` is true, names certainly defined where it is false)."""
    if isinstance(test, nodes.Test) and isinstance(test.node, nodes.Name):
        if test.name == "defined":
            return frozenset({test.node.name}), frozenset()
        if test.name == "undefined":
            return frozenset(), frozenset({test.node.name})
    if isinstance(test, nodes.Not):
        when_true, when_false = _guards(test.node)
        return when_false, when_true
    if isinstance(test, nodes.And):
        (left_true, left_false), (right_true, right_false) = _guards(test.left), _guards(test.right)
        return left_true | right_true, left_false & right_false
    if isinstance(test, nodes.Or):
        (left_true, left_false), (right_true, right_false) = _guards(test.left), _guards(test.right)
        return left_true & right_true, left_false | right_false
    return frozenset(), frozenset()


class _Reader:
    """Walks one syntax tree, collecting the data names it requires in the order a render meets them."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}  # an ordered set

    def load(self, name: str, known: Known) -> None:
        if name not in known and name not in _PROVIDED:
            self.names.setdefault(name)

    def expression(self, node: nodes.Node, known: Known) -> None:
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                self.load(node.name, known)
            return
        if isinstance(node, nodes.Filter | nodes.Test) and isinstance(node.node, nodes.Name):
            exempt = _DEFAULT_FILTERS if isinstance(node, nodes.Filter) else {"defined", "undefined"}
            if node.name in exempt:  # `x | default(...)`, `x is defined`: x itself may be missing
                known = known | {node.node.name}
        elif isinstance(node, nodes.And | nodes.Or):
            # The right side is only evaluated where the left one is true (and) or false (or).
            when_true, when_false = _guards(node.left)
            self.expression(node.left, known)
            self.expression(node.right, known | (when_true if isinstance(node, nodes.And) else when_false))
            return
        elif isinstance(node, nodes.CondExpr):
            when_true, when_false = _guards(node.test)
            self.expression(node.test, known)
            self.expression(node.expr1, known | when_true)
            if node.expr2 is not None:
                self.expression(node.expr2, known | when_false)
            return
        for child in node.iter_child_nodes():
            self.expression(child, known)

    def statements(self, body: Iterable[nodes.Node], known: Known) -> Known:
        """Reads `body` in order; the names known after it (a `set` binds for the statements that follow)."""
        for node in body:
            known = self.statement(node, known)
        return known

    def statement(self, node: nodes.Node, known: Known) -> Known:
        if isinstance(node, nodes.If):
            return self.branches(node, known)
        if isinstance(node, nodes.For):
            self.expression(node.iter, known)
            inside = known | _target_names(node.target) | {"loop"}
            if node.test is not None:
                self.expression(node.test, inside)
            self.statements(node.body, inside)  # a loop's names stay in the loop
            self.statements(node.else_, known)
            return known
        if isinstance(node, nodes.Assign):
            self.expression(node.node, known)
            if isinstance(node.target, nodes.NSRef):  # `set ns.attr = ...` writes to an existing namespace
                self.load(node.target.name, known)
                return known
            return known | _target_names(node.target)
        if isinstance(node, nodes.AssignBlock):
            if node.filter is not None:
                self.expression(node.filter, known)
            self.statements(node.body, known)
            return known | _target_names(node.target)
        if isinstance(node, nodes.Macro | nodes.CallBlock):
            for default in node.defaults:
                self.expression(default, known)
            if isinstance(node, nodes.CallBlock):
                self.expression(node.call, known)
            arguments = frozenset(arg.name for arg in node.args) | {"caller", "varargs", "kwargs"}
            self.statements(node.body, known | arguments)
            return known | {node.name} if isinstance(node, nodes.Macro) else known
        if isinstance(node, nodes.With):
            for value in node.values:
                self.expression(value, known)
            self.statements(node.body, known | frozenset().union(*map(_target_names, node.targets)))
            return known
        if isinstance(node, nodes.Import):
            self.expression(node.template, known)
            return known | {node.target}
        if isinstance(node, nodes.FromImport):
            self.expression(node.template, known)
            return known | {name if isinstance(name, str) else name[1] for name in node.names}
        # Output, blocks, filter blocks, includes ...: expressions and nested statements, in order.
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.Stmt):
                known = self.statement(child, known)
            else:
                self.expression(child, known)
        return known

    def branches(self, node: nodes.If, known: Known) -> Known:
        """An if/elif/else chain: each branch under what its tests guarantee. A name any branch sets counts
        as known after the chain (a render that took another branch looks it up in the data)."""
        assigned: Known = frozenset()
        otherwise = known  # what holds once every test so far was false
        for branch in (node, *node.elif_):
            when_true, when_false = _guards(branch.test)
            self.expression(branch.test, otherwise)
            inside = otherwise | when_true
            assigned |= self.statements(branch.body, inside) - inside
            otherwise |= when_false
        assigned |= self.statements(node.else_, otherwise) - otherwise
        return known | assigned


def _template_names(source: str, known: Known) -> Iterator[str]:
    reader = _Reader()
    reader.statements(ENVIRONMENT.parse(source).body, known)
    yield from reader.names


def _parse_expression(source: str) -> nodes.Expr:
    # As Environment.compile_expression parses a condition.
    return Parser(ENVIRONMENT, source, state="variable").parse_expression()


def _expression_names(source: str, known: Known) -> Iterator[str]:
    reader = _Reader()
    reader.expression(_parse_expression(source), known)
    yield from reader.names


def _condition_guards(source: str | None) -> Known:
    return frozenset() if source is None else _guards(_parse_expression(source))[0]


def _uses(definition: WorkflowDefinition) -> Iterator[tuple[str, str]]:
    """(name, location) for every use of a data name, in the order a run renders them."""
    nothing: Known = frozenset()
    # A batched trigger renders its batch key first (to find its batch), then its throttle key (SPEC 11.5).
    if definition.batch is not None and definition.batch.key is not None:
        yield from ((name, "batch.key") for name in _template_names(definition.batch.key, nothing))
    if definition.throttle is not None and definition.throttle.key is not None:
        yield from ((name, "throttle.key") for name in _template_names(definition.throttle.key, nothing))
    for i, step in enumerate(definition.steps):
        at = f"steps[{i}]"
        if step.when is not None:
            yield from ((name, f"{at}.when") for name in _expression_names(step.when, nothing))
        planned = _condition_guards(step.when)
        for source, location in content_templates(step.content, f"{at}.content"):
            yield from ((name, location) for name in _template_names(source, planned))
        if step.send_window is not None and step.send_window.timezone is not None:
            location = f"{at}.send_window.timezone"
            yield from ((name, location) for name in _template_names(step.send_window.timezone, planned))
        for j, rule in enumerate(step.progress):
            if rule.when is not None:
                yield from ((name, f"{at}.progress[{j}].when") for name in _expression_names(rule.when, nothing))
            if rule.kind == "wait_until" and rule.until is not None:
                fired = _condition_guards(rule.when)
                yield from ((name, f"{at}.progress[{j}].until") for name in _template_names(rule.until, fired))


def required_names(definition: WorkflowDefinition) -> tuple[tuple[str, str], ...]:
    """(name, location) for every top-level data name the definition requires, at its first use.

    WorkflowDefinition.required_data keeps the result, computed once per definition.
    """
    first: dict[str, str] = {}
    for name, location in _uses(definition):
        first.setdefault(name, location)
    return tuple(first.items())


def _path(parts: Iterable[object]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{printable(str(part))}" for part in parts)


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _short(message: str) -> str:
    return _cut(printable(message), _MAX_MESSAGE)


def _error_message(error: ValidationError) -> str:
    """jsonschema's message, one short line: a long failing value it starts with is cut, not what it says of it."""
    value = repr(error.instance)
    if len(error.message) > _MAX_MESSAGE and error.message.startswith(value):
        return _short(_cut(printable(value), _MAX_VALUE) + error.message[len(value) :])
    return _short(error.message)


def _references(schema: object) -> Iterator[str]:
    """Every `$ref` and `$dynamicRef` in `schema`."""
    stack = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key in ("$ref", "$dynamicRef") and isinstance(item, str):
                    yield item
                else:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def data_schema_problems(schema: object, location: str = "data_schema") -> list[Problem]:
    """Every reason `schema` cannot serve as a definition's `data_schema` (JSON Schema, draft 2020-12)."""

    def invalid(message: str) -> list[Problem]:
        return [Problem(location, "invalid_data_schema", message)]

    if not isinstance(schema, Mapping):
        return invalid(f"data_schema must be a JSON Schema object (draft 2020-12), not {type(schema).__name__}")
    found = shape_fault(schema, json_only=True)  # kept as jsonb with the definition
    if found is not None:
        where, reason = found
        return invalid(f"at {where or 'the top'}: {reason}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _path(exc.absolute_path).removeprefix(".") or "the top"
        return invalid(f"not a valid JSON Schema (draft 2020-12) at {where}: {_short(exc.message)}")
    # A reference is resolved while data is validated: one that cannot be is refused now, not at start_run.
    # tocsin never fetches a schema, so only references within data_schema itself can resolve.
    root = schema.get("$id", "")
    resolver = Registry().with_resource(root, DRAFT202012.create_resource(schema)).resolver(root)
    for reference in _references(schema):
        if not reference.startswith("#"):
            return invalid(f"{printable(reference)!r}: only references within data_schema ('#/$defs/...') resolve")
        try:
            resolver.lookup(reference)
        except Unresolvable:
            return invalid(f"{printable(reference)!r} does not resolve within data_schema")
    return []


def _first_error(errors: Iterable[ValidationError]) -> ValidationError | None:
    """The error at the first failing path (in path order), the most relevant one there."""
    ordered = sorted(errors, key=lambda error: [(isinstance(part, str), part) for part in error.absolute_path])
    if not ordered:
        return None
    first = list(ordered[0].absolute_path)
    best: ValidationError | None = best_match(error for error in ordered if list(error.absolute_path) == first)
    return best


def check_trigger_data(definition: WorkflowDefinition, data: Mapping[str, Any]) -> None:
    """InvalidRequest when `data` cannot start a run of `definition`: first the data_schema (the first failing
    path), then the first required name it lacks."""
    if definition.data_schema is not None:
        validator = Draft202012Validator(definition.data_schema, format_checker=_FORMATS)
        error = _first_error(validator.iter_errors(data))
        if error is not None:
            raise InvalidRequest(f"data{_path(error.absolute_path)}: {_error_message(error)}")
    for name, location in definition.required_data:
        if name not in data:
            raise InvalidRequest(f"data is missing {printable(name)!r} ({location})")
