"""The `tocsin` command line (SPEC 8).

Every command is an async function run by `execute`, the one place where errors become one line on stderr
(`error: ...`) and an exit code, never a traceback:

- 2, bad input: an invalid definition (each problem on a line of its own below the error), an unknown run
  or definition, a run of another tenant, a malformed or missing argument (typer's usage errors too).
  Nothing was written; fix the command and run it again.
- 1, an environment fault: the database or Temporal unreachable or not migrated, a dev server that cannot
  start (a port in use), a setting in the environment that cannot work (TOCSIN_DATABASE_URL unset or
  invalid, a bad TOCSIN_LOG_LEVEL, a missing extra).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, Protocol, runtime_checkable

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from temporalio.client import Client
from temporalio.service import RPCError
from typer.core import TyperGroup

from tocsin import engine
from tocsin.cli.definitions import check, graph, warn_unknown_channels
from tocsin.cli.devstack import CONNECTION_FILE, DEFAULT_INBOX_PORT, DEFAULT_ROOT, run_dev, running_connection
from tocsin.cli.errors import EnvironmentFault, lowercase_first, os_cause, temporal_unreachable
from tocsin.cli.render import as_json, definitions_table, run_timeline, runs_view
from tocsin.client import Tocsin, check_namespace, utcnow
from tocsin.core.definitions import load_definition
from tocsin.core.documents import parse_document, read_document
from tocsin.core.errors import ConfigurationError, DefinitionError, InvalidDocument, InvalidRequest, TocsinError
from tocsin.core.limits import check_data, printable
from tocsin.db import Database
from tocsin.db.database import async_url
from tocsin.engine.feedback import FEEDBACK_KINDS
from tocsin.engine.reads import get_run, list_runs
from tocsin.engine.registry import list_definitions, register_definition
from tocsin.engine.runs import check_run_request
from tocsin.engine.signals import check_signal
from tocsin.logs import configure_logging
from tocsin.settings import Settings
from tocsin.temporal.connect import connect_from_settings
from tocsin.temporal.worker import build_worker, channels_from_settings, ensure_reconcile_schedule, run_until_signalled

BAD_INPUT = 2
ENVIRONMENT_FAULT = 1
# Postgres SQLSTATEs of a database that `tocsin migrate` has not set up: undefined table, invalid schema.
MISSING_SCHEMA = frozenset({"42P01", "3F000"})
LOCAL_STACK_HINT = "(or run `tocsin dev` for a local stack)"

P = ParamSpec("P")


@runtime_checkable
class ParsingError(Protocol):
    """What typer raises for a command line it cannot parse (click's ClickException, which typer vendors
    privately): matched by its shape so that tocsin uses typer's public API only."""

    exit_code: int

    def format_message(self) -> str: ...


