"""Model families and the built-in catalog: which ids exist, where their weights live,
and the defaults each family wants. Torch-free, so every layer can read it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..errors import BadInput, UnknownModel
from .params import ModelTask, Task

__all__ = ["Arch", "Defaults", "WeightSource", "ModelSpec", "Catalog", "BUILTIN_MODELS", "DEMO_LAYOUTS", "DEMO_SIZE"]

Arch = Literal["sd15", "sdxl"]


@dataclass(frozen=True)
class Defaults:
    """Per-model defaults applied where a request leaves a field out."""

    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    strength: float = 0.75


@dataclass(frozen=True)
class WeightSource:
    """Where weights come from: a hub repo id, a local diffusers folder, or one file.

    ``filename`` picks one file inside a hub repo (the Lightning UNet). A ``path`` ending in
    .safetensors/.ckpt is a single-file checkpoint in the original (LDM) layout; such a file
    holds weights only, and ``config`` says where its component configs (model_index.json,
    */config.json, tokenizers) come from: a diffusers folder or hub repo of the same family.
    Without it, ``engine.loading`` looks next to the file, then in the Hugging Face cache.
    """

    repo: str | None = None
    path: Path | None = None
    filename: str | None = None
    revision: str | None = None
    config: WeightSource | None = None

    def __post_init__(self) -> None:
        if (self.repo is None) == (self.path is None):
            raise ValueError("a WeightSource needs exactly one of repo or path")

    @property
    def is_single_file(self) -> bool:
        return self.path is not None and self.path.suffix in {".safetensors", ".ckpt"}

    def describe(self) -> str:
        where = self.repo if self.repo else str(self.path)
        return f"{where}/{self.filename}" if self.filename else where

    @classmethod
    def parse(cls, text: str) -> WeightSource:
        """A hub id ``org/name``, or a path (absolute, ./relative, ~, or existing)."""
        p = Path(text).expanduser()
        if text.startswith(("/", ".", "~")) or p.exists() or p.suffix in {".safetensors", ".ckpt"}:
            return cls(path=p)
        if text.count("/") != 1:
            raise BadInput("source", f"{text!r} is neither an existing path nor a hub repo id 'org/name'")
        return cls(repo=text)


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: an id, its family, its weights and its defaults."""

    id: str
    arch: Arch
    source: WeightSource
    defaults: Defaults
    description: str = ""
    aliases: tuple[str, ...] = ()
    tasks: tuple[ModelTask, ...] = ("txt2img", "img2img", "inpaint")
    # Replaces the UNet of ``source`` (SDXL-Lightning ships only a distilled UNet).
    unet: WeightSource | None = None
    # Which tiny layout ``make-tiny`` writes for this model in demo mode.
    demo_layout: str = "sd15"
    # LoRAs every request to this id gets (name, weight): a preset, so a dialect that cannot name
    # LoRAs (OpenAI, Workers AI) reaches one through the model id (engine.addon_refs).
    loras: tuple[tuple[str, float], ...] = ()
    # An SDXL refiner (one text encoder, OpenCLIP-G; conditioned on an aesthetic score): loads
    # as diffusers' img2img pipeline and finishes another SDXL model's schedule (Refiner).
    refiner: bool = False

    @property
    def slug(self) -> str:
        """The id without Workers AI's ``@cf/`` prefix, as gateways and hub users name the
        model (``runwayml/stable-diffusion-v1-5-img2img``); the id itself when it has none."""
        return self.id.removeprefix("@cf/")

    def check_task(self, task: Task) -> None:
        if task not in self.tasks:
            need = {"inpaint": "an image and a mask", "img2img": "an image", "txt2img": "no image"}
            allowed = " or ".join(f"{t} ({need[t]})" for t in self.tasks)
            raise BadInput("image" if task == "txt2img" else "mask",
                           f"model {self.id} does {allowed}, not {task}")


