"""Prometheus metrics of one app, in its own registry (no process-global state).

Counters and histograms are fed by the job service's lifecycle events; queue depth,
loaded models and device memory are read from the service and engine at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sdserve.api.deps import owner_of
from sdserve.api.responses import PUBLIC
from sdserve.service.jobs import Job
from sdserve.service.service import JobService

__all__ = ["Metrics", "metrics_router"]

# Seconds: from sub-second tiny models to minutes-long SDXL batches on CPU.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class _Live(Collector):
    """Values read when scraped: queue depth per model, loaded models, device memory."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("sdserve_queue_depth", "Jobs waiting to start, by model.", labels=["model"])
        for model, n in sorted(self.service.store.queue_by_model().items()):
            depth.add_metric([model], n)
        yield depth
        running = GaugeMetricFamily("sdserve_jobs_running", "Jobs running in this process.")
        running.add_metric([], len(self.service.running_jobs()))
        yield running
        health = self.service.engine.health()
        loaded = GaugeMetricFamily("sdserve_model_loaded", "Models loaded on the device (1 per model).",
                                   labels=["model"])
        size = GaugeMetricFamily("sdserve_model_memory_bytes", "Bytes of weights of each loaded model.",
                                 labels=["model"])
        for model in health.get("loaded_models", []):
            loaded.add_metric([model], 1)
            size.add_metric([model], float(health.get("model_bytes", {}).get(model, 0)))
        yield loaded
        yield size
        if "memory_budget_bytes" in health:
            budget = GaugeMetricFamily("sdserve_model_memory_budget_bytes",
                                       "Bytes the loaded models' weights may take before the least recently "
                                       "used one unloads.")
            budget.add_metric([], float(health["memory_budget_bytes"]))
            yield budget
        if "memory_allocated_bytes" in health:
            mem = GaugeMetricFamily("sdserve_device_memory_allocated_bytes", "Memory allocated on the device.",
                                    labels=["device"])
            mem.add_metric([str(health.get("device", ""))], float(health["memory_allocated_bytes"]))
            yield mem


class Metrics:
    """The registry of one app, subscribed to its service's job events."""

    def __init__(self, service: JobService) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter("sdserve_jobs_submitted", "Jobs accepted.", ["model"], registry=r)
        self.finished = Counter("sdserve_jobs_finished", "Jobs ended, by final status.", ["model", "status"],
                                registry=r)
        self.images = Counter("sdserve_images_generated", "Images generated.", ["model"], registry=r)
        self.errors = Counter("sdserve_job_errors", "Failed jobs by error kind.", ["kind"], registry=r)
        self.wait = Histogram("sdserve_job_wait_seconds", "Time from submission to start.", ["model"],
                              buckets=_BUCKETS, registry=r)
        self.run = Histogram("sdserve_job_run_seconds", "Time from start to end.", ["model"], buckets=_BUCKETS,
                             registry=r)
        # How well cross-request batching works: 1 everywhere means no job had company.
        self.batch = Histogram("sdserve_job_batch_images", "Images in the denoising loop each job ran in.",
                               ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        # Compute by key (engine.cost): what each key asked of the device, and what it got.
        self.cost_accepted = Counter("sdserve_compute_units_accepted", "Compute units of the jobs accepted, by key "
                                     "(key id; 'open' without keys).", ["key"], registry=r)
        self.cost_served = Counter("sdserve_compute_units_served", "Compute units of the jobs that succeeded, by key.",
                                   ["key"], registry=r)
        r.register(_Live(service))
        # Process memory and CPU: on CPU-only machines this is the device memory.
        ProcessCollector(registry=r)
        service.observe(self.on_job)

    def on_job(self, kind: str, job: Job) -> None:
        model = job.params.model
        key = job.owner or "open"
        if kind == "submitted":
            self.submitted.labels(model).inc()
            self.cost_accepted.labels(key).inc(job.cost)
        elif kind == "started" and job.started_at is not None:
            self.wait.labels(model).observe(max(0.0, job.started_at - job.created_at))
            if job.batch_images:
                self.batch.labels(model).observe(job.batch_images)
        elif kind == "finished":
            self.finished.labels(model, job.status).inc()
            if job.started_at is not None and job.finished_at is not None:
                self.run.labels(model).observe(max(0.0, job.finished_at - job.started_at))
            if job.status == "succeeded":
                self.images.labels(model).inc(len(job.outputs))
                self.cost_served.labels(key).inc(job.cost)
            elif job.status == "failed" and job.error is not None:
                self.errors.labels(job.error.kind).inc()


def metrics_router(public: bool) -> APIRouter:
    """``GET /metrics``; without a key when ``public`` (Settings.metrics_public), since
    Prometheus scrapers are usually configured without one."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
                openapi_extra=PUBLIC if public else None)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition of this server's metrics."""
        if not public:
            owner_of(request)
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
