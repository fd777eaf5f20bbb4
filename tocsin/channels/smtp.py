"""The email channel over SMTP, with aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from tocsin.channels.base import (
    DeliveryBounced,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    SendReceipt,
    TemporaryDeliveryError,
    exception_detail,
)


class SmtpChannel:
    """Sends the step's content (`subject`, `body`, optional `html`, optional `to`) as one email.

    The address is `content["to"]` if set, else the recipient with any `email:` prefix removed.
    The `Message-ID` is `<idempotency_key@message_id_domain>`, the same on every attempt, so a
    provider that deduplicates on it drops a retried duplicate.

    Outcomes: every recipient refused with 5xx bounces, a 4xx refusal is temporary; any other
    5xx reply fails permanently, 4xx is temporary; connection failures and timeouts are temporary.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
        use_tls: bool = False,
        timeout: float = 30.0,
        message_id_domain: str = "tocsin.local",
        await_feedback: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._start_tls = start_tls
        self._use_tls = use_tls
        self._timeout = timeout
        self._message_id_domain = message_id_domain
        # A relay's 250 is not delivery: with await_feedback the delivery waits for the bounce/DSN report.
        self._await_feedback = await_feedback

    async def send(self, message: OutboundMessage) -> SendReceipt:
        email = self._build(message)
        try:
            _, response = await aiosmtplib.send(
                email,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._start_tls,
                use_tls=self._use_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Judge by the mildest refusal: if any recipient was only deferred (4xx), retrying helps.
            refusal = min(exc.recipients, key=lambda r: r.code)
            bounced = refusal.code >= 500
            raise _reply_error(refusal, DeliveryBounced if bounced else TemporaryDeliveryError) from exc
        except aiosmtplib.SMTPResponseException as exc:
            permanent = exc.code >= 500
            raise _reply_error(exc, PermanentDeliveryError if permanent else TemporaryDeliveryError) from exc
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise TemporaryDeliveryError("smtp_connection_error", provider_response=exception_detail(exc)) from exc
        return SendReceipt(
            provider_message_id=email["Message-ID"],
            provider_response={"response": response},
            awaiting_feedback=self._await_feedback,
        )

    def _build(self, message: OutboundMessage) -> EmailMessage:
        content = message.content
        address = str(content.get("to") or message.recipient.removeprefix("email:"))
        if "@" not in address:
            raise PermanentDeliveryError("no_email_address", provider_response={"recipient": address})
        email = EmailMessage()
        try:
            email["From"] = self._sender
            email["To"] = address
            email["Subject"] = str(content.get("subject", ""))
            email["Message-ID"] = f"<{message.idempotency_key}@{self._message_id_domain}>"
        except ValueError as exc:  # a header with a line break: rendered content that can never be sent
            raise PermanentDeliveryError("invalid_email_header", provider_response=exception_detail(exc)) from exc
        email.set_content(str(content.get("body", "")))
        if "html" in content:
            email.add_alternative(str(content["html"]), subtype="html")
        return email


def _reply_error(reply: aiosmtplib.SMTPResponseException, error_type: type[DeliveryError]) -> DeliveryError:
    return error_type(f"smtp_{reply.code}", provider_response={"code": reply.code, "message": reply.message})
