"""Cloudflare Workers AI dialect: /ai/run/* and /client/v4/accounts/{id}/ai/* (reference §1)."""

from sdserve.api.dialect import Dialect

from .errors import WorkersAIError, render_error
from .router import router

__all__ = ["DIALECT"]

DIALECT: Dialect = Dialect(
    name="workers_ai",
    prefixes=("/ai/", "/client/v4/"),
    routers=(router,),
    render_error=render_error,
    error_model=WorkersAIError,
    # Cloudflare reads the body as JSON whatever its type (curl -d sends a form type).
    json_by_default=("/ai/run/", "/client/v4/accounts/"),
)
