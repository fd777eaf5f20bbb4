"""The moment an `until` wait names (SPEC 11.2). Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from tocsin.core.templates import RenderError, render_text

UntilError = Literal["render_failed", "not_a_timestamp", "no_offset"]


def until_moment(template: str, context: dict[str, Any]) -> tuple[str, datetime] | UntilError:
    """The rendered `until` and the moment it names, or the error (SPEC 11.2): `render_failed`,
    `not_a_timestamp` or `no_offset`. A moment without an offset is never guessed into a zone."""
    try:
        rendered = render_text(template, context, "until").strip()
    except RenderError:
        return "render_failed"
    try:
        moment = datetime.fromisoformat(rendered)
    except ValueError:
        return "not_a_timestamp"
    if moment.tzinfo is None:
        return "no_offset"
    return rendered, moment.astimezone(UTC)
