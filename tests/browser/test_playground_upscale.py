"""The playground's "Upscale" action on a result: an upscale job (the upscaler and factor picked
from the server's list) whose result is a card of its own."""

from __future__ import annotations

import time

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.browser.chrome import browser_errors, chrome, screenshot, wait_for
from tests.browser.test_playground_addons import open_section
from tests.browser.test_playground_browser import cards, generate, open_page, server  # noqa: F401 - fixture


def upscale(d: WebDriver, card: WebElement) -> tuple[WebElement, int]:
    """Presses the card's Upscale; the new card and its image's width."""
    before = len(cards(d))
    card.find_element(By.CSS_SELECTOR, ".card-upscale").click()
    wait_for(d, lambda d: len(cards(d)) == before + 1, 120, "the upscaled result")
    up = cards(d)[0]
    img = up.find_element(By.CSS_SELECTOR, ".card-img")
    wait_for(d, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img),
             30, "the upscaled image to load")
    return up, d.execute_script("return arguments[0].naturalWidth", img)


def test_upscale_a_result(server: str) -> None:  # noqa: F811 - the imported fixture
    with chrome() as d:
        open_page(d, server)
        card = generate(d, "a lighthouse", steps=2, seed=3)
        # Default: the first upscaler model the server has, 2x.
        up, width = upscale(d, card)
        assert width == 512  # the 256² result, 2x
        params = up.find_element(By.CSS_SELECTOR, ".card-params").text
        assert "upscale" in params and "tiny-ESRGAN-4x" in params, params
        assert not up.find_element(By.CSS_SELECTOR, ".card-reuse").is_displayed()
        assert d.find_element(By.ID, "status").text.startswith("Upscaled in")

        # Another upscaler from the server's list, another factor.
        names = [o.get_attribute("value") for o in Select(card.find_element(By.CSS_SELECTOR, ".card-upscaler")).options]
        assert {"Lanczos", "Nearest", "tiny-ESRGAN-4x", "tiny-RealESRGAN_x2plus"} <= set(names), names
        Select(card.find_element(By.CSS_SELECTOR, ".card-upscaler")).select_by_value("tiny-RealESRGAN_x2plus")
        scale = card.find_element(By.CSS_SELECTOR, ".card-scale")
        scale.clear()
        scale.send_keys("3")
        up, width = upscale(d, card)
        assert width == 768  # 256 x 3
        job = httpx.get(f"{server}/v1/jobs/{up.get_attribute('data-job')}").json()
        assert job["params"]["upscale"]["upscaler"] == "tiny-RealESRGAN_x2plus" and job["params"]["upscale"]["scale"] == 3

        # A phone: the add-ons are collapsed sections and nothing is wider than the screen.
        d.set_window_size(390, 844)
        time.sleep(0.2)
        open_section(d, "sec-hires")
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(d, "addons-phone")
        assert browser_errors(d) == []
