"""ComfyUI graphs: validation in ComfyUI's error shapes, and compilation into sdserve jobs
(no engine: the jobs' GenerationParams are checked field by field)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdserve.api.dialects.comfyui.compile import CompileEnv, GraphError, compile_prompt, node_errors_for, object_info
from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.catalog import Catalog
from sdserve.errors import BadInput
from tests.conftest import png_of

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


UPLOADS = {
    ("photo.png", None, "input"): png_of(Image.new("RGB", (100, 60), (200, 40, 40))),
    ("cut.png", "masks", "input"): png_of(Image.new("RGBA", (64, 64), (0, 0, 0, 255))),
}


def _has_field(name: str) -> bool:
    from sdserve.engine.params import GenerationParams

    return name in GenerationParams.model_fields


def _load(name: str, sub: str | None, kind: str) -> bytes:
    try:
        return UPLOADS[(name, sub, kind)]
    except KeyError:
        raise FileNotFoundError(name) from None


@pytest.fixture
def env(tmp_path: Path) -> CompileEnv:
    return CompileEnv(Catalog.builtin(), AddonFolders(tmp_path), _load, lambda: ["photo.png", "masks/cut.png"])


def workflow(name: str = "default_sd15_api.json") -> dict:
    return json.loads((FIXTURES / name).read_text())


def refused(prompt: dict, env: CompileEnv) -> GraphError:
    with pytest.raises(GraphError) as e:
        compile_prompt(prompt, env)
    return e.value


# ---- the default workflow -------------------------------------------------------------

def test_default_sd15_workflow_compiles_to_one_txt2img_job(env):
    [job] = compile_prompt(workflow(), env)
    p = job.params
    assert (p.model, p.task, p.width, p.height, p.n) == (SD15, "txt2img", 512, 512, 1)
    assert (p.steps, p.guidance, p.strength, p.scheduler) == (20, 8.0, 1.0, "euler_linspace")
    assert p.prompt.startswith("beautiful scenery") and p.negative_prompt == "text, watermark"
    assert p.prompt_syntax == "comfyui"
    assert p.seed == 156680208700286 % 2**32  # 64-bit ComfyUI seeds fold onto the engine's 32 bits
    assert [(o.node_id, o.kind, o.filename_prefix) for o in job.outputs] == [("9", "output", "ComfyUI")]
    assert job.fields["steps"] == ("3", "steps") and job.fields["width"] == ("5", "width")


def test_save_and_preview_of_one_decode_share_one_job(env):
    wf = workflow()
    wf["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    [job] = compile_prompt(wf, env)
    assert [(o.node_id, o.kind) for o in job.outputs] == [("9", "output"), ("10", "temp")]
    assert job.outputs[1].filename_prefix.startswith("ComfyUI_temp_")


def test_batch_size_above_16_is_split_into_jobs_of_consecutive_seeds(env):
    wf = workflow()
    wf["5"]["inputs"]["batch_size"] = 20
    wf["3"]["inputs"]["seed"] = 100
    jobs = compile_prompt(wf, env)
    assert [(j.params.seed, j.params.n) for j in jobs] == [(100, 16), (116, 4)]


def test_sizes_off_the_8_grid_round_down_as_comfyui_latents_do(env):
    wf = workflow()
    wf["5"]["inputs"].update(width=517, height=300)
    [job] = compile_prompt(wf, env)
    assert (job.params.width, job.params.height) == (512, 296)


@pytest.mark.parametrize(("sampler", "scheduler", "engine"), [
    ("euler", "normal", "euler_linspace"), ("euler_ancestral", "normal", "euler_a_linspace"),
    ("dpmpp_2m", "karras", "dpmpp_2m_karras"), ("dpmpp_2m_sde_gpu", "karras", "dpmpp_2m_sde_karras"),
    ("ddim", "ddim_uniform", "euler_leading"), ("uni_pc_bh2", "simple", "unipc_trailing"),
    ("lcm", "sgm_uniform", "lcm"), ("heun", "exponential", "heun_exponential"),
])
def test_sampler_and_scheduler_map_onto_engine_names(env, sampler, scheduler, engine):
    wf = workflow()
    wf["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    assert compile_prompt(wf, env)[0].params.scheduler == engine


def test_checkpoint_by_catalog_alias(env):
    wf = workflow()
    wf["4"]["inputs"]["ckpt_name"] = "sd15"
    assert compile_prompt(wf, env)[0].params.model == SD15


# ---- validation errors, in ComfyUI's shapes ------------------------------------------------

def test_unknown_class_type_is_missing_node_type_naming_it(env):
    wf = workflow()
    wf["12"] = {"class_type": "FancyCustomNode", "inputs": {}, "_meta": {"title": "Fancy"}}
    e = refused(wf, env)
    assert e.error["type"] == "missing_node_type"
    assert e.error["message"] == "Node 'Fancy' not found. The custom node may not be installed."
    assert e.error["extra_info"] == {"node_id": "12", "class_type": "FancyCustomNode", "node_title": "Fancy"}
    assert e.node_errors["12"]["class_type"] == "FancyCustomNode"


def test_missing_class_type(env):
    wf = workflow()
    del wf["5"]["class_type"]
    e = refused(wf, env)
    assert e.error["type"] == "missing_node_type" and e.error["details"] == "Node ID '#5'"
    assert e.error["extra_info"]["class_type"] is None


def test_prompt_without_output_nodes(env):
    wf = workflow()
    del wf["9"]
    e = refused(wf, env)
    assert e.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                       "extra_info": {}}
    assert e.node_errors == {}


@pytest.mark.parametrize("prompt", [[], "text", {}, 3])
def test_prompt_that_is_not_an_object_of_nodes(env, prompt):
    assert refused(prompt, env).error["type"] == "invalid_prompt"


def _only_error(e: GraphError, node_id: str) -> dict:
    assert e.error["type"] == "prompt_outputs_failed_validation"
    assert e.error["message"] == "Prompt outputs failed validation"
    entry = e.node_errors[node_id]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["dependent_outputs"] == ["9"]
    [err] = entry["errors"]
    assert set(err) == {"type", "message", "details", "extra_info"}
    return err


def test_required_input_missing(env):
    wf = workflow()
    del wf["3"]["inputs"]["steps"]
    err = _only_error(refused(wf, env), "3")
    assert err == {"type": "required_input_missing", "message": "Required input is missing", "details": "steps",
                   "extra_info": {"input_name": "steps"}}


def test_value_below_min_and_above_max(env):
    wf = workflow()
    wf["3"]["inputs"]["steps"] = 0
    err = _only_error(refused(wf, env), "3")
    assert (err["type"], err["message"], err["details"]) == ("value_smaller_than_min", "Value 0 smaller than min of 1",
                                                             "steps")
    wf["3"]["inputs"]["steps"] = 20
    wf["3"]["inputs"]["denoise"] = 1.5
    assert _only_error(refused(wf, env), "3")["type"] == "value_bigger_than_max"


def test_value_that_does_not_convert(env):
    wf = workflow()
    wf["5"]["inputs"]["width"] = "wide"
    err = _only_error(refused(wf, env), "5")
    assert err["type"] == "invalid_input_type" and err["message"] == "Failed to convert an input value to a INT value"
    assert err["details"].startswith("width, wide, ")


def test_value_not_in_list(env):
    wf = workflow()
    wf["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    err = _only_error(refused(wf, env), "4")
    assert err["type"] == "value_not_in_list" and err["message"] == "Value not in list"
    assert err["details"].startswith("ckpt_name: 'nope.safetensors' not in [")
    assert "v1-5-pruned-emaonly.safetensors" in err["details"]


def test_comfyui_sampler_sdserve_cannot_run_is_refused_with_the_reason(env):
    wf = workflow()
    wf["3"]["inputs"]["sampler_name"] = "dpm_fast"
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "value_not_in_list" and "dpm_fast" in err["details"] and "diffusers has no" in err["details"]
    wf["3"]["inputs"].update(sampler_name="euler", scheduler="kl_optimal")
    assert "kl_optimal" in _only_error(refused(wf, env), "3")["details"]


def test_sampler_without_that_schedule_in_diffusers_names_what_it_takes(env):
    wf = workflow()
    wf["3"]["inputs"].update(sampler_name="euler_ancestral", scheduler="karras")
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "custom_validation_failed" and err["extra_info"]["input_name"] == "scheduler"
    assert "normal" in err["details"]


def test_link_to_a_missing_node(env):
    wf = workflow()
    wf["3"]["inputs"]["latent_image"] = ["55", 0]
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "bad_linked_input" and "'55' does not exist" in err["details"]


def test_link_to_a_missing_output_slot(env):
    wf = workflow()
    wf["3"]["inputs"]["latent_image"] = ["5", 3]
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "bad_linked_input" and "no output 3" in err["details"]


def test_link_of_the_wrong_type(env):
    wf = workflow()
    wf["3"]["inputs"]["latent_image"] = ["4", 2]  # the VAE
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "return_type_mismatch"
    assert err["details"] == "latent_image, received_type(VAE) mismatch input_type(LATENT)"
    assert err["extra_info"]["received_type"] == "VAE" and err["extra_info"]["linked_node"] == ["4", 2]


def test_link_input_given_a_plain_value_and_malformed_link(env):
    wf = workflow()
    wf["3"]["inputs"]["model"] = "v1-5-pruned-emaonly.safetensors"
    assert _only_error(refused(wf, env), "3")["type"] == "bad_linked_input"
    wf = workflow()
    wf["3"]["inputs"]["model"] = ["4", 0, 1]
    assert _only_error(refused(wf, env), "3")["type"] == "bad_linked_input"


def test_cycle_is_refused_not_looped(env):
    wf = workflow()
    wf["10"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                                                            "scale_by": 1.5}}
    wf["3"]["inputs"]["latent_image"] = ["10", 0]
    e = refused(wf, env)
    assert any(err["type"] == "dependency_cycle" for entry in e.node_errors.values() for err in entry["errors"])


def test_input_a_node_does_not_have_is_refused_not_dropped(env):
    wf = workflow()
    wf["3"]["inputs"]["eta"] = 0.5
    err = _only_error(refused(wf, env), "3")
    assert err["type"] == "input_not_supported" and "eta" in err["details"]


def test_upstream_errors_name_the_node_not_the_output(env):
    wf = workflow()
    wf["6"]["inputs"]["text"] = {"not": "text"}
    e = refused(wf, env)
    assert set(e.node_errors) == {"6"} and e.error["details"] == ""


def test_load_image_of_a_file_never_uploaded(env):
    wf = _img2img()
    wf["20"]["inputs"]["image"] = "never.png"
    e = refused(wf, env)
    [err] = e.node_errors["20"]["errors"]
    assert err["type"] == "custom_validation_failed" and "Invalid image file: never.png" in err["details"]


@pytest.mark.skipif(not _has_field("refiner"), reason="the engine's refiner field is not on this branch")
def test_sdxl_base_and_refiner_workflow_is_one_job_with_a_refiner(env):
    wf = workflow("default_sdxl_api.json")  # as ComfyUI exports it: sd_xl_refiner_1.0.safetensors
    [job] = compile_prompt(wf, env)
    p = job.params
    assert (p.steps, p.width, p.scheduler) == (25, 1024, "euler_linspace")
    assert (p.refiner.model, p.refiner.switch_at) == ("stabilityai/stable-diffusion-xl-refiner-1.0", 0.8)
    wf["11"]["inputs"]["start_at_step"] = 18
    assert refused(wf, env).node_errors["11"]["errors"][0]["extra_info"]["input_name"] == "start_at_step"


def test_sdxl_base_workflow_compiles(env):
    [job] = compile_prompt(workflow("sdxl_base_api.json"), env)
    assert job.params.model == "@cf/stabilityai/stable-diffusion-xl-base-1.0"
    assert (job.params.width, job.params.height) == (1024, 1024)


def test_engine_error_at_submit_lands_on_the_node_it_came_from(env):
    [job] = compile_prompt(workflow(), env)
    e = node_errors_for(BadInput("width", "width 4100 is not allowed"), job)
    assert e.node_errors["5"]["errors"][0]["extra_info"]["input_name"] == "width"
    assert e.node_errors["5"]["dependent_outputs"] == ["9"]


# ---- img2img and inpaint ----------------------------------------------------------------

def _img2img(denoise: float = 0.5) -> dict:
    wf = workflow()
    wf["20"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}}
    wf["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"].update(latent_image=["21", 0], denoise=denoise)
    del wf["5"]
    return wf


def test_img2img_denoise_runs_comfyuis_steps_of_a_longer_schedule(env):
    [job] = compile_prompt(_img2img(0.5), env)
    p = job.params
    assert p.task == "img2img" and p.init_image is not None
    # ComfyUI: 20 steps of an int(20 / 0.5) = 40-step schedule; diffusers runs int(40 * strength).
    assert p.steps == 40 and int(p.steps * p.strength) == 20
    # VAEEncode crops to the 8-px grid, centred: 100x60 -> 96x56.
    assert (p.width, p.height) == (96, 56)
    assert Image.open(io.BytesIO(p.init_image)).size == (96, 56)


@pytest.mark.parametrize("denoise", [0.75, 0.3, 0.33, 0.9])
def test_img2img_runs_exactly_the_steps_comfyui_runs(env, denoise):
    p = compile_prompt(_img2img(denoise), env)[0].params
    assert p.steps == int(20 / denoise) and int(p.steps * p.strength) == 20


def test_ksampler_advanced_start_step_is_img2img_on_the_same_schedule(env):
    wf = _img2img()
    node = wf["3"]
    inputs = node["inputs"]
    node["class_type"] = "KSamplerAdvanced"
    inputs["noise_seed"] = inputs.pop("seed")
    del inputs["denoise"]
    inputs.update(add_noise="enable", start_at_step=5, end_at_step=10000, return_with_leftover_noise="disable")
    p = compile_prompt(wf, env)[0].params
    assert p.steps == 20 and int(p.steps * p.strength) == 15


def test_partial_denoise_of_an_empty_latent_is_refused(env):
    wf = workflow()
    wf["3"]["inputs"]["denoise"] = 0.5
    err = _only_error(refused(wf, env), "3")
    assert err["extra_info"]["input_name"] == "denoise"


def test_vae_encode_for_inpaint_greys_the_masked_pixels_and_grows_the_mask(env):
    wf = workflow()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 30, 30))
    UPLOADS[("m.png", None, "input")] = png_of(mask)
    UPLOADS[("p64.png", None, "input")] = png_of(Image.new("RGB", (64, 64), (200, 40, 40)))
    wf["20"] = {"class_type": "LoadImage", "inputs": {"image": "p64.png"}}
    wf["22"] = {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "red"}}
    wf["21"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["20", 0], "vae": ["4", 2],
                                                                "mask": ["22", 0], "grow_mask_by": 6}}
    wf["3"]["inputs"]["latent_image"] = ["21", 0]
    p = compile_prompt(wf, env)[0].params
    assert p.task == "inpaint" and p.strength == 1.0
    init = np.asarray(Image.open(io.BytesIO(p.init_image)))
    assert tuple(init[25, 25]) == (128, 128, 128) and tuple(init[5, 5]) == (200, 40, 40)
    grown = np.asarray(Image.open(io.BytesIO(p.mask_image)))
    # ComfyUI convolves a 6x6 box with padding 3: rows/columns 20-29 grow to 18-32.
    assert grown[18, 18] == 255 and grown[17, 17] == 0 and grown[32, 32] == 255 and grown[33, 33] == 0


def test_set_latent_noise_mask_from_an_alpha_cut_is_inpaint_keeping_the_image(env):
    wf = _img2img(1.0)
    rgba = Image.new("RGBA", (100, 60), (10, 200, 10, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 50, 60))  # transparent half: ComfyUI's MASK is 1 - alpha
    UPLOADS[("alpha.png", None, "input")] = png_of(rgba)
    wf["20"]["inputs"]["image"] = "alpha.png"
    wf["23"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["21", 0], "mask": ["20", 1]}}
    wf["3"]["inputs"]["latent_image"] = ["23", 0]
    p = compile_prompt(wf, env)[0].params
    assert p.task == "inpaint"
    mask = np.asarray(Image.open(io.BytesIO(p.mask_image)))
    assert mask[10, 10] == 255 and mask[10, 80] == 0
    # ComfyUI's IMAGE drops alpha instead of compositing it.
    assert tuple(np.asarray(Image.open(io.BytesIO(p.init_image)))[10, 10]) == (0, 0, 0)


def test_image_scale_resizes_the_input_before_encoding(env):
    wf = _img2img()
    wf["24"] = {"class_type": "ImageScale", "inputs": {"image": ["20", 0], "upscale_method": "bilinear",
                                                       "width": 128, "height": 0, "crop": "disabled"}}
    wf["21"]["inputs"]["pixels"] = ["24", 0]
    p = compile_prompt(wf, env)[0].params
    assert (p.width, p.height) == (128, 72)  # 128 x round(60 * 128 / 100) = 77 -> on the grid, 72


def test_annotated_upload_names_reach_the_loader(env):
    wf = _img2img()
    wf["20"]["inputs"]["image"] = "masks/cut.png [input]"
    assert compile_prompt(wf, env)[0].params.task == "img2img"


# ---- object_info ---------------------------------------------------------------------------

def test_object_info_lists_exactly_the_nodes_sdserve_runs(env):
    info = object_info(env)
    assert "ControlNetApply" not in info and "KSampler" in info and "SaveImage" in info
    assert info["LoraLoaderModelOnly"]["input"]["required"]["strength_model"][0] == "FLOAT"
    ks = info["KSampler"]
    assert ks["input"]["required"]["seed"][0] == "INT"
    assert "dpm_fast" not in ks["input"]["required"]["sampler_name"][0]
    assert "euler" in ks["input"]["required"]["sampler_name"][0]
    assert "karras" in ks["input"]["required"]["scheduler"][0]
    assert ks["output"] == ["LATENT"] and ks["output_node"] is False
    assert info["SaveImage"]["output_node"] is True
    ckpts = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "v1-5-pruned-emaonly.safetensors" in ckpts
    assert info["LoadImage"]["input"]["required"]["image"] == [["masks/cut.png", "photo.png"], {"image_upload": True}]
    json.dumps(info)  # the route serves it as is


def test_every_listed_checkpoint_compiles(env):
    for name in object_info(env)["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]:
        wf = copy.deepcopy(workflow())
        wf["4"]["inputs"]["ckpt_name"] = name
        if "inpainting" in name:
            continue  # the inpainting model does inpaint only: prepare refuses txt2img there
        assert compile_prompt(wf, env)[0].params.model


# ---- add-on nodes: compiled once the engine has their field (the lead's merge) ------------

def _with_lora(tmp_path: Path, strength: float) -> dict:
    """The default workflow with a LoraLoader (node 10) between the checkpoint and its users."""
    (tmp_path / "Lora").mkdir(exist_ok=True)
    (tmp_path / "Lora" / "detail.safetensors").write_bytes(b"x")
    wf = workflow()
    wf["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                       "lora_name": "detail.safetensors", "strength_model": strength,
                                                       "strength_clip": strength}}
    wf["3"]["inputs"]["model"] = ["10", 0]
    for n in ("6", "7"):
        wf[n]["inputs"]["clip"] = ["10", 1]
    return wf


@pytest.mark.skipif(not _has_field("loras"), reason="the engine's loras field is not on this branch")
def test_lora_loader_becomes_the_jobs_loras(env, tmp_path):
    wf = _with_lora(tmp_path, 0.7)
    [job] = compile_prompt(wf, env)
    assert [(r.name, r.weight, r.text_encoder_weight) for r in job.params.loras] == [("detail", 0.7, None)]
    wf["10"]["inputs"]["strength_clip"] = 0.2  # the text encoders weighted apart
    [job] = compile_prompt(wf, env)
    assert [(r.name, r.weight, r.te_weight) for r in job.params.loras] == [("detail", 0.7, 0.2)]
    # LoraLoaderModelOnly: the UNet only; a second LoraLoader of the same file adds up (ComfyUI's patches).
    wf["11"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": "detail.safetensors",
                                                                "strength_model": 0.5}}
    wf["3"]["inputs"]["model"] = ["11", 0]
    [job] = compile_prompt(wf, env)
    assert [(r.weight, r.te_weight) for r in job.params.loras] == [(1.2, 0.2)]
    only = workflow()
    only["10"] = wf["11"] | {"inputs": {**wf["11"]["inputs"], "model": ["4", 0]}}
    only["3"]["inputs"]["model"] = ["10", 0]
    [job] = compile_prompt(only, env)
    assert [(r.name, r.weight, r.te_weight) for r in job.params.loras] == [("detail", 0.5, 0.0)]
    # Positive and negative encoded with CLIPs of other LoRAs: one job has one text encoder.
    wf["7"]["inputs"]["clip"] = ["4", 1]
    assert refused(wf, env).node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "negative"


@pytest.mark.skipif(not _has_field("vae"), reason="the engine's vae field is not on this branch")
def test_vae_loader_becomes_the_jobs_vae(env, tmp_path):
    (tmp_path / "VAE").mkdir()
    (tmp_path / "VAE" / "better.safetensors").write_bytes(b"x")
    wf = workflow()
    wf["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "better.safetensors"}}
    wf["8"]["inputs"]["vae"] = ["10", 0]
    assert compile_prompt(wf, env)[0].params.vae == "better"


@pytest.mark.skipif(not _has_field("clip_skip"), reason="the engine's clip_skip field is not on this branch")
def test_clip_set_last_layer_becomes_clip_skip(env):
    wf = workflow()
    wf["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    for n in ("6", "7"):
        wf[n]["inputs"]["clip"] = ["10", 0]
    assert compile_prompt(wf, env)[0].params.clip_skip == 2
    sdxl = workflow("sdxl_base_api.json")
    sdxl["10"] = wf["10"] | {"inputs": {"clip": ["4", 1], "stop_at_clip_layer": -3}}
    for n in ("6", "7"):
        sdxl[n]["inputs"]["clip"] = ["10", 0]
    assert compile_prompt(sdxl, env)[0].params.clip_skip == 2  # SDXL's usual layer is -2


def test_clip_set_last_layer_at_the_last_layer_is_the_default(env):
    wf = workflow()
    wf["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -1}}
    for n in ("6", "7"):
        wf[n]["inputs"]["clip"] = ["10", 0]
    [job] = compile_prompt(wf, env)
    assert getattr(job.params, "clip_skip", 1) == 1
    if not _has_field("clip_skip"):
        wf["10"]["inputs"]["stop_at_clip_layer"] = -2
        assert "clip skip" in refused(wf, env).node_errors["10"]["errors"][0]["details"]


def test_clip_set_last_layer_on_sdxl_counts_from_its_penultimate_layer(env):
    wf = workflow("sdxl_base_api.json")
    wf["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    for n in ("6", "7"):
        wf[n]["inputs"]["clip"] = ["10", 0]
    assert getattr(compile_prompt(wf, env)[0].params, "clip_skip", 1) == 1
    wf["10"]["inputs"]["stop_at_clip_layer"] = -1  # ComfyUI: SDXL's last layer, not its usual one
    assert "last layer" in refused(wf, env).node_errors["10"]["errors"][0]["details"]


def _hires_graph(denoise: float = 0.5) -> dict:
    wf = workflow()
    wf["5"]["inputs"].update(width=512, height=768)
    wf["10"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                                                            "scale_by": 1.37}}
    wf["11"] = {"class_type": "KSampler", "inputs": dict(wf["3"]["inputs"], latent_image=["10", 0], denoise=denoise,
                                                         steps=12, scheduler="karras", sampler_name="dpmpp_2m")}
    wf["8"]["inputs"]["samples"] = ["11", 0]
    return wf


@pytest.mark.skipif(not _has_field("hires"), reason="the engine's hires field is not on this branch")
def test_two_sampler_hires_graph_is_one_job_with_a_hires_pass(env):
    [job] = compile_prompt(_hires_graph(), env)
    p = job.params
    assert (p.width, p.height, p.steps, p.scheduler) == (512, 768, 20, "euler_linspace")
    h = p.hires
    # ComfyUI's latent is 64 x 96; x1.37 rounds to 88 x 132 latent cells.
    assert (h.upscaler, h.resize_x, h.resize_y) == ("Latent (nearest-exact)", 704, 1056)
    assert (h.steps, h.strength, h.scheduler) == (12, 0.5, "dpmpp_2m_karras")
    assert h.prompt is None and h.model is None
    wf = _hires_graph()
    wf["11"]["inputs"]["seed"] = 7
    assert refused(wf, env).node_errors["11"]["errors"][0]["extra_info"]["input_name"] == "seed"
    wf = _hires_graph()
    wf["10"]["inputs"]["upscale_method"] = "bislerp"
    assert "bislerp" in refused(wf, env).node_errors["10"]["errors"][0]["details"]


def test_two_sampler_graph_without_the_engines_hires_is_refused(env):
    if _has_field("hires"):
        pytest.skip("the engine has hires on this branch")
    e = refused(_hires_graph(), env)
    assert "hires" in e.node_errors["10"]["errors"][0]["details"]


# ---- upscale models and ControlNet --------------------------------------------------------

def _upscaler_file(tmp_path: Path, name: str = "4x-UltraSharp.pth") -> None:
    (tmp_path / "ESRGAN").mkdir(exist_ok=True)
    (tmp_path / "ESRGAN" / name).write_bytes(b"x")


def test_image_upscale_with_model_after_the_decode_is_the_jobs_upscale(env, tmp_path):
    _upscaler_file(tmp_path, "RealESRGAN_x2plus.pth")
    wf = workflow()
    wf["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x2plus.pth"}}
    wf["11"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]}}
    wf["9"]["inputs"]["images"] = ["11", 0]
    [job] = compile_prompt(wf, env)
    assert job.params.task == "txt2img" and job.params.width == 512
    assert (job.params.upscale.upscaler, job.params.upscale.scale) == ("RealESRGAN_x2plus", 2)
    assert job.fields["upscale.upscaler"] == ("10", "model_name")
    # A second SaveImage on the plain decode is its own job, without the upscale.
    wf["12"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "plain"}}
    jobs = compile_prompt(wf, env)
    assert [j.params.upscale is None for j in jobs] == [False, True]
    # Twice in a row is refused on the second node.
    wf["13"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["10", 0], "image": ["11", 0]}}
    wf["9"]["inputs"]["images"] = ["13", 0]
    assert refused(wf, env).node_errors["13"]["errors"][0]["extra_info"]["input_name"] == "image"


def test_image_upscale_with_model_of_a_loaded_image_is_an_upscale_job(env, tmp_path):
    _upscaler_file(tmp_path)
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
          "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-UltraSharp.pth"}},
          "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
          "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}}}
    [job] = compile_prompt(wf, env)
    assert job.params.task == "upscale" and job.params.upscale.scale == 4
    assert Image.open(io.BytesIO(job.params.input("init"))).size == (100, 60)
    wf["2"]["inputs"]["model_name"] = "missing.pth"
    assert refused(wf, env).node_errors["2"]["errors"][0]["type"] == "value_not_in_list"


def _controlnet(tmp_path: Path, wf: dict, strength: float = 0.8, negative: bool = True) -> dict:
    (tmp_path / "ControlNet").mkdir(exist_ok=True)
    (tmp_path / "ControlNet" / "canny.safetensors").write_bytes(b"x")
    wf["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}}
    wf["21"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    wf["22"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["21", 0],
        "strength": strength, "start_percent": 0.1, "end_percent": 0.9}}
    wf["3"]["inputs"]["positive"] = ["22", 0]
    if negative:
        wf["3"]["inputs"]["negative"] = ["22", 1]
    return wf


def test_controlnet_apply_advanced_becomes_a_control_unit_with_its_image(env, tmp_path):
    [job] = compile_prompt(_controlnet(tmp_path, workflow()), env)
    [unit] = job.params.control
    assert (unit.model, unit.weight, unit.guidance_start, unit.guidance_end, unit.preprocessor) == (
        "canny", 0.8, 0.1, 0.9, "none")
    assert Image.open(io.BytesIO(job.params.input("control", 0))).size == (100, 60)
    assert job.fields["control[0].image"] == ("21", "image")
    # Two units chained: indexes 0 and 1 in graph order.
    wf = _controlnet(tmp_path, workflow())
    wf["23"] = dict(wf["22"], inputs=dict(wf["22"]["inputs"], positive=["22", 0], negative=["22", 1], strength=0.5))
    wf["3"]["inputs"].update(positive=["23", 0], negative=["23", 1])
    job = compile_prompt(wf, env)[0]
    assert [u.weight for u in job.params.control] == [0.8, 0.5]
    assert job.params.input("control", 1) is not None


def test_controlnet_the_engine_cannot_apply_is_refused_naming_the_input(env, tmp_path):
    e = refused(_controlnet(tmp_path, workflow(), strength=3.0), env)
    assert e.node_errors["22"]["errors"][0]["extra_info"]["input_name"] == "strength"
    # Positive only (negative bypasses it): the engine guides both halves, so it is refused.
    e = refused(_controlnet(tmp_path, workflow(), negative=False), env)
    assert e.node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "negative"
    wf = _controlnet(tmp_path, workflow())
    wf["22"]["inputs"].update(start_percent=0.5, end_percent=0.5)
    assert refused(wf, env).node_errors["22"]["errors"][0]["extra_info"]["input_name"] == "end_percent"


def test_object_info_lists_upscale_and_controlnet_files(env, tmp_path):
    _upscaler_file(tmp_path)
    _controlnet(tmp_path, workflow())
    info = object_info(env)
    assert info["UpscaleModelLoader"]["input"]["required"]["model_name"][0] == ["4x-UltraSharp.pth"]
    assert info["ControlNetLoader"]["input"]["required"]["control_net_name"][0] == ["canny.safetensors"]
    assert "ImageUpscaleWithModel" in info and "ControlNetApplyAdvanced" in info


def test_lora_strength_past_the_engines_range_is_refused(env, tmp_path):
    wf = _with_lora(tmp_path, 20)
    assert refused(wf, env).node_errors["10"]["errors"][0]["extra_info"]["input_name"] == "strength_model"


def test_each_output_is_validated_on_its_own(env):
    """ComfyUI runs the valid outputs and reports the invalid ones; a refusal of the engine
    (unsupported_graph: ComfyUI would run it) still refuses the graph whole."""
    wf = workflow()
    wf["20"] = {"class_type": "PreviewImage", "inputs": {"images": ["99", 0]}}
    jobs = compile_prompt(wf, env)
    assert [o.node_id for j in jobs for o in j.outputs] == ["9"]
    assert jobs.node_errors["20"]["errors"][0]["type"] == "bad_linked_input"
    assert jobs.node_errors["20"]["dependent_outputs"] == ["20"]
    wf["20"]["inputs"]["images"] = ["4", 0]  # a MODEL where IMAGE belongs
    assert compile_prompt(wf, env).node_errors["20"]["errors"][0]["type"] == "return_type_mismatch"
    wf["20"] = {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "x"}}
    wf["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}}  # not sampled
    e = refused(wf, env)
    assert e.node_errors["21"]["errors"][0]["type"] == "unsupported_graph"
