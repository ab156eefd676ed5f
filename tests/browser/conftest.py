"""The browser layer: a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``scripts/lib.sh`` when missing) driven by Selenium against the operator API
under uvicorn, a real worker and the stand-in.

Chromium starts with its background networking off: this machine has no network but the
package registries, and Chromium would otherwise keep trying to reach Google's hosts.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from harness import processes
from tests.conftest import OPERATOR_TOKEN, ROOT, free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "docs" / "screenshots"
FLOWER_URL = "http://127.0.0.1:5555"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root, in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,900",
)


class Console:
    """The operator API under uvicorn, as the browser sees it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.url = f"{base}/operator/console"
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"

    def create(self, tenant_id: str, name: str) -> None:
        """A tenant made through the HTTP API, as the UI makes them."""
        response = self.api.post(
            f"{self.base}/operator/tenants",
            json={"tenant_id": tenant_id, "name": name},
            timeout=10,
        )
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def console(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """``uvicorn api_hooks.app:create_app --factory``, with FLOWER_URL set for the links."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "uvicorn", "api_hooks.app:create_app", "--factory"]
    process = processes.start(
        [*argv, "--port", str(port)],
        tmp_path_factory.mktemp("api") / "api.log",
        ready=lambda: processes.http_ok(f"{base}/healthz"),
        what="operator API",
        env={**os.environ, "FLOWER_URL": FLOWER_URL},
    )
    handle = Console(base)
    yield handle
    handle.api.close()
    processes.stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with an empty profile of its own."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: `bash scripts/test` installs Debian's "
            "chromium and chromium-driver (apt-get) before running the tests"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as ``docs/screenshots/<name>.png`` (docs/operating.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = driver.get_window_size()
    # The whole page, not only the first screen of it.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(size["height"], int(height) + 250))
    try:
        assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path
