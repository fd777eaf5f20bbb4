"""tocsin.testing used as a user would: a project of its own (tests/testing/project, plus the README's example
test and the example journey) copied to a temporary folder and run by a pytest subprocess. The plugin comes
from the installed tocsin's entry point; nothing new is installed and nothing of this suite is on the path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tocsin.testing.postgres import DATABASE_URL_VARIABLE

ROOT = Path(__file__).parents[2]
PROJECT = Path(__file__).parent / "project"
README = (ROOT / "README.md").read_text()


def readme_example() -> str:
    """The example test in the README's "Testing your journeys" section."""
    section = README.split("## Testing your journeys", 1)[1]
    (code,) = re.findall(r"```python\n(# tests/test_mention\.py.*?)```", section, re.DOTALL)
    return code


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "acme"
    shutil.copytree(PROJECT, root)
    (root / "journeys").mkdir()
    shutil.copy(ROOT / "tocsin" / "examples" / "mention_escalation.yaml", root / "journeys")
    (root / "tests" / "test_mention.py").write_text(readme_example())
    return root


def run_pytest(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "console_output_style=classic", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def user_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the test database setting (CI sets it), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_VARIABLE}
    return env | extra


def test_a_passing_and_a_failing_journey_test_in_a_project_of_its_own(project: Path) -> None:
    result = run_pytest(
        project, "-s", "tests/test_mention.py", "tests/test_trial.py", "tests/test_stuck.py", env=user_environment()
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    failed = r"^FAILED tests/test_stuck\.py::test_a_provider_slower_than_the_test"
    assert re.search(failed, output, re.MULTILINE), output
    assert re.search(r"\b1 failed, 2 passed\b", output), output
    # The failure says where the run stands, not just that time ran out.
    assert re.search(
        r"JourneyDidNotFinish: run \S+ \(reported v1\) did not finish within 3s of wall time: state active, "
        r"step 'email'",
        output,
    ), output
    for line in (
        "deliveries:",
        "  email (email): dispatched, 1 attempt(s)",
        "last transitions (of 2):",
        "  1. workflow_started: - -> active\n",
        "  2. step_activated: active -> active at step 'email'",
        "a dispatched delivery: its send is still in flight, or its provider's report is awaited",
    ):
        assert line in output, output
    assert "30-day journey:" in output and "from start_run to its result" in output


async def test_the_server_at_tocsin_test_database_url_is_used(project: Path, tocsin_postgres_url: str) -> None:
    # The SQLAlchemy spelling, which the plugin takes as well as postgresql://.
    url = make_url(tocsin_postgres_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    env = user_environment(**{DATABASE_URL_VARIABLE: url})

    result = run_pytest(project, "-q", "-s", "tests/test_server.py", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    conn = await asyncpg.connect(tocsin_postgres_url)
    try:
        assert f"data_directory={await conn.fetchval('SHOW data_directory')}" in result.stdout.splitlines()
    finally:
        await conn.close()
