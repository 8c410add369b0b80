"""Workers AI <-> GenerationParams, as pure functions."""

from __future__ import annotations


from sdserve.engine.catalog import ModelSpec
from sdserve.engine.params import GenerationParams, input_images
from sdserve.errors import BadInput
from sdserve.images import decode_base64
from .models import cf_id
from .protocol import ModelSearchItem, TextToImageInput

__all__ = ["to_params", "field_names", "search_item", "TEXT_TO_IMAGE_TASK"]

TEXT_TO_IMAGE_TASK = {
    "id": "3d6e1f35-341b-4915-a6c8-9a7142a9033a",
    "name": "Text-to-Image",
    "description": "Generates images from input text.",
}


def _image_bytes(inp: TextToImageInput) -> bytes | None:
    if inp.image is not None and inp.image_b64 is not None:
        raise BadInput("image", "send either image or image_b64, not both")
    if inp.image is not None:
        return bytes(inp.image)
    if inp.image_b64 is not None:
        return decode_base64(inp.image_b64, "image_b64")
    return None


def to_params(inp: TextToImageInput, spec: ModelSpec) -> GenerationParams:
    """Translate a Workers AI request for ``spec`` into GenerationParams.

    The task follows from the inputs (image+mask is inpaint, image alone img2img, neither
    txt2img) and each side left out takes the input image's: ``prepare`` decides and checks
    both, for every dialect alike. A problem with the image is reported as ``image``;
    :func:`field_names` renames it when the caller sent ``image_b64``.
    """
    image = _image_bytes(inp)
    return GenerationParams(
        model=spec.id,
        prompt=inp.prompt,
        negative_prompt=inp.negative_prompt or "",
        width=inp.width,
        height=inp.height,
        # The schema's default of 20 steps / guidance 7.5 suits the full models; the few-step
        # models (Lightning, LCM) keep their own defaults when the caller does not choose.
        steps=inp.num_steps,
        guidance=inp.guidance,
        strength=(1.0 if inp.strength is None else inp.strength) if image is not None else None,
        seed=inp.seed,
        inputs=input_images(init=image, mask=bytes(inp.mask) if inp.mask is not None else None),
        output_format="png",
    )


def field_names(inp: TextToImageInput) -> dict[str, str]:
    """Engine field names -> this request's (the image came as ``image`` or ``image_b64``)."""
    return {"image": "image_b64"} if inp.image_b64 is not None else {}


def search_item(spec: ModelSpec) -> ModelSearchItem:
    return ModelSearchItem(
        id=cf_id(spec),
        name=spec.id,
        description=spec.description,
        task=TEXT_TO_IMAGE_TASK,
        created_at="2023-11-10 10:54:43.694",
        properties=[{"property_id": "beta", "value": "true"}],
    )
