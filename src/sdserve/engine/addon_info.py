"""What the API lists about an add-on file, read without torch (the API layer never imports it).

* safetensors: the JSON header alone (tensor names and shapes, ``__metadata__``); no weight is read.
* A1111's pickled ``.pt`` embeddings: the pickle is walked by an unpickler that builds nothing
  but plain containers and records tensor shapes (every class it meets becomes an inert stub,
  so a file cannot run code here).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .addon_files import AddonFile

__all__ = ["safetensors_header", "lora_metadata", "EmbeddingInfo", "embedding_info"]

_MAX_HEADER = 100 * 2**20


@lru_cache(maxsize=256)
def _header(path: str, size: int, mtime: float) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(_MAX_HEADER, size):
            raise ValueError("not a safetensors file")
        out = json.loads(f.read(n))
    if not isinstance(out, dict):
        raise ValueError("not a safetensors file")
    return out


def safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a safetensors file: tensor name -> {dtype, shape, ...}, and __metadata__."""
    st = path.stat()
    return _header(str(path), st.st_size, st.st_mtime)


def lora_metadata(f: AddonFile) -> dict[str, Any]:
    """A LoRA's training metadata (kohya's ``ss_*`` keys), JSON values decoded as A1111 shows them."""
    if f.is_dir or f.path.suffix.lower() != ".safetensors":
        return {}
    try:
        meta = safetensors_header(f.path).get("__metadata__") or {}
    except (OSError, ValueError, struct.error):
        return {}
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, str) and v[:1] in "{[":
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k] = v
    return out


@dataclass(frozen=True)
class EmbeddingInfo:
    """An embedding's vectors per encoder: ``("",)`` for one encoder, ``clip_l``/``clip_g`` for SDXL."""

    vectors: int
    shape: int  # width of one vector, both encoders' summed for SDXL (as A1111 reports it)
    sdxl: bool
    step: int | None = None


class _Stub:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        pass


class _Tensor:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)


def _rebuild(storage: Any, offset: Any, size: Any, *rest: Any) -> _Tensor:
    return _Tensor(tuple(size))


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name.startswith("_rebuild_tensor") or name == "_rebuild_parameter":
            return _rebuild if name.startswith("_rebuild_tensor") else (lambda t, *a: t)
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return _Stub

    def persistent_load(self, pid: Any) -> None:
        return None


def _pt_shapes(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
        data = _ShapeUnpickler(io.BytesIO(z.read(pkl))).load()
    return data if isinstance(data, dict) else {}


def embedding_info(f: AddonFile) -> EmbeddingInfo | None:
    """Vectors and width of an embedding file; None when it cannot be read."""
    try:
        if f.path.suffix.lower() == ".safetensors":
            shapes = {k: tuple(v["shape"]) for k, v in safetensors_header(f.path).items() if k != "__metadata__"}
            step = None
        else:
            data = _pt_shapes(f.path)
            step = data.get("step") if isinstance(data.get("step"), int) else None
            params = data.get("string_to_param", data)
            shapes = {k: v.shape for k, v in params.items() if isinstance(v, _Tensor)}
    except Exception:  # noqa: BLE001 - listed as skipped, never an error for the listing
        return None
    if "clip_l" in shapes and "clip_g" in shapes:
        g, ell = shapes["clip_g"], shapes["clip_l"]
        return EmbeddingInfo(vectors=g[0] if len(g) > 1 else 1, shape=g[-1] + ell[-1], sdxl=True, step=step)
    if len(shapes) != 1:
        return None
    s = next(iter(shapes.values()))
    return EmbeddingInfo(vectors=s[0] if len(s) > 1 else 1, shape=s[-1], sdxl=False, step=step)
