"""OpenAI Images dialect: /v1/images/* and /v1/models (reference §2)."""

from starlette.middleware import Middleware

from sdserve.api.dialect import Dialect

from .errors import OpenAIError, render_error, renderer_for
from .request_id import RequestIdHeader
from .router import router

__all__ = ["DIALECT"]

_PREFIXES = ("/v1/images", "/v1/models")

DIALECT: Dialect = Dialect(
    name="openai",
    prefixes=_PREFIXES,
    routers=(router,),
    render_error=render_error,
    error_model=OpenAIError,
    middleware=(Middleware(RequestIdHeader, prefixes=_PREFIXES),),
    exposed_headers=("x-request-id",),
    renderer_for=renderer_for,
)
