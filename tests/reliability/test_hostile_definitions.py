"""Definitions that would register and then never run, and hostile files: each is refused at registration
with one problem code and a location, never a traceback, and what is accepted at the limits still works."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tocsin.core.definitions import MAX_BACKOFF_COEFFICIENT, WorkflowDefinition, load_definition
from tocsin.core.documents import MAX_ALIAS_VALUES, parse_document, read_document
from tocsin.core.errors import DefinitionError, InvalidDocument, Problem
from tocsin.core.limits import INT4_MAX, MAX_DEPTH, MAX_DOCUMENT_SIZE, MAX_DURATION_SECONDS, MAX_IDENTIFIER_LENGTH


def valid() -> dict[str, Any]:
    return {
        "key": "journey",
        "version": 1,
        "steps": [
            {
                "key": "a",
                "channel": "in_app",
                "content": {"title": "Hi {{ name }}"},
                "progress": [{"kind": "wait_until", "delay": "PT2H", "to_step": "b", "cancel_signals": ["read"]}],
            },
            {"key": "b", "channel": "email", "retry": {"max_attempts": 3}},
        ],
    }


Edit = Callable[[dict[str, Any]], None]
WAIT = ("steps", 0, "progress", 0)
RETRY = ("steps", 1, "retry")


def put(path: tuple[str | int, ...], value: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return edit


def wait_delay_seconds(seconds: object) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        wait = doc["steps"][0]["progress"][0]
        del wait["delay"]
        wait["delay_seconds"] = seconds

    return edit


def refused(edit: Edit) -> Problem:
    """The one problem the edited definition is refused with."""
    doc = valid()
    edit(doc)
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(doc)
    [problem] = caught.value.problems
    # What a CLI prints: one line that any terminal can encode.
    shown = str(caught.value)
    shown.encode("utf-8")
    assert "\n" not in shown
    return problem


NEVER_RUN: list[tuple[str, Edit, str, str]] = [
    # Durations: progress_run used to overflow datetime on every retry, the run active forever.
    ("delay of 10^10 weeks", put((*WAIT, "delay"), "P9999999999W"), "invalid_delay", "steps[0].progress[0].delay"),
    ("delay a day past ten years", put((*WAIT, "delay"), "P3651D"), "invalid_delay", "steps[0].progress[0].delay"),
    ("delay of 5000 digits", put((*WAIT, "delay"), f"PT{'9' * 5000}S"), "invalid_delay", "steps[0].progress[0].delay"),
    (
        "delay_seconds of 10^20",
        wait_delay_seconds(10**20),
        "invalid_delay",
        "steps[0].progress[0].delay_seconds",
    ),
    (
        "delay_seconds a second past ten years",
        wait_delay_seconds(MAX_DURATION_SECONDS + 1),
        "invalid_delay",
        "steps[0].progress[0].delay_seconds",
    ),
    # Retry intervals: the workflow's timer used to fail its task forever.
    (
        "initial interval of 10^14 s",
        put((*RETRY, "initial_interval_seconds"), 10**14),
        "invalid_retry",
        "steps[1].retry.initial_interval_seconds",
    ),
    (
        "initial interval 1e14 (a float)",
        put((*RETRY, "initial_interval_seconds"), 1e14),
        "invalid_retry",
        "steps[1].retry.initial_interval_seconds",
    ),
    (
        "maximum interval of 99999 weeks",
        put((*RETRY, "maximum_interval"), "P99999W"),
        "invalid_retry",
        "steps[1].retry.maximum_interval",
    ),
    (
        "maximum interval past ten years",
        put((*RETRY, "maximum_interval_seconds"), MAX_DURATION_SECONDS + 1),
        "invalid_retry",
        "steps[1].retry.maximum_interval_seconds",
    ),
    ("max_attempts past int4", put((*RETRY, "max_attempts"), 2**31), "invalid_retry", "steps[1].retry.max_attempts"),
    # float() of it used to raise OverflowError out of validation.
    (
        "backoff coefficient of 10^400",
        put((*RETRY, "backoff_coefficient"), 10**400),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    (
        "backoff coefficient past the limit",
        put((*RETRY, "backoff_coefficient"), MAX_BACKOFF_COEFFICIENT + 0.5),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    (
        "backoff coefficient NaN",
        put((*RETRY, "backoff_coefficient"), float("nan")),
        "invalid_retry",
        "steps[1].retry.backoff_coefficient",
    ),
    # Integers kept in int4 columns: the database used to refuse them with a traceback.
    ("version 2^31", put(("version",), 2**31), "invalid_version", "version"),
    ("version 10^30", put(("version",), 10**30), "invalid_version", "version"),
    ("max_step_activations 2^31", put(("max_step_activations",), 2**31), "invalid_step_limit", "max_step_activations"),
    # Text Postgres cannot hold (NUL) or UTF-8 cannot encode (a lone surrogate): the database or the checksum
    # used to raise.
    ("NUL in the key", put(("key",), "jour\x00ney"), "invalid_text", "key"),
    ("lone surrogate in the key", put(("key",), "journey\ud800"), "invalid_text", "key"),
    ("NUL in a step key", put(("steps", 0, "key"), "a\x00"), "invalid_text", "steps[0].key"),
    ("surrogate in a channel", put(("steps", 0, "channel"), "in\udc80app"), "invalid_text", "steps[0].channel"),
    (
        "NUL in content",
        put(("steps", 0, "content", "title"), "Hi\x00"),
        "invalid_text",
        "steps[0].content.title",
    ),
    (
        "surrogate deep in content",
        put(("steps", 0, "content", "body"), {"lines": ["ok", "\ud83d"]}),
        "invalid_text",
        "steps[0].content.body.lines[1]",
    ),
    (
        "NUL in a content field name",
        put(("steps", 0, "content", "ti\x00tle"), "x"),
        "invalid_text",
        "steps[0].content.ti\\x00tle",
    ),
    (
        "surrogate in a cancel signal",
        put((*WAIT, "cancel_signals"), ["read", "re\udfffad"]),
        "invalid_text",
        "steps[0].progress[0].cancel_signals[1]",
    ),
    # Identifiers are at most 255 characters: a longer signal name could never be sent.
    ("a key of 256 characters", put(("key",), "k" * 256), "invalid_text", "key"),
    ("a channel of 10^5 characters", put(("steps", 0, "channel"), "c" * 100_000), "invalid_text", "steps[0].channel"),
    (
        "a cancel signal of 256 characters",
        put((*WAIT, "cancel_signals"), ["s" * 256]),
        "invalid_text",
        "steps[0].progress[0].cancel_signals[0]",
    ),
    # Jinja's parser recurses once per nested expression.
    (
        "a template nested 300 deep",
        put(("steps", 0, "content", "title"), "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"),
        "invalid_template",
        "steps[0].content.title",
    ),
    (
        "a field name with a newline",
        put(("steps", 0, "no\nsuch"), 1),
        "unexpected_field",
        "steps[0].no\\nsuch",
    ),
]


@pytest.mark.parametrize(("edit", "code", "location"), [case[1:] for case in NEVER_RUN], ids=[c[0] for c in NEVER_RUN])
def test_what_could_never_run_is_refused_at_registration(edit: Edit, code: str, location: str) -> None:
    problem = refused(edit)
    assert (problem.code, problem.location) == (code, location)


def test_at_the_limits_a_definition_is_accepted_and_every_use_of_it_works() -> None:
    doc = valid()
    doc["key"] = "k" * MAX_IDENTIFIER_LENGTH
    doc["version"] = INT4_MAX
    doc["max_step_activations"] = INT4_MAX
    wait = doc["steps"][0]["progress"][0]
    wait["delay"] = "P3650D"
    wait["cancel_signals"] = ["s" * MAX_IDENTIFIER_LENGTH]
    doc["steps"][0]["content"]["title"] = "naïve ✓ 𝄞 {{ name }}"
    doc["steps"][1]["retry"] = {
        "max_attempts": INT4_MAX,
        "initial_interval_seconds": MAX_DURATION_SECONDS,
        "maximum_interval": "P3650D",
        "backoff_coefficient": MAX_BACKOFF_COEFFICIENT,
    }
    definition = WorkflowDefinition.parse(doc)
    assert definition.first_step.wait_rule is not None
    assert definition.first_step.wait_rule.delay_seconds == MAX_DURATION_SECONDS
    # What progress_run and the workflow compute from it: a due time, a retry time, the checksum.
    far = datetime(2999, 12, 31, tzinfo=UTC)
    assert far + timedelta(seconds=definition.first_step.wait_rule.delay_seconds) > far
    retry = definition.step("b").retry
    assert {retry.backoff_seconds(n) for n in (1, 2, 1000, INT4_MAX)} == {MAX_DURATION_SECONDS}
    assert far + timedelta(seconds=retry.backoff_seconds(INT4_MAX)) > far
    assert len(definition.checksum()) == 64
    assert WorkflowDefinition.parse(json.loads(definition.canonical_json())) == definition


def test_every_text_problem_is_found_at_once() -> None:
    doc = valid()
    doc["key"] = "\x00"
    doc["steps"][0]["channel"] = "\ud800"
    doc["steps"][1]["content"] = {"a": "\x00", "b": ["\udc00"]}
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(doc)
    assert [(p.location, p.code) for p in caught.value.problems] == [
        ("key", "invalid_text"),
        ("steps[0].channel", "invalid_text"),
        ("steps[1].content.a", "invalid_text"),
        ("steps[1].content.b[0]", "invalid_text"),
    ]


# --- documents built in Python: depth and cycles --------------------------------------------------------


def test_a_deeply_nested_mapping_is_one_problem_not_a_recursion_error() -> None:
    doc = valid()
    inner: dict[str, Any] = doc["steps"][0]["content"]
    for _ in range(10_000):  # far past the interpreter's recursion limit
        inner["x"] = {}
        inner = inner["x"]
    problem = refused(lambda d: d.update(doc))
    assert problem.code == "invalid_document"
    assert problem.message == f"nested deeper than {MAX_DEPTH} levels"
    assert problem.location.startswith("steps[0].content.x.x.")


def test_a_cyclic_mapping_is_refused() -> None:
    doc = valid()
    doc["steps"][0]["content"]["self"] = doc["steps"][0]["content"]
    problem = refused(lambda d: d.update(doc))
    assert (problem.code, problem.message) == ("invalid_document", f"nested deeper than {MAX_DEPTH} levels")


def test_content_shared_by_reference_is_counted_each_time() -> None:
    shared: Any = ["x"] * 10
    for _ in range(7):
        shared = [shared] * 10
    problem = refused(put(("steps", 0, "content", "body"), shared))
    assert (problem.code, problem.location, problem.message) == ("invalid_document", "", "more than 100000 values")


# --- files ----------------------------------------------------------------------------------------------

# Nine levels of nine aliases: under 500 bytes that yaml.safe_load expands to 9^9 values.
ALIAS_BOMB = "\n".join(
    [
        "key: bomb",
        "version: 1",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]" for prev, name in pairwise("abcdefghi")),
        "steps: [{key: s, channel: c, content: {body: *i}}]",
    ]
)


def file_problem(tmp_path: Path, name: str, content: str | bytes) -> Problem:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    [problem] = caught.value.problems
    assert (problem.code, problem.location) == ("invalid_document", "")
    assert problem.message.startswith(f"{path}: ")
    assert "\n" not in problem.message
    return problem


HOSTILE_FILES: list[tuple[str, str, str | bytes, str]] = [
    ("alias bomb", "bomb.yaml", ALIAS_BOMB, f"aliases expand to more than {MAX_ALIAS_VALUES} values (line 6, column"),
    ("recursive alias", "loop.yaml", "key: &k [*k]\n", "an alias refers to a value that contains it (line 1, col"),
    ("deep YAML flow", "deep.yaml", "key: " + "[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
    (
        "deep YAML blocks",
        "blocks.yaml",
        "key:\n" + "".join(" " * depth + "- \n" for depth in range(1, 200)),
        "nested deeper than 64 levels",
    ),
    ("deep JSON", "deep.json", '{"key": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 64 levels"),
    (
        "duplicate YAML key",
        "dup.yaml",
        "key: a\nversion: 1\nsteps: []\nversion: 2\n",
        "not valid YAML: duplicate key 'version' (line 4, column 1)",
    ),
    ("duplicate JSON key", "dup.json", '{"key": "a", "key": "b"}', "not valid JSON: duplicate key 'key'"),
    ("NaN in JSON", "nan.json", '{"key": "a", "version": NaN}', "not valid JSON: NaN is not a JSON number"),
    ("1e400 in JSON", "inf.json", '{"version": 1e400}', "not valid JSON: 1e400 is too large for a JSON number"),
    ("a huge file", "huge.yaml", "#" * (MAX_DOCUMENT_SIZE + 1), f"the file is larger than {MAX_DOCUMENT_SIZE} bytes"),
    ("not UTF-8", "latin1.yaml", b"key: caf\xe9\n", "cannot read the file: not UTF-8 (invalid continuation byte"),
    ("a day that does not exist", "date.yaml", "key: 2026-02-30\n", "not valid YAML: day is out of range for month"),
    ("a Python tag", "tag.yaml", "key: !!python/object/apply:os.system [ls]\n", "not valid YAML: could not determine"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), [case[1:] for case in HOSTILE_FILES], ids=[c[0] for c in HOSTILE_FILES]
)
def test_hostile_files_are_one_clear_problem(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    problem = file_problem(tmp_path, name, content)
    assert message in problem.message


def test_a_path_with_a_nul_is_a_problem_not_a_value_error() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition("journey\x00.yaml")
    [problem] = caught.value.problems
    assert problem.code == "invalid_document"
    assert problem.message.startswith("journey\\x00.yaml: cannot read the file")


def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.yaml"))  # the name holds a lone surrogate
    path.write_text("- not a mapping\n", encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    [problem] = caught.value.problems
    assert "caf\\udce9.yaml: the document must be a mapping, not list" in problem.message
    str(caught.value).encode("utf-8")


def test_anchors_aliases_and_merges_within_the_limit_still_work(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    path.write_text(
        """
