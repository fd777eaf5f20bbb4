"""The engine's entry points refuse what no run can hold, with InvalidRequest naming it, and write nothing.

Before, an idempotency key, tenant, recipient or signal name of 100 000 characters was accepted, and a NUL,
a lone surrogate or a version beyond int4 failed inside Postgres (a DBAPIError, i.e. "database error").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from journeys import ESCALATION, escalation_waiting, snapshot, start

from tocsin.core.errors import InvalidRequest
from tocsin.core.limits import INT4_MAX, MAX_IDENTIFIER_LENGTH
from tocsin.db import Database
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import MAX_REASON_LENGTH, cancel_run, create_run
from tocsin.engine.signals import route_signal

HUGE = "x" * 100_000
AT_LIMIT = "x" * MAX_IDENTIFIER_LENGTH
VALID: dict[str, Any] = {
    "tenant_id": "acme",
    "workflow_key": ESCALATION["key"],
    "recipient": "user:42",
    "idempotency_key": "key-1",
}

CREATE_REFUSALS = [
    ({"tenant_id": HUGE}, "tenant_id is 100000 characters long; at most 255 are allowed"),
    ({"recipient": HUGE}, "recipient is 100000 characters long"),
    ({"idempotency_key": HUGE}, "idempotency_key is 100000 characters long"),
    ({"workflow_key": HUGE}, "workflow_key is 100000 characters long"),
    ({"idempotency_key": AT_LIMIT + "x"}, "idempotency_key is 256 characters long"),
    ({"tenant_id": " "}, "tenant_id must not be blank"),
    ({"recipient": "user:\x00"}, "recipient contains a NUL character (at index 5)"),
    ({"idempotency_key": "k\ud800"}, "idempotency_key contains a lone surrogate U+D800 (at index 1)"),
    ({"version": INT4_MAX + 1}, "version must be a whole number from 1 to 2147483647, not 2147483648"),
    ({"version": 0}, "version must be a whole number from 1 to 2147483647, not 0"),
    ({"version": True}, "version must be a whole number from 1 to 2147483647, not True"),
    ({"data": {"a": float("nan")}}, "data.a: a float is not a JSON value"),
    ({"data": {"a": "\x00"}}, "data.a: a string contains a NUL character (at index 0)"),
    ({"data": {"\udcff": 1}}, "data.\\udcff: the key contains a lone surrogate U+DCFF (at index 0)"),
    ({"data": {1: 1}}, "data: the key 1 is not a string"),
]


@pytest.mark.parametrize(("change", "message"), CREATE_REFUSALS)
async def test_create_run_refuses_what_no_run_can_hold(
    db: Database, t0: datetime, change: dict[str, Any], message: str
) -> None:
    await register_definition(db, ESCALATION, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest) as refused:
        await create_run(db, **{**VALID, **change}, now=t0)
    assert str(refused.value).startswith(message)
    assert await snapshot(db) == before


async def test_identifiers_at_the_limit_are_accepted(db: Database, t0: datetime) -> None:
    run = await start(db, ESCALATION, now=t0, tenant_id=AT_LIMIT, recipient=AT_LIMIT, idempotency_key=AT_LIMIT)
    assert (run.tenant_id, run.recipient, run.idempotency_key) == (AT_LIMIT, AT_LIMIT, AT_LIMIT)
    assert await route_signal(db, AT_LIMIT, AT_LIMIT, AT_LIMIT, now=t0) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("acme", "user:42", HUGE), "signal name is 100000 characters long"),
        ((HUGE, "user:42", "notification.read"), "signal tenant_id is 100000 characters long"),
        (("acme", HUGE, "notification.read"), "signal recipient is 100000 characters long"),
        (("acme", "user:42", "read\x00"), "signal name contains a NUL character (at index 4)"),
        (("acme", "user:\udcff", "notification.read"), "signal recipient contains a lone surrogate U+DCFF"),
        (("acme", "user:42", " "), "signal name must not be blank"),
    ],
)
async def test_route_signal_refuses_what_no_signal_can_be(
    db: Database, t0: datetime, args: tuple[str, str, str], message: str
) -> None:
    await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest) as refused:
        await route_signal(db, *args, now=t0)
    assert str(refused.value).startswith(message)
    with pytest.raises(InvalidRequest, match=r"^signal data\.a: a string contains a NUL"):
        await route_signal(db, "acme", "user:42", "notification.read", {"a": "\x00"}, now=t0)
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("tenant_id", "reason", "message"),
    [
        ("acme", "r" * (MAX_REASON_LENGTH + 1), f"a cancel reason is {MAX_REASON_LENGTH + 1} characters long"),
        ("acme", "why\x00", "a cancel reason contains a NUL character (at index 3)"),
        ("acme", " ", "a cancel reason must not be blank"),
        (HUGE, "why", "tenant_id is 100000 characters long"),
    ],
)
async def test_cancel_run_refuses_an_impossible_reason_or_tenant(
    db: Database, t0: datetime, tenant_id: str, reason: str, message: str
) -> None:
    run, _ = await escalation_waiting(db, now=t0)
    before = await snapshot(db)
    with pytest.raises(InvalidRequest) as refused:
        await cancel_run(db, run.id, tenant_id=tenant_id, reason=reason, now=t0)
    assert str(refused.value).startswith(message)
    assert await snapshot(db) == before
