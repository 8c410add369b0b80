"""The SSRF suite for every URL field of every dialect, on top of the fetcher's own suite in
tests/integration/test_jobs_webhooks.py (scheme, loopback, private, metadata, redirects,
limits). URL fields: native ``webhook``; ModelsLab ``init_image``, ``mask_image``,
``webhook``; A1111 ``init_images`` and ``mask`` (URLs are never fetched there). Workers AI and
OpenAI take no URLs. A listener on loopback counts connections: none may ever arrive."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import mask_bytes, png_bytes
from tests.reliability.dialect_errors import assert_names_field
from tests.integration.test_jobs_webhooks import _wait_delivery, http_server
from tests.jobs_support import FAST, job_client, wait_done

_PNG = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
_MASK = "data:image/png;base64," + base64.b64encode(mask_bytes()).decode()
ML_FAST: dict[str, Any] = {"prompt": "x", "width": "64", "height": "64", "num_inference_steps": "2"}


@contextmanager
def listener() -> Iterator[tuple[int, list[Any]]]:
    """A TCP listener on 127.0.0.1 that records every connection it is offered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    hits: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                continue
            hits.append(addr)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1], hits
    finally:
        stop.set()
        t.join(2)
        sock.close()


# Every way to write "this machine" or "the LAN" that the fetcher must see through. {p} is the
# listener's port, so a mistake would show up as a connection.
LITERALS = [
    "http://127.0.0.1:{p}/x", "http://[::1]:{p}/x", "http://[::ffff:127.0.0.1]:{p}/x", "http://[::ffff:7f00:1]:{p}/x",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/x", "http://[::127.0.0.1]:{p}/x", "http://[64:ff9b::7f00:1]:{p}/x",
    "http://[2002:7f00:1::]:{p}/x", "http://0.0.0.0:{p}/x", "http://10.0.0.1:{p}/x", "http://172.16.0.1:{p}/x",
    "http://192.168.1.1:{p}/x", "http://100.64.0.1:{p}/x", "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]:{p}/x", "http://[fc00::1]:{p}/x", "http://224.0.0.1:{p}/x", "http://255.255.255.255:{p}/x",
    "http://user:pw@127.0.0.1:{p}/x", "https://127.0.0.1:{p}/x",
]
SCHEMES = ["file:///etc/passwd", "gopher://127.0.0.1:{p}/_x", "ftp://127.0.0.1:{p}/x", "dict://127.0.0.1:{p}/",
           "javascript:alert(1)", "ldap://127.0.0.1:{p}/", "http:///x"]
# Names resolved by the system resolver to loopback (glibc reads these numeric forms too).
NAMES = ["http://localhost:{p}/x", "http://LOCALHOST.:{p}/x", "http://127.1:{p}/x", "http://2130706433:{p}/x",
         "http://0x7f000001:{p}/x", "http://0177.0.0.1:{p}/x", "http://127.0.0.1.:{p}/x"]


def _fetch(url: str, field: str = "init_image", **policy: Any) -> bytes:
    from sdserve.service.fetch import Fetcher, FetchPolicy

    return asyncio.run(Fetcher(FetchPolicy(timeout_s=3, **policy)).fetch_bytes(url, field))


