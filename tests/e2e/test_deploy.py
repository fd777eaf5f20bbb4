"""The Docker deployment, checked offline: no Docker engine is needed (nor, on CI, available).

docker-compose.yml, the Dockerfile, .dockerignore and deploy/ must be right by construction: these tests
read them as data and cross-check them against the code (settings names, search attributes, the package
build), and build the wheel from exactly the files the Docker build context would hold.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.utils.build import exclude_paths, tar
from jsonschema import Draft202012Validator
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url
from typer.main import get_command

from tocsin.cli.app import app
from tocsin.core import contracts as c
from tocsin.settings import ENV_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

TOCSIN_SERVICES = ("migrate", "worker")
ESSENTIAL = ("TOCSIN_DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TOCSIN_TASK_QUEUE")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """What docker compose makes of a value with no .env and an empty environment: `${X:-d}` -> `d`."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group("default") or "", value).replace("$$", "$")
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each dependency and what is awaited of it (the short list form only waits for the start)."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec["condition"] for name, spec in deps.items()}


def runs_the_cli(argv: list[str]) -> bool:
    """`argv` is the installed `tocsin` script followed by one of its commands."""
    if not argv or argv[0] not in PROJECT["project"]["scripts"]:
        return False
    group: Any = get_command(app)
    for word in argv[1:]:
        group = getattr(group, "commands", {}).get(word)
        if group is None:
            return False
    return not hasattr(group, "commands")


# --- docker-compose.yml -----------------------------------------------------------------------------------


def test_postgres_keeps_its_data_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """`docker compose down` (without -v) and image upgrades keep the runs: the data directory is a named
    volume, not the container's own layer or an anonymous volume."""
    postgres = services["postgres"]
    data_dir = environment(postgres).get("PGDATA", "/var/lib/postgresql/data")  # the postgres image's default
    [source] = [volume.split(":")[0] for volume in postgres["volumes"] if volume.split(":")[1] == data_dir]
    assert source in compose["volumes"]


def test_published_ports_listen_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    # Postgres and Temporal have no authentication in this stack: nothing is reachable from other hosts.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert interpolate(str(port)).startswith("127.0.0.1:"), (name, port)


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = interpolate(service["image"])
        assert ":" in image and not image.endswith(":latest"), (name, image)


def test_migrate_and_worker_are_built_from_the_dockerfile_and_share_one_environment(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose["x-tocsin-env"]
    for name in TOCSIN_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
        assert service["image"] == services["worker"]["image"]
        assert service["environment"] == shared, name
        assert runs_the_cli(service["command"]), (name, service["command"])
    # The anchor, not copies: one place to change the configuration.
    assert COMPOSE.read_text().count("TOCSIN_DATABASE_URL:") == 1


def test_tocsin_services_set_only_variables_tocsin_reads(services: dict[str, dict[str, Any]]) -> None:
    for name in (*TOCSIN_SERVICES, "temporal-setup"):
        for key in environment(services[name]):
            if key.startswith(("TOCSIN_", "TEMPORAL_")):
                assert key in ENV_NAMES, f"{name} sets {key}, which tocsin/settings.py does not read"
    for name in TOCSIN_SERVICES:
        env = environment(services[name])
        for key in ESSENTIAL:
            assert env.get(key), f"{name} does not set {key}"
        # A value the user may override on the host has the same name there: ${TOCSIN_TASK_QUEUE:-tocsin}.
        for key, value in env.items():
            for match in _VARIABLE.finditer(value):
                if match.group("name").startswith(("TOCSIN_", "TEMPORAL_")):
                    assert match.group("name") == key, (key, value)


def test_the_tocsin_environment_is_valid_settings_that_point_at_the_stack(
    services: dict[str, dict[str, Any]],
) -> None:
    env = interpolate(environment(services["worker"]))
    settings = Settings.model_validate(env)
    postgres = interpolate(environment(services["postgres"]))

    url = make_url(str(settings.database_url))
    assert url.drivername == "postgresql"
    assert (url.host, url.port, url.database) == ("postgres", 5432, postgres["POSTGRES_DB"])
    assert (url.username, url.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])

    assert settings.temporal_address == "temporal:7233"
    assert settings.task_queue == c.DEFAULT_TASK_QUEUE
    assert settings.otel_tracing is False
    assert settings.metrics_bind is not None
    host, _, port = settings.metrics_bind.rpartition(":")
    assert host == "0.0.0.0"
    assert port in [str(p) for p in services["worker"]["expose"]]
    assert ("EXPOSE", port) in dockerfile_instructions()


