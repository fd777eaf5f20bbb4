"""Configuration from the environment (SPEC 8), and the Temporal connection the SDK's envconfig describes (SPEC 14)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypedDict
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.service import TLSConfig
from temporalio.worker import PollerBehavior, PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum

from tocsin.core.errors import ConfigurationError
from tocsin.db.database import connect_options
from tocsin.logs import parse_level

# What the SDK's environment configuration (temporalio.envconfig) reads besides TEMPORAL_ADDRESS and
# TEMPORAL_NAMESPACE, which tocsin reads too; TEMPORAL_GRPC_META_<NAME> variables become gRPC headers.
TEMPORAL_SDK_ENV_NAMES = frozenset(
    {
        "TEMPORAL_CONFIG_FILE",
        "TEMPORAL_PROFILE",
        "TEMPORAL_API_KEY",
        "TEMPORAL_TLS",
        "TEMPORAL_TLS_SERVER_NAME",
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
        "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
        "TEMPORAL_TLS_CLIENT_CERT_PATH",
        "TEMPORAL_TLS_CLIENT_CERT_DATA",
        "TEMPORAL_TLS_CLIENT_KEY_PATH",
        "TEMPORAL_TLS_CLIENT_KEY_DATA",
    }
)


# The Temporal SDK worker's own defaults (temporalio 1.35), kept by the settings and by build_worker.
DEFAULT_MAX_CACHED_WORKFLOWS = 1000
DEFAULT_MAX_CONCURRENT_TASKS = 100
DEFAULT_POLLERS = PollerBehaviorSimpleMaximum(maximum=5)
# The SDK refuses fewer than two workflow task pollers while workflows are cached (the sticky and the
# normal queue each need one); activity tasks need one.
POLLER_MINIMUMS = {"worker_workflow_task_pollers": 2, "worker_activity_task_pollers": 1}


class WorkerTuning(TypedDict):
    """The SDK worker's options that decide what one worker process holds and runs at once: build_worker's
    keyword arguments of the same names (bench/RESULTS.md, "Issue 14 goal 4", measures what the cache costs)."""

    max_cached_workflows: int
    max_concurrent_workflow_tasks: int
    max_concurrent_activities: int
    # The engine's decisions and instant sends run as local activities (workflows/journey.py), in these slots.
    max_concurrent_local_activities: int
    workflow_task_poller_behavior: PollerBehavior
    activity_task_poller_behavior: PollerBehavior


def poller_behavior(value: str, *, minimum: int) -> PollerBehavior:
    """`N` (at most N polls at once, as the SDK's default of 5 does) or `auto` (the SDK scales the number of
    polls by the server's feedback), else ValueError saying what is expected."""
    if value.strip().lower() == "auto":
        return PollerBehaviorAutoscaling()
    expected = f"expected a number of pollers (at least {minimum}) or 'auto', got {value!r}"
    try:
        maximum = int(value)
    except ValueError:
        raise ValueError(expected) from None
    if maximum < minimum:
        raise ValueError(expected)
    return PollerBehaviorSimpleMaximum(maximum=maximum)


def env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def temporal_connect_config() -> ClientConnectConfig:
    """`Client.connect` arguments from the SDK's envconfig: the profile TEMPORAL_PROFILE (else "default") of
    the TOML file TEMPORAL_CONFIG_FILE (else the SDK's default location, if it exists), overridden by the
    TEMPORAL_* variables. An API key turns TLS on; TEMPORAL_TLS=false turns it off.

    Certificate files are read here, so a wrong path fails at startup, as one ConfigurationError line.
    """
    config_file = os.environ.get("TEMPORAL_CONFIG_FILE")
    # The SDK silently ignores a named file that does not exist: a typo would mean connecting without TLS.
    if config_file and not Path(config_file).is_file():
        raise ConfigurationError(f"TEMPORAL_CONFIG_FILE: no such file: {config_file}")
    try:
        config = ClientConfigProfile.load().to_client_connect_config()
    except RuntimeError as exc:  # the SDK's ConfigError: a bad TOML file, an unknown profile, PATH and DATA both set
        raise ConfigurationError(f"Temporal client configuration: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # a TLS certificate or key file that cannot be read
        raise ConfigurationError(f"Temporal TLS: cannot read {exc.filename}: {exc.strerror}") from None
    tls = config.get("tls")
    if isinstance(tls, TLSConfig) and (tls.client_cert is None) != (tls.client_private_key is None):
        raise ConfigurationError("Temporal TLS: a client certificate needs its key, and a key its certificate")
    return config


def _invalid(message: str) -> PydanticCustomError:
    # A custom error's message is shown as it is: no "Value error, " before it.
    return PydanticCustomError("invalid_setting", message)


def host_and_port(value: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) split, or ValueError saying what is wrong."""
    if "://" in value:
        raise ValueError(f"expected host:port without a scheme, got {value!r}")
    try:
        parts = urlsplit(f"//{value}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a bracket left open, a port out of range or not a number
        raise ValueError(f"expected host:port, got {value!r} ({exc})") from None
    if not host or port is None or parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, port


def check_temporal_address(value: str) -> str:
    host_and_port(value)
    return value


def check_bind_address(value: str) -> str:
    """An IP address and port (the SDK's Prometheus endpoint binds a socket address; it resolves no names)."""
    host, _ = host_and_port(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected IP:port such as 0.0.0.0:9464, got {value!r}") from None
    return value


class Settings(BaseSettings):
    """Every setting tocsin reads. Unset database/Temporal addresses mean "use the embedded dev stack".

    The Temporal address and namespace not set here (nor in TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE) come from
    the SDK's profile; the rest of the connection (API key, TLS, gRPC headers) is in `temporal_connect`.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(None, validation_alias=env("TOCSIN_DATABASE_URL"))
    temporal_address: str | None = Field(None, validation_alias=env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", min_length=1, validation_alias=env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field("tocsin", min_length=1, validation_alias=env("TOCSIN_TASK_QUEUE"))
    reconcile_grace_seconds: int = Field(120, ge=0, validation_alias=env("TOCSIN_RECONCILE_GRACE_SECONDS"))

    smtp_host: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_HOST"))
    smtp_port: int = Field(25, ge=1, le=65535, validation_alias=env("TOCSIN_SMTP_PORT"))
    smtp_sender: str = Field("tocsin@localhost", validation_alias=env("TOCSIN_SMTP_SENDER"))
    smtp_username: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_USERNAME"))
    smtp_password: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_PASSWORD"))
    smtp_start_tls: bool = Field(False, validation_alias=env("TOCSIN_SMTP_START_TLS"))
    webhook_url: str | None = Field(None, validation_alias=env("TOCSIN_WEBHOOK_URL"))

    metrics_bind: str | None = Field(None, validation_alias=env("TOCSIN_METRICS_BIND"))
    otel_tracing: bool = Field(False, validation_alias=env("TOCSIN_OTEL_TRACING"))
    log_level: str = Field("INFO", validation_alias=env("TOCSIN_LOG_LEVEL"))

    # `tocsin worker`'s Temporal tuning (README "Running in production"); see WorkerTuning.
    worker_max_cached_workflows: int = Field(
        DEFAULT_MAX_CACHED_WORKFLOWS, ge=0, validation_alias=env("TOCSIN_WORKER_MAX_CACHED_WORKFLOWS")
    )
    worker_max_concurrent_workflow_tasks: int = Field(
        DEFAULT_MAX_CONCURRENT_TASKS, ge=2, validation_alias=env("TOCSIN_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS")
    )
    worker_max_concurrent_activities: int = Field(
        DEFAULT_MAX_CONCURRENT_TASKS, ge=1, validation_alias=env("TOCSIN_WORKER_MAX_CONCURRENT_ACTIVITIES")
    )
    worker_max_concurrent_local_activities: int = Field(
        DEFAULT_MAX_CONCURRENT_TASKS, ge=1, validation_alias=env("TOCSIN_WORKER_MAX_CONCURRENT_LOCAL_ACTIVITIES")
    )
    worker_workflow_task_pollers: str = Field(
        str(DEFAULT_POLLERS.maximum), validation_alias=env("TOCSIN_WORKER_WORKFLOW_TASK_POLLERS")
    )
    worker_activity_task_pollers: str = Field(
        str(DEFAULT_POLLERS.maximum), validation_alias=env("TOCSIN_WORKER_ACTIVITY_TASK_POLLERS")
    )

    @field_validator("temporal_namespace", "task_queue", "smtp_sender")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise _invalid("must not be blank")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value:
            try:
                connect_options(value)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
        return value

    @field_validator("temporal_address")
    @classmethod
    def _temporal_address(cls, value: str | None) -> str | None:
        return _checked(check_temporal_address, value)

    @field_validator("metrics_bind")
    @classmethod
    def _metrics_bind(cls, value: str | None) -> str | None:
        return _checked(check_bind_address, value)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value:
            try:
                parts = urlsplit(value)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            except ValueError:
                valid = False
            if not valid:
                raise _invalid(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        try:
            parse_level(value)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        return value

    @field_validator("worker_workflow_task_pollers", "worker_activity_task_pollers")
    @classmethod
    def _pollers(cls, value: str, info: ValidationInfo) -> str:
        try:
            poller_behavior(value, minimum=POLLER_MINIMUMS[str(info.field_name)])
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        return value

    @property
    def worker_tuning(self) -> WorkerTuning:
        return WorkerTuning(
            max_cached_workflows=self.worker_max_cached_workflows,
            max_concurrent_workflow_tasks=self.worker_max_concurrent_workflow_tasks,
            max_concurrent_activities=self.worker_max_concurrent_activities,
            max_concurrent_local_activities=self.worker_max_concurrent_local_activities,
            workflow_task_poller_behavior=poller_behavior(
                self.worker_workflow_task_pollers, minimum=POLLER_MINIMUMS["worker_workflow_task_pollers"]
            ),
            activity_task_poller_behavior=poller_behavior(
                self.worker_activity_task_pollers, minimum=POLLER_MINIMUMS["worker_activity_task_pollers"]
            ),
        )

    # Private: not in repr or dumps, where an API key would leak.
    _temporal_connect: ClientConnectConfig = PrivateAttr(default_factory=lambda: ClientConnectConfig())

    @model_validator(mode="after")
    def _read_the_temporal_profile(self) -> Self:
        connect = temporal_connect_config()
        self._temporal_connect = connect
        # Set explicitly (an argument, TEMPORAL_ADDRESS, even None) wins; else the profile's.
        if "temporal_address" not in self.model_fields_set:
            profile_address = connect.get("target_host")
            if profile_address:
                try:
                    check_temporal_address(profile_address)
                except ValueError as exc:
                    raise ConfigurationError(f"the Temporal profile's address: {exc}") from None
            self.temporal_address = profile_address
        if "temporal_namespace" not in self.model_fields_set and connect.get("namespace"):
            self.temporal_namespace = connect["namespace"]
        return self

    @property
    def temporal_connect(self) -> ClientConnectConfig:
        """`Client.connect` arguments: the profile's, with this address and namespace."""
        config = self._temporal_connect.copy()
        config["namespace"] = self.temporal_namespace
        config.pop("target_host", None)
        if self.temporal_address:
            config["target_host"] = self.temporal_address
        return config


def _checked(check: Callable[[str], str], value: str | None) -> str | None:
    if not value:
        return value
    try:
        return check(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None


ENV_NAMES = TEMPORAL_SDK_ENV_NAMES | frozenset(
    str(choice)
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for choice in field.validation_alias.choices
)
