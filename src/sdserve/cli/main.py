"""``sdserve`` command: serve, generate, models, pull, make-tiny."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings
from ..engine.auxiliary.specs import AUX_KINDS
from ..errors import SdserveError

__all__ = ["main"]

log = logging.getLogger("sdserve")


def _help(field: str) -> str:
    return Settings.model_fields[field].description or ""


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (settings and [[models]]).")
    p.add_argument("--data-dir", type=Path, help=_help("data_dir"))
    p.add_argument("--demo", action="store_true", default=None, help=_help("demo"))
    p.add_argument("--device", help=_help("device"))
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help=_help("dtype"))


def _load(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir, demo=args.demo, device=args.device,
                         dtype=args.dtype, **extra)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..api.app import DEMO_WARNING, build_app
    from sdserve.compose import build_service

    settings = _load(args, host=args.host, port=args.port, ray_address=args.ray)
    if settings.ray_address:
        return _serve_on_ray(settings)
    service = build_service(settings)
    if settings.demo:
        log.warning(DEMO_WARNING)
    if not settings.api_keys and not service.keys.any_active():
        log.warning("no API keys configured: the server is OPEN to anyone who can reach %s:%s",
                    settings.host, settings.port)
        if settings.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("binding a keyless server to %s exposes it beyond this machine; set api_keys", settings.host)
    app = build_app(settings, service)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _serve_on_ray(settings: Settings) -> int:
    try:
        from ..deploy.ray import check_settings, serve_on_ray
    except ImportError as e:
        raise ValueError(f"--ray needs Ray Serve ({e}); install it with: pip install 'sdserve[ray]'") from None
    check_settings(settings)  # before connecting: a wrong setting should not wait for a cluster
    serve_on_ray(settings)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..api.dialects.a1111.samplers import a1111_label
    from ..engine.params import GenerationParams, OutputFormat, input_images
    from ..service.outputs import encode_outputs
    from sdserve.compose import build_engine

    settings = _load(args)
    engine = build_engine(settings)
    formats: dict[str, OutputFormat] = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
    fmt = formats.get(args.output.suffix.lower(), "png")
    image = args.image.read_bytes() if args.image else None
    mask = args.mask.read_bytes() if args.mask else None
    params = GenerationParams(  # the task follows from the images (engine.prepare)
        model=args.model, prompt=args.prompt, negative_prompt=args.negative_prompt or "",
        width=args.width, height=args.height, steps=args.steps, guidance=args.guidance,
        strength=args.strength, seed=args.seed, n=args.n, scheduler=args.scheduler,
        inputs=input_images(init=image, mask=mask), output_format=fmt,
    )
    bar = tqdm(desc="denoising", unit="step", leave=True)

    def on_step(info: Any) -> None:
        bar.total = info.total
        bar.update(info.step - bar.n)

    result = engine.generate(params, on_step=on_step)
    bar.close()
    outputs = encode_outputs(result, a1111_label)
    for out in outputs:
        path = args.output if len(outputs) == 1 else args.output.with_stem(f"{args.output.stem}-{out.index}")
        path.write_bytes(out.data)
        print(f"{path}  seed={out.seed}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sdserve.compose import build_catalog

    settings = _load(args)
    catalog = build_catalog(settings)
    from ..engine.loading import is_available

    for spec in catalog:
        here = "demo" if settings.demo else ("downloaded" if is_available(spec) else "not downloaded")
        d = spec.defaults
        print(f"{spec.id}\n    source: {spec.source.describe()}" + (f" + unet {spec.unet.describe()}" if spec.unet else "")
              + f"\n    status: {here}\n    defaults: {d.width}x{d.height}, {d.steps} steps, guidance {d.guidance}, "
              f"{d.scheduler}\n    tasks: {', '.join(spec.tasks)}"
              + (f"\n    aliases: {', '.join(spec.aliases)}" if spec.aliases else ""))
    if args.schedulers:
        from ..api.dialects.a1111.samplers import a1111_labels
        from ..engine.schedulers import SCHEDULERS

        print("\nschedulers:")
        for e in SCHEDULERS:
            print(f"  {e.name:30} {', '.join(a1111_labels(e)) or '-':30} {e.source}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from sdserve.compose import build_catalog

    settings = _load(args)
    from ..engine.loading import pull

    if args.model in AUX_KINDS:  # safety-checker, enhancer, captioner, the ControlNet annotators
        from sdserve.compose import aux_sources

        from ..engine.auxiliary.specs import AuxSpec, aux_pull

        src = aux_sources(settings).get(args.model)
        if src is None:
            print(f"sdserve: {args.model} is turned off ({args.model.replace('-', '_')}_model is empty)",
                  file=sys.stderr)
            return 2
        print(aux_pull(AuxSpec(args.model, src)))
        return 0
    from ..engine.faces.pull import FACE_PULLS

    if args.model in FACE_PULLS:  # gfpgan: the restorer and face detector, into models/GFPGAN
        from sdserve.compose import build_addons

        from ..engine.faces.pull import pull_faces

        try:
            print(*pull_faces(args.model, build_addons(settings)), sep="\n")
        except RuntimeError as e:
            print(f"sdserve: {e}", file=sys.stderr)
            return 1
        return 0
    spec = build_catalog(settings).get(args.model)
    for where in pull(spec):
        print(where)
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from ..engine.catalog import DEMO_LAYOUTS
    from ..engine.auxiliary.specs import demo_aux_dir
    from ..engine.auxiliary.tiny import write_tiny_aux
    from ..engine.tiny import write_all_tiny
    from ..engine.tiny_lora import write_tiny_addons
    from ..engine.tiny_vae import write_tiny_vaes

    layouts = tuple(args.layout) if args.layout else DEMO_LAYOUTS
    for path in write_all_tiny(args.dir, layouts, force=True, demo=args.demo):
        print(path)
    from ..engine.tiny_upscalers import write_tiny_upscalers  # ESRGAN/Real-ESRGAN in their file formats

    for path in write_tiny_upscalers(Path(args.dir) / "ESRGAN", overwrite=True):
        print(path)
    from ..engine.faces.tiny import write_tiny_faces  # GFPGAN, CodeFormer, RetinaFace: file formats

    print(*write_tiny_faces(Path(args.dir) / "GFPGAN", overwrite=True), sep="\n")
    from ..engine.tiny_addons import write_tiny_controlnets, write_tiny_ip_adapters  # add-ons for those models

    for path in [*write_tiny_controlnets(args.dir, demo=args.demo), *write_tiny_ip_adapters(args.dir, demo=args.demo)]:
        print(path)
    for path in write_tiny_addons(args.dir, args.dir / "Lora", args.dir / "embeddings"):  # models_dir=DIR finds them
        print(path)
    print(*write_tiny_vaes(args.dir / "VAE", args.dir), sep="\n")  # a tiny add-on VAE, both forms
    for path in write_tiny_aux(demo_aux_dir(args.dir), force=True):  # checker, enhancer, captioner, annotators
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdserve", description="Self-hosted Stable Diffusion server.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="Run the HTTP server.")
    _settings_args(p)
    p.add_argument("--host", help=_help("host"))
    p.add_argument("--port", type=int, help=_help("port"))
    p.add_argument("--ray", metavar="ADDRESS", help=_help("ray_address"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("generate", help="Generate an image from the command line.")
    _settings_args(p)
    p.add_argument("prompt")
    p.add_argument("--model", default="@cf/runwayml/stable-diffusion-v1-5-img2img", help="Model id or alias.")
    p.add_argument("--negative-prompt")
    p.add_argument("--image", type=Path, help="Input image for img2img / inpaint.")
    p.add_argument("--mask", type=Path, help="Mask for inpaint (white = repaint).")
    p.add_argument("--strength", type=float)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--scheduler")
    p.add_argument("-n", type=int, default=1, help="Number of images (seed, seed+1, ...).")
    p.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="Output file (.png, .jpg, .webp).")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("models", help="List the catalog and what is downloaded.")
    _settings_args(p)
    p.add_argument("--schedulers", action="store_true", help="Also list the scheduler registry.")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("pull", help="Download a model's weights into the Hugging Face cache (a catalog id, "
                                    "or safety-checker, enhancer, captioner, the ControlNet annotators depth, "
                                    "depth-midas, pose, person-detector, "
                                    "or gfpgan: GFPGAN v1.4 and its face detector into models/GFPGAN).")
    _settings_args(p)
    p.add_argument("model")
    p.set_defaults(func=cmd_pull)

    from .bench import add_bench_parser

    add_bench_parser(sub)

    from .keys import add_key_commands

    add_key_commands(sub)

    p = sub.add_parser("make-tiny", help="Write tiny random-weight models in the real on-disk layouts.")
    p.add_argument("dir", type=Path)
    p.add_argument("--layout", action="append", help="Only this layout (repeatable).")
    p.add_argument("--demo", action="store_true",
                   help="The demo architecture (what serve --demo writes: fast at 1024x1024) instead of the "
                        "test suite's (whose golden images are pinned).")
    p.set_defaults(func=cmd_make_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SdserveError as e:
        print(f"sdserve: {e.message}", file=sys.stderr)
        return 2
    except ValueError as e:  # settings errors explain themselves
        print(f"sdserve: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
