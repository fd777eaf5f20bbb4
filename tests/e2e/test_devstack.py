"""`tocsin dev` and `tocsin demo` as a user runs them: subprocesses on an embedded Postgres and a dev server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from peers import free_port

from tocsin import Tocsin
from tocsin.http import issue_token
from tocsin.testing import eventually

TOCSIN = str(Path(sys.executable).parent / "tocsin")
ONE_STEP = {"key": "hello", "version": 1, "steps": [{"key": "note", "channel": "in_app", "content": {"title": "hi"}}]}
# What `tocsin dev` prints of its inbox: the row of its addresses, and how to make a feed page's token.
INBOX_ROW = re.compile(r"^\s*Inbox\s+(http://127\.0\.0\.1:(\d+)/) ")
FEED_HINT = re.compile(r"^Feed page of a recipient: \S+#token=TOKEN, TOKEN from tocsin\.http\.issue_token\('([^']+)',")


def token_payload(token: str) -> dict[str, object]:
    """The claims of an inbox token (`<payload>.<signature>`, base64url JSON): read, not verified."""
    payload = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def stack_env(columns: int = 300) -> dict[str, str]:
    """The user's environment with no database or Temporal configured: the embedded stack starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOCSIN_DATABASE_URL", "TEMPORAL_ADDRESS")}
    return env | {"COLUMNS": str(columns), "NO_COLOR": "1"}


