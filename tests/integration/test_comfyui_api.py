"""The ComfyUI dialect's routes and websocket, driven as real clients drive them, on a live
loopback server over the real engine (tiny models): ComfyUI's own
``script_examples/websockets_api_example.py`` sequence with ``websocket-client``, Open WebUI's
ComfyUI backend sequence (upload, bearer key on every call and on the websocket), history
and files surviving a restart, /view never leaving its folders, and the queue routes."""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket  # websocket-client, as ComfyUI's example uses
from PIL import Image

from tests.conftest import make_app, png_bytes
from tests.integration.live_server import live_server
from tests.jobs_support import make_service

# ComfyUI's script_examples/websockets_api_example.py graph, made cheap (64 px, 2 steps).
EXAMPLE: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
        "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": 5, "steps": 2}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.ckpt"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality man"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def graph(**changes: Any) -> dict[str, Any]:
    g = json.loads(json.dumps(EXAMPLE))
    for path, value in changes.items():
        node, name = path.split("__")
        g[node]["inputs"][name] = value
    return g


@pytest.fixture(scope="module")
def server(settings, engine):  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine)) as url:
        yield url


def ws_connect(url: str, client_id: str, **kw: Any) -> websocket.WebSocket:
    ws = websocket.WebSocket()
    ws.connect(url.replace("http://", "ws://") + f"/ws?clientId={client_id}", timeout=120, **kw)
    return ws