def test_everyone_uses_the_same_namespace(services: dict[str, dict[str, Any]]) -> None:
    # temporal-setup creates the namespace the workers use, and the Web UI opens on it.
    namespace = interpolate(environment(services["worker"]))["TEMPORAL_NAMESPACE"]
    assert interpolate(environment(services["temporal-setup"]))["TEMPORAL_NAMESPACE"] == namespace
    assert interpolate(environment(services["temporal-ui"]))["TEMPORAL_DEFAULT_NAMESPACE"] == namespace


def test_each_service_waits_until_what_it_needs_is_ready(services: dict[str, dict[str, Any]]) -> None:
    def healthchecked(name: str) -> bool:
        check = services[name].get("healthcheck")
        if check is not None:
            return not check.get("disable", False)
        # Services built from the Dockerfile inherit its HEALTHCHECK.
        return "build" in services[name] and any(word == "HEALTHCHECK" for word, _ in dockerfile_instructions())

    ready: dict[str, set[str]] = {name: set() for name in services}
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            if services[dep].get("restart") == "no":
                # A one-shot job is ready when it has finished, successfully.
                assert condition == "service_completed_successfully", (name, dep)
            elif condition == "service_healthy":
                assert healthchecked(dep), f"{name} waits for {dep} to be healthy, which has no health check"
            else:
                assert condition == "service_started", (name, dep, condition)
                continue
            ready[name].add(dep)

    def needs(name: str) -> set[str]:
        return ready[name].union(*(needs(dep) for dep in ready[name]))

    # A worker polls only once tocsin's schema exists, the search attributes are registered and Temporal serves.
    assert {"postgres", "migrate", "temporal", "temporal-setup"} <= needs("worker")
    assert "postgres" in needs("migrate")
    assert "temporal" in needs("temporal-setup")
    assert "postgres" in needs("temporal")


def test_health_checks_probe_what_tocsin_uses(services: dict[str, dict[str, Any]]) -> None:
    url = make_url(interpolate(environment(services["worker"]))["TOCSIN_DATABASE_URL"])
    postgres = " ".join(services["postgres"]["healthcheck"]["test"])
    assert f"-U {url.username}" in postgres and f"-d {url.database}" in postgres
    # Temporal is healthy once its frontend port, the one tocsin dials, accepts connections.
    address = interpolate(environment(services["worker"]))["TEMPORAL_ADDRESS"]
    assert services["temporal"]["healthcheck"]["test"][-1] == address.rpartition(":")[2]
    # The image's health check probes a worker's metrics endpoint, which a one-shot job never serves.
    for name, service in services.items():
        if "build" in service and service.get("restart") == "no":
            assert service.get("healthcheck") == {"disable": True}, name


