"""Loading weights: a hub repo id (through the Hugging Face cache), a local diffusers folder,
or a single original-layout checkpoint file; plus ``pull`` to download ahead of time.

Requests never download: serving loads with ``local_files_only`` and a missing model is a
ModelUnavailable error that names ``sdserve pull``. Downloads happen only in ``pull``, with
a progress bar, and honour HF_HUB_OFFLINE and the usual HF cache variables.

A single-file checkpoint holds weights only; diffusers also needs the component configs
(model_index.json, */config.json, tokenizers) of its family. They are taken, without any
download, from the first of: the source's own ``config`` (a diffusers folder or hub repo);
the folder holding the file, when it is a diffusers folder (as in the hub repos, which ship
the single file next to model_index.json); the family's base repo in the Hugging Face
cache. ``sdserve pull`` on a single-file model fetches just those config files (a few KB)
when none of these is there, so a user's checkpoint works offline afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelUnavailable, SdserveError
from .catalog import ModelSpec, WeightSource

__all__ = ["load_base_pipeline", "pull", "is_available", "single_file_config", "PIPELINE_CLASSES"]

log = logging.getLogger(__name__)

# Files a diffusers pipeline needs; the big single-file checkpoints and alternative formats
# that the hub repos also carry are skipped so a pull fetches each weight once.
_PULL_IGNORE = ["*.ckpt", "*.bin", "*.msgpack", "*.onnx", "*.onnx_data", "*.pb", "*.h5", "*.fp16.*",
                "*.non_ema.*", "*.ema.*", "*.xml", "safety_checker/*", "feature_extractor/*"]
# The config files of a diffusers repo, without weights: what a single-file checkpoint lacks.
_CONFIG_FILES = ["*.json", "**/*.json", "*.txt", "**/*.txt", "**/*.model"]
_SINGLE_FILE_CONFIG = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                       "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


def PIPELINE_CLASSES(arch: str, controlnet: bool = False) -> dict[str, Any]:  # noqa: N802 - a lazy constant
    """The diffusers pipeline class for each task of an architecture (its ControlNet ones when
    ``controlnet``: diffusers names them by inserting "ControlNet" after the family)."""
    import diffusers as d

    family = "StableDiffusionXL" if arch == "sdxl" else "StableDiffusion"
    cn = "ControlNet" if controlnet else ""
    return {task: getattr(d, f"{family}{cn}{suffix}Pipeline")
            for task, suffix in (("txt2img", ""), ("img2img", "Img2Img"), ("inpaint", "Inpaint"))}


def _unavailable(spec: ModelSpec, what: WeightSource, err: Exception | None = None) -> ModelUnavailable:
    if what.repo:
        hint = f"run `sdserve pull {spec.id}` (downloads {what.describe()} into the Hugging Face cache)"
    elif what.is_single_file and what.path is not None and what.path.is_file():
        hint = (f"the checkpoint {what.path} needs its {spec.arch} component configs: run `sdserve pull {spec.id}` "
                "(fetches only the config files), or put the file in a diffusers folder of the same family")
    else:
        hint = f"check that {what.path} exists and is a diffusers folder or a .safetensors checkpoint"
    # The client gets the fix and the error's kind; the operator's log gets the whole error.
    log.warning("model %s is unavailable: %s (%r)", spec.id, hint, err)
    cause = f" ({type(err).__name__})" if err is not None else ""
    return ModelUnavailable(f"Model {spec.id} is not available on this server: {hint}.{cause}")


def _diffusers_folder(src: WeightSource) -> Path | None:
    """The local folder of the diffusers pipeline ``src`` names, if it is on this machine."""
    if src.path is not None:
        folder = src.path
    else:
        from huggingface_hub import snapshot_download

        assert src.repo is not None  # a WeightSource has a repo or a path
        try:
            folder = Path(snapshot_download(src.repo, revision=src.revision, local_files_only=True))
        except Exception:  # noqa: BLE001 - any miss (not cached, offline, bad id) means "not here"
            return None
    return folder if (folder / "model_index.json").is_file() else None


def single_file_config(spec: ModelSpec) -> Path | None:
    """The local diffusers folder giving ``spec``'s single-file checkpoint its configs, if any."""
    src = spec.source
    assert src.path is not None and src.is_single_file
    if src.config is not None:  # explicit: no guessing past it
        return _diffusers_folder(src.config)
    return _diffusers_folder(WeightSource(path=src.path.parent)) or \
        _diffusers_folder(WeightSource(repo=_SINGLE_FILE_CONFIG[spec.arch]))


def _load_source(cls: Any, spec: ModelSpec, dtype: torch.dtype) -> Any:
    src = spec.source
    common: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if spec.arch == "sd15":
        common.update(safety_checker=None, requires_safety_checker=False)
    if src.is_single_file:
        assert src.path is not None
        config = single_file_config(spec) if src.path.is_file() else None
        if config is None:
            raise _unavailable(spec, src)
        return cls.from_single_file(str(src.path), config=str(config), **common)
    if src.path is not None:
        return cls.from_pretrained(str(src.path), **common)
    return cls.from_pretrained(src.repo, revision=src.revision, **common)


