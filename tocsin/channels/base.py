"""The channel adapter protocol: the message handed to an adapter, its receipt, and its failures."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tocsin.core.errors import TocsinError


class OutboundMessage(BaseModel):
    """One rendered delivery, as handed to a channel adapter.

    `idempotency_key` is stable across attempts of the same delivery: adapters pass it on to the
    provider (an `Idempotency-Key` header, an email's `Message-ID`, ...) so that a retry after a
    lost response is deduplicated there.
    """

    model_config = ConfigDict(frozen=True)

    delivery_id: uuid.UUID
    idempotency_key: str
    run_id: uuid.UUID
    tenant_id: str
    recipient: str
    channel: str
    step_key: str
    content: dict[str, Any]


class SendReceipt(BaseModel):
    """What a provider said when it accepted a message; recorded on the delivery attempt.

    `awaiting_feedback`: the provider took the message but reports delivery later (a relay's bounce, a
    delivery webhook). The delivery then stays `dispatched` until `record_delivery_outcome` settles it.
    """

    provider_message_id: str | None = None
    provider_response: dict[str, Any] = Field(default_factory=dict)
    awaiting_feedback: bool = False


@runtime_checkable
class Channel(Protocol):
    """A channel adapter: return a receipt on success, raise a `DeliveryError` subclass otherwise.

    An adapter whose send calls no provider (it writes or prints here, in bounded time: in_app, log) may say so
    with a class attribute `instant = True` (see `is_instant`).
    """

    async def send(self, message: OutboundMessage) -> SendReceipt: ...


def is_instant(channel: Channel | None) -> bool:
    """Whether a send through `channel` calls no provider: the workflow then runs it as a local activity on its own
    worker, like a decision, instead of an activity task with heartbeats (a provider call may take minutes)."""
    return bool(getattr(channel, "instant", False))


class DeliveryError(TocsinError):
    """A send that did not succeed. `error` is a short stable code (`http_503`, `smtp_550`, ...).

    Raise one of the subclasses; `error_class` tells dispatch how the delivery ends. A bare
    `DeliveryError` counts as temporary, so an unclassified failure is retried, not dropped.
    """

    error_class: ClassVar[str] = "temporary"

    def __init__(self, error: str, *, provider_response: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.provider_response: dict[str, Any] = provider_response or {}


def exception_detail(exc: BaseException) -> dict[str, Any]:
    """A `provider_response` for a failure the provider never answered (refused, timed out, bad URL)."""
    return {"detail": f"{type(exc).__name__}: {exc}"}


class TemporaryDeliveryError(DeliveryError):
    """The provider may accept the same message later (rate limited, unreachable, 4xx SMTP reply)."""

    error_class: ClassVar[str] = "temporary"


class PermanentDeliveryError(DeliveryError):
    """Sending the same message again cannot succeed (rejected request, missing address, ...)."""

    error_class: ClassVar[str] = "permanent"


class DeliveryBounced(DeliveryError):
    """The recipient's address or endpoint is gone for good (SMTP 5xx on RCPT, HTTP 410)."""

    error_class: ClassVar[str] = "bounced"
