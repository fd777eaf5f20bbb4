"""Configuration from the environment (SPEC 8), and the Temporal connection the SDK's envconfig describes (SPEC 14)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.service import TLSConfig

from tocsin.core.errors import ConfigurationError

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

    # Private: not in repr or dumps, where an API key would leak.
    _temporal_connect: ClientConnectConfig = PrivateAttr(default_factory=lambda: ClientConnectConfig())

    @model_validator(mode="after")
    def _read_the_temporal_profile(self) -> Self:
        connect = temporal_connect_config()
        self._temporal_connect = connect
        # Set explicitly (an argument, TEMPORAL_ADDRESS, even None) wins; else the profile's.
        if "temporal_address" not in self.model_fields_set:
            self.temporal_address = connect.get("target_host")
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


ENV_NAMES = TEMPORAL_SDK_ENV_NAMES | frozenset(
    str(choice)
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for choice in field.validation_alias.choices
)
