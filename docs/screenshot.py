"""Regenerate docs/web-ui.png: a few journey runs in the Temporal Web UI, filtered by tocsin's attributes.

    .venv/bin/python docs/screenshot.py          # needs Debian's chromium (apt-get install chromium)

It starts the dev stack under a temporary folder on spare ports, runs a worker, starts three runs of the
mention journey (one read during its wait, two left waiting) and photographs the workflow list.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from tocsin.client import Tocsin
from tocsin.cli.demo import demo_definition
from tocsin.cli.devstack import dev_stack
from tocsin.settings import Settings
from tocsin.temporal.worker import build_worker, channels_from_settings

OUT = Path(__file__).parent / "web-ui.png"
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
                url = f"{stack.ui_url}/namespaces/default/workflows?query={query}"
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp}/chrome", "--window-size=1400,700",
                        "--virtual-time-budget=20000", f"--screenshot={OUT}", url,
                    ],
                    check=True,
                    timeout=120,
                )  # fmt: skip
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
