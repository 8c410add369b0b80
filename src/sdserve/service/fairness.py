"""Which queued job runs next: the device is shared between owners (API keys) by the compute
they were served, not by how many jobs they sent; within one owner, priority then FIFO.
Pure functions, so the worker's choice and the queue positions reported to clients can
never disagree.

The policy is least-served-first over cost (a deficit round-robin with the quantum set by
each job's own cost): the owner with the least compute served goes next, so a key sending
jobs ten times the size of another's gets one job in for ten of the other's, and both get
about half the device while both have work waiting. Only owners with work waiting count: an
owner whose queue ran empty forgets its history, and one that (re)joins starts level with
the least-served owner already waiting, so it gets no burst of "saved up" turns and is
not made to wait for others' past either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Waiting", "fair_order", "record_served"]

# The least a start counts: jobs priced 0 (queued before costs existed) still take turns.
_MIN_COST = 1e-3


@dataclass(frozen=True)
class Waiting:
    """A queued job, as much as ordering needs."""

    id: str
    owner: str | None
    priority: int
    seq: int
    cost: float = 1.0  # compute units (engine.cost)


def _start(waiting_owners: Iterable[str | None], served: Mapping[str | None, float]) -> dict[str | None, float]:
    """Each waiting owner's compute served: its own, or, new to the queue, the least of the
    waiting owners that have some."""
    owners = list(dict.fromkeys(waiting_owners))
    floor = min((served[o] for o in owners if o in served), default=0.0)
    return {o: served.get(o, floor) for o in owners}


def fair_order(waiting: Iterable[Waiting], served: Mapping[str | None, float]) -> list[str]:
    """Job ids in the order they will start.

    ``served`` maps an owner to the compute units served to it while it had work waiting
    (``record_served`` keeps it). The owner served least goes next (ties: the oldest
    submission); each job it starts adds its cost. Within an owner: higher priority first,
    then first come, first served.
    """
    lines: dict[str | None, deque[Waiting]] = {}
    for w in sorted(waiting, key=lambda w: (-w.priority, w.seq)):
        lines.setdefault(w.owner, deque()).append(w)
    first = {o: min(w.seq for w in line) for o, line in lines.items()}
    level = _start(lines, served)
    order: list[str] = []
    while lines:
        owner = min(lines, key=lambda o: (level[o], first[o]))
        line = lines[owner]
        job = line.popleft()
        order.append(job.id)
        level[owner] += max(job.cost, _MIN_COST)
        if not line:
            del lines[owner]
    return order


def record_served(served: Mapping[str | None, float], waiting: Iterable[Waiting],
                  started: Waiting) -> dict[str | None, float]:
    """``served`` after ``started`` (one of ``waiting``, the queue it was taken from) starts.

    Every waiting owner's level is fixed as ``fair_order`` computed it, its owner's grows by
    its cost, and owners with nothing else waiting are forgotten; so the next ``fair_order``
    goes on exactly as this one planned.
    """
    waiting = list(waiting)
    level = _start([w.owner for w in waiting] + [started.owner], served)
    level[started.owner] += max(started.cost, _MIN_COST)
    keep = {w.owner for w in waiting if w.id != started.id} | {started.owner}
    return {o: v for o, v in level.items() if o in keep}
