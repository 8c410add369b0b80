"""The playground in a real browser (Debian's headless Chromium) against a real sdserve on a
loopback socket with the tiny demo models: generate and see the image and the progress events,
paint a mask with the mouse and inpaint, cancel, the key field, and "copy as curl" commands
that, run by bash, give the same pixels in every dialect. Screenshots go to test-artifacts/."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.browser.chrome import browser_errors, chrome, screenshot, wait_for
from tests.conftest import make_app
from tests.integration.live_server import live_server

# Keeps every request body the page POSTs to /v1/jobs, to check what it sent (the mask's polarity).
RECORD_POSTS = """
window.__posts = [];
const original = window.fetch;
window.fetch = function (url, init) {
  if (init && init.method === "POST" && String(url).endsWith("/v1/jobs")) window.__posts.push(JSON.parse(init.body));
  return original.apply(this, arguments);
};
"""
DIALECTS = ["native", "workers_ai", "openai", "a1111", "modelslab", "comfyui"]


@pytest.fixture(scope="module")
def server(settings, engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    # A preview with every step, so a 2-4 step job shows some; ModelsLab answers only when done.
    with live_server(make_app(settings, engine, preview_every=1, modelslab_wait_s=60)) as base:
        yield base


def cards(d: WebDriver) -> list[WebElement]:
    return d.find_elements(By.CSS_SELECTOR, "#gallery > li")


def set_value(d: WebDriver, element_id: str, value: object) -> None:
    el = d.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(str(value))


def open_page(d: WebDriver, base: str) -> None:
    d.get(base + "/")
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), 30, "the model list")
    d.execute_script(RECORD_POSTS)


def generate(d: WebDriver, prompt: str, steps: int, seed: int | None = None) -> WebElement:
    """Fills the form, presses Generate, waits for the new result card and its image."""
    before = len(cards(d))
    set_value(d, "prompt", prompt)
    set_value(d, "steps", steps)
    if seed is not None:
        set_value(d, "seed", seed)
    d.find_element(By.ID, "generate").click()
    wait_for(d, lambda d: len(cards(d)) == before + 1, 90, f"the result of {prompt!r}")
    card = cards(d)[0]
    img = card.find_element(By.CSS_SELECTOR, ".card-img")
    wait_for(d, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img),
             30, "the result image to load")
    return card


def progress_counts(d: WebDriver) -> dict[str, int]:
    p = d.find_element(By.ID, "progress")
    return {k: int(p.get_attribute(f"data-{k}") or 0) for k in ("events", "steps", "previews")}


def decode_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def test_generate_then_inpaint_with_a_painted_mask(server: str) -> None:
    with chrome() as d:
        open_page(d, server)
        assert "DEMO MODE" in d.find_element(By.ID, "demo-banner").text
        assert not d.find_element(By.ID, "key-form").is_displayed()  # open server: no key field

        card = generate(d, "a lighthouse at dawn", steps=4, seed=42)
        counts = progress_counts(d)
        assert counts["steps"] >= 1 and counts["previews"] >= 1, counts
        assert d.find_element(By.ID, "used-seed").text == "42"
        assert "seed 42" in d.find_element(By.ID, "status").text
        params = card.find_element(By.CSS_SELECTOR, ".card-params").text
        assert "text to image" in params and "256×256" in params and "42" in params
        first = d.execute_script("return window.__posts[0]")
        assert first["seed"] == 42 and first["steps"] == 4 and "image" not in first

        # The result becomes the input; paint a horizontal stroke through its middle.
        card.find_element(By.CSS_SELECTOR, ".card-input").click()
        d.find_element(By.CSS_SELECTOR, 'input[name="task"][value="inpaint"]').click()
        canvas = d.find_element(By.ID, "mask-canvas")
        wait_for(d, lambda d: canvas.is_displayed() and canvas.size["width"] > 0, 10, "the mask canvas")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        ActionChains(d).move_to_element_with_offset(canvas, -40, 0).click_and_hold() \
            .move_by_offset(40, 0).move_by_offset(40, 0).release().perform()
        screenshot(d, "mask")

        card2 = generate(d, "a red door", steps=4, seed=7)
        assert "inpaint" in card2.find_element(By.CSS_SELECTOR, ".card-params").text
        sent = d.execute_script("return window.__posts[1]")
        assert sent["strength"] == 0.75 and (sent["width"], sent["height"]) == (256, 256)
        image, mask = decode_data_url(sent["image"]), decode_data_url(sent["mask"]).convert("L")
        assert image.size == mask.size == (256, 256)
        # The input is the first result, pixel for pixel.
        src = card.find_element(By.CSS_SELECTOR, ".card-img").get_attribute("src")
        assert image.convert("RGB").tobytes() == pixels(httpx.get(src).content)
        # White = repaint where the stroke went (the canvas's centre row), black = keep elsewhere.
        scale = 256 / canvas.size["width"]
        assert mask.getpixel((128, 128)) == 255
        assert mask.getpixel((int(128 - 30 * scale), 128)) == 255
        assert mask.getpixel((128, int(128 + 40 * scale))) == 0
        assert mask.getpixel((4, 4)) == 0 and mask.getpixel((251, 251)) == 0
        assert set(mask.getdata()) == {0, 255}  # binary: every dialect reads the same mask

        job = httpx.get(f"{server}/v1/jobs/{card2.get_attribute('data-job')}").json()
        assert job["status"] == "succeeded" and job["params"]["task"] == "inpaint" and job["seeds"] == [7]

        # "Reuse these settings" puts the first result's parameters back in the form.
        card.find_element(By.CSS_SELECTOR, ".card-reuse").click()
        assert d.find_element(By.CSS_SELECTOR, 'input[name="task"]:checked').get_attribute("value") == "txt2img"
        assert d.find_element(By.ID, "prompt").get_attribute("value") == "a lighthouse at dawn"
        assert d.find_element(By.ID, "seed").get_attribute("value") == "42"
        assert d.find_element(By.ID, "steps").get_attribute("value") == "4"
        assert d.switch_to.active_element.get_attribute("id") == "prompt"
        screenshot(d, "desktop")

        # The session's results survive a reload of the tab, newest first.
        d.refresh()
        wait_for(d, lambda d: len(cards(d)) == 2, 30, "the restored results")
        assert "a red door" in cards(d)[0].text and "a lighthouse at dawn" in cards(d)[1].text

        # Phone width: one column, nothing wider than the screen.
        d.set_window_size(390, 844)
        time.sleep(0.2)
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(d, "phone")
        assert browser_errors(d) == []


def test_img2img_from_an_uploaded_image_by_keyboard(server: str, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (600, 400), (30, 120, 200)).save(photo)
    with chrome() as d:
        open_page(d, server)
        d.find_element(By.CSS_SELECTOR, 'input[name="task"][value="img2img"]').click()
        d.find_element(By.ID, "image-file").send_keys(str(photo))
        info = d.find_element(By.ID, "image-info")
        wait_for(d, lambda d: "256×168" in info.text, 10, "the uploaded image")  # fits 256, sides multiples of 8
        assert "scaled from 600×400" in info.text
        assert not d.find_element(By.ID, "mask-tools").is_displayed()
        strength = d.find_element(By.ID, "strength")
        for _ in range(5):
            strength.send_keys(Keys.ARROW_LEFT)  # 0.75 -> 0.5 by keyboard
        assert d.find_element(By.ID, "strength-out").text == "0.5"
        set_value(d, "prompt", "a blue sky")
        set_value(d, "seed", 5)
        set_value(d, "steps", 2)
        d.find_element(By.ID, "steps").send_keys(Keys.ENTER)  # Enter submits the form
        wait_for(d, lambda d: len(cards(d)) == 1, 60, "the img2img result")
        sent = d.execute_script("return window.__posts[0]")
        assert sent["strength"] == 0.5 and (sent["width"], sent["height"]) == (256, 168) and "mask" not in sent
        assert decode_data_url(sent["image"]).size == (256, 168)
        job = httpx.get(f"{server}/v1/jobs/{cards(d)[0].get_attribute('data-job')}").json()
        assert job["params"]["task"] == "img2img" and job["params"]["strength"] == 0.5
        assert "256×168" in cards(d)[0].text
        assert browser_errors(d) == []


def test_cancel_a_running_job(server: str) -> None:
    with chrome() as d:
        open_page(d, server)
        set_value(d, "prompt", "a long one")
        set_value(d, "steps", 200)
        d.find_element(By.ID, "generate").click()
        wait_for(d, lambda d: progress_counts(d)["steps"] >= 1, 60, "the first step event")
        cancel = d.find_element(By.ID, "cancel")
        assert cancel.is_enabled()
        cancel.click()
        wait_for(d, lambda d: d.find_element(By.ID, "status").text == "Canceled", 30, "the job to be canceled")
        assert d.find_element(By.ID, "generate").is_enabled() and not cancel.is_enabled()
        assert cards(d) == []
        assert progress_counts(d)["steps"] < 200
        assert browser_errors(d) == []


def test_key_field_when_the_server_requires_keys(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine, api_keys=["k-browser"])) as base, chrome() as d:
        d.get(base + "/")
        key_form = d.find_element(By.ID, "key-form")
        wait_for(d, lambda d: key_form.is_displayed(), 30, "the API key field")
        assert d.find_elements(By.CSS_SELECTOR, "#model option") == []
        assert d.switch_to.active_element.get_attribute("id") == "api-key"

        set_value(d, "api-key", "wrong")
        key_form.find_element(By.CSS_SELECTOR, "button").click()
        wait_for(d, lambda d: "not accepted" in d.find_element(By.ID, "key-status").text, 30, "the refusal")

        set_value(d, "api-key", "k-browser")
        key_form.find_element(By.CSS_SELECTOR, "button").click()
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), 30, "the model list")
        card = generate(d, "with a key", steps=2, seed=3)  # events and outputs work with the key
        assert progress_counts(d)["steps"] >= 1

        details = card.find_element(By.CSS_SELECTOR, "details")
        details.find_element(By.CSS_SELECTOR, "summary").click()
        text = card.find_element(By.CSS_SELECTOR, ".curl-text")
        wait_for(d, lambda d: text.get_attribute("value"), 10, "the curl command")
        assert "Authorization: Bearer k-browser" in text.get_attribute("value")
        Select(card.find_element(By.CSS_SELECTOR, ".curl-dialect")).select_by_value("modelslab")
        assert '"key":"k-browser"' in text.get_attribute("value")
        screenshot(d, "keys")
        # The rejected key's 401s are expected console entries; nothing else.
        assert all("401" in e["message"] for e in browser_errors(d))


def run_curl(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "set -eo pipefail\n" + command], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def check_curls(d: WebDriver, card: WebElement, base: str, tmp: Path) -> list[str]:
    """Runs the card's curl command in each dialect (with the input files the card offers)
    and checks each one gives the card's own pixels, or runs and says why it differs;
    returns the dialects that gave the same pixels."""
    same = []
    reference = pixels(httpx.get(card.find_element(By.CSS_SELECTOR, ".card-img").get_attribute("src")).content)
    card.find_element(By.CSS_SELECTOR, "details summary").click()
    text = card.find_element(By.CSS_SELECTOR, ".curl-text")
    wait_for(d, lambda d: text.get_attribute("value"), 10, "the curl command")
    select = Select(card.find_element(By.CSS_SELECTOR, ".curl-dialect"))
    assert [o.get_attribute("value") for o in select.options] == DIALECTS
    for dialect in DIALECTS:
        select.select_by_value(dialect)
        command = text.get_attribute("value")
        if dialect == "comfyui" and command.startswith("#"):
            continue  # the ComfyUI copy is text-to-image only, and says so
        where = tmp / dialect
        where.mkdir(parents=True)
        for a in card.find_elements(By.CSS_SELECTOR, ".curl-files a"):
            href = a.get_attribute("href")
            (where / a.get_attribute("download")).write_bytes(base64.b64decode(href.split(",", 1)[1]))
        done = run_curl(command, where)
        assert done.returncode == 0, f"{dialect}: {command}\n{done.stdout[:2000]}\n{done.stderr[:2000]}"
        if dialect == "native":
            job = json.loads(done.stdout)
            deadline = time.monotonic() + 60
            while job["status"] not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
                time.sleep(0.2)
                job = httpx.get(f"{base}/v1/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", job
            got = httpx.get(job["outputs"][0]["url"]).content
        else:
            got = (where / "out.png").read_bytes()
        note = card.find_element(By.CSS_SELECTOR, ".curl-notes").text
        if "image differs" in note or "may differ" in note:
            assert pixels(got), note  # a setting the dialect cannot express: it runs, and says it differs
            continue
        assert pixels(got) == reference, f"{dialect} gave other pixels than the page: {command}"
        same.append(dialect)
    return same


def test_copy_as_curl_gives_the_same_pixels_in_every_dialect(server: str, tmp_path: Path) -> None:
    missing = [t for t in ("curl", "jq", "base64", "od", "awk", "tr") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the curl commands need {', '.join(missing)}: install them (Debian: curl jq coreutils)",
                    pytrace=False)
    with chrome() as d:
        open_page(d, server)
        set_value(d, "negative-prompt", "it's \"quoted\" & <odd>")  # quoting survives the shell
        card = generate(d, "a fox's den", steps=2, seed=11)
        assert set(DIALECTS) - {"comfyui"} <= set(check_curls(d, card, server, tmp_path / "txt2img"))

        card.find_element(By.CSS_SELECTOR, ".card-input").click()
        d.find_element(By.CSS_SELECTOR, 'input[name="task"][value="inpaint"]').click()
        canvas = d.find_element(By.ID, "mask-canvas")
        wait_for(d, lambda d: canvas.is_displayed(), 10, "the mask canvas")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        ActionChains(d).move_to_element_with_offset(canvas, 0, -30).click_and_hold() \
            .move_by_offset(10, 60).release().perform()
        card2 = generate(d, "a fox", steps=2, seed=12)
        assert set(DIALECTS) - {"comfyui"} <= set(check_curls(d, card2, server, tmp_path / "inpaint"))
        screenshot(d, "curl")
        assert browser_errors(d) == []


def test_cost_shows_before_sending_and_names_a_limit(settings, engine, tmp_path):  # type: ignore[no-untyped-def]
    from sdserve.api.app import build_app
    from tests.jobs_support import make_service

    s, service = make_service(settings, engine, tmp_path, request_max_steps=30)  # limits live in the service
    with live_server(build_app(s, service)) as base, chrome() as d:
        open_page(d, base)
        cost = d.find_element(By.ID, "cost")
        # The model's defaults (demo: 256x256, 20 steps, CFG on): 20 x 2 x 0.25 = 10 units.
        wait_for(d, lambda d: cost.text.startswith("Cost: "), 30, "the cost of the defaults")
        set_value(d, "width", 512)
        set_value(d, "height", 512)
        wait_for(d, lambda d: cost.text == "Cost: 40 compute units", 30, "the cost at 512x512")
        set_value(d, "steps", 31)
        wait_for(d, lambda d: "steps" in cost.text and "limit of 30" in cost.text, 30, "the limit")
        assert d.execute_script("return window.__posts.length") == 0  # nothing was sent for generation
        assert browser_errors(d) == [] or all("400" in e["message"] for e in browser_errors(d))
