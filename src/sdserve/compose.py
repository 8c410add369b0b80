"""The composition root: the catalog, engine and service built from Settings.

Both front ends use it: the CLI (``serve``, ``generate``, ``bench``) and the Ray deployment
(each API replica builds its service here, each model replica its engine). It sits above
the API layer because it picks dialect vocabulary the service embeds (A1111's sampler
labels in the outputs' metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdserve.config import Settings, UserModel
from sdserve.engine.catalog import BUILTIN_MODELS, Catalog, Defaults, ModelSpec, WeightSource

if TYPE_CHECKING:  # imports torch: at run time only inside build_engine
    from sdserve.engine.engine import Engine

__all__ = ["build_catalog", "build_engine", "build_addons", "addon_dirs", "build_service", "build_database",
           "build_artifacts", "build_fetcher", "service_options", "request_limits", "user_spec", "aux_sources"]


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
        loras=tuple(sorted(m.loras.items())),
    )


def build_catalog(settings: Settings) -> Catalog:
    catalog = Catalog.builtin().with_models(user_spec(m) for m in settings.models)
    if settings.demo:
        catalog = catalog.for_demo(settings.demo_dir)
    return catalog


def build_engine(settings: Settings) -> Engine:
    from sdserve.engine.engine import Engine, EngineOptions  # imports torch: only when needed

    s = settings
    return Engine(build_catalog(s), EngineOptions(
        device=s.device, dtype=s.dtype, max_image_pixels=s.max_image_pixels,
        demo_dir=s.demo_dir if s.demo else None, max_loaded_models=s.max_loaded_models,
        memory_budget_bytes=int(s.model_memory_gb * 2**30) or None, max_batch_images=s.max_batch_images,
        threads=s.threads or None, channels_last=s.channels_last, compile=s.compile, vae_tiling=s.vae_tiling,
        sdxl_vae=WeightSource.parse(s.sdxl_vae) if s.sdxl_vae else None,
        models_dir=s.addon_dir, model_dirs=addon_dirs(s), aux=aux_sources(s),
    ))


def aux_sources(settings: Settings):  # type: ignore[no-untyped-def]
    """The auxiliary models by kind (engine.auxiliary): the configured sources, or in demo
    mode the tiny ones under the demo folder."""
    from sdserve.engine.auxiliary.specs import demo_aux_dir

    s = settings
    named = {"safety-checker": s.safety_checker_model, "enhancer": s.enhancer_model, "captioner": s.captioner_model,
             # the ControlNet annotators (depth and pose preprocessors)
             "depth": s.depth_model, "depth-midas": s.depth_midas_model, "pose": s.pose_model,
             "person-detector": s.person_detector_model}
    if s.demo:
        return {kind: WeightSource(path=demo_aux_dir(s.demo_dir) / kind) for kind in named}
    return {kind: WeightSource.parse(src) for kind, src in named.items() if src.strip()}


def build_addons(settings: Settings):  # type: ignore[no-untyped-def]
    """The add-on folders (for an engine that does not own them: a Ray API replica)."""
    from sdserve.engine.addon_files import AddonFolders

    return AddonFolders(settings.addon_dir, addon_dirs(settings))


def addon_dirs(settings: Settings) -> dict[str, list[Path]]:
    """``model_dirs``, plus in demo mode the tiny ControlNets and IP-Adapters beside the demo
    models (searched after the server's own folders; engine.tiny_lora writes them)."""
    from sdserve.engine.addon_files import FOLDERS

    dirs = {k: list(v) for k, v in settings.model_dirs.items()}
    if settings.demo:
        for kind in ("controlnet", "ip_adapter"):
            own = dirs.get(kind, [settings.addon_dir / f for f in FOLDERS[kind]])
            dirs[kind] = [*own, settings.demo_dir / FOLDERS[kind][0]]
    return dirs


def build_database(settings: Settings):  # type: ignore[no-untyped-def]
    """The job database (migrated): ``database_url``, else SQLite under the data dir."""
    from sdserve.service.db import Database

    return Database(settings.database_url) if settings.database_url else Database.at(settings.data_dir)


def build_artifacts(settings: Settings):  # type: ignore[no-untyped-def]
    from sdserve.service.artifacts import LocalArtifacts, S3Artifacts

    if settings.outputs_backend == "s3":
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return S3Artifacts(settings.s3_bucket or "", settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
                           region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                           secret_access_key=secret, presign=settings.s3_presign)
    return LocalArtifacts(settings.outputs_dir or settings.data_dir / "outputs")


def build_fetcher(settings: Settings):  # type: ignore[no-untyped-def]
    from sdserve.service.fetch import Fetcher, FetchPolicy

    return Fetcher(FetchPolicy(allow_private=settings.allow_private_urls, timeout_s=settings.fetch_timeout_s,
                               max_bytes=int(settings.fetch_max_mb * 1024 * 1024)))


def request_limits(settings: Settings):  # type: ignore[no-untyped-def]
    """The server's per-request limits, as the job service takes them."""
    from sdserve.service.limits import RequestLimits

    s = settings
    return RequestLimits(max_steps=s.request_max_steps, max_side=s.request_max_side, max_pixels=s.request_max_pixels,
                         max_images=s.request_max_images, max_cost=s.request_max_cost)


def service_options(settings: Settings):  # type: ignore[no-untyped-def]
    from sdserve.api.dialects.a1111.samplers import infotext_sampler
    from sdserve.service.service import ServiceOptions
    from sdserve.service.webhooks import WebhookPolicy

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return ServiceOptions(
        max_attempts=settings.max_attempts, preview_every=settings.preview_every,
        retention_s=settings.output_retention_hours * 3600 or None, url_ttl_s=settings.output_url_ttl_s,
        public_url=settings.public_url or f"http://{host}:{settings.port}",
        batch_wait_s=settings.batch_wait_ms / 1000, max_image_pixels=settings.max_image_pixels,
        limits=request_limits(settings),
        lease_s=settings.job_lease_s, heartbeat_s=settings.job_lease_s / 6,
        webhook=WebhookPolicy(max_attempts=settings.webhook_max_attempts, retry_base_s=settings.webhook_retry_base_s),
        sampler_label=infotext_sampler,
        safety_policy=settings.safety_checker,
    )


def build_service(settings: Settings, engine=None, *, artifacts=None, **options):  # type: ignore[no-untyped-def]
    """The job service with its database, artifact store and fetcher; ``engine`` defaults
    to a new one (tests pass their session engine, a Ray API replica its remote engine),
    ``artifacts`` to the configured store (tests pass one that fails or is slow).
    ``options`` override ServiceOptions fields (a Ray API replica: workers, worker_id)."""
    from dataclasses import replace

    from sdserve.service.service import JobService

    return JobService(engine or build_engine(settings), max_queue=settings.max_queue, db=build_database(settings),
                      artifacts=build_artifacts(settings) if artifacts is None else artifacts, fetcher=build_fetcher(settings),
                      options=replace(service_options(settings), **options))


