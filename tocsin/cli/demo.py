"""`tocsin demo`: the dev stack plus the mention journey, shown live, ending with its audit trail.

Two runs of the same journey start together: Ada ignores the in-app notification and gets the email when
the wait elapses; Grace reads it during the wait, through the inbox's HTTP API (as her feed page would), so
her run stops and no email is sent. Each recipient's feed page is printed with a token.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tocsin.cli.devstack import DevStack, DevStackError, describe, dev_stack
from tocsin.cli.render import run_timeline
from tocsin.client import Tocsin
from tocsin.core.models import RunDetail
from tocsin.examples import example
from tocsin.settings import Settings

if TYPE_CHECKING:
    from tocsin.http.serve import InboxServer

TENANT = "demo"


def demo_definition(wait_seconds: int) -> dict[str, Any]:
    """The bundled mention journey, with the two-hour wait shortened so the demo ends in under a minute."""
    definition = example("mention_escalation", key=f"mention_escalation_demo_{wait_seconds}s")
    wait = definition["steps"][0]["progress"][1]
    del wait["delay"]
    wait["delay_seconds"] = wait_seconds
    return definition


def live_table(details: dict[str, RunDetail]) -> Table:
    table = Table(title="tocsin demo: mention escalation", expand=False)
    for column in ("recipient", "state", "step", "waiting for", "deliveries"):
        table.add_column(column)
    now = datetime.now(UTC)
    for who, detail in details.items():
        run = detail.run
        if run.state == "waiting" and run.due_at is not None:
            remaining = max(0, int((run.due_at - now).total_seconds()))
            waiting = f"{', '.join(run.pending_signals) or 'time'} or {remaining}s"
        else:
            waiting = run.terminal_reason or run.status_reason
        deliveries = ", ".join(f"{d.step_key}:{d.status}" for d in detail.deliveries)
        table.add_row(who, run.state, run.current_step, waiting, deliveries)
    return table


async def read_over_http(inbox: InboxServer, delivery_id: uuid.UUID, console: Console) -> None:
    """Grace reads her notification as her feed page does: a POST to the inbox API the stack serves."""
    url = f"{inbox.url}v1/inbox/{delivery_id}/read"
    token = inbox.token(tenant_id=TENANT, recipient="user:grace")
    async with httpx.AsyncClient() as http:
        try:
            response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise DevStackError(f"the inbox at {inbox.url} did not take Grace's read: {exc}") from exc
    if response.status_code != 200:
        raise DevStackError(f"the inbox refused Grace's read: HTTP {response.status_code}")
    console.print(f"grace read her notification: POST {url} -> {response.status_code}", soft_wrap=True)


async def watch(
    tocsin: Tocsin, inbox: InboxServer, runs: dict[str, uuid.UUID], console: Console, read_after: float
) -> dict[str, RunDetail]:
    """Redraw the runs until all have finished; Grace reads her notification `read_after` seconds into the wait."""
    details: dict[str, RunDetail] = {}
    read = False
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            for who, run_id in runs.items():
                details[who] = await tocsin.get_run(run_id, tenant_id=TENANT)
            grace = details["grace"]
            landed = grace.deliveries[0].terminal_at
            if not read and grace.run.state == "waiting" and landed is not None:
                if (datetime.now(UTC) - landed).total_seconds() >= read_after:
                    await read_over_http(inbox, grace.deliveries[0].id, console)
                    read = True
            live.update(live_table(details))
            if all(d.run.finished for d in details.values()):
                break
            await asyncio.sleep(0.25)
    console.print()
    return details


async def run_demo(
    settings: Settings,
    *,
    root: Path,
    temporal_port: int,
    ui_port: int,
    inbox_port: int,
    wait_seconds: int,
    keep: bool,
) -> None:
    from tocsin.temporal.worker import build_worker, channels_from_settings, until_signalled

    console = Console()
    async with dev_stack(
        settings, root=root, temporal_port=temporal_port, ui_port=ui_port, inbox_port=inbox_port
    ) as stack:
        console.print(describe(stack), soft_wrap=True)
        worker = build_worker(
            stack.client, stack.db, task_queue=settings.task_queue, channels=channels_from_settings(settings)
        )
        async with worker:
            tocsin = Tocsin(stack.db, stack.client, task_queue=settings.task_queue)
            details = await play(tocsin, stack, console, wait_seconds)
            if keep:
                console.print("The stack keeps running with its worker. In another shell:")
                console.print(stack.export_line(), soft_wrap=True)
                console.print(f"tocsin runs show {details['ada'].run.id} --tenant {TENANT}", soft_wrap=True)
                console.print("Press Ctrl-C to stop.")
                await until_signalled()
    console.print(f"demo finished: {', '.join(f'{w} {d.run.state}' for w, d in details.items())}")


async def play(tocsin: Tocsin, stack: DevStack, console: Console, wait_seconds: int) -> dict[str, RunDetail]:
    assert stack.inbox is not None  # run_demo asks dev_stack for it
    definition = await tocsin.register_definition(demo_definition(wait_seconds))
    batch = uuid.uuid4().hex[:8]
    runs = {}
    for who, actor in (("ada", "Grace"), ("grace", "Ada")):
        run = await tocsin.start_run(
            workflow_key=definition.key,
            tenant_id=TENANT,
            recipient=f"user:{who}",
            data={"actor": actor, "excerpt": "can you review the rollout plan?"},
            idempotency_key=f"demo-{batch}-{who}",
        )
        runs[who] = run.id
    console.print(f"Started two runs of [bold]{definition.key}[/] (wait: {wait_seconds}s).")
    for who in runs:
        # Whole on one line (soft wrap), as it is meant to be copied into a browser.
        console.print(f"Feed of user:{who}: {stack.inbox.feed_url(tenant_id=TENANT, recipient=f'user:{who}')}",
                      soft_wrap=True, markup=False, highlight=False)  # fmt: skip
    try:
        async with asyncio.timeout(wait_seconds + 120):
            details = await watch(tocsin, stack.inbox, runs, console, read_after=wait_seconds / 2)
    except TimeoutError:
        raise DevStackError("the demo journeys did not finish in time; see .tocsin/temporal.log") from None
    for who, detail in details.items():
        console.rule(f"audit trail: {who}")
        link = stack.run_url(detail.run.id)
        console.print(
            Group(run_timeline(detail, console.width), f"Web UI: {link}" if link else f"run id: {detail.run.id}")
        )
    return details
