"""Bad input to `runs start` and `signal` exits 2 with one line, before anything connects, and writes nothing.

Before, a NaN, a NUL or a lone surrogate in --data, a non-UTF-8 argument or a version beyond int4 reached
Postgres and came back as exit 1, "database error", as if the environment were at fault.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from journeys import ESCALATION
from peers import free_port
from typer.testing import CliRunner

from tocsin import Tocsin
from tocsin.cli.app import app
from tocsin.cli.devstack import temporal_dev_server
from tocsin.core.errors import ConfigurationError
from tocsin.core.limits import MAX_DEPTH, MAX_IDENTIFIER_LENGTH
from tocsin.db import Database
from tocsin.engine.reads import list_runs
from tocsin.engine.registry import register_definition

RUNNER = CliRunner()
START = ["runs", "start", "--workflow", "w", "--tenant", "acme", "--recipient", "user:1"]
SIGNAL = ["signal", "--tenant", "acme", "--recipient", "user:1", "--name", "notification.read"]
LONG = "k" * (MAX_IDENTIFIER_LENGTH + 1)


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands look for a running `tocsin dev` in ./.tocsin: never the one a developer runs in the checkout."""
    monkeypatch.chdir(tmp_path)


def environment(database_url: str) -> Mapping[str, str]:
    # Temporal is unreachable: a command that got past its input would fail (exit 1) for that instead.
    return {"TOCSIN_DATABASE_URL": database_url, "TEMPORAL_ADDRESS": closed_address(), "COLUMNS": "200"}


def runs_in(url: str) -> int:
    async def count() -> int:
        async with await Database.connect(url) as db:
            return len((await list_runs(db, tenant_id="acme")).runs)

    return asyncio.run(count())


CASES = [
    ([*START, "--data", '{"a": NaN}'], "error: --data: not valid JSON: NaN is not a JSON number"),
    ([*START, "--data", '{"a": 1e999}'], "error: --data: not valid JSON: 1e999 is too large for a JSON number"),
    ([*START, "--data", '{"a": "x\\u0000"}'], "error: --data.a: a string contains a NUL character (at index 1)"),
    ([*START, "--data", '{"a": "\\ud800"}'], "error: --data.a: a string contains a lone surrogate U+D800 (at index 0)"),
    ([*START, "--data", '{"a": 1, "a": 2}'], "error: --data: not valid JSON: duplicate key 'a'"),
    ([*START, "--data", "[" * (MAX_DEPTH + 1)], f"error: --data: nested deeper than {MAX_DEPTH} levels"),
    ([*START, "--data", "[1]"], "error: --data must be a JSON object, not list"),
    ([*START, "--version", str(2**31)], "error: version must be a whole number from 1 to 2147483647, not 2147483648"),
    ([*START, "--version", "0"], "error: version must be a whole number from 1 to 2147483647, not 0"),
    ([*START, "--idempotency-key", LONG], f"error: idempotency_key is {len(LONG)} characters long; at most 255"),
    ([*START, "--tenant", LONG], f"error: tenant_id is {len(LONG)} characters long; at most 255 are allowed"),
    ([*START, "--recipient", " "], "error: recipient must not be blank"),
    ([*START, "--workflow", "w\x00"], "error: workflow_key contains a NUL character (at index 1)"),
    ([*SIGNAL, "--name", LONG], f"error: signal name is {len(LONG)} characters long; at most 255 are allowed"),
    ([*SIGNAL, "--recipient", "user:\udcff"], "error: signal recipient contains a lone surrogate U+DCFF (at index 5)"),
    ([*SIGNAL, "--data", '{"a": NaN}'], "error: --data: not valid JSON: NaN is not a JSON number"),
    ([*SIGNAL, "--data", '{"a": ["\\u0000"]}'], "error: --data.a[0]: a string contains a NUL character (at index 0)"),
]


