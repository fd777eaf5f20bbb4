"""The feed page in a real headless Chromium (Playwright driving Debian's `chromium`, never a downloaded one):
the count, an item arriving live, a click that reads it, and the run waiting on `notification.read` stopping."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from inboxes import bearer, deliver
from journeys import ESCALATION, later, rows, run_row
from playwright.async_api import Browser, async_playwright, expect

from tocsin.db import Database
from tocsin.db import tables as t
from tocsin.engine.runs import progress_run
from tocsin.testing import eventually

# The browser's behaviour does not depend on the Postgres server: CI runs this once.
pytestmark = pytest.mark.slow
# How long the page may take to show what it must (Playwright's default is 5 s): a bound for a loaded CI
# machine, not a measurement; bench/sse_latency.py measures the latency.
expect.set_options(timeout=30_000)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """Debian's chromium; the test fails (never skips) without it: `.ci/run` installs it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "no chromium found: apt-get install -y chromium"
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def test_the_feed_shows_the_count_a_live_item_and_reading_it_stops_its_run(
    served: str, browser: Browser, db: Database, t0: datetime
) -> None:
    await deliver(db, now=t0, excerpt="an older note")
    token = bearer()["Authorization"].removeprefix("Bearer ")
    page = await browser.new_page(viewport={"width": 375, "height": 740})  # a phone
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    await page.goto(f"{served}/#token={token}")
    badge = page.locator("#unread")
    await expect(badge).to_have_text("1")
    await expect(page.locator("#items li")).to_have_count(1)

    # A run whose in-app step lands now and then waits two hours for notification.read (SPEC 3's example).
    item_id = await deliver(db, now=later(t0, seconds=1), spec=ESCALATION, excerpt="review please")
    (delivery,) = await rows(db, t.deliveries, t.deliveries.c.id == item_id)
    assert (await progress_run(db, delivery["run_id"], now=later(t0, seconds=1))).kind == "waiting"

    fresh = page.locator(f'#items li[data-id="{item_id}"]')
    await expect(fresh).to_contain_text("review please")  # arrived over the stream, no reload
    await expect(badge).to_have_text("2")
    await expect(page.locator("#items li").first).to_have_attribute("data-id", str(item_id))  # newest on top

    await fresh.click()
    await expect(badge).to_have_text("1")
    await expect(fresh).to_have_class("read")

    async def stopped() -> dict[str, Any] | None:
        run = await run_row(db, delivery["run_id"])
        return run if run["state"] == "stopped" else None

    run = await eventually(stopped, what="the run to stop")
    assert run["terminal_reason"] == "signal:notification.read"
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    assert errors == []
