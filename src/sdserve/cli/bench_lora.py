"""``sdserve bench --lora``: what a hot LoRA costs (the same requests without and with one,
interleaved rounds on one engine) and what switching between two loaded LoRAs costs, both
against the time of one image (issue 14's targets: >= 0.95x throughput, a switch < 10% of
an image)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bench_engine import bench_engine, interleaved_images_per_s, print_result

if TYPE_CHECKING:
    from ..engine.catalog import Arch

__all__ = ["cmd_bench_lora"]

_RANK = 32  # a common rank for published LoRAs (civitai's are mostly 16-128)


def cmd_bench_lora(args: argparse.Namespace, model_dir: Path, arch: Arch, root: Path) -> int:
    from ..engine.lora_adapters import activate
    from ..engine.params import GenerationParams, LoraRef
    from ..engine.tiny_lora import write_lora

    folder = root / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    names = (f"bench_{args.arch}_a", f"bench_{args.arch}_b")
    for seed, name in enumerate(names):
        if not (folder / f"{name}.safetensors").is_file():
            # Small deltas: random full-size weights plus large ones would overflow to NaN.
            write_lora(model_dir, arch == "sdxl", folder / f"{name}.safetensors", rank=_RANK, seed=seed, std=0.01)
    engine = bench_engine(args, root, model_dir, arch, model_dirs={"lora": [folder]})
    guidance = 7.5

    def request(loras: tuple[str, ...]) -> Any:
        def make(i: int) -> GenerationParams:
            return GenerationParams(model="bench", prompt=f"a lighthouse {i}", width=args.size, height=args.size,
                                    steps=args.steps, guidance=guidance, seed=1000 + i,
                                    loras=tuple(LoraRef(name=n, weight=0.8) for n in loras))
        return make

    # Order matters: "a_again" runs right after "a" (no switch), "b" right after it (a switch).
    ips = interleaved_images_per_s(engine, {"none": request(()), "a": request(names[:1]),
                                            "a_again": request(names[:1]), "b": request(names[1:])},
                                   args.requests, args.rounds)
    image_s = 1 / ips["none"]
    switch_in_batch_s = args.requests / ips["b"] - args.requests / ips["a_again"]
    # The switch itself, timed alone: set_adapters from one loaded LoRA to the other.
    model = engine.load("bench")
    refs = [engine.prepare(request((n,))(0)).loras for n in names]
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        activate(model, refs[0])
        activate(model, refs[1])
    switch_s = (time.perf_counter() - t0) / (2 * reps)
    print_result(f"bench --lora: arch={args.arch} size={args.size} steps={args.steps} requests={args.requests} "
                 f"rounds={args.rounds} rank={_RANK}", {
                     "images_per_s_without": ips["none"], "images_per_s_hot_lora": ips["a_again"],
                     "hot_lora_throughput_ratio": ips["a_again"] / ips["none"],
                     "image_s": image_s, "switch_s": switch_s, "switch_share_of_image": switch_s / image_s,
                     "switch_in_batch_s": switch_in_batch_s,
                     "switch_in_batch_share_of_image": switch_in_batch_s / image_s,
                     "device": str(engine.device), "dtype": str(engine.dtype).removeprefix("torch."),
                     "arch": args.arch, "size": args.size, "steps": args.steps, "requests": args.requests,
                 }, args.json)
    return 0
