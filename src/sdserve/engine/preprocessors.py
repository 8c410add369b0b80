"""ControlNet preprocessors that need no model: the sent image -> the control image.

Names are the A1111 ControlNet extension's module names, so its clients' requests work as
sent; the engine's own vocabulary is the same. Torch-free (Pillow, numpy, scipy.ndimage):
the API's ``/controlnet/detect`` runs them without the engine. OpenCV is not a dependency
here, so Canny is scipy's Sobel gradients with the usual non-maximum suppression and
hysteresis (thresholds on the same scale as ``cv2.Canny``'s 3x3 Sobel).

Preprocessors that run a network (``ANNOTATORS``: depth, pose) are the engine's auxiliary
models (engine.auxiliary, fetched by ``sdserve pull``); the engine hands ``preprocess`` the
function that runs them (``Annotate``). The other neural annotators (HED, MLSD, ...) are
refused by name with the file they would need: nothing is downloaded at request time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ..errors import BadInput
from .auxiliary.specs import AuxKind

__all__ = ["Preprocessor", "PREPROCESSORS", "NEEDS_MODEL", "canonical", "check_preprocessor", "preprocess", "fit",
           "control_image", "Annotator", "ANNOTATORS", "Annotate"]


@dataclass(frozen=True)
class Preprocessor:
    name: str
    run: Callable[[Image.Image, float | None, float | None], Image.Image]
    # What threshold_a / threshold_b mean, with their defaults (A1111's sliders), for listings.
    params: tuple[tuple[str, float], ...] = ()
    # Works at processor_res (the shorter side) like A1111's detectors; "none" keeps the image.
    rescales: bool = True


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)


def _from_mask(edges: np.ndarray) -> Image.Image:
    """A boolean map as the white-on-black RGB image ControlNets are trained on."""
    return Image.fromarray((edges * 255).astype(np.uint8), "L").convert("RGB")


def _canny(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    from scipy import ndimage

    low, high = (100.0 if a is None else a), (200.0 if b is None else b)
    g = _gray(img)
    gx, gy = ndimage.sobel(g, axis=1), ndimage.sobel(g, axis=0)
    mag = np.hypot(gx, gy)
    # Non-maximum suppression along the gradient, quantised to 0/45/90/135 degrees.
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    pad = np.pad(mag, 1)
    h, w = mag.shape

    def shifted(dy: int, dx: int) -> np.ndarray:
        return pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    keep = np.zeros_like(mag, dtype=bool)
    for lo, hi, (dy, dx) in ((0, 22.5, (0, 1)), (157.5, 180.1, (0, 1)), (22.5, 67.5, (1, 1)),
                             (67.5, 112.5, (1, 0)), (112.5, 157.5, (1, -1))):
        sel = (angle >= lo) & (angle < hi)
        keep |= sel & (mag >= shifted(dy, dx)) & (mag >= shifted(-dy, -dx))
    nms = np.where(keep, mag, 0.0)
    # Hysteresis: weak edges survive when connected (8-neighbourhood) to a strong one.
    labels, n = ndimage.label(nms >= low, structure=np.ones((3, 3)))
    strong = np.zeros(n + 1, dtype=bool)
    strong[np.unique(labels[nms >= high])] = True
    strong[0] = False
    return _from_mask(strong[labels])


def _invert(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    # "invert (from white bg & black line)": line drawings -> white lines on black.
    return ImageOps.invert(img.convert("RGB"))


def _threshold(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    return _from_mask(_gray(img) > (127.0 if a is None else a))


def _scribble_xdog(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    # Difference of Gaussians thresholded: the extension's model-free scribble.
    from scipy import ndimage

    g = _gray(img)
    dog = ndimage.gaussian_filter(g, 0.5) - ndimage.gaussian_filter(g, 5.0)
    return _from_mask(dog > (32.0 if a is None else a))


def _lineart_standard(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    # Dark lines against their blurred surroundings, normalised: a soft line-art map.
    from scipy import ndimage

    x = np.asarray(img.convert("RGB"), dtype=np.float32)
    blurred = ndimage.gaussian_filter(x, sigma=(6.0, 6.0, 0))
    intensity = np.clip((blurred - x).min(axis=2), 0, 255)
    peak = np.median(intensity[intensity > 8]) if np.any(intensity > 8) else 1.0
    out = np.clip(intensity / max(float(peak), 1e-3) * 127, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L").convert("RGB")


def _blur(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    return img.convert("RGB").filter(ImageFilter.GaussianBlur(9.0 if a is None else a))


def _tile_resample(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    # Downsampled by the rate then back: the tile ControlNet fills in the detail.
    rate = 1.0 if a is None else max(1.0, a)
    rgb = img.convert("RGB")
    if rate == 1.0:
        return rgb
    small = rgb.resize((max(1, round(rgb.width / rate)), max(1, round(rgb.height / rate))), Image.Resampling.LANCZOS)
    return small.resize(rgb.size, Image.Resampling.BICUBIC)


def _none(img: Image.Image, a: float | None, b: float | None) -> Image.Image:
    return img.convert("RGB")


PREPROCESSORS: dict[str, Preprocessor] = {p.name: p for p in (
    Preprocessor("none", _none, rescales=False),
    Preprocessor("canny", _canny, (("Low Threshold", 100), ("High Threshold", 200))),
    Preprocessor("invert", _invert, rescales=False),
    Preprocessor("threshold", _threshold, (("Binarization Threshold", 127),)),
    Preprocessor("scribble_xdog", _scribble_xdog, (("XDoG Threshold", 32),)),
    Preprocessor("lineart_standard", _lineart_standard),
    Preprocessor("blur_gaussian", _blur, (("Sigma", 9.0),)),
    Preprocessor("tile_resample", _tile_resample, (("Down Sampling Rate", 1.0),), rescales=False),
    # The masked area becomes transparent; batching turns it into -1, as diffusers' inpaint
    # ControlNet expects ("inpaint_only" is A1111's name when the img2img mask is used).
    Preprocessor("inpaint", _none, rescales=False),
)}
ALIASES = {"inpaint_only": "inpaint", "invert (from white bg & black line)": "invert", "scribble": "scribble_xdog",
           "blur": "blur_gaussian", "tile": "tile_resample", "lineart": "lineart_standard",
           "depth": "depth_midas"}  # the extension's internal name for depth_midas


@dataclass(frozen=True)
class Annotator:
    """A preprocessor that runs a network: the auxiliary models it needs (`sdserve pull <kind>`)."""

    name: str
    kinds: tuple[AuxKind, ...]
    # As the extension: MiDaS and OpenPose work at processor_res; Depth Anything at its own size.
    rescales: bool = True


ANNOTATORS: dict[str, Annotator] = {a.name: a for a in (
    Annotator("depth_anything_v2", ("depth",), rescales=False),
    Annotator("depth_midas", ("depth-midas",)),
    Annotator("openpose", ("pose", "person-detector")),
)}
# Runs annotator ``name`` (a key of ANNOTATORS) on an image: the engine's auxiliary models.
Annotate = Callable[[str, Image.Image], Image.Image]

# Annotators with a network: refused naming what they need (lllyasviel/Annotators on the hub).
NEEDS_MODEL = {
    "depth_leres": "res101.pth", "depth_leres++": "res101.pth", "depth_zoe": "ZoeD_M12_N.pt",
    "depth_anything": "depth_anything_vitl14.pth", "depth_hand_refiner": "hr16/ControlNet-HandRefiner-pruned",
    "normal_bae": "scannet.pt",
    "openpose_full": "body_pose_model.pth + hand_pose_model.pth + facenet.pth", "openpose_face": "facenet.pth",
    "openpose_faceonly": "facenet.pth", "openpose_hand": "hand_pose_model.pth", "dw_openpose_full": "dw-ll_ucoco_384.onnx",
    "animal_openpose": "rtmpose-m_ap10k_256.onnx",
    "softedge_hed": "ControlNetHED.pth", "softedge_pidinet": "table5_pidinet.pth", "mlsd": "mlsd_large_512_fp32.pth",
    "lineart_realistic": "sk_model.pth", "lineart_anime": "netG.pth", "seg_ofade20k": "250_16_swin_l_oneformer_ade20k",
    "shuffle": "(none: random, not reproducible)",
}


def canonical(name: str) -> str:
    """The preprocessor's own name for ``name`` (A1111 spellings and aliases accepted)."""
    return ALIASES.get(name, name)