async def run_cli(*args: str, within: float = 120, cwd: Path | None = None) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `tocsin *args`."""
    process = await asyncio.create_subprocess_exec(
        TOCSIN, *args, env=stack_env(), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str], Path]]:
    """`tocsin dev` started in `tmp_path` (its data in the default ./.tocsin) in an 80-column terminal."""
    process = await asyncio.create_subprocess_exec(
        TOCSIN, "dev", "--temporal-port", str(free_port()), "--ui-port", str(free_port()),
        "--inbox-port", str(free_port()),
        env=stack_env(columns=80), cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        yield process, lines, tmp_path
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader


async def test_tocsin_dev_runs_a_journey_and_stops_cleanly_on_ctrl_c(
    dev: tuple[asyncio.subprocess.Process, list[str], Path],
) -> None:
    process, lines, folder = dev
    root = folder / ".tocsin"

    async def exported() -> list[str] | None:
        return [line for line in lines if line.startswith("export ")] or None

    (export,) = await eventually(exported, within=90, what="`tocsin dev` to print its addresses")
    # One line, wider than the terminal: copied as it is into a shell, it gives the same settings.
    assert len(export.rstrip("\n")) > 80
    env = dict(token.split("=", 1) for token in shlex.split(export.removeprefix("export ")))
    database_url, temporal_address = env["TOCSIN_DATABASE_URL"], env["TEMPORAL_ADDRESS"]
    assert any(line.split() == ["Postgres", database_url] for line in lines), lines  # whole, not boxed
    assert any(line.split()[:2] == ["Web", "UI"] for line in lines), lines
    # Commands started in the same folder find the stack by themselves.
    code, out, err = await run_cli("runs", "list", "--tenant", "acme", "--json", cwd=folder)
    assert (code, json.loads(out)["runs"]) == (0, []), err
    assert err == "using the running `tocsin dev` for the database (.tocsin/connection.json)\n"

    async with await Tocsin.connect(database_url=database_url, temporal_address=temporal_address) as tocsin:
        await tocsin.register_definition(ONE_STEP)
        run = await tocsin.start_run(
            workflow_key="hello", tenant_id="acme", recipient="user:1", idempotency_key="dev-stack-1"
        )

        async def completed() -> bool:
            return (await tocsin.get_run(run.id, tenant_id="acme")).run.state == "completed"

        await eventually(completed, within=60, what="the journey to complete under `tocsin dev`")

        # The inbox app on its own port: the feed page without a token, the API with one signed by the secret
        # `tocsin dev` printed; the journey's in-app note is the item.
        [inbox_url] = [m.group(1) for line in lines if (m := INBOX_ROW.match(line))]
        [secret] = [m.group(1) for line in lines if (m := FEED_HINT.match(line))]
        token = issue_token(secret, tenant_id="acme", recipient="user:1")
        async with httpx.AsyncClient(base_url=inbox_url) as http:
            page = await http.get("/")
            assert (page.status_code, page.headers["content-type"].split(";")[0]) == (200, "text/html")
            assert (await http.get("/v1/inbox")).status_code == 401
            inbox = (await http.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})).json()
        assert [item["content"] for item in inbox["items"]] == [{"title": "hi"}]
        assert inbox["unread_count"] == 1

        code, out, err = await run_cli("runs", "show", str(run.id), "--tenant", "acme", "--json", cwd=folder)
        assert (code, json.loads(out)["run"]["state"]) == (0, "completed"), err
        signal_args = ("signal", "--tenant", "acme", "--recipient", "user:1", "--name", "notification.read")
        code, out, err = await run_cli(*signal_args, cwd=folder)
        assert (code, out) == (0, "signal notification.read recorded; no waiting run listens for it\n"), err
        assert err == "using the running `tocsin dev` for the database and Temporal (.tocsin/connection.json)\n"

    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert not (root / "pgdata" / "postmaster.pid").exists()  # the embedded Postgres was stopped
    assert (root / "temporal.db").exists()  # Temporal's data is kept for the next run
    assert not (root / "connection.json").exists()  # a stopped stack is no longer offered to other commands
    code, _, err = await run_cli("runs", "list", "--tenant", "acme", cwd=folder)
    assert (code, err) == (1, "error: TOCSIN_DATABASE_URL is not set (or run `tocsin dev` for a local stack)\n")


async def test_tocsin_dev_with_its_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run_cli("dev", "--root", str(tmp_path / "stack"), "--temporal-port", str(port))
    assert code == 1  # the environment's fault: nothing in the command is wrong
    assert err.splitlines()[-1] == (
        f"error: port {port} (Temporal) is in use: is another `tocsin dev` running? Stop it or pass --temporal-port"
    )
    assert "Traceback" not in err


async def test_tocsin_dev_with_its_inbox_port_taken_says_so_in_one_line_before_starting_anything(
    tmp_path: Path,
) -> None:
    root = tmp_path / "stack"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_cli(
            "dev", "--root", str(root), "--temporal-port", str(free_port()), "--ui-port", str(free_port()),
            "--inbox-port", str(port),
        )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"error: port {port} (inbox) is in use: is another `tocsin dev` running? Stop it or pass --inbox-port"
    ]
    assert not root.exists()  # refused before Postgres or Temporal were started


async def test_tocsin_dev_with_a_broken_temporal_database_says_why_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "stack"
    root.mkdir()
    (root / "temporal.db").write_text("not a database")
    ports = ("--temporal-port", str(free_port()), "--ui-port", str(free_port()))

    code, out, err = await run_cli("dev", "--root", str(root), *ports)

    assert code == 1, out + err
    (line,) = err.splitlines()
    assert line.startswith(f"error: the Temporal dev server exited with code 1 ({root / 'temporal.log'}): ")
    assert line.endswith("file is not a database (26)")  # the server's own last word, from its log


async def test_tocsin_demo_finishes_both_journeys(tmp_path: Path) -> None:
    code, out, _ = await run_cli(
        "demo", "--wait", "4", "--root", str(tmp_path / "stack"),
        "--temporal-port", str(free_port()), "--ui-port", str(free_port()), "--inbox-port", str(free_port()),
    )  # fmt: skip
    assert code == 0, out
    assert "demo finished: ada completed, grace stopped" in out
    # A feed page for each recipient, its token for that recipient of the demo tenant, whole on one line.
    feeds = dict(re.findall(r"^Feed of (user:\w+): (http://127\.0\.0\.1:\d+/#token=\S+)$", out, re.MULTILINE))
    assert sorted(feeds) == ["user:ada", "user:grace"]
    for recipient, url in feeds.items():
        claims = token_payload(url.split("#token=", 1)[1])
        assert (claims["tenant"], claims["recipient"]) == ("demo", recipient)
    # Grace's read went to the served inbox API, and that is what stopped her run.
    [read] = re.findall(r"^grace read her notification: POST (\S+) -> 200$", out, re.MULTILINE)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/inbox/[0-9a-f-]{36}/read", read)
    assert read.startswith(feeds["user:grace"].split("#")[0])
    grace_trail = out.split("audit trail: grace", 1)[1]
    assert "signal:notification.read" in grace_trail
    assert re.search(r"Web UI: http://127\.0\.0\.1:\d+/namespaces/default/workflows/tocsin-run-", out)
