"""The webhook channel: POSTs each message as JSON with httpx."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from tocsin.channels.base import (
    DeliveryBounced,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
    exception_detail,
)

# The fields of OutboundMessage a receiver sees; the idempotency key travels as a header instead.
_BODY_FIELDS = {"delivery_id", "run_id", "tenant_id", "recipient", "channel", "step_key", "content"}
# Statuses that say "not now" rather than "never": timeout, too early, rate limited.
_RETRYABLE_4XX = {408, 425, 429}


class WebhookChannel:
    """POSTs `{delivery_id, run_id, tenant_id, recipient, channel, step_key, content}` as JSON.

    The request carries `Idempotency-Key: <message.idempotency_key>` plus the configured `headers`.
    A step whose rendered content has a string `url` is posted there instead of to `url`, so
    one adapter serves steps with per-journey endpoints; with neither, the delivery fails
    permanently (`webhook_url_missing`).

    Outcomes: 2xx succeeds (the provider message id is the JSON body's `id`, else the
    `X-Request-Id` header); 408, 425, 429, 5xx and transport errors (refused, timed out) are
    temporary; 410 Gone bounces; any other status fails permanently. Pass `client` to share one
    connection pool across sends; otherwise each send opens and closes its own.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._client = client

    async def send(self, message: OutboundMessage) -> SendReceipt:
        url = message.content.get("url")
        if not isinstance(url, str) or not url:
            url = self._url
        if not url:
            raise PermanentDeliveryError("webhook_url_missing")
        headers = {**self._headers, "Idempotency-Key": message.idempotency_key}
        body = message.model_dump(mode="json", include=_BODY_FIELDS)
        try:
            async with self._client_for_send() as client:
                response = await client.post(url, json=body, headers=headers, timeout=self._timeout)
        # UnsupportedProtocol is a TransportError, but a URL without http(s) never starts working.
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentDeliveryError("webhook_url_invalid", provider_response=exception_detail(exc)) from exc
        except httpx.TransportError as exc:
            raise TemporaryDeliveryError("webhook_transport_error", provider_response=exception_detail(exc)) from exc
        if response.is_success:
            return SendReceipt(
                provider_message_id=_provider_message_id(response),
                provider_response={"status": response.status_code},
            )
        raise _status_error(response.status_code)

    def _client_for_send(self) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        # A shared client is the caller's to close; a per-send one is closed here.
        if self._client is not None:
            return contextlib.nullcontext(self._client)
        return httpx.AsyncClient()


def _status_error(status: int) -> DeliveryError:
    error_type: type[DeliveryError]
    if status in _RETRYABLE_4XX or status >= 500:
        error_type = TemporaryDeliveryError
    elif status == 410:
        error_type = DeliveryBounced
    else:
        # Other 4xx, and 3xx too: redirects are not followed, so the configured URL is wrong.
        error_type = PermanentDeliveryError
    return error_type(f"http_{status}", provider_response={"status": status})


def _provider_message_id(response: httpx.Response) -> str | None:
    try:
        payload: Any = response.json()
    except ValueError:  # an empty or non-JSON body is fine; it just carries no id
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("id"), str | int):
        return str(payload["id"])
    request_id: str | None = response.headers.get("X-Request-Id")
    return request_id
