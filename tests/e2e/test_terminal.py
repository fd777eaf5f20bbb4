"""The CLI on a real terminal: tmux at 80x24 runs `tocsin` in a shell, the test reads the screen back.

tmux is a test requirement (.ci/run installs it): without it these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from journeys import ESCALATION, TENANT, escalation_waiting, start

from tocsin.core.models import Run
from tocsin.db import Database
from tocsin.testing import eventually

WIDTH, HEIGHT = 80, 24
BIN = str(Path(sys.executable).parent)


@dataclass
class Terminal:
    """One tmux session of its own (its own server socket), running bash in a WIDTH x HEIGHT window."""

    socket: Path

    async def tmux(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "tmux", "-S", str(self.socket), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        return out.decode()

    async def run(self, command: str) -> list[str]:
        """Type `command` at a cleared screen and return every line it printed (scrolled-off ones too), as
        the terminal shows them: a value that did not fit would be cut or carried over to the next line."""
        marker = f"run-{uuid.uuid4().hex[:8]}"
        await self.tmux("send-keys", "-t", "cli", "clear; tmux clear-history", "Enter")
        # The shell expands the markers: the typed line (wrapped at 80 columns itself) never equals them.
        typed = f'M={marker}; echo "$M-start"; {command}; echo "$M-$?"'
        await self.tmux("send-keys", "-t", "cli", typed, "Enter")

        async def finished() -> list[str] | None:
            lines = (await self.tmux("capture-pane", "-p", "-S", "-", "-t", "cli")).splitlines()
            return lines if f"{marker}-0" in lines else None

        lines = await eventually(finished, within=60, what=f"`{command}` to finish")
        return lines[lines.index(f"{marker}-start") + 1 : lines.index(f"{marker}-0")]


@pytest.fixture
async def terminal(tmp_path: Path, fresh_db_url: str) -> AsyncIterator[Terminal]:
    assert shutil.which("tmux"), "tmux is needed: apt-get install -y tmux (.ci/run installs it)"
    term = Terminal(tmp_path / "tmux.sock")
    # Through `env`, not tmux's -e: tmux gives the shell its own PATH.
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "TOCSIN_DATABASE_URL": fresh_db_url, "TERM": "xterm-256color"}
    await term.tmux(
        "new-session", "-d", "-s", "cli", "-x", str(WIDTH), "-y", str(HEIGHT), "-c", str(tmp_path),
        "env", "-u", "COLUMNS", "-u", "LINES", *(f"{name}={value}" for name, value in env.items()),
        "bash", "--norc", "--noprofile",
    )  # fmt: skip
    await term.tmux("set-option", "-t", "cli", "history-limit", "5000")
    await term.tmux("send-keys", "-t", "cli", "PS1='$ '", "Enter")
    try:
        yield term
    finally:
        await term.tmux("kill-server")


def whole_on_one_line(lines: list[str], *values: str) -> None:
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is not whole on any line:\n" + "\n".join(lines)


def nothing_cut(lines: list[str]) -> None:
    assert not any("…" in line for line in lines), "\n".join(lines)
    assert all(len(line) <= WIDTH for line in lines)


async def test_runs_list_and_runs_show_at_80_columns_show_whole_ids_and_states(
    terminal: Terminal, db: Database
) -> None:
    now = datetime.now(UTC)
    waiting, delivery = await escalation_waiting(db, now=now, recipient="user:ada.lovelace@analytical-engines.example")
    active: Run = await start(db, ESCALATION, now=now)

    listed = await terminal.run(f"tocsin runs list --tenant {TENANT}")
    shown = await terminal.run(f"tocsin runs show {waiting.id} --tenant {TENANT}")

    nothing_cut(listed)
    for run in (waiting, active):
        whole_on_one_line(listed, f"{run.id}  {run.state}", run.status_reason)
    nothing_cut(shown)
    whole_on_one_line(shown, str(waiting.id), waiting.state, waiting.status_reason, str(delivery.id), delivery.status)
    for reason in ("workflow_started", "step_activated", "waiting_for_step_progression"):
        whole_on_one_line(shown, reason)
