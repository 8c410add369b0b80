"""``sdserve bench --controlnet N``: what N ControlNet units cost relative to none, on the
same engine, model, size and requests (interleaved rounds in one process), with the MFU of
each counting the ControlNet passes' FLOPs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bench_engine import bench_engine, interleaved_images_per_s, print_result

if TYPE_CHECKING:
    from ..engine.catalog import Arch

__all__ = ["cmd_bench_controlnet"]


def cmd_bench_controlnet(args: argparse.Namespace, model_dir: Path, arch: Arch, root: Path) -> int:
    import io

    from PIL import Image

    from ..engine.bench_controlnet import controlnet_flops_per_image, write_bench_controlnet
    from ..engine.benchmark import flops_per_image, matmul_peak_flops
    from ..engine.params import ControlUnit, GenerationParams, InputImage

    n, guidance = args.controlnet, 7.5
    name = write_bench_controlnet(model_dir, root / "ControlNet")
    engine = bench_engine(args, root, model_dir, arch, model_dirs={"controlnet": [root / "ControlNet"]})
    hint = io.BytesIO()
    Image.new("RGB", (args.size, args.size), (255, 255, 255)).save(hint, format="PNG")

    def request(units: int) -> Any:
        def make(i: int) -> GenerationParams:
            return GenerationParams(model="bench", prompt=f"a lighthouse {i}", width=args.size, height=args.size,
                                    steps=args.steps, guidance=guidance, seed=1000 + i,
                                    control=tuple(ControlUnit(model=name) for _ in range(units)),
                                    inputs=tuple(InputImage(role="control", index=u, data=hint.getvalue())
                                                 for u in range(units)))
        return make

    base_flops = flops_per_image(model_dir, arch, args.size, args.size, args.steps, guidance)
    cn_flops = controlnet_flops_per_image(model_dir, arch, args.size, args.size, args.steps, guidance)
    peak = matmul_peak_flops(engine.device, engine.dtype)
    ips = interleaved_images_per_s(engine, {"none": request(0), "units": request(n)}, args.requests, args.rounds)
    none_ips, units_ips = ips["none"], ips["units"]
    print_result(f"bench --controlnet {n}: arch={args.arch} size={args.size} steps={args.steps} "
                 f"requests={args.requests} rounds={args.rounds}", {
                     "units": n, "images_per_s_without": none_ips, "images_per_s_with": units_ips,
                     "time_ratio": none_ips / units_ips,
                     "flops_ratio": (base_flops + n * cn_flops) / base_flops,
                     "mfu_without": base_flops * none_ips / peak,
                     "mfu_with": (base_flops + n * cn_flops) * units_ips / peak,
                     "controlnet_flops_per_image": cn_flops, "flops_per_image": base_flops, "peak_flops": peak,
                     "device": str(engine.device), "dtype": str(engine.dtype).removeprefix("torch."),
                     "arch": args.arch, "size": args.size, "steps": args.steps, "requests": args.requests,
                 }, args.json)
    return 0
