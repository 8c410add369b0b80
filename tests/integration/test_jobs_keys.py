"""API keys: stored hashed, each key sees only its own jobs, rate limits (429) and credit
quotas (402), static config keys, revocation, and the CLI that manages them."""

from __future__ import annotations

import hashlib

from tests.jobs_support import FAST, job_client, wait_done


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed_and_isolate_jobs(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        keys = c.service.keys
        alice_rec, alice = keys.create("alice")
        _, bob = keys.create("bob")
        # Only the sha256 of a key is in the database.
        with c.service.db.engine.connect() as conn:
            stored = [r[0] for r in conn.exec_driver_sql("SELECT hash FROM api_keys")]
        assert hashlib.sha256(alice.encode()).hexdigest() in stored and alice not in stored

        assert c.post("/v1/jobs", json=FAST).status_code == 401  # keys exist: the server is closed
        r = c.post("/v1/jobs", json=FAST, headers=_auth("sds_wrong"))
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"

        job = c.post("/v1/jobs", json=FAST, headers=_auth(alice)).json()
        done = wait_done(c, job["id"], headers=_auth(alice))
        assert done["status"] == "succeeded"
        # Bob cannot see, cancel or follow Alice's job: it answers like a missing one.
        for method, path in [("GET", f"/v1/jobs/{job['id']}"), ("DELETE", f"/v1/jobs/{job['id']}"),
                             ("GET", f"/v1/jobs/{job['id']}/events")]:
            r = c.request(method, path, headers=_auth(bob))
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found", (method, path, r.text)
        assert [j["id"] for j in c.get("/v1/jobs", headers=_auth(alice)).json()["data"]] == [job["id"]]
        assert c.get("/v1/jobs", headers=_auth(bob)).json()["data"] == []
        assert c.service.store.get(job["id"]).owner == alice_rec.id  # the id, never the key

        keys.revoke(alice_rec.id)
        assert c.get(f"/v1/jobs/{job['id']}", headers=_auth(alice)).status_code == 401


def test_rate_limit_answers_429_with_retry_after_in_each_dialect(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        _, key = c.service.keys.create("burst", rate_limit=2)
        h = _auth(key)
        assert c.get("/v1/jobs", headers=h).status_code == 200
        assert c.get("/v1/jobs", headers=h).status_code == 200
        r = c.get("/v1/jobs", headers=h)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 30
        cf = c.post("/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img", json={"prompt": "x"}, headers=h)
        assert cf.status_code == 429 and cf.json()["success"] is False and "retry-after" in cf.headers
        # Another key has its own budget.
        _, other = c.service.keys.create("other", rate_limit=2)
        assert c.get("/v1/jobs", headers=_auth(other)).status_code == 200


def test_credits_are_charged_per_image_refunded_on_cancel_and_402_when_spent(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        rec, key = c.service.keys.create("quota", credits=3)
        h = _auth(key)
        job = c.post("/v1/jobs", json={**FAST, "n": 2}, headers=h).json()
        assert wait_done(c, job["id"], headers=h)["status"] == "succeeded"
        assert c.service.keys.get(rec.id).credits_left == 1
        r = c.post("/v1/jobs", json={**FAST, "n": 2}, headers=h)
        assert r.status_code == 402, r.text
        assert r.json()["error"]["type"] == "insufficient_credits"
        assert "1 image credit" in r.json()["error"]["message"]
        cf = c.post("/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img",
                    json={"prompt": "x", "width": 256, "height": 256, "num_steps": 1}, headers=h)
        assert cf.status_code == 200  # the last credit
        r = c.post("/v1/jobs", json=FAST, headers=h)
        assert r.status_code == 402
        assert c.service.keys.get(rec.id).credits_left == 0

    # A canceled job gives its credits back.
    with job_client(settings, engine, tmp_path / "refund") as c:
        rec, key = c.service.keys.create("refund", credits=1)
        h = _auth(key)
        long = c.post("/v1/jobs", json={**FAST, "steps": 200}, headers=h).json()
        c.delete(f"/v1/jobs/{long['id']}", headers=h)
        assert wait_done(c, long["id"], headers=h)["status"] == "canceled"
        assert c.service.keys.get(rec.id).credits_left == 1


def test_static_config_keys_still_work(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path, api_keys=["static-secret"]) as c:
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/v1/jobs", headers=_auth("static-secret")).status_code == 200
        r = c.post("/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img",
                   json={"prompt": "x", "width": 256, "height": 256, "num_steps": 1}, headers=_auth("static-secret"))
        assert r.status_code == 200
        job = c.service.store.get(r.headers["x-sdserve-job"])
        assert job.owner is not None and "static-secret" not in job.owner


def test_open_server_without_keys_and_basic_auth_password_as_key(settings, engine, tmp_path):
    import base64

    with job_client(settings, engine, tmp_path) as c:
        assert c.get("/v1/jobs").status_code == 200  # no keys anywhere: open
        _, key = c.service.keys.create()
        assert c.get("/v1/jobs").status_code == 401
        basic = base64.b64encode(f"user:{key}".encode()).decode()
        assert c.get("/v1/jobs", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_rate_limiter_refills_over_time():
    import pytest

    from sdserve.errors import RateLimited
    from sdserve.service.db import Database
    from sdserve.service.ratelimit import RateLimiter

    now = [1000.0]
    limiter = RateLimiter(Database.memory(), clock=lambda: now[0])
    for _ in range(3):
        limiter.check("k", 3)
    with pytest.raises(RateLimited) as e:
        limiter.check("k", 3)
    assert e.value.retry_after == pytest.approx(20.0)  # one token per 20 s at 3/min
    now[0] += 20.0
    limiter.check("k", 3)


def test_keys_cli_create_list_revoke_and_webhook_secret(tmp_path, capsys):
    from sdserve.cli.main import main
    from sdserve.service.db import Database
    from sdserve.service.keys import KeyStore

    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", "ci", "--rate-limit", "60",
                 "--credits", "10"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    assert key.startswith("sds_") and len(key) > 40
    store = KeyStore(Database.at(tmp_path))
    rec = store.authenticate(key)
    assert rec is not None and rec.name == "ci" and rec.rate_limit == 60 and rec.credits == 10
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert rec.id in listing and key not in listing
    assert main(["keys", "revoke", rec.id, "--data-dir", str(tmp_path)]) == 0
    assert store.authenticate(key) is None
    assert main(["keys", "revoke", "key_missing", "--data-dir", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["webhooks", "secret", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["webhooks", "secret", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == first and first.startswith("whsec_")
