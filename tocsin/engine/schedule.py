"""When a delivery may be sent (SPEC 11.3): its step's send window, read in the recipient's zone, and a retry's
backoff moved into that window. The answers are columns (`deliveries.scheduled_for`, `send_timezone`): the
workflow only sleeps until them, and a continue-as-new or a lost timer loses nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.definitions import Step
from tocsin.core.models import Delivery
from tocsin.core.templates import RenderError, render_text
from tocsin.core.windows import choose_zone, is_template, known_zone, next_opening
from tocsin.db import queries as q
from tocsin.db import store


def own_zone(step: Step, context: dict[str, Any]) -> tuple[str, ZoneInfo] | None:
    """The zone the step's window names itself (a literal, or a template rendered against the run's context) if
    it is a known one; else None, and the recipient's zone is tried next (`fallback_zone`)."""
    own = step.send_window.timezone if step.send_window is not None else None
    if own is not None and is_template(own):
        try:
            own = render_text(own, context, "send_window.timezone").strip()
        except RenderError:
            own = None  # a zone that cannot be rendered falls back, as an unknown one does
    return choose_zone(own) if own is not None and known_zone(own) is not None else None


def fallback_zone(recipient_zone: str | None, default_timezone: str) -> tuple[str, ZoneInfo]:
    """The zone of a window whose step names no known one: the recipient's, else the definition's default."""
    return choose_zone(recipient_zone, default_timezone)


def window_opening(step: Step, zone: ZoneInfo | None, at: datetime) -> datetime | None:
    """The next moment inside the step's window at or after `at`; None when `at` is inside or there is none."""
    if step.send_window is None or zone is None:
        return None
    return next_opening(step.send_window, zone, at)


def retry_time(step: Step, delivery: Delivery, *, now: datetime) -> datetime:
    """When send number `attempt_count` + 1 may go out after send `attempt_count` failed temporarily."""
    at = now + timedelta(seconds=step.retry.backoff_seconds(delivery.attempt_count))
    zone = known_zone(delivery.send_timezone) if delivery.send_timezone else None
    return window_opening(step, zone, at) or at


async def schedule_retry(conn: AsyncConnection, step: Step, delivery: Delivery, *, now: datetime) -> Delivery:
    """After a temporary failure (a send's or a provider's report), write when the next send may go out."""
    return await store.fetch_one(
        conn,
        Delivery,
        q.SCHEDULE_NEXT_SEND,
        delivery_id=delivery.id,
        scheduled_for=retry_time(step, delivery, now=now),
        now=now,
    )
