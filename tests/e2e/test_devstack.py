"""`tocsin dev` and `tocsin demo` as a user runs them: subprocesses on an embedded Postgres and a dev server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from journey_harness import eventually
from peers import free_port

from tocsin import Tocsin

TOCSIN = str(Path(sys.executable).parent / "tocsin")
ONE_STEP = {"key": "hello", "version": 1, "steps": [{"key": "note", "channel": "in_app", "content": {"title": "hi"}}]}


def stack_env() -> dict[str, str]:
    """The user's environment with no database or Temporal configured: the embedded stack starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_DATABASE_URL", "TEMPORAL_ADDRESS")}
    return env | {"COLUMNS": "300", "NO_COLOR": "1"}


async def run_cli(*args: str, within: float = 120) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        TOCSIN, *args, env=stack_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), within)
    return process.returncode or 0, out.decode()


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str], Path]]:
    root = tmp_path / "stack"
    process = await asyncio.create_subprocess_exec(
        TOCSIN, "dev", "--root", str(root), "--temporal-port", str(free_port()), "--ui-port", str(free_port()),
        env=stack_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        yield process, lines, root
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader


async def test_tocsin_dev_runs_a_journey_and_stops_cleanly_on_ctrl_c(
    dev: tuple[asyncio.subprocess.Process, list[str], Path],
) -> None:
    process, lines, root = dev

    async def exported() -> re.Match[str] | None:
        return re.search(r"export TOCSIN_DATABASE_URL='([^']+)' TEMPORAL_ADDRESS=(\S+)", "".join(lines))

    found = await eventually(exported, within=90, what="`tocsin dev` to print its addresses")
    database_url, temporal_address = found.group(1), found.group(2)
    assert "Web UI" in "".join(lines)

    async with await Tocsin.connect(database_url=database_url, temporal_address=temporal_address) as tocsin:
        await tocsin.register_definition(ONE_STEP)
        run = await tocsin.start_run(
            workflow_key="hello", tenant_id="acme", recipient="user:1", idempotency_key="dev-stack-1"
        )

        async def completed() -> bool:
            return (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "completed"

        await eventually(completed, within=60, what="the journey to complete under `tocsin dev`")

    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert not (root / "pgdata" / "postmaster.pid").exists()  # the embedded Postgres was stopped
    assert (root / "temporal.db").exists()  # Temporal's data is kept for the next run


async def test_tocsin_dev_with_its_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = await run_cli("dev", "--root", str(tmp_path / "stack"), "--temporal-port", str(port))
    assert code == 1  # the environment's fault: nothing in the command is wrong
    assert out.splitlines()[-1] == (
        f"error: port {port} (Temporal) is in use: is another `tocsin dev` running? Stop it or pass --temporal-port"
    )
    assert "Traceback" not in out


async def test_tocsin_demo_finishes_both_journeys(tmp_path: Path) -> None:
    code, out = await run_cli(
        "demo", "--wait", "4", "--root", str(tmp_path / "stack"),
        "--temporal-port", str(free_port()), "--ui-port", str(free_port()),
    )  # fmt: skip
    assert code == 0, out
    assert "demo finished: ada completed, grace stopped" in out
    assert "signal:notification.read" in out
    assert re.search(r"Web UI: http://127\.0\.0\.1:\d+/namespaces/default/workflows/tocsin-run-", out)
