"""/docs in a real headless browser (Debian's chromium through its chromedriver): the page
renders every operation from the bridge's own files, and "try it out" sends a request that a
worker answers, with the tenant set once through Authorize."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifleet.embedded import EmbeddedNats
from bridge.routes import bindings
from schemas.registry import services
from tests.bridge.conftest import threaded_bridge
from tests.conftest import NATS_CONFIG
from tests.support import echo

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no browser: `apt-get install chromium chromium-driver` (.ci/run installs them)",
)
WAIT = 30.0  # seconds; the page parses a 1.4 MB script on a busy machine


@pytest.fixture(scope="module")
def docs_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The echo component and a dev-mode bridge in front of it."""
    nats_server = EmbeddedNats(tmp_path_factory.mktemp("nats-docs"), config=NATS_CONFIG)
    nats_server.start()
    try:
        with threaded_bridge([echo.component], nats_server.url) as url:
            yield url
    finally:
        nats_server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless chromium with a fresh profile, driven by the system's chromedriver (nothing
    is downloaded: both paths are given, so Selenium Manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, WAIT).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def test_the_page_renders_every_operation_from_local_files(browser: Any, docs_bridge: str) -> None:
    """Each annotated rpc is an operation block with its summary; every file the page loaded
    came from the bridge."""
    from selenium.webdriver.common.by import By

    browser.get(docs_bridge + "/docs")
    wait_for(browser, "#operations-cache-CacheService_Get")
    blocks = browser.find_elements(By.CSS_SELECTOR, ".opblock")
    assert len(blocks) == len(bindings(services().values()))
    get = browser.find_element(By.CSS_SELECTOR, "#operations-cache-CacheService_Get")
    assert "Read one entry." in get.text
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any(u.endswith("/docs/assets/swagger-ui-bundle.js") for u in loaded)
    assert all(u.startswith(docs_bridge + "/") for u in loaded), loaded


def test_try_it_out_reaches_a_worker_as_the_authorized_tenant(
    browser: Any, docs_bridge: str, tmp_path: Path
) -> None:
    """Authorize with X-Tenant-ID `acme`, edit the echo body, Execute: the reply shown is the
    worker's, for tenant acme."""
    from selenium.webdriver.common.by import By

    browser.get(docs_bridge + "/docs")
    wait_for(browser, "button.authorize").click()
    field = wait_for(browser, ".modal-ux input[type=text]")
    field.send_keys("acme")
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()

    operation = "#operations-echo-EchoService_Echo"
    wait_for(browser, f"{operation} .opblock-summary-control").click()
    body = wait_for(browser, f"{operation} textarea.body-param__text")
    body.clear()
    body.send_keys('{"text": "from the browser"}')
    browser.find_element(By.CSS_SELECTOR, f"{operation} button.execute").click()
    live = f"{operation} .live-responses-table tbody"
    status = wait_for(browser, f"{live} td.response-col_status")
    reply = browser.find_element(By.CSS_SELECTOR, f"{live} td.response-col_description pre")
    shown = {"status": status.text, "reply": reply.text}
    browser.save_screenshot(str(tmp_path / "try-it-out.png"))  # kept by pytest for a look
    assert shown["status"] == "200", shown
    assert '"text": "from the browser"' in shown["reply"], shown
    assert '"tenant": "acme"' in shown["reply"], shown
