"""Tokens and the host's own authentication (SPEC 12.2): every bad token is 401 and writes nothing."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI, Request
from inboxes import ME, SECRET, bearer, deliver, everything
from journeys import TENANT

from tocsin.core.errors import InvalidRequest
from tocsin.db import Database
from tocsin.http import InvalidToken, create_app, issue_token, verify_token


def forged_payload() -> str:
    """A valid token whose payload was changed to another recipient, keeping the old signature."""
    payload, _, signature = issue_token(SECRET, tenant_id=TENANT, recipient="user:7").partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["recipient"] = ME
    swapped = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{swapped}.{signature}"


BAD_AUTHORIZATION: dict[str, str | bytes | None] = {
    "missing": None,
    "not bearer": "Basic dXNlcjpwYXNz",
    "empty bearer": "Bearer ",
    "malformed": "Bearer not-a-token",
    "malformed, two parts": "Bearer abc.def",
    "non-ascii": "Bearer ÿÿ.ÿÿ".encode("latin-1"),
    "forged signature": "Bearer " + issue_token(SECRET, tenant_id=TENANT, recipient=ME)[:-4] + "AAAA",
    "forged payload": "Bearer " + forged_payload(),
    "expired": "Bearer " + issue_token(SECRET, tenant_id=TENANT, recipient=ME, ttl=-1),
    "another tenant's secret": "Bearer " + issue_token("globex-secret", tenant_id=TENANT, recipient=ME),
}

ROUTES = [
    ("GET", "/v1/inbox"),
    ("GET", "/v1/inbox/stream"),
    ("POST", "/v1/inbox/read-all"),
    ("POST", "/v1/inbox/{id}/read"),
    ("POST", "/v1/inbox/{id}/seen"),
    ("POST", "/v1/inbox/{id}/archive"),
    ("GET", "/v1/preferences"),
    ("PUT", "/v1/preferences"),
]


@pytest.mark.parametrize("kind", BAD_AUTHORIZATION)
async def test_every_bad_token_is_401_on_every_route_and_writes_nothing(
    client: httpx.AsyncClient, db: Database, t0: datetime, kind: str
) -> None:
    item = await deliver(db, now=t0)
    header = BAD_AUTHORIZATION[kind]
    headers = {} if header is None else {"Authorization": header}
    before = await everything(db)

    for method, path in ROUTES:
        response = await client.request(
            method, path.format(id=item), headers=headers, json={"opted_in": False} if method == "PUT" else None
        )
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"

    assert await everything(db) == before


async def test_a_bad_query_token_is_401_and_a_good_one_works(
    client: httpx.AsyncClient, db: Database, t0: datetime
) -> None:
    item = await deliver(db, now=t0)
    expired = issue_token(SECRET, tenant_id=TENANT, recipient=ME, ttl=timedelta(seconds=-5))
    good = issue_token(SECRET, tenant_id=TENANT, recipient=ME, ttl=timedelta(minutes=5))

    assert (await client.post(f"/v1/inbox/{item}/read?token={expired}")).status_code == 401
    response = await client.post(f"/v1/inbox/{item}/read?token={good}")
    assert response.status_code == 200 and response.json()["read_at"] is not None


async def test_401_comes_before_validating_the_input(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/inbox?limit=0")).status_code == 401
    assert (await client.put("/v1/preferences", content=b"{nope")).status_code == 401


def test_tokens_round_trip_and_expire() -> None:
    token = issue_token(SECRET, tenant_id=TENANT, recipient=ME, ttl=60, now=1_000_000)

    principal = verify_token(SECRET, token, now=1_000_059)
    assert (principal.tenant_id, principal.recipient) == (TENANT, ME)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token, now=1_000_060)
    with pytest.raises(InvalidToken, match="signature"):
        verify_token("another secret", token, now=1_000_000)
    with pytest.raises(InvalidRequest):
        issue_token(SECRET, tenant_id=" ", recipient=ME)
    with pytest.raises(InvalidRequest):
        issue_token("", tenant_id=TENANT, recipient=ME)


def test_create_app_needs_exactly_one_way_to_authenticate(db: Database) -> None:
    with pytest.raises(InvalidRequest, match="needs"):
        create_app(db)
    with pytest.raises(InvalidRequest, match="not both"):
        create_app(db, secret=SECRET, authenticate=lambda request: (TENANT, ME))


async def test_a_hosts_authenticate_replaces_tokens(db: Database, t0: datetime) -> None:
    item = await deliver(db, now=t0)

    async def from_session(request: Request) -> tuple[str, str] | None:
        session = request.headers.get("x-session")
        if session == "broken":
            raise RuntimeError("session store down")
        return (TENANT, ME) if session == "ada" else None

    host = FastAPI()
    host.mount("/inbox", create_app(db, authenticate=from_session))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://host.test") as http:
        before = await everything(db)
        for session in ({}, {"x-session": "grace"}, {"x-session": "broken"}):
            assert (await http.post(f"/inbox/v1/inbox/{item}/read", headers=session)).status_code == 401
        # A token means nothing to an app that authenticates on its own.
        assert (await http.post(f"/inbox/v1/inbox/{item}/read", headers=bearer())).status_code == 401
        assert await everything(db) == before
        listed = (await http.get("/inbox/v1/inbox", headers={"x-session": "ada"})).json()
        assert [i["id"] for i in listed["items"]] == [str(item)]

    sync_app = create_app(db, authenticate=lambda request: (TENANT, ME))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sync_app), base_url="http://host.test") as http:
        assert (await http.get("/v1/inbox")).json()["unread_count"] == 1
