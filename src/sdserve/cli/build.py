"""Building the catalog, engine and service from Settings."""

from __future__ import annotations


from ..config import Settings, UserModel
from ..engine.catalog import BUILTIN_MODELS, Catalog, Defaults, ModelSpec, WeightSource

__all__ = ["build_catalog", "build_engine", "build_service", "user_spec"]


def user_spec(m: UserModel) -> ModelSpec:
    """A ModelSpec for a ``[[models]]`` entry, with its family's defaults where unset."""
    family = next(s for s in BUILTIN_MODELS if s.arch == m.arch and s.unet is None and "txt2img" in s.tasks)
    d = family.defaults
    defaults = Defaults(
        width=m.width or d.width, height=m.height or d.height, steps=m.steps or d.steps,
        guidance=d.guidance if m.guidance is None else m.guidance, scheduler=m.scheduler or d.scheduler,
        strength=1.0 if m.inpaint_only else d.strength,
    )
    return ModelSpec(
        id=m.id, arch=m.arch, source=WeightSource.parse(m.source), defaults=defaults,
        description=m.description or f"user model from {m.source}", aliases=tuple(m.aliases),
        tasks=("inpaint",) if m.inpaint_only else ("txt2img", "img2img", "inpaint"),
        demo_layout=("sd15-inpaint" if m.inpaint_only else m.arch) if m.arch == "sd15" else "sdxl",
    )


def build_catalog(settings: Settings) -> Catalog:
    catalog = Catalog.builtin().with_models(user_spec(m) for m in settings.models)
    if settings.demo:
        catalog = catalog.for_demo(settings.demo_dir)
    return catalog


def build_engine(settings: Settings):  # type: ignore[no-untyped-def]
    from ..engine.engine import Engine, EngineOptions  # imports torch: only when needed

    return Engine(build_catalog(settings), EngineOptions(
        device=settings.device, dtype=settings.dtype, max_image_pixels=settings.max_image_pixels,
        demo_dir=settings.demo_dir if settings.demo else None,
    ))


def build_service(settings: Settings):  # type: ignore[no-untyped-def]
    from ..service.service import JobService

    return JobService(build_engine(settings), max_queue=settings.max_queue)


