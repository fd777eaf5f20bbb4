"""Configuration from the environment (SPEC 8)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting tocsin reads. Unset database/Temporal addresses mean "use the embedded dev stack"."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(None, validation_alias=env("TOCSIN_DATABASE_URL"))
    temporal_address: str | None = Field(None, validation_alias=env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field("tocsin", validation_alias=env("TOCSIN_TASK_QUEUE"))
    reconcile_grace_seconds: int = Field(120, validation_alias=env("TOCSIN_RECONCILE_GRACE_SECONDS"))

    smtp_host: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_HOST"))
    smtp_port: int = Field(25, validation_alias=env("TOCSIN_SMTP_PORT"))
    smtp_sender: str = Field("tocsin@localhost", validation_alias=env("TOCSIN_SMTP_SENDER"))
    smtp_username: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_USERNAME"))
    smtp_password: str | None = Field(None, validation_alias=env("TOCSIN_SMTP_PASSWORD"))
    smtp_start_tls: bool = Field(False, validation_alias=env("TOCSIN_SMTP_START_TLS"))
    webhook_url: str | None = Field(None, validation_alias=env("TOCSIN_WEBHOOK_URL"))

    metrics_bind: str | None = Field(None, validation_alias=env("TOCSIN_METRICS_BIND"))
    otel_tracing: bool = Field(False, validation_alias=env("TOCSIN_OTEL_TRACING"))
    log_level: str = Field("INFO", validation_alias=env("TOCSIN_LOG_LEVEL"))


ENV_NAMES = frozenset(
    str(choice)
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for choice in field.validation_alias.choices
)
