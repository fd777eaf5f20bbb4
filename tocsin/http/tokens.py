"""Signed inbox tokens (SPEC 12.2) and resolving a request to its (tenant, recipient).

A token is `<payload>.<signature>`, both base64url without padding: the payload is the compact JSON
{"exp": <unix seconds>, "recipient": ..., "tenant": ...}, the signature its HMAC-SHA256 under the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request

from tocsin.core.errors import InvalidRequest

# A host's own authentication: the request's (tenant_id, recipient), or None (or an exception) for 401.
Authenticate = Callable[[Request], tuple[str, str] | Awaitable[tuple[str, str] | None] | None]


class InvalidToken(Exception):
    """Missing, malformed, forged or expired: the request is not authenticated."""


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    recipient: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise InvalidRequest("the token secret must not be empty")
    return key


def _sign(secret: str | bytes, payload: str) -> str:
    return _b64(hmac.new(_key(secret), payload.encode("ascii"), hashlib.sha256).digest())


def issue_token(
    secret: str | bytes, *, tenant_id: str, recipient: str, ttl: float | timedelta = 3600, now: float | None = None
) -> str:
    """A token for one recipient, valid for `ttl` (seconds or a timedelta; a negative one gives an expired token)."""
    for name, value in (("tenant_id", tenant_id), ("recipient", recipient)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"{name} must be a non-blank string")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    exp = math.floor((time.time() if now is None else now) + seconds)
    body = json.dumps({"exp": exp, "recipient": recipient, "tenant": tenant_id}, separators=(",", ":"), sort_keys=True)
    payload = _b64(body.encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: str | bytes, token: str, *, now: float | None = None) -> Principal:
    """The token's principal; InvalidToken when it is malformed, forged or expired."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature or not token.isascii():
        raise InvalidToken("malformed token")
    if not hmac.compare_digest(_sign(secret, payload), signature):
        raise InvalidToken("bad signature")
    try:
        claims = json.loads(_unb64(payload))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token")
    tenant, recipient, exp = claims.get("tenant"), claims.get("recipient"), claims.get("exp")
    if not isinstance(tenant, str) or not isinstance(recipient, str) or type(exp) is not int:
        raise InvalidToken("malformed token")
    if exp <= (time.time() if now is None else now):
        raise InvalidToken("expired token")
    return Principal(tenant, recipient)


def bearer(request: Request) -> str | None:
    """The token from `Authorization: Bearer`, or else from `?token=` (EventSource cannot send headers)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("not a bearer token")
        return value.strip()
    return request.query_params.get("token")


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def authenticator(
    secret: str | bytes | None, authenticate: Authenticate | None
) -> Callable[[Request], Awaitable[Principal]]:
    """The FastAPI dependency that turns a request into its principal, or answers 401."""
    if authenticate is not None:
        if secret is not None:
            raise InvalidRequest("create_app takes secret= or authenticate=, not both")
        return _by_host(authenticate)
    if secret is None:
        raise InvalidRequest("create_app needs secret= or authenticate=")
    return _by_token(_key(secret))


def _by_host(authenticate: Authenticate) -> Callable[[Request], Awaitable[Principal]]:
    async def principal(request: Request) -> Principal:
        try:
            found = authenticate(request)
            if inspect.isawaitable(found):
                found = await found
        except Exception as exc:  # the host said no, in its own way
            raise unauthorized("not authenticated") from exc
        if found is None:
            raise unauthorized("not authenticated")
        tenant_id, recipient = found
        return Principal(tenant_id, recipient)

    return principal


def _by_token(secret: bytes) -> Callable[[Request], Awaitable[Principal]]:
    async def principal(request: Request) -> Principal:
        try:
            token = bearer(request)
            if token is None:
                raise InvalidToken("missing token")
            return verify_token(secret, token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from exc

    return principal
