"""The API dialects: one folder each, each exporting its ``Dialect`` record (``api/dialect.py``).

``DIALECTS`` is the one list the app, the error handlers and the OpenAPI document iterate
over; adding a dialect is a new folder and a line here. The order is the order their routes
are mounted (and listed in the OpenAPI document).
"""

from sdserve.api.dialect import Dialect

from . import a1111, comfyui, modelslab, native, openai, workers_ai

__all__ = ["DIALECTS", "DEFAULT"]

DIALECTS: tuple[Dialect, ...] = (
    workers_ai.DIALECT,
    openai.DIALECT,
    a1111.DIALECT,
    modelslab.DIALECT,
    comfyui.DIALECT,
    native.DIALECT,
)
# Renders the errors of (and documents) every path no dialect's prefixes claim.
DEFAULT: Dialect = native.DIALECT
