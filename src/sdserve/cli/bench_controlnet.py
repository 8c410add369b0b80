"""``sdserve bench --controlnet N``: what N ControlNet units cost relative to none, on the
same engine, model, size and requests (run back to back in one process), with the MFU of
each counting the ControlNet passes' FLOPs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.catalog import Arch

__all__ = ["cmd_bench_controlnet"]


def cmd_bench_controlnet(args: argparse.Namespace, model_dir: Path, arch: Arch, root: Path) -> int:
    import io

    from PIL import Image

    from ..config import UserModel, load_settings
    from ..engine.bench_controlnet import controlnet_flops_per_image, write_bench_controlnet
    from ..engine.benchmark import flops_per_image, matmul_peak_flops
    from ..engine.params import BatchItem, ControlUnit, GenerationParams, InputImage
    from sdserve.compose import build_engine

    n, guidance = args.controlnet, 7.5
    name = write_bench_controlnet(model_dir, root / "ControlNet")
    settings = load_settings(args.config, data_dir=root / "server", device=args.device, demo=False,
                             model_dirs={"controlnet": [root / "ControlNet"]},
                             models=[UserModel(id="bench", source=str(model_dir), arch=arch)])
    engine = build_engine(settings)
    hint = io.BytesIO()
    Image.new("RGB", (args.size, args.size), (255, 255, 255)).save(hint, format="PNG")

    def request(i: int, units: int) -> GenerationParams:
        return GenerationParams(model="bench", prompt=f"a lighthouse {i}", width=args.size, height=args.size,
                                steps=args.steps, guidance=guidance, seed=1000 + i,
                                control=tuple(ControlUnit(model=name) for _ in range(units)),
                                inputs=tuple(InputImage(role="control", index=u, data=hint.getvalue())
                                             for u in range(units)))

    def images_per_s(units: int) -> float:
        engine.generate(request(-1, units))  # warm-up: loads the ControlNet, builds its pipeline
        t0 = time.perf_counter()
        for res in engine.generate_batch([BatchItem(request(i, units)) for i in range(args.requests)]):
            if isinstance(res, Exception):
                raise res
        return float(args.requests / (time.perf_counter() - t0))

    base_flops = flops_per_image(model_dir, arch, args.size, args.size, args.steps, guidance)
    cn_flops = controlnet_flops_per_image(model_dir, arch, args.size, args.size, args.steps, guidance)
    peak = matmul_peak_flops(engine.device, engine.dtype)
    none_ips, units_ips = images_per_s(0), images_per_s(n)
    result: dict[str, Any] = {
        "units": n, "images_per_s_without": none_ips, "images_per_s_with": units_ips,
        "time_ratio": none_ips / units_ips,
        "flops_ratio": (base_flops + n * cn_flops) / base_flops,
        "mfu_without": base_flops * none_ips / peak, "mfu_with": (base_flops + n * cn_flops) * units_ips / peak,
        "controlnet_flops_per_image": cn_flops, "flops_per_image": base_flops, "peak_flops": peak,
        "device": str(engine.device), "dtype": str(engine.dtype).removeprefix("torch."),
        "arch": args.arch, "size": args.size, "steps": args.steps, "requests": args.requests,
    }
    print(f"bench --controlnet {n}: arch={args.arch} size={args.size} steps={args.steps} requests={args.requests}")
    for k, v in result.items():
        print(f"  {k:28} {v:.4g}" if isinstance(v, float) else f"  {k:28} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
