"""Engine-side pieces shared by the add-on benches (``--controlnet N``, ``--lora``): one engine
over the bench model, and batches of the same requests timed in interleaved rounds, so that
drift in the machine's load hits every variant alike and the ratios stay honest."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.catalog import Arch
    from ..engine.engine import Engine
    from ..engine.params import GenerationParams

__all__ = ["bench_engine", "batch_seconds", "interleaved_images_per_s", "print_result"]


def bench_engine(args: argparse.Namespace, root: Path, model_dir: Path, arch: Arch, **settings: Any) -> Engine:
    """The engine a server with the user's ``--config`` would build, over the bench model."""
    from ..config import UserModel, load_settings
    from sdserve.compose import build_engine

    return build_engine(load_settings(args.config, data_dir=root / "server", device=args.device, demo=False,
                                      models=[UserModel(id="bench", source=str(model_dir), arch=arch)], **settings))


def batch_seconds(engine: Engine, requests: list[GenerationParams]) -> float:
    """Seconds to run ``requests`` as one batch (as the scheduler would hand them over)."""
    from ..engine.params import BatchItem

    t0 = time.perf_counter()
    for res in engine.generate_batch([BatchItem(r) for r in requests]):
        if isinstance(res, Exception):
            raise res
    return time.perf_counter() - t0


def interleaved_images_per_s(engine: Engine, variants: dict[str, Callable[[int], GenerationParams]],
                             requests: int, rounds: int) -> dict[str, float]:
    """Images/s of each variant: ``rounds`` rounds, each running every variant's batch of
    ``requests`` once in turn (after one warm-up round that loads what each needs); the median
    batch time per variant."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rnd in range(rounds + 1):
        for name, make in variants.items():
            t = batch_seconds(engine, [make(i) for i in range(requests)])
            if rnd:
                times[name].append(t)
    return {k: requests / statistics.median(v) for k, v in times.items()}


def print_result(title: str, result: dict[str, Any], json_path: Path | None) -> None:
    import json

    print(title)
    for k, v in result.items():
        print(f"  {k:30} {v:.4g}" if isinstance(v, float) else f"  {k:30} {v}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
