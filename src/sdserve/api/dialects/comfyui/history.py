"""ComfyUI's queue and history, read from the prompt's job group and its jobs' states.

A prompt is pending while none of its jobs started, running while any runs or waits after
another started, and in the history once every job ended: ``success`` when all succeeded;
otherwise ``error``, with ``execution_error`` (a job failed) or ``execution_interrupted``
(canceled) among its messages, and the outputs of the jobs that did finish.
"""

from __future__ import annotations

from typing import Any

from sdserve.errors import NotFound
from sdserve.service.groups import JobGroup, JobGroups
from sdserve.service.jobs import Job
from sdserve.service.service import JobService
from .storage import DIALECT_NAME

__all__ = ["PromptState", "states", "settle", "history_entry", "queue_entry", "ms"]


def ms(t: float | None) -> int:
    return int((t or 0) * 1000)


class PromptState:
    """A group with its jobs as they are now (a job deleted from the store counts as failed)."""

    def __init__(self, group: JobGroup, jobs: list[Job | None]) -> None:
        self.group = group
        self.jobs = jobs

    @property
    def records(self) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = self.group.data.get("jobs", [])
        return recs

    @property
    def done(self) -> bool:
        return all(j is None or j.done for j in self.jobs)

    @property
    def started(self) -> bool:
        return any(j is None or j.status != "queued" for j in self.jobs)

    @property
    def finished_at(self) -> float:
        return max((j.finished_at or 0.0 for j in self.jobs if j is not None), default=self.group.created_at)

    def class_type(self, node_id: str) -> str:
        return str(self.group.data["prompt"].get(node_id, {}).get("class_type", ""))


def states(service: JobService, groups: list[JobGroup]) -> list[PromptState]:
    out = []
    for g in groups:
        jobs: list[Job | None] = []
        for job_id in g.job_ids:
            try:
                jobs.append(service.get(job_id))
            except NotFound:
                jobs.append(None)
        out.append(PromptState(g, jobs))
    return out


def settle(service: JobService, groups: JobGroups, owner: str | None) -> list[PromptState]:
    """The caller's prompts not yet in the history, marking those that have since ended."""
    live = []
    for st in states(service, groups.list(DIALECT_NAME, owner, finished=False)):
        if st.done:
            groups.mark_finished(st.group.id, st.finished_at)
        else:
            live.append(st)
    return live


def queue_entry(group: JobGroup) -> list[Any]:
    """[number, prompt_id, prompt, extra_data, outputs_to_execute], as ComfyUI lists a prompt."""
    d = group.data
    return [d["number"], group.id, d["prompt"], d["extra_data"], d["outputs_to_execute"]]


def _executed(st: PromptState) -> list[str]:
    nodes: list[str] = []
    for rec, job in zip(st.records, st.jobs):
        if job is not None and job.status == "succeeded":
            nodes.extend(n for n in rec["nodes"] if n not in nodes)
    return nodes


def end_message(st: PromptState) -> tuple[str, dict[str, Any]]:
    """How the prompt ended, as ComfyUI's last status message (event, data)."""
    pid = st.group.id
    for rec, job in zip(st.records, st.jobs):
        if job is None or job.status == "failed":
            node = rec["sampler"]
            err = job.error if job is not None else None
            return "execution_error", {
                "prompt_id": pid, "node_id": node, "node_type": st.class_type(node), "executed": _executed(st),
                "exception_message": err.message if err is not None else "the job is gone",
                "exception_type": type(err).__name__ if err is not None else "NotFound",
                "traceback": [], "current_inputs": {}, "current_outputs": []}
    for rec, job in zip(st.records, st.jobs):
        if job is not None and job.status == "canceled":
            node = rec["sampler"]
            return "execution_interrupted", {"prompt_id": pid, "node_id": node, "node_type": st.class_type(node),
                                             "executed": _executed(st)}
    return "execution_success", {"prompt_id": pid}


def outputs_of(st: PromptState) -> dict[str, dict[str, list[dict[str, str]]]]:
    out: dict[str, dict[str, list[dict[str, str]]]] = {}
    for rec, job in zip(st.records, st.jobs):
        if job is not None and job.status == "succeeded":
            for node_id, files in rec["outputs"].items():
                out.setdefault(node_id, {"images": []})["images"].extend(files)
    return out


def history_entry(st: PromptState) -> dict[str, Any]:
    pid = st.group.id
    started = min((j.started_at for j in st.jobs if j is not None and j.started_at), default=st.group.created_at)
    event, data = end_message(st)
    messages = [["execution_start", {"prompt_id": pid, "timestamp": ms(started)}],
                ["execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": ms(started)}],
                [event, {**data, "timestamp": ms(st.finished_at)}]]
    outputs = outputs_of(st)
    ok = event == "execution_success"
    return {"prompt": queue_entry(st.group), "outputs": outputs,
            "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs}}