key: shared
version: 1
steps:
  - key: a
    channel: sms
    retry: &retry {max_attempts: 3, initial_interval: PT10S}
    progress: [{kind: on_outcome, outcome: bounced, to_step: b}]
  - key: b
    channel: email
    retry:
      <<: *retry
      max_attempts: 7
""",
        encoding="utf-8",
    )
    definition = load_definition(path)
    assert definition.step("a").retry.max_attempts == 3
    assert definition.step("b").retry.max_attempts == 7  # a key beside a merge overrides it: no duplicate
    assert definition.step("b").retry.initial_interval_seconds == 10


# --- parse_document / read_document, for the CLI's --data and --data-file -------------------------------


@pytest.mark.parametrize(
    ("text", "format", "message"),
    [
        ('{"a": 1, "a": 2}', "json", "not valid JSON: duplicate key 'a'"),
        ('{"a": -Infinity}', "json", "not valid JSON: -Infinity is not a JSON number"),
        ('{"a": ' + "1" * 5000 + "}", "json", "not valid JSON: Exceeds the limit (4300 digits)"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "json", "nested deeper than 64 levels"),
        ("{", "json", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"),
        ("a: 1\na: 2\n", "yaml", "not valid YAML: duplicate key 'a' (line 2, column 1)"),
        ("a: [unclosed", "yaml", "not valid YAML: while parsing a flow sequence; expected ',' or ']'"),
        ("a: 1\n---\nb: 2\n", "yaml", "not valid YAML: expected a single document in the stream"),
        ("x" * (MAX_DOCUMENT_SIZE + 1), "json", f"the document is longer than {MAX_DOCUMENT_SIZE} characters"),
        ("[" + ",".join(["0"] * 100_001) + "]", "json", "more than 100000 values"),
    ],
)
def test_parse_document_refuses_with_one_line(text: str, format: Any, message: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        parse_document(text, format)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_parse_document_keeps_json_strings_as_they_are() -> None:
    # Text faults are for the caller to locate (check_data, the definition checker): parsing keeps them.
    assert parse_document('{"a": "\\u0000", "b": "\\ud800", "c": [1.5, {"d": null}]}', "json") == {
        "a": "\x00",
        "b": "\ud800",
        "c": [1.5, {"d": None}],
    }


def test_parse_document_at_the_depth_limit() -> None:
    depth = MAX_DEPTH
    assert parse_document("[" * depth + "]" * depth, "json") is not None
    assert parse_document("[" * depth + "]" * depth, "yaml") is not None
    # Brackets inside strings are not nesting.
    assert parse_document(json.dumps({"a": "[" * 1000}), "json") == {"a": "[" * 1000}


def test_read_document_takes_the_format_from_the_suffix_or_the_caller(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text('{"a": 1}', encoding="utf-8")
    (tmp_path / "data.txt").write_text('{"a": 1}', encoding="utf-8")
    assert read_document(tmp_path / "data.json") == {"a": 1}
    assert read_document(tmp_path / "data.txt", "json") == {"a": 1}
    with pytest.raises(InvalidDocument, match=r"must end in \.json, \.yaml or \.yml"):
        read_document(tmp_path / "data.txt")
    with pytest.raises(InvalidDocument, match="cannot read the file"):
        read_document(tmp_path / "missing.json")


def test_the_valid_base_is_valid() -> None:
    original = valid()
    WorkflowDefinition.parse(copy.deepcopy(original))