@pytest.mark.parametrize(("args", "message"), CASES)
def test_bad_input_exits_2_in_one_line_and_writes_nothing(fresh_db_url: str, args: list[str], message: str) -> None:
    result = RUNNER.invoke(app, args, env=environment(fresh_db_url))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)
    assert runs_in(fresh_db_url) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": NaN}', "not valid JSON: NaN is not a JSON number"),
        (b'{"a": "\xff"}', "cannot read the file: not UTF-8 (invalid start byte at byte 7)"),
        (b'{"a": "\\u0000"}', "a string contains a NUL character (at index 0)"),
        (b"[" * 10_000, f"nested deeper than {MAX_DEPTH} levels"),
    ],
)
def test_a_bad_data_file_exits_2(fresh_db_url: str, tmp_path: Path, content: bytes, message: str) -> None:
    data_file = tmp_path / "data.json"
    data_file.write_bytes(content)
    result = RUNNER.invoke(app, [*START, "--data-file", str(data_file)], env=environment(fresh_db_url))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: --data-file {data_file}") and message in line
    assert runs_in(fresh_db_url) == 0


def test_a_non_utf8_argument_exits_2_from_the_console_script(fresh_db_url: str) -> None:
    """What a shell passes: bytes. Python decodes the invalid ones to lone surrogates (surrogateescape)."""
    tocsin = Path(sys.executable).parent / "tocsin"
    args = [os.fsencode(str(tocsin)), *(arg.encode() for arg in START[:-1]), b"user:\xff", b"--data", b'{"a":"\xfe"}']
    env = {**os.environ, **environment(fresh_db_url)}
    done = subprocess.run(args, env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    assert done.stderr == b"error: --data.a: a string contains a lone surrogate U+DCFE (at index 0)\n"
    assert runs_in(fresh_db_url) == 0


# --- an environment that cannot run the journey: refused before the run is committed -------------------


@pytest.fixture(scope="module")
def dev_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server (which, unlike the time-skipping one, knows which namespaces exist)."""

    async def serve(ready: asyncio.Future[str], stop: asyncio.Event) -> None:
        root = tmp_path_factory.mktemp("temporal")
        async with temporal_dev_server(root, port=free_port(), ui_port=free_port(), namespace="default") as address:
            ready.set_result(address)
            await stop.wait()

    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    server = loop.create_task(serve(ready, stop))
    try:
        yield loop.run_until_complete(ready)
    finally:
        loop.call_soon_threadsafe(stop.set)
        loop.run_until_complete(server)
        loop.close()


def registered(url: str) -> None:
    async def register() -> None:
        async with await Database.connect(url) as db:
            await register_definition(db, ESCALATION, now=datetime.now(UTC))

    asyncio.run(register())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"TEMPORAL_NAMESPACE": "no-such-namespace"},
            "error: the Temporal namespace 'no-such-namespace' does not",
        ),
        ({"TOCSIN_TASK_QUEUE": ""}, "error: invalid configuration: TOCSIN_TASK_QUEUE:"),
        ({"TOCSIN_TASK_QUEUE": "  "}, "error: invalid configuration: TOCSIN_TASK_QUEUE: must not be blank"),
    ],
)
def test_runs_start_in_an_environment_that_cannot_run_it_writes_nothing(
    fresh_db_url: str, dev_temporal: str, settings: dict[str, str], message: str
) -> None:
    """Before, the run was committed (workflow_started = false), then the start failed: exit 1 either way,
    but now nothing is left behind for the reconcile sweep to start in the wrong place."""
    registered(fresh_db_url)
    args = ["runs", "start", "--workflow", ESCALATION["key"], "--tenant", "acme", "--recipient", "user:1"]
    env = {**environment(fresh_db_url), "TEMPORAL_ADDRESS": dev_temporal, **settings}
    result = RUNNER.invoke(app, args, env=env)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)
    assert runs_in(fresh_db_url) == 0


def test_tocsin_connect_checks_the_namespace_and_task_queue(fresh_db_url: str, dev_temporal: str) -> None:
    async def attempts() -> None:
        with pytest.raises(ConfigurationError, match="namespace 'elsewhere' does not exist"):
            await Tocsin.connect(database_url=fresh_db_url, temporal_address=dev_temporal, namespace="elsewhere")
        with pytest.raises(ConfigurationError, match="task queue must not be blank"):
            await Tocsin.connect(database_url=fresh_db_url, temporal_address=dev_temporal, task_queue=" ")
        async with await Tocsin.connect(database_url=fresh_db_url, temporal_address=dev_temporal) as tocsin:
            assert tocsin.temporal.namespace == "default"

    asyncio.run(attempts())
