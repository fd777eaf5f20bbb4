"""RecordingChannel: a channel adapter for tests that records every message and answers from a script."""

from __future__ import annotations

from typing import Literal, get_args

from tocsin.channels.base import (
    DeliveryBounced,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
)

Action = Literal["ok", "temp", "perm", "bounce", "awaiting_feedback"]
ACTIONS: tuple[Action, ...] = get_args(Action)


class RecordingChannel:
    """Answers each send with the next action of its script; the last action repeats (none: always "ok").

    - `"ok"`: accepted and delivered (the delivery succeeds);
    - `"temp"`: a temporary failure (retried as the step's retry policy says, then `retries_exhausted`);
    - `"perm"`: a permanent failure (`permanent_failure`, not retried);
    - `"bounce"`: the address is gone (`bounced`);
    - `"awaiting_feedback"`: accepted, delivery reported later: the delivery stays `dispatched` until
      `Tocsin.record_delivery_outcome` settles it.

    Every message handed to it, whatever the answer, is appended to `messages`.
    """

    def __init__(self, *script: Action, instant: bool = False) -> None:
        self.messages: list[OutboundMessage] = []
        # As the channel it stands in for (`tocsin.channels.is_instant`): in_app and log are instant.
        self.instant = instant
        self._script: tuple[Action, ...] = ()
        self._sent = 0
        self.script(*script)

    def script(self, *actions: Action) -> None:
        """Replace the script: the next send answers with `actions[0]`."""
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown channel action(s) {unknown}: expected one of {', '.join(ACTIONS)}")
        self._script = actions
        self._sent = 0

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.messages.append(message)
        action = self._script[min(self._sent, len(self._script) - 1)] if self._script else "ok"
        self._sent += 1
        if action == "temp":
            raise TemporaryDeliveryError("scripted_temporary_failure")
        if action == "perm":
            raise PermanentDeliveryError("scripted_permanent_failure")
        if action == "bounce":
            raise DeliveryBounced("scripted_bounce")
        receipt_id = f"recorded:{message.delivery_id}:{len(self.messages)}"
        return SendReceipt(provider_message_id=receipt_id, awaiting_feedback=action == "awaiting_feedback")
