"""The in-app channel: the delivery row itself is the inbox item, so there is nothing to send."""

from __future__ import annotations

from typing import ClassVar

from tocsin.channels.base import OutboundMessage, SendReceipt


class InAppChannel:
    """Succeeds at once; the inbox reads the delivery row (`Tocsin.inbox`, `mark_read`)."""

    instant: ClassVar[bool] = True

    async def send(self, message: OutboundMessage) -> SendReceipt:
        return SendReceipt(provider_message_id=f"in_app:{message.delivery_id}")
