"""The playground's add-on controls in a real browser against the demo models: sampler and
schedule type, VAE, clip skip, tiling, hires fix, ControlNet (with its preprocessor preview),
IP-Adapter and the SDXL refiner (a result's upscale: test_playground_upscale.py). Each
control must change the request the page sends, the job must succeed with it, and "copy as
curl" must carry it (run by bash: the same pixels, or a note naming what the dialect lacks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from sdserve.engine.schedulers import CLASS_SCHEDULES, base_names, get_scheduler
from tests.browser.chrome import browser_errors, chrome, screenshot, wait_for
from tests.browser.test_playground_browser import (cards, check_curls, generate, open_page, server,  # noqa: F401
                                                   set_value)


def open_section(d: WebDriver, section_id: str) -> WebElement:
    section = d.find_element(By.ID, section_id)
    if not section.get_attribute("open"):
        section.find_element(By.CSS_SELECTOR, "summary").click()
    return section


def check(d: WebDriver, element_id: str) -> None:
    box = d.find_element(By.ID, element_id)
    if not box.is_selected():
        box.click()


def last_post(d: WebDriver) -> dict:  # type: ignore[type-arg]
    return d.execute_script("return window.__posts[window.__posts.length - 1]")  # type: ignore[no-any-return]


def job_of(base: str, card: WebElement) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{base}/v1/jobs/{card.get_attribute('data-job')}").json()  # type: ignore[no-any-return]


@pytest.fixture()
def pictures(tmp_path: Path) -> dict[str, Path]:
    """A control image with edges for canny, and an image prompt."""
    control = tmp_path / "control.png"
    img = Image.new("RGB", (320, 320), "white")
    ImageDraw.Draw(img).rectangle((80, 80, 240, 240), outline="black", width=12)
    img.save(control)
    prompt = tmp_path / "prompt.jpg"
    Image.new("RGB", (200, 120), (40, 160, 90)).save(prompt)
    return {"control": control, "prompt": prompt}


def test_sampler_and_schedule_lists_are_the_servers(server: str) -> None:  # noqa: F811
    with chrome() as d:
        open_page(d, server)
        sampler = Select(d.find_element(By.ID, "sampler"))
        assert [o.get_attribute("value") for o in sampler.options] == base_names()
        # The model's default scheduler is preselected in the two pickers.
        default = httpx.get(f"{server}/v1/catalog").json()["data"][0]["defaults"]["scheduler"]
        picked = d.execute_script("const s = document.getElementById('schedule').value;"
                                  "return document.getElementById('sampler').value + (s ? '_' + s : '')")
        assert picked == get_scheduler(default).name
        sampler.select_by_value("dpmpp_2m")
        schedule = Select(d.find_element(By.ID, "schedule"))
        offered = [o.get_attribute("value") for o in schedule.options]
        assert offered == ["", *CLASS_SCHEDULES["DPMSolverMultistepScheduler"]]
        schedule.select_by_value("karras")
        card = generate(d, "a sampler", steps=2, seed=1)
        assert last_post(d)["scheduler"] == "dpmpp_2m_karras"
        assert job_of(server, card)["params"]["scheduler"] == "dpmpp_2m_karras"
        sampler.select_by_value("lcm")  # LCM takes no schedule: only the model's own is offered
        assert [o.get_attribute("value") for o in schedule.options] == [""]
        assert browser_errors(d) == []


def test_every_addon_control_reaches_the_request(server: str, pictures: dict[str, Path],  # noqa: F811
                                                 tmp_path: Path) -> None:
    if missing := [t for t in ("curl", "jq", "base64", "od", "awk", "tr") if shutil.which(t) is None]:
        pytest.fail(f"the curl commands need {', '.join(missing)}", pytrace=False)
    with chrome() as d:
        open_page(d, server)
        # Collapsed by default; a closed section says what it adds.
        assert not d.find_element(By.ID, "vae").is_displayed()
        open_section(d, "sec-model")
        Select(d.find_element(By.ID, "vae")).select_by_value("tiny-vae")
        set_value(d, "clip-skip", 2)
        check(d, "tiling")
        assert d.find_element(By.ID, "sec-model-on").text == "VAE, clip skip, tiling"

        open_section(d, "sec-hires")
        check(d, "hires-on")
        set_value(d, "hires-scale", 1.5)
        hires_upscalers = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "hires-upscaler")).options]
        assert "Latent (bicubic)" in hires_upscalers and "tiny-ESRGAN-4x" in hires_upscalers
        Select(d.find_element(By.ID, "hires-upscaler")).select_by_value("Latent (bicubic)")
        set_value(d, "hires-steps", 2)

        # SD 1.5 model: no refiner, and only the SD 1.5 ControlNets.
        assert not d.find_element(By.ID, "sec-refiner").is_displayed()
        open_section(d, "sec-control")
        d.find_element(By.ID, "control-add").click()
        unit = d.find_element(By.CSS_SELECTOR, "#control-units > li")
        models = [o.get_attribute("value") for o in Select(unit.find_element(By.CSS_SELECTOR, ".unit-model")).options]
        assert models and all("sd15" in str(m) for m in models), models
        unit.find_element(By.CSS_SELECTOR, ".unit-file").send_keys(str(pictures["control"]))
        wait_for(d, lambda d: unit.find_element(By.CSS_SELECTOR, ".unit-thumb").is_displayed(), 10, "the control image")
        Select(unit.find_element(By.CSS_SELECTOR, ".unit-pre")).select_by_value("canny")
        unit.find_element(By.CSS_SELECTOR, ".unit-detect").click()
        preview = unit.find_element(By.CSS_SELECTOR, ".unit-preview")
        wait_for(d, lambda d: preview.is_displayed() and d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", preview), 30, "the canny preview")
        Select(unit.find_element(By.CSS_SELECTOR, ".unit-model")).select_by_value("tiny-sd15-canny")
        for cls, value in ((".unit-weight", 0.8), (".unit-start", 0.1), (".unit-end", 0.9)):
            field = unit.find_element(By.CSS_SELECTOR, cls)
            field.clear()
            field.send_keys(str(value))

        open_section(d, "sec-ipadapter")
        check(d, "ipa-on")
        d.find_element(By.ID, "ipa-file").send_keys(str(pictures["prompt"]))
        wait_for(d, lambda d: d.find_element(By.ID, "ipa-thumb").is_displayed(), 10, "the image prompt")
        ipa = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "ipa-model")).options]
        assert ipa[0] == "tiny-ip-adapter_sd15", ipa  # the SD 1.5 one first for an SD 1.5 model
        d.execute_script("const r = document.getElementById('ipa-scale'); r.value = '0.5';"
                         "r.dispatchEvent(new Event('input', {bubbles: true}))")

        # The cost line checks the whole request before it is sent.
        wait_for(d, lambda d: d.find_element(By.ID, "cost").text.startswith("Cost: "), 30, "the cost")
        card = generate(d, "a framed square", steps=2, seed=21)
        screenshot(d, "addons")
        sent = last_post(d)
        assert sent["vae"] == "tiny-vae" and sent["clip_skip"] == 2 and sent["tiling"] is True
        assert sent["hires"] == {"upscaler": "Latent (bicubic)", "strength": 0.7, "scale": 1.5, "steps": 2}
        [u] = sent["control"]
        assert (u["model"], u["preprocessor"], u["weight"], u["guidance_start"], u["guidance_end"], u["control_mode"]) \
            == ("tiny-sd15-canny", "canny", 0.8, 0.1, 0.9, "balanced")
        assert u["image"].startswith("data:image/png;base64,")
        assert sent["ip_adapter"]["model"] == "tiny-ip-adapter_sd15" and sent["ip_adapter"]["scale"] == 0.5
        job = job_of(server, card)
        assert job["status"] == "succeeded"
        assert job["params"]["hires"]["upscaler"] == "Latent (bicubic)" and job["params"]["vae"] == "tiny-vae"
        img = card.find_element(By.CSS_SELECTOR, ".card-img")
        assert d.execute_script("return arguments[0].naturalWidth", img) == 384  # 256 x 1.5
        params = card.find_element(By.CSS_SELECTOR, ".card-params").text
        assert "384×384" in params and "tiny-sd15-canny" in params and "tiny-ip-adapter_sd15" in params

        # sdserve's own API and A1111 (with its ControlNet extension) carry every one of them.
        assert {"native", "a1111"} <= set(check_curls(d, card, server, tmp_path / "addons"))
        # The dialects without these fields say which they lack.
        Select(card.find_element(By.CSS_SELECTOR, ".curl-dialect")).select_by_value("workers_ai")
        note = card.find_element(By.CSS_SELECTOR, ".curl-notes").text
        assert "VAE, clip skip, seamless tiling, hires fix, ControlNet, IP-Adapter" in note, note

        # "Reuse these settings" brings the add-ons back.
        d.find_element(By.ID, "control-units").find_element(By.CSS_SELECTOR, ".unit-remove").click()
        card.find_element(By.CSS_SELECTOR, ".card-reuse").click()
        assert len(d.find_elements(By.CSS_SELECTOR, "#control-units > li")) == 1
        assert d.find_element(By.ID, "hires-on").is_selected()
        assert d.find_element(By.ID, "sec-model-on").text == "VAE, clip skip, tiling"
        assert browser_errors(d) == []


def test_sdxl_refiner_and_its_controlnets(server: str, tmp_path: Path) -> None:  # noqa: F811
    with chrome() as d:
        open_page(d, server)
        Select(d.find_element(By.ID, "model")).select_by_value("@cf/stabilityai/stable-diffusion-xl-base-1.0")
        refiner = d.find_element(By.ID, "sec-refiner")
        assert refiner.is_displayed()
        open_section(d, "sec-control")
        d.find_element(By.ID, "control-add").click()
        models = [o.get_attribute("value") for o in
                  Select(d.find_element(By.CSS_SELECTOR, "#control-units .unit-model")).options]
        assert models and all("sdxl" in str(m) for m in models), models
        d.find_element(By.CSS_SELECTOR, "#control-units .unit-remove").click()

        open_section(d, "sec-refiner")
        check(d, "refiner-on")
        Select(d.find_element(By.ID, "refiner-model")).select_by_value("@cf/bytedance/stable-diffusion-xl-lightning")
        d.execute_script("const r = document.getElementById('refiner-switch'); r.value = '0.5';"
                         "r.dispatchEvent(new Event('input', {bubbles: true}))")
        set_value(d, "width", 256)
        set_value(d, "height", 256)
        card = generate(d, "a refined castle", steps=4, seed=8)
        assert last_post(d)["refiner"] == {"model": "@cf/bytedance/stable-diffusion-xl-lightning", "switch_at": 0.5}
        job = job_of(server, card)
        assert job["status"] == "succeeded" and job["params"]["refiner"]["switch_at"] == 0.5
        assert {"native", "a1111"} <= set(check_curls(d, card, server, tmp_path / "refiner"))

        # Back to an SD 1.5 model: the refiner is not offered and not sent. Hires fix to a target
        # width (the height follows the aspect) through an image upscaler.
        Select(d.find_element(By.ID, "model")).select_by_value("@cf/runwayml/stable-diffusion-v1-5-img2img")
        assert not refiner.is_displayed()
        open_section(d, "sec-hires")
        check(d, "hires-on")
        d.find_element(By.CSS_SELECTOR, 'input[name="hires-by"][value="size"]').click()
        set_value(d, "hires-x", 320)
        Select(d.find_element(By.ID, "hires-upscaler")).select_by_value("tiny-ESRGAN-4x")
        card = generate(d, "no refiner", steps=2, seed=9)
        sent = last_post(d)
        assert "refiner" not in sent
        assert sent["hires"] == {"upscaler": "tiny-ESRGAN-4x", "strength": 0.7, "resize_x": 320, "resize_y": 0}
        img = card.find_element(By.CSS_SELECTOR, ".card-img")
        assert d.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img) == [320, 320]
        assert "320×320" in card.find_element(By.CSS_SELECTOR, ".card-params").text
        assert browser_errors(d) == []
