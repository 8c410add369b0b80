"""The ComfyUI core nodes sdserve knows: inputs, defaults and ranges as ComfyUI's nodes.py
declares them (INPUT_TYPES, RETURN_TYPES), which both validation and /object_info read.

A node is *known* here when its wire shape is written down; it is *available* when
``compile.py`` has a function for it and the engine has the field it compiles into
(``needs``). Known but unavailable nodes are refused by name in ``node_errors``; unknown ones
are ComfyUI's ``missing_node_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .samplers import sampler_choices, scheduler_choices

if TYPE_CHECKING:  # pragma: no cover
    from .compile import CompileEnv

__all__ = ["Input", "NodeDef", "NODES", "MAX_RESOLUTION", "MAX_SEED_COMFY", "LINK_TYPES"]

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION
MAX_SEED_COMFY = 0xFFFFFFFFFFFFFFFF  # ComfyUI seeds are 64-bit
# Types that travel along links only (never as a widget value).
LINK_TYPES = frozenset({"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "UPSCALE_MODEL",
                        "CONTROL_NET"})

Choices = Callable[["CompileEnv"], list[str]]


@dataclass(frozen=True)
class Input:
    """One input: a link type (``MODEL``), a widget type (``INT``, ``FLOAT``, ``STRING``) with its
    options (default, min, max, step, ...), or a combo whose choices come from the server."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    choices: Choices | None = None  # a combo (type "COMBO")
    optional: bool = False

    def spec(self, env: CompileEnv) -> list[Any]:
        """The input as /object_info writes it: ``[type, options]`` or ``[choices, options]``."""
        head: Any = self.choices(env) if self.choices is not None else self.type
        return [head, dict(self.options)] if self.options else [head]


@dataclass(frozen=True)
class NodeDef:
    name: str
    display_name: str
    category: str
    inputs: tuple[tuple[str, Input], ...]
    outputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    output_node: bool = False
    description: str = ""
    # The GenerationParams field this node compiles into; None: the engine always has it.
    needs: str | None = None
    # What is missing, for the refusal, when ``needs`` is not on this engine yet.
    needs_what: str = ""

    def input(self, name: str) -> Input | None:
        return next((i for n, i in self.inputs if n == name), None)


def _combo(choices: Choices, **options: Any) -> Input:
    return Input("COMBO", options, choices)


def _fixed(*values: str) -> Choices:
    return lambda env: list(values)


def _int(default: int, lo: int, hi: int, step: int = 1, **extra: Any) -> Input:
    return Input("INT", {"default": default, "min": lo, "max": hi, "step": step, **extra})