class OneLineErrors(TyperGroup):
    """typer's own usage errors (a missing option, an unknown command, a value of the wrong type) as one
    `error:` line on stderr, exit 2, like every other error of the CLI, instead of typer's boxed usage."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # Not standalone: typer raises its parsing errors, and returns the code of `typer.Exit` (and --help).
            outcome = super().main(*args, **{**kwargs, "standalone_mode": False})
        except Exception as exc:
            if not isinstance(exc, ParsingError):
                raise
            # `tocsin` or `tocsin runs` alone: typer printed the help while raising this.
            if type(exc).__name__ != "NoArgsIsHelpError":
                context = getattr(exc, "ctx", None)
                hint = f"; see '{context.command_path} --help'" if context is not None else ""
                typer.echo(f"error: {lowercase_first(exc.format_message()).rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(outcome if isinstance(outcome, int) else 0)


# Locals in a traceback would print settings and URLs, passwords included.
app = typer.Typer(
    cls=OneLineErrors,
    name="tocsin",
    help="Durable, multi-step notification journeys on Temporal and Postgres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
definitions_app = typer.Typer(help="Register, list, check and draw journey definitions.", no_args_is_help=True)
runs_app = typer.Typer(help="Start, show, list and cancel runs.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Report what a provider said about a delivery.", no_args_is_help=True)
app.add_typer(definitions_app, name="definitions")
app.add_typer(runs_app, name="runs")
app.add_typer(deliveries_app, name="deliveries")


# --- running a command: the one error handler -------------------------------------------------------


def fail(code: int, message: str, *details: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    for line in details:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(code)


def execute(work: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.run(work)
    except DefinitionError as exc:
        count = len(exc.problems)
        fail(
            BAD_INPUT,
            f"invalid journey definition ({count} problem{'' if count == 1 else 's'}):",
            *map(str, exc.problems),
        )
    except (EnvironmentFault, ConfigurationError) as exc:
        fail(ENVIRONMENT_FAULT, str(exc))
    except TocsinError as exc:
        fail(BAD_INPUT, str(exc))
    except RPCError as exc:
        fail(ENVIRONMENT_FAULT, f"Temporal refused the request: {exc.message}")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) in MISSING_SCHEMA:
            fail(ENVIRONMENT_FAULT, "the database has no tocsin tables: run `tocsin migrate` first")
        fail(ENVIRONMENT_FAULT, f"database error: {exc.orig}")


def command(
    group: typer.Typer, name: str | None = None
) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, None]]:
    """Register an async function as a command of `group`; its docstring is the command's help."""

    def register(function: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
        # functools.wraps keeps the signature (typer reads the options from it) and the docstring.
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            execute(function(*args, **kwargs))

        group.command(name)(run)
        return run

    return register


# --- settings and connections --------------------------------------------------------------------------


def environment_settings() -> Settings:
    """The environment's settings alone: what `tocsin dev` and `tocsin demo` start their stack from."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from exc


def load_settings(
    database_url: str | None = None, temporal_address: str | None = None, *, uses_temporal: bool = True
) -> Settings:
    """Settings from the environment, overridden by the command line's --database-url / --temporal-address;
    what neither sets (of what the command uses) comes from a `tocsin dev` running with its data in
    ./.tocsin, said on stderr."""
    overrides = {"database_url": database_url, "temporal_address": temporal_address}
    settings = environment_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    wants_temporal = uses_temporal and not settings.temporal_address
    if settings.database_url and not wants_temporal:
        return settings
    running = running_connection(DEFAULT_ROOT)
    if running is None:
        return settings
    update: dict[str, object] = {}
    if not settings.database_url:
        update["database_url"] = running.database_url
    if wants_temporal:
        update["temporal_address"] = running.temporal_address
        # The namespace and task queue belong to that server's worker, unless the environment names them.
        if "temporal_namespace" not in settings.model_fields_set:
            update["temporal_namespace"] = running.namespace
        if "task_queue" not in settings.model_fields_set:
            update["task_queue"] = running.task_queue
    parts = [
        part for field, part in (("database_url", "the database"), ("temporal_address", "Temporal")) if field in update
    ]
    typer.echo(f"using the running `tocsin dev` for {' and '.join(parts)} ({DEFAULT_ROOT / CONNECTION_FILE})", err=True)
    return settings.model_copy(update=update)


async def open_database(settings: Settings) -> Database:
    url = settings.database_url
    if not url:
        raise ConfigurationError(f"TOCSIN_DATABASE_URL is not set {LOCAL_STACK_HINT}")
    try:
        return await Database.connect(url)
    except (ValueError, ArgumentError) as exc:  # --database-url was checked while parsing: this is the setting
        raise ConfigurationError(f"invalid TOCSIN_DATABASE_URL: {exc}") from exc
    except (OSError, DBAPIError) as exc:
        reason = os_cause(exc.orig or exc if isinstance(exc, DBAPIError) else exc)
        shown = make_url(url).render_as_string(hide_password=True)
        raise EnvironmentFault(f"cannot reach the database at {shown} ({reason})") from exc


async def open_temporal(settings: Settings, *, telemetry: bool = False) -> Client:
    """Only the worker exports metrics and traces: a one-off command must not take the worker's metrics port."""
    address = settings.temporal_address
    if not address:
        raise ConfigurationError(f"TEMPORAL_ADDRESS is not set {LOCAL_STACK_HINT}")
    quiet = settings if telemetry else settings.model_copy(update={"metrics_bind": None, "otel_tracing": False})
    try:
        return await connect_from_settings(quiet)
    except RuntimeError as exc:  # what temporalio raises when it cannot connect
        raise temporal_unreachable(address, exc) from exc


@asynccontextmanager
async def open_tocsin(settings: Settings) -> AsyncIterator[Tocsin]:
    async with await open_database(settings) as db:
        yield Tocsin(db, await open_temporal(settings), task_queue=settings.task_queue)


# --- parsing input -------------------------------------------------------------------------------------


def parse_id(text: str, what: str = "run") -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidRequest(f"invalid {what} id {text!r}: expected a UUID") from None


def check_outcome(value: str) -> str:
    """An unknown outcome is refused while parsing, before anything connects."""
    if value not in FEEDBACK_KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(FEEDBACK_KINDS)}")
    return value


