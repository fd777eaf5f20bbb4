"""Connecting to Temporal: pydantic data converter, optional Prometheus metrics and tracing (SPEC 6, 8)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tocsin import contracts as c

_runtimes: dict[str, Runtime] = {}


def runtime_for(metrics_bind: str | None) -> Runtime | None:
    """One runtime per metrics address per process: the SDK's Prometheus endpoint is bound once."""
    if not metrics_bind:
        return None
    if metrics_bind not in _runtimes:
        _runtimes[metrics_bind] = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_bind))
        )
    return _runtimes[metrics_bind]


def tracing_interceptors(enabled: bool) -> list[Interceptor]:
    if not enabled:
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:  # opentelemetry is an optional extra
        raise RuntimeError("TOCSIN_OTEL_TRACING needs the 'otel' extra: pip install 'tocsin[otel]'") from exc
    return [TracingInterceptor()]


async def connect_temporal(
    address: str,
    *,
    namespace: str = "default",
    metrics_bind: str | None = None,
    tracing: bool = False,
) -> Client:
    return await Client.connect(
        address,
        namespace=namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime_for(metrics_bind),
        interceptors=tracing_interceptors(tracing),
    )


async def declare_search_attributes(client: Client) -> None:
    """Register tocsin's search attributes on a server that lacks them (self-hosted, the test servers).

    The dev stack passes them to `temporal server start-dev --search-attribute` instead; Temporal Cloud
    namespaces declare them in the cloud console.
    """
    types = {
        SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        SearchAttributeIndexedValueType.DATETIME: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={key.name: types[key.indexed_value_type] for key in c.SEARCH_ATTRIBUTES},
        )
    )


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Type` arguments for `temporal server start-dev`."""
    names = {SearchAttributeIndexedValueType.KEYWORD: "Keyword", SearchAttributeIndexedValueType.DATETIME: "Datetime"}
    return [f"--search-attribute={key.name}={names[key.indexed_value_type]}" for key in c.SEARCH_ATTRIBUTES]
