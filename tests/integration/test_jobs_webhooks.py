"""Webhooks (Standard Webhooks signatures checked by an independent implementation, retries,
410, surviving a restart) and the SSRF-safe fetcher every outbound URL goes through."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.jobs_support import FAST, fresh_database_url, job_client, make_service, wait_done

Answer = tuple[int, dict[str, str], bytes]


@contextmanager
def http_server(answer: Callable[[str, str, dict[str, str], bytes], Answer],
                host: str = "127.0.0.1") -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server answering with ``answer(method, path, headers, body)``;
    yields its base URL and the list of requests it got."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
            status, extra, content = answer(self.command, self.path, headers, body)
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """Standard Webhooks v1 verification, written here from the spec, not with sdserve's code:
    HMAC-SHA256 keyed by base64-decode(secret minus 'whsec_') over 'id.timestamp.body'."""
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    return any(hmac.compare_digest(expected, sig.split(",", 1)[1].encode())
               for sig in headers["webhook-signature"].split() if sig.startswith("v1,"))


def _secret(service, data_dir, capsys, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The secret as the CLI prints it for the service's database."""
    from sdserve.cli.main import main

    if not service.db.is_sqlite:
        monkeypatch.setenv("SDSERVE_DATABASE_URL", service.db.url)
    capsys.readouterr()
    assert main(["webhooks", "secret", "--data-dir", str(data_dir)]) == 0
    return capsys.readouterr().out.strip()


def _wait_delivery(service, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = service.webhooks.deliveries(job_id)
        if rows and rows[-1]["status"] == status:
            return rows[-1]
        time.sleep(0.05)
    raise AssertionError(f"delivery for {job_id} never reached {status}: {service.webhooks.deliveries(job_id)}")


def test_webhook_retries_until_delivered_with_valid_signatures(settings, engine, tmp_path, capsys, monkeypatch):
    answers = iter([(500, {}, b"boom"), (429, {"Retry-After": "1"}, b"slow down"), (200, {}, b"ok")])
    with http_server(lambda *_: next(answers)) as (url, seen), \
            job_client(settings, engine, tmp_path, allow_private_urls=True, webhook_retry_base_s=0.05) as c:
        job = c.post("/v1/jobs", json={**FAST, "seed": 3, "webhook": f"{url}/hook?ref=42"}).json()
        assert wait_done(c, job["id"])["status"] == "succeeded"
        row = _wait_delivery(c.service, job["id"], "delivered")
        secret = _secret(c.service, tmp_path, capsys, monkeypatch)

    assert row["attempts"] == 3 and len(seen) == 3
    assert all(r["path"] == "/hook?ref=42" for r in seen)  # the query string is kept
    assert len({r["headers"]["webhook-id"] for r in seen}) == 1  # same id on every retry
    assert all(verify_standard_webhook(secret, r["headers"], r["body"]) for r in seen)
    assert not verify_standard_webhook("whsec_" + base64.b64encode(b"x" * 32).decode(), seen[0]["headers"],
                                       seen[0]["body"])
    assert not verify_standard_webhook(secret, seen[0]["headers"], seen[0]["body"] + b" ")
    payload = json.loads(seen[-1]["body"])
    assert payload["type"] == "job.succeeded" and payload["timestamp"].endswith("Z")
    assert payload["data"]["id"] == job["id"] and payload["data"]["outputs"][0]["seed"] == 3
    assert payload["data"]["outputs"][0]["url"].startswith("http://")
    assert seen[-1]["headers"]["content-type"] == "application/json"


def test_webhook_410_stops_and_start_event_is_sent(settings, engine, tmp_path):
    with http_server(lambda *_: (410, {}, b"gone")) as (url, seen), \
            job_client(settings, engine, tmp_path, allow_private_urls=True, webhook_retry_base_s=0.05) as c:
        job = c.post("/v1/jobs", json={**FAST, "webhook": url, "webhook_events": ["start", "completed"]}).json()
        wait_done(c, job["id"])
        _wait_delivery(c.service, job["id"], "gone")
        rows = c.service.webhooks.deliveries(job["id"])
        time.sleep(0.3)
    assert [r["event"] for r in rows] == ["started", "succeeded"]
    assert all(r["status"] == "gone" and r["attempts"] == 1 for r in rows)
    assert [json.loads(r["body"])["type"] for r in seen] == ["job.started", "job.succeeded"]


def test_pending_webhook_survives_a_restart(settings, engine, tmp_path):
    from sdserve.engine.params import GenerationParams

    up = threading.Event()
    same_db = {"database_url": url} if (url := fresh_database_url()) else {}  # both lives share it
    with http_server(lambda *_: (200, {}, b"ok") if up.is_set() else (503, {}, b"down")) as (url, seen):

        async def first_life() -> str:
            _, service = make_service(settings, engine, tmp_path, allow_private_urls=True, webhook_retry_base_s=0.05,
                                      webhook_max_attempts=1000, **same_db)
            await service.start()
            job = service.submit(GenerationParams(**FAST), webhook=url)
            await service.wait(job, 60)
            while len(seen) < 2:  # it is retrying
                await asyncio.sleep(0.05)
            await service.stop()
            assert service.webhooks.deliveries(job.id)[0]["status"] == "pending"
            return job.id

        async def second_life(job_id: str) -> dict[str, Any]:
            _, service = make_service(settings, engine, tmp_path, allow_private_urls=True, webhook_retry_base_s=0.05,
                                      **same_db)
            up.set()
            await service.start()
            try:
                for _ in range(600):
                    row = service.webhooks.deliveries(job_id)[0]
                    if row["status"] != "pending":
                        return row
                    await asyncio.sleep(0.05)
            finally:
                await service.stop()
            raise AssertionError("not delivered after restart")

        job_id = asyncio.run(first_life())
        row = asyncio.run(second_life(job_id))
    assert row["status"] == "delivered"
    assert len({r["headers"]["webhook-id"] for r in seen}) == 1


# -- the fetcher ------------------------------------------------------------------------------


def _fetch(policy_kw: dict[str, Any], url: str, **kw: Any) -> bytes:
    from sdserve.service.fetch import Fetcher, FetchPolicy

    return asyncio.run(Fetcher(FetchPolicy(**policy_kw)).fetch_bytes(url, **kw))


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:9/x", "loopback"),
    ("http://localhost:9/x", "loopback"),  # resolved by DNS, then refused
    ("http://[::1]:9/", "loopback"),
    ("http://[::ffff:127.0.0.1]:9/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://0.0.0.0:9/", "unspecified"),
    ("file:///etc/passwd", "scheme"),
    ("ftp://example.com/x", "scheme"),
    ("gopher://127.0.0.1:25/", "scheme"),
])
def test_unsafe_urls_are_refused_naming_the_field(url, why):
    from sdserve.service.fetch import FetchRefused

    with pytest.raises(FetchRefused) as e:
        _fetch({}, url, field="init_image")
    assert e.value.field == "init_image" and e.value.status == 400
    assert why in e.value.message


