"""Pure ASGI middleware: every response under the OpenAI paths carries ``x-request-id``.

The openai SDK exposes it as ``response._request_id`` and on its exceptions as
``request_id``, so users can quote it in bug reports. Middleware rather than a route
dependency so error responses, 404s and body-limit 413s get one too.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdHeader"]


class RequestIdHeader:
    """Adds ``x-request-id: req_<hex>`` to responses for paths under ``prefixes``."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
