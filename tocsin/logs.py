"""Structured logs: one JSON object per line, carrying the run and the delivery a line is about.

`configure_logging()` is what the CLI calls once at start-up. Code that knows which run or delivery it is
working on attaches it with `bind_log_context(run_id=..., delivery_id=...)` (for the rest of the current
asyncio task: each Temporal activity runs in a task of its own) or `with log_context(...)` (for a block);
`ContextFilter` copies those fields, and the Temporal workflow id and activity type when a line is written
inside an activity, onto every record, whichever logger wrote it.

A JSON line has `ts`, `level`, `logger`, `message`, then `run_id`, `delivery_id`, `workflow_id`, `activity`
when known, then any `extra=` fields of the call (`channel`, `attempt`, `result`, ...), and `exc` for a
traceback. Recipients and message content are never logged.
"""

from __future__ import annotations

import json as jsonlib
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from temporalio import activity, workflow

CONTEXT_FIELDS = ("run_id", "delivery_id", "workflow_id", "activity")
HANDLER_NAME = "tocsin"
# Libraries that log every request at INFO (with full URLs): kept at WARNING unless DEBUG is asked for.
NOISY = ("httpx", "httpcore", "aiosmtplib")

_context: ContextVar[Mapping[str, str]] = ContextVar("tocsin_log_context", default=MappingProxyType({}))

# Attributes every LogRecord has: anything else on a record came from `extra=` (or from ContextFilter).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Extras that the Temporal SDK's logger adapters attach; their useful parts become workflow_id/activity.
_TEMPORAL_EXTRAS = frozenset({"temporal_activity", "temporal_workflow", "activity_info", "workflow_info"})


def _clean(fields: Mapping[str, object]) -> dict[str, str]:
    return {key: str(value) for key, value in fields.items() if value is not None}


def bind_log_context(**fields: object) -> None:
    """Attach fields (run_id=..., delivery_id=...) to every line logged from here to the end of this task."""
    _context.set({**_context.get(), **_clean(fields)})


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Attach fields to every line logged inside the block (in this task and the tasks it starts)."""
    token = _context.set({**_context.get(), **_clean(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound fields and the Temporal activity/workflow identity onto each record.

    Fields given explicitly with `extra=` win over bound ones. Add it to your own handlers to get the same
    fields when tocsin runs inside your process with your logging set-up.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        workflow_id, activity_type = _temporal_identity(record)
        if workflow_id is not None and getattr(record, "workflow_id", None) is None:
            record.workflow_id = workflow_id
        if activity_type is not None and getattr(record, "activity", None) is None:
            record.activity = activity_type
        return True


def _temporal_identity(record: logging.LogRecord) -> tuple[str | None, str | None]:
    details = getattr(record, "temporal_activity", None)
    if isinstance(details, Mapping):
        return _opt(details.get("workflow_id")), _opt(details.get("activity_type"))
    details = getattr(record, "temporal_workflow", None)
    if isinstance(details, Mapping):
        return _opt(details.get("workflow_id")), None
    if activity.in_activity():
        info = activity.info()
        return info.workflow_id, info.activity_type
    return None, None


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields, then the call's own `extra=` fields, of one record."""
    fields: dict[str, Any] = {}
    for key in CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            fields[key] = str(value)
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRIBUTES or key in _TEMPORAL_EXTRAS or key in fields or key in CONTEXT_FIELDS:
            continue
        if key.startswith("_"):
            continue
        fields[key] = value
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a terminal: `ts LEVEL logger message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        fields = " ".join(f"{key}={value}" for key, value in record_fields(record).items())
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def parse_level(level: str | int) -> int:
    """`"info"`, `"INFO"` or `20` -> 20. Raises ValueError naming the accepted levels."""
    if isinstance(level, int):
        return level
    text = level.strip().upper()
    if text.isdigit():
        return int(text)
    levels = logging.getLevelNamesMapping()
    if text not in levels:
        names = sorted(levels, key=lambda name: (levels[name], name))
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(names)}")
    return levels[text]


def configure_logging(level: str | int = "INFO", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Send every log line (tocsin's, the Temporal SDK's, the libraries') to `stream` (default: stderr).

    `json=None` picks JSON lines unless the stream is a terminal (so a container logs JSON, a developer's
    shell reads text). Calling it again replaces the handler it installed; handlers of others are kept.
    """
    numeric = parse_level(level)
    target = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(target, "isatty", None)
        json = not (callable(isatty) and isatty())
    handler = logging.StreamHandler(target)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # The SDK's adapters append a dict of activity/workflow details to every message; as JSON fields
    # (workflow_id, activity) they are searchable instead.
    activity.logger.activity_info_on_message = not json
    workflow.logger.workflow_info_on_message = not json
