"""The limits on what tocsin accepts, and the pure checks that enforce them.

Everything here guards the boundary: a value that passes can be stored in Postgres (text holds no NUL,
UTF-8 holds no lone surrogate, int4 stops at 2^31-1, jsonb holds no NaN), turned into a datetime, and
walked without recursion limits. A value that fails is refused with a message naming the limit, before
anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tocsin.core.errors import InvalidRequest

MAX_IDENTIFIER_LENGTH = 255
"""Characters in a tenant id, recipient, idempotency key, signal name, definition or step key, channel."""

INT4_MAX = 2**31 - 1
"""The largest integer a definition may hold: versions, step limits and attempt counts are Postgres int4."""

MAX_DURATION_SECONDS = 3650 * 86400
"""Ten years of 365 days (315 360 000 s): the longest delay or retry interval a definition may give."""

MAX_DOCUMENT_SIZE = 256 * 1024
"""Bytes of a document file (characters of a document string), and characters of all its strings together.
YAML is parsed in pure Python at some 13 µs a byte: this bounds a definition file to a few seconds."""

MAX_DEPTH = 64
"""Mappings and lists nested in one another in a document: the top-level mapping is level 1."""

MAX_NODES = 100_000
"""Values in a document (every mapping, list and scalar), counting a value reached twice twice."""


def printable(text: str) -> str:
    """`text` with every character that would break a one-line message (NUL, newline, lone surrogate) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def text_fault(value: str) -> str | None:
    """Why `value` cannot be stored as Postgres text, or None: a NUL character or a lone surrogate."""
    if value.isascii():
        nul = value.find("\x00")
        return None if nul < 0 else f"contains a NUL character (at index {nul})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate U+{ord(value[exc.start]):04X} (at index {exc.start})"
    nul = value.find("\x00")
    return None if nul < 0 else f"contains a NUL character (at index {nul})"


def identifier_fault(value: str, max_length: int = MAX_IDENTIFIER_LENGTH) -> str | None:
    """Why the non-blank string `value` is not a usable identifier, or None: too long, or not storable."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length} are allowed"
    return text_fault(value)


def check_identifier(name: str, value: object, *, max_length: int = MAX_IDENTIFIER_LENGTH) -> str:
    """`value` if it is a usable identifier (a non-blank string of at most `max_length` characters with
    no NUL and no lone surrogate); otherwise InvalidRequest naming `name` and what is wrong."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidRequest(f"{name} must not be blank")
    fault = identifier_fault(value, max_length)
    if fault is not None:
        raise InvalidRequest(f"{name} {fault}")
    return value


# Where the walk is: the parent's trail and the key or index of this value (rendered only when reporting).
_Trail = tuple["_Trail", object] | None


def _location(trail: _Trail) -> str:
    parts: list[str] = []
    while trail is not None:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{printable(str(key))}")
    return "".join(reversed(parts)).removeprefix(".")


_TOO_MUCH_TEXT = ("", f"more than {MAX_DOCUMENT_SIZE} characters of text")


def shape_fault(value: object, *, json_only: bool = False) -> tuple[str, str] | None:
    """(location, reason) for the first way `value` exceeds the document limits, or None.

    The limits are MAX_DEPTH, MAX_NODES and MAX_DOCUMENT_SIZE characters of strings. With `json_only`,
    the value must also be plain JSON that jsonb can hold: string keys, finite numbers, storable text.
    The walk is iterative, so neither depth nor a cycle (which only ever exceeds the depth) can overflow
    the stack.
    """
    nodes = 1
    chars = 0
    stack: list[tuple[object, int, _Trail]] = [(value, 1, None)]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, str):
            chars += len(item)
            if chars > MAX_DOCUMENT_SIZE:
                return _TOO_MUCH_TEXT
            fault = text_fault(item) if json_only else None
            if fault is not None:
                return _location(trail), f"a string {fault}"
        elif isinstance(item, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                return _location(trail), f"nested deeper than {MAX_DEPTH} levels"
            # Counted before they are pushed: a huge or widely shared collection never floods the stack.
            nodes += len(item)
            if nodes > MAX_NODES:
                return "", f"more than {MAX_NODES} values"
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if isinstance(key, str):
                        chars += len(key)
                        if chars > MAX_DOCUMENT_SIZE:
                            return _TOO_MUCH_TEXT
                        fault = text_fault(key) if json_only else None
                        if fault is not None:
                            return _location((trail, key)), f"the key {fault}"
                    elif json_only:
                        return _location(trail), f"the key {key!r} is not a string"
                    # A non-string key is shown as str(key): its location is for reading, not for lookup.
                    stack.append((child, depth + 1, (trail, key if isinstance(key, str) else str(key))))
            else:
                stack.extend((child, depth + 1, (trail, index)) for index, child in enumerate(item))
        elif json_only and not _is_json_scalar(item):
            return _location(trail), f"a {type(item).__name__} is not a JSON value"
    return None


def _is_json_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int)


def check_data(name: str, value: object) -> dict[str, Any]:
    """`value` if it is a JSON object a run can keep as jsonb (within the document limits, no NaN, no NUL,
    no lone surrogate, string keys); otherwise InvalidRequest naming `name`, where and what is wrong."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be a JSON object, not {type(value).__name__}")
    found = shape_fault(value, json_only=True)
    if found is not None:
        location, reason = found
        raise InvalidRequest(f"{name}{'.' + location if location else ''}: {reason}")
    return value
