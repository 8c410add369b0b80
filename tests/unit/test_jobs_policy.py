"""Pure parts of the job service: the fairness order, stored errors keeping their meaning,
Retry-After parsing, and the job view clients and webhooks see."""

from __future__ import annotations

import email.utils
import time

import pytest

from sdserve.service.fairness import Waiting, fair_order


def _w(i: str, owner: str | None, seq: int, priority: int = 0) -> Waiting:
    return Waiting(i, owner, priority, seq)


def test_one_owners_backlog_does_not_starve_another():
    waiting = [_w(f"a{i}", "A", i) for i in range(100)] + [_w("b0", "B", 100)]
    order = fair_order(waiting, {})
    assert order[:3] == ["a0", "b0", "a1"]
    assert len(order) == 101


def test_owner_served_most_goes_behind_the_others():
    waiting = [_w("a0", "A", 1), _w("b0", "B", 2), _w("c0", None, 3)]
    # C is new to the queue: it starts level with the least served (B), the older first.
    assert fair_order(waiting, {"A": 7, "B": 3}) == ["b0", "c0", "a0"]


def test_priority_orders_only_within_an_owner():
    waiting = [_w("a-low", "A", 1), _w("b", "B", 2), _w("a-high", "A", 3, priority=9)]
    assert fair_order(waiting, {}) == ["a-high", "b", "a-low"]


def test_stored_errors_keep_class_message_and_field():
    from sdserve.errors import BadInput, Canceled, GenerationFailed, PayloadTooLarge, UnknownModel
    from sdserve.service.fetch import FetchRefused
    from sdserve.service.jobs import error_from_json, error_to_json

    cases = [BadInput("mask", "is too small"), PayloadTooLarge("image", "is 9000x9000"),
             UnknownModel("nope", ["sd15"]), Canceled("job canceled"), GenerationFailed("out of memory")]
    for err in cases:
        back = error_from_json(error_to_json(err))
        assert type(back) is type(err) and back.message == err.message and back.status == err.status
        assert getattr(back, "field", None) == getattr(err, "field", None)
    refused = error_from_json(error_to_json(FetchRefused("init_image", "is a loopback address")))
    assert isinstance(refused, BadInput) and refused.field == "init_image" and refused.status == 400


def test_retry_after_as_seconds_or_http_date():
    from sdserve.service.webhooks import _retry_after

    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert _retry_after(later) == pytest.approx(30, abs=2)


def test_job_view_shows_outputs_and_errors():
    from sdserve.engine.params import GenerationParams, input_images
    from sdserve.errors import BadInput
    from sdserve.service.jobs import Job, Output, job_view

    p = GenerationParams(model="m", prompt="p", seed=4, n=2, inputs=input_images(init=b"\x89PNG..."))
    job = Job(id="j", params=p, status="succeeded", created_at=0.0, finished_at=1.5,
              outputs=[Output(0, 4, "image/png", token="t0"), Output(1, 5, "image/png", token="t1", removed=True)])
    view = job_view(job, lambda o: f"https://x/{o.token}")
    assert view["created_at"] == "1970-01-01T00:00:00.000Z" and view["finished_at"] == "1970-01-01T00:00:01.500Z"
    assert [o["url"] for o in view["outputs"]] == ["https://x/t0", None]  # removed: no link
    assert view["seeds"] == [4, 5] and "init_image" not in view["params"] and view["params"]["has_init_image"]
    job.status, job.error, job.outputs = "failed", BadInput("mask", "is empty"), []
    assert job_view(job, str)["error"] == {"type": "invalid_request", "message": "mask: is empty", "field": "mask"}