def follow(ws: websocket.WebSocket, prompt_id: str) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages until ``executing`` with node null for ``prompt_id`` (the example's loop)."""
    texts: list[dict[str, Any]] = []
    frames: list[bytes] = []
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            texts.append(message)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    return texts, frames
        else:
            frames.append(out)


def queue_prompt(url: str, prompt: dict[str, Any], client_id: str, headers: dict[str, str] | None = None) -> Any:
    # As the example sends it: urllib's default form content type, JSON body.
    r = httpx.post(f"{url}/prompt", content=json.dumps({"prompt": prompt, "client_id": client_id}).encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def view(url: str, image: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{url}/view?{urllib.parse.urlencode(image)}", headers=headers or {}, timeout=60)


def test_websockets_api_example_sequence(server: str) -> None:
    client_id = str(uuid.uuid4())
    ws = ws_connect(server, client_id)
    try:
        first = json.loads(ws.recv())
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        assert "queue_remaining" in first["data"]["status"]["exec_info"]
        answer = queue_prompt(server, EXAMPLE, client_id)
        assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
        assert isinstance(answer["number"], int)  # ComfyUI's counter is an integer unless a client sends one
        texts, frames = follow(ws, answer["prompt_id"])
    finally:
        ws.close()
    types = [m["type"] for m in texts]
    for t in ("execution_start", "execution_cached", "executing", "progress", "executed", "execution_success"):
        assert t in types, types
    assert types.index("execution_start") < types.index("progress") < types.index("executed") \
        < types.index("execution_success")
    executing = [m["data"]["node"] for m in texts if m["type"] == "executing"]
    assert executing[-1] is None and "3" in executing and executing.index("4") < executing.index("3")
    progress = [m["data"] for m in texts if m["type"] == "progress"]
    assert progress[-1]["value"] == progress[-1]["max"] == 2 and progress[-1]["node"] == "3"
    executed = next(m["data"] for m in texts if m["type"] == "executed")
    assert executed["node"] == "9" and executed["prompt_id"] == answer["prompt_id"]
    # Binary previews as ComfyUI frames them: event 1 (preview image), format 2 (PNG), the PNG.
    assert frames, "no preview frames"
    assert struct.unpack(">II", frames[-1][:8]) == (1, 2)
    assert Image.open(io.BytesIO(frames[-1][8:])).format == "PNG"

    history = httpx.get(f"{server}/history/{answer['prompt_id']}", timeout=30).json()[answer["prompt_id"]]
    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert [m[0] for m in history["status"]["messages"]] == ["execution_start", "execution_cached",
                                                             "execution_success"]
    assert history["prompt"][1] == answer["prompt_id"] and history["prompt"][2] == EXAMPLE
    images = history["outputs"]["9"]["images"]
    assert images == executed["output"]["images"]
    assert len(images) == 1 and images[0]["type"] == "output" and images[0]["subfolder"] == ""
    assert images[0]["filename"].startswith("ComfyUI_") and images[0]["filename"].endswith("_.png")
    r = view(server, images[0])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    # The same seed and graph again gives the same pixels, under the next file number.
    client_id2 = str(uuid.uuid4())
    ws = ws_connect(server, client_id2)
    try:
        again = queue_prompt(server, EXAMPLE, client_id2)
        follow(ws, again["prompt_id"])
    finally:
        ws.close()
    images2 = httpx.get(f"{server}/history/{again['prompt_id']}").json()[again["prompt_id"]]["outputs"]["9"]["images"]
    assert images2[0]["filename"] != images[0]["filename"]
    pixels = [Image.open(io.BytesIO(view(server, i).content)).convert("RGB").tobytes() for i in (images[0], images2[0])]
    assert pixels[0] == pixels[1]


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.mark.parametrize("name", ["default_sd15_api.json", "default_sdxl_api.json"])
def test_comfyuis_default_workflows_run_unchanged(server: str, name: str) -> None:
    """ComfyUI's default workflows, exported in API format, as they are but for size and steps
    (64 px, 2 steps: 512 px and 20 steps take minutes on a shared CPU even with tiny models).
    The SDXL one is base + refiner: 5 steps, the refiner taking over at step 4 (25 and 20)."""
    workflow = json.loads((FIXTURES / name).read_text())
    for node in workflow.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
        if node["class_type"] == "KSamplerAdvanced":
            i = node["inputs"]
            i["steps"] = 5
            if i["end_at_step"] < 25:
                i["end_at_step"] = 4
            if i["start_at_step"] > 0:
                i["start_at_step"] = 4
    cid = str(uuid.uuid4())
    ws = ws_connect(server, cid)
    try:
        pid = queue_prompt(server, workflow, cid)["prompt_id"]
        texts, _ = follow(ws, pid)
    finally:
        ws.close()
    assert texts[-2]["type"] == "execution_success", texts[-3:]
    entry = httpx.get(f"{server}/history/{pid}").json()[pid]
    [(node, out)] = entry["outputs"].items()
    assert workflow[node]["class_type"] == "SaveImage"
    latent = next(n["inputs"] for n in workflow.values() if n["class_type"] == "EmptyLatentImage")
    img = Image.open(io.BytesIO(view(server, out["images"][0]).content))
    assert img.size == (latent["width"], latent["height"])


def test_view_never_leaves_its_folders(server: str) -> None:
    for query, status in [({"filename": "../sdserve.db"}, 400), ({"filename": "/etc/passwd"}, 400),
                          ({"filename": "x.png", "subfolder": "../.."}, 400),
                          ({"filename": "x.png", "subfolder": "/etc"}, 400),
                          ({"filename": "x.png", "type": "models"}, 400),
                          ({"filename": "nothing_here.png"}, 404), ({"filename": "x.png", "channel": "q"}, 404)]:
        r = httpx.get(f"{server}/view", params=query)
        assert r.status_code == status, (query, r.text)
        body = r.json()
        assert set(body) == {"error", "node_errors"} and body["error"]["message"], body
    r = httpx.get(f"{server}/view")
    assert r.status_code == 400 and r.json()["error"]["extra_info"]["input_name"] == "filename"


def test_upload_names_overwrite_and_mask(server: str) -> None:
    red, blue = png_bytes((64, 64), (200, 40, 40)), png_bytes((64, 64), (40, 40, 200))
    sub = f"t{uuid.uuid4().hex[:6]}"

    def upload(data: bytes, route: str = "/upload/image", **form: str) -> dict[str, Any]:
        r = httpx.post(f"{server}{route}", files={"image": ("pic.png", data, "image/png")},
                       data={"subfolder": sub, **form})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert upload(red) == {"name": "pic.png", "subfolder": sub, "type": "input"}
    assert upload(red)["name"] == "pic.png"  # the same bytes again: the same name
    assert upload(blue)["name"] == "pic (1).png"  # other bytes: a new name
    assert upload(blue, overwrite="true")["name"] == "pic.png"
    got = view(server, {"filename": "pic.png", "subfolder": sub, "type": "input"})
    assert Image.open(io.BytesIO(got.content)).convert("RGB").getpixel((0, 0)) == (40, 40, 200)
    # A mask: the original with the mask's alpha.
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    ref = json.dumps({"filename": "pic.png", "subfolder": sub, "type": "input"})
    m = upload(buf.getvalue(), "/upload/mask", original_ref=ref, overwrite="true")
    masked = Image.open(io.BytesIO(view(server, {"filename": m["name"], "subfolder": sub, "type": "input"}).content))
    assert masked.mode == "RGBA" and masked.getpixel((0, 0))[3] == 0 and masked.getpixel((63, 0))[3] == 255
    assert view(server, {"filename": m["name"], "subfolder": sub, "type": "input", "channel": "a"}).status_code == 200
    prev = view(server, {"filename": m["name"], "subfolder": sub, "type": "input", "preview": "jpeg;80"})
    assert prev.headers["content-type"] == "image/jpeg"
    # Bad uploads: 400 in ComfyUI's shape naming the field.
    for files, data, field in [({}, {}, "image"), ({"image": ("x.png", b"not an image", "image/png")}, {}, "image"),
                               ({"image": ("x.png", red, "image/png")}, {"subfolder": "../up"}, "subfolder"),
                               ({"image": ("../x.png", red, "image/png")}, {}, "image"),
                               ({"image": ("x.png", red, "image/png")}, {"type": "models"}, "type")]:
        r = httpx.post(f"{server}/upload/image", files=files or {"dummy": ("d", b"", "text/plain")}, data=data)
        assert r.status_code == 400, (field, r.text)
        assert r.json()["error"]["extra_info"]["input_name"] == field
    # An uploaded image feeds LoadImage (img2img) and the graph runs.
    g = graph(**{"3__denoise": 0.5})
    g["10"] = {"class_type": "LoadImage", "inputs": {"image": f"{sub}/pic.png"}}
    g["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    g["3"]["inputs"]["latent_image"] = ["11", 0]
    del g["5"]
    cid = str(uuid.uuid4())
    ws = ws_connect(server, cid)
    try:
        pid = queue_prompt(server, g, cid)["prompt_id"]
        texts, _ = follow(ws, pid)
    finally:
        ws.close()
    assert texts[-2]["type"] == "execution_success", texts[-3:]
    listed = httpx.get(f"{server}/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    assert f"{sub}/pic.png" in listed


def test_invalid_graphs_are_400_with_node_errors(server: str) -> None:
    bad = graph()
    bad["12"] = {"class_type": "NoSuchNode", "inputs": {}}
    r = httpx.post(f"{server}/prompt", json={"prompt": bad})
    assert r.status_code == 400 and "NoSuchNode" in json.dumps(r.json())
    broken = graph(**{"8__samples": ["99", 0]})
    r = httpx.post(f"{server}/prompt", json={"prompt": broken})
    assert r.status_code == 400 and r.json()["error"]["type"] and r.json()["node_errors"]
    for body, field in [({}, "prompt"), ({"prompt": EXAMPLE, "prompt_id": "not-a-uuid"}, "prompt_id"),
                        ({"prompt": "text"}, "prompt")]:
        r = httpx.post(f"{server}/prompt", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["extra_info"]["input_name"] == field
    assert httpx.post(f"{server}/prompt", content=b"{not json").status_code == 400
    assert httpx.get(f"{server}/system_stats").status_code == 200  # still serving


def test_a_graph_with_one_invalid_output_runs_the_valid_one(server: str) -> None:
    """ComfyUI's validate_prompt: each output on its own; the valid run, the invalid are
    reported in the 200 answer's node_errors; no valid output at all is the 400."""
    partial = json.loads(json.dumps(EXAMPLE))
    partial["20"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}  # filename_prefix missing
    cid = str(uuid.uuid4())
    ws = ws_connect(server, cid)
    try:
        answer = queue_prompt(server, partial, cid)
        texts, _ = follow(ws, answer["prompt_id"])
    finally:
        ws.close()
    [err] = answer["node_errors"]["20"]["errors"]
    assert err["type"] == "required_input_missing" and err["extra_info"]["input_name"] == "filename_prefix"
    assert answer["node_errors"]["20"]["dependent_outputs"] == ["20"]
    assert texts[-2]["type"] == "execution_success"
    outputs = httpx.get(f"{server}/history/{answer['prompt_id']}").json()[answer["prompt_id"]]["outputs"]
    assert set(outputs) == {"9"}
    del partial["9"]
    r = httpx.post(f"{server}/prompt", json={"prompt": partial})
    assert r.status_code == 400 and r.json()["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(r.json()["node_errors"]) == {"20"}


def test_queue_history_interrupt_and_listings(server: str) -> None:
    info = httpx.get(f"{server}/prompt").json()
    assert isinstance(info["exec_info"]["queue_remaining"], int)
    q = httpx.get(f"{server}/queue").json()
    assert set(q) == {"queue_running", "queue_pending"}
    # A prompt of many steps, interrupted while it runs; another queued behind it, deleted.
    cid = str(uuid.uuid4())
    ws = ws_connect(server, cid)
    try:
        slow = queue_prompt(server, graph(**{"3__steps": 200, "5__width": 256, "5__height": 256}), cid)["prompt_id"]
        behind = queue_prompt(server, graph(**{"3__seed": 77}), cid)["prompt_id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            q = httpx.get(f"{server}/queue").json()
            if any(e[1] == slow for e in q["queue_running"]):
                break
            time.sleep(0.05)
        assert any(e[1] == behind for e in q["queue_pending"]), q
        assert httpx.post(f"{server}/queue", json={"delete": [behind]}).status_code == 200
        assert httpx.post(f"{server}/interrupt", json={"prompt_id": slow}).status_code == 200
        texts, _ = follow(ws, slow)
    finally:
        ws.close()
    assert "execution_interrupted" in [m["type"] for m in texts]
    h = httpx.get(f"{server}/history/{slow}").json()[slow]
    assert h["status"]["status_str"] == "error" and h["status"]["completed"] is False
    assert h["status"]["messages"][-1][0] == "execution_interrupted"
    assert httpx.get(f"{server}/history/{behind}").json() == {}
    everything = httpx.get(f"{server}/history").json()
    assert slow in everything and behind not in everything
    assert list(httpx.get(f"{server}/history", params={"max_items": 1}).json()) == [list(everything)[-1]]
    assert httpx.post(f"{server}/history", json={"delete": [slow]}).status_code == 200
    assert slow not in httpx.get(f"{server}/history").json()
    # What the server has.
    models = httpx.get(f"{server}/models").json()
    assert "checkpoints" in models and "loras" in models
    assert "v1-5-pruned-emaonly.safetensors" in httpx.get(f"{server}/models/checkpoints").json()
    r = httpx.get(f"{server}/models/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert isinstance(httpx.get(f"{server}/embeddings").json(), list)
    stats = httpx.get(f"{server}/system_stats").json()
    assert stats["devices"][0]["type"] == "cpu" and stats["system"]["ram_total"] > 0
    assert httpx.get(f"{server}/features").json()["supports_preview_metadata"] is False
    info = httpx.get(f"{server}/api/object_info").json()
    assert "KSampler" in info and "CheckpointLoaderSimple" in info
    assert httpx.get(f"{server}/object_info/NoSuchNode").json() == {}


def test_open_webui_sequence_with_keys(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """Open WebUI's backend: /api/upload/image, a websocket with the bearer header, /prompt,
    /history, /view, each with ``Authorization: Bearer``; a wrong or missing key is refused."""
    with live_server(make_app(settings, engine, api_keys=["sk-comfy", "sk-other"])) as url:
        auth = {"Authorization": "Bearer sk-comfy"}
        assert httpx.get(f"{url}/object_info").status_code == 401
        assert httpx.post(f"{url}/prompt", json={"prompt": EXAMPLE}).json()["error"]["type"] == "authentication_error"
        with pytest.raises(websocket.WebSocketBadStatusException):
            ws_connect(url, "x")
        with pytest.raises(websocket.WebSocketBadStatusException):
            ws_connect(url, "x", header=["Authorization: Bearer wrong"])
        up = httpx.post(f"{url}/api/upload/image", headers=auth, files={"image": ("in.png", png_bytes(), "image/png")},
                        data={"type": "input"})
        assert up.status_code == 200 and up.json()["type"] == "input"
        # The query-parameter key works for clients that cannot set headers.
        probe = websocket.WebSocket()
        probe.connect(url.replace("http://", "ws://") + "/ws?clientId=q&token=sk-comfy", timeout=30)
        assert json.loads(probe.recv())["type"] == "status"
        probe.close()
        cid = str(uuid.uuid4())
        ws = ws_connect(url, cid, header=["Authorization: Bearer sk-comfy"])
        try:
            pid = queue_prompt(url, EXAMPLE, cid, auth)["prompt_id"]
            follow(ws, pid)
        finally:
            ws.close()
        history = httpx.get(f"{url}/history/{pid}", headers=auth).json()[pid]
        image = history["outputs"]["9"]["images"][0]
        assert view(url, image).status_code == 401
        assert view(url, image, auth).status_code == 200
        # Another key sees none of it: not the prompt, its files, its upload or its queue.
        other = {"Authorization": "Bearer sk-other"}
        assert httpx.get(f"{url}/history/{pid}", headers=other).json() == {}
        assert pid not in httpx.get(f"{url}/history", headers=other).json()
        assert view(url, image, other).status_code == 404
        assert view(url, {"filename": "in.png", "type": "input"}, other).status_code == 404
        assert httpx.get(f"{url}/prompt", headers=other).json()["exec_info"]["queue_remaining"] == 0


def test_history_and_files_survive_a_restart(settings, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sdserve.api.app import build_app

    s, service = make_service(settings, engine, tmp_path)
    with live_server(build_app(s, service)) as url:
        cid = str(uuid.uuid4())
        ws = ws_connect(url, cid)
        try:
            pid = queue_prompt(url, EXAMPLE, cid)["prompt_id"]
            follow(ws, pid)
        finally:
            ws.close()
        before = httpx.get(f"{url}/history/{pid}").json()
        first = view(url, before[pid]["outputs"]["9"]["images"][0]).content
    service.db.close()
    s, service = make_service(settings, engine, tmp_path)
    with live_server(build_app(s, service)) as url:
        after = httpx.get(f"{url}/history/{pid}").json()
        assert after == before
        assert view(url, after[pid]["outputs"]["9"]["images"][0]).content == first
