"""`Tocsin`: the application-facing API (SPEC 7). Every call is tenant-scoped; results are pydantic models."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from tocsin import engine
from tocsin.core import contracts as c
from tocsin.core.errors import ConfigurationError, InvalidRequest
from tocsin.core.models import DefinitionRecord, Delivery, Run, RunDetail, RunPage, StartedRun, workflow_id
from tocsin.core.preferences import Preferences, Recipient
from tocsin.db import Database, store
from tocsin.engine import preferences as prefs
from tocsin.engine import reads
from tocsin.engine.feedback import record_delivery_outcome
from tocsin.engine.inbox import inbox, stamp_receipt
from tocsin.engine.registry import DefinitionSource, list_definitions, register_definition
from tocsin.engine.signals import route_signal
from tocsin.temporal.connect import connect_temporal
from tocsin.temporal.starter import notify_journey, start_journey

log = logging.getLogger("tocsin.client")


def check_task_queue(task_queue: str) -> None:
    if not task_queue.strip():
        raise ConfigurationError("the task queue must not be blank (TOCSIN_TASK_QUEUE)")


async def check_namespace(client: Client) -> None:
    """ConfigurationError if the client's namespace does not exist on its server.

    A key that may not describe namespaces (PERMISSION_DENIED) proves nothing either way: the start itself
    will say. Every other failure is the server's, and raised as it is.
    """
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigurationError(
                f"the Temporal namespace {client.namespace!r} does not exist (TEMPORAL_NAMESPACE)"
            ) from None
        if exc.status != RPCStatusCode.PERMISSION_DENIED:
            raise


def utcnow() -> datetime:
    """The host clock: calls from application code happen outside any workflow."""
    return datetime.now(UTC)


class Tocsin:
    """The application's handle on tocsin: start, signal, cancel and read runs, record provider feedback,
    serve the in-app inbox. Every call is scoped by `tenant_id`.

    Postgres holds the truth and each call commits there first; Temporal is then told (a workflow started,
    woken or updated) so that the run acts at once. Open it with `await Tocsin.connect(...)` (it then owns,
    and closes, the database it opened), or build it on handles you own with `Tocsin(db, temporal_client)`.
    Either is an async context manager: `async with Tocsin(db, client) as t:` or
    `async with await Tocsin.connect(...) as t:`; leaving the block closes only what `connect` opened.
    """

    def __init__(
        self, db: Database, temporal_client: Client, *, task_queue: str = c.DEFAULT_TASK_QUEUE, owns: bool = False
    ) -> None:
        self.db = db
        self.temporal = temporal_client
        self.task_queue = task_queue
        self._owns_db = owns
        # How long a cancel waits for the run's workflow to take its update before cancelling in Postgres.
        self.update_timeout = timedelta(seconds=10)

    @classmethod
    async def connect(
        cls,
        *,
        database_url: str | None = None,
        temporal_address: str | None = None,
        db: Database | None = None,
        temporal_client: Client | None = None,
        namespace: str | None = None,
        task_queue: str = c.DEFAULT_TASK_QUEUE,
    ) -> Tocsin:
        """Open the database (or use `db`) and connect to Temporal (or use `temporal_client`).

        Temporal is reached as the SDK's environment configuration says (a TEMPORAL_CONFIG_FILE profile,
        TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*); `temporal_address` and
        `namespace` override its address and namespace, the namespace defaulting to "default".
        A blank task queue or a namespace the server does not have is a ConfigurationError here, before any
        run could be committed that no workflow would ever be started for.
        """
        if (db is None) == (database_url is None):
            raise InvalidRequest("pass exactly one of database_url or db")
        if temporal_client is not None and (temporal_address is not None or namespace is not None):
            raise InvalidRequest("pass temporal_client, or temporal_address and namespace, not both")
        check_task_queue(task_queue)
        owns = db is None
        database = db if db is not None else await Database.connect(str(database_url))
        try:
            client = temporal_client or await connect_temporal(temporal_address, namespace=namespace)
            await check_namespace(client)
        except BaseException:
            if owns:
                await database.close()
            raise
        return cls(database, client, task_queue=task_queue, owns=owns)

    async def close(self) -> None:
        if self._owns_db:
            await self.db.close()

    async def __aenter__(self) -> Tocsin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- definitions ------------------------------------------------------------------------------------

    async def register_definition(self, source: DefinitionSource) -> DefinitionRecord:
        return await register_definition(self.db, source, now=utcnow())

    async def list_definitions(self) -> list[DefinitionRecord]:
        return await list_definitions(self.db)

    # --- runs -------------------------------------------------------------------------------------------

    async def start_run(
        self,
        *,
        workflow_key: str,
        tenant_id: str,
        recipient: str,
        idempotency_key: str,
        data: dict[str, Any] | None = None,
        version: int | None = None,
    ) -> StartedRun:
        """Commit the run and its first delivery in Postgres, then start its workflow. Same key: same run.

        For a batched workflow (SPEC 11.5) the trigger opens its scope's batch (the run is `collecting` until its
        window passes) or joins the open one: then `joined` is true and the batch's workflow is woken.
        """
        run, _ = await engine.create_run(
            self.db,
            tenant_id=tenant_id,
            workflow_key=workflow_key,
            version=version,
            recipient=recipient,
            data=data,
            idempotency_key=idempotency_key,
            now=utcnow(),
        )
        # A throttled run is finished when it is created: it never gets a workflow (SPEC 11.4).
        if not run.workflow_started and not run.finished:
            await start_journey(self.temporal, self.db, run, task_queue=self.task_queue)
            run = run.model_copy(update={"workflow_started": True})
        elif run.joined:
            # The batch may have closed at max_items: its workflow sends at once instead of at the window's end.
            # A retried trigger wakes it again, which a wake lost the first time needs.
            await notify_journey(self.temporal, run, task_queue=self.task_queue)
        return run

    async def cancel_run(self, run_id: uuid.UUID, *, tenant_id: str, reason: str) -> Run:
        """Stop a run and return it (a finished run is returned as it is).

        A running workflow does it through its `cancel` update, so it stops its timers at once. When the
        update is not taken (the workflow is gone, no worker took it in time, Temporal is unreachable), the run
        is cancelled in Postgres directly; once that is committed the caller sees success, whether or not
        its workflow could be told (it finds the run stopped the next time it looks).
        """
        if not reason or not reason.strip():
            raise InvalidRequest("a cancel reason must not be blank")
        run = await self._run(run_id, tenant_id)
        if run.finished:
            return run
        if run.workflow_started:
            try:
                await self.temporal.get_workflow_handle(workflow_id(run.id)).execute_update(
                    c.CANCEL_UPDATE,
                    c.CancelRequest(tenant_id=tenant_id, reason=reason),
                    result_type=c.RunView,
                    rpc_timeout=self.update_timeout,
                )
            except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as exc:
                # A late update is then a no-op on a stopped run.
                log.warning("cancel: the workflow of run %s did not take the update (%s); cancelling in Postgres",
                            run.id, type(exc).__name__, extra={"run_id": str(run.id)})  # fmt: skip
            else:
                return await self._run(run_id, tenant_id)
        stopped = await engine.cancel_run(self.db, run.id, tenant_id=tenant_id, reason=reason, now=utcnow())
        try:
            await notify_journey(self.temporal, stopped, task_queue=self.task_queue)
        except RPCError as exc:
            log.warning("cancel: run %s is stopped but its workflow could not be woken (%s)",
                        run.id, exc.status.name if exc.status else exc, extra={"run_id": str(run.id)})  # fmt: skip
        return stopped

    async def get_run(self, run_id: uuid.UUID, *, tenant_id: str) -> RunDetail:
        """The run with its whole audit trail, its deliveries and their attempts, and a batched run's items."""
        return await reads.get_run(self.db, run_id, tenant_id=tenant_id)

    async def list_runs(
        self,
        *,
        tenant_id: str,
        state: str | None = None,
        recipient: str | None = None,
        workflow_key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first, a page at a time; pass `next_cursor` back for the next page."""
        return await reads.list_runs(
            self.db,
            tenant_id=tenant_id,
            state=state,
            recipient=recipient,
            workflow_key=workflow_key,
            limit=limit,
            cursor=cursor,
        )

    # --- signals and provider feedback ---------------------------------------------------------------

    async def send_signal(
        self,
        *,
        tenant_id: str,
        recipient: str,
        name: str,
        data: dict[str, Any] | None = None,
        run_id: uuid.UUID | None = None,
    ) -> list[uuid.UUID]:
        """Record a signal; waiting runs that listen for it stop. Returns the ids of the runs it stopped."""
        stopped = await route_signal(self.db, tenant_id, recipient, name, data, now=utcnow(), run_id=run_id)
        await self._notify(stopped, tenant_id)
        return stopped

    async def record_delivery_outcome(
        self,
        delivery_id: uuid.UUID,
        *,
        tenant_id: str,
        outcome: str,
        error: str | None = None,
        provider_message_id: str | None = None,
        provider_response: dict[str, Any] | None = None,
    ) -> Delivery:
        """Provider feedback (a delivery report, a bounce); the run's workflow is woken to act on it."""
        delivery = await record_delivery_outcome(
            self.db,
            delivery_id,
            tenant_id=tenant_id,
            outcome=outcome,
            error=error,
            provider_message_id=provider_message_id,
            provider_response=provider_response,
            now=utcnow(),
        )
        await self._notify([delivery.run_id], tenant_id)
        return delivery

    # --- inbox ----------------------------------------------------------------------------------------

    async def inbox(
        self, *, tenant_id: str, recipient: str, unread_only: bool = False, limit: int = 50
    ) -> list[Delivery]:
        """The recipient's delivered in-app notifications, newest first."""
        return await inbox(self.db, tenant_id=tenant_id, recipient=recipient, unread_only=unread_only, limit=limit)

    async def mark_read(self, delivery_id: uuid.UUID, *, tenant_id: str) -> Delivery:
        return await self._receipt(delivery_id, tenant_id, "read_at")

    async def mark_seen(self, delivery_id: uuid.UUID, *, tenant_id: str) -> Delivery:
        return await self._receipt(delivery_id, tenant_id, "seen_at")

    async def _receipt(
        self, delivery_id: uuid.UUID, tenant_id: str, receipt: Literal["read_at", "seen_at"]
    ) -> Delivery:
        delivery, stopped = await stamp_receipt(
            self.db, delivery_id, tenant_id=tenant_id, receipt=receipt, now=utcnow()
        )
        await self._notify(stopped, tenant_id)
        return delivery

    # --- recipients and preferences ---------------------------------------------------------------------

    async def set_preference(
        self,
        *,
        tenant_id: str,
        recipient: str,
        opted_in: bool,
        workflow_key: str | None = None,
        channel: str | None = None,
    ) -> Preferences:
        """Opt a recipient in or out of one scope (None: any workflow / any channel); the most specific scope
        decides each send (SPEC 12.1). Returns the recipient's preferences after the change."""
        return await prefs.set_preference(
            self.db,
            tenant_id=tenant_id,
            recipient=recipient,
            opted_in=opted_in,
            workflow_key=workflow_key,
            channel=channel,
            now=utcnow(),
        )

    async def preferences(self, *, tenant_id: str, recipient: str) -> Preferences:
        """The recipient's rows, and what they resolve to for every registered workflow and its channels."""
        return await prefs.preferences(self.db, tenant_id=tenant_id, recipient=recipient)

    async def set_recipient(self, *, tenant_id: str, recipient: str, timezone: str | None) -> Recipient:
        """Record the recipient's time zone (an IANA name such as "Europe/Paris"; None clears it)."""
        return await prefs.set_recipient(
            self.db, tenant_id=tenant_id, recipient=recipient, timezone=timezone, now=utcnow()
        )

    # --- helpers ----------------------------------------------------------------------------------------

    async def _run(self, run_id: uuid.UUID, tenant_id: str) -> Run:
        async with self.db.transaction() as conn:
            return await store.get_run(conn, run_id, tenant_id=tenant_id)

    async def _notify(self, run_ids: list[uuid.UUID], tenant_id: str) -> None:
        for run_id in run_ids:
            await notify_journey(self.temporal, await self._run(run_id, tenant_id), task_queue=self.task_queue)