def _float(default: float, lo: float, hi: float, step: float = 0.01, **extra: Any) -> Input:
    return Input("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, **extra})


def _ckpt_names(env: CompileEnv) -> list[str]:
    from .checkpoints import checkpoint_names

    return checkpoint_names(env.catalog)


def _addon_names(kind: Any) -> Choices:
    """File names of one add-on kind, as ComfyUI lists model files (``name.safetensors``)."""
    return lambda env: [f"{f.name}{f.path.suffix}" if not f.is_dir else f.name for f in env.addons.files(kind)]


def _input_images(env: CompileEnv) -> list[str]:
    return sorted(env.list_inputs())


_SAMPLER = (
    ("seed", _int(0, 0, MAX_SEED_COMFY, control_after_generate=True)),
    ("steps", _int(20, 1, 10000)),
    ("cfg", _float(8.0, 0.0, 100.0, 0.1, round=0.01)),
    ("sampler_name", _combo(lambda env: sampler_choices())),
    ("scheduler", _combo(lambda env: scheduler_choices())),
)
_UPSCALE_LATENT = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
_UPSCALE_IMAGE = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")

NODES: dict[str, NodeDef] = {n.name: n for n in (
    NodeDef("CheckpointLoaderSimple", "Load Checkpoint", "loaders",
            (("ckpt_name", _combo(_ckpt_names)),), ("MODEL", "CLIP", "VAE"), ("MODEL", "CLIP", "VAE"),
            description="Loads a diffusion model checkpoint."),
    NodeDef("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
            (("text", Input("STRING", {"multiline": True, "dynamicPrompts": True})), ("clip", Input("CLIP"))),
            ("CONDITIONING",), ("CONDITIONING",),
            description="Encodes a text prompt with ComfyUI's (word:1.2) weights."),
    NodeDef("CLIPSetLastLayer", "CLIP Set Last Layer", "conditioning",
            (("clip", Input("CLIP")), ("stop_at_clip_layer", _int(-1, -24, -1))), ("CLIP",), ("CLIP",),
            description="-1 (the last layer) always; others once the engine has clip skip (compile.py)."),
    NodeDef("EmptyLatentImage", "Empty Latent Image", "latent",
            (("width", _int(512, 16, MAX_RESOLUTION, 8)), ("height", _int(512, 16, MAX_RESOLUTION, 8)),
             ("batch_size", _int(1, 1, 4096))), ("LATENT",), ("LATENT",)),
    NodeDef("KSampler", "KSampler", "sampling",
            (("model", Input("MODEL")), *_SAMPLER, ("positive", Input("CONDITIONING")),
             ("negative", Input("CONDITIONING")), ("latent_image", Input("LATENT")),
             ("denoise", _float(1.0, 0.0, 1.0))), ("LATENT",), ("LATENT",)),
    NodeDef("KSamplerAdvanced", "KSampler (Advanced)", "sampling",
            (("model", Input("MODEL")), ("add_noise", _combo(_fixed("enable", "disable"))),
             ("noise_seed", _SAMPLER[0][1]), *_SAMPLER[1:], ("positive", Input("CONDITIONING")),
             ("negative", Input("CONDITIONING")), ("latent_image", Input("LATENT")),
             ("start_at_step", _int(0, 0, 10000)), ("end_at_step", _int(10000, 0, 10000)),
             ("return_with_leftover_noise", _combo(_fixed("disable", "enable")))), ("LATENT",), ("LATENT",)),
    NodeDef("VAEDecode", "VAE Decode", "latent",
            (("samples", Input("LATENT")), ("vae", Input("VAE"))), ("IMAGE",), ("IMAGE",)),
    NodeDef("VAEEncode", "VAE Encode", "latent",
            (("pixels", Input("IMAGE")), ("vae", Input("VAE"))), ("LATENT",), ("LATENT",)),
    NodeDef("VAEEncodeForInpaint", "VAE Encode (for Inpainting)", "latent/inpaint",
            (("pixels", Input("IMAGE")), ("vae", Input("VAE")), ("mask", Input("MASK")),
             ("grow_mask_by", _int(6, 0, 64))), ("LATENT",), ("LATENT",)),
    NodeDef("SetLatentNoiseMask", "Set Latent Noise Mask", "latent/inpaint",
            (("samples", Input("LATENT")), ("mask", Input("MASK"))), ("LATENT",), ("LATENT",)),
    NodeDef("LoadImage", "Load Image", "image",
            (("image", _combo(_input_images, image_upload=True)),), ("IMAGE", "MASK"), ("IMAGE", "MASK")),
    NodeDef("LoadImageMask", "Load Image (as Mask)", "mask",
            (("image", _combo(_input_images, image_upload=True)),
             ("channel", _combo(_fixed("alpha", "red", "green", "blue")))), ("MASK",), ("MASK",)),
    NodeDef("SaveImage", "Save Image", "image",
            (("images", Input("IMAGE")), ("filename_prefix", Input("STRING", {"default": "ComfyUI"}))),
            output_node=True, description="Saves the input images to the output folder."),
    NodeDef("PreviewImage", "Preview Image", "image", (("images", Input("IMAGE")),), output_node=True,
            description="Saves the input images to the temp folder."),
    NodeDef("LatentUpscale", "Upscale Latent", "latent",
            (("samples", Input("LATENT")), ("upscale_method", _combo(_fixed(*_UPSCALE_LATENT))),
             ("width", _int(512, 0, MAX_RESOLUTION, 8)), ("height", _int(512, 0, MAX_RESOLUTION, 8)),
             ("crop", _combo(_fixed("disabled", "center")))), ("LATENT",), ("LATENT",)),
    NodeDef("LatentUpscaleBy", "Upscale Latent By", "latent",
            (("samples", Input("LATENT")), ("upscale_method", _combo(_fixed(*_UPSCALE_LATENT))),
             ("scale_by", _float(1.5, 0.01, 8.0))), ("LATENT",), ("LATENT",)),
    NodeDef("ImageScale", "Upscale Image", "image/upscaling",
            (("image", Input("IMAGE")), ("upscale_method", _combo(_fixed(*_UPSCALE_IMAGE))),
             ("width", _int(512, 0, MAX_RESOLUTION)), ("height", _int(512, 0, MAX_RESOLUTION)),
             ("crop", _combo(_fixed("disabled", "center")))), ("IMAGE",), ("IMAGE",)),
    NodeDef("ImageScaleBy", "Upscale Image By", "image/upscaling",
            (("image", Input("IMAGE")), ("upscale_method", _combo(_fixed(*_UPSCALE_IMAGE))),
             ("scale_by", _float(1.0, 0.01, 8.0))), ("IMAGE",), ("IMAGE",)),
    # Add-on nodes: compiled when the engine has their field (node_available).
    NodeDef("LoraLoader", "Load LoRA", "loaders",
            (("model", Input("MODEL")), ("clip", Input("CLIP")), ("lora_name", _combo(_addon_names("lora"))),
             ("strength_model", _float(1.0, -100.0, 100.0)), ("strength_clip", _float(1.0, -100.0, 100.0))),
            ("MODEL", "CLIP"), ("MODEL", "CLIP"), needs="loras", needs_what="LoRA"),
    NodeDef("LoraLoaderModelOnly", "LoraLoaderModelOnly", "loaders",
            (("model", Input("MODEL")), ("lora_name", _combo(_addon_names("lora"))),
             ("strength_model", _float(1.0, -100.0, 100.0))), ("MODEL",), ("MODEL",), needs="loras",
            needs_what="LoRA"),
    NodeDef("VAELoader", "Load VAE", "loaders", (("vae_name", _combo(_addon_names("vae"))),), ("VAE",), ("VAE",),
            needs="vae", needs_what="VAE override"),
    NodeDef("UpscaleModelLoader", "Load Upscale Model", "loaders",
            (("model_name", _combo(_addon_names("upscaler"))),), ("UPSCALE_MODEL",), ("UPSCALE_MODEL",),
            needs="upscale", needs_what="upscaler models"),
    NodeDef("ImageUpscaleWithModel", "Upscale Image (using Model)", "image/upscaling",
            (("upscale_model", Input("UPSCALE_MODEL")), ("image", Input("IMAGE"))), ("IMAGE",), ("IMAGE",),
            needs="upscale", needs_what="upscaler models"),
    NodeDef("ControlNetLoader", "Load ControlNet Model", "loaders",
            (("control_net_name", _combo(_addon_names("controlnet"))),), ("CONTROL_NET",), ("CONTROL_NET",),
            needs="control", needs_what="ControlNet"),
    NodeDef("ControlNetApplyAdvanced", "Apply ControlNet", "conditioning/controlnet",
            (("positive", Input("CONDITIONING")), ("negative", Input("CONDITIONING")),
             ("control_net", Input("CONTROL_NET")), ("image", Input("IMAGE")),
             ("strength", _float(1.0, 0.0, 10.0)), ("start_percent", _float(0.0, 0.0, 1.0, 0.001)),
             ("end_percent", _float(1.0, 0.0, 1.0, 0.001)), ("vae", Input("VAE", optional=True))),
            ("CONDITIONING", "CONDITIONING"), ("positive", "negative"), needs="control", needs_what="ControlNet"),
)}