def test_metadata_stays_refused_when_private_urls_are_allowed():
    from sdserve.service.fetch import FetchRefused

    with pytest.raises(FetchRefused, match="metadata"):
        _fetch({"allow_private": True}, "http://169.254.169.254/latest/meta-data/")


def test_redirects_are_checked_at_every_hop():
    from sdserve.service.fetch import FetchRefused

    def redirect(method: str, path: str, *_: Any) -> Answer:
        if path == "/to-loopback":
            return 302, {"Location": "http://127.0.0.1:9/admin"}, b""
        if path == "/to-metadata":
            return 307, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""
        if path == "/hop":
            return 301, {"Location": "/final"}, b""
        return 200, {}, b"final bytes"

    # 127.0.0.2 is loopback too (Linux routes 127/8 there); only it is allowed, so the
    # first hop passes and the redirect to 127.0.0.1 must be caught on its own.
    with http_server(redirect, host="127.0.0.2") as (url, seen):
        allow = {"allow_networks": ("127.0.0.2/32",)}
        assert _fetch(allow, f"{url}/hop") == b"final bytes"
        with pytest.raises(FetchRefused, match="127.0.0.1"):
            _fetch(allow, f"{url}/to-loopback")
        with pytest.raises(FetchRefused, match="metadata"):
            _fetch({"allow_private": True}, f"{url}/to-metadata")
    assert [r["path"] for r in seen] == ["/hop", "/final", "/to-loopback", "/to-metadata"]


def test_size_and_time_limits():
    from sdserve.service.fetch import FetchFailed

    def answer(method: str, path: str, *_: Any) -> Answer:
        if path == "/slow":
            time.sleep(1.5)
        return 200, {}, b"x" * 5000

    with http_server(answer) as (url, _):
        assert len(_fetch({"allow_private": True}, f"{url}/ok")) == 5000
        with pytest.raises(FetchFailed, match="limit"):
            _fetch({"allow_private": True, "max_bytes": 1000}, f"{url}/big")
        with pytest.raises(FetchFailed, match="within"):
            _fetch({"allow_private": True, "timeout_s": 0.3}, f"{url}/slow")


def test_webhook_to_a_private_address_is_refused_at_submit(settings, engine, tmp_path):
    with job_client(settings, engine, tmp_path) as c:
        r = c.post("/v1/jobs", json={**FAST, "webhook": "http://10.0.0.5/hook"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "webhook"
        # A name is resolved at delivery time; refused then, and recorded as failed.
        job = c.post("/v1/jobs", json={**FAST, "webhook": "http://localhost:9/hook"}).json()
        wait_done(c, job["id"])
        row = _wait_delivery(c.service, job["id"], "failed")
        assert "loopback" in row["last_error"] and row["attempts"] == 1