def test_workers_can_be_scaled_and_restart(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["restart"] == "unless-stopped"
    assert "container_name" not in worker
    assert not worker.get("ports"), "a fixed host port would stop `--scale worker=N`"
    assert int(interpolate(worker["deploy"]["replicas"])) >= 1
    assert services["migrate"]["restart"] == "no"
    assert services["temporal-setup"]["restart"] == "no"
    assert services["temporal-schema"]["restart"] == "no"


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"


def test_temporal_uses_its_own_databases_made_by_the_init_script(services: dict[str, dict[str, Any]]) -> None:
    temporal = interpolate(environment(services["temporal"]))
    schema = interpolate(environment(services["temporal-schema"]))
    postgres = interpolate(environment(services["postgres"]))
    assert temporal["DB"] == "postgres12"
    assert temporal["POSTGRES_SEEDS"] == schema["POSTGRES_SEEDS"] == "postgres"
    assert temporal["POSTGRES_PWD"] == schema["SQL_PASSWORD"] == postgres["TEMPORAL_DB_PASSWORD"]
    # The schema job prepares exactly the databases the server then uses.
    for key in ("POSTGRES_USER", "DBNAME", "VISIBILITY_DBNAME", "DB_PORT"):
        assert temporal[key] == schema[key], key
    script = (ROOT / "deploy/postgres/10-temporal.sh").read_text()
    assert f"CREATE ROLE {temporal['POSTGRES_USER']} LOGIN" in script
    for database in (temporal["DBNAME"], temporal["VISIBILITY_DBNAME"]):
        assert f"CREATE DATABASE {database} OWNER {temporal['POSTGRES_USER']};" in script
    assert "CREATE EXTENSION IF NOT EXISTS btree_gin" in script
    assert "/docker-entrypoint-initdb.d/" in " ".join(services["postgres"]["volumes"])
    subprocess.run(["sh", "-n", str(ROOT / "deploy/postgres/10-temporal.sh")], check=True)


def test_temporal_loads_the_dynamic_config_it_is_given(services: dict[str, dict[str, Any]]) -> None:
    temporal = services["temporal"]
    path = environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    [mount] = [v for v in temporal["volumes"] if "dynamicconfig" in v]
    source, target = mount.split(":")[:2]
    assert target == f"/etc/temporal/{path}"
    config = yaml.safe_load((ROOT / source).read_text())
    # Cancelling a run is a workflow update (SPEC 6).
    assert config["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
    for key, values in config.items():
        assert isinstance(values, list) and all("value" in v for v in values), key


def test_the_setup_job_registers_exactly_tocsins_search_attributes(services: dict[str, dict[str, Any]]) -> None:
    setup = services["temporal-setup"]
    [mount] = setup["volumes"]
    source, target = mount.split(":")[:2]
    assert setup["entrypoint"] == ["/bin/sh", target]
    script = (ROOT / source).read_text()
    [declared] = re.findall(r'^SEARCH_ATTRIBUTES="([^"]*)"', script, re.MULTILINE)
    registered = dict(pair.split(":") for pair in declared.split())
    types = {"KEYWORD": "Keyword", "DATETIME": "Datetime"}
    expected = {key.name: types[key.indexed_value_type.name] for key in c.SEARCH_ATTRIBUTES}
    assert registered == expected
    assert "temporal operator search-attribute create" in script
    subprocess.run(["sh", "-n", str(ROOT / source)], check=True)


def test_the_schema_job_sets_up_and_upgrades_both_temporal_databases(services: dict[str, dict[str, Any]]) -> None:
    job = services["temporal-schema"]
    [mount] = job["volumes"]
    source, target = mount.split(":")[:2]
    assert job["entrypoint"] == ["/bin/sh", target]
    script = (ROOT / source).read_text()
    assert "temporal-sql-tool --plugin postgres12" in script
    assert "setup-schema -v 0.0" in script and "update-schema -d" in script
    for schema in ("temporal", "visibility"):
        assert f':{schema}"' in script, schema
    assert depends_on(services["temporal"]) == {"temporal-schema": "service_completed_successfully"}
    subprocess.run(["sh", "-n", str(ROOT / source)], check=True)


def test_the_stack_runs_on_images_temporal_maintains_at_recorded_tags(services: dict[str, dict[str, Any]]) -> None:
    record = json.loads((ROOT / "deploy/images.json").read_text())
    used: set[str] = set()
    for name, service in services.items():
        if "build" in service:
            continue  # tocsin's own image
        image, _, tag = interpolate(service["image"]).rpartition(":")
        assert tag in record["images"].get(image, []), f"{name}: {image}:{tag} is not in deploy/images.json"
        used.add(image)
    # auto-setup is no longer built by Temporal; the record lists nothing the stack does not use.
    assert "temporalio/auto-setup" not in used
    assert used == set(record["images"])


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    # The Compose Specification's JSON schema, as check-jsonschema vendors it: `docker compose config`'s
    # structural check without a Docker engine.
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(compose)]
    assert errors == []


def test_the_specification_check_catches_a_broken_service(compose: dict[str, Any]) -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    broken = {**compose, "services": {**compose["services"], "worker": {**compose["services"]["worker"], "restart": 3}}}
    assert list(Draft202012Validator(schema).iter_errors(broken))


# --- Dockerfile and .dockerignore -------------------------------------------------------------------------


def test_the_dockerfile_runs_the_worker_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in instructions if word == "ARG" and "=" in rest
    }
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    # Both stages on one base: the virtualenv built in the first one runs on the second one's Python.
    [base] = {args.get(base.strip("${}"), base) for base in bases}
    version = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim\S*", base)
    assert version, base
    assert version.group(1) in SpecifierSet(PROJECT["project"]["requires-python"]), base
    assert runs_the_cli(json.loads([rest for word, rest in instructions if word == "CMD"][-1]))
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    installs = " ".join(rest for word, rest in instructions if word == "RUN" and "pip install" in rest)
    assert "pip install" in installs and "-e " not in installs
    assert not re.search(r"\[[^\]]*dev", installs), "no dev extras in the image"
    assert args.get("TOCSIN_EXTRAS") in ("", "otel")


