"""The worker's channels from the environment (issue 9): the webhook adapter is there without TOCSIN_WEBHOOK_URL."""

from __future__ import annotations

import uuid

import pytest
from peers import HttpServer

from tocsin.channels import OutboundMessage, PermanentDeliveryError
from tocsin.settings import Settings
from tocsin.temporal.worker import channels_from_settings


def hook(content: dict[str, str]) -> OutboundMessage:
    delivery_id = uuid.uuid4()
    return OutboundMessage(
        delivery_id=delivery_id,
        idempotency_key=str(delivery_id),
        run_id=uuid.uuid4(),
        tenant_id="acme",
        recipient="ops",
        channel="webhook",
        step_key="ops",
        content=content,
    )


async def test_without_a_webhook_url_the_step_content_url_is_used(http_server: HttpServer) -> None:
    channels = channels_from_settings(Settings(database_url=None, temporal_address=None, webhook_url=None))
    message = hook({"url": http_server.url, "event": "bounced"})

    await channels["webhook"].send(message)

    (request,) = http_server.received
    assert (request.path, request.headers["idempotency-key"]) == ("/hooks/tocsin", str(message.delivery_id))
    with pytest.raises(PermanentDeliveryError) as caught:
        await channels["webhook"].send(hook({"event": "no url anywhere"}))
    assert caught.value.error == "webhook_url_missing"


async def test_the_configured_webhook_url_serves_steps_without_one(http_server: HttpServer) -> None:
    channels = channels_from_settings(Settings(database_url=None, temporal_address=None, webhook_url=http_server.url))

    await channels["webhook"].send(hook({"event": "bounced"}))

    assert [r.json["content"] for r in http_server.received] == [{"event": "bounced"}]
