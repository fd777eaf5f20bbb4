"""The built-in channel adapters, against real peers: an aiosmtpd server and a local HTTP server."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from peers import HttpReply, HttpServer, SmtpReplies, SmtpServer, free_port

from tocsin.channels import (
    Channel,
    DeliveryBounced,
    DeliveryError,
    InAppChannel,
    LogChannel,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    SmtpChannel,
    TemporaryDeliveryError,
    WebhookChannel,
    builtin_channels,
    is_instant,
)
from tocsin.core.errors import InvalidRequest


def make_message(**overrides: Any) -> OutboundMessage:
    delivery_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "idempotency_key": str(delivery_id),
        "run_id": uuid.uuid4(),
        "tenant_id": "acme",
        "recipient": "email:ada@example.com",
        "channel": "email",
        "step_key": "first_email",
        "content": {"subject": "You were mentioned", "body": "Hello Ada"},
    }
    return OutboundMessage(**(fields | overrides))


# --- SMTP ---------------------------------------------------------------------------------------


async def test_smtp_sends_the_email_with_the_idempotency_key_as_message_id(smtp_server: SmtpServer) -> None:
    message = make_message()

    receipt = await smtp_server.channel().send(message)

    [mail] = smtp_server.received
    email = mail.email
    assert (mail.mail_from, mail.rcpt_tos) == ("tocsin@example.com", ["ada@example.com"])
    assert email["From"] == "tocsin@example.com"
    assert email["To"] == "ada@example.com"
    assert email["Subject"] == "You were mentioned"
    assert email["Message-ID"] == f"<{message.idempotency_key}@tocsin.local>"
    assert email.get_content().strip() == "Hello Ada"
    assert receipt.provider_message_id == email["Message-ID"]
    assert receipt.provider_response == {"response": "OK"}


async def test_smtp_sends_html_alternative_to_content_address(smtp_server: SmtpServer) -> None:
    content = {"subject": "Hi", "body": "plain", "html": "<p>rich</p>", "to": "grace@example.com"}

    await smtp_server.channel().send(make_message(recipient="user:42", content=content))

    [mail] = smtp_server.received
    email = mail.email
    assert mail.rcpt_tos == ["grace@example.com"]
    assert email["To"] == "grace@example.com"
    assert email.get_content_type() == "multipart/alternative"
    plain, html = email.get_body(("plain",)), email.get_body(("html",))
    assert plain is not None and html is not None
    assert (plain.get_content().strip(), html.get_content().strip()) == ("plain", "<p>rich</p>")


@pytest.mark.parametrize(
    ("smtp_server", "error_type", "error"),
    [
        (SmtpReplies(rcpt="550 5.1.1 no such user"), DeliveryBounced, "smtp_550"),
        (SmtpReplies(rcpt="451 try later"), TemporaryDeliveryError, "smtp_451"),
        (SmtpReplies(data="554 5.7.1 rejected as spam"), PermanentDeliveryError, "smtp_554"),
        (SmtpReplies(data="452 mailbox full"), TemporaryDeliveryError, "smtp_452"),
    ],
    indirect=["smtp_server"],
)
async def test_smtp_maps_refusals(smtp_server: SmtpServer, error_type: type[DeliveryError], error: str) -> None:
    with pytest.raises(error_type) as caught:
        await smtp_server.channel().send(make_message())

    assert caught.value.error == error
    assert caught.value.provider_response["code"] == int(error.removeprefix("smtp_"))


async def test_smtp_unreachable_server_is_temporary() -> None:
    channel = SmtpChannel("127.0.0.1", free_port(), sender="tocsin@example.com", timeout=5)

    with pytest.raises(TemporaryDeliveryError) as caught:
        await channel.send(make_message())

    assert caught.value.error == "smtp_connection_error"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"recipient": "user:42"}, "no_email_address"),
        ({"content": {"subject": "Hi\nBcc: eve@example.com", "body": "x"}}, "invalid_email_header"),
    ],
)
async def test_smtp_unsendable_message_is_permanent_without_connecting(overrides: dict[str, Any], error: str) -> None:
    # Nothing listens on this port: reaching it would raise TemporaryDeliveryError instead.
    channel = SmtpChannel("127.0.0.1", free_port(), sender="tocsin@example.com", timeout=5)

    with pytest.raises(PermanentDeliveryError) as caught:
        await channel.send(make_message(**overrides))

    assert caught.value.error == error


# --- Webhook ------------------------------------------------------------------------------------


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hooks/tocsin"


@pytest.mark.parametrize("shared_client", [False, True])
async def test_webhook_posts_json_with_idempotency_key(http_server: HttpServer, shared_client: bool) -> None:
    message = make_message(channel="webhook", content={"text": "You were mentioned"})
    async with httpx.AsyncClient() as client:
        channel = WebhookChannel(
            http_server.url,
            headers={"Authorization": "Bearer s3cret"},
            client=client if shared_client else None,
        )
        receipt = await channel.send(message)

    assert receipt.provider_message_id == "abc"
    assert receipt.provider_response == {"status": 200}
    [request] = http_server.received
    assert (request.method, request.path) == ("POST", "/hooks/tocsin")
    assert request.headers["idempotency-key"] == message.idempotency_key
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.json == {
        "delivery_id": str(message.delivery_id),
        "run_id": str(message.run_id),
        "tenant_id": "acme",
        "recipient": "email:ada@example.com",
        "channel": "webhook",
        "step_key": "first_email",
        "content": {"text": "You were mentioned"},
    }


@pytest.mark.parametrize(
    ("http_server", "provider_message_id"),
    [
        (HttpReply(202, b"accepted", (("X-Request-Id", "req-7"),)), "req-7"),
        (HttpReply(204, b""), None),
    ],
    indirect=["http_server"],
)
async def test_webhook_message_id_falls_back_to_request_id_header(
    http_server: HttpServer, provider_message_id: str | None
) -> None:
    receipt = await WebhookChannel(http_server.url).send(make_message())

    assert receipt.provider_message_id == provider_message_id


@pytest.mark.parametrize(
    ("http_server", "error_type", "status"),
    [
        (HttpReply(503), TemporaryDeliveryError, 503),
        (HttpReply(429), TemporaryDeliveryError, 429),
        (HttpReply(408), TemporaryDeliveryError, 408),
        (HttpReply(410), DeliveryBounced, 410),
        (HttpReply(400), PermanentDeliveryError, 400),
        (HttpReply(404), PermanentDeliveryError, 404),
    ],
    indirect=["http_server"],
)
async def test_webhook_maps_error_statuses(
    http_server: HttpServer, error_type: type[DeliveryError], status: int
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await WebhookChannel(http_server.url).send(make_message())

    assert type(caught.value) is error_type
    assert (caught.value.error, caught.value.provider_response) == (f"http_{status}", {"status": status})
    assert len(http_server.received) == 1


async def test_webhook_unreachable_endpoint_is_temporary() -> None:
    with pytest.raises(TemporaryDeliveryError) as caught:
        await WebhookChannel(closed_url()).send(make_message())

    assert caught.value.error == "webhook_transport_error"


async def test_webhook_content_url_overrides_configured_url(http_server: HttpServer) -> None:
    message = make_message(content={"url": http_server.url, "text": "hi"})

    receipt = await WebhookChannel(closed_url()).send(message)

    assert receipt.provider_message_id == "abc"
    assert [r.json["content"] for r in http_server.received] == [{"url": http_server.url, "text": "hi"}]


@pytest.mark.parametrize(
    ("content", "error"),
    [({"text": "hi"}, "webhook_url_missing"), ({"url": "not a url"}, "webhook_url_invalid")],
)
async def test_webhook_without_usable_url_is_permanent(content: dict[str, Any], error: str) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await WebhookChannel().send(make_message(content=content))

    assert caught.value.error == error


# --- in_app, log, registry ----------------------------------------------------------------------


async def test_in_app_receipt_names_the_delivery() -> None:
    message = make_message(channel="in_app")

    receipt = await InAppChannel().send(message)

    assert receipt.provider_message_id == f"in_app:{message.delivery_id}"


async def test_log_prints_one_line_per_message() -> None:
    stream = io.StringIO()
    message = make_message(channel="log", recipient="user:42", content={"title": "Hi\nthere", "n": 1})

    receipt = await LogChannel(stream).send(message)

    assert stream.getvalue() == '[tocsin] log -> user:42 (first_email): {"n":1,"title":"Hi\\nthere"}\n'
    assert receipt.provider_message_id == f"log:{message.delivery_id}"


async def test_log_defaults_to_stdout_at_send_time(capsys: pytest.CaptureFixture[str]) -> None:
    await LogChannel().send(make_message(channel="log"))

    assert capsys.readouterr().out.startswith("[tocsin] log -> email:ada@example.com (first_email): ")


def test_builtin_channels() -> None:
    smtp = SmtpChannel("127.0.0.1", 25, sender="tocsin@example.com")
    webhook = WebhookChannel("http://127.0.0.1/hook")

    demo = builtin_channels()
    configured = builtin_channels(smtp=smtp, webhook=webhook)

    assert sorted(demo) == ["email", "in_app", "log"]
    assert demo["email"] is demo["log"]
    assert configured["email"] is smtp and configured["webhook"] is webhook
    assert sorted(builtin_channels(default_email="")) == ["in_app", "log"]
    assert all(isinstance(channel, Channel) for channel in configured.values())
    with pytest.raises(InvalidRequest):
        builtin_channels(default_email="sms")


def test_only_channels_that_call_no_provider_are_instant() -> None:
    """An instant channel's sends run as local activities (workflows/journey.py): in_app and log, not a provider's."""
    channels = builtin_channels(
        smtp=SmtpChannel("127.0.0.1", free_port(), sender="tocsin@example.com"),
        webhook=WebhookChannel("http://127.0.0.1:9/hook"),
    )
    assert {name for name, channel in channels.items() if is_instant(channel)} == {"in_app", "log"}
    assert not is_instant(None)  # no adapter: the send is an activity task that records `no_channel_adapter`

    class Adapter:  # a user's adapter says nothing: it may call a provider
        async def send(self, message: OutboundMessage) -> SendReceipt:
            return SendReceipt()

    assert not is_instant(Adapter())
