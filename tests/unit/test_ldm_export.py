"""ldm_export writes files that diffusers' own single-file loader reads back bit for bit.

The tiny models are exported to one original-layout checkpoint each, loaded again with
``from_single_file`` (configs from the local diffusers folder, network blocked), and every
weight is compared with the folder it came from.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdserve.engine.ldm_export import write_single_file
from sdserve.engine.tiny import write_tiny

LAYOUTS = {  # layout -> (arch, pipeline class name, components to compare)
    "sd15": ("sd15", "StableDiffusionPipeline", ("unet", "vae", "text_encoder")),
    "sd15-inpaint": ("sd15", "StableDiffusionInpaintPipeline", ("unet", "vae", "text_encoder")),
    "sdxl": ("sdxl", "StableDiffusionXLPipeline", ("unet", "vae", "text_encoder", "text_encoder_2")),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each tiny layout written once and exported once: layout -> (diffusers base dir, file)."""
    root = tmp_path_factory.mktemp("ldm_export")
    out = {}
    for layout, (arch, _, _) in LAYOUTS.items():
        base = write_tiny(root, layout) / "base"
        out[layout] = (base, write_single_file(base, root / f"{layout}.safetensors", arch))
    return out


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The env var only steers huggingface_hub if read before import; blocking sockets makes
    # any attempt to reach the hub fail loudly instead of depending on import order.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during an offline single-file load")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    name = "model.safetensors" if (folder / "model.safetensors").is_file() else "diffusion_pytorch_model.safetensors"
    return load_file(str(folder / name))


def _assert_same(component: str, loaded: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    assert set(loaded) == set(original), f"{component}: key sets differ"
    for key, ref in original.items():
        got = loaded[key]
        assert not got.is_meta, f"{component}.{key} was never loaded"
        assert torch.equal(got, ref), f"{component}.{key} differs"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_single_file_round_trips_through_diffusers(layout: str, exported, offline) -> None:  # type: ignore[no-untyped-def]
    import diffusers

    base, file = exported[layout]
    _, pipeline_name, components = LAYOUTS[layout]
    if layout.startswith("sdxl"):
        widths = {json.loads((base / n / "config.json").read_text())["hidden_size"] for n in ("text_encoder", "text_encoder_2")}
        # diffusers tells SDXL's two encoders apart by width; the tiny ones differ as real ones do.
        assert len(widths) == 2

    pipe = getattr(diffusers, pipeline_name).from_single_file(str(file), config=str(base))

    for name in components:
        _assert_same(name, getattr(pipe, name).state_dict(), _weights(base / name))
    assert pipe.unet.config.in_channels == (9 if layout == "sd15-inpaint" else 4)


def test_file_is_in_original_layout(exported) -> None:  # type: ignore[no-untyped-def]
    _, sd15 = exported["sd15"]
    _, sdxl = exported["sdxl"]
    with safe_open(str(sd15), "pt") as f:
        keys = set(f.keys())
        assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "cond_stage_model"}
        assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
        assert "model.diffusion_model.output_blocks.1.1.conv.weight" in keys  # level without attention
        # LDM's VAE attention is 1x1 convs: the file keeps that shape, as the originals do.
        assert f.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape() == [16, 16, 1, 1]
    with safe_open(str(sdxl), "pt") as f:
        keys = set(f.keys())
        assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model", "conditioner"}
        assert "model.diffusion_model.label_emb.0.0.weight" in keys
        # An upsampler follows the attention when its level has one (slot 2), as in the real
        # files; diffusers would also accept slot 1, so only this check pins it down.
        assert "model.diffusion_model.output_blocks.1.2.conv.weight" in keys
        assert "conditioner.embedders.1.model.text_projection" in keys
        assert f.get_slice("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight").get_shape() == [144, 48]


def test_unknown_weight_is_an_error_not_a_drop(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, _ = exported["sd15"]
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    unet_file = copy / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(unet_file))
    sd["some_adapter.weight"] = torch.zeros(1)
    save_file(sd, str(unet_file))
    with pytest.raises(ValueError, match="some_adapter"):
        write_single_file(copy, tmp_path / "out.safetensors", "sd15")
    with pytest.raises(ValueError, match="arch"):
        write_single_file(base, tmp_path / "out.safetensors", "sd3")  # type: ignore[arg-type]
