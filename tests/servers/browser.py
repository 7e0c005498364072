"""A headless Chromium driven through Selenium: the Django admin's browser tests.

Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; ``scripts/test`` installs them) run one browser per test
with a fresh profile in a temporary folder, and the ``browser`` fixture always quits
it. A missing binary fails the test loudly: CI installs both, so their absence is a
broken machine, never a reason to skip.

The machine's network is closed: Chromium's own background connections (updates,
sync, safe browsing, QUIC probes) would fail many at a time and slow every page, so
the flags below turn them off. Only loopback is ever visited.

Run alone to see it work: ``python -m tests.servers.browser``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

__all__ = ["CHROMEDRIVER", "CHROMIUM", "browser", "start_browser", "wait_for"]

CHROMIUM = Path(os.environ.get("HALOMAIL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("HALOMAIL_CHROMEDRIVER", "/usr/bin/chromedriver"))

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers give /dev/shm a few MB only
    "--window-size=1280,1024",
)
_PAGE_TIMEOUT = 60.0


def _require(binary: Path, package: str) -> None:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise RuntimeError(
            f"{binary} is missing: install Debian's {package} (scripts/test does, as root)"
        )


def start_browser(profile: Path, downloads: Path) -> WebDriver:
    """A headless Chromium on a fresh profile in ``profile``, saving downloads in ``downloads``.

    Raises:
        RuntimeError: ``chromium`` or ``chromedriver`` is not installed.
    """
    _require(CHROMIUM, "chromium")
    _require(CHROMEDRIVER, "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    # An explicit driver path: Selenium Manager would try to download one.
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(_PAGE_TIMEOUT)
    return driver


def wait_for(driver: WebDriver, condition: object, *, timeout: float = _PAGE_TIMEOUT) -> object:
    """Wait (generously) until ``condition(driver)`` is truthy, and return its value."""
    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium for one test, quit afterwards even when the test fails.

    Downloads land in ``tmp_path / "downloads"``.
    """
    profile = Path(tempfile.mkdtemp(prefix="halomail-chromium-"))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_browser(profile, downloads)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        demo = start_browser(root / "profile", root)
        try:
            demo.get("data:text/html,<title>halomail</title><p>headless Chromium works")
            print(demo.title, "-", demo.capabilities.get("browserVersion"))
        finally:
            demo.quit()