def load_base_pipeline(spec: ModelSpec, dtype: torch.dtype) -> Any:
    """The txt2img pipeline of ``spec`` on the CPU in ``dtype``; other tasks share its modules.

    Raises ModelUnavailable, naming the source that failed and how to fix it.
    """
    # A refiner is an img2img pipeline on the hub (its model_index's class): loaded as one, it
    # keeps requires_aesthetics_score, which a txt2img pipeline would drop.
    cls = PIPELINE_CLASSES(spec.arch)["img2img" if spec.refiner else "txt2img"]
    try:
        pipe = _load_source(cls, spec, dtype)
    except SdserveError:
        raise
    except Exception as e:  # noqa: BLE001 - missing, partial or corrupt weights all mean "not servable"
        raise _unavailable(spec, spec.source, e) from e
    if spec.unet is not None:
        try:
            _swap_unet(pipe, spec.unet, dtype)
        except Exception as e:  # noqa: BLE001 - as above, for the replacement UNet
            raise _unavailable(spec, spec.unet, e) from e
    return pipe


def load_vae(src: WeightSource, dtype: torch.dtype) -> Any:
    """A replacement VAE (e.g. SDXL's fp16-safe one) from a hub repo or folder, on the CPU.

    A folder may be the VAE itself or a pipeline folder with a ``vae/`` subfolder.
    Raises ModelUnavailable when it is not on this machine.
    """
    from diffusers import AutoencoderKL

    where: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    try:
        if src.path is not None:
            sub = "vae" if (src.path / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(str(src.path), subfolder=sub, **where)
        return AutoencoderKL.from_pretrained(src.repo, revision=src.revision, **where)
    except Exception as e:  # noqa: BLE001 - missing or corrupt: say which and how to fix
        fix = f"download it (`hf download {src.repo}`)" if src.repo else "point it at a VAE or pipeline folder"
        raise ModelUnavailable(f"the VAE {src.describe()} is not on this machine or could not be read "
                               f"({type(e).__name__}): {fix}, or unset sdxl_vae") from e


def _swap_unet(pipe: Any, src: WeightSource, dtype: torch.dtype) -> None:
    # SDXL-Lightning ships a bare UNet state dict for the SDXL base architecture.
    from safetensors.torch import load_file

    path = _resolve_file(src)
    # strict: a UNet file for another architecture must fail loudly, not half-load.
    pipe.unet.load_state_dict(load_file(str(path)), strict=True)
    pipe.unet.to(dtype)


def _resolve_file(src: WeightSource) -> Path:
    if src.path is not None:
        if not src.path.is_file():
            raise FileNotFoundError(f"unet file {src.path} does not exist")
        return src.path
    from huggingface_hub import hf_hub_download

    assert src.repo is not None and src.filename is not None, "a hub UNet source names its file"
    return Path(hf_hub_download(src.repo, src.filename, revision=src.revision, local_files_only=True))


def is_available(spec: ModelSpec) -> bool:
    """Whether every file ``spec`` needs to load is on this machine (no network)."""
    src = spec.source
    if src.is_single_file:
        assert src.path is not None
        if not src.path.is_file() or single_file_config(spec) is None:
            return False
    else:
        folder = _diffusers_folder(src)
        # The configs alone (what a single-file model pulls from its base repo) are no model.
        if folder is None or not any((folder / "unet").glob("diffusion_pytorch_model*")):
            return False
    if spec.unet is not None:
        try:
            _resolve_file(spec.unet)
        except Exception:  # noqa: BLE001 - any miss means "not downloaded"
            return False
    return True


def pull(spec: ModelSpec) -> list[str]:
    """Download the weights of ``spec`` into the HF cache (progress bars on stderr)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    done = []
    src = spec.source
    if src.is_single_file:
        assert src.path is not None
        done.append(f"{src.path} (local, nothing to download)")
        if single_file_config(spec) is None:
            cfg = src.config if src.config is not None else WeightSource(repo=_SINGLE_FILE_CONFIG[spec.arch])
            if cfg.repo is None:
                raise _unavailable(spec, cfg)
            done.append(snapshot_download(cfg.repo, revision=cfg.revision, allow_patterns=_CONFIG_FILES))
    elif src.path is not None:
        done.append(f"{src.path} (local, nothing to download)")
    else:
        assert src.repo is not None  # a WeightSource has a repo or a path
        done.append(snapshot_download(src.repo, revision=src.revision, ignore_patterns=_PULL_IGNORE))
    if spec.unet is not None:
        if spec.unet.path is not None:
            done.append(f"{spec.unet.path} (local, nothing to download)")
        else:
            assert spec.unet.repo is not None and spec.unet.filename is not None, "a hub UNet source names its file"
            done.append(hf_hub_download(spec.unet.repo, spec.unet.filename, revision=spec.unet.revision))
    return done
