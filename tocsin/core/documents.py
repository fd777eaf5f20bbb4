"""JSON and YAML documents from untrusted text (definition files, run data), parsed within the limits.

The plain parsers trust their input: deep nesting overflows the stack, a few hundred bytes of YAML
aliases expand to millions of values, a duplicated key silently replaces the first. These refuse all
three, with one line saying what is wrong and, for YAML, where.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tocsin.core.errors import InvalidDocument
from tocsin.core.limits import MAX_DEPTH, MAX_DOCUMENT_SIZE, MAX_NODES, printable, shape_fault

if TYPE_CHECKING:  # yaml._yaml is only there when PyYAML was built with libyaml
    from yaml._yaml import Mark as CMark
    from yaml.error import Mark
    from yaml.events import Event
    from yaml.tokens import Token

DocumentFormat = Literal["json", "yaml"]

MAX_ALIAS_VALUES = 1000
"""Values that YAML aliases may add to a document, all together: enough to share a retry policy, not a bomb."""

_FORMATS: dict[str, DocumentFormat] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def parse_document(text: str, format: DocumentFormat) -> object:
    """The value of the JSON or YAML document `text`; InvalidDocument when it cannot be parsed, repeats a
    key, holds NaN or Infinity, or exceeds a limit (MAX_DOCUMENT_SIZE, MAX_DEPTH, MAX_NODES, MAX_ALIAS_VALUES).
    """
    if len(text) > MAX_DOCUMENT_SIZE:
        raise InvalidDocument(f"the document is longer than {MAX_DOCUMENT_SIZE} characters")
    value = _parse_json(text) if format == "json" else _parse_yaml(text)
    found = shape_fault(value)
    if found is not None:
        location, reason = found
        raise InvalidDocument(f"{reason} (at {location})" if location else reason)
    return value


def read_document(path: Path, format: DocumentFormat | None = None) -> object:
    """The document in the file at `path`, in `format` or else the one its suffix names (.json, .yaml, .yml).

    Reads no more than the size limit allows, so a huge file is refused without being loaded.
    """
    chosen = format or _FORMATS.get(path.suffix.lower())
    if chosen is None:
        raise InvalidDocument("a document file must end in .json, .yaml or .yml")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_DOCUMENT_SIZE + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise InvalidDocument(f"cannot read the file: {printable(str(exc))}") from exc
    if len(data) > MAX_DOCUMENT_SIZE:
        raise InvalidDocument(f"the file is larger than {MAX_DOCUMENT_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidDocument(f"cannot read the file: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return parse_document(text, chosen)


# --- JSON ------------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth_exceeded(text: str) -> bool:
    # json.loads recurses once per level and has no depth option: count the brackets outside strings first.
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidDocument(f"not valid JSON: duplicate key {printable(repr(key))}")
        result[key] = value
    return result


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidDocument(f"not valid JSON: {text} is too large for a JSON number")
    return value


def _no_constant(name: str) -> object:
    raise InvalidDocument(f"not valid JSON: {name} is not a JSON number")


def _parse_json(text: str) -> object:
    if _json_depth_exceeded(text):
        raise InvalidDocument(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_float=_finite, parse_constant=_no_constant)
    except InvalidDocument:
        raise
    except ValueError as exc:  # json.JSONDecodeError, and int() refusing more than 4300 digits
        raise InvalidDocument(f"not valid JSON: {printable(str(exc))}") from exc


# --- YAML ------------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """Raised while composing: the one-line reason a document is refused, with where it happened."""

    def __init__(self, reason: str, mark: Mark | CMark | None) -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(f"{reason}{where}")


class _LimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys, nesting deeper than MAX_DEPTH, and aliases that would
    add more than MAX_ALIAS_VALUES values. Each node's size counts what its aliases expand to, so a
    bomb is refused while it is composed, long before anything is constructed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.alias_values = 0
        self.sizes: dict[Node, int] = {}

    def fetch_flow_collection_start(self, TokenClass: type[Token]) -> None:
        # The scanner's work per token grows with the depth of [ and {: refuse before it turns quadratic.
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]  # the stub leaves it untyped
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(node) if node is not None else None
            if size is None:  # its anchor is still being composed
                raise _Refused("an alias refers to a value that contains it", event.start_mark)
            self.alias_values += size
            if self.alias_values > MAX_ALIAS_VALUES:
                raise _Refused(f"aliases expand to more than {MAX_ALIAS_VALUES} values", event.start_mark)
            return node
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        self.depth += collection
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= collection
        if node is not None:
            self.sizes[node] = self.size(node)
            if self.sizes[node] > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} values", event.start_mark)
        return node

    def size(self, node: Node) -> int:
        if isinstance(node, SequenceNode):
            return 1 + sum(self.sizes[child] for child in node.value)
        if isinstance(node, MappingNode):
            self.refuse_duplicates(node)
            return 1 + sum(self.sizes[key] + self.sizes[value] for key, value in node.value)
        return 1

    @staticmethod
    def refuse_duplicates(node: MappingNode) -> None:
        # Keys compared as written (tag and text), before merge keys (<<) are flattened in: a key given
        # beside a merge legitimately overrides the merged one.
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                if (key.tag, key.value) in seen:
                    raise _Refused(f"not valid YAML: duplicate key {printable(repr(key.value))}", key.start_mark)
                seen.add((key.tag, key.value))


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error without the snippet of the document that PyYAML prints under it."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return printable(str(exc))
    reason = "; ".join(part for part in (exc.context, exc.problem) if part)
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return printable(reason) + where


def _parse_yaml(text: str) -> object:
    try:
        loader = _LimitedLoader(text)  # the reader refuses control characters already
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise InvalidDocument(str(exc)) from exc
    except yaml.YAMLError as exc:
        raise InvalidDocument(f"not valid YAML: {_one_line(exc)}") from exc
    except ValueError as exc:  # a constructor's own check, such as a date with no such day
        raise InvalidDocument(f"not valid YAML: {printable(str(exc))}") from exc
