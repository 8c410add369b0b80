"""Loading weights: a hub repo id (through the Hugging Face cache), a local diffusers folder,
or a single original-layout checkpoint file; plus ``pull`` to download ahead of time.

Requests never download: serving loads with ``local_files_only`` and a missing model is a
ModelUnavailable error that names ``sdserve pull``. Downloads happen only in ``pull``, with
a progress bar, and honour HF_HUB_OFFLINE and the usual HF cache variables.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelUnavailable
from .catalog import ModelSpec, WeightSource

__all__ = ["load_base_pipeline", "pull", "is_available", "PIPELINE_CLASSES"]

log = logging.getLogger(__name__)

# Files a diffusers pipeline needs; the big single-file checkpoints and alternative formats
# that the hub repos also carry are skipped so a pull fetches each weight once.
_PULL_IGNORE = ["*.ckpt", "*.bin", "*.msgpack", "*.onnx", "*.onnx_data", "*.pb", "*.h5", "*.fp16.*",
                "*.non_ema.*", "*.ema.*", "*.xml", "safety_checker/*", "feature_extractor/*"]
_SINGLE_FILE_CONFIG = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                       "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


def PIPELINE_CLASSES(arch: str) -> dict[str, Any]:  # noqa: N802 - a lazy constant
    """The diffusers pipeline class for each task of an architecture."""
    import diffusers as d

    if arch == "sdxl":
        return {"txt2img": d.StableDiffusionXLPipeline, "img2img": d.StableDiffusionXLImg2ImgPipeline,
                "inpaint": d.StableDiffusionXLInpaintPipeline}
    return {"txt2img": d.StableDiffusionPipeline, "img2img": d.StableDiffusionImg2ImgPipeline,
            "inpaint": d.StableDiffusionInpaintPipeline}


def _unavailable(spec: ModelSpec, what: WeightSource, err: Exception) -> ModelUnavailable:
    if what.repo:
        hint = f"run `sdserve pull {spec.id}` (downloads {what.describe()} into the Hugging Face cache)"
    else:
        hint = f"check that {what.path} exists and is a diffusers folder or a .safetensors checkpoint"
    log.debug("loading %s failed: %r", spec.id, err)
    return ModelUnavailable(f"Model {spec.id} is not available on this server: {hint}. ({type(err).__name__})")


def load_base_pipeline(spec: ModelSpec, dtype: torch.dtype, config_dir: Path | None = None) -> Any:
    """The txt2img pipeline of ``spec`` on the CPU in ``dtype``; other tasks share its modules."""
    cls = PIPELINE_CLASSES(spec.arch)["txt2img"]
    src = spec.source
    common: dict[str, Any] = {"torch_dtype": dtype}
    if spec.arch == "sd15":
        common.update(safety_checker=None, requires_safety_checker=False)
    try:
        if src.is_single_file:
            config = str(config_dir) if config_dir else _SINGLE_FILE_CONFIG[spec.arch]
            pipe = cls.from_single_file(str(src.path), config=config, local_files_only=True, **common)
        elif src.path is not None:
            pipe = cls.from_pretrained(str(src.path), local_files_only=True, **common)
        else:
            pipe = cls.from_pretrained(src.repo, revision=src.revision, local_files_only=True, **common)
        if spec.unet is not None:
            _swap_unet(pipe, spec.unet, dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise _unavailable(spec, spec.unet if spec.unet and "unet" in str(e).lower() else src, e) from e
    return pipe


def _swap_unet(pipe: Any, src: WeightSource, dtype: torch.dtype) -> None:
    # SDXL-Lightning ships a bare UNet state dict for the SDXL base architecture.
    from safetensors.torch import load_file

    path = _resolve_file(src)
    # strict: a UNet file for another architecture must fail loudly, not half-load.
    pipe.unet.load_state_dict(load_file(str(path)), strict=True)
    pipe.unet.to(dtype)


def _resolve_file(src: WeightSource) -> Path:
    if src.path is not None:
        if not src.path.exists():
            raise FileNotFoundError(f"unet file {src.path} does not exist")
        return src.path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(src.repo, src.filename, revision=src.revision, local_files_only=True))


def is_available(spec: ModelSpec) -> bool:
    """Whether every weight file of ``spec`` is on this machine (no network)."""
    for src in (spec.source, spec.unet):
        if src is None:
            continue
        if src.path is not None:
            if not src.path.exists():
                return False
            continue
        try:
            if src.filename:
                _resolve_file(src)
            else:
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(src.repo, revision=src.revision, local_files_only=True))
                if not (folder / "model_index.json").exists():
                    return False
        except Exception:  # noqa: BLE001 - any miss means "not downloaded"
            return False
    return True


def pull(spec: ModelSpec) -> list[str]:
    """Download the weights of ``spec`` into the HF cache (progress bars on stderr)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    done = []
    for src in (spec.source, spec.unet):
        if src is None:
            continue
        if src.path is not None:
            done.append(f"{src.path} (local, nothing to download)")
        elif src.filename:
            done.append(hf_hub_download(src.repo, src.filename, revision=src.revision))
        else:
            done.append(snapshot_download(src.repo, revision=src.revision, ignore_patterns=_PULL_IGNORE))
    return done
