"""Pure ASGI middleware: A1111 clients log in with HTTP Basic (webui's ``--api-auth user:pass``;
``webuiapi.set_auth``), sdserve's keys are bearer tokens. Under the A1111 prefix,
``Authorization: Basic base64(user:KEY)`` is read as ``Bearer KEY`` (the user name is ignored),
so the one key check serves every dialect.
"""

from __future__ import annotations

import base64
import binascii

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BasicAuthAsBearer"]


class BasicAuthAsBearer:
    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            scope = {**scope, "headers": [self._rewrite(k, v) for k, v in scope.get("headers", [])]}
        await self.app(scope, receive, send)

    @staticmethod
    def _rewrite(key: bytes, value: bytes) -> tuple[bytes, bytes]:
        if key != b"authorization" or not value[:6].lower() == b"basic ":
            return key, value
        try:
            _, _, password = base64.b64decode(value[6:].strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return key, value  # left as is: the key check rejects it with 401
        return key, b"Bearer " + password
