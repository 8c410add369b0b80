"""What routes need from the app: the service, the settings and the caller's identity.

Stored on ``app.state`` by ``build_app``; nothing here is global.
"""

from __future__ import annotations

from fastapi import Request

from ..config import Settings
from ..service.service import JobService

__all__ = ["service_of", "settings_of", "owner_of"]


def service_of(request: Request) -> JobService:
    return request.app.state.service  # type: ignore[no-any-return]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def owner_of(request: Request) -> str | None:
    """The caller's API key (raises Unauthorized), or None when the server is open."""
    return request.app.state.keys.owner(request)  # type: ignore[no-any-return]
