"""Server-Sent Events for the inbox, fed by Postgres LISTEN/NOTIFY (SPEC 12.2), never by polling.

The `deliveries_notify_inbox` trigger notifies `tocsin_inbox` when an in-app item lands ('item') or its
receipts or archive stamp change ('counts'). One LISTEN connection per application fans the notifications
out to the streams of their recipient; it is opened by the first stream and closed with the last, so the
app needs no lifespan events.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from tocsin.db import Database
from tocsin.http import feed
from tocsin.http.tokens import Principal

log = logging.getLogger("tocsin.http")

CHANNEL = "tocsin_inbox"
Key = tuple[str, str]
# None on a queue: the LISTEN connection was lost; the stream ends and the browser's EventSource reconnects.
Note = dict[str, Any] | None


class InboxHub:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: asyncpg.Connection | None = None
        self._queues: dict[Key, set[asyncio.Queue[Note]]] = {}
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def subscribe(self, who: Principal) -> AsyncIterator[asyncio.Queue[Note]]:
        """A queue of this recipient's notifications; LISTEN is in effect when this returns."""
        key = (who.tenant_id, who.recipient)
        queue: asyncio.Queue[Note] = asyncio.Queue()
        async with self._lock:
            if self._conn is None:
                self._conn = await self._listen()
            self._queues.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            async with self._lock:
                self._queues[key].discard(queue)
                if not self._queues[key]:
                    del self._queues[key]
                if not self._queues and self._conn is not None:
                    conn, self._conn = self._conn, None
                    conn.remove_termination_listener(self._lost)
                    await conn.close()

    async def _listen(self) -> asyncpg.Connection:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(url)
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._lost)
        return conn

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        note = json.loads(payload)
        for queue in self._queues.get((note["tenant_id"], note["recipient"]), ()):
            queue.put_nowait(note)

    def _lost(self, conn: object) -> None:
        log.warning("the inbox LISTEN connection was lost; open streams end and reconnect")
        self._conn = None
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(None)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def events(hub: InboxHub, who: Principal, *, heartbeat: float) -> AsyncIterator[str]:
    """The stream: the current counts first, then `item` per new item and `counts` when they change."""
    async with hub.subscribe(who) as queue:
        async with hub.db.transaction() as conn:
            last = await feed.counts(conn, who)
        yield sse("counts", last.model_dump())
        while True:
            try:
                notes = [await asyncio.wait_for(queue.get(), heartbeat)]
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            while not queue.empty():  # a burst (read-all) becomes one counts query and one event
                notes.append(queue.get_nowait())
            if None in notes:
                return
            async with hub.db.transaction() as conn:
                now = await feed.counts(conn, who)
            items = [note["id"] for note in notes if note is not None and note["kind"] == "item"]
            for item_id in items:
                yield sse("item", {"id": item_id, **now.model_dump()})
            if not items and now != last:
                yield sse("counts", now.model_dump())
            last = now
