"""Which queued job runs next: round-robin between owners (API keys), priority then FIFO
within one owner. One pure function, so the worker's choice and the queue positions
reported to clients can never disagree."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Waiting", "fair_order"]


@dataclass(frozen=True)
class Waiting:
    """A queued job, as much as ordering needs."""

    id: str
    owner: str | None
    priority: int
    seq: int


def fair_order(waiting: Iterable[Waiting], served: Mapping[str | None, int]) -> list[str]:
    """Job ids in the order they will start.

    ``served`` maps an owner to when it was last served (larger is later). The owner served
    longest ago goes next (never served counts as earliest; ties go to the oldest
    submission), so one key's hundred jobs cannot starve another key's one. Within an
    owner: higher priority first, then first come, first served.
    """
    lines: dict[str | None, deque[Waiting]] = {}
    for w in sorted(waiting, key=lambda w: (-w.priority, w.seq)):
        lines.setdefault(w.owner, deque()).append(w)
    first = {o: min(w.seq for w in line) for o, line in lines.items()}
    last = dict(served)
    tick = max(last.values(), default=0) + 1
    order: list[str] = []
    while lines:
        owner = min(lines, key=lambda o: (last.get(o, -1), first[o]))
        line = lines[owner]
        order.append(line.popleft().id)
        last[owner], tick = tick, tick + 1
        if not line:
            del lines[owner]
    return order
