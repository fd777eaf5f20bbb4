"""Fuzzing definitions: random documents, mutations of the example journey, and random text as files.

Whatever goes in, registration either accepts a definition that every later use can handle, or raises
DefinitionError with problem codes and one-line messages; never another exception.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tocsin.core.definitions import WorkflowDefinition, load_definition
from tocsin.core.documents import parse_document
from tocsin.core.errors import DefinitionError, InvalidDocument, ProblemCode
from tocsin.core.limits import MAX_DURATION_SECONDS, shape_fault

EXAMPLE_TEXT = resources.files("tocsin.examples").joinpath("mention_escalation.yaml").read_text(encoding="utf-8")
EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_TEXT)
CODES = set(get_args(ProblemCode))

# Modest example counts: the whole module runs in a few seconds, and CI runs it every time.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELD_NAMES = [
    "key",
    "version",
    "steps",
    "max_step_activations",
    "channel",
    "content",
    "progress",
    "retry",
    "kind",
    "anchor",
    "delay",
    "delay_seconds",
    "to_step",
    "cancel_signals",
    "outcome",
    "max_attempts",
    "initial_interval",
    "initial_interval_seconds",
    "backoff_coefficient",
    "maximum_interval",
    "maximum_interval_seconds",
]
WORDS = [
    "wait_until",
    "on_outcome",
    "stop",
    "bounced",
    "delivered",
    "in_app",
    "email",
    "prior_delivery_terminal_at",
    "step_activated_at",
    "PT2H",
    "P9999999999W",
    "P3650D",
    "P3651D",
    "PT0.5S",
    "P1Y",
    "{{ actor }}",
    "{{ (((1))) }}",
    "{% if %}",
    "",
    " ",
    "\x00",
    "\ud800",
    "a\udfffb",
]

# Text with what breaks naive code: NUL, lone surrogates, newlines, astral characters.
hostile_text = st.text(st.sampled_from("az _.\x00\x07\n\t\ud800\udfffé𝄞{}%#()"), max_size=10) | st.sampled_from(WORDS)
numbers = st.one_of(
    st.integers(min_value=-3, max_value=100),
    st.sampled_from([2**31 - 1, 2**31, 10**14, 10**400, MAX_DURATION_SECONDS, MAX_DURATION_SECONDS + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | hostile_text | st.integers(0, 3), inner, max_size=5)
    ),
    max_leaves=15,
)


def assert_accepted_or_explained(document: object) -> None:
    """The property: parse succeeds and the result is usable everywhere, or fails with problem codes."""
    try:
        definition = WorkflowDefinition.parse(document)  # type: ignore[arg-type]  # anything, on purpose
    except DefinitionError as exc:
        assert exc.problems
        assert {problem.code for problem in exc.problems} <= CODES
        shown = str(exc)
        shown.encode("utf-8")  # printable on any terminal
        assert "\n" not in shown
        return
    assert_usable(definition)


def assert_usable(definition: WorkflowDefinition) -> None:
    """What registration, progress_run and the workflow do with an accepted definition all work."""
    definition.canonical_json().encode("utf-8")
    assert len(definition.checksum()) == 64
    assert WorkflowDefinition.parse(json.loads(definition.canonical_json())) == definition
    assert shape_fault(json.loads(definition.canonical_json()), json_only=True) is None  # jsonb holds it
    far = datetime(2999, 1, 1, tzinfo=UTC)
    for step in definition.steps:
        if step.wait_rule is not None:
            assert far + timedelta(seconds=step.wait_rule.delay_seconds) > far
        for attempt in (1, 2, 50, step.retry.max_attempts):
            assert far + timedelta(seconds=step.retry.backoff_seconds(attempt)) > far


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELD_NAMES) | hostile_text, values, max_size=6))
def test_random_documents(document: dict[Any, Any]) -> None:
    assert_accepted_or_explained(document)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document: the keys and indexes that lead to it."""
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(list(paths(document))))
        if not path:
            continue
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "copy"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(FIELD_NAMES) | hostile_text)] = draw(values)
        elif action == "copy" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), copy.deepcopy(parent[path[-1]]))
    return document


@FUZZ
@given(mutated_examples())
def test_mutations_of_the_example(document: dict[str, Any]) -> None:
    assert_accepted_or_explained(document)


def test_the_example_itself_is_accepted() -> None:
    assert_usable(WorkflowDefinition.parse(EXAMPLE))


# Characters that mean something to YAML (and JSON), so that mutated text reaches every parser state.
SYNTAX = [*"&*[]{}:-!|>'\"\n\t #%@`,?<=~\\", "<<: *x", "&x ", "!!binary ", "!!set ", "\\0", "\\ud800", "---"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = EXAMPLE_TEXT
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(SYNTAX) | hostile_text) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=8)) :]
    return text


def assert_parsed_or_refused(text: str, format: Any) -> None:
    try:
        document = parse_document(text, format)
    except InvalidDocument as exc:
        str(exc).encode("utf-8")
        assert "\n" not in str(exc)
        return
    if isinstance(document, dict):
        assert_accepted_or_explained(document)


@FUZZ
@given(mutated_text())
def test_mutated_yaml_text(text: str) -> None:
    assert_parsed_or_refused(text, "yaml")


@FUZZ
@given(st.lists(st.sampled_from([*SYNTAX, "a", "1", "0x1", "1e5", "~", "null"]), max_size=40).map("".join))
def test_yaml_made_of_syntax(text: str) -> None:
    assert_parsed_or_refused(text, "yaml")


@FUZZ
@given(st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner)))
def test_json_text(value: Any) -> None:
    # NaN and Infinity are written as such (not JSON), surrogates as \\ud800 escapes: parsing sees both.
    assert_parsed_or_refused(json.dumps({"key": value}), "json")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=mutated_text(), suffix=st.sampled_from([".yaml", ".json"]))
def test_definition_files(fuzz_dir: Path, text: str, suffix: str) -> None:
    path = fuzz_dir / f"journey{suffix}"
    # surrogatepass: a file may hold the UTF-8 form of a surrogate, which the decoder must refuse.
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        definition = load_definition(path)
    except DefinitionError as exc:
        assert {problem.code for problem in exc.problems} <= CODES
        str(exc).encode("utf-8")
        return
    assert_usable(definition)
