"""ComfyUI dialect: API-format graphs on /prompt, followed over /ws, with /history, /view,
/upload, /queue, /object_info and the rest of ComfyUI's server routes (also under /api)."""

from sdserve.api.dialect import Dialect

from .errors import ComfyError, render_error
from .router import api_router, router, ws_router

__all__ = ["DIALECT"]

_ROUTES = ("/prompt", "/history", "/view", "/upload/", "/queue", "/interrupt", "/object_info", "/system_stats",
           "/embeddings", "/models", "/features", "/ws")

DIALECT: Dialect = Dialect(
    name="comfyui",
    prefixes=(*_ROUTES, *("/api" + r for r in _ROUTES)),
    routers=(router, api_router, ws_router),
    render_error=render_error,
    error_model=ComfyError,
    # ComfyUI reads these bodies as JSON whatever Content-Type says (urllib's default form type).
    json_by_default=tuple(p + s for s in ("/prompt", "/queue", "/history", "/interrupt") for p in ("", "/api")),
)
