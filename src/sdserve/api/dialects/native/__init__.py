"""sdserve's own job API: /v1/jobs with Server-Sent Events progress, and /v1/outputs."""

from sdserve.api.dialect import Dialect

from .errors import NativeError, render_error
from .router import router

__all__ = ["DIALECT"]

# No prefixes of its own: it is the default dialect (api/dialects/__init__.py), which
# answers every path no other dialect claims (its /v1/jobs, /v1/outputs, /v1/catalog, and
# health, metrics and the playground).
DIALECT: Dialect = Dialect(name="native", prefixes=(), routers=(router,), render_error=render_error,
                  error_model=NativeError)
