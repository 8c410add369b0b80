"""The Ray Serve application: API replicas in front, model replicas behind.

    HTTP ─► Ray proxy ─► ApiServer ×N ──(DeploymentHandle, multiplexed by model)──► ModelServer ×M
                            │  job service: claims batches from PostgreSQL,
                            │  stores outputs in S3, answers every job's fetch/events
                            └─ RemoteEngine (the service's engine protocol over the handle)

``ApiServer`` is the embedded mode's FastAPI app (``build_app``) over the ordinary
``JobService``; only its engine differs. ``ModelServer`` is one ``Engine``: models are
``@serve.multiplexed`` (LRU per replica, and Ray routes a model's batches to replicas that
already hold it), and a batch the worker claimed runs as one ``generate_batch``.

Start it with ``sdserve serve --ray ADDRESS`` or ``serve run sdserve.deploy.ray:app``
(settings from SDSERVE_* and the TOML file named by ``config_file=...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from sdserve.compose import build_addons, build_catalog, build_engine, build_service
from ..config import Settings, load_settings
from ..engine.params import BatchItem, GenerationParams, StepInfo
from ..errors import SdserveError
from .remote_engine import RemoteEngine, encode_result

__all__ = ["ApiServer", "ModelServer", "app", "build_ray_app", "check_settings", "serve_on_ray",
           "APP_NAME", "REPLICA_HEADER"]

log = logging.getLogger(__name__)

APP_NAME = "sdserve"
# How long Ctrl-C waits for the application to be removed and Ray to stop.
_CLEANUP_S = 30.0
# Which API replica answered (operators, and the scale-out tests, read it).
REPLICA_HEADER = "x-sdserve-replica"


def _replica_id() -> str:
    replica: str = serve.get_replica_context().replica_id.unique_id
    return replica


class _ReplicaHeader:
    """ASGI middleware: names the answering replica on every HTTP response."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app, self.header = app, (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


@serve.deployment(name="api")
@serve.ingress()
class ApiServer:
    """One HTTP API replica: the embedded app and job service, its engine remote."""

    def __init__(self, settings: Settings, models: DeploymentHandle[ModelServer]) -> None:
        self.settings, self.models = settings, models

    def __serve_build_asgi_app__(self) -> Any:
        from ..api.app import build_app

        s = self.settings
        engine = RemoteEngine(build_catalog(s), self.models, preview_every=s.preview_every,
                              max_batch_images=s.max_batch_images, addons=build_addons(s))
        engine.watch()
        service = build_service(s, engine, workers=s.ray_batches_in_flight, worker_id=_replica_id())
        app = build_app(s, service)
        app.add_middleware(_ReplicaHeader, replica=_replica_id())
        return app


class _Resident:
    """A model the replica's multiplexer holds; evicting it frees the engine's copy."""

    def __init__(self, engine: Any, loaded: Any) -> None:
        self.engine, self.loaded = engine, loaded

    def __del__(self) -> None:
        # Called by the multiplexer on LRU eviction (and by the GC later, maybe at process
        # exit): unload only the copy this object stands for, never a later reload of it.
        with contextlib.suppress(Exception):
            self.engine.unload(self.loaded)


@serve.deployment(name="models")
class ModelServer:
    """One model replica: an Engine whose models are multiplexed, running whole batches."""

    def __init__(self, settings: Settings) -> None:
        if settings.ray_model_num_gpus == 0 and not settings.threads:
            # torch would take every core of the node, however many replicas share it.
            settings = settings.model_copy(update={"threads": max(1, math.ceil(settings.ray_model_num_cpus))})
        self.engine = build_engine(settings)
        self.replica = _replica_id()

        async def load(model_id: str) -> _Resident:
            return _Resident(self.engine, await asyncio.to_thread(self.engine.load, model_id))

        # Wired per instance so the LRU bound comes from settings; Ray detects it at runtime.
        # The engine's own cache may unload sooner (its memory budget); the next batch reloads.
        self.resident = serve.multiplexed(max_num_models_per_replica=settings.max_loaded_models)(load)

    def state(self, full: bool = True) -> dict[str, Any]:
        """What the API replicas show and route by: device, loaded models and (``full``)
        the catalog models whose weights are on this machine."""
        h = self.engine.health()
        out = {"replica": self.replica, "device": h["device"], "dtype": h["dtype"],
               "loaded_models": self.engine.loaded_models()}
        if full:
            out["available"] = [spec.id for spec in self.engine.catalog if self.engine.is_available(spec.id)]
        return out

    async def generate(self, batch: list[GenerationParams], preview_every: int) -> AsyncIterator[dict[str, Any]]:
        """Run one batch (one model, from ``serve.get_multiplexed_model_id``), streaming
        ``step`` events (with a preview PNG every ``preview_every`` steps) and then ``done``
        with one result or error per member. A caller that cancels stops the loop."""
        try:
            await self.resident(serve.get_multiplexed_model_id())
        except SdserveError as e:  # e.g. weights missing on this machine: the jobs fail with it
            yield self._done(batch, [e for _ in batch])
            return
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def on_step(index: int) -> Callable[[StepInfo], None]:
            def hook(info: StepInfo) -> None:  # in the engine's thread
                ev: dict[str, Any] = {"event": "step", "index": index, "step": info.step, "total": info.total}
                if preview_every and info.preview is not None and (
                        info.step % preview_every == 0 or info.step == info.total):
                    ev["preview"] = info.preview()
                loop.call_soon_threadsafe(events.put_nowait, ev)
            return hook

        items = [BatchItem(p, on_step=on_step(i), cancel=stop.is_set) for i, p in enumerate(batch)]
        run = asyncio.ensure_future(asyncio.to_thread(self.engine.generate_batch, items))
        try:
            while not run.done() or not events.empty():
                if not events.empty():
                    yield events.get_nowait()
                    continue
                nxt = asyncio.ensure_future(events.get())
                await asyncio.wait({nxt, run}, return_when=asyncio.FIRST_COMPLETED)
                if nxt.done():
                    yield nxt.result()
                else:
                    nxt.cancel()
            results = run.result()
        finally:
            stop.set()  # the caller canceled (or went away): the loop ends at its next step
        yield self._done(batch, results)

    async def caption(self, image: bytes, field: str) -> dict[str, str]:
        """A caption of ``image`` by this replica's captioner (A1111 /interrogate, ModelsLab's
        caption route): ``{"caption": ...}``, or the error in its stored form."""
        try:
            return {"caption": await asyncio.to_thread(self.engine.caption, image, field)}
        except SdserveError as e:
            return cast(dict[str, str], encode_result(e))

    def _done(self, batch: list[GenerationParams], results: list[Any]) -> dict[str, Any]:
        # With the results: this replica's state and how many images of this size fit one
        # loop now, which bounds the next batches the API replicas claim.
        p = batch[0]
        return {"event": "done", "state": self.state(full=False),
                "batch_images": self.engine.max_batch_images(p.width or 0, p.height or 0),
                "results": [encode_result(r) for r in results]}


