"""Regenerate docs/web-ui.png and docs/web-ui-run.png: journey runs in the Temporal Web UI.

    .venv/bin/python docs/screenshot.py          # needs Debian's chromium (apt-get install chromium)

It starts the dev stack under a temporary folder on spare ports, runs a worker, starts three runs of the
mention journey (one read during its wait, two left waiting) and photographs the workflow list, filtered by
tocsin's search attributes, and one waiting run's page: its summary and details, the named activities and
the timer of its wait.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from playwright.async_api import ViewportSize, async_playwright, expect

from tocsin.cli.demo import demo_definition
from tocsin.cli.devstack import dev_stack
from tocsin.client import Tocsin
from tocsin.core.models import workflow_id
from tocsin.settings import Settings
from tocsin.temporal.worker import build_worker, channels_from_settings

LIST = Path(__file__).parent / "web-ui.png"
RUN = Path(__file__).parent / "web-ui-run.png"
UI_PORT, TEMPORAL_PORT = 28233, 27233


async def main() -> None:
    settings = Settings(database_url=None, temporal_address=None)
    with tempfile.TemporaryDirectory(prefix="tocsin-shot-") as tmp:
        async with dev_stack(settings, root=Path(tmp), temporal_port=TEMPORAL_PORT, ui_port=UI_PORT) as stack:
            worker = build_worker(stack.client, stack.db, channels=channels_from_settings(settings))
            async with worker:
                tocsin = Tocsin(stack.db, stack.client)
                definition = await tocsin.register_definition(demo_definition(7200))
                runs = []
                for who in ("ada", "grace", "alan"):
                    runs.append(
                        await tocsin.start_run(
                            workflow_key=definition.key,
                            tenant_id="acme",
                            recipient=f"user:{who}",
                            data={"actor": "Linus", "excerpt": "review please"},
                            idempotency_key=f"shot-{who}",
                        )
                    )
                await asyncio.sleep(3)
                inbox = await tocsin.inbox(tenant_id="acme", recipient="user:grace")
                await tocsin.mark_read(inbox[0].id, tenant_id="acme")
                await asyncio.sleep(3)
                query = urllib.parse.quote('TocsinTenant = "acme"')
                base = f"{stack.ui_url}/namespaces/default/workflows"
                waiting = await stack.client.get_workflow_handle(workflow_id(runs[0].id)).describe()
                await photograph(
                    [
                        (f"{base}?query={query}", LIST, {"width": 1400, "height": 560}, "tocsin-run-"),
                        (
                            f"{base}/{waiting.id}/{waiting.run_id}/timeline",
                            RUN,
                            {"width": 1800, "height": 1000},
                            "wait PT2H",
                        ),
                    ]
                )
    print(f"wrote {LIST} and {RUN}")


async def photograph(pages: list[tuple[str, Path, ViewportSize, str]]) -> None:
    """Each page once `text` shows on it (the UI renders after its API calls), in Debian's chromium."""
    browser_path = shutil.which("chromium")
    if browser_path is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=browser_path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        for url, out, viewport, text in pages:
            page = await browser.new_page(viewport=viewport)
            await page.goto(url)
            await expect(page.get_by_text(text).first).to_be_visible(timeout=30_000)
            await page.wait_for_timeout(1500)  # the rest of the page settles (a picture, not a test)
            await page.screenshot(path=str(out))
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