_SD15 = Defaults(width=512, height=512, steps=20, guidance=7.5, scheduler="dpmpp_2m")
_SDXL = Defaults(width=1024, height=1024, steps=20, guidance=7.5, scheduler="dpmpp_2m")
_SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
_REFINER_REPO = "stabilityai/stable-diffusion-xl-refiner-1.0"

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="@cf/runwayml/stable-diffusion-v1-5-img2img",
        arch="sd15",
        source=WeightSource(repo=_SD15_REPO),
        defaults=_SD15,
        description="Stable Diffusion 1.5 (txt2img, img2img, inpaint on the base UNet).",
        aliases=("sd15", "stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5", _SD15_REPO),
        demo_layout="sd15",
    ),
    ModelSpec(
        id="@cf/runwayml/stable-diffusion-v1-5-inpainting",
        arch="sd15",
        source=WeightSource(repo="stable-diffusion-v1-5/stable-diffusion-inpainting"),
        defaults=replace(_SD15, strength=1.0),
        description="Stable Diffusion 1.5 inpainting checkpoint (9-channel UNet); needs image and mask.",
        aliases=("sd15-inpainting", "stable-diffusion-v1-5/stable-diffusion-inpainting"),
        tasks=("inpaint",),
        demo_layout="sd15-inpaint",
    ),
    ModelSpec(
        id="@cf/stabilityai/stable-diffusion-xl-base-1.0",
        arch="sdxl",
        source=WeightSource(repo=_SDXL_REPO),
        defaults=_SDXL,
        description="Stable Diffusion XL base 1.0, 1024x1024 native.",
        aliases=("sdxl", _SDXL_REPO),
        demo_layout="sdxl",
    ),
    ModelSpec(
        id="@cf/bytedance/stable-diffusion-xl-lightning",
        arch="sdxl",
        source=WeightSource(repo=_SDXL_REPO),
        unet=WeightSource(repo="ByteDance/SDXL-Lightning", filename="sdxl_lightning_4step_unet.safetensors"),
        # Distilled for 4 steps on trailing timesteps with CFG off (guidance 0).
        defaults=Defaults(width=1024, height=1024, steps=4, guidance=0.0, scheduler="euler_trailing"),
        description="SDXL-Lightning 4-step UNet on SDXL base; few steps, no CFG.",
        aliases=("sdxl-lightning", "ByteDance/SDXL-Lightning"),
        demo_layout="sdxl-lightning",
    ),
    ModelSpec(
        id="@cf/lykon/dreamshaper-8-lcm",
        arch="sd15",
        source=WeightSource(repo="Lykon/dreamshaper-8-lcm"),
        # Latent-consistency distilled: 4-8 steps, guidance 1-2.
        defaults=Defaults(width=512, height=512, steps=6, guidance=1.5, scheduler="lcm"),
        description="DreamShaper 8, latent-consistency distilled; few steps, low guidance.",
        aliases=("dreamshaper-8-lcm", "Lykon/dreamshaper-8-lcm"),
        demo_layout="lcm",
    ),
    ModelSpec(
        id=_REFINER_REPO,
        arch="sdxl",
        source=WeightSource(repo=_REFINER_REPO),
        # Stability's refiner settings: the last ~20% of a 1024px SDXL schedule.
        defaults=replace(_SDXL, strength=0.3),
        description="SDXL refiner 1.0: finishes an SDXL base's schedule (refiner, switch_at), or img2img.",
        aliases=("sdxl-refiner",),
        tasks=("img2img",),
        demo_layout="sdxl-refiner",
        refiner=True,
    ),
)

# Tiny layouts that make-tiny writes, one per family the catalog uses.
DEMO_LAYOUTS: tuple[str, ...] = ("sd15", "sd15-inpaint", "sdxl", "sdxl-lightning", "lcm", "sdxl-refiner")
# Default image side in demo mode: the smallest size Workers AI accepts.
DEMO_SIZE = 256


@dataclass
class Catalog:
    """Every servable model by id, with alias lookup (each id's slug form is an alias too).

    Beside the configured models it may hold found ones (``set_found``: checkpoints in the
    add-on folder, rescanned by A1111's refresh-checkpoints) and ask a ``finder`` on a miss
    (a file copied in since). Changes swap whole lists under a lock, so readers never see
    half an update.
    """

    models: list[ModelSpec] = field(default_factory=list)
    # Consulted when a name is not in the catalog: a spec to add, or None.
    finder: Callable[[str], ModelSpec | None] | None = None

    def __post_init__(self) -> None:
        self._configured = list(self.models)
        self._found: list[ModelSpec] = []
        self._lock = threading.Lock()
        self._index: dict[str, ModelSpec] = {}
        self._reindex()

    def _reindex(self) -> None:
        models = self._configured + [m for m in self._found if m.id not in {c.id for c in self._configured}]
        index: dict[str, ModelSpec] = {}
        for spec in models:
            for name in (spec.id, spec.slug, *spec.aliases):
                # User entries come after built-ins, so a user's alias wins over a built-in one.
                index[name] = spec
        self.models, self._index = models, index

    def set_found(self, specs: Iterable[ModelSpec]) -> None:
        """Replace the found models (configured ones keep their ids)."""
        with self._lock:
            self._found = list(specs)
            self._reindex()

    def _lookup(self, name: str) -> ModelSpec | None:
        spec = self._index.get(name)
        if spec is None and self.finder is not None:
            spec = self.finder(name)
            if spec is not None:
                with self._lock:
                    self._found = [m for m in self._found if m.id != spec.id] + [spec]
                    self._reindex()
        return spec

    def get(self, name: str) -> ModelSpec:
        """The spec for an id or alias, or UnknownModel naming what exists."""
        spec = self._lookup(name)
        if spec is None:
            raise UnknownModel(name, [m.id for m in self.models])
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def with_models(self, extra: Iterable[ModelSpec]) -> Catalog:
        """A catalog with ``extra`` added; an entry with an existing id replaces it."""
        extra = list(extra)
        ids = {m.id for m in extra}
        return Catalog([m for m in self.models if m.id not in ids] + extra)

    def for_demo(self, demo_dir: Path) -> Catalog:
        """The same ids, each pointed at the tiny random-weight model of its family.

        Steps, guidance and scheduler stay the model's own; the default size becomes
        DEMO_SIZE square: random weights make noise at any size, so the default stays the
        cheapest one every dialect accepts (sizes up to 1024² still take only seconds with
        the demo architecture, engine.tiny).
        """
        out = []
        for m in self.models:
            layout_dir = demo_dir / m.demo_layout
            src = WeightSource(path=layout_dir / "base")
            unet = WeightSource(path=layout_dir / m.unet.filename) if m.unet and m.unet.filename else None
            defaults = replace(m.defaults, width=DEMO_SIZE, height=DEMO_SIZE)
            out.append(replace(m, source=src, unet=unet, defaults=defaults))
        return Catalog(out)

    @classmethod
    def builtin(cls) -> Catalog:
        return cls(list(BUILTIN_MODELS))
