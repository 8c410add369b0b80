"""The playground's "Upscale 2×" action on a result: an upscale job whose result is a card."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.browser.chrome import browser_errors, chrome, wait_for
from tests.browser.test_playground_browser import cards, generate, open_page, server  # noqa: F401 - fixture


def test_upscale_a_result(server: str) -> None:  # noqa: F811 - the imported fixture
    with chrome() as d:
        open_page(d, server)
        card = generate(d, "a lighthouse", steps=2, seed=3)
        card.find_element(By.CSS_SELECTOR, ".card-upscale").click()
        wait_for(d, lambda d: len(cards(d)) == 2, 120, "the upscaled result")
        up = cards(d)[0]
        img = up.find_element(By.CSS_SELECTOR, ".card-img")
        wait_for(d, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img),
                 30, "the upscaled image to load")
        assert d.execute_script("return arguments[0].naturalWidth", img) == 512  # the 256² result, 2x
        params = up.find_element(By.CSS_SELECTOR, ".card-params").text
        assert "upscale" in params and "tiny-ESRGAN-4x" in params, params
        assert not up.find_element(By.CSS_SELECTOR, ".card-reuse").is_displayed()
        assert not browser_errors(d)
