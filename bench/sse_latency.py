"""SSE latency: from an in-app send to its `event: item` on a live inbox stream (SPEC 12.2), over real HTTP.

    .venv/bin/python -m bench.sse_latency [--database-url URL] [--items N] [--idle-streams K]

The inbox app runs in uvicorn on a free port (`tocsin.http.serve.serve_inbox`, as `tocsin dev` serves it);
an httpx client holds `GET /v1/inbox/stream` open for one recipient, as the feed page's EventSource does,
while K more streams of other recipients stay open beside it (the one LISTEN connection fans out to all).
Each item is a run of a one-step in-app journey, created up front; the measured operation is its send,
`dispatch_delivery` (lock, the in_app adapter, the commit whose trigger NOTIFYs), until the client has
read the item's event: Postgres NOTIFY -> the app's listener -> its counts query -> the SSE response ->
the client's parser. Baseline, interleaved with it one for one: the same send for a recipient nobody
watches (its NOTIFY still reaches the listener, which drops it). Also shown: from the send's return (its
commit done) to the event read, which is what the stream itself adds.

Everything runs in this one process and event loop (database driver, server and client), as a feed page
on the same host would not: read the figures as an upper bound of what tocsin adds, not of a network.
The default (100 items, 10 idle streams) takes a few seconds; it prints tables and a one-line summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.common import Stats, bench_database, loadavg, machine_facts, ms, ratio, table
from tocsin.channels import InAppChannel
from tocsin.db import Database, store
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run
from tocsin.http.serve import InboxServer, serve_inbox

TENANT = "bench"
WATCHED = "user:watched"
UNWATCHED = "user:unwatched"
NOTE: dict[str, Any] = {
    "key": "bench_note",
    "version": 1,
    "steps": [{"key": "note", "channel": "in_app", "content": {"title": "{{ actor }} wrote"}}],
}
EVENT_TIMEOUT = 10.0  # seconds: an event later than this is a broken stream, not a slow one
CHANNELS = {"in_app": InAppChannel()}


def now() -> datetime:
    return datetime.now(UTC)


async def pending_deliveries(db: Database, recipient: str, count: int) -> list[uuid.UUID]:
    """`count` runs of the one-step journey, each with its in-app delivery planned and not yet sent."""
    ids = []
    for _ in range(count):
        run, _ = await create_run(
            db, tenant_id=TENANT, workflow_key=NOTE["key"], recipient=recipient,
            idempotency_key=str(uuid.uuid4()), data={"actor": "Ada"}, now=now(),
        )  # fmt: skip
        async with db.transaction() as conn:
            delivery = await store.step_delivery(conn, run.id, 1)
        assert delivery is not None
        ids.append(delivery.id)
    return ids


@asynccontextmanager
async def stream(inbox: InboxServer, recipient: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """The recipient's stream read in the background: each `item` event's data lands on the queue on arrival,
    stamped with the moment it was parsed (`_arrived`, perf_counter)."""
    items: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    ready = asyncio.Event()
    token = inbox.token(tenant_id=TENANT, recipient=recipient)

    async def read(response: httpx.Response) -> None:
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if name == "item":
                    items.put_nowait({**json.loads(line.removeprefix("data: ")), "_arrived": time.perf_counter()})
                ready.set()  # the first `counts` event: the stream is listening
                name = None

    async with httpx.AsyncClient(base_url=inbox.url, timeout=None) as http:
        async with http.stream("GET", "v1/inbox/stream", params={"token": token}) as response:
            response.raise_for_status()
            reader = asyncio.create_task(read(response))
            try:
                await asyncio.wait_for(ready.wait(), EVENT_TIMEOUT)
                yield items
            finally:
                reader.cancel()


async def arrival(items: asyncio.Queue[dict[str, Any]], delivery_id: uuid.UUID) -> float:
    while True:
        event = await asyncio.wait_for(items.get(), EVENT_TIMEOUT)
        if event["id"] == str(delivery_id):
            arrived: float = event["_arrived"]
            return arrived


async def measure(db: Database, inbox: InboxServer, *, items: int, idle_streams: int) -> dict[str, Any]:
    watched = await pending_deliveries(db, WATCHED, items)
    unwatched = await pending_deliveries(db, UNWATCHED, items)
    send_alone: list[float] = []
    to_event: list[float] = []
    after_return: list[float] = []
    async with AsyncExitStack() as streams:
        events = await streams.enter_async_context(stream(inbox, WATCHED))
        for i in range(idle_streams):
            await streams.enter_async_context(stream(inbox, f"user:idle-{i}"))
        for mine, other in zip(watched, unwatched, strict=True):
            began = time.perf_counter()
            await dispatch_delivery(db, other, channels=CHANNELS, now=now)
            send_alone.append(time.perf_counter() - began)

            began = time.perf_counter()
            await dispatch_delivery(db, mine, channels=CHANNELS, now=now)
            returned = time.perf_counter()
            arrived = await arrival(events, mine)
            to_event.append(arrived - began)
            after_return.append(arrived - returned)
    return {
        "send_alone": Stats(tuple(send_alone)),
        "to_event": Stats(tuple(to_event)),
        "after_return": Stats(tuple(after_return)),
        "before_return": sum(1 for x in after_return if x < 0),
    }


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.database_url) as target, await Database.connect(target.url) as db:
        print(f"# sse_latency: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.sse_latency', *sys.argv[1:]])}")
        print(f"# items={args.items}, idle streams beside the watched one={args.idle_streams}")
        await register_definition(db, NOTE, now=now())
        async with serve_inbox(db, port=0) as inbox:
            # A few sends first: connections, prepared statements and the listener warm up uncounted.
            await measure(db, inbox, items=5, idle_streams=0)
            result = await measure(db, inbox, items=args.items, idle_streams=args.idle_streams)
    alone: Stats = result["send_alone"]
    to_event: Stats = result["to_event"]
    after: Stats = result["after_return"]
    print("\n## From an in-app send to its event on the stream (one send at a time, interleaved)\n")
    rows = [
        [name, str(s.n), ms(s.mean), ms(s.p50), ms(s.p95), ms(max(s.samples)), ratio(s.mean, alone.mean)]
        for name, s in (
            ("send alone (baseline: dispatch_delivery, nobody watching)", alone),
            ("send -> `event: item` read by the client", to_event),
            ("send returned -> event read", after),
        )
    ]
    print(table(["measure", "n", "mean ms", "p50 ms", "p95 ms", "max ms", "x baseline"], rows))
    print(f"\nEvents read before dispatch_delivery had returned: {result['before_return']} of {after.n}.")
    print(f"# load average at the end: {loadavg()}")
    print(
        f"\nsse_latency: {to_event.n} items, send -> event p50 {ms(to_event.p50)} ms, p95 {ms(to_event.p95)} ms "
        f"(the send alone p50 {ms(alone.p50)} ms; the event read p50 {ms(after.p50)} ms after the send returned; "
        f"{args.idle_streams} idle streams beside)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--items", type=int, default=100, help="items sent to the watched stream (default 100)")
    parser.add_argument(
        "--idle-streams", type=int, default=10, help="streams of other recipients held open beside it (default 10)"
    )
    args = parser.parse_args(argv)
    if args.items < 1 or args.idle_streams < 0:
        parser.error("--items must be at least 1 and --idle-streams at least 0")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