def ignore_rules() -> list[str]:
    """.dockerignore's rules, read as Docker's Python client reads them (docker.api.build)."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_build_context_holds_the_package_sources_only() -> None:
    # What `docker build .` sends, selected by Docker's own matcher (docker.utils.build, a port of moby's).
    files = set(exclude_paths(str(ROOT), ignore_rules()))
    tops = {name.split("/")[0] for name in files}
    assert {"pyproject.toml", "README.md", "tocsin", "workflows", "activities"} <= tops
    assert not tops & {"tests", ".venv", ".tocsin", ".git", "bench", "docs", "tocsin.egg-info"}
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    # Everything the package build names is let in.
    setuptools = PROJECT["tool"]["setuptools"]
    for package in setuptools["packages"]:
        folder = setuptools["package-dir"].get(package, package.replace(".", "/"))
        assert any(name.startswith(folder + "/") for name in files), package


def test_the_package_builds_from_the_build_context_alone(tmp_path: Path) -> None:
    """What `pip install .` builds in the image, from the build context Docker's client would send.

    setuptools' own `egg_info` and `build` commands, run in-process style without build isolation: no
    download, and no `wheel` package needed.
    """
    context = tmp_path / "context"
    with tar(str(ROOT), exclude=ignore_rules()) as sent, tarfile.open(fileobj=sent) as archive:
        archive.extractall(context, filter="data")
    out = tmp_path / "out"
    (out / "egg").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "egg_info",
            "--egg-base",
            str(out / "egg"),
            "build",
            "--build-base",
            str(out / "build"),
        ],
        cwd=context,
        check=True,
        capture_output=True,
    )
    lib = out / "build" / "lib"
    built = {path.relative_to(lib).as_posix() for path in lib.rglob("*") if path.is_file()}
    assert {
        "tocsin/cli/app.py",
        "tocsin/db/migrations/env.py",
        "tocsin/activities/journey.py",
        "tocsin/workflows/__init__.py",
    } <= built
    assert any(n.startswith("tocsin/db/migrations/versions/") and n.endswith(".py") for n in built)
    # Nothing but tocsin is installed: no top-level workflows, activities or worker (SPEC 14).
    assert {n.split("/")[0] for n in built} == {"tocsin"}
    [entry_points] = (out / "egg").glob("*.egg-info/entry_points.txt")
    assert re.search(r"^tocsin = tocsin\.cli:main$", entry_points.read_text(), re.MULTILINE)