def check_preprocessor(name: str, field: str) -> None:
    """BadInput naming ``field`` unless ``name`` runs here."""
    key = canonical(name)
    if key in PREPROCESSORS or key in ANNOTATORS:
        return  # an annotator's models are the engine's to check (engine.auxiliary)
    if key in NEEDS_MODEL:
        raise BadInput(field, f"preprocessor {name!r} runs a neural annotator ({NEEDS_MODEL[key]} from the "
                              "lllyasviel/Annotators repo) that this server does not have; send a hint image made "
                              f"elsewhere, without preprocessing ('none'), or use one of {', '.join(ANNOTATORS)}")
    raise BadInput(field, f"unknown preprocessor {name!r}; available: {', '.join([*PREPROCESSORS, *ANNOTATORS])}")


def preprocess(name: str, img: Image.Image, processor_res: int = 512, a: float | None = None,
               b: float | None = None, annotate: Annotate | None = None) -> Image.Image:
    """``img`` through preprocessor ``name`` (at ``processor_res`` on its shorter side); an
    annotator runs through ``annotate`` (the engine's models)."""
    key = canonical(name)
    annotator = ANNOTATORS.get(key)
    rescales = annotator.rescales if annotator is not None else PREPROCESSORS[key].rescales
    if rescales and min(img.size) != processor_res:
        scale = processor_res / min(img.size)
        img = img.convert("RGB").resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                        Image.Resampling.LANCZOS)
    if annotator is not None:
        assert annotate is not None, f"{key} runs a network: the caller passes the engine's annotate"
        return annotate(key, img)
    return PREPROCESSORS[key].run(img, a, b)


def fit(img: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """``img`` at ``size`` by A1111's resize modes: stretch, cover then centre-crop, or fit
    inside and pad with black (no control signal)."""
    if img.size == size:
        return img
    if mode == "just_resize":
        return img.resize(size, Image.Resampling.LANCZOS)
    if mode == "crop_and_resize":
        return ImageOps.fit(img, size, Image.Resampling.LANCZOS)
    return ImageOps.pad(img, size, Image.Resampling.LANCZOS, color=(0, 0, 0))


def control_image(name: str, img: Image.Image, size: tuple[int, int], resize_mode: str, processor_res: int,
                  a: float | None, b: float | None, mask: Image.Image | None = None,
                  annotate: Annotate | None = None) -> Image.Image:
    """The control image a unit runs on: preprocessed, fitted to the output ``size``; for
    inpaint, RGBA with the area to repaint (mask white) transparent."""
    out = fit(preprocess(name, img, processor_res, a, b, annotate), size, resize_mode)
    if canonical(name) != "inpaint":
        return out
    assert mask is not None, "check_control requires a mask for the inpaint preprocessor"
    keep = mask.convert("L").resize(size, Image.Resampling.NEAREST).point(lambda v: 0 if v > 127 else 255)
    rgba = out.convert("RGBA")
    rgba.putalpha(keep)
    return rgba
