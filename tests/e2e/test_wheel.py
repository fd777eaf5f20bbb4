"""The installed wheel, not the editable checkout (SPEC 14, "Installed names").

The wheel is built offline (no build isolation, no index) from a copy of the package sources and installed,
without its dependencies, into a throwaway virtualenv. The dependencies come from this test's own
environment through a .pth line, which appends that site-packages after the venv's own: tocsin itself can
only come from the wheel (a .pth line does not run the .pth files of the folder it adds, so the editable
install's finder stays out). Beside it, an application laid out as the Temporal samples are, with its own
`workflows` and `activities` packages and a `worker.py`, runs a journey through the installed tocsin.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[2]
# What the package is built from (the same list .dockerignore lets into the image's build context).
SOURCES = ("pyproject.toml", "README.md", "tocsin", "workflows", "activities")
APPLICATION_NAMES = {"workflows", "activities", "worker"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            # symlinks=True: tocsin/workflows -> ../workflows stays a link, as in the checkout.
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("tocsin-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the installed wheel; returns its python."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    [site_packages] = (home / "lib").glob("python3*/site-packages")
    (site_packages / "test-dependencies.pth").write_text("".join(f"{path}\n" for path in site.getsitepackages()))
    return python


def run_python(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def installed_files(python: Path) -> list[str]:
    """The RECORD of the installed distribution: every file the wheel put into site-packages."""
    probe = "import importlib.metadata as m, json; print(json.dumps([str(f) for f in m.distribution('tocsin').files]))"
    result = run_python(python, "-c", probe, cwd=python.parent)
    files: list[str] = json.loads(result.stdout)
    return files


def test_the_wheel_installs_the_tocsin_package_and_nothing_beside_it(venv: Path) -> None:
    files = installed_files(venv)
    tops = {name.split("/")[0] for name in files}
    assert not tops & APPLICATION_NAMES
    assert {top for top in tops if not top.endswith(".dist-info") and top != ".."} == {"tocsin"}
    assert {
        "tocsin/workflows/__init__.py",
        "tocsin/activities/__init__.py",
        "tocsin/db/migrations/env.py",
        "tocsin/py.typed",
    } <= set(files)
    assert any(name.startswith("tocsin/db/migrations/versions/") for name in files)
    assert any(name.startswith("tocsin/examples/") and name.endswith(".yaml") for name in files)
    # The console script is in the RECORD (bin/tocsin, outside site-packages) and runs from the wheel.
    assert any(name.endswith("bin/tocsin") for name in files)
    subprocess.run([str(venv.parent / "tocsin"), "--help"], check=True, capture_output=True)


WORKER = '''
"""An application's worker, beside its own `workflows` and `activities` packages."""

import asyncio
import json
import sys

import activities
import workflows

import tocsin
import tocsin.activities
import tocsin.workflows
from tocsin import Tocsin, build_worker
from tocsin.channels import InAppChannel
from tocsin.core.models import workflow_id

HELLO = {"key": "hello", "version": 1, "steps": [{"key": "hi", "channel": "in_app", "content": {"title": "Hi"}}]}


async def main(database_url: str, temporal_address: str, report: str) -> None:
    async with await Tocsin.connect(
        database_url=database_url, temporal_address=temporal_address, task_queue="app"
    ) as app:
        async with build_worker(app.temporal, app.db, task_queue="app", channels={"in_app": InAppChannel()}):
            await app.register_definition(HELLO)
            run = await app.start_run(workflow_key="hello", tenant_id="app", recipient="user:1", idempotency_key="1")
            await app.temporal.get_workflow_handle(workflow_id(run.id)).result()
            detail = await app.get_run(run.id, tenant_id="app")
    modules = {
        name: sys.modules[name].__file__
        for name in ("workflows", "activities", "tocsin", "tocsin.workflows", "tocsin.activities")
    }
    editable = sorted(name for name in sys.modules if "editable" in name)
    statuses = [delivery.status for delivery in detail.deliveries]
    facts = {"modules": modules, "editable": editable, "state": detail.run.state, "deliveries": statuses}
    with open(report, "w") as out:
        json.dump(facts, out)


asyncio.run(main(*sys.argv[1:]))
'''


def test_an_application_with_its_own_workflows_package_runs_a_journey_on_the_wheel(
    venv: Path, tmp_path: Path, fresh_db_url: str, time_env: WorkflowEnvironment
) -> None:
    app = tmp_path / "app"
    for package in ("workflows", "activities"):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text(f'"""The application\'s own {package}."""\n')
    (app / "worker.py").write_text(WORKER)

    address = time_env.client.service_client.config.target_host
    # The report goes to a file: the SDK's core logs to stdout.
    report_file = tmp_path / "report.json"
    run_python(venv, "worker.py", fresh_db_url, address, str(report_file), cwd=app)

    report = json.loads(report_file.read_text())
    assert (report["state"], report["deliveries"]) == ("completed", ["succeeded"])
    modules = {name: Path(path) for name, path in report["modules"].items()}
    # The application's names are the application's...
    assert modules["workflows"] == app / "workflows" / "__init__.py"
    assert modules["activities"] == app / "activities" / "__init__.py"
    # ...and tocsin, with its workflows and activities, is the wheel's, not the checkout's.
    site_packages = modules["tocsin"].parents[1]
    assert site_packages.is_relative_to(venv.parents[1])
    assert modules["tocsin.workflows"] == site_packages / "tocsin" / "workflows" / "__init__.py"
    assert modules["tocsin.activities"] == site_packages / "tocsin" / "activities" / "__init__.py"
    assert report["editable"] == []
