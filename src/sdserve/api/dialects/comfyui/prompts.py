"""A ComfyUI prompt as sdserve jobs: compile the graph, queue its jobs (all or none), name
their outputs, and record the prompt as a job group (``service.groups``) so its queue entry,
history and websocket messages can be answered after a restart or by another server.

The group's ``data`` is the dialect's record: ``number``, ``prompt`` (the graph as sent),
``extra_data``, ``client_id``, ``outputs_to_execute`` and, per job in order, its ``job_id``,
the graph ``nodes`` it runs (in execution order), its ``sampler`` node and its ``outputs``
(output node id -> the files it saves, as history and ``executed`` show them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

from sdserve.errors import BadInput, SdserveError
from sdserve.service.groups import JobGroup, JobGroups
from sdserve.service.jobs import Job
from sdserve.service.named_files import Slot
from sdserve.service.service import JobService
from .compile import CompiledJob, CompileEnv, compile_prompt, node_errors_for
from .protocol import PromptRequest
from .storage import DIALECT_NAME, ComfyFiles, split_prefix

__all__ = ["submit_prompt", "groups_of", "run_order", "compile_env", "SENSITIVE_EXTRA_DATA"]

# extra_data keys ComfyUI never stores or shows (credentials of its paid API nodes).
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")


def groups_of(service: JobService) -> JobGroups:
    return JobGroups(service.db)


def compile_env(service: JobService, files: ComfyFiles, owner: str | None) -> CompileEnv:
    """What the compiler reads: the catalog, add-on files, and the caller's uploads (LoadImage)."""

    def load_input(filename: str, subfolder: str | None, folder: str) -> bytes:
        try:
            return files.read(owner, folder, subfolder or "", filename)
        except SdserveError as e:
            raise FileNotFoundError(filename) from e

    return CompileEnv(catalog=service.catalog, addons=service.engine.addons, load_input=load_input,
                      list_inputs=lambda: files.listing(owner, "input"), max_pixels=files.max_pixels)


def run_order(prompt: dict[str, Any], outputs: Iterable[str]) -> list[str]:
    """The nodes ``outputs`` depend on, each after its inputs (depth first, as ComfyUI runs
    them). The compiler has already refused cycles and dangling links."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen or node_id not in prompt:
            return
        seen.add(node_id)
        inputs = prompt[node_id].get("inputs") or {}
        for value in inputs.values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        order.append(node_id)

    for o in outputs:
        visit(o)
    return order


def _sampler_of(prompt: dict[str, Any], nodes: list[str]) -> str:
    """The node progress is reported on: the job's last sampler (its last node otherwise)."""
    samplers = [n for n in nodes if "Sampler" in str(prompt[n].get("class_type", ""))]
    return samplers[-1] if samplers else nodes[-1]


def _number(body: PromptRequest, count: int) -> int | float:
    """ComfyUI's prompt numbers: one more per prompt (negative with ``front``), unless given;
    an integer as ComfyUI's own counter is, a float only when the client sent one."""
    if body.number is not None:
        return body.number
    return -count if body.front else count


def _prompt_id(body: PromptRequest) -> str:
    if body.prompt_id is None:
        return str(uuid.uuid4())
    try:
        canonical = str(uuid.UUID(body.prompt_id))
    except ValueError:
        canonical = ""
    if canonical != body.prompt_id:
        raise BadInput("prompt_id", "must be a UUID in canonical lowercase hyphenated form; omit it to let the "
                                    "server make one")
    return canonical


def _slots(cj: CompiledJob, job: Job) -> list[tuple[str, Slot]]:
    out = []
    for o in cj.outputs:
        sub, prefix = split_prefix(o.filename_prefix, f"{o.node_id}.filename_prefix")
        out.append((o.node_id, Slot(folder=o.kind, subfolder=sub, prefix=prefix, job_id=job.id, count=job.params.n)))
    return out


async def submit_prompt(service: JobService, files: ComfyFiles, body: PromptRequest, owner: str | None) -> JobGroup:
    """Compile and queue ``body``; raises GraphError (the graph), BadInput (a field), or the
    service's refusals (credits, full queue), in which case nothing is queued."""
    prompt_id = _prompt_id(body)
    groups = groups_of(service)
    if groups.get(DIALECT_NAME, prompt_id) is not None:
        raise BadInput("prompt_id", "is already used by another prompt")
    compiled = await asyncio.to_thread(compile_prompt, body.prompt, compile_env(service, files, owner))
    for cj in compiled:  # every job passes every check before any is queued
        try:
            service.check(cj.params, owner)
        except BadInput as e:  # prepare's checks, reported on the node and input they came from
            raise node_errors_for(e, cj) from None
    priority = 1 if body.front else 0
    jobs: list[Job] = []
    try:
        for cj in compiled:
            jobs.append(service.submit(cj.params, owner, priority=priority, reply={"comfyui_prompt": prompt_id}))
    except Exception:
        for j in jobs:
            service.cancel(j.id, owner)
        raise
    slots = [_slots(cj, job) for cj, job in zip(compiled, jobs)]
    flat = [s for per_job in slots for _, s in per_job]
    names = iter(await asyncio.to_thread(files.names.allocate, owner, flat))
    extra = {k: v for k, v in body.extra_data.items() if k not in SENSITIVE_EXTRA_DATA}
    if body.client_id is not None:
        extra["client_id"] = body.client_id
    records = []
    for cj, job, per_job in zip(compiled, jobs, slots):
        nodes = run_order(body.prompt, [o.node_id for o in cj.outputs])
        outputs: dict[str, list[dict[str, str]]] = {}
        for node_id, _ in per_job:
            outputs.setdefault(node_id, []).extend(
                {"filename": f.name, "subfolder": f.subfolder, "type": f.folder} for f in next(names))
        records.append({"job_id": job.id, "nodes": nodes, "sampler": _sampler_of(body.prompt, nodes),
                        "outputs": outputs})
    data = {"number": _number(body, groups.count(DIALECT_NAME, owner)), "prompt": body.prompt, "extra_data": extra,
            "client_id": body.client_id, "outputs_to_execute": [o.node_id for cj in compiled for o in cj.outputs],
            "jobs": records, "node_errors": compiled.node_errors}
    group = JobGroup(id=prompt_id, dialect=DIALECT_NAME, owner=owner, job_ids=[j.id for j in jobs], data=data)
    groups.add(group)
    return group
