"""Configuration that cannot work is refused at once, in one line naming the setting; libpq-style database
URLs (`?sslmode=disable`, `application_name`, `connect_timeout`, `options`) work as libpq tools read them."""

from __future__ import annotations

import inspect

import pytest
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum, Worker
from typer.testing import CliRunner

from tocsin.cli.app import app
from tocsin.db import Database
from tocsin.db.database import URL_PARAMETERS, connect_options
from tocsin.settings import ENV_NAMES, Settings, WorkerTuning

RUNNER = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: none of the host's TOCSIN_* / TEMPORAL_* variables."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


# (variable, value, what the one line says)
REFUSED = [
    ("TEMPORAL_ADDRESS", "http://[", "expected host:port without a scheme, got 'http://['"),
    ("TEMPORAL_ADDRESS", "[::1", "expected host:port, got '[::1'"),
    ("TEMPORAL_ADDRESS", "localhost", "expected host:port, got 'localhost'"),
    ("TEMPORAL_ADDRESS", "localhost:99999", "expected host:port, got 'localhost:99999'"),
    ("TEMPORAL_NAMESPACE", " ", "must not be blank"),
    ("TOCSIN_TASK_QUEUE", "", "at least 1 character"),
    ("TOCSIN_TASK_QUEUE", "   ", "must not be blank"),
    ("TOCSIN_METRICS_BIND", "garbage", "expected host:port, got 'garbage'"),
    ("TOCSIN_METRICS_BIND", "localhost:9464", "expected IP:port such as 0.0.0.0:9464, got 'localhost:9464'"),
    ("TOCSIN_RECONCILE_GRACE_SECONDS", "-5", "greater than or equal to 0"),
    ("TOCSIN_RECONCILE_GRACE_SECONDS", "soon", "valid integer"),
    ("TOCSIN_SMTP_PORT", "0", "greater than or equal to 1"),
    ("TOCSIN_SMTP_PORT", "70000", "less than or equal to 65535"),
    ("TOCSIN_SMTP_SENDER", " ", "must not be blank"),
    ("TOCSIN_SMTP_START_TLS", "perhaps", "valid boolean"),
    ("TOCSIN_OTEL_TRACING", "perhaps", "valid boolean"),
    ("TOCSIN_WEBHOOK_URL", "ftp://hooks.example", "expected an http:// or https:// URL"),
    ("TOCSIN_WEBHOOK_URL", "http://[", "expected an http:// or https:// URL"),
    ("TOCSIN_LOG_LEVEL", "loud", "unknown log level 'loud'"),
    ("TOCSIN_DATABASE_URL", "mysql://db/x", "tocsin needs a PostgreSQL URL"),
    ("TOCSIN_DATABASE_URL", "::", "not a database URL"),
    ("TOCSIN_DATABASE_URL", "postgresql://db/x?sslmode=disable&pool=3", "unsupported database URL parameter: pool"),
    ("TOCSIN_DATABASE_URL", "postgresql://db/x?sslmode=maybe", "sslmode must be one of disable, allow, prefer"),
    ("TOCSIN_DATABASE_URL", "postgresql://db/x?connect_timeout=0", "connect_timeout must be a positive number"),
    ("TOCSIN_DATABASE_URL", "postgresql://db/x?connect_timeout=soon", "connect_timeout must be a number"),
    ("TOCSIN_DATABASE_URL", "postgresql://db/x?sslmode=disable&sslmode=require", "sslmode is given more than once"),
    ("TOCSIN_WORKER_MAX_CACHED_WORKFLOWS", "-1", "greater than or equal to 0"),
    ("TOCSIN_WORKER_MAX_CACHED_WORKFLOWS", "lots", "valid integer"),
    ("TOCSIN_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "1", "greater than or equal to 2"),
    ("TOCSIN_WORKER_MAX_CONCURRENT_ACTIVITIES", "0", "greater than or equal to 1"),
    ("TOCSIN_WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES", "0", "greater than or equal to 1"),
    ("TOCSIN_WORKER_WORKFLOW_TASK_POLLERS", "1", "expected a number of pollers (at least 2) or 'auto', got '1'"),
    ("TOCSIN_WORKER_ACTIVITY_TASK_POLLERS", "some", "expected a number of pollers (at least 1) or 'auto', got 'some'"),
]


@pytest.mark.parametrize(("name", "value", "said"), REFUSED)
def test_a_setting_that_cannot_work_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    result = RUNNER.invoke(app, ["runs", "list", "--tenant", "acme"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"error: invalid configuration: {name}: ")
    assert said in line


def test_every_setting_is_covered() -> None:
    """A new setting needs its refusals in REFUSED (or a reason it has none)."""
    unchecked = {"TOCSIN_SMTP_HOST", "TOCSIN_SMTP_USERNAME", "TOCSIN_SMTP_PASSWORD"}  # any text is a value
    names = {str(choice) for field in Settings.model_fields.values() for choice in field.validation_alias.choices}  # type: ignore[union-attr]
    assert names - unchecked == {name for name, _, _ in REFUSED}


def test_the_worker_tuning_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tuning = {
        "TOCSIN_WORKER_MAX_CACHED_WORKFLOWS": "0",
        "TOCSIN_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "20",
        "TOCSIN_WORKER_MAX_CONCURRENT_ACTIVITIES": "30",
        "TOCSIN_WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES": "40",
        "TOCSIN_WORKER_WORKFLOW_TASK_POLLERS": "Auto",
        "TOCSIN_WORKER_ACTIVITY_TASK_POLLERS": "1",
    }
    for name, value in tuning.items():
        monkeypatch.setenv(name, value)
    assert Settings().worker_tuning == WorkerTuning(
        max_cached_workflows=0,
        max_concurrent_workflow_tasks=20,
        max_concurrent_activities=30,
        max_concurrent_local_activities=40,
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=1),
    )


def test_unset_the_worker_tuning_is_the_sdk_workers_default() -> None:
    sdk = inspect.signature(Worker.__init__).parameters
    tuning = Settings().worker_tuning
    assert tuning["max_cached_workflows"] == sdk["max_cached_workflows"].default
    assert tuning["workflow_task_poller_behavior"] == sdk["workflow_task_poller_behavior"].default
    assert tuning["activity_task_poller_behavior"] == sdk["activity_task_poller_behavior"].default
    # The SDK's None for these means its fixed-size tuner's 100 slots.
    assert (
        tuning["max_concurrent_workflow_tasks"],
        tuning["max_concurrent_activities"],
        tuning["max_concurrent_local_activities"],
    ) == (100, 100, 100)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@db.example:5432/tocsin?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgres://u@db.example/tocsin?application_name=tocsin-worker&connect_timeout=3",
        "postgresql://u@/tocsin?host=/var/run/postgresql&options=-c%20statement_timeout%3D5s",
        "postgresql://u@/tocsin?host=a.example:5432,b.example:5433&target_session_attrs=read-write",
    ],
)
def test_libpq_urls_are_accepted(url: str) -> None:
    options = connect_options(url)
    assert set(options.url.query) <= {"host", "port"}
    assert options.url.drivername == "postgresql+asyncpg"


def test_the_accepted_url_parameters_are_the_documented_ones() -> None:
    assert {"sslmode", "sslrootcert", "sslcert", "sslkey", "application_name", "connect_timeout", "options"} <= (
        URL_PARAMETERS
    )


async def test_a_libpq_url_connects_with_its_parameters_applied(fresh_db_url: str) -> None:
    """Before, `?sslmode=disable` alone was a TypeError from asyncpg's connect."""
    separator = "&" if "?" in fresh_db_url else "?"
    url = (
        f"{fresh_db_url}{separator}sslmode=disable&application_name=tocsin-config-test&connect_timeout=5"
        "&options=-c%20lock_timeout%3D1234"
    )
    async with await Database.connect(url, statement_timeout=7) as db, db.transaction() as conn:
        settings = await conn.exec_driver_sql(
            "SELECT current_setting('application_name'), current_setting('lock_timeout'),"
            " current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout')"
        )
        assert tuple(settings.one()) == ("tocsin-config-test", "1234ms", "7s", "14s")
