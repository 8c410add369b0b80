"""Face restoration (docs/faces.md): which restorers this server runs and their files.

Torch-free: the API lists restorers and prepare checks requests without loading the
engine; :func:`restore_faces` imports the torch side (``restore.py``) when first called.

Files live in A1111's folders of the ``face_restorer`` add-on kind (``models/GFPGAN``,
``models/Codeformer``): a GFPGAN v1.3/v1.4 file (any name containing "GFPGAN"), and beside it
the RetinaFace detector facexlib uses (``detection_Resnet50_Final.pth``, or the mobilenet0.25
one), where A1111 keeps it too. ``sdserve pull gfpgan`` fetches both. CodeFormer
(``codeformer.pth``, any name containing "codeformer") is copied into ``models/Codeformer`` by
hand: no hub mirror of it with a checkable hash is known, so there is no pull for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import BadInput
from ..addon_files import AddonFile, AddonFolders

if TYPE_CHECKING:  # pragma: no cover
    from ..memory import AddonCache
    from PIL.Image import Image

    from ..params import FaceRestoration, GenerationParams

__all__ = ["RESTORERS", "BUILT", "restorer_name", "restorer_file", "detector_file", "installed_restorers",
           "check_restorer", "check_face_restoration", "restore_faces"]

# A1111's restorer names, in its order.
RESTORERS = ("CodeFormer", "GFPGAN")
# Those sdserve has a network for.
BUILT = ("CodeFormer", "GFPGAN")
_PULL = {"GFPGAN": "run `sdserve pull gfpgan`",
         "CodeFormer": "copy CodeFormer's release file codeformer.pth (github.com/sczhou/CodeFormer/releases, "
                       "v0.1.0) into models/Codeformer by hand, and run `sdserve pull gfpgan` for the detector"}


def restorer_name(name: str, *, field: str) -> str:
    """A1111's spelling of a restorer name given in any case; BadInput naming ``field``."""
    for known in RESTORERS:
        if name.strip().lower() == known.lower():
            return known
    raise BadInput(field, f"{name!r} is not a face restorer: use one of {', '.join(RESTORERS)}")


def _is_detector(f: AddonFile) -> bool:
    return f.stem.lower().startswith("detection_")


def _prefer_real(found: list[AddonFile]) -> list[AddonFile]:
    """Real weights before the tiny random ones demo mode writes beside them."""
    real = [f for f in found if "tiny" not in f.stem.lower()]
    return real or found


def restorer_file(addons: AddonFolders, model: str) -> AddonFile | None:
    """The weights file of restorer ``model`` (the highest version by name), or None."""
    tag = model.lower()
    found = _prefer_real([f for f in addons.files("face_restorer") if tag in f.stem.lower() and not _is_detector(f)])
    return found[-1] if found else None


def detector_file(addons: AddonFolders) -> AddonFile | None:
    """The RetinaFace weights (ResNet-50 preferred over MobileNet-0.25), or None."""
    found = _prefer_real([f for f in addons.files("face_restorer") if _is_detector(f)])
    found.sort(key=lambda f: "resnet50" not in f.stem.lower())
    return found[0] if found else None


def installed_restorers(addons: AddonFolders) -> list[tuple[str, AddonFile]]:
    """The restorers a request can use now: built, with their weights and the detector."""
    if detector_file(addons) is None:
        return []
    return [(name, f) for name in RESTORERS if name in BUILT and (f := restorer_file(addons, name)) is not None]


def check_restorer(addons: AddonFolders, model: str, *, field: str) -> str:
    """``model``'s A1111 name if this server can run it now, else BadInput naming ``field``
    and saying what to pull (or that the network is not built)."""
    name = restorer_name(model, field=field)
    if name not in BUILT:
        raise BadInput(field, f"{name} face restoration is not available on this server: sdserve does not include "
                              f"its network ({', '.join(BUILT)} is built); use {BUILT[0]}")
    missing = [what for what, f in ((f"{name} weights", restorer_file(addons, name)),
                                    ("the RetinaFace face detector", detector_file(addons))) if f is None]
    if missing:
        raise BadInput(field, f"{name} face restoration is not installed on this server: {' and '.join(missing)} "
                              f"missing in {addons.home('face_restorer')}; the operator can {_PULL[name]}")
    return name


def check_face_restoration(p: GenerationParams, addons: AddonFolders) -> GenerationParams:
    """``p`` with its face-restoration steps under A1111's names, once each can run here
    (BadInput naming ``face_restoration`` if not)."""
    if not p.face_restoration:
        return p
    steps = tuple(s.model_copy(update={"model": check_restorer(addons, s.model, field="face_restoration")})
                  for s in p.face_restoration)
    return p.model_copy(update={"face_restoration": steps})


def restore_faces(images: Sequence[Image], steps: Sequence[FaceRestoration], seeds: Sequence[int], *,
                  device: Any, addons: AddonFolders, store: AddonCache | None = None) -> list[Image]:
    """Each image through ``steps`` in order (detect, align, restore, paste back, blend by
    visibility). ``seeds``: one per image, for the restorer's noise. ``store``: the engine's
    add-on cache, which keeps the networks under its memory budget."""
    from .restore import restore_images

    return restore_images(images, steps, seeds, device=device, addons=addons, store=store)