def parse_data(text: str, source: str) -> dict[str, Any]:
    """A run's or signal's data: a JSON object within tocsin's limits (depth, size; no NaN, NUL or lone
    surrogate, which a non-UTF-8 argument decodes to), else InvalidRequest naming `source`."""
    try:
        return check_data(source, parse_document(text, "json"))
    except InvalidDocument as exc:
        raise InvalidRequest(f"{source}: {exc}") from None


def read_data(data: str | None, data_file: Path | None) -> dict[str, Any] | None:
    if data is not None and data_file is not None:
        raise InvalidRequest("pass --data or --data-file, not both")
    if data_file is not None:
        source = f"--data-file {printable(str(data_file))}"
        try:
            return check_data(source, read_document(data_file, "json"))
        except InvalidDocument as exc:
            raise InvalidRequest(f"{source}: {exc}") from None
    return parse_data(data, "--data") if data is not None else None


def check_database_url(value: str | None) -> str | None:
    """A malformed --database-url is bad input, refused while parsing, before anything connects."""
    if value is not None:
        try:
            async_url(value)
        except (ValueError, ArgumentError) as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def show(render: Callable[[int], RenderableType]) -> None:
    """Print what `render` makes for the terminal's width (COLUMNS, else the terminal's, else 80)."""
    console = Console()
    console.print(render(console.width))


# --- options shared by several commands ----------------------------------------------------------------

JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables, for scripts.")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Postgres URL; overrides TOCSIN_DATABASE_URL.",
        show_default=False,
        callback=check_database_url,
    ),
]
TemporalAddress = Annotated[
    str | None,
    typer.Option("--temporal-address", help="Temporal host:port; overrides TEMPORAL_ADDRESS.", show_default=False),
]
Tenant = Annotated[str, typer.Option("--tenant", help="The tenant; every run belongs to exactly one.")]
Recipient = Annotated[str, typer.Option("--recipient", help="The recipient reference, e.g. user:42.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run id (a UUID).", show_default=False)]
Data = Annotated[str | None, typer.Option("--data", help="A JSON object.", show_default=False)]
Root = Annotated[Path, typer.Option("--root", help="Where the embedded Postgres and Temporal keep their data.")]
TemporalPort = Annotated[int, typer.Option("--temporal-port", help="Port of the Temporal dev server.")]
UiPort = Annotated[int, typer.Option("--ui-port", help="Port of the Temporal Web UI.")]
InboxPort = Annotated[int, typer.Option("--inbox-port", help="Port of the inbox app (the feed page and its API).")]


# --- commands ----------------------------------------------------------------------------------------


