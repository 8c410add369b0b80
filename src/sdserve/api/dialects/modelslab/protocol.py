"""ModelsLab / stablediffusionapi v3 wire schema (reference §3.2), field order as the upstream doc.

Clients send numbers as strings ("512") and flags as "yes"/"no" (or true/false/null), so
every numeric field takes a string or a number and every flag takes any of those spellings.
An empty string means "not given" like null, as ModelsLab's own validator treats it.
Fields the upstream lists but sdserve does not implement are accepted when unset and refused
(naming the field) when set, in the adapter; unknown extra fields are ignored, as upstream.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from sdserve.engine.params import MAX_SEED

__all__ = ["GenerateRequest", "KeyRequest", "Flag", "parse_flag", "parse_int", "parse_number", "GenerateReply",
           "FetchReply", "SystemLoadReply"]

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


# What the JSON schema shows a client may send: the value, a string spelling of it, or null.
_NumberText = Annotated[str, Field(pattern=r"^\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)?\s*$",
                                   description="a number written as a string, e.g. \"512\"; \"\" means unset")]
_FlagText = Annotated[str, Field(pattern=r"^\s*([Yy][Ee][Ss]|[Nn][Oo]|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Oo][Nn]|"
                                         r"[Oo][Ff][Ff]|[01])?\s*$")]
Flag = Annotated[bool | None, BeforeValidator(parse_flag, json_schema_input_type=bool | Literal[0, 1] | _FlagText | None)]


# Optional numbers within the documented limits (the constraint applies once the string is
# parsed): each takes the bounded value, a numeric string or null. Spelled out one by one, not
# built by a helper, so type checkers see them as types.
_Side = Annotated[int, Field(ge=64, le=1024, json_schema_extra={"multipleOf": 8})]
_Samples = Annotated[int, Field(ge=1, le=4)]
# One upstream page lists 21/31/41/51 steps, another 1-50: accept the union 1..51.
_Steps = Annotated[int, Field(ge=1, le=51)]
_Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
_ClipSkip = Annotated[int, Field(ge=1, le=12)]
_Guidance = Annotated[float, Field(ge=1, le=20)]
_Fraction = Annotated[float, Field(ge=0, le=1)]
Side = Annotated[_Side | None, BeforeValidator(parse_int, json_schema_input_type=_Side | _NumberText | None)]
Samples = Annotated[_Samples | None, BeforeValidator(parse_int, json_schema_input_type=_Samples | _NumberText | None)]
Steps = Annotated[_Steps | None, BeforeValidator(parse_int, json_schema_input_type=_Steps | _NumberText | None)]
Seed = Annotated[_Seed | None, BeforeValidator(parse_int, json_schema_input_type=_Seed | _NumberText | None)]
ClipSkip = Annotated[_ClipSkip | None,
                     BeforeValidator(parse_int, json_schema_input_type=_ClipSkip | _NumberText | None)]
Guidance = Annotated[_Guidance | None,
                     BeforeValidator(parse_number, json_schema_input_type=_Guidance | _NumberText | None)]
Fraction = Annotated[_Fraction | None,
                     BeforeValidator(parse_number, json_schema_input_type=_Fraction | _NumberText | None)]


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
    safety_checker_type: Literal["black", "blur", "pixelate"] | None = Field(
        None, description="What a flagged image becomes when the safety checker runs (default black).")
    guidance_scale: Guidance = None
    strength: Fraction = None
    prompt_strength: Fraction = None  # older docs' name of strength
    seed: Seed = None
    base64: Flag = None
    multi_lingual: Flag = None
    panorama: Flag = None
    self_attention: Flag = None
    upscale: Flag = None
    highres_fix: Flag = Field(None, description="text2img: make the image at half the size, then a hires-fix pass "
                                                "(latent upscale + img2img at strength 0.75) to width x height.")
    embeddings_model: str | None = Field(None, description="Embedding name(s), comma-separated; each must appear "
                                               "as a word in the prompt or negative prompt.")
    lora_model: str | None = Field(None, description="LoRA name(s), comma-separated (see GET /v1/addons).")
    # One strength for all, or one per lora_model entry, comma-separated (a number is accepted too).
    lora_strength: Annotated[str | None, BeforeValidator(_text, json_schema_input_type=str | float | None)] = None
    vae: str | None = None
    scheduler: str | None = Field(None, description="diffusers class name (ModelsLab's) or an sdserve scheduler name.")
    use_karras_sigmas: Flag = None
    clip_skip: ClipSkip = None
    # Upstream fields sdserve refuses when set (the adapter names them) or, where they only
    # tune upstream's own serving, takes as documented no-ops (docs/modelslab.md).
    tomesd: Flag = Field(None, description="Upstream's token-merging speed-up; no effect here (attention is never "
                                           "merged), accepted so upstream's examples run.")
    temp: Flag = Field(None, description="Upstream's temporary links; no effect here (outputs follow the server's "
                                         "retention).")
    algorithm_type: str | None = None
    enhance_style: str | None = None
    # Not upstream's name for the hint image (that is control_image): refused, naming it.
    controlnet_image: str | None = None
    webhook: str | None = None
    track_id: Annotated[str | None, BeforeValidator(_text, json_schema_input_type=str | float | None)] = None
    instant_response: Flag = None
    # ControlNet (the /controlnet endpoint and the v6 generation routes): comma lists give
    # several units ("canny,scribble"); the images are read by modelslab/controlnet.py.
    controlnet_model: str | None = Field(None, description="ControlNet name(s) in the server's ControlNet folder, "
                                         "comma-separated for several (GET /controlnet/model_list).")
    controlnet_type: str | None = Field(None, description="The hint each unit wants (canny, scribble, lineart, "
                                        "tile, inpaint, depth, openpose, ...): the preprocessor auto_hint applies.")
    control_image: str | None = Field(None, description="The hint image(s): URL, data: URI or base64 (several: "
                                      "comma-separated URLs). Default: init_image.")
    auto_hint: Flag = None
    guess_mode: Flag = None
    controlnet_conditioning_scale: Annotated[str | float | None,
                                             BeforeValidator(_text, json_schema_input_type=str | float | None)] = None
    # IP-Adapter (image prompt): a file in the server's ipadapter folder, its image and scale.
    ip_adapter_id: str | None = Field(None, description="IP-Adapter name in the server's ipadapter folder.")
    ip_adapter_image: str | None = Field(None, description="The image prompt: URL, data: URI or base64.")
    ip_adapter_scale: Fraction = None


# -- replies (documentation: the adapter builds these bodies as dicts) --------------------


class SuccessReply(BaseModel):
    status: Literal["success"]
    generationTime: float  # noqa: N815 - ModelsLab's key
    id: str
    output: list[str] = Field(description="Image URLs, or base64 data when base64 was 'yes'.")
    proxy_links: list[str]
    nsfw_content_detected: bool = Field(description="Whether the safety checker flagged any image.")
    nsfw_outputs: list[bool] | None = Field(None, description="sdserve's: the safety checker's flag per image, in "
                                            "output order (flagged images are obscured); absent when it did not run.")
    meta: dict[str, Any] = Field(description="The parameters used (seed, steps, W/H, ...).")
    warnings: list[str] | None = Field(None, description="sdserve's: how the request was read, e.g. a prompt "
                                       "longer than the text encoder reads (the rest was ignored). Absent when none.")
    track_id: str | None = None


class ProcessingReply(BaseModel):
    """Not finished within the wait window: fetch ``fetch_result`` later (or get the webhook)."""

    status: Literal["processing"]
    id: str
    eta: float
    message: str
    messege: str = Field(description="ModelsLab's own misspelt copy of message.")
    fetch_result: str
    output: list[str]
    future_links: list[str]
    tip: str | None = None
    proxy_links: list[str] | None = None
    meta: dict[str, Any] | None = None


class FailedReply(BaseModel):
    status: Literal["failed"]
    id: str
    message: str
    messege: str
    output: list[str]
    track_id: str | None = None


GenerateReply = Annotated[SuccessReply | ProcessingReply | FailedReply, Field(discriminator="status")]
FetchReply = GenerateReply


class SystemLoadReply(BaseModel):
    queue_num: int
    queue_time: float
    status: Literal["ok"]
