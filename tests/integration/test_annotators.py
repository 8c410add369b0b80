"""The depth and pose preprocessors on the real engine: demo mode's tiny random-weight
Depth Anything, DPT-hybrid, ViTPose and RT-DETR (engine.auxiliary.tiny_annotators), loaded
like the hub models; refused naming `sdserve pull` when their weights are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sdserve.engine.auxiliary.openpose import COLORS
from sdserve.engine.auxiliary.specs import AuxSpec
from sdserve.engine.catalog import WeightSource
from sdserve.engine.params import ControlUnit, GenerationParams, InputImage
from sdserve.errors import BadInput
from tests.conftest import png_of
from tests.integration.test_controlnet_dialects import SD15, _a1111, _b64, _modelslab, _px


def scene(size: tuple[int, int] = (96, 64)) -> Image.Image:
    img = Image.new("RGB", size, (40, 60, 90))
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 8, 40, 50), fill=(230, 200, 120))
    draw.ellipse((55, 20, 85, 60), fill=(200, 30, 30))
    return img


@pytest.mark.parametrize(("name", "kind"), [("depth_anything_v2", "depth"), ("depth_midas", "depth-midas")])
def test_depth_map_size_range_and_near_is_white(engine, name: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    img = scene()
    out = engine.annotate(name, img)
    d = np.asarray(out)
    assert out.mode == "RGB" and out.size == img.size
    assert (d[..., 0] == d[..., 1]).all() and (d[..., 1] == d[..., 2]).all()  # grey in three channels
    assert d.min() == 0 and d.max() == 255  # normalised over the image
    # Orientation: where the model predicts the largest inverse depth (nearest) is white, the
    # smallest black, at the same (row, column): not flipped, not transposed.
    model = engine.aux._model(kind)
    pixels = model.processor(images=img, return_tensors="pt").pixel_values
    with torch.inference_mode():
        raw = model.model(pixel_values=pixels)
    pred = model.processor.post_process_depth_estimation(raw, target_sizes=[(img.height, img.width)])
    pred = pred[0]["predicted_depth"].float().numpy()
    near, far = np.unravel_index(pred.argmax(), pred.shape), np.unravel_index(pred.argmin(), pred.shape)
    assert d[near][0] == 255 and d[far][0] == 0
    assert np.array_equal(np.asarray(engine.annotate(name, img)), d)  # same image, same map


def test_pose_pipeline_draws_openpose_skeletons(engine) -> None:  # type: ignore[no-untyped-def]
    img = scene((80, 96))
    out = engine.annotate("openpose", img)
    px = np.asarray(out)
    assert out.mode == "RGB" and out.size == img.size
    colours = {tuple(c) for c in px.reshape(-1, 3).tolist()}
    # The tiny detector finds people and the tiny ViTPose's keypoints clear the threshold:
    # joints in OpenPose's colours, limbs at 60% of theirs, on black.
    assert (0, 0, 0) in colours and len(colours & set(COLORS)) >= 3
    assert colours & {tuple(int(c * 0.6) for c in col) for col in COLORS}
    assert np.array_equal(np.asarray(engine.annotate("openpose", img)), px)


def test_annotators_are_auxiliary_models_in_the_budget(client, engine) -> None:  # type: ignore[no-untyped-def]
    engine.annotate("depth_anything_v2", scene())
    ready = client.get("/readyz").json()
    assert ready["auxiliary"]["depth"] == "loaded" and ready["model_bytes"]["aux:depth"] > 0
    assert set(ready["auxiliary"]) >= {"depth", "depth-midas", "pose", "person-detector"}


def _missing(monkeypatch, engine, tmp_path, *kinds: str) -> None:  # type: ignore[no-untyped-def]
    for kind in kinds:  # a folder without weights: "not pulled"
        monkeypatch.setitem(engine.aux.specs, kind, AuxSpec(kind, WeightSource(path=tmp_path / kind)))


def test_absent_weights_are_a_4xx_naming_the_pull(client, engine, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _missing(monkeypatch, engine, tmp_path, "depth", "pose", "person-detector")
    unit = {"model": "tiny-sd15-canny", "image": _b64(png_of(scene((64, 64))))}
    r = client.post("/v1/jobs", json={"model": SD15, "prompt": "a house", "width": 64, "height": 64, "steps": 2,
                                      "control": [{**unit, "preprocessor": "depth_anything_v2"}]})
    assert r.status_code == 400 and "sdserve pull depth`" in r.text and "control[0].preprocessor" in r.text, r.text
    r = _a1111(client, [{**unit, "module": "openpose"}])
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("alwayson_scripts.controlnet.args[0].module")
    assert "sdserve pull pose" in detail and "sdserve pull person-detector" in detail
    d = client.post("/controlnet/detect", json={"controlnet_module": "depth_anything_v2",
                                                "controlnet_input_images": [unit["image"]]})
    assert d.status_code == 400 and d.json()["detail"].startswith("controlnet_module"), d.text
    assert "sdserve pull depth" in d.text
    modules = client.get("/controlnet/module_list").json()["module_list"]
    assert "depth_midas" in modules and "depth_anything_v2" not in modules and "openpose" not in modules
    with pytest.raises(BadInput) as e:
        engine.annotate("openpose", scene())
    assert "sdserve pull pose" in e.value.detail


def test_a1111_depth_unit_gives_an_image_and_its_map(client) -> None:  # type: ignore[no-untyped-def]
    hint = _b64(png_of(scene((64, 64))))
    modules = client.get("/controlnet/module_list").json()
    assert {"depth_anything_v2", "depth_midas", "openpose"} <= set(modules["module_list"])
    assert modules["module_detail"]["depth_midas"]["model_free"] is False
    plain = _a1111(client, [])
    r = _a1111(client, [{"image": hint, "model": "tiny-sd15-canny", "module": "depth", "processor_res": 64}])
    assert r.status_code == 200, r.text
    image, detected = r.json()["images"]
    assert np.abs(_px(image) - _px(plain.json()["images"][0])).mean() > 0.2
    d = client.post("/controlnet/detect", json={"controlnet_module": "depth_midas", "controlnet_input_images": [hint],
                                                "controlnet_processor_res": 64})
    assert d.status_code == 200, d.text
    assert np.array_equal(_px(d.json()["images"][0]), _px(detected))  # the map the unit ran on
    assert _px(detected).min() == 0 and _px(detected).max() == 255


def test_modelslab_and_native_pose_units(client) -> None:  # type: ignore[no-untyped-def]
    hint = _b64(png_of(scene((64, 64))))
    body = {"controlnet_model": "tiny-sd15-canny", "controlnet_type": "openpose", "auto_hint": "yes",
            "init_image": "data:image/png;base64," + hint}
    r = _modelslab(client, "/api/v5/controlnet", **body)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    r = client.post("/v1/jobs", json={"model": SD15, "prompt": "a dancer", "width": 64, "height": 64, "steps": 2,
                                      "control": [{"model": "tiny-sd15-canny", "image": hint,
                                                   "preprocessor": "openpose"}]})
    assert r.status_code in (200, 201, 202), r.text  # accepted: the pose models are here


def test_engine_pose_unit_changes_the_image(engine) -> None:  # type: ignore[no-untyped-def]
    hint = png_of(scene((64, 64)))

    def run(pre: str) -> np.ndarray:
        p = GenerationParams(model=SD15, prompt="a dancer", width=64, height=64, steps=2, seed=3,
                             control=(ControlUnit(model="tiny-sd15-canny", preprocessor=pre, processor_res=64),),
                             inputs=(InputImage(role="control", index=0, data=hint),))
        return np.asarray(engine.generate(p).images[0], dtype=np.int16)

    assert np.abs(run("openpose") - run("none")).mean() > 0.2  # the skeleton, not the photo, steered it
