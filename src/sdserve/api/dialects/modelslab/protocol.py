"""ModelsLab / stablediffusionapi v3 wire schema (reference §3.2), field order as the upstream doc.

Clients send numbers as strings ("512") and flags as "yes"/"no" (or true/false/null), so
every numeric field takes a string or a number and every flag takes any of those spellings.
An empty string means "not given" like null, as ModelsLab's own validator treats it.
Fields the upstream lists but sdserve does not implement are accepted when unset and refused
(naming the field) when set, in the adapter; unknown extra fields are ignored, as upstream.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ....engine.params import MAX_SEED

__all__ = ["GenerateRequest", "KeyRequest", "Flag", "parse_flag", "parse_int", "parse_number"]

_YES = {"yes", "true", "1", "on"}
_NO = {"no", "false", "0", "off"}


def parse_flag(v: Any) -> bool | None:
    """"yes"/"no"/true/false/null (and "true"/"false"/"1"/"0") as a bool; None when unset."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "":
            return None
        if s in _YES:
            return True
        if s in _NO:
            return False
    raise PydanticCustomError("flag", 'must be "yes" or "no" (or true/false/null), not {value}', {"value": repr(v)})


def parse_number(v: Any) -> float | None:
    """A JSON number or a numeric string as a float; None when unset."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise PydanticCustomError("number", "must be a number, not {value}", {"value": str(v).lower()})
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            pass
    raise PydanticCustomError("number", "{value} is not a number", {"value": repr(v)})


def parse_int(v: Any) -> int | None:
    """A whole number given as a JSON number or a string ("512", "512.0"); None when unset."""
    f = parse_number(v)
    if f is None:
        return None
    if not f.is_integer():
        raise PydanticCustomError("int", "{value} is not a whole number", {"value": repr(v)})
    return int(f)


def _text(v: Any) -> Any:
    # track_id is documented as "string, int or null": keep it a string for the echo.
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


Flag = Annotated[bool | None, BeforeValidator(parse_flag)]


_Int = BeforeValidator(parse_int)
_Num = BeforeValidator(parse_number)
# Optional numbers within the documented limits (the constraint applies once the string is parsed).
Side = Annotated[Annotated[int, Field(ge=64, le=1024)] | None, _Int]
Samples = Annotated[Annotated[int, Field(ge=1, le=4)] | None, _Int]
# One upstream page lists 21/31/41/51 steps, another 1-50: accept the union 1..51.
Steps = Annotated[Annotated[int, Field(ge=1, le=51)] | None, _Int]
Seed = Annotated[Annotated[int, Field(ge=0, le=MAX_SEED)] | None, _Int]
ClipSkip = Annotated[Annotated[int, Field(ge=1, le=12)] | None, _Int]
Guidance = Annotated[Annotated[float, Field(ge=1, le=20)] | None, _Num]
Fraction = Annotated[Annotated[float, Field(ge=0, le=1)] | None, _Num]


class KeyRequest(BaseModel):
    """Body of fetch and system_load: just the key."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = None


class GenerateRequest(BaseModel):
    """Body of text2img, img2img and inpaint (v3 and v6). The task is the route's."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = Field(None, description="API key (in the body: ModelsLab sends no auth header).")
    model_id: str | None = Field(None, description="sdserve model id or alias; the default model when unset.")
    prompt: str = Field(min_length=1, description="What to draw.")
    negative_prompt: str | None = None
    init_image: str | None = Field(None, description="img2img/inpaint: http(s) URL, data: URI or base64.")
    mask_image: str | None = Field(None, description="inpaint: white = repaint, black = keep.")
    width: Side = None
    height: Side = None
    samples: Samples = 1
    num_inference_steps: Steps = None
    safety_checker: Flag = None
    enhance_prompt: Flag = None
    guidance_scale: Guidance = None
    strength: Fraction = None
    prompt_strength: Fraction = None  # older docs' name of strength
    seed: Seed = None
    base64: Flag = None
    multi_lingual: Flag = None
    panorama: Flag = None
    self_attention: Flag = None
    upscale: Flag = None
    embeddings_model: str | None = None
    lora_model: str | None = None
    vae: str | None = None
    scheduler: str | None = Field(None, description="diffusers class name (ModelsLab's) or an sdserve scheduler name.")
    use_karras_sigmas: Flag = None
    clip_skip: ClipSkip = None
    webhook: str | None = None
    track_id: Annotated[str | None, BeforeValidator(_text)] = None
    instant_response: Flag = None