@command(app)
async def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade tocsin's schema in Postgres. Idempotent; safe from several hosts at once."""
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        await db.migrate()
        revision = await db.current_revision()
    typer.echo(f"database schema at revision {revision}")


@command(app)
async def worker(database_url: DatabaseUrl = None, temporal_address: TemporalAddress = None) -> None:
    """Run a worker for journeys and the reconcile sweep until Ctrl-C or SIGTERM.

    Channels: in_app and log; email over SMTP if TOCSIN_SMTP_HOST is set, else printed; webhook if
    TOCSIN_WEBHOOK_URL is set. Creates the every-minute reconcile schedule if it is missing.
    """
    settings = load_settings(database_url, temporal_address)
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        raise ConfigurationError(f"TOCSIN_LOG_LEVEL: {exc}") from None
    client = await open_temporal(settings, telemetry=True)
    async with await open_database(settings) as db:
        channels = channels_from_settings(settings)
        await warn_unknown_channels(db, channels)
        journeys = build_worker(client, db, task_queue=settings.task_queue, channels=channels, **settings.worker_tuning)
        await ensure_reconcile_schedule(
            client, task_queue=settings.task_queue, grace_seconds=settings.reconcile_grace_seconds
        )
        typer.echo(
            f"worker on task queue {settings.task_queue!r} of {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}); channels: {', '.join(sorted(channels))}"
        )
        await run_until_signalled(journeys)


@command(app)
async def dev(
    root: Root = DEFAULT_ROOT,
    temporal_port: TemporalPort = 7233,
    ui_port: UiPort = 8233,
    inbox_port: InboxPort = DEFAULT_INBOX_PORT,
) -> None:
    """Run a local stack: embedded Postgres, Temporal dev server with Web UI, a worker, and the inbox app with
    its feed page, until Ctrl-C.

    TOCSIN_DATABASE_URL or TEMPORAL_ADDRESS, when set, are used instead of the embedded servers.
    """
    await run_dev(
        environment_settings(), root=root, temporal_port=temporal_port, ui_port=ui_port, inbox_port=inbox_port
    )


@command(app)
async def demo(
    root: Root = DEFAULT_ROOT,
    temporal_port: TemporalPort = 7233,
    ui_port: UiPort = 8233,
    inbox_port: InboxPort = DEFAULT_INBOX_PORT,
    wait: Annotated[int, typer.Option("--wait", min=1, help="Seconds the sample journey waits.")] = 20,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the stack running after the demo.")] = False,
) -> None:
    """Run the local stack and a sample journey, shown live, ending with its audit trail."""
    from tocsin.cli.demo import run_demo  # imported on use: only the local commands need the dev stack

    await run_demo(
        environment_settings(),
        root=root,
        temporal_port=temporal_port,
        ui_port=ui_port,
        inbox_port=inbox_port,
        wait_seconds=wait,
        keep=keep,
    )


