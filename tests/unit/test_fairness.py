"""Fairness by compute: keys share the device by the cost they were served, not by how many
jobs they sent. The worker's steps (``fair_order`` then ``record_served``) are simulated
here exactly as it takes them."""

from __future__ import annotations

from sdserve.service.fairness import Waiting, fair_order, record_served


def _serve(waiting: list[Waiting], served: dict, starts: int) -> tuple[list[Waiting], dict]:  # type: ignore[type-arg]
    """Start ``starts`` jobs as the worker does: the head of the fair order each time."""
    started = []
    for _ in range(starts):
        head = fair_order(waiting, served)[0]
        job = next(w for w in waiting if w.id == head)
        served = record_served(served, waiting, job)
        waiting = [w for w in waiting if w.id != head]
        started.append(job)
    return started, served


def test_large_and_small_jobs_each_get_about_half_the_device():
    # Key L sends jobs 8x the cost of key S's; both keep work queued.
    waiting = [Waiting(f"L{i}", "L", 0, 2 * i, cost=80.0) for i in range(40)] + \
              [Waiting(f"S{i}", "S", 0, 2 * i + 1, cost=10.0) for i in range(200)]
    started, _ = _serve(waiting, {}, 150)
    cost = {"L": 0.0, "S": 0.0}
    for w in started:
        cost[w.owner] += w.cost  # type: ignore[index]
        # At every point, neither key is more than one large job ahead of the other.
        assert abs(cost["L"] - cost["S"]) <= 80.0
    assert 0.45 <= cost["L"] / (cost["L"] + cost["S"]) <= 0.55
    # By job count it is far from even: S runs 8 of its jobs for each of L's.
    n_large = sum(w.owner == "L" for w in started)
    assert 15 <= n_large <= 18 and len(started) - n_large >= 8 * (n_large - 1)


def test_the_order_is_the_plan_the_worker_follows():
    # Queue positions come from fair_order; the worker re-plans after every start. They agree.
    waiting = [Waiting(f"a{i}", "A", 0, i, cost=5.0) for i in range(6)] + \
              [Waiting(f"b{i}", "B", 0, 10 + i, cost=1.0) for i in range(12)] + \
              [Waiting("c0", None, 0, 30, cost=3.0), Waiting("a-hi", "A", 4, 40, cost=5.0)]
    plan = fair_order(waiting, {})
    started, _ = _serve(waiting, {}, len(waiting))
    assert [w.id for w in started] == plan
    assert plan[0] == "a-hi"  # priority orders within an owner


def test_a_returning_key_starts_level_instead_of_with_saved_up_turns():
    # A ran alone for a long time; B idled, then arrives. B gets no burst of past turns:
    # it starts level with A (and A is not made to wait for B's absence either).
    served = {"A": 1000.0}
    waiting = [Waiting(f"a{i}", "A", 0, i, cost=10.0) for i in range(10)] + \
              [Waiting(f"b{i}", "B", 0, 100 + i, cost=10.0) for i in range(10)]
    started, served = _serve(waiting, served, 6)
    assert [w.owner for w in started] == ["A", "B", "A", "B", "A", "B"]
    # An owner whose queue ran empty is forgotten: its history does not outlive its backlog.
    _, after = _serve([Waiting("x", "A", 0, 1, cost=10.0), Waiting("y", "B", 0, 2, cost=1.0)], {"A": 5.0, "C": 1.0}, 1)
    assert "C" not in after


def test_jobs_without_a_price_still_take_turns():
    # Jobs queued before costs existed are priced 0: they go round-robin, as before.
    waiting = [Waiting(f"a{i}", "A", 0, i, cost=0.0) for i in range(3)] + [Waiting("b0", "B", 0, 10, cost=0.0)]
    assert fair_order(waiting, {}) == ["a0", "b0", "a1", "a2"]
