"""What routes need from the app: the service, the settings and the caller's identity.

Stored on ``app.state`` by ``build_app``; nothing here is global.
"""

from __future__ import annotations

import re

from fastapi import Request

from ..config import Settings
from ..service.service import JobService

__all__ = ["service_of", "settings_of", "owner_of", "warning_headers", "require_key"]


def service_of(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def owner_of(request: Request, token: str | None = None) -> str | None:
    """Who the caller is, as the owner id of its jobs, or None when the server is open.

    Raises Unauthorized (no or wrong key) or RateLimited (the key's rate limit). Checked
    once per request, so calling it again is free. ``token`` is for dialects that carry
    the key outside the Authorization header.
    """
    owner: str | None = request.app.state.keys.owner(request, token)
    return owner


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def warning_headers(warnings: list[str]) -> dict[str, str]:
    """``X-Sdserve-Warning``: the job's warnings in a header, the one place every dialect's
    client can read them, body or not (header values are Latin-1: anything else in a quoted
    prompt is escaped)."""
    if not warnings:
        return {}
    text = " | ".join(warnings).encode("ascii", "backslashreplace").decode()
    # Control characters (a caller's option name, a prompt's newline) are invalid in a header too.
    return {"X-Sdserve-Warning": _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)}


async def require_key(request: Request) -> None:
    """Route dependency: the key is checked before the body is parsed, so a caller without a
    valid key gets 401 whatever it sent (no validation messages, no work done). Async, so it
    runs on the event loop like the handler's own key check: a plain ``def`` would cost every
    request a trip through the thread pool for one indexed lookup."""
    owner_of(request)
