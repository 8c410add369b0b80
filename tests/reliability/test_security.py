"""Nobody let in: every route of the assembled app needs a key (except a short, reasoned
list), keys are hashed at rest and never logged, one key cannot reach another's jobs in any
dialect, CORS is closed unless configured, and file serving cannot be walked out of."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect

from sdserve.api.errors import dialect_of
from sdserve.api.openapi import ERROR_MODELS
from tests.conftest import png_bytes
from tests.jobs_support import FAST, job_client, wait_done

# Routes that answer without a key, and why. Anything else must answer 401 to a caller
# without a valid key, whatever it sends.
PUBLIC = {
    "/healthz": "liveness probe",
    "/readyz": "readiness probe (load balancers have no key)",
    "/metrics": "Prometheus scrape, while metrics_public (the default) is true",
    "/": "the web page (it calls the API with the user's key)",
    "/playground/config": "the page's bootstrap: version, demo flag, whether a key is needed, scheduler names",
    "/openapi.json": "the API description: no data, and Swagger UI needs it",
    "/docs": "Swagger UI",
    "/docs/oauth2-redirect": "Swagger UI",
    "/redoc": "ReDoc",
    "/v1/outputs/{token}": "capability URL: 192 random bits, for <img> tags and webhook receivers",
    "/api/v3/outputs/{job_id}/{index}.png": "ModelsLab future_links: the 128-bit job id is the capability",
}
_SAMPLE = {"model": "sd15", "job_id": "no-such-job", "index": "0", "token": "no-such-token", "account_id": "acct",
           "listing": "loras", "prompt_id": "no-such-prompt", "node_class": "KSampler", "folder": "loras"}
# Valid JSON with wrong content: the key must be checked before the body is.
_BAD_BODY = {"prompt": 5, "width": "wide", "init_images": 7, "model": 3, "image": "x"}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: _SAMPLE[m.group(1)], path)


def _routes(app: Any) -> list[tuple[str, str, bool]]:
    """(method, path template, is a static mount) of every route the app serves, included
    routers flattened the way FastAPI itself walks them."""
    out = []
    for ctx in iter_route_contexts(app.routes):
        r = ctx.original_route
        if isinstance(r, Mount):
            assert isinstance(r.app, StaticFiles), f"unexpected mount {ctx.path}: audit it"
            out.append(("GET", f"{ctx.path}/", True))
        elif isinstance(r, APIWebSocketRoute):
            out.append(("WEBSOCKET", str(ctx.path), False))
        elif isinstance(r, (APIRoute, Route)):
            out += [(m, str(ctx.path), False) for m in sorted(ctx.methods or ()) if m != "HEAD"]
        else:
            raise AssertionError(f"unknown route type {type(r)} at {ctx.path}: audit it")
    return out


@pytest.fixture(scope="module")
def keyed(settings, engine, tmp_path_factory):  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path_factory.mktemp("keyed"), api_keys=["sk-static-secret"]) as c:
        yield c


def test_every_route_needs_a_key_except_the_listed_public_ones(keyed) -> None:  # type: ignore[no-untyped-def]
    routes = _routes(keyed.app)
    assert len(routes) > 40  # all four dialects, native API and operations are mounted
    checked = 0
    for method, template, static in routes:
        path = _concrete(template)
        public = template in PUBLIC or static
        if method == "WEBSOCKET":  # refused at the handshake, with a wrong key as without one
            for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
                with pytest.raises(WebSocketDisconnect):
                    with keyed.websocket_connect(path + "?token=sk-wrong" if headers else path, headers=headers):
                        pass
            continue
        for headers, body in (({}, _BAD_BODY), ({"Authorization": "Bearer sk-wrong"}, _BAD_BODY),
                              ({}, {**_BAD_BODY, "key": "sk-wrong"})):
            r = keyed.request(method, path, headers=headers, json=body if method in ("POST", "PUT") else None)
            if public:
                assert r.status_code != 401, (method, template, r.text)
                continue
            assert r.status_code == 401, (method, template, headers, r.status_code, r.text)
            dialect = dialect_of(path)
            ERROR_MODELS[dialect].model_validate(r.json())  # in the dialect's own shape
            checked += 1
    assert checked > 100
    # And the OpenAPI document marks exactly these as needing no key.
    doc = keyed.app.openapi()
    marked = {p for p, ops in doc["paths"].items() for op in ops.values() if op.get("x-sdserve-public")}
    assert marked == {p for p in PUBLIC if p in doc["paths"]}


def test_a_valid_key_opens_them_and_metrics_can_be_closed(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path, api_keys=["sk-static-secret"], metrics_public=False) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer sk-static-secret"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer sk-static-secret"}).status_code == 200
        assert c.post("/api/v3/system_load", json={"key": "sk-static-secret"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        doc = c.app.openapi()
        assert "x-sdserve-public" not in doc["paths"]["/metrics"]["get"]
        assert "401" in doc["paths"]["/metrics"]["get"]["responses"]


def test_keys_are_hashed_at_rest_and_never_logged(settings, engine, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    static = "sk-static-" + "s3cr3t" * 4
    with job_client(settings, engine, tmp_path, api_keys=[static], allow_private_urls=False) as c:
        record, stored = c.service.keys.create("alice", rate_limit=3)
        uses = [
            lambda k: c.post("/v1/jobs", json=FAST, headers={"Authorization": f"Bearer {k}"}),
            lambda k: c.post("/ai/run/sd15", json={"prompt": "x", "width": 256, "height": 256, "num_steps": 1},
                             headers={"Authorization": f"Bearer {k}"}),
            lambda k: c.post("/api/v3/text2img", json={"key": k, "prompt": "x", "width": "64", "height": "64",
                                                        "num_inference_steps": "1"}),
            lambda k: c.get("/sdapi/v1/options", auth=("user", k)),
            lambda k: c.post("/v1/jobs", json={**FAST, "width": 65}, headers={"Authorization": f"Bearer {k}"}),
        ]
        for key in (static, stored, stored[:-1] + "x", static + "x"):  # right and wrong keys
            for use in uses:
                use(key)
        for _ in range(5):  # past the stored key's rate limit
            c.get("/v1/jobs", headers={"Authorization": f"Bearer {stored}"})
        deadline = time.time() + 120
        while not all(j.done for j in c.service.list(None, 50)):  # outputs written before reading the files
            assert time.time() < deadline
            time.sleep(0.05)
        db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("sdserve.db*"))
        outputs = b"".join(p.read_bytes() for p in (tmp_path / "outputs").rglob("*") if p.is_file())
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "nothing was logged: the check would be empty"
    for key in (static, stored):
        assert key not in logged
        assert key.encode() not in db_bytes and key.encode() not in outputs
    assert hashlib.sha256(stored.encode()).hexdigest().encode() in db_bytes
    assert record.prefix in stored and len(record.prefix) <= 12  # only a short prefix is kept in clear


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_key_cannot_read_cancel_fetch_or_stop_another_keys_jobs(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path, modelslab_wait_s=0, preview_every=1) as c:
        _, alice = c.service.keys.create("alice")
        _, bob = c.service.keys.create("bob")
        native = c.post("/v1/jobs", json={**FAST, "steps": 30}, headers=_auth(alice)).json()
        ml = c.post("/api/v3/text2img", json={"key": alice, "prompt": "x", "width": "64", "height": "64",
                                              "num_inference_steps": "2"}).json()
        assert ml["status"] == "processing", ml
        deadline = time.time() + 60
        while c.get(f"/v1/jobs/{native['id']}", headers=_auth(alice)).json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.02)
        # Bob, in every dialect that can name a job: it answers like a missing one.
        for method, path, kw in [
            ("GET", f"/v1/jobs/{native['id']}", {"headers": _auth(bob)}),
            ("DELETE", f"/v1/jobs/{native['id']}", {"headers": _auth(bob)}),
            ("GET", f"/v1/jobs/{native['id']}/events", {"headers": _auth(bob)}),
            ("GET", f"/v1/jobs/{ml['id']}", {"headers": _auth(bob)}),
            *[("POST", f"{p}fetch/{j}", {"json": {"key": bob}})
              for p in ("/api/v3/", "/api/v6/images/", "/api/v6/realtime/") for j in (ml["id"], native["id"])],
        ]:
            r = c.request(method, path, **kw)
            assert r.status_code == 404, (method, path, r.text)
            assert ml["id"] not in r.text or "no job" in r.text
        assert c.get("/v1/jobs", headers=_auth(bob)).json()["data"] == []
        # A1111: Bob's progress shows no preview of Alice's run, and his interrupt/skip stop nothing.
        progress = c.get("/sdapi/v1/progress", headers=_auth(bob)).json()
        assert progress["current_image"] is None
        assert c.post("/sdapi/v1/interrupt", headers=_auth(bob)).status_code == 200
        assert c.post("/sdapi/v1/skip", headers=_auth(bob)).status_code == 200
        done = wait_done(c, native["id"], headers=_auth(alice))
        assert done["status"] == "succeeded", done
        fetched = c.post(f"/api/v3/fetch/{ml['id']}", json={"key": alice}).json()
        deadline = time.time() + 60
        while fetched["status"] == "processing" and time.time() < deadline:
            time.sleep(0.05)
            fetched = c.post(f"/api/v3/fetch/{ml['id']}", json={"key": alice}).json()
        assert fetched["status"] == "success"
        # Outputs are capability links: long random tokens Bob never saw, since every route
        # that lists them answered him 404.
        token = done["outputs"][0]["url"].rsplit("/", 1)[1]
        assert len(token) >= 32
        assert c.get(done["outputs"][0]["url"]).status_code == 200


def test_cors_is_closed_by_default(client) -> None:  # type: ignore[no-untyped-def]
    pre = client.options("/v1/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    r = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allow_list(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from tests.conftest import make_app

    with TestClient(make_app(settings, engine, cors_allow_origins=["https://app.example"])) as c:
        ok = c.options("/v1/jobs", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization,content-type"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        bad = c.options("/v1/jobs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        r = c.get("/ai/run/nope", headers={"Origin": "https://app.example"})  # errors carry it too
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "x-sdserve-seed" in exposed and "x-sdserve-warning" in exposed
        assert "access-control-allow-credentials" not in r.headers


def test_cors_origins_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sdserve.config import load_settings

    monkeypatch.setenv("SDSERVE_CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")
    assert load_settings().cors_allow_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize("path", [
    "/v1/outputs/..%2F..%2Fsdserve.db", "/v1/outputs/%2e%2e", "/v1/outputs/....", "/v1/outputs/..\\sdserve.db",
    "/v1/outputs/%00", "/v1/outputs/a%2Fb", "/v1/outputs/../../etc/passwd", "/api/v3/outputs/..%2F..%2Fetc/0.png",
    "/api/v3/outputs/x/..%2F0.png",
])
def test_file_serving_cannot_be_walked_out_of(client, path: str) -> None:  # type: ignore[no-untyped-def]
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"SQLite" not in r.content and b"root:" not in r.content


@pytest.mark.parametrize("key", ["../x.png", "/etc/passwd", "a/../../b.png", "a/./../b", "..", "a\\..\\b", "a/b\0c",
                                 "", "a//b"])
def test_local_artifact_keys_stay_under_the_root(tmp_path: Path, key: str) -> None:
    from sdserve.service.artifacts import LocalArtifacts

    store = LocalArtifacts(tmp_path / "outputs")
    (tmp_path / "x.png").write_bytes(b"secret")
    for op in (lambda: store.get(key), lambda: store.put(key, b"data", "image/png"), lambda: store.delete(key)):
        with pytest.raises(ValueError, match="unsafe artifact key"):
            op()
    assert (tmp_path / "x.png").read_bytes() == b"secret"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "x.png"]


def test_output_links_work_and_a_forged_token_is_404(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path) as c:
        job = c.post("/v1/jobs", json={**FAST, "image": base64.b64encode(png_bytes()).decode()}).json()
        done = wait_done(c, job["id"])
        url = done["outputs"][0]["url"]
        assert c.get(url).status_code == 200
        forged = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
        assert c.get(forged).status_code == 404
        assert c.get(f"/api/v3/outputs/{job['id']}/0.png", follow_redirects=False).status_code == 307
        assert c.get(f"/api/v3/outputs/{job['id']}/7.png").status_code == 404
