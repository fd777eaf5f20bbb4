"""`python worker.py` as a process of its own, run until it has created its task queue's reconcile schedule."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from tocsin.temporal.worker import reconcile_schedule_id
from tocsin.testing import eventually

WORKER = Path(__file__).parents[1] / "worker.py"


async def run_worker_until_its_schedule_exists(
    client: Client, env: Mapping[str, str], task_queue: str, *, what: str
) -> tuple[int | None, str]:
    """Start the worker, wait (through `client`) for its schedule, stop it with SIGTERM: (exit code, output)."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), env=dict(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        schedule = client.get_schedule_handle(reconcile_schedule_id(task_queue))

        async def described() -> bool:
            try:
                await schedule.describe()
            except RPCError:
                return False
            return True

        await eventually(described, within=30, what=what)
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), 30)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    return worker.returncode, output.decode()
