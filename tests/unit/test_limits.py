"""The limits on identifiers, text and documents (tocsin.core.limits): what passes, what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.core.errors import InvalidRequest
from tocsin.core.limits import (
    INT4_MAX,
    MAX_DEPTH,
    MAX_DOCUMENT_SIZE,
    MAX_DURATION_SECONDS,
    MAX_IDENTIFIER_LENGTH,
    MAX_NODES,
    check_data,
    check_identifier,
    printable,
    shape_fault,
    text_fault,
)


def test_the_documented_limits() -> None:
    # docs name these figures: a change here is a change of contract.
    assert MAX_IDENTIFIER_LENGTH == 255
    assert INT4_MAX == 2_147_483_647
    assert MAX_DURATION_SECONDS == 315_360_000 == 3650 * 24 * 3600
    assert (MAX_DOCUMENT_SIZE, MAX_DEPTH, MAX_NODES) == (262_144, 64, 100_000)


@pytest.mark.parametrize(
    "value",
    ["a", "order-1234", "x" * MAX_IDENTIFIER_LENGTH, "é" * MAX_IDENTIFIER_LENGTH, "notification.read", " padded "],
)
def test_identifiers_that_pass_are_returned_unchanged(value: str) -> None:
    assert check_identifier("recipient", value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "recipient must not be blank"),
        ("  \t\n", "recipient must not be blank"),
        (None, "recipient must be a string, not NoneType"),
        (42, "recipient must be a string, not int"),
        (b"bytes", "recipient must be a string, not bytes"),
        ("x" * (MAX_IDENTIFIER_LENGTH + 1), "recipient is 256 characters long; at most 255 are allowed"),
        ("x" * 100_000, "recipient is 100000 characters long; at most 255 are allowed"),
        ("ab\x00c", r"recipient contains a NUL character \(at index 2\)"),
        ("é\ud800", r"recipient contains a lone surrogate U\+D800 \(at index 1\)"),
        ("\udfff", r"recipient contains a lone surrogate U\+DFFF \(at index 0\)"),
    ],
)
def test_identifiers_that_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        check_identifier("recipient", value)


def test_the_length_limit_can_be_given() -> None:
    assert check_identifier("reason", "r" * 1000, max_length=1000) == "r" * 1000
    with pytest.raises(InvalidRequest, match="at most 1000"):
        check_identifier("reason", "r" * 1001, max_length=1000)


def test_text_fault_finds_the_first_unstorable_character() -> None:
    assert text_fault("plain ascii") is None
    assert text_fault("naïve ✓ 𝄞") is None  # astral characters are fine: only lone surrogates are not
    assert text_fault("a\x00b\x00") == "contains a NUL character (at index 1)"
    assert text_fault("ü\x00") == "contains a NUL character (at index 1)"
    assert text_fault("\ud83d") == "contains a lone surrogate U+D83D (at index 0)"


def test_printable_escapes_only_what_would_break_a_line() -> None:
    assert printable("steps[0].content.title") == "steps[0].content.title"
    assert printable("naïve ✓") == "naïve ✓"
    assert printable("a\x00b\nc\ud800") == "a\\x00b\\nc\\ud800"
    printable("\ud800").encode("utf-8")  # prints anywhere


def nested(depth: int) -> dict[str, Any]:
    """A mapping `depth` levels deep (the top one is level 1)."""
    document: dict[str, Any] = {}
    inner = document
    for _ in range(depth - 1):
        inner["x"] = {}
        inner = inner["x"]
    return document


def test_shape_fault_depth() -> None:
    assert shape_fault(nested(MAX_DEPTH)) is None
    location, reason = shape_fault(nested(MAX_DEPTH + 1)) or ("", "")
    assert reason == "nested deeper than 64 levels"
    assert location == ".".join(["x"] * MAX_DEPTH)
    # Far past the interpreter's recursion limit: the walk is iterative.
    assert shape_fault(nested(100_000)) is not None


def test_shape_fault_locations_name_list_indexes() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert shape_fault({"a": deep}) == ("a" + "[0]" * (MAX_DEPTH - 1), "nested deeper than 64 levels")


def test_shape_fault_cycles_are_refused_not_followed() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    assert shape_fault(cycle) == (".".join(["self"] * MAX_DEPTH), "nested deeper than 64 levels")


def test_shape_fault_counts_shared_values_each_time() -> None:
    # A structure of a few hundred objects that stands for 10^9 values (what a YAML alias bomb builds).
    bomb: Any = [0] * 10
    for _ in range(8):
        bomb = [bomb] * 10
    assert shape_fault(bomb) == ("", f"more than {MAX_NODES} values")
    assert shape_fault([0] * (MAX_NODES - 1)) is None
    assert shape_fault([0] * MAX_NODES) == ("", f"more than {MAX_NODES} values")


def test_shape_fault_bounds_the_text() -> None:
    half = "x" * (MAX_DOCUMENT_SIZE // 2 - 1)  # and one character for each key
    assert shape_fault({"a": half, "b": half}) is None
    assert shape_fault({"a": half, "b": half + "x"}) == ("", f"more than {MAX_DOCUMENT_SIZE} characters of text")
    assert shape_fault({"a": half, half + "xx": 0}) == ("", f"more than {MAX_DOCUMENT_SIZE} characters of text")
    assert shape_fault({"x" * (MAX_DOCUMENT_SIZE + 1): 0}) == ("", f"more than {MAX_DOCUMENT_SIZE} characters of text")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": float("nan")}, "data.a: a float is not a JSON value"),
        ({"a": [1, float("inf")]}, r"data.a\[1\]: a float is not a JSON value"),
        ({"a": {"b": "x\x00"}}, r"data.a.b: a string contains a NUL character \(at index 1\)"),
        ({"k\ud800": 1}, r"data.k\\ud800: the key contains a lone surrogate U\+D800 \(at index 1\)"),
        ({"a": {1: "one"}}, "data.a: the key 1 is not a string"),
        ({"when": {"x"}}, "data.when: a set is not a JSON value"),
        ({"a": b"bytes"}, "data.a: a bytes is not a JSON value"),
        (nested(MAX_DEPTH + 1), "data.x.x.*: nested deeper than 64 levels"),
        ({"a": list(range(MAX_NODES))}, "data: more than 100000 values"),
    ],
)
def test_check_data_refuses_what_jsonb_cannot_hold(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{message}$"):
        check_data("data", data)


def test_check_data_wants_an_object() -> None:
    with pytest.raises(InvalidRequest, match=r"^data must be a JSON object, not list$"):
        check_data("data", [1])


def test_check_data_passes_plain_json() -> None:
    data: dict[str, Any] = {
        "actor": "Ann",
        "n": 2**70,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "items": [{"é": "✓"}, [], {}],
    }
    assert check_data("data", data) is data
