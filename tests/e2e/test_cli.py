"""The `tocsin` command line, end to end: a real Postgres, the real time-skipping Temporal server, CliRunner.

The tests are plain functions: each command calls asyncio.run, which cannot run inside a running loop. Their
async fixtures run in pytest-asyncio's session loop before the body starts; rows are set up and read with
`on_db`, in a loop of its own. One test runs the installed console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from journeys import ESCALATION, RECIPIENT, TENANT, deliveries, drive, escalation_waiting, start
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from typer.main import get_command
from typer.testing import CliRunner, Result

from tocsin import examples
from tocsin.cli.app import app
from tocsin.cli.devstack import CONNECTION_FILE, DEFAULT_ROOT, DevConnection, advertised
from tocsin.core.definitions import load_definition
from tocsin.core.errors import DefinitionError
from tocsin.core.models import Run
from tocsin.db import Database

T = TypeVar("T")
RUNNER = CliRunner()
READ = "notification.read"
DATA = {"actor": "Ada", "excerpt": "see the draft"}


def on_db(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` against the database at `url`, from the synchronous test body."""

    async def run() -> T:
        async with await Database.connect(url) as db:
            return await work(db)

    return asyncio.run(run())


def host_now() -> datetime:
    return datetime.now(UTC)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cli:
    """Invokes `tocsin` in-process with this test's database (and Temporal) in its environment."""

    database_url: str | None
    temporal_address: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, code: int = 0) -> Result:
        env = {
            "TOCSIN_DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "COLUMNS": "200",  # wide enough that no table wraps a value
            **self.settings,
        }
        result = RUNNER.invoke(app, list(args), env=env)
        # An unhandled exception would be a traceback for a user; only a deliberate exit is allowed.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def error(self, *args: str, code: int) -> str:
        """The single line a failing command prints on stderr."""
        result = self(*args, code=code)
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ")
        return line


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands look for a running `tocsin dev` in ./.tocsin: never the one a developer runs in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(fresh_db_url: str) -> Cli:
    return Cli(fresh_db_url)


@pytest.fixture
def cli_temporal(fresh_db_url: str, time_env: WorkflowEnvironment) -> Cli:
    return Cli(fresh_db_url, time_env.client.service_client.config.target_host)


@pytest.fixture
def definition_file(tmp_path: Path) -> Path:
    path = tmp_path / "mention_escalation.yaml"
    path.write_text(yaml.safe_dump(ESCALATION, sort_keys=False))
    return path


def waiting_run(url: str, *, now: datetime, recipient: str = RECIPIENT) -> Run:
    """An ESCALATION run (created with the engine, no workflow) waiting until `now` + 2 hours."""
    run, _ = on_db(url, lambda db: escalation_waiting(db, now=now, recipient=recipient))
    return run


