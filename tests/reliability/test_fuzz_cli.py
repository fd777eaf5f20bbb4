"""Fuzzing the CLI's arguments (issue 8): `runs start` and `signal` with arbitrary text in every argument.

Each call either gets past its input and then meets the environment (Temporal is unreachable here: exit 1,
one line naming it) or is refused as bad input (exit 2, one line). Never another exit code, never a
traceback, and never a row written.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tocsin.cli.app import app
from tocsin.db import Database

RUNNER = CliRunner()

# Any text a shell could pass, lone surrogates (undecodable bytes) and NUL included, kept short but not tiny.
ARG = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
JSONISH = st.one_of(
    ARG,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ARG,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ARG, inner, max_size=4),
        max_leaves=12,
    ).map(lambda value: repr(value).replace("'", '"').replace("None", "null")),
)


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def rows_in(url: str) -> int:
    async def count() -> int:
        async with await Database.connect(url) as db, db.transaction() as conn:
            result = await conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM tocsin.workflow_runs) + (SELECT count(*) FROM tocsin.signals)"
            )
            return int(result.scalar_one())

    return asyncio.run(count())


@pytest.fixture
def environment(fresh_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # never a developer's running `tocsin dev` in the checkout
    return {"TOCSIN_DATABASE_URL": fresh_db_url, "TEMPORAL_ADDRESS": closed_address(), "COLUMNS": "200"}


def check_one_line_outcome(args: list[str], env: dict[str, str]) -> None:
    result = RUNNER.invoke(app, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert result.exit_code in (1, 2), (args, result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
    if result.exit_code == 1:  # got past its input: the unreachable Temporal is the only fault left
        assert lines[0].startswith("error: cannot reach Temporal"), (args, lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    workflow=ARG,
    tenant=ARG,
    recipient=ARG,
    key=ARG,
    version=st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40).map(str), ARG),
    data=st.one_of(st.none(), JSONISH),
)
def test_runs_start_with_any_arguments_is_one_line_and_writes_nothing(
    environment: dict[str, str],
    workflow: str,
    tenant: str,
    recipient: str,
    key: str,
    version: str | None,
    data: str | None,
) -> None:
    args = ["runs", "start", "--workflow", workflow, "--tenant", tenant, "--recipient", recipient]
    args += ["--idempotency-key", key]
    if version is not None:
        args += ["--version", version]
    if data is not None:
        args += ["--data", data]
    check_one_line_outcome(args, environment)
    assert rows_in(environment["TOCSIN_DATABASE_URL"]) == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=ARG, recipient=ARG, name=ARG, data=st.one_of(st.none(), JSONISH))
def test_signal_with_any_arguments_is_one_line_and_writes_nothing(
    environment: dict[str, str], tenant: str, recipient: str, name: str, data: str | None
) -> None:
    args = ["signal", "--tenant", tenant, "--recipient", recipient, "--name", name]
    if data is not None:
        args += ["--data", data]
    check_one_line_outcome(args, environment)
    assert rows_in(environment["TOCSIN_DATABASE_URL"]) == 0
