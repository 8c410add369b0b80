"""Who is calling (API keys: static ones from the config and ones in the key store, with
their rate limits), and the request-body size limit."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, Unauthorized
from ..service.keys import KeyStore
from ..service.ratelimit import RateLimiter
from .errors import render_error

__all__ = ["KeyAuth", "BodyLimit", "bearer_token"]

_HOW = "send 'Authorization: Bearer <API key>'"


def bearer_token(request: Request) -> str | None:
    """The key a request carries: a Bearer token, or the password of HTTP Basic auth (how
    A1111 clients such as webuiapi send credentials)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


class KeyAuth:
    """Checks a caller's key against the static keys (config) and the key store.

    The owner id it returns names the caller in job records without holding the key:
    ``key_...`` for stored keys, ``static-<hash prefix>`` for static ones, None when the
    server is open (no keys of either kind).
    """

    def __init__(self, static_keys: list[str], keys: KeyStore, limiter: RateLimiter) -> None:
        self._static = [k.encode() for k in static_keys]
        self.keys = keys
        self.limiter = limiter

    @property
    def open(self) -> bool:
        return not self._static and not self.keys.any_active()

    def owner(self, request: Request, token: str | None = None) -> str | None:
        """The caller's owner id (raises Unauthorized or RateLimited), once per request.

        ``token`` is for dialects that carry the key elsewhere (ModelsLab's body ``key``).
        """
        cached = request.scope.get("sdserve.owner", ...)
        if cached is not ...:
            known: str | None = cached  # what this method stored below
            return known
        owner = self.check(token if token is not None else bearer_token(request))
        request.scope["sdserve.owner"] = owner
        return owner

    def check(self, token: str | None) -> str | None:
        if self.open:
            return None
        if not token:
            raise Unauthorized(f"Authentication error: {_HOW}")
        given = token.encode()
        # Compare against every static key in constant time so timing reveals no prefix.
        static = False
        for k in self._static:
            static |= hmac.compare_digest(given, k)
        if static:
            return "static-" + hashlib.sha256(given).hexdigest()[:16]
        record = self.keys.authenticate(token)
        if record is None:
            raise Unauthorized("Authentication error: the API key is not valid")
        if record.rate_limit is not None:
            self.limiter.check(record.id, record.rate_limit)
        return record.id


class BodyLimit:
    """Pure ASGI middleware: bodies over ``limit`` bytes get 413 in the dialect's shape,
    whether the size is declared (Content-Length) or discovered while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = PayloadTooLarge("body", f"request is too large: the limit is {self.limit} bytes")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await render_error(scope["path"], too_big)(scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        # No Content-Length (chunked): read the body here, up to the limit, so an oversized
        # one is answered 413 before any route starts parsing it; then replay it.
        messages: list[Message] = []
        seen = 0
        while True:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                break
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                await render_error(scope["path"], too_big)(scope, receive, send)
                return
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


class JsonByDefault:
    """Pure ASGI middleware: POST bodies under ``prefixes`` are JSON whatever Content-Type
    says. Workers AI accepts JSON sent as curl's default form type; FastAPI would not."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(self.prefixes):
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