def command_paths() -> Iterator[list[str]]:
    def walk(group: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(group, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(get_command(app), [])


# --- migrate and definitions ------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_idempotent(cli: Cli, fresh_db_url: str) -> None:
    on_db(fresh_db_url, lambda db: db.downgrade())
    assert cli.error("definitions", "list", code=1) == (
        "error: the database has no tocsin tables: run `tocsin migrate` first"
    )

    first = cli("migrate").stdout
    second = cli("migrate").stdout

    revision = on_db(fresh_db_url, lambda db: db.current_revision())
    assert revision is not None
    assert first == second == f"database schema at revision {revision}\n"
    assert cli.json("definitions", "list") == []


def test_definitions_register_is_idempotent_and_listed(cli: Cli, definition_file: Path) -> None:
    first = cli("definitions", "register", str(definition_file))
    record = cli.json("definitions", "register", str(definition_file))

    assert first.stdout == f"registered mention_escalation version 1 (checksum {record['checksum'][:12]})\n"
    (listed,) = cli.json("definitions", "list")
    assert listed == record
    assert [step["key"] for step in listed["spec"]["steps"]] == ["in_app", "email"]
    assert "mention_escalation" in cli("definitions", "list").stdout


def test_an_invalid_definition_exits_2_listing_every_problem(cli: Cli, tmp_path: Path) -> None:
    broken = {
        "key": "broken",
        "version": 1,
        "steps": [{"key": "a", "channel": " ", "progress": [{"kind": "on_outcome", "outcome": "x", "to_step": "z"}]}],
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(DefinitionError) as expected:
        load_definition(path)
    problems = expected.value.problems
    assert len(problems) >= 3

    result = cli("definitions", "register", str(path), code=2)

    assert result.stderr.splitlines() == [
        f"error: invalid journey definition ({len(problems)} problems):",
        *(f"  {p.location}: {p.message} [{p.code}]" for p in problems),
    ]
    assert "Traceback" not in result.output
    assert cli.json("definitions", "list") == []


def test_changing_a_registered_version_is_a_conflict(cli: Cli, definition_file: Path) -> None:
    cli("definitions", "register", str(definition_file))
    changed = {**ESCALATION, "max_step_activations": 7}
    definition_file.write_text(yaml.safe_dump(changed))

    line = cli.error("definitions", "register", str(definition_file), code=2)

    assert "'mention_escalation' version 1 is already registered with different content" in line
    (listed,) = cli.json("definitions", "list")
    assert listed["spec"]["max_step_activations"] == 50


# --- runs ----------------------------------------------------------------------------------------------


def test_runs_start_starts_the_workflow_and_is_idempotent(cli_temporal: Cli, definition_file: Path) -> None:
    cli_temporal("definitions", "register", str(definition_file))
    args = ("runs", "start", "--workflow", "mention_escalation", "--tenant", TENANT, "--recipient", RECIPIENT)

    run = cli_temporal.json(*args, "--data", json.dumps(DATA), "--idempotency-key", "mention-1")
    again = cli_temporal.json(*args, "--idempotency-key", "mention-1")

    assert again["id"] == run["id"]
    assert {k: run[k] for k in ("tenant_id", "recipient", "data", "state", "current_step", "workflow_started")} == {
        "tenant_id": TENANT,
        "recipient": RECIPIENT,
        "data": DATA,
        "state": "active",
        "current_step": "in_app",
        "workflow_started": True,
    }
    (listed,) = cli_temporal.json("runs", "list", "--tenant", TENANT)["runs"]
    assert listed["id"] == run["id"]
    assert listed["workflow_started"] is True


def test_runs_start_generates_an_idempotency_key(cli_temporal: Cli, definition_file: Path, tmp_path: Path) -> None:
    cli_temporal("definitions", "register", str(definition_file))
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(DATA))
    args = ("runs", "start", "--workflow", "mention_escalation", "--tenant", TENANT, "--recipient", RECIPIENT)

    output = cli_temporal(*args, "--data-file", str(data_file)).stdout
    second = cli_temporal.json(*args, "--data-file", str(data_file))

    key = output.splitlines()[-1].removeprefix("idempotency key: ")
    assert key.startswith("cli-")
    runs = cli_temporal.json("runs", "list", "--tenant", TENANT)["runs"]
    (first,) = [r for r in runs if r["idempotency_key"] == key]
    assert first["id"] in output
    assert second["id"] != first["id"]
    assert second["idempotency_key"] != key
    assert first["data"] == second["data"] == DATA


def test_runs_show_prints_the_audit_trail(cli: Cli, fresh_db_url: str) -> None:
    run = waiting_run(fresh_db_url, now=host_now())

    timeline = cli("runs", "show", str(run.id), "--tenant", TENANT).stdout
    detail = cli.json("runs", "show", str(run.id), "--tenant", TENANT)

    for reason in ("workflow_started", "step_activated", "waiting_for_step_progression"):
        assert reason in timeline
    for fact in (str(run.id), "mention_escalation@1", RECIPIENT, "waiting", "succeeded", "to=email"):
        assert fact in timeline
    assert detail["run"]["id"] == str(run.id)
    assert [t["reason"] for t in detail["transitions"]] == [
        "workflow_started",
        "step_activated",
        "waiting_for_step_progression",
    ]
    assert [(d["step_key"], d["status"]) for d in detail["deliveries"]] == [("in_app", "succeeded")]
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]


def test_runs_list_and_show_fit_80_columns_with_every_id_state_and_reason_whole(cli: Cli, fresh_db_url: str) -> None:
    waiting = waiting_run(fresh_db_url, now=host_now(), recipient="user:ada.lovelace@analytical-engines.example")
    active = on_db(fresh_db_url, lambda db: start(db, ESCALATION, now=host_now()))
    narrow = Cli(fresh_db_url, settings={"COLUMNS": "80"})

    listed = narrow("runs", "list", "--tenant", TENANT).stdout
    shown = narrow("runs", "show", str(waiting.id), "--tenant", TENANT).stdout

    for screen in (listed, shown):
        assert max(len(line) for line in screen.splitlines()) <= 80, screen
    tokens = [set(line.split()) for line in listed.splitlines()]
    for run in (waiting, active):
        assert any({str(run.id), run.state} <= words for words in tokens), listed
        assert any(run.status_reason in words for words in tokens), listed
    detail = cli.json("runs", "show", str(waiting.id), "--tenant", TENANT)
    words = set(shown.split())
    assert {str(waiting.id), "waiting", waiting.status_reason} <= words
    assert {t["reason"] for t in detail["transitions"]} <= words
    assert {d["id"] for d in detail["deliveries"]} | {d["status"] for d in detail["deliveries"]} <= words
    # With room, the same commands print the wide tables (COLUMNS=200 here).
    assert "┃ id " in cli("runs", "list", "--tenant", TENANT).stdout
    assert "┃ id " in cli("runs", "show", str(waiting.id), "--tenant", TENANT).stdout


def test_runs_show_for_another_tenant_is_not_found(cli: Cli, fresh_db_url: str) -> None:
    run = waiting_run(fresh_db_url, now=host_now())

    line = cli.error("runs", "show", str(run.id), "--tenant", "globex", code=2)

    assert line == f"error: run {run.id} not found for tenant 'globex'"


def test_runs_list_filters_by_state(cli: Cli, fresh_db_url: str) -> None:
    waiting = waiting_run(fresh_db_url, now=host_now())
    active = on_db(fresh_db_url, lambda db: start(db, ESCALATION, now=host_now()))

    def ids(*filters: str) -> list[str]:
        return [r["id"] for r in cli.json("runs", "list", "--tenant", TENANT, *filters)["runs"]]

    assert ids("--state", "waiting") == [str(waiting.id)]
    assert ids("--state", "active") == [str(active.id)]
    assert ids("--state", "completed") == []
    assert sorted(ids()) == sorted([str(waiting.id), str(active.id)])
    table = cli("runs", "list", "--tenant", TENANT).stdout
    assert str(waiting.id) in table and str(active.id) in table
    assert cli.json("runs", "list", "--tenant", "globex")["runs"] == []


def test_runs_list_pages_with_a_cursor(cli: Cli, fresh_db_url: str) -> None:
    for _ in range(3):
        on_db(fresh_db_url, lambda db: start(db, ESCALATION, now=host_now()))

    first = cli.json("runs", "list", "--tenant", TENANT, "--limit", "2")
    rest = cli.json("runs", "list", "--tenant", TENANT, "--limit", "2", "--cursor", first["next_cursor"])

    assert len(first["runs"]) == 2 and len(rest["runs"]) == 1
    assert rest["next_cursor"] is None
    assert (
        f"next page: --cursor {first['next_cursor']}" in cli("runs", "list", "--tenant", TENANT, "--limit", "2").stdout
    )


def test_runs_list_with_an_unknown_state_exits_2(cli: Cli) -> None:
    line = cli.error("runs", "list", "--tenant", TENANT, "--state", "sleeping", code=2)

    states = "active, waiting, collecting, completed, stopped"
    assert line == f"error: unknown run state 'sleeping'; expected one of {states}"


def test_runs_cancel_stops_a_waiting_run(cli_temporal: Cli, fresh_db_url: str) -> None:
    run = waiting_run(fresh_db_url, now=host_now())
    args = ("runs", "cancel", str(run.id), "--tenant", TENANT, "--reason", "unsubscribed")

    cancelled = cli_temporal.json(*args)
    again = cli_temporal(*args).stdout

    assert (cancelled["state"], cancelled["status_reason"], cancelled["terminal_reason"]) == (
        "stopped",
        "stopped_by_request",
        "unsubscribed",
    )
    assert again == f"run {run.id} is stopped (stopped_by_request: unsubscribed)\n"
    detail = cli_temporal.json("runs", "show", str(run.id), "--tenant", TENANT)
    assert [t["reason"] for t in detail["transitions"]][-1] == "workflow_cancelled"
    assert len(detail["transitions"]) == 4  # cancelling a finished run wrote nothing
    assert cli_temporal.error(*args[:3], "--tenant", "globex", "--reason", "x", code=2).endswith(
        "not found for tenant 'globex'"
    )


# --- provider feedback -----------------------------------------------------------------------------------


def awaiting_feedback(url: str) -> tuple[Run, uuid.UUID]:
    """An ESCALATION run whose in-app delivery was sent and awaits the provider's report."""

    async def make(db: Database) -> tuple[Run, uuid.UUID]:
        run = await start(db, ESCALATION, now=host_now())
        (delivery,) = await deliveries(db, run.id)
        await drive(db, delivery["id"], "dispatched", now=host_now())
        return run, delivery["id"]

    return on_db(url, make)


def test_deliveries_feedback_records_a_bounce(cli_temporal: Cli, fresh_db_url: str) -> None:
    run, delivery_id = awaiting_feedback(fresh_db_url)
    args = ("deliveries", "feedback", str(delivery_id), "--tenant", TENANT, "--outcome", "bounced")

    line = cli_temporal(*args, "--error", "mailbox unknown").stdout

    assert line == f"delivery {delivery_id} is cancelled (bounced)\n"
    detail = cli_temporal.json("runs", "show", str(run.id), "--tenant", TENANT)
    ((status, reason),) = [(d["status"], d["suppression_reason"]) for d in detail["deliveries"]]
    assert (status, reason) == ("cancelled", "bounced")
    assert [(a["outcome"], a["error"]) for a in detail["attempts"]][-1] == ("bounced", "mailbox unknown")
    # A second report finds the delivery terminal: it is kept as an attempt, the status stays.
    again = cli_temporal.json(*args[:-1], "delivered")
    assert (again["status"], again["suppression_reason"]) == ("cancelled", "bounced")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--outcome", "lost"],
            "error: invalid value for '--outcome': 'lost' is not one of delivered, bounced, "
            "permanent_failure, temporary_failure; see 'tocsin deliveries feedback --help'",
        ),
        (["--outcome", "delivered", "--tenant", "globex"], "error: delivery {id} not found for tenant 'globex'"),
    ],
    ids=["unknown-outcome", "another-tenant"],
)
def test_deliveries_feedback_refuses_bad_input_writing_nothing(
    cli_temporal: Cli, fresh_db_url: str, args: list[str], message: str
) -> None:
    run, delivery_id = awaiting_feedback(fresh_db_url)
    before = cli_temporal.json("runs", "show", str(run.id), "--tenant", TENANT)

    line = cli_temporal.error("deliveries", "feedback", str(delivery_id), "--tenant", TENANT, *args, code=2)

    assert line == message.format(id=delivery_id)
    assert cli_temporal.json("runs", "show", str(run.id), "--tenant", TENANT) == before


