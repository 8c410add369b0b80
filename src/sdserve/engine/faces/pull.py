"""``sdserve pull gfpgan``: the GFPGAN v1.4 weights and the RetinaFace detector, into
A1111's ``models/GFPGAN`` folder. Torch-free.

The originals are GitHub release files (TencentARC/GFPGAN v1.3.4 ``GFPGANv1.4.pth``,
xinntao/facexlib v0.1.0 ``detection_Resnet50_Final.pth``); sdserve downloads only through
the Hugging Face hub, so it reads them from public hub mirrors and checks each file's
SHA-256 against the release file's before installing it: a mirror can only fail a pull,
never change the weights. Requests never download anything.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..addon_files import AddonFolders

__all__ = ["FaceWeights", "FACE_PULLS", "pull_faces"]


@dataclass(frozen=True)
class FaceWeights:
    filename: str  # as installed (the release file's name, which A1111 looks for)
    repo: str  # the hub mirror
    repo_type: str
    path: str  # the file inside the mirror
    sha256: str  # of the release file
    size: int


FACE_PULLS: dict[str, tuple[FaceWeights, ...]] = {
    "gfpgan": (
        FaceWeights("GFPGANv1.4.pth", "Gourieff/ReActor", "dataset", "models/facerestore_models/GFPGANv1.4.pth",
                    "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", 348632874),
        FaceWeights("detection_Resnet50_Final.pth", "camenduru/facexlib", "model", "detection_Resnet50_Final.pth",
                    "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", 109497761),
    ),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pull_faces(name: str, addons: AddonFolders) -> list[str]:
    """Download ``name``'s files (progress on stderr) and install them; lines to print.
    Raises RuntimeError when a download does not match the release file."""
    from huggingface_hub import hf_hub_download

    home = addons.home("face_restorer")
    home.mkdir(parents=True, exist_ok=True)
    lines = []
    for w in FACE_PULLS[name]:
        dest = home / w.filename
        if dest.is_file() and dest.stat().st_size == w.size and _sha256(dest) == w.sha256:
            lines.append(f"{dest} (already installed)")
            continue
        cached = Path(hf_hub_download(w.repo, w.path, repo_type=w.repo_type))
        got = _sha256(cached)
        if got != w.sha256:
            raise RuntimeError(f"{w.repo}/{w.path} is not the release file {w.filename} (sha256 {got}, expected "
                               f"{w.sha256}); nothing installed. Copy the release file into {home} by hand instead.")
        tmp = dest.with_suffix(".part")
        shutil.copyfile(cached, tmp)
        tmp.replace(dest)
        lines.append(str(dest))
    addons.refresh("face_restorer")
    return lines