@pytest.mark.parametrize("url", LITERALS + SCHEMES + NAMES)
def test_the_fetcher_refuses_every_form_of_a_local_address(url: str) -> None:
    from sdserve.service.fetch import FetchFailed, FetchRefused

    with listener() as (port, hits):
        with pytest.raises((FetchRefused, FetchFailed)) as e:
            _fetch(url.format(p=port))
        assert e.value.field == "init_image" and e.value.status == 400
        time.sleep(0.05)
        assert hits == [], f"{url} reached the listener"


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names in .sdserve.test resolve (like a hostile DNS server would answer) to private or
    mixed addresses; the rest go to the real resolver."""
    real = socket.getaddrinfo
    table = {"internal.sdserve.test": ["10.1.2.3"], "mixed.sdserve.test": ["93.184.216.34", "10.0.0.1"],
             "v6.sdserve.test": ["fd12::1"], "mapped.sdserve.test": ["::ffff:192.168.0.1"]}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".") in table:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 80))
                    for a in table[host.rstrip(".")]]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("host, why", [("internal.sdserve.test", "10.1.2.3"), ("mixed.sdserve.test", "10.0.0.1"),
                                        ("v6.sdserve.test", "fd12::1"), ("mapped.sdserve.test", "::ffff:c0a8:1")])
def test_names_are_judged_by_every_address_they_resolve_to(fake_dns, host: str, why: str) -> None:  # type: ignore[no-untyped-def]
    from sdserve.service.fetch import FetchRefused

    with pytest.raises(FetchRefused, match=why.replace(".", r"\.")):
        _fetch(f"http://{host}/x")


# -- through each dialect's URL fields -----------------------------------------------------

def _native_webhook(c, url: str):  # type: ignore[no-untyped-def]
    return c.post("/v1/jobs", json={**FAST, "webhook": url})


def _ml(route: str, field: str):  # type: ignore[no-untyped-def]
    def send(c, url: str):  # type: ignore[no-untyped-def]
        body = {**ML_FAST, field: url}
        if route != "text2img" and field != "init_image":
            body["init_image"] = _PNG
        if route == "inpaint" and field != "mask_image":
            body["mask_image"] = _MASK
        return c.post(f"/api/v3/{route}", json=body)
    return send


def _a1111(field: str):  # type: ignore[no-untyped-def]
    def send(c, url: str):  # type: ignore[no-untyped-def]
        body = {"steps": 2, "width": 64, "height": 64, "init_images": [_PNG]}
        if field == "init_images":
            body["init_images"] = [url]
        else:
            body[field] = url
        return c.post("/sdapi/v1/img2img", json=body)
    return send


FIELDS = {
    "native.webhook": (_native_webhook, "webhook"),
    "modelslab.webhook": (_ml("text2img", "webhook"), "webhook"),
    "modelslab.init_image": (_ml("img2img", "init_image"), "init_image"),
    "modelslab.mask_image": (_ml("inpaint", "mask_image"), "mask_image"),
    "a1111.init_images": (_a1111("init_images"), "init_images[0]"),
    "a1111.mask": (_a1111("mask"), "mask"),
}


def _named(r, field: str) -> None:  # type: ignore[no-untyped-def]
    assert_names_field(str(r.url.path), r, field)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_url_field_refuses_local_addresses_and_other_schemes(settings, engine, tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    send, field = FIELDS[name]
    with listener() as (port, hits), job_client(settings, engine, tmp_path, modelslab_wait_s=0) as c:
        for url in LITERALS + SCHEMES:
            _named(send(c, url.format(p=port)), field)
        time.sleep(0.1)
        assert hits == []


@pytest.mark.parametrize("name", ["modelslab.init_image", "modelslab.mask_image", "a1111.init_images", "a1111.mask"])
def test_image_urls_by_name_are_resolved_and_refused_at_the_request(settings, engine, tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    send, field = FIELDS[name]
    with listener() as (port, hits), job_client(settings, engine, tmp_path, modelslab_wait_s=0) as c:
        for url in NAMES:
            _named(send(c, url.format(p=port)), field)
        assert hits == []


@pytest.mark.parametrize("name", ["native.webhook", "modelslab.webhook"])
def test_webhooks_by_name_are_refused_at_delivery_and_never_sent(settings, engine, tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    # A name can only be judged when it is resolved, at delivery: the job still succeeds and
    # the delivery is recorded as refused, without a connection.
    send, _ = FIELDS[name]
    with listener() as (port, hits), job_client(settings, engine, tmp_path, modelslab_wait_s=0) as c:
        for url in (NAMES[0], NAMES[2], NAMES[3], NAMES[4]):  # ones this resolver answers
            r = send(c, url.format(p=port))
            assert r.status_code in (200, 201), r.text
            job_id = r.json()["id"]
            assert wait_done(c, job_id)["status"] == "succeeded"
            row = _wait_delivery(c.service, job_id, "failed")
            assert "loopback" in row["last_error"], row
        assert hits == []


def test_redirects_to_local_addresses_are_refused_through_the_dialects(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app
    from sdserve.service.fetch import Fetcher, FetchPolicy
    from sdserve.service.service import JobService

    with listener() as (port, hits):
        target = f"http://127.0.0.1:{port}/x"

        def answer(method: str, path: str, *_: Any) -> tuple[int, dict[str, str], bytes]:
            if path == "/image.png":
                return 200, {"content-type": "image/png"}, png_bytes()
            return 302 if path == "/found" else 307, {"Location": target}, b""

        # The redirecting server (127.0.0.2) is allowed; where it points (127.0.0.1) is not.
        with http_server(answer, host="127.0.0.2") as (allowed, seen):
            fetcher = Fetcher(FetchPolicy(allow_networks=("127.0.0.2/32",), timeout_s=5))
            service = JobService(engine, fetcher=fetcher)
            with TestClient(build_app(settings.model_copy(update={"modelslab_wait_s": 0.0}), service)) as c:
                ok = c.post("/api/v3/img2img", json={**ML_FAST, "init_image": f"{allowed}/image.png"})
                assert ok.status_code == 200, ok.text  # the allowed host itself works
                for path in ("/found", "/temporary"):
                    r = c.post("/api/v3/img2img", json={**ML_FAST, "init_image": f"{allowed}{path}"})
                    _named(r, "init_image")
                    assert "127.0.0.1" in r.json()["message"]
                # Webhooks never follow redirects (Standard Webhooks: a 3xx is a failure).
                job = c.post("/v1/jobs", json={**FAST, "webhook": f"{allowed}/found"}).json()
                assert wait_done(c, job["id"])["status"] == "succeeded"
                row = _wait_delivery(service, job["id"], "failed")
                assert row["last_error"] == "HTTP 302"
            assert [s["path"] for s in seen].count("/found") == 2
        assert hits == []
