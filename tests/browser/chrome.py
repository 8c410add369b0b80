"""Debian's headless Chromium, driven through its own chromedriver (Selenium), for the
playground tests. Nothing is downloaded: a missing browser fails the test and says what
to install."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["chrome", "wait_for", "screenshot", "browser_errors", "ARTIFACTS"]

CHROMIUM = os.environ.get("SDSERVE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SDSERVE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--disable-dev-shm-usage")
# Screenshots land here (gitignored), one file per name, overwritten each run.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

T = TypeVar("T")


@contextmanager
def chrome(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own throw-away profile."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the browser tests need headless Chromium, and {' and '.join(missing)} is missing: install "
                    "Debian's chromium and chromium-driver (bash scripts/ci/system-packages.sh), or point "
                    "SDSERVE_TEST_CHROMIUM / SDSERVE_TEST_CHROMEDRIVER at them", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="sdserve-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(30)
            driver.set_script_timeout(30)
            yield driver
        finally:
            driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 60, what: str = "") -> T:
    """``condition``'s first truthy result; on timeout a failure naming ``what`` and the page's status line."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)  # type: ignore[no-any-return]
    except Exception as e:  # noqa: BLE001 - the timeout and whatever the condition raised
        status = driver.execute_script(
            "const s = document.getElementById('status'), e = document.getElementById('form-error');"
            "return (s ? s.textContent : '') + ' | ' + (e ? e.textContent : '')")
        screenshot(driver, "failure")
        raise AssertionError(f"timed out waiting for {what or condition}; page says: {status}; "
                             f"console: {browser_errors(driver)}") from e


def screenshot(driver: WebDriver, name: str, full_page: bool = True) -> Path:
    """Saves a PNG under test-artifacts/ (the whole page's height) and prints where."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"playground-{name}.png"
    size = driver.get_window_size()
    driver.execute_script("window.scrollTo(0, 0)")
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 120, 6000))
    driver.save_screenshot(str(path))
    if full_page:
        driver.set_window_size(size["width"], size["height"])
    print(f"screenshot: {path}")
    return path


def browser_errors(driver: WebDriver) -> list[Any]:
    """Console errors so far (JS exceptions, failed loads, CSP violations)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