def check_settings(settings: Settings) -> None:
    """What several replicas on several machines need; raises ValueError saying how to fix it."""
    url = settings.database_url or ""
    if not url or url.startswith("sqlite"):
        raise ValueError("Ray mode needs a database every API replica reaches: set database_url "
                         "(SDSERVE_DATABASE_URL) to PostgreSQL, e.g. postgresql+psycopg://user:pw@host/sdserve")
    if settings.ray_model_min_replicas > settings.ray_model_max_replicas:
        raise ValueError(f"ray_model_min_replicas ({settings.ray_model_min_replicas}) is above "
                         f"ray_model_max_replicas ({settings.ray_model_max_replicas}); lower it or raise the maximum")
    if settings.outputs_backend != "s3":
        log.warning("outputs_backend is 'local': API replicas on different machines will not see each other's "
                    "outputs; use outputs_backend = 's3' on a cluster")


def build_ray_app(settings: Settings) -> Application:
    """The Serve application for ``settings``: API and model deployments, bound together."""
    check_settings(settings)
    s = settings
    if s.ray_model_min_replicas == s.ray_model_max_replicas:
        scaling: dict[str, Any] = {"num_replicas": s.ray_model_max_replicas}
    else:
        # Each in-flight batch is one ongoing request: scale out while replicas have a queue.
        scaling = {"autoscaling_config": {"min_replicas": s.ray_model_min_replicas,
                                          "max_replicas": s.ray_model_max_replicas,
                                          "target_ongoing_requests": 1}}
    # ``@serve.deployment`` made both classes Deployments; mypy does not apply class decorators.
    models = cast(Deployment, ModelServer).options(
        ray_actor_options={"num_cpus": s.ray_model_num_cpus, "num_gpus": s.ray_model_num_gpus},
        max_ongoing_requests=s.ray_model_max_ongoing_requests, **scaling,
    ).bind(s)
    return cast(Deployment, ApiServer).options(
        num_replicas=s.ray_api_replicas, ray_actor_options={"num_cpus": s.ray_api_num_cpus},
        # Many requests wait on jobs (sync dialects, event streams): they cost no CPU.
        max_ongoing_requests=1000,
    ).bind(s, models)


def app(args: dict[str, str]) -> Application:
    """``serve run sdserve.deploy.ray:app [config_file=sdserve.toml] [field=value ...]``:
    settings from the file, SDSERVE_* and these arguments (in rising precedence)."""
    args = dict(args)
    config = args.pop("config_file", None)
    return build_ray_app(load_settings(config, **args))


def serve_on_ray(settings: Settings) -> None:
    """``sdserve serve --ray ADDRESS``: connect (``local`` starts a Ray instance here),
    deploy, serve HTTP on ``host:port`` and block until interrupted; then, like ``serve
    run``, remove the application (running jobs go back in line when their leases lapse)."""
    import ray

    # Ctrl-C and SIGTERM (systemd, Kubernetes) both stop it. Installed explicitly: a process
    # started in the background by a shell inherits SIGINT ignored, and Python then keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    address = settings.ray_address
    ray.init(address=None if address == "local" else address)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_ray_app(settings), name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        log.info("interrupted: removing the %s application", APP_NAME)
    finally:
        # Ctrl-C in a terminal also reaches the local Ray's own processes (same process
        # group); talking to a controller that is already gone can block for minutes. Clean
        # up for a bounded time, then leave anyway: the leases re-queue any running job.
        def cleanup() -> None:
            with contextlib.suppress(Exception):
                serve.delete(APP_NAME)
            with contextlib.suppress(Exception):
                ray.shutdown()

        worker = threading.Thread(target=cleanup, name="sdserve-ray-cleanup", daemon=True)
        worker.start()
        worker.join(_CLEANUP_S)
        if worker.is_alive():
            log.warning("Ray did not shut down within %.0f s; exiting anyway", _CLEANUP_S)
            logging.shutdown()
            os._exit(0)
