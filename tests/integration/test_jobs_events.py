"""Server-Sent Events of a job: queue position, start, every step with previews, then the
result, in order, over the real engine."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from PIL import Image

from tests.jobs_support import FAST, job_client, wait_done


def _events(client, job_id: str) -> list[tuple[str, int, Any]]:  # type: ignore[no-untyped-def]
    """(event, id, data) of every event until the stream ends."""
    out = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if "event" in block:
                    out.append((block["event"], int(block["id"]), json.loads(block["data"])))
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = value
    return out


def test_events_arrive_in_order_with_previews_and_the_result(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path, preview_every=2) as c:
        blocker = c.post("/v1/jobs", json={**FAST, "steps": 20}).json()
        job = c.post("/v1/jobs", json={**FAST, "steps": 4, "seed": 5}).json()
        events = _events(c, job["id"])
        wait_done(c, blocker["id"])

    kinds = [e[0] for e in events]
    ids = [e[1] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert kinds[0] == "queued" and events[0][2]["position"] == 1
    first_started = kinds.index("started")
    assert set(kinds[:first_started]) == {"queued"}
    steps = [e[2] for e in events if e[0] == "step"]
    assert kinds[first_started + 1:-1] == ["step"] * len(steps)
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(s["total"] == 4 for s in steps)
    # A preview every 2nd step: a PNG at 1/8 of the output size.
    assert ["preview" in s for s in steps] == [False, True, False, True]
    png = base64.b64decode(steps[1]["preview"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (8, 8)
    assert kinds[-1] == "succeeded"
    result = events[-1][2]
    assert result["id"] == job["id"] and result["status"] == "succeeded"
    assert [o["seed"] for o in result["outputs"]] == [5] and result["outputs"][0]["url"]


def test_events_of_an_ended_job_are_just_its_result(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        job = c.post("/v1/jobs", json=FAST).json()
        wait_done(c, job["id"])
        events = _events(c, job["id"])
        assert [e[0] for e in events] == ["succeeded"]
        queued = c.post("/v1/jobs", json={**FAST, "steps": 200}).json()
        c.delete(f"/v1/jobs/{queued['id']}")
        assert _events(c, queued["id"])[-1][0] == "canceled"
