"""Workers AI <-> GenerationParams, as pure functions."""

from __future__ import annotations


from sdserve.engine.catalog import ModelSpec
from sdserve.engine.params import GenerationParams, Task
from sdserve.errors import BadInput
from sdserve.images import decode_base64, decode_image
from .models import cf_id
from .protocol import ModelSearchItem, TextToImageInput

__all__ = ["to_params", "search_item", "TEXT_TO_IMAGE_TASK"]

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


def to_params(inp: TextToImageInput, spec: ModelSpec, max_pixels: int) -> GenerationParams:
    """Translate a Workers AI request for ``spec`` into GenerationParams.

    The task follows from the inputs: image+mask is inpaint, image alone img2img, neither
    txt2img. Images are decoded here so a bad one is reported under its own field name.
    """
    image = _image_bytes(inp)
    mask = bytes(inp.mask) if inp.mask is not None else None
    field = "image_b64" if inp.image_b64 is not None else "image"
    img = decode_image(image, field, max_pixels) if image is not None else None
    if mask is not None:
        if img is None:
            raise BadInput("mask", "a mask needs an input image (image or image_b64)")
        m = decode_image(mask, "mask", max_pixels, mode="L")
        if m.size != img.size:
            raise BadInput("mask", f"is {m.width}x{m.height} but the image is {img.width}x{img.height}; "
                                   "they must be the same size")
    task: Task = "inpaint" if mask is not None else "img2img" if image is not None else "txt2img"
    if spec.tasks == ("inpaint",) and task != "inpaint":
        raise BadInput("mask" if image is not None else "image",
                       f"model {spec.id} is an inpainting model: send image (or image_b64) and mask")
    spec.check_task(task)
    width, height = inp.width, inp.height
    if img is not None:
        # img2img keeps the input's size (rounded down to the latent grid) in each dimension
        # the caller leaves out.
        width = max(64, img.width // 8 * 8) if width is None else width
        height = max(64, img.height // 8 * 8) if height is None else height
    return GenerationParams(
        model=spec.id,
        task=task,
        prompt=inp.prompt,
        negative_prompt=inp.negative_prompt or "",
        width=width,
        height=height,
        # The schema's default of 20 steps / guidance 7.5 suits the full models; the few-step
        # models (Lightning, LCM) keep their own defaults when the caller does not choose.
        steps=inp.num_steps,
        guidance=inp.guidance,
        strength=(1.0 if inp.strength is None else inp.strength) if task != "txt2img" else None,
        seed=inp.seed,
        init_image=image,
        mask_image=mask,
        output_format="png",
    )


def search_item(spec: ModelSpec) -> ModelSearchItem:
    return ModelSearchItem(
        id=cf_id(spec),
        name=spec.id,
        description=spec.description,
        task=TEXT_TO_IMAGE_TASK,
        created_at="2023-11-10 10:54:43.694",
        properties=[{"property_id": "beta", "value": "true"}],
    )
