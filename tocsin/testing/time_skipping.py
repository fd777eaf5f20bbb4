"""Awaiting workflows that tocsin started, with time skipping, through the SDK's public API only.

On the time-skipping test server (`WorkflowEnvironment.start_time_skipping`), a handle returned by the
environment client's `start_workflow` lets time skip while its `result()` is awaited; a handle from
`get_workflow_handle` does not. The context manager behind that (`time_skipping_unlocked`) is private,
and the public `WorkflowEnvironment.sleep` only skips a fixed duration. tocsin starts its workflows itself
(`Tocsin.start_run`), so `skipping_client` gives it a client that keeps the handles it is handed.

Plain module, no pytest: the `journeys` fixture (tocsin.testing) and the journey benchmark (bench/) use it.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput, WorkflowHandle
from temporalio.testing import WorkflowEnvironment


class StartedWorkflows(Interceptor):
    """The latest handle `start_workflow` returned for each workflow id (a signal-with-start counts too)."""

    def __init__(self) -> None:
        self.handles: dict[str, WorkflowHandle[Any, Any]] = {}

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Keep(next, self.handles)

    async def result(self, workflow_id: str) -> Any:
        """Await the workflow's result (following continue-as-new) while time skips.

        Await one result at a time: the test server counts the unlocks that `result()` makes, and
        concurrent calls unbalance the count (an RPCError). Time is global, so every workflow moves on
        while any one result is awaited.
        """
        handle = self.handles.get(workflow_id)
        if handle is None:
            raise AssertionError(f"workflow {workflow_id} was not started through this client")
        return await handle.result()


class _Keep(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, handles: dict[str, WorkflowHandle[Any, Any]]) -> None:
        super().__init__(next)
        self.handles = handles

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        handle = await super().start_workflow(input)
        self.handles[input.id] = handle
        return handle


def skipping_client(env: WorkflowEnvironment) -> tuple[Client, StartedWorkflows]:
    """The environment's client, plus an outermost interceptor that keeps the handles it hands out."""
    started = StartedWorkflows()
    config = env.client.config()
    config["interceptors"] = [started, *config["interceptors"]]
    return Client(**config), started
