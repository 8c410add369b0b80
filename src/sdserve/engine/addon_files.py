"""Where add-on files live and how a request's name for one becomes a path.

A1111's layout under ``data_dir/models/`` (``Lora/``, ``embeddings/``, ``VAE/``, ``ESRGAN/``,
``ControlNet/``, ...), each kind's folders settable (``Settings.model_dirs``), so an A1111
install's models folder can be pointed at as it is. Torch-free: the API lists these files
(``/sdapi/v1/loras``, ComfyUI's ``/models/{folder}``) without loading the engine.

Names are what A1111 users type: the file name without its extension (``add_detail`` for
``Lora/style/add_detail.safetensors``), or the path below the folder (``style/add_detail``).
A name never leaves its folders: absolute paths, ``..`` and links that point outside are
refused, so a request cannot make the server read an arbitrary file.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from ..errors import BadInput

__all__ = ["AddonKind", "ADDON_KINDS", "FOLDERS", "AddonFile", "AddonFolders", "file_sha256"]

AddonKind = Literal["checkpoint", "lora", "embedding", "vae", "upscaler", "face_restorer", "controlnet",
                    "ip_adapter"]
ADDON_KINDS: tuple[AddonKind, ...] = get_args(AddonKind)

# A1111's folder names under models/ (first one is where `sdserve pull` and make-tiny write).
FOLDERS: dict[AddonKind, tuple[str, ...]] = {
    "checkpoint": ("Stable-diffusion",),
    "lora": ("Lora", "LyCORIS"),
    "embedding": ("embeddings",),
    "vae": ("VAE",),
    "upscaler": ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT"),
    "face_restorer": ("GFPGAN", "Codeformer"),
    "controlnet": ("ControlNet",),
    "ip_adapter": ("ipadapter",),
}

# Single files each kind is stored in. Pickled formats (.pt/.ckpt/.pth/.bin) are loaded only
# with torch's ``weights_only=True`` by whoever reads them.
FILE_SUFFIXES: dict[AddonKind, tuple[str, ...]] = {
    "checkpoint": (".safetensors", ".ckpt"),
    "lora": (".safetensors", ".pt", ".ckpt"),
    "embedding": (".safetensors", ".pt", ".bin"),
    "vae": (".safetensors", ".pt", ".ckpt"),
    "upscaler": (".safetensors", ".pth", ".pt"),
    "face_restorer": (".safetensors", ".pth"),
    "controlnet": (".safetensors", ".pth", ".pt", ".bin"),
    "ip_adapter": (".safetensors", ".bin"),
}

# A diffusers/PEFT folder counts as one add-on when it holds one of these files.
FOLDER_MARKERS: dict[AddonKind, tuple[str, ...]] = {
    "checkpoint": ("model_index.json",),
    "lora": ("adapter_config.json", "pytorch_lora_weights.safetensors"),
    "vae": ("config.json",),
    "controlnet": ("config.json",),
}

# Folders that belong to the add-ons beside them (an IP-Adapter's CLIP image encoder), not add-ons.
_NOT_ADDONS: dict[AddonKind, tuple[str, ...]] = {"ip_adapter": ("image_encoder",)}


@dataclass(frozen=True)
class AddonFile:
    """One add-on on disk: a single file, or a diffusers folder (``is_dir``)."""

    kind: AddonKind
    # Path below its folder, without the file's suffix, with "/" separators: "style/add_detail".
    name: str
    path: Path
    size: int
    mtime: float

    @property
    def stem(self) -> str:
        """The last part of the name: what A1111 shows and prompts use (``<lora:add_detail:1>``)."""
        return PurePosixPath(self.name).name

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()

    def sha256(self) -> str:
        """The file's SHA-256 (A1111's "Model hash" is its first 10 hex digits), cached per
        path, size and modification time; a folder hashes its largest weight file."""
        target = self.path if not self.is_dir else max(
            (p for p in self.path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        return _sha256(str(target), target.stat().st_size, target.stat().st_mtime)


_HASHES: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    """A file's SHA-256, cached per path, size and modification time (checkpoints' "Model hash")."""
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime)


def _sha256(path: str, size: int, mtime: float) -> str:
    key = (path, size, mtime)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links followed, lies in ``root`` (already resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


@dataclass
class AddonFolders:
    """The add-on folders of one server: scanned on first use and on :meth:`refresh`."""

    models_dir: Path
    # Kind -> folders replacing the default ``models_dir/<FOLDERS[kind]>`` ones.
    overrides: Mapping[str, Iterable[Path]] = field(default_factory=dict)
    _found: dict[AddonKind, list[AddonFile]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        unknown = set(self.overrides) - set(ADDON_KINDS)
        if unknown:
            raise ValueError(f"model_dirs: unknown kind(s) {sorted(unknown)}; known: {', '.join(ADDON_KINDS)}")

    def roots(self, kind: AddonKind) -> list[Path]:
        """The folders searched for ``kind``, in order (they need not exist)."""
        if kind in self.overrides:
            return [Path(p) for p in self.overrides[kind]]
        return [self.models_dir / f for f in FOLDERS[kind]]

    def home(self, kind: AddonKind) -> Path:
        """Where new files of ``kind`` are written (``sdserve pull``, make-tiny)."""
        return self.roots(kind)[0]

    def refresh(self, kind: AddonKind | None = None) -> None:
        """Scan the folders again (A1111's ``refresh-loras`` and the like)."""
        for k in (kind,) if kind else ADDON_KINDS:
            found = self._scan(k)
            with self._lock:
                self._found[k] = found

    def files(self, kind: AddonKind) -> list[AddonFile]:
        """Every add-on of ``kind``, sorted by name."""
        with self._lock:
            cached = self._found.get(kind)
        if cached is None:
            self.refresh(kind)
            with self._lock:
                cached = self._found[kind]
        return list(cached)

    def find(self, kind: AddonKind, name: str, *, field: str) -> AddonFile:
        """The add-on ``name`` refers to; a 4xx naming ``field`` if it refers to none.

        Accepts the name, the stem, or the file name with its suffix. A miss rescans once
        (a file copied in since the last scan is found without a refresh call).
        """
        self._check_name(name, field)
        hit = self._match(kind, name)
        if hit is None:
            self.refresh(kind)
            hit = self._match(kind, name)
        if hit is None:
            names = [f.stem for f in self.files(kind)]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"; available: {', '.join(names[:20])}" if names else
                f"; none installed (put files in {self.home(kind)})")
            raise BadInput(field, f"no {kind.replace('_', ' ')} named {name!r}{hint}")
        return hit

    def _match(self, kind: AddonKind, name: str) -> AddonFile | None:
        files = self.files(kind)
        for key in (lambda f: f.name, lambda f: f.stem, lambda f: f.filename,
                    lambda f: f"{PurePosixPath(f.name).parent}/{f.filename}".lstrip("./")):
            for f in files:
                if key(f) == name:
                    return f
        return None

    @staticmethod
    def _check_name(name: str, field: str) -> None:
        p = PurePosixPath(name.replace("\\", "/"))
        if not name or not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
            raise BadInput(field, f"{name!r} is not an add-on name (names are file names inside the "
                                  "server's model folders; paths that leave them are refused)")

    def _scan(self, kind: AddonKind) -> list[AddonFile]:
        out: dict[str, AddonFile] = {}
        for root in self.roots(kind):
            if not root.is_dir():
                continue
            real_root = root.resolve()
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                here = Path(dirpath)
                for d in list(dirnames):
                    sub = here / d
                    if d in _NOT_ADDONS.get(kind, ()):
                        dirnames.remove(d)
                        continue
                    if any((sub / m).is_file() for m in FOLDER_MARKERS.get(kind, ())) and _inside(sub, real_root):
                        dirnames.remove(d)  # a diffusers folder is one add-on, not a tree of them
                        self._add(out, kind, root, sub, is_dir=True)
                for fn in filenames:
                    path = here / fn
                    if path.suffix.lower() in FILE_SUFFIXES[kind] and _inside(path, real_root):
                        self._add(out, kind, root, path, is_dir=False)
        return sorted(out.values(), key=lambda f: f.name.lower())

    @staticmethod
    def _add(out: dict[str, AddonFile], kind: AddonKind, root: Path, path: Path, *, is_dir: bool) -> None:
        rel = path.relative_to(root)
        name = rel.as_posix() if is_dir else rel.with_suffix("").as_posix()
        if name in out:  # the same name in an earlier folder (or with another suffix) wins
            return
        st = path.stat()
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if is_dir else st.st_size
        out[name] = AddonFile(kind=kind, name=name, path=path, size=size, mtime=st.st_mtime)