def test_deliveries_feedback_needs_a_delivery_uuid(cli: Cli) -> None:
    args = ("deliveries", "feedback", "d-1", "--tenant", TENANT, "--outcome", "delivered")

    assert cli.error(*args, code=2) == "error: invalid delivery id 'd-1': expected a UUID"


# --- signals and the due sweep ----------------------------------------------------------------------------


def test_signal_stops_a_waiting_run(cli_temporal: Cli, fresh_db_url: str) -> None:
    run = waiting_run(fresh_db_url, now=host_now())
    other = waiting_run(fresh_db_url, now=host_now(), recipient="user:7")
    args = ("signal", "--tenant", TENANT, "--recipient", RECIPIENT, "--name", READ)

    stopped = cli_temporal.json(*args, "--data", '{"delivery": "d-1"}')
    again = cli_temporal(*args, "--run", str(run.id)).stdout

    assert stopped == {"stopped": [str(run.id)]}
    assert again == f"signal {READ} recorded; no waiting run listens for it\n"
    shown = cli_temporal.json("runs", "show", str(run.id), "--tenant", TENANT)["run"]
    assert (shown["state"], shown["status_reason"], shown["terminal_reason"]) == (
        "stopped",
        "stopped_by_signal",
        f"signal:{READ}",
    )
    assert cli_temporal.json("runs", "show", str(other.id), "--tenant", TENANT)["run"]["state"] == "waiting"


