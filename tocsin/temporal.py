"""Connecting to Temporal: pydantic data converter, optional Prometheus metrics and tracing (SPEC 6, 8)."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

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
