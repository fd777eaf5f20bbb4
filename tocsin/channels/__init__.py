"""Channel adapters: the protocol, its errors, and the built-in in_app, log, webhook and smtp channels."""

from __future__ import annotations

from tocsin.channels.base import (
    Channel,
    DeliveryBounced,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
    is_instant,
)
from tocsin.channels.in_app import InAppChannel
from tocsin.channels.log import LogChannel
from tocsin.channels.smtp import SmtpChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.core.errors import InvalidRequest

__all__ = [
    "Channel",
    "DeliveryBounced",
    "DeliveryError",
    "InAppChannel",
    "LogChannel",
    "OutboundMessage",
    "PermanentDeliveryError",
    "SendReceipt",
    "SmtpChannel",
    "TemporaryDeliveryError",
    "WebhookChannel",
    "builtin_channels",
    "is_instant",
]


def builtin_channels(
    *,
    smtp: SmtpChannel | None = None,
    webhook: WebhookChannel | None = None,
    default_email: str = "log",
) -> dict[str, Channel]:
    """The built-in adapters: `in_app` and `log` always, `email` and `webhook` when configured.

    Without `smtp`, the `email` channel is served by the built-in channel named `default_email`
    (`"log"` prints emails, as the demo wants); `""` leaves email without an adapter, so its
    deliveries fail with `no_channel_adapter`.
    """
    channels: dict[str, Channel] = {"in_app": InAppChannel(), "log": LogChannel()}
    if default_email and default_email not in channels:
        raise InvalidRequest(f"default_email must be one of {sorted(channels)} or '', not {default_email!r}")
    email = smtp if smtp is not None else channels.get(default_email)
    if email is not None:
        channels["email"] = email
    if webhook is not None:
        channels["webhook"] = webhook
    return channels
