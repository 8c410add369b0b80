"""The model catalog: ids, aliases, user entries, demo mode, and where weights come from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sdserve.api.dialects.workers_ai.models import CF_UUIDS
from sdserve.engine.catalog import BUILTIN_MODELS, DEMO_LAYOUTS, DEMO_SIZE, Catalog, WeightSource
from sdserve.errors import BadInput, UnknownModel

CF_IDS = [
    "@cf/runwayml/stable-diffusion-v1-5-img2img",
    "@cf/runwayml/stable-diffusion-v1-5-inpainting",
    "@cf/stabilityai/stable-diffusion-xl-base-1.0",
    "@cf/bytedance/stable-diffusion-xl-lightning",
    "@cf/lykon/dreamshaper-8-lcm",
]


REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"  # no Workers AI model: its hub id


def test_builtin_catalog_has_the_five_workers_ai_models_with_their_uuids() -> None:
    cat = Catalog.builtin()
    assert [m.id for m in cat] == [*CF_IDS, REFINER]
    assert all(len(CF_UUIDS[m.id]) == 36 for m in cat if m.id != REFINER)  # the Workers AI dialect's ids for them
    assert {m.demo_layout for m in cat} == set(DEMO_LAYOUTS)


def test_the_sdxl_refiner_is_an_img2img_only_sdxl_model() -> None:
    spec = Catalog.builtin().get("sdxl-refiner")
    assert (spec.id, spec.arch, spec.tasks, spec.refiner) == (REFINER, "sdxl", ("img2img",), True)
    assert spec.source.repo == REFINER and spec.demo_layout == "sdxl-refiner"
    assert not any(m.refiner for m in Catalog.builtin() if m.id != REFINER)


@pytest.mark.parametrize("model_id", CF_IDS)
def test_every_model_answers_to_its_slug_without_the_cf_prefix(model_id: str) -> None:
    # The aigateway seed names models this way: "runwayml/stable-diffusion-v1-5-img2img".
    cat = Catalog.builtin()
    slug = model_id.removeprefix("@cf/")
    assert cat.get(slug).id == model_id and cat.get(model_id).slug == slug


@pytest.mark.parametrize(("alias", "model_id"), [
    ("sd15", CF_IDS[0]),
    ("runwayml/stable-diffusion-v1-5", CF_IDS[0]),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", CF_IDS[0]),
    ("sd15-inpainting", CF_IDS[1]),
    ("sdxl", CF_IDS[2]),
    ("stabilityai/stable-diffusion-xl-base-1.0", CF_IDS[2]),
    ("sdxl-lightning", CF_IDS[3]),
    ("dreamshaper-8-lcm", CF_IDS[4]),
])
def test_aliases_find_their_model(alias: str, model_id: str) -> None:
    cat = Catalog.builtin()
    assert alias in cat
    assert cat.get(alias).id == model_id
    assert cat.get(model_id).id == model_id


def test_unknown_model_names_what_exists() -> None:
    cat = Catalog.builtin()
    assert "@cf/nope" not in cat
    with pytest.raises(UnknownModel) as e:
        cat.get("@cf/nope")
    assert e.value.model == "@cf/nope"
    assert "@cf/nope" in e.value.message and CF_IDS[2] in e.value.message


def test_lookup_is_exact() -> None:
    # Ids are case-sensitive and not prefix-matched: a near miss is an error, not a guess.
    cat = Catalog.builtin()
    for near in ("SDXL", "sdxl ", "@cf/stabilityai/stable-diffusion-xl"):
        with pytest.raises(UnknownModel):
            cat.get(near)


def test_family_defaults() -> None:
    cat = Catalog.builtin()
    assert cat.get("sd15").defaults.width == 512 and cat.get("sdxl").defaults.width == 1024
    lightning = cat.get("sdxl-lightning")
    assert (lightning.defaults.steps, lightning.defaults.guidance, lightning.defaults.scheduler) == (4, 0.0, "euler_trailing")
    assert lightning.unet is not None and lightning.unet.filename == "sdxl_lightning_4step_unet.safetensors"
    assert lightning.source == cat.get("sdxl").source  # Lightning is a UNet on SDXL base
    lcm = cat.get("dreamshaper-8-lcm")
    assert lcm.defaults.scheduler == "lcm" and lcm.defaults.steps <= 8


def test_inpainting_model_does_only_inpaint() -> None:
    spec = Catalog.builtin().get("sd15-inpainting")
    assert spec.tasks == ("inpaint",)
    spec.check_task("inpaint")
    with pytest.raises(BadInput) as e:
        spec.check_task("txt2img")
    assert e.value.field == "image" and "inpaint" in e.value.message
    with pytest.raises(BadInput) as e:
        spec.check_task("img2img")
    assert e.value.field == "mask"


def test_with_models_adds_and_replaces_by_id() -> None:
    base = Catalog.builtin()
    mine = replace(BUILTIN_MODELS[0], id="my-model", aliases=("mine", "sd15"))
    over = replace(BUILTIN_MODELS[2], description="my own SDXL")
    cat = base.with_models([mine, over])
    assert cat.get("my-model") is mine and cat.get("mine") is mine
    assert cat.get("sd15") is mine  # a user's alias wins over a built-in one
    assert cat.get(CF_IDS[0]).id == CF_IDS[0]  # the built-in stays reachable by its id
    assert cat.get("sdxl").description == "my own SDXL"
    assert [m.id for m in cat].count(CF_IDS[2]) == 1
    assert len(list(cat)) == len(BUILTIN_MODELS) + 1
    assert "my-model" not in base  # the original is unchanged


def test_for_demo_points_every_model_at_its_tiny_layout(tmp_path: Path) -> None:
    demo = Catalog.builtin().for_demo(tmp_path)
    assert [m.id for m in demo] == [*CF_IDS, REFINER]  # same ids, same aliases
    assert demo.get("sd15").id == CF_IDS[0]
    for spec in demo:
        assert spec.source == WeightSource(path=tmp_path / spec.demo_layout / "base")
    lightning = demo.get("sdxl-lightning")
    assert lightning.unet == WeightSource(path=tmp_path / "sdxl-lightning" / "sdxl_lightning_4step_unet.safetensors")
    assert demo.get("sdxl").unet is None


def test_demo_models_keep_their_schedule_at_a_small_default_size(tmp_path: Path) -> None:
    real, demo = Catalog.builtin(), Catalog.builtin().for_demo(tmp_path)
    for r, d in zip(real, demo, strict=True):
        assert (d.defaults.width, d.defaults.height) == (DEMO_SIZE, DEMO_SIZE) == (256, 256)
        assert (d.defaults.steps, d.defaults.guidance, d.defaults.scheduler, d.defaults.strength) == \
            (r.defaults.steps, r.defaults.guidance, r.defaults.scheduler, r.defaults.strength)


@pytest.mark.parametrize(("text", "repo", "path"), [
    ("org/name", "org/name", None),
    ("/abs/model", None, Path("/abs/model")),
    ("./rel/model", None, Path("./rel/model")),
    ("model.safetensors", None, Path("model.safetensors")),
    ("some/dir/file.ckpt", None, Path("some/dir/file.ckpt")),
])
def test_weight_source_parse(text: str, repo: str | None, path: Path | None) -> None:
    src = WeightSource.parse(text)
    assert (src.repo, src.path) == (repo, path)


def test_weight_source_parse_rejects_what_is_neither_path_nor_repo() -> None:
    with pytest.raises(BadInput) as e:
        WeightSource.parse("a/b/c")
    assert e.value.field == "source" and "org/name" in e.value.message


def test_weight_source_kinds(tmp_path: Path) -> None:
    assert WeightSource(path=tmp_path / "x.safetensors").is_single_file
    assert WeightSource(path=tmp_path / "x.ckpt").is_single_file
    assert not WeightSource(path=tmp_path / "folder").is_single_file
    assert not WeightSource(repo="org/name").is_single_file
    assert WeightSource(repo="org/name", filename="unet.safetensors").describe() == "org/name/unet.safetensors"
    with pytest.raises(ValueError):
        WeightSource()
    with pytest.raises(ValueError):
        WeightSource(repo="org/name", path=tmp_path)
