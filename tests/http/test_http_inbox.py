"""The inbox routes (SPEC 12.2) through httpx's ASGI transport, against a real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from inboxes import ME, NOTE, SECRET, bearer, deliver, everything
from journeys import ESCALATION, TENANT, delivery_at, journey, later, rows, run_row, start, step

from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.runs import progress_run
from tocsin.http import create_app

S = t.signals


async def signals(db: Database) -> list[dict[str, Any]]:
    return await rows(db, S, order_by="created_at")


async def test_the_inbox_lists_the_recipients_delivered_items_newest_first_with_counts(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    older = await deliver(db, now=t0, excerpt="first")
    newer = await deliver(db, now=later(t0, seconds=1), excerpt="second")
    await deliver(db, now=t0, recipient="user:7")  # someone else's
    await deliver(db, now=t0, tenant_id="globex")  # another tenant's, same recipient name

    response = await client.get("/v1/inbox", headers=bearer())

    assert response.status_code == 200
    page = response.json()
    assert [item["id"] for item in page["items"]] == [str(newer), str(older)]
    assert (page["unread_count"], page["unseen_count"], page["next_cursor"]) == (2, 2, None)
    item = page["items"][0]
    assert set(item) == {
        "id", "run_id", "step_key", "workflow_key", "content", "created_at", "seen_at", "read_at", "archived_at",
    }  # fmt: skip
    assert (item["step_key"], item["workflow_key"]) == ("note", "note")
    assert item["content"] == {"title": "Ada wrote", "body": "second"}
    assert (item["seen_at"], item["read_at"], item["archived_at"]) == (None, None, None)
    assert datetime.fromisoformat(item["created_at"]) == later(t0, seconds=1)


async def test_only_succeeded_in_app_deliveries_are_items(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    email_first = journey("email_first", step("mail", "email"))
    run = await start(db, email_first, now=t0, recipient=ME)
    pending_in_app = await start(db, NOTE, now=t0, recipient=ME)

    page = (await client.get("/v1/inbox", headers=bearer())).json()

    assert page["items"] == [] and (page["unread_count"], page["unseen_count"]) == (0, 0)
    for run_id in (run.id, pending_in_app.id):
        delivery_id = (await delivery_at(db, run_id, 1))["id"]
        response = await client.post(f"/v1/inbox/{delivery_id}/read", headers=bearer())
        assert response.status_code == 404


async def test_read_stamps_once_and_stops_only_that_items_run(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    first = await deliver(db, now=t0, spec=ESCALATION)
    second = await deliver(db, now=t0, spec=ESCALATION)
    runs = []
    for delivery_id in (first, second):
        (row,) = await rows(db, t.deliveries, t.deliveries.c.id == delivery_id)
        assert (await progress_run(db, row["run_id"], now=t0)).kind == "waiting"
        runs.append(row["run_id"])

    response = await client.post(f"/v1/inbox/{first}/read", headers=bearer())

    assert response.status_code == 200
    item = response.json()
    assert item["id"] == str(first) and item["read_at"] is not None and item["seen_at"] is None
    stopped = await run_row(db, runs[0])
    assert (stopped["state"], stopped["terminal_reason"]) == ("stopped", "signal:notification.read")
    assert (await run_row(db, runs[1]))["state"] == "waiting"
    [signal] = await signals(db)
    assert (signal["name"], signal["run_id"], signal["recipient"], signal["data"]) == (
        "notification.read",
        runs[0],
        ME,
        {"delivery_id": str(first)},
    )

    before = await everything(db)
    again = await client.post(f"/v1/inbox/{first}/read", headers=bearer())
    assert again.status_code == 200 and again.json() == item
    assert await everything(db) == before
    page = (await client.get("/v1/inbox", headers=bearer())).json()
    assert (page["unread_count"], page["unseen_count"]) == (1, 2)


async def test_seen_stamps_once_with_the_seen_signal(client: httpx.AsyncClient, db: Database, t0: datetime) -> None:
    delivery_id = await deliver(db, now=t0)

    item = (await client.post(f"/v1/inbox/{delivery_id}/seen", headers=bearer())).json()
    again = (await client.post(f"/v1/inbox/{delivery_id}/seen", headers=bearer())).json()

    assert item == again and item["seen_at"] is not None and item["read_at"] is None
    assert [s["name"] for s in await signals(db)] == ["notification.seen"]
    page = (await client.get("/v1/inbox", headers=bearer())).json()
    assert (page["unread_count"], page["unseen_count"]) == (1, 0)


async def test_archive_stamps_once_sends_no_signal_and_moves_the_item(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    kept = await deliver(db, now=t0)
    archived = await deliver(db, now=t0)

    item = (await client.post(f"/v1/inbox/{archived}/archive", headers=bearer())).json()
    again = (await client.post(f"/v1/inbox/{archived}/archive", headers=bearer())).json()

    assert item == again and item["archived_at"] is not None and item["read_at"] is None
    assert await signals(db) == []
    default = (await client.get("/v1/inbox", headers=bearer())).json()
    assert [i["id"] for i in default["items"]] == [str(kept)]
    assert (default["unread_count"], default["unseen_count"]) == (1, 1)  # archived items are not counted
    only_archived = (await client.get("/v1/inbox?archived=true", headers=bearer())).json()
    assert [i["id"] for i in only_archived["items"]] == [str(archived)]


async def test_the_unread_filter(client: httpx.AsyncClient, db: Database, t0: datetime) -> None:
    read = await deliver(db, now=t0)
    unread = await deliver(db, now=later(t0, seconds=1))
    await client.post(f"/v1/inbox/{read}/read", headers=bearer())

    def ids(response: httpx.Response) -> list[str]:
        return [item["id"] for item in response.json()["items"]]

    assert ids(await client.get("/v1/inbox?unread=true", headers=bearer())) == [str(unread)]
    assert ids(await client.get("/v1/inbox?unread=false", headers=bearer())) == [str(read)]
    assert ids(await client.get("/v1/inbox", headers=bearer())) == [str(unread), str(read)]


async def test_read_all_stamps_each_unread_item_once_with_its_signal(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    items = [await deliver(db, now=later(t0, seconds=i)) for i in range(5)]
    await client.post(f"/v1/inbox/{items[0]}/read", headers=bearer())
    await client.post(f"/v1/inbox/{items[1]}/archive", headers=bearer())
    other = await deliver(db, now=t0, recipient="user:7")

    # Two at once: the second waits for the first, then finds nothing left to stamp.
    results = await asyncio.gather(*(client.post("/v1/inbox/read-all", headers=bearer()) for _ in range(2)))

    assert sorted(r.json()["stamped"] for r in results) == [0, 3]
    found = {row["id"]: row for row in await rows(db, t.deliveries)}
    assert all(found[i]["read_at"] is not None for i in items[2:])
    assert found[items[1]]["read_at"] is None  # archived: left alone
    assert found[other]["read_at"] is None
    read_signals = [s for s in await signals(db) if s["name"] == "notification.read"]
    assert sorted(s["data"]["delivery_id"] for s in read_signals) == sorted(str(i) for i in [items[0], *items[2:]])
    stamps = {i: found[i]["read_at"] for i in items}
    before = await everything(db)
    assert (await client.post("/v1/inbox/read-all", headers=bearer())).json() == {"stamped": 0}
    assert await everything(db) == before
    assert {i: row["read_at"] for i, row in ((i, found[i]) for i in items)} == stamps


@pytest.mark.parametrize("route", ["read", "seen", "archive"])
async def test_another_recipients_or_tenants_item_or_a_bad_id_is_404_and_writes_nothing(
    client: httpx.AsyncClient, db: Database, t0: datetime, route: str
) -> None:
    theirs = await deliver(db, now=t0, recipient="user:7")
    other_tenant = await deliver(db, now=t0, tenant_id="globex")
    before = await everything(db)

    for item_id in (theirs, other_tenant, uuid.uuid4(), "not-a-uuid", "1%20OR%201=1"):
        response = await client.post(f"/v1/inbox/{item_id}/{route}", headers=bearer())
        assert (response.status_code, response.json()) == (404, {"detail": "not found"})

    assert await everything(db) == before


async def test_pagination_over_250_items_never_repeats_or_skips_while_new_items_arrive(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    # Ten items share each created_at, so the id must break ties in the keyset.
    existing = {str(await deliver(db, now=later(t0, seconds=i // 10))) for i in range(250)}
    seen: list[str] = []
    arrived: set[str] = set()
    cursor: str | None = None
    pages = 0
    while True:
        query = "/v1/inbox?limit=30" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(query, headers=bearer())).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        # Newer items, and one with an old created_at, land between pages.
        arrived.add(str(await deliver(db, now=later(t0, hours=1, seconds=pages))))
        arrived.add(str(await deliver(db, now=later(t0, seconds=pages * 3))))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen))  # nothing repeated
    assert existing <= set(seen)  # nothing skipped
    assert set(seen) <= existing | arrived
    assert pages >= 9


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("unread=maybe", "unread"),
        ("archived=2", "archived"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
    ],
)
async def test_bad_query_input_is_422_naming_the_field(
    client: httpx.AsyncClient, db: Database, query: str, field: str
) -> None:
    response = await client.get(f"/v1/inbox?{query}", headers=bearer())

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", field]]


async def test_limit_bounds_are_accepted(client: httpx.AsyncClient, db: Database, t0: datetime) -> None:
    for i in range(3):
        await deliver(db, now=later(t0, seconds=i))
    one = (await client.get("/v1/inbox?limit=1", headers=bearer())).json()
    assert len(one["items"]) == 1 and one["next_cursor"] is not None
    assert len((await client.get("/v1/inbox?limit=100", headers=bearer())).json()["items"]) == 3


async def test_openapi_describes_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/openapi.json")

    assert response.status_code == 200
    assert set(response.json()["paths"]) == {
        "/v1/inbox",
        "/v1/inbox/stream",
        "/v1/inbox/read-all",
        "/v1/inbox/{item_id}/read",
        "/v1/inbox/{item_id}/seen",
        "/v1/inbox/{item_id}/archive",
        "/v1/preferences",
    }


async def test_the_feed_page_loads_without_a_token_and_its_script_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    script = await client.get("/static/feed.js")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<base href="/">' in page.text and 'src="static/feed.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert script.status_code == 200 and "EventSource" in script.text


async def test_the_app_mounted_under_a_prefix_works_without_lifespan_events(db: Database, t0: datetime) -> None:
    host = FastAPI()
    host.mount("/notifications", create_app(db, secret=SECRET))
    delivery_id = await deliver(db, now=t0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://host.test") as http:
        page = await http.get("/notifications/")
        listed = (await http.get("/notifications/v1/inbox", headers=bearer())).json()
        script = await http.get("/notifications/static/feed.js")

    assert '<base href="/notifications/">' in page.text
    assert [item["id"] for item in listed["items"]] == [str(delivery_id)]
    assert script.status_code == 200


async def test_the_tenant_scopes_everything(client: httpx.AsyncClient, db: Database, t0: datetime) -> None:
    mine = await deliver(db, now=t0, tenant_id=TENANT)
    globex = await deliver(db, now=t0, tenant_id="globex")

    page = (await client.get("/v1/inbox", headers=bearer(tenant_id="globex"))).json()

    assert [item["id"] for item in page["items"]] == [str(globex)]
    assert (await client.post(f"/v1/inbox/{mine}/read", headers=bearer(tenant_id="globex"))).status_code == 404
