"""A channel whose next answer the test chooses, and that records every message it was handed.

A real `Channel` (the protocol dispatch calls), not a mock of a provider: tests of the engine's decisions script
what "the provider" says without a network peer, and count the sends that really left tocsin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from tocsin.channels import (
    DeliveryBounced,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
)

# What the provider answers: delivered, accepted (delivery reported later), a temporary, permanent or bounce
# error, or an exception the adapter does not classify (an adapter bug).
Answer = Literal["ok", "accepted", "temporary", "permanent", "bounced", "adapter_bug"]
ANSWERS: tuple[Answer, ...] = get_args(Answer)

# The delivery's (status, suppression_reason) after one send answered so, when its run is still unfinished.
AFTER_SEND: dict[Answer, tuple[str, str | None]] = {
    "ok": ("succeeded", None),
    "accepted": ("dispatched", None),
    "temporary": ("failed", None),
    "permanent": ("cancelled", "permanent_failure"),
    "bounced": ("cancelled", "bounced"),
    "adapter_bug": ("failed", None),
}


@dataclass
class ScriptedChannel:
    answer: Answer = "ok"
    sent: list[tuple[OutboundMessage, Answer]] = field(default_factory=list)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.sent.append((message, self.answer))
        match self.answer:
            case "ok":
                return SendReceipt(provider_message_id=f"msg-{len(self.sent)}")
            case "accepted":
                return SendReceipt(provider_message_id=f"msg-{len(self.sent)}", awaiting_feedback=True)
            case "temporary":
                raise TemporaryDeliveryError("http_503")
            case "permanent":
                raise PermanentDeliveryError("http_400")
            case "bounced":
                raise DeliveryBounced("http_410")
            case "adapter_bug":
                raise RuntimeError("the adapter tripped over its own feet")
