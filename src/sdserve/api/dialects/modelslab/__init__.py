"""stablediffusionapi / ModelsLab dialect: /api/v3/* and the v6 image routes of modelslab_py."""

from sdserve.api.dialect import Dialect

from .errors import ModelsLabError, render_error
from .router import install, router

__all__ = ["DIALECT"]

DIALECT: Dialect = Dialect(
    name="modelslab",
    prefixes=("/api/v3/", "/api/v6/", "/api/v5/"),  # v5: its ControlNet endpoint
    routers=(router,),
    render_error=render_error,
    error_model=ModelsLabError,
    on_build=install,  # its webhook body, registered before any job can finish
)
