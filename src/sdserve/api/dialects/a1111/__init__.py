"""AUTOMATIC1111 stable-diffusion-webui dialect: /sdapi/v1/* (reference §4)."""

from sdserve.api.dialect import Dialect

from .errors import A1111Error, render_error
from .extras import extras_router
from .controlnet_router import router as controlnet_router
from .router import router

__all__ = ["DIALECT"]

DIALECT: Dialect = Dialect(name="a1111", prefixes=("/sdapi/", "/controlnet/"), routers=(router, extras_router, controlnet_router),
                  render_error=render_error,
                  error_model=A1111Error)
