"""Which auxiliary models a server has and where their weights live. Torch-free: the
service's checks (is the checker there?) and the CLI's `pull` read it without loading torch.

Each kind is pulled like a diffusion model (``sdserve pull safety-checker``) and never
downloaded at request time; a request that needs a kind whose weights are missing gets a
4xx naming the pull command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...errors import BadInput
from ..catalog import WeightSource

__all__ = ["AuxKind", "AUX_KINDS", "AuxSpec", "DEFAULT_SOURCES", "aux_available", "aux_folder", "aux_pull", "unavailable",
           "missing_models", "demo_aux_dir"]

AuxKind = Literal["safety-checker", "enhancer", "captioner", "depth", "depth-midas", "pose", "person-detector"]
AUX_KINDS: tuple[AuxKind, ...] = ("safety-checker", "enhancer", "captioner", "depth", "depth-midas", "pose",
                                  "person-detector")

# Hub repos used when the settings name none (each is configurable, "" turns a kind off).
DEFAULT_SOURCES: dict[AuxKind, str] = {
    "safety-checker": "CompVis/stable-diffusion-safety-checker",
    "enhancer": "Gustavosta/MagicPrompt-Stable-Diffusion",
    "captioner": "Salesforce/blip-image-captioning-base",
    # The ControlNet annotators (engine.auxiliary.annotators): depth maps and pose skeletons.
    "depth": "depth-anything/Depth-Anything-V2-Small-hf",
    "depth-midas": "Intel/dpt-hybrid-midas",
    "pose": "usyd-community/vitpose-base-simple",
    "person-detector": "PekingU/rtdetr_r50vd_coco_o365",
}
# What each kind is, in the messages a caller reads.
_WHAT: dict[AuxKind, str] = {"safety-checker": "the Stable Diffusion safety checker",
                             "enhancer": "a prompt enhancer", "captioner": "an image captioner",
                             "depth": "a depth estimator (Depth Anything)", "depth-midas": "a MiDaS depth estimator (DPT)",
                             "pose": "a pose estimator (ViTPose)", "person-detector": "a person detector (RT-DETR)"}
# Hub repos carry the same weights in several formats; a pull fetches the PyTorch ones once.
_PULL_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "tf_model*", "flax_model*", "rust_model*", "*.tflite"]


@dataclass(frozen=True)
class AuxSpec:
    """One auxiliary model: its kind (also its `sdserve pull` name) and its weights."""

    kind: AuxKind
    source: WeightSource

    @property
    def id(self) -> str:
        """Its name among the loaded models (the memory budget's LRU, /readyz, /metrics)."""
        return f"aux:{self.kind}"


def demo_aux_dir(demo_dir: Path) -> Path:
    """Where demo mode keeps its tiny auxiliary models."""
    return demo_dir / "aux"


def _folder(src: WeightSource) -> Path | None:
    if src.path is not None:
        return src.path if src.path.is_dir() else None
    from huggingface_hub import snapshot_download

    assert src.repo is not None
    try:
        return Path(snapshot_download(src.repo, revision=src.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, offline or a bad id: "not here"
        return None


def aux_available(spec: AuxSpec | None) -> bool:
    """Whether ``spec``'s weights are on this machine (config and a weights file)."""
    if spec is None:
        return False
    folder = _folder(spec.source)
    if folder is None or not (folder / "config.json").is_file():
        return False
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def aux_folder(spec: AuxSpec) -> Path:
    """The local folder of ``spec``'s weights; raises the 4xx ``unavailable`` when missing."""
    folder = _folder(spec.source) if aux_available(spec) else None
    if folder is None:
        raise unavailable(spec.kind, spec.kind.replace("-", "_"), configured=True)
    return folder


def unavailable(kind: AuxKind, field: str, configured: bool) -> BadInput:
    """The caller's 4xx for a request needing ``kind`` on a server without it."""
    if configured:
        how = f"the operator can run `sdserve pull {kind}` to download its weights"
    else:
        how = f"the operator turned it off (set {kind.replace('-', '_')}_model to enable it)"
    return BadInput(field, f"{_WHAT[kind]} is not installed on this server: {how}")


def missing_models(what: str, kinds: list[AuxKind], field: str, configured: set[AuxKind]) -> BadInput:
    """The caller's 4xx for ``what`` (a preprocessor) needing ``kinds`` the server lacks: one
    `sdserve pull` per model to fetch, or the setting that turned it off."""
    hows = [f"`sdserve pull {k}`" if k in configured else f"set {k.replace('-', '_')}_model" for k in kinds]
    return BadInput(field, f"{what} needs {' and '.join(_WHAT[k] for k in kinds)}, not installed on this server: "
                           f"the operator can run {' and '.join(hows)}")


def aux_pull(spec: AuxSpec) -> str:
    """Download ``spec``'s weights into the Hugging Face cache (progress on stderr)."""
    if spec.source.path is not None:
        return f"{spec.source.path} (local, nothing to download)"
    from huggingface_hub import snapshot_download

    assert spec.source.repo is not None
    return str(snapshot_download(spec.source.repo, revision=spec.source.revision, ignore_patterns=_PULL_IGNORE))
