"""What routes declare about their own responses in the OpenAPI document.

Dialect routers import these; the error bodies of every response are filled in afterwards
by ``openapi.py`` from the dialect records.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JOB_ERRORS", "PUBLIC", "BINARY"]

# Statuses a route that queues a job may answer besides the common ones; routes pass this
# as ``responses=`` and the shape is filled in by openapi.py.
JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    402: {"description": "The key's image credits are spent."},
    409: {"description": "The job was canceled before it finished."},
    500: {"description": "The engine failed on valid input (the server's fault)."},
    503: {"description": "The queue is full or the model's weights are missing (Retry-After)."},
}
# A route marked with this answers without an API key (health, capability links); it gets
# no 401/429 entries.
PUBLIC: dict[str, Any] = {"x-sdserve-public": True}
# The schema of a raw image body.
BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
