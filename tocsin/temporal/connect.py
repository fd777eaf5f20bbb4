"""Connecting to Temporal: the SDK's envconfig (profiles, API key, TLS), pydantic data converter, optional
Prometheus metrics and tracing (SPEC 6, 8, 14)."""

from __future__ import annotations

import os

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConnectConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tocsin.core import contracts as c
from tocsin.core.errors import ConfigurationError
from tocsin.settings import Settings, temporal_connect_config

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
    """OpenTelemetry spans for client calls, workflows and activities.

    The interceptor is a client interceptor that is also a `temporalio.worker.Interceptor`, and a Worker
    prepends such interceptors of its client to its own: a worker built from this client traces too.
    """
    if not enabled:
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:  # opentelemetry is an optional extra
        raise ConfigurationError("TOCSIN_OTEL_TRACING needs the 'otel' extra: pip install 'tocsin[otel]'") from exc
    ensure_tracer_provider()
    return [TracingInterceptor()]


def ensure_tracer_provider() -> None:
    """Export spans over OTLP/HTTP unless the process already set up OpenTelemetry itself.

    The exporter reads the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318;
    OTEL_SERVICE_NAME, default "tocsin"). A process run under `opentelemetry-instrument`, or one that set its
    own tracer provider, is left as it is.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigurationError("TOCSIN_OTEL_TRACING needs the 'otel' extra: pip install 'tocsin[otel]'") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tocsin")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


async def connect_temporal(
    address: str | None = None,
    *,
    namespace: str | None = None,
    config: ClientConnectConfig | None = None,
    metrics_bind: str | None = None,
    tracing: bool = False,
) -> Client:
    """Connect as `config` says (default: the SDK's envconfig, see `temporal_connect_config`), with `address`
    and `namespace` overriding its own. They override only those two: the API key, TLS and gRPC headers of
    the environment still apply, so `--temporal-address` can point at another endpoint of the same cluster.
    """
    connect = (config if config is not None else temporal_connect_config()).copy()
    if address:
        connect["target_host"] = address
    if namespace:
        connect["namespace"] = namespace
    if not connect.get("target_host"):
        raise ConfigurationError(
            "TEMPORAL_ADDRESS is not set (nor an address in the TEMPORAL_PROFILE of TEMPORAL_CONFIG_FILE)"
        )
    return await Client.connect(
        **connect,
        data_converter=pydantic_data_converter,
        runtime=runtime_for(metrics_bind),
        interceptors=tracing_interceptors(tracing),
    )


async def connect_from_settings(settings: Settings, *, address: str | None = None) -> Client:
    """The client the CLI uses: the settings' Temporal connection (TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE over
    the SDK's profile, with its API key and TLS), the SDK's Prometheus metrics on TOCSIN_METRICS_BIND,
    OpenTelemetry tracing if TOCSIN_OTEL_TRACING. Workers built from it inherit both.

    `address` overrides the settings' (the dev stack passes its own server's). Call it before any other
    client is connected in the process if metrics are wanted: the metrics live in the client's runtime.
    """
    return await connect_temporal(
        address,
        config=settings.temporal_connect,
        metrics_bind=settings.metrics_bind,
        tracing=settings.otel_tracing,
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
