"""ComfyUI's websocket (``/ws?clientId=``): this process's clients, and the messages of the
prompts they queued, driven by the jobs' own event streams (``JobService.events``).

Per prompt, as ComfyUI's executor sends them to the prompt's ``client_id``:
``execution_start`` and ``execution_cached`` when its first job starts; ``executing`` for
each node of a job as it starts (loaders, encoders, up to its sampler); ``progress``
(value/max, on the sampler) and binary preview frames on each step; when a job ends,
``executing`` for its remaining nodes and ``executed`` for each output node with its images;
then ``execution_success`` (or ``execution_error`` / ``execution_interrupted``) and finally
``executing`` with ``node: null``, which is what API clients wait for. ``status`` (the
caller's queue length) goes to the caller's sockets on connect and whenever a prompt of
theirs is queued or ends.

A client that reconnects with the same clientId (or connects to another server, or after a
restart) is followed again for its prompts still in the queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from sdserve.service.groups import JobGroup
from sdserve.service.jobs import TERMINAL
from sdserve.service.service import JobService
from .history import end_message, settle, states
from .prompts import groups_of

__all__ = ["ComfySockets", "preview_frame", "FEATURES", "sockets_of"]

log = logging.getLogger(__name__)

# Binary frames: event type 1 (a preview image), then the image format (2: PNG), then the bytes.
_PREVIEW_IMAGE = 1
_PNG = 2
# What /features and the websocket's feature_flags reply say this server does.
FEATURES: dict[str, Any] = {"supports_preview_metadata": False}


def preview_frame(png: bytes) -> bytes:
    return struct.pack(">I", _PREVIEW_IMAGE) + struct.pack(">I", _PNG) + png


@dataclass
class _Client:
    ws: WebSocket
    owner: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ComfySockets:
    """Connected clients by clientId, and the prompt followers of this process."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.clients: dict[str, _Client] = {}
        self.followers: dict[str, asyncio.Task[None]] = {}

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, sid: str | None, message: dict[str, Any] | bytes) -> None:
        client = self.clients.get(sid) if sid else None
        if client is None:
            return  # as in ComfyUI: messages for a client that is not connected are dropped
        try:
            async with client.lock:
                if isinstance(message, bytes):
                    await client.ws.send_bytes(message)
                else:
                    await client.ws.send_json(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            log.debug("comfyui websocket %s: send failed: %s", sid, e)

    async def send(self, sid: str | None, event: str, data: dict[str, Any]) -> None:
        await self._send(sid, {"type": event, "data": data})

    async def queue_remaining(self, owner: str | None) -> int:
        return len(await asyncio.to_thread(settle, self.service, groups_of(self.service), owner))

    async def status(self, owner: str | None, sid: str | None = None) -> None:
        """``status`` to ``sid`` (with its sid, on connect) or to every socket of ``owner``."""
        info = {"exec_info": {"queue_remaining": await self.queue_remaining(owner)}}
        if sid is not None:
            await self.send(sid, "status", {"status": info, "sid": sid})
            return
        for s, c in list(self.clients.items()):
            if c.owner == owner:
                await self.send(s, "status", {"status": info})

    # -- clients ----------------------------------------------------------------------------

    async def serve(self, ws: WebSocket, sid: str, owner: str | None) -> None:
        """One connected client until it goes away (the socket is accepted)."""
        old = self.clients.get(sid)
        if old is not None:  # ComfyUI: the same clientId again replaces the old session
            with contextlib.suppress(Exception):
                await old.ws.close()
        client = self.clients[sid] = _Client(ws, owner)
        try:
            await self.status(owner, sid)
            await self._resume(sid, owner)
            first = True
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if first and "feature_flags" in (msg.get("text") or ""):
                    await self.send(sid, "feature_flags", FEATURES)
                first = False
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]

    async def _resume(self, sid: str, owner: str | None) -> None:
        live = await asyncio.to_thread(settle, self.service, groups_of(self.service), owner)
        for st in live:
            if st.group.data.get("client_id") == sid:
                self.follow(st.group)

    # -- prompts ----------------------------------------------------------------------------

    def follow(self, group: JobGroup) -> None:
        """Send ``group``'s messages to its client_id from now until it ends (once per prompt)."""
        if group.id in self.followers or not group.data.get("client_id"):
            return
        task = asyncio.create_task(self._follow(group), name=f"comfyui-prompt-{group.id}")
        self.followers[group.id] = task
        task.add_done_callback(lambda _: self.followers.pop(group.id, None))

    async def _follow(self, group: JobGroup) -> None:
        sid = group.data["client_id"]
        records: list[dict[str, Any]] = group.data["jobs"]
        events: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()

        async def pump(i: int, job_id: str) -> None:
            try:
                async for ev in self.service.events(job_id):
                    await events.put((i, ev))
            finally:
                await events.put((i, None))

        pumps = [asyncio.create_task(pump(i, r["job_id"])) for i, r in enumerate(records)]
        started, reported, remaining = False, set[str](), len(records)

        async def executing(node: str) -> None:
            if node not in reported:
                reported.add(node)
                await self.send(sid, "executing", {"node": node, "display_node": node, "prompt_id": group.id})

        try:
            while remaining:
                i, ev = await events.get()
                if ev is None:
                    remaining -= 1
                    continue
                kind, rec = ev["event"], records[i]
                if kind == "queued":
                    continue
                if not started:
                    started = True
                    await self.send(sid, "execution_start", {"prompt_id": group.id})
                    await self.send(sid, "execution_cached", {"nodes": [], "prompt_id": group.id})
                nodes: list[str] = rec["nodes"]
                upto = nodes.index(rec["sampler"]) + 1 if rec["sampler"] in nodes else len(nodes)
                if kind in ("started", "step"):
                    for n in nodes[:upto]:
                        await executing(n)
                if kind == "step":
                    await self.send(sid, "progress", {"value": ev["step"], "max": ev["total"], "prompt_id": group.id,
                                                      "node": rec["sampler"]})
                    if "preview" in ev:
                        png = base64.b64decode(ev["preview"].partition(",")[2])
                        await self._send(sid, preview_frame(png))
                elif kind == "succeeded":
                    for n in nodes:
                        await executing(n)
                        if n in rec["outputs"]:
                            await self.send(sid, "executed", {"node": n, "display_node": n, "prompt_id": group.id,
                                                              "output": {"images": rec["outputs"][n]}})
                elif kind in TERMINAL:
                    continue
            await self._finish(group, sid)
        finally:
            for p in pumps:
                p.cancel()

    async def _finish(self, group: JobGroup, sid: str) -> None:
        [st] = await asyncio.to_thread(states, self.service, [group])
        event, data = end_message(st)
        await self.send(sid, event, data)
        await self.send(sid, "executing", {"node": None, "prompt_id": group.id})
        await asyncio.to_thread(groups_of(self.service).mark_finished, group.id, st.finished_at)
        await self.status(group.owner)


def sockets_of(state: Any, service: JobService) -> ComfySockets:
    """The app's ComfySockets (kept on ``app.state``, one per app)."""
    sockets = getattr(state, "comfyui_sockets", None)
    if sockets is None:
        sockets = state.comfyui_sockets = ComfySockets(service)
    assert isinstance(sockets, ComfySockets)
    return sockets


