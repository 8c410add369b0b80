"""Bearer-token auth against the configured keys, and the request-body size limit."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, Unauthorized
from .errors import render_error

__all__ = ["KeyCheck", "BodyLimit"]


class KeyCheck:
    """Checks ``Authorization: Bearer <key>`` against static keys; open when there are none."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def open(self) -> bool:
        return not self._keys

    def owner(self, request: Request) -> str | None:
        """The caller's key (its identity as job owner), or None on an open server."""
        if self.open:
            return None
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authentication error: send 'Authorization: Bearer <API key>'")
        given = token.strip().encode()
        # Compare against every key in constant time so timing does not reveal prefixes.
        ok = False
        for k in self._keys:
            ok |= hmac.compare_digest(given, k)
        if not ok:
            raise Unauthorized("Authentication error: the API key is not valid")
        return token.strip()


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
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return msg

        await self.app(scope, limited, send)


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
