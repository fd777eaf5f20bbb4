"""Recipients and their preferences (SPEC 12.1): setting them, reading them, and the check before a send."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncConnection

from tocsin.core.errors import InvalidRequest
from tocsin.core.limits import check_identifier
from tocsin.core.preferences import Preference, Preferences, Recipient, opted_in, resolve
from tocsin.db import Database
from tocsin.db import recipients as q

Conn = Database | AsyncConnection


@asynccontextmanager
async def connection(source: Conn) -> AsyncIterator[AsyncConnection]:
    """The caller's open connection, or a short transaction of our own on the database."""
    if isinstance(source, AsyncConnection):
        yield source
    else:
        async with source.transaction() as conn:
            yield conn


def _text(name: str, value: object) -> str:
    # The identifier rule of every other key (a NUL or an over-long key would fail in Postgres, a 500 over HTTP).
    return check_identifier(name, value)


def _scope(name: str, value: object) -> str | None:
    return None if value is None else _text(name, value)


async def opted_out(source: Conn, *, tenant_id: str, recipient: str, workflow_key: str, channel: str) -> bool:
    """Whether the recipient's preferences forbid this send: the check `dispatch_delivery` makes."""
    async with connection(source) as conn:
        rows = await _rows(
            conn,
            q.MATCHING_PREFERENCES,
            b_tenant_id=tenant_id,
            b_recipient=recipient,
            b_workflow_key=workflow_key,
            b_channel=channel,
        )
    return not opted_in(rows, workflow_key, channel)


async def preferences(source: Conn, *, tenant_id: str, recipient: str) -> Preferences:
    """The recipient's rows, and the resolved choice for every registered workflow key and its channels."""
    params = {"b_tenant_id": _text("tenant_id", tenant_id), "b_recipient": _text("recipient", recipient)}
    async with connection(source) as conn:
        rows = await _rows(conn, q.PREFERENCE_ROWS, **params)
        specs = (await conn.execute(q.LATEST_SPECS)).all()
    channels = {key: [step["channel"] for step in spec.get("steps", [])] for key, spec in specs}
    return Preferences(rows=rows, resolved=resolve(rows, channels))


async def set_preference(
    db: Database,
    *,
    tenant_id: str,
    recipient: str,
    opted_in: bool,
    workflow_key: str | None = None,
    channel: str | None = None,
    now: datetime,
) -> Preferences:
    """Set one scope (None: any workflow / any channel); setting it again updates its row."""
    params = {
        "b_tenant_id": _text("tenant_id", tenant_id),
        "b_recipient": _text("recipient", recipient),
        "b_workflow_key": _scope("workflow_key", workflow_key),
        "b_channel": _scope("channel", channel),
    }
    if not isinstance(opted_in, bool):
        raise InvalidRequest("opted_in must be true or false")
    async with db.transaction() as conn:
        await conn.execute(q.UPSERT_PREFERENCE, {**params, "b_opted_in": opted_in, "now": now})
        return await preferences(conn, tenant_id=tenant_id, recipient=recipient)


def check_timezone(timezone: str | None) -> str | None:
    if timezone is None:
        return None
    try:
        ZoneInfo(_text("timezone", timezone))
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a folder such as "America"
        raise InvalidRequest(f"unknown time zone {timezone!r}") from exc
    return timezone


async def set_recipient(
    db: Database, *, tenant_id: str, recipient: str, timezone: str | None, now: datetime
) -> Recipient:
    """Record a recipient's time zone (an IANA name; None clears it): send windows fall back to it."""
    params = {
        "b_tenant_id": _text("tenant_id", tenant_id),
        "b_recipient": _text("recipient", recipient),
        "b_timezone": check_timezone(timezone),
        "now": now,
    }
    async with db.transaction() as conn:
        row = (await conn.execute(q.UPSERT_RECIPIENT, params)).mappings().one()
    return Recipient.model_validate(dict(row))


async def recipient_timezone(source: Conn, *, tenant_id: str, recipient: str) -> str | None:
    """The recipient's time zone, if one was set (SPEC 11.3's fallback for send windows)."""
    async with connection(source) as conn:
        zone: str | None = await conn.scalar(q.RECIPIENT_TIMEZONE, {"b_tenant_id": tenant_id, "b_recipient": recipient})
    return zone


async def recipient_timezones(conn: AsyncConnection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The time zones set for these (tenant_id, recipient) pairs, in one read; a pair with none is left out."""
    unique = set(pairs)
    if not unique:
        return {}
    params = {"b_tenant_ids": [tenant for tenant, _ in unique], "b_recipients": [recipient for _, recipient in unique]}
    rows = (await conn.execute(q.RECIPIENT_TIMEZONES, params)).all()
    return {(row.tenant_id, row.recipient): row.timezone for row in rows if row.timezone is not None}


async def _rows(conn: AsyncConnection, statement: Any, **params: Any) -> list[Preference]:
    result = await conn.execute(statement, params)
    return [Preference.model_validate(dict(row)) for row in result.mappings().all()]
