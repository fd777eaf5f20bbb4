"""Preferences and recipients through the Tocsin API (SPEC 12.1): set, read back, scoped, bad arguments refused.

They live in Postgres alone, so the Tocsin here has a lazy Temporal client that never connects: a call that
reached for Temporal would fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from journeys import ESCALATION, snapshot
from temporalio.client import Client

from tocsin import Tocsin
from tocsin.core.errors import InvalidRequest
from tocsin.db import Database

ADA = "email:ada@example.com"


@pytest.fixture
async def tocsin(db: Database) -> AsyncIterator[Tocsin]:
    async with Tocsin(db, await Client.connect("127.0.0.1:1", lazy=True)) as t:
        yield t


async def test_set_preference_and_preferences(tocsin: Tocsin) -> None:
    t = tocsin
    await t.register_definition(ESCALATION)
    assert (await t.preferences(tenant_id="acme", recipient=ADA)).model_dump() == {
        "rows": [],
        "resolved": {"mention_escalation": {"email": True, "in_app": True}},
    }

    await t.set_preference(tenant_id="acme", recipient=ADA, opted_in=False, channel="email")
    await t.set_preference(tenant_id="acme", recipient=ADA, opted_in=True, workflow_key="mention_escalation")
    changed = await t.set_preference(tenant_id="acme", recipient=ADA, opted_in=True, channel="email")

    assert [(r.workflow_key, r.channel, r.opted_in) for r in changed.rows] == [
        (None, "email", True),  # set again: the same row, updated
        ("mention_escalation", None, True),
    ]
    assert changed.resolved == {"mention_escalation": {"email": True, "in_app": True}}
    assert await t.preferences(tenant_id="acme", recipient=ADA) == changed
    # Another recipient and another tenant are untouched.
    assert (await t.preferences(tenant_id="acme", recipient="user:7")).rows == []
    assert (await t.preferences(tenant_id="globex", recipient=ADA)).rows == []


async def test_set_recipient_records_a_time_zone(tocsin: Tocsin) -> None:
    t = tocsin
    paris = await t.set_recipient(tenant_id="acme", recipient=ADA, timezone="Europe/Paris")
    assert (paris.tenant_id, paris.recipient, paris.timezone) == ("acme", ADA, "Europe/Paris")
    cleared = await t.set_recipient(tenant_id="acme", recipient=ADA, timezone=None)
    assert cleared.timezone is None and cleared.updated_at >= paris.updated_at


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"kind": "recipient", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"kind": "recipient", "timezone": "Europe"}, "unknown time zone"),
        ({"kind": "recipient", "recipient": " ", "timezone": "UTC"}, "recipient"),
        ({"kind": "preference", "opted_in": "no"}, "opted_in"),
        ({"kind": "preference", "opted_in": False, "channel": "  "}, "channel"),
        ({"kind": "preference", "opted_in": False, "tenant_id": ""}, "tenant_id"),
    ],
)
async def test_bad_arguments_are_invalid_requests_and_write_nothing(
    tocsin: Tocsin, call: dict[str, Any], match: str
) -> None:
    t = tocsin
    before = await snapshot(tocsin.db)
    args: dict[str, Any] = {"tenant_id": "acme", "recipient": ADA, **call}
    kind = args.pop("kind")

    with pytest.raises(InvalidRequest, match=match):
        if kind == "recipient":
            await t.set_recipient(**args)
        else:
            await t.set_preference(**args)

    assert await snapshot(tocsin.db) == before
    assert (await t.preferences(tenant_id="acme", recipient=ADA)).rows == []