def test_due_progresses_the_runs_whose_wait_elapsed(cli: Cli, fresh_db_url: str) -> None:
    overdue = waiting_run(fresh_db_url, now=host_now() - timedelta(hours=3))
    not_yet = waiting_run(fresh_db_url, now=host_now() - timedelta(hours=1))

    (progress,) = cli.json("due")
    summary = cli("due").stdout

    assert (progress["kind"], progress["run"]["id"], progress["run"]["current_step"]) == (
        "advanced",
        str(overdue.id),
        "email",
    )
    assert summary == "progressed 0 due run(s)\n"
    assert cli.json("runs", "show", str(not_yet.id), "--tenant", TENANT)["run"]["state"] == "waiting"


# --- bad input and unreachable servers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "{oops"], "error: --data: not valid JSON: Expecting property name enclosed in double quotes"),
        (["--data", "[1, 2]"], "error: --data must be a JSON object, not list"),
        (["--data", "{}", "--data-file", "x.json"], "error: pass --data or --data-file, not both"),
    ],
)
def test_bad_data_exits_2_before_connecting(cli: Cli, extra: list[str], message: str) -> None:
    # No TEMPORAL_ADDRESS: a command that got past its input would fail for that instead.
    args = ("runs", "start", "--workflow", "w", "--tenant", TENANT, "--recipient", RECIPIENT, *extra)

    assert cli.error(*args, code=2).startswith(message)
    assert cli.json("runs", "list", "--tenant", TENANT)["runs"] == []


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "not-a-uuid", "--tenant", TENANT],
        ["runs", "cancel", "not-a-uuid", "--tenant", TENANT, "--reason", "x"],
        ["signal", "--tenant", TENANT, "--recipient", RECIPIENT, "--name", READ, "--run", "not-a-uuid"],
    ],
)
def test_an_invalid_run_id_exits_2(cli: Cli, args: list[str]) -> None:
    assert cli.error(*args, code=2) == "error: invalid run id 'not-a-uuid': expected a UUID"


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["definitions", "list"],
        ["runs", "list", "--tenant", TENANT],
        ["runs", "show", str(uuid.UUID(int=1)), "--tenant", TENANT],
        ["due"],
    ],
)
def test_an_unreachable_database_exits_1_in_one_line(args: list[str]) -> None:
    port = closed_port()

    line = Cli(f"postgresql://tocsin:s3cret@127.0.0.1:{port}/tocsin").error(*args, code=1)

    assert (
        line
        == f"error: cannot reach the database at postgresql://tocsin:***@127.0.0.1:{port}/tocsin (connection refused)"
    )


