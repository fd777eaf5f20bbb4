"""The log channel: prints each message on one line. The demo's default, and handy in development."""

from __future__ import annotations

import json
import sys
from typing import ClassVar, TextIO

from tocsin.channels.base import OutboundMessage, SendReceipt


class LogChannel:
    """Writes `[tocsin] <channel> -> <recipient> (<step>): <content as compact JSON>` to `stream`."""

    instant: ClassVar[bool] = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: OutboundMessage) -> SendReceipt:
        # Compact JSON escapes newlines, so one message is always exactly one line.
        content = json.dumps(message.content, separators=(",", ":"), sort_keys=True, default=str)
        # sys.stdout is looked up now, not at construction, so redirection (pytest's capsys,
        # contextlib.redirect_stdout) made after the channel was built is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        print(
            f"[tocsin] {message.channel} -> {message.recipient} ({message.step_key}): {content}",
            file=stream,
            flush=True,
        )
        return SendReceipt(provider_message_id=f"log:{message.delivery_id}")
