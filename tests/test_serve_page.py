"""The search page in a real browser (headless Chromium from the Debian packages, driven by Selenium), keyboard only.

Open the page, type a query, submit, read the ranked results, open a result's context, switch to the
datastore view, see a failed request's message, and /docs working offline. Screenshots of each view go
to ``tests/artifacts/`` (printed), for a person to look at.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, skip_or_fail
from tests.serving import Client, running_server

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"
QUERY = "what is a kludge"


@pytest.fixture(scope="session")
def chromium() -> None:
    """Chromium and its driver from the Debian packages, installed when missing (``make test`` installs them first).

    Where they cannot be installed the page tests are skipped, except in CI, where they fail: a skip would pass unseen.
    """
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if shutil.which("apt-get") is None:
        skip_or_fail("no chromium and no apt-get to install it (Debian packages chromium, chromium-driver)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            skip_or_fail(f"apt-get could not install chromium: {proc.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def server(example_datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_server(example_datastore, tmp_path_factory.mktemp("serve-page") / "stderr.log") as client:
        yield client


@pytest.fixture()
def browser(chromium: None) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, name: str) -> Path:
    """A PNG of the page down to the end of its content (Chrome's own capture beyond the window) in ``tests/artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    bottom = "return Math.ceil(Math.max(...[...document.body.children].map(e => e.getBoundingClientRect().bottom)) + window.scrollY)"
    height = min(int(driver.execute_script(bottom)) + 24, 8000)  # type: ignore[attr-defined]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {  # type: ignore[attr-defined]
        "format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path


def test_search_context_overview_and_errors_by_keyboard(server: Client, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(server.url + "/")  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#domains input"))
    assert driver.find_element(By.ID, "ds-name").text == "jargon-example"  # type: ignore[attr-defined]

    focused = []  # every control is reachable with Tab
    body = driver.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
    body.send_keys(Keys.TAB)
    for _ in range(30):
        active = driver.switch_to.active_element  # type: ignore[attr-defined]
        focused.append(active.get_attribute("id") or active.get_attribute("value") or active.text)
        active.send_keys(Keys.TAB)
    assert {"tab-search", "q", "go", "k", "mode", "alpha", "fusion", "fraction", "seed", "mmr", "dedup", "wiki"} <= set(focused)

    box = driver.find_element(By.ID, "q")  # type: ignore[attr-defined]
    box.send_keys(QUERY, Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) == 10)
    status, expected = server.search({"query": QUERY, "n_docs": 10})
    assert status == 200
    hits = driver.find_elements(By.CSS_SELECTOR, "#results .hit")  # type: ignore[attr-defined]
    ids = [int(h.get_attribute("data-passage-id")) for h in hits]
    assert ids == expected["results"]["IDs"][0]
    first = hits[0]
    assert first.find_element(By.CLASS_NAME, "rank").text == "#1"
    assert first.find_element(By.TAG_NAME, "h3").text == expected["results"]["hits"][0][0]["title"]
    assert expected["results"]["hits"][0][0]["doc_id"] in first.text and "score" in first.text and "domain wiki" in first.text
    assert "kludge" in [m.text.lower() for m in first.find_elements(By.TAG_NAME, "mark")]
    screenshot(driver, "1-search")

    toggle = first.find_element(By.CLASS_NAME, "toggle")
    toggle.send_keys(Keys.ENTER)  # keyboard: the focused button
    context = first.find_element(By.CLASS_NAME, "context")
    wait.until(lambda d: "This passage" in context.text)
    assert toggle.get_attribute("aria-expanded") == "true"
    _, around = server.request("GET", f"/passages/{ids[0]}/context")
    assert around["next"] is not None and around["next"]["text"][:40] in context.find_element(By.CLASS_NAME, "next").text
    assert around["previous"] is not None or "the document starts here" in context.text
    screenshot(driver, "2-context")

    k = driver.find_element(By.ID, "k")  # type: ignore[attr-defined]
    k.send_keys(Keys.CONTROL, "a")
    k.send_keys("5000", Keys.ENTER)  # over --max-k: the server answers 400
    error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "400" in error.text and "n_docs" in error.text and error.get_attribute("role") == "alert"
    screenshot(driver, "3-error")

    tab = driver.find_element(By.ID, "tab-search")  # type: ignore[attr-defined]
    tab.send_keys(Keys.ARROW_RIGHT)
    wait.until(lambda d: d.find_element(By.ID, "view-datastore").is_displayed() and d.find_elements(By.CSS_SELECTOR, "#overview table"))
    overview = driver.find_element(By.ID, "overview").text  # type: ignore[attr-defined]
    assert not driver.find_element(By.ID, "view-search").is_displayed()  # type: ignore[attr-defined]
    for text in ("all-MiniLM-L6-v2", "wiki-00000", "wiki-00002", "filter:too_few_words", "1,252"):
        assert text in overview
    driver.switch_to.frame(driver.find_element(By.ID, "plot"))  # type: ignore[attr-defined]
    wait.until(lambda d: "tokens per domain" in d.find_element(By.TAG_NAME, "body").text)
    driver.switch_to.default_content()  # type: ignore[attr-defined]
    screenshot(driver, "4-datastore")


def test_docs_render_offline(server: Client, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server.url + "/docs")  # type: ignore[attr-defined]
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}  # type: ignore[attr-defined]
    assert {"/search", "/health", "/stats"} <= paths
    screenshot(driver, "5-docs")
