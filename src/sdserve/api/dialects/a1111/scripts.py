"""A1111 scripts that run here: "SD upscale" on img2img (scripts/sd_upscale.py), read from
``script_name``/``script_args`` into the engine's ``sd_upscale`` field. Any other script
name stays refused by name (422, as A1111 answers a script it does not have)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdserve.engine.sd_upscale import SDUpscale
from sdserve.errors import BadInput

__all__ = ["SD_UPSCALE", "IMG2IMG_SCRIPTS", "SD_UPSCALE_FIELDS", "is_sd_upscale", "sd_upscale_of"]

# A1111 finds a script by its title, lowercased (what /sdapi/v1/scripts lists).
SD_UPSCALE = "sd upscale"
IMG2IMG_SCRIPTS = (SD_UPSCALE,)
# The script's UI defaults, which A1111's API fills in for arguments left out:
# [info, overlap 64, upscaler_index 0 ("None"), scale_factor 2].
_DEFAULTS: tuple[Any, ...] = (None, 64, 0, 2.0)
# Engine fields -> the request's, for errors about the script's arguments.
SD_UPSCALE_FIELDS = {"sd_upscale": "script_name", "sd_upscale.overlap": "script_args[1]",
                     "sd_upscale.upscaler": "script_args[2]", "sd_upscale.scale": "script_args[3]"}


def is_sd_upscale(name: str | None) -> bool:
    return bool(name) and str(name).strip().lower() == SD_UPSCALE


def _number(value: Any, field: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadInput(field, f"{value!r} is not a number")
    try:
        f = float(value)
    except ValueError:
        raise BadInput(field, f"{value!r} is not a number") from None
    if integer and not f.is_integer():
        raise BadInput(field, f"{value!r} is not a whole number")
    return f


def sd_upscale_of(args: Sequence[Any], upscalers: Sequence[str], batch_size: int) -> SDUpscale:
    """``script_args`` = [_, overlap, upscaler_index, scale_factor] (missing ones: the UI's
    defaults); the upscaler by its index in ``/sdapi/v1/upscalers`` or by name (A1111 1.6+)."""
    if len(args) > len(_DEFAULTS):
        raise BadInput("script_args", f"SD upscale takes {len(_DEFAULTS)} arguments "
                                      f"([_, overlap, upscaler_index, scale_factor]), got {len(args)}")
    _, overlap, index, scale = (*args, *_DEFAULTS[len(args):])
    overlap_px = _number(overlap, "script_args[1]", integer=True)
    if not 0 <= overlap_px <= 1024:
        raise BadInput("script_args[1]", f"overlap {overlap!r} is not allowed: use 0 to 1024 pixels")
    factor = _number(scale, "script_args[3]")
    if not 0 < factor <= 8:
        raise BadInput("script_args[3]", f"scale factor {scale!r} is not allowed: use a factor above 0 and at most 8")
    if isinstance(index, str) and not index.strip().lstrip("-").isdigit():
        names = {n.lower(): n for n in upscalers}
        if index.strip().lower() not in names:
            raise BadInput("script_args[2]", f"upscaler {index!r} not found; available: {', '.join(upscalers)}")
        name = names[index.strip().lower()]
    else:
        i = int(_number(index, "script_args[2]", integer=True))
        if not 0 <= i < len(upscalers):
            raise BadInput("script_args[2]", f"upscaler index {index!r} is out of range: GET /sdapi/v1/upscalers "
                                             f"lists {len(upscalers)} ({', '.join(upscalers)})")
        name = upscalers[i]
    return SDUpscale(upscaler=name, scale=factor, overlap=int(overlap_px), batch_size=batch_size)