@command(definitions_app, "register")
async def definitions_register(
    file: Annotated[Path, typer.Argument(help="A journey definition: .yaml, .yml or .json.", show_default=False)],
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Validate a journey definition and store it. The same content again changes nothing."""
    definition = load_definition(file)  # before connecting: an invalid file needs no database
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        record = await register_definition(db, definition, now=utcnow())
    if json_output:
        typer.echo(as_json(record))
    else:
        typer.echo(f"registered {record.key} version {record.version} (checksum {record.checksum[:12]})")


@command(definitions_app, "list")
async def definitions_list(json_output: JsonOutput = False, database_url: DatabaseUrl = None) -> None:
    """List the registered journey definitions."""
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        records = await list_definitions(db)
    if json_output:
        typer.echo(as_json(records))
    else:
        show(lambda _: definitions_table(records))


# `definitions check` and `definitions graph` need neither a database nor a server (tocsin/cli/definitions.py).
command(definitions_app, "check")(check)
command(definitions_app, "graph")(graph)


@command(runs_app, "start")
async def runs_start(
    workflow: Annotated[str, typer.Option("--workflow", help="The journey definition's key.")],
    tenant: Tenant,
    recipient: Recipient,
    version: Annotated[
        int | None, typer.Option("--version", help="The definition's version; default: the latest.")
    ] = None,
    data: Data = None,
    data_file: Annotated[
        Path | None, typer.Option("--data-file", help="A file holding the data as a JSON object.")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="The same key again returns the same run; default: a new key."),
    ] = None,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
    temporal_address: TemporalAddress = None,
) -> None:
    """Start a run of a journey for one recipient, with data for its content templates."""
    payload = read_data(data, data_file)
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    check_run_request(
        tenant_id=tenant, workflow_key=workflow, recipient=recipient, idempotency_key=key, data=payload, version=version
    )
    async with open_tocsin(load_settings(database_url, temporal_address)) as tocsin:
        # Before the commit: a run whose workflow cannot be started in this namespace must not be written.
        await check_namespace(tocsin.temporal)
        run = await tocsin.start_run(
            workflow_key=workflow,
            version=version,
            tenant_id=tenant,
            recipient=recipient,
            data=payload,
            idempotency_key=key,
        )
    if json_output:
        typer.echo(as_json(run))
    else:
        show(lambda width: runs_view([run], width))
        typer.echo(f"idempotency key: {key}")
        if run.joined:
            typer.echo("joined the open batch of this run")


@command(runs_app, "show")
async def runs_show(
    run: RunArg, tenant: Tenant, json_output: JsonOutput = False, database_url: DatabaseUrl = None
) -> None:
    """Show a run with its audit trail, its deliveries and their attempts."""
    run_id = parse_id(run)
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        detail = await get_run(db, run_id, tenant_id=tenant)
    if json_output:
        typer.echo(as_json(detail))
    else:
        show(lambda width: run_timeline(detail, width))


@command(runs_app, "list")
async def runs_list(
    tenant: Tenant,
    state: Annotated[
        str | None,
        typer.Option("--state", help="active, waiting, collecting, completed or stopped.", show_default=False),
    ] = None,
    recipient: Annotated[str | None, typer.Option("--recipient", help="Only this recipient's runs.")] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="Only runs of this journey key.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Runs per page (1 to 1000).")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="The next page, as printed by the last one.")] = None,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List a tenant's runs, newest first, a page at a time."""
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        page = await list_runs(
            db, tenant_id=tenant, state=state, recipient=recipient, workflow_key=workflow, limit=limit, cursor=cursor
        )
    if json_output:
        typer.echo(as_json(page))
        return
    show(lambda width: runs_view(page.runs, width))
    if page.next_cursor:
        typer.echo(f"next page: --cursor {page.next_cursor}")


@command(runs_app, "cancel")
async def runs_cancel(
    run: RunArg,
    tenant: Tenant,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept as the run's terminal reason.")],
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
    temporal_address: TemporalAddress = None,
) -> None:
    """Stop an active or waiting run and cancel its open deliveries. A finished run is left as it is."""
    run_id = parse_id(run)
    async with open_tocsin(load_settings(database_url, temporal_address)) as tocsin:
        cancelled = await tocsin.cancel_run(run_id, tenant_id=tenant, reason=reason)
    if json_output:
        typer.echo(as_json(cancelled))
        return
    why = (
        f"{cancelled.status_reason}: {cancelled.terminal_reason}"
        if cancelled.terminal_reason
        else cancelled.status_reason
    )
    typer.echo(f"run {cancelled.id} is {cancelled.state} ({why})")


@command(deliveries_app, "feedback")
async def deliveries_feedback(
    delivery: Annotated[
        str, typer.Argument(metavar="DELIVERY", help="The delivery id (a UUID, see `runs show`).", show_default=False)
    ],
    tenant: Tenant,
    outcome: Annotated[
        str,
        typer.Option(
            "--outcome", help=f"What the provider reported: {', '.join(FEEDBACK_KINDS)}.", callback=check_outcome
        ),
    ],
    error: Annotated[
        str | None, typer.Option("--error", help="The provider's words, kept on the attempt.", show_default=False)
    ] = None,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
    temporal_address: TemporalAddress = None,
) -> None:
    """Record provider feedback (a delivery report, a bounce); the run's workflow acts on it.

    A delivery awaiting feedback takes the reported status; any other keeps its status, and the report is
    kept as an attempt and as a `delivery.<outcome>` signal for its run.
    """
    delivery_id = parse_id(delivery, "delivery")
    async with open_tocsin(load_settings(database_url, temporal_address)) as tocsin:
        recorded = await tocsin.record_delivery_outcome(delivery_id, tenant_id=tenant, outcome=outcome, error=error)
    if json_output:
        typer.echo(as_json(recorded))
        return
    why = f" ({recorded.suppression_reason})" if recorded.suppression_reason else ""
    typer.echo(f"delivery {recorded.id} is {recorded.status}{why}")


@command(app)
async def signal(
    tenant: Tenant,
    recipient: Recipient,
    name: Annotated[str, typer.Option("--name", help="The signal's name, e.g. notification.read.")],
    data: Data = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run (a UUID).", show_default=False)] = None,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
    temporal_address: TemporalAddress = None,
) -> None:
    """Record a signal for a recipient; their waiting runs that listen for it stop."""
    payload = parse_data(data, "--data") if data is not None else None
    run_id = parse_id(run) if run is not None else None
    check_signal(tenant, recipient, name, payload)
    async with open_tocsin(load_settings(database_url, temporal_address)) as tocsin:
        stopped = await tocsin.send_signal(
            tenant_id=tenant, recipient=recipient, name=name, data=payload, run_id=run_id
        )
    if json_output:
        typer.echo(as_json({"stopped": stopped}))
    elif stopped:
        typer.echo(f"signal {name} recorded; it stopped {len(stopped)} run(s): {', '.join(map(str, stopped))}")
    else:
        typer.echo(f"signal {name} recorded; no waiting run listens for it")


@command(app)
async def due(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 1000,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Progress the waiting runs that are due now, once: tocsin without Temporal, or rescuing lost timers.

    It works on Postgres alone and does not wake the runs' workflows.
    """
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        progressed = await engine.progress_due_runs(db, now=utcnow(), limit=limit)
    if json_output:
        typer.echo(as_json(progressed))
        return
    typer.echo(f"progressed {len(progressed)} due run(s)")
    for progress in progressed:
        typer.echo(f"  {progress.run.id}: {progress.kind}, now at {progress.run.current_step} ({progress.run.state})")


import tocsin.cli.preferences  # noqa: E402, F401  `tocsin preferences`: it adds itself to `app`, built above


def flush_before_exit() -> None:
    """What os._exit would lose: spans still queued in OpenTelemetry's batch processor, buffered log lines.

    A tracer provider is only looked for when OpenTelemetry was imported (tracing is an optional extra);
    the SDK's provider has `force_flush` and `shutdown`, the API's default proxy has neither.
    """
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is not None:
        provider = otel_trace.get_tracer_provider()
        for step in ("force_flush", "shutdown"):
            action = getattr(provider, step, None)
            if callable(action):
                action()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()


def main(args: list[str] | None = None) -> None:
    """The `tocsin` console script.

    It leaves through os._exit: temporalio's Rust threads can abort the interpreter's teardown after a
    failed connection ("PyGILState_Release ... finalizing", SDK issue #300), turning a clean one-line error
    into a crash. os._exit skips atexit hooks, so what they would flush is flushed first; the dev stack
    stops its servers itself.
    """
    try:
        app(args=args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    flush_before_exit()
    os._exit(code)
