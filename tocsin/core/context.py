"""The render context (SPEC 11.6): what content templates, conditions, `until`, timezones and keys see."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CONTEXT_NAMES = frozenset({"recipient", "tenant_id", "workflow_key", "items", "items_count"})
"""The names tocsin provides; they win over data keys of the same name, and trigger data never needs them."""


def render_context(
    data: Mapping[str, Any],
    *,
    recipient: str,
    tenant_id: str,
    workflow_key: str,
    items: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The run's `data` at the top level plus the provided names; `items` and `items_count` only for a batched
    run (`items` not None). A new dict: the stored data is never changed."""
    context = dict(data)
    context.update(recipient=recipient, tenant_id=tenant_id, workflow_key=workflow_key)
    if items is not None:
        context.update(items=list(items), items_count=len(items))
    return context
