"""Preferences and recipients (SPEC 12.1) on a real Postgres: the engine functions dispatch and the API call,
and GET/PUT /v1/preferences."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from inboxes import ME, bearer, everything
from journeys import ESCALATION, TENANT, attempts, delivery_at, journey, later, start, step

from tocsin.channels import InAppChannel
from tocsin.core.errors import InvalidRequest
from tocsin.db import Database
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.preferences import opted_out, preferences, recipient_timezone, set_preference, set_recipient
from tocsin.engine.registry import register_definition

SMS_ONLY = journey("billing", step("sms", "sms"))


async def test_opted_out_reads_the_most_specific_row(db: Database, t0: datetime) -> None:
    async def out(workflow_key: str, channel: str) -> bool:
        return await opted_out(db, tenant_id=TENANT, recipient=ME, workflow_key=workflow_key, channel=channel)

    assert not await out("mention_escalation", "email")  # nothing set: opted in
    await set_preference(db, tenant_id=TENANT, recipient=ME, opted_in=False, channel="email", now=t0)
    assert await out("mention_escalation", "email")
    assert not await out("mention_escalation", "in_app")
    await set_preference(
        db, tenant_id=TENANT, recipient=ME, opted_in=True, workflow_key="mention_escalation", now=t0
    )  # per-workflow beats per-channel
    assert not await out("mention_escalation", "email")
    assert await out("billing", "email")
    await set_preference(
        db, tenant_id=TENANT, recipient=ME, opted_in=False, workflow_key="mention_escalation", channel="email", now=t0
    )
    assert await out("mention_escalation", "email")
    # Another tenant's or recipient's rows never apply.
    assert not await opted_out(db, tenant_id="globex", recipient=ME, workflow_key="billing", channel="email")
    assert not await opted_out(db, tenant_id=TENANT, recipient="user:7", workflow_key="billing", channel="email")
    # Inside the caller's transaction too (dispatch reads it beside the delivery).
    async with db.transaction() as conn:
        assert await opted_out(conn, tenant_id=TENANT, recipient=ME, workflow_key="billing", channel="email")


async def test_setting_a_scope_again_updates_its_row(db: Database, t0: datetime) -> None:
    for scope in ({}, {"channel": "email"}, {"workflow_key": "w"}, {"workflow_key": "w", "channel": "email"}):
        await set_preference(db, tenant_id=TENANT, recipient=ME, opted_in=False, now=t0, **scope)
        await set_preference(db, tenant_id=TENANT, recipient=ME, opted_in=True, now=later(t0, seconds=1), **scope)

    found = await preferences(db, tenant_id=TENANT, recipient=ME)

    assert [(r.workflow_key, r.channel, r.opted_in, r.updated_at) for r in found.rows] == [
        (None, None, True, later(t0, seconds=1)),
        (None, "email", True, later(t0, seconds=1)),
        ("w", None, True, later(t0, seconds=1)),
        ("w", "email", True, later(t0, seconds=1)),
    ]


async def test_resolved_covers_registered_workflows_with_their_latest_versions_channels(
    db: Database, t0: datetime
) -> None:
    await register_definition(db, ESCALATION, now=t0)
    await register_definition(db, SMS_ONLY, now=t0)
    await register_definition(db, journey("billing", step("mail", "email"), version=2), now=t0)
    await set_preference(db, tenant_id=TENANT, recipient=ME, opted_in=False, channel="email", now=t0)

    found = await preferences(db, tenant_id=TENANT, recipient=ME)

    assert found.resolved == {
        "billing": {"email": False},
        "mention_escalation": {"email": False, "in_app": True},
    }


@pytest.mark.parametrize(
    "bad",
    [{"tenant_id": " "}, {"recipient": ""}, {"workflow_key": "  "}, {"channel": ""}, {"opted_in": "no"}],
)
async def test_bad_preference_arguments_raise_and_write_nothing(
    db: Database, t0: datetime, bad: dict[str, object]
) -> None:
    args: dict[str, object] = {"tenant_id": TENANT, "recipient": ME, "opted_in": False, **bad}
    before = await everything(db)
    with pytest.raises(InvalidRequest):
        await set_preference(db, now=t0, **args)  # type: ignore[arg-type]
    assert await everything(db) == before


async def test_a_recipients_time_zone(db: Database, t0: datetime) -> None:
    assert await recipient_timezone(db, tenant_id=TENANT, recipient=ME) is None
    recipient = await set_recipient(db, tenant_id=TENANT, recipient=ME, timezone="Europe/Paris", now=t0)
    assert (recipient.timezone, recipient.updated_at) == ("Europe/Paris", t0)
    await set_recipient(db, tenant_id=TENANT, recipient=ME, timezone="Asia/Tokyo", now=later(t0, seconds=1))
    assert await recipient_timezone(db, tenant_id=TENANT, recipient=ME) == "Asia/Tokyo"
    assert await recipient_timezone(db, tenant_id="globex", recipient=ME) is None

    before = await everything(db)
    for zone in ("Mars/Olympus", "America", "", "../etc/passwd"):
        with pytest.raises(InvalidRequest):
            await set_recipient(db, tenant_id=TENANT, recipient=ME, timezone=zone, now=t0)
    assert await everything(db) == before


async def test_get_and_put_preferences_over_http(client: httpx.AsyncClient, db: Database, t0: datetime) -> None:
    await register_definition(db, ESCALATION, now=t0)

    empty = (await client.get("/v1/preferences", headers=bearer())).json()
    assert empty == {"rows": [], "resolved": {"mention_escalation": {"email": True, "in_app": True}}}

    response = await client.put("/v1/preferences", headers=bearer(), json={"channel": "email", "opted_in": False})
    assert response.status_code == 200
    body = response.json()
    assert [(r["workflow_key"], r["channel"], r["opted_in"]) for r in body["rows"]] == [(None, "email", False)]
    assert body["resolved"] == {"mention_escalation": {"email": False, "in_app": True}}
    assert (await client.get("/v1/preferences", headers=bearer())).json() == body
    # Only the token's recipient was touched.
    assert (await client.get("/v1/preferences", headers=bearer(recipient="user:7"))).json()["rows"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "opted_in"),
        ({"opted_in": "yes"}, "opted_in"),
        ({"opted_in": 0}, "opted_in"),
        ({"opted_in": False, "channel": ""}, "channel"),
        ({"opted_in": False, "workflow_key": "   "}, "workflow_key"),
        ({"opted_in": False, "workflow_key": 7}, "workflow_key"),
        ({"opted_in": False, "colour": "red"}, "colour"),
        ([], None),
    ],
)
async def test_bad_preference_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, db: Database, body: object, field: str | None
) -> None:
    before = await everything(db)

    response = await client.put("/v1/preferences", headers=bearer(), json=body)

    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["detail"]]
    assert all(loc[0] == "body" for loc in locations)
    if field is not None:
        assert field in {loc[-1] for loc in locations}
    assert await everything(db) == before


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ('{"opted_in": false, "workflow_key": "a\\u0000b"}', "workflow_key contains a NUL character"),
        ('{"opted_in": false, "channel": "\\ud800"}', "channel contains a lone surrogate"),
        ('{"opted_in": false, "workflow_key": "' + "k" * 3000 + '"}', "workflow_key is 3000 characters long"),
    ],
)
async def test_a_scope_postgres_could_not_store_is_422_not_a_500(
    client: httpx.AsyncClient, db: Database, body: str, fault: str
) -> None:
    before = await everything(db)

    # As JSON text: the escapes reach the server as written (a client library would refuse a lone surrogate).
    headers = {**bearer(), "content-type": "application/json"}
    response = await client.put("/v1/preferences", headers=headers, content=body.encode())

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][0] == "body" and (fault in error["msg"] or fault.split()[0] == error["loc"][-1])
    assert await everything(db) == before


async def test_a_body_that_is_not_json_is_422(client: httpx.AsyncClient, db: Database) -> None:
    response = await client.put(
        "/v1/preferences", headers={**bearer(), "content-type": "application/json"}, content=b"{nope"
    )
    assert response.status_code == 422


async def test_an_opt_out_put_over_http_suppresses_the_next_send(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    """A feed page's preference centre is what dispatch reads: no policy hook is involved."""
    run = await start(db, ESCALATION, now=t0, recipient=ME)
    delivery_id = (await delivery_at(db, run.id, 1))["id"]
    body = {"workflow_key": "mention_escalation", "channel": "in_app", "opted_in": False}
    assert (await client.put("/v1/preferences", headers=bearer(), json=body)).status_code == 200

    delivery = await dispatch_delivery(db, delivery_id, channels={"in_app": InAppChannel()}, now=t0)

    assert (delivery.status, delivery.suppression_reason) == ("suppressed", "recipient_opted_out")
    [attempt] = await attempts(db, delivery_id)
    assert (attempt["outcome"], attempt["error"]) == ("rejected", "recipient_opted_out")
    assert (await client.get("/v1/inbox", headers=bearer())).json()["items"] == []
