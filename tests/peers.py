"""Real local peers for channel and journey tests: an aiosmtpd SMTP server and a tiny HTTP server.

Each records what it received so a test asserts on what really crossed the wire.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http import HTTPStatus
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tocsin.channels import SmtpChannel


def free_port() -> int:
    """A port nothing listens on once this returns: a server's port, or a closed one to fail against."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class SmtpReplies:
    rcpt: str = "250 OK"
    data: str = "250 OK"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    email: EmailMessage


@dataclass
class SmtpServer:
    """An aiosmtpd server answering with `replies`; `received` holds each mail it was sent."""

    port: int
    replies: SmtpReplies
    received: list[ReceivedMail] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        envelope.rcpt_tos.append(address)
        return self.replies.rcpt

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return self.replies.data

    def channel(self) -> SmtpChannel:
        return SmtpChannel("127.0.0.1", self.port, sender="tocsin@example.com", timeout=5)


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """Parametrize indirectly with `SmtpReplies` to make the server refuse; it accepts by default."""
    server = SmtpServer(port=free_port(), replies=getattr(request, "param", SmtpReplies()))
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class HttpReply:
    status: int = 200
    body: bytes = b'{"id": "abc"}'
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any


@dataclass
class HttpServer:
    url: str
    received: list[ReceivedRequest]


@pytest.fixture
async def http_server(request: pytest.FixtureRequest) -> AsyncIterator[HttpServer]:
    """A minimal HTTP/1.1 server: records each request, answers every one with the `HttpReply` param."""
    reply: HttpReply = getattr(request, "param", HttpReply())
    received: list[ReceivedRequest] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.removesuffix("\r\n\r\n").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (h.split(":", 1) for h in header_lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, path, _ = request_line.split(" ")
        received.append(ReceivedRequest(method, path, headers, json.loads(body)))
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
        writer.write(
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
            f"Content-Length: {len(reply.body)}\r\nConnection: close\r\n{extra}\r\n".encode()
            + reply.body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield HttpServer(url=f"http://127.0.0.1:{port}/hooks/tocsin", received=received)