def test_the_console_script_reports_an_unreachable_database_without_a_traceback() -> None:
    script = Path(sys.executable).parent / "tocsin"
    url = f"postgresql://tocsin@127.0.0.1:{closed_port()}/tocsin"

    done = subprocess.run(
        [str(script), "runs", "list", "--tenant", TENANT, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: cannot reach the database at {url} (connection refused)\n"


def test_an_unreachable_temporal_exits_1_and_writes_nothing(cli: Cli, definition_file: Path) -> None:
    cli("definitions", "register", str(definition_file))
    address = f"127.0.0.1:{closed_port()}"
    args = ("runs", "start", "--workflow", "mention_escalation", "--tenant", TENANT, "--recipient", RECIPIENT)

    line = cli.error(*args, "--temporal-address", address, code=1)

    assert line == f"error: cannot reach Temporal at {address} (connection refused)"
    assert cli.json("runs", "list", "--tenant", TENANT)["runs"] == []


def test_the_worker_exits_1_when_temporal_is_unreachable(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker configures logging for the whole process: put the root logger and the SDK's flags back.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(activity.logger, "activity_info_on_message", activity.logger.activity_info_on_message)
    monkeypatch.setattr(workflow.logger, "workflow_info_on_message", workflow.logger.workflow_info_on_message)
    address = f"127.0.0.1:{closed_port()}"

    assert cli.error("worker", "--temporal-address", address, code=1) == (
        f"error: cannot reach Temporal at {address} (connection refused)"
    )


def test_starting_an_unknown_workflow_exits_2(cli_temporal: Cli) -> None:
    args = ("runs", "start", "--workflow", "nope", "--tenant", TENANT, "--recipient", RECIPIENT)

    assert cli_temporal.error(*args, code=2) == "error: no workflow definition 'nope' is registered"


# --- trigger data (SPEC 11.7): checked against the definition before anything is written ------------------

EXAMPLES = Path(examples.__file__).parent
APPOINTMENT = {
    "clinic": "Northside Clinic",
    "appointment_at": "2027-03-10T08:00:00-05:00",
    "appointment_text": "Wednesday 10 March at 08:00",
    "timezone": "America/New_York",
    "email": "ada@example.com",
}
# No data_schema, and one name: the name a run without data lacks.
WELCOME = {
    "key": "welcome",
    "version": 1,
    "steps": [{"key": "hi", "channel": "in_app", "content": {"title": "{{ name }}"}}],
}


@pytest.fixture
def trigger_definitions(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "welcome.yaml").write_text(yaml.safe_dump(WELCOME))
    return {
        "appointment_reminder": EXAMPLES / "appointment_reminder.yaml",
        "mention_escalation": EXAMPLES / "mention_escalation.yaml",
        "welcome": tmp_path / "welcome.yaml",
    }


@pytest.mark.parametrize(
    ("workflow", "data", "message"),
    [
        # A data_schema: the first failing path, format checks on.
        (
            "appointment_reminder",
            {**APPOINTMENT, "appointment_at": "next tuesday"},
            "error: data.appointment_at: 'next tuesday' is not a 'date-time'",
        ),
        (
            "appointment_reminder",
            {**APPOINTMENT, "phone": "0123"},
            "error: data.phone: '0123' does not match '^\\\\+[1-9][0-9]{6,14}$'",
        ),
        ("appointment_reminder", None, "error: data: 'clinic' is a required property"),
        # No schema: a name a template uses, and where.
        ("mention_escalation", {"excerpt": "see PR 12"}, "error: data is missing 'actor' (steps[0].content.title)"),
        ("welcome", None, "error: data is missing 'name' (steps[0].content.title)"),
    ],
    ids=["not-a-date-time", "pattern", "no-data-with-a-schema", "missing-name", "no-data"],
)
def test_runs_start_with_data_the_definition_refuses_exits_2_writing_nothing(
    cli_temporal: Cli, trigger_definitions: dict[str, Path], workflow: str, data: dict[str, Any] | None, message: str
) -> None:
    cli_temporal("definitions", "register", str(trigger_definitions[workflow]))
    args = ["runs", "start", "--workflow", workflow, "--tenant", TENANT, "--recipient", RECIPIENT]
    args += ["--idempotency-key", "trigger-1"]

    line = cli_temporal.error(*args, *(["--data", json.dumps(data)] if data is not None else []), code=2)

    assert line == message
    assert cli_temporal.json("runs", "list", "--tenant", TENANT)["runs"] == []


def test_the_idempotency_key_of_a_refused_trigger_is_still_free(cli_temporal: Cli) -> None:
    cli_temporal("definitions", "register", str(EXAMPLES / "appointment_reminder.yaml"))
    args = ["runs", "start", "--workflow", "appointment_reminder", "--tenant", TENANT, "--recipient", RECIPIENT]
    args += ["--idempotency-key", "booking-7"]
    cli_temporal.error(*args, "--data", json.dumps({**APPOINTMENT, "appointment_at": "2027-03-10"}), code=2)

    run = cli_temporal.json(*args, "--data", json.dumps(APPOINTMENT))

    assert (run["data"], run["state"], run["workflow_started"]) == (APPOINTMENT, "active", True)


def test_without_a_database_url_the_error_names_the_setting() -> None:
    line = Cli(None).error("runs", "list", "--tenant", TENANT, code=1)

    assert line == "error: TOCSIN_DATABASE_URL is not set (or run `tocsin dev` for a local stack)"


@pytest.mark.parametrize(
    ("settings", "args", "message"),
    [
        (
            {"TOCSIN_DATABASE_URL": "mysql://tocsin@127.0.0.1/tocsin"},
            ["runs", "list", "--tenant", TENANT],
            "error: invalid configuration: TOCSIN_DATABASE_URL: tocsin needs a PostgreSQL URL (postgresql://...), "
            "got 'mysql'",
        ),
        (
            {"TOCSIN_SMTP_PORT": "twenty-five"},
            ["due"],
            "error: invalid configuration: TOCSIN_SMTP_PORT: Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
        (
            {"TOCSIN_LOG_LEVEL": "LOUD"},
            ["worker"],
            # The accepted names are the process's own: a library may add some (uvicorn adds TRACE).
            "error: invalid configuration: TOCSIN_LOG_LEVEL: unknown log level 'LOUD': use one of {levels}",
        ),
    ],
    ids=["database-url", "smtp-port", "log-level"],
)
def test_a_setting_that_cannot_work_is_an_environment_fault(
    fresh_db_url: str, settings: dict[str, str], args: list[str], message: str
) -> None:
    # The same command line works once the environment is fixed: exit 1, not 2.
    levels = logging.getLevelNamesMapping()
    names = ", ".join(sorted(levels, key=lambda name: (levels[name], name)))
    assert Cli(fresh_db_url, settings=settings).error(*args, code=1) == message.format(levels=names)


def test_a_malformed_database_url_argument_is_bad_input(cli: Cli) -> None:
    result = cli("runs", "list", "--tenant", TENANT, "--database-url", "mysql://tocsin@127.0.0.1/tocsin", code=2)

    assert result.stderr == (
        "error: invalid value for '--database-url': tocsin needs a PostgreSQL URL (postgresql://...), got 'mysql'; "
        "see 'tocsin runs list --help'\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["runs", "cancel", str(uuid.UUID(int=1)), "--tenant", TENANT],
            "error: missing option '--reason'; see 'tocsin runs cancel --help'",
        ),
        (["runs", "frob"], "error: no such command 'frob'; see 'tocsin runs --help'"),
        (
            ["runs", "list", "--tenant", TENANT, "--limit", "many"],
            "error: invalid value for '--limit': Input should be a valid integer, unable to parse string as an "
            "integer; see 'tocsin runs list --help'",
        ),
        (["due", "--bogus"], "error: no such option: --bogus; see 'tocsin due --help'"),
    ],
    ids=["missing-option", "unknown-command", "wrong-type", "unknown-option"],
)
def test_a_usage_error_is_one_line_and_exit_2(cli: Cli, args: list[str], message: str) -> None:
    assert cli.error(*args, code=2) == message


def test_a_group_alone_prints_its_help(cli: Cli) -> None:
    result = cli("runs", code=2)

    assert "Usage: tocsin runs" in result.stdout
    assert result.stderr == ""


def beside_a_dev_stack(
    database_url: str, temporal_address: str, pid: int
) -> contextlib.AbstractContextManager[Path | None]:
    """The connection file a `tocsin dev` running in this folder, as process `pid`, keeps in ./.tocsin."""
    DEFAULT_ROOT.mkdir()
    connection = DevConnection(
        database_url=database_url, temporal_address=temporal_address, namespace="default", task_queue="tocsin", pid=pid
    )
    return advertised(DEFAULT_ROOT, connection)


def test_commands_beside_a_running_dev_stack_use_it_and_say_so(fresh_db_url: str) -> None:
    temporal = f"127.0.0.1:{closed_port()}"
    start_args = ("runs", "start", "--workflow", "w", "--tenant", TENANT, "--recipient", RECIPIENT)
    with beside_a_dev_stack(fresh_db_url, temporal, os.getpid()):
        listed = Cli(None)("runs", "list", "--tenant", TENANT, "--json")
        started = Cli(None)(*start_args, code=1)
        explicit = Cli(f"postgresql://tocsin@127.0.0.1:{closed_port()}/tocsin").error("due", code=1)

    assert json.loads(listed.stdout)["runs"] == []
    assert listed.stderr == "using the running `tocsin dev` for the database (.tocsin/connection.json)\n"
    assert started.stderr.splitlines() == [
        "using the running `tocsin dev` for the database and Temporal (.tocsin/connection.json)",
        f"error: cannot reach Temporal at {temporal} (connection refused)",
    ]
    # A database URL in the environment wins, and `due` needs no Temporal: nothing comes from the stack.
    assert explicit.startswith("error: cannot reach the database at ")
    assert not (DEFAULT_ROOT / CONNECTION_FILE).exists()  # removed when the stack stops


def test_the_connection_file_of_a_dev_stack_that_was_killed_is_ignored(fresh_db_url: str) -> None:
    finished = subprocess.Popen(["true"])  # a process that has exited: no process has its pid
    finished.wait()

    with beside_a_dev_stack(fresh_db_url, "127.0.0.1:7233", finished.pid):
        line = Cli(None).error("runs", "list", "--tenant", TENANT, code=1)

    assert line == "error: TOCSIN_DATABASE_URL is not set (or run `tocsin dev` for a local stack)"


def test_the_database_url_option_overrides_the_environment(fresh_db_url: str) -> None:
    broken = Cli(f"postgresql://tocsin@127.0.0.1:{closed_port()}/tocsin")

    assert broken.json("runs", "list", "--tenant", TENANT, "--database-url", fresh_db_url)["runs"] == []


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda path: " ".join(path) or "tocsin")
def test_every_command_has_help(path: list[str]) -> None:
    result = Cli(None)(*path, "--help")

    assert "Usage:" in result.stdout
