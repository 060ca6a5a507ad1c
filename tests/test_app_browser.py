"""End to end: `curatune app` on fixture runs, every page opened in headless Chromium.

Screenshots land in test-artifacts/app/ (gitignored) for a person to look at. Skips with
the reason when Chromium, chromedriver or Selenium are missing.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from app_browser import (
    PAGES, capture_pages, chromium_driver, find_browser, free_port, page_problems, running_app, wait_rendered,
)
from app_fixture import build_run
from curatune.curate.audit import read_labels

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "app"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="Selenium is not installed (pip install -e '.[dev]')")
    chromium, driver = find_browser()
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    return chromium, driver


def distinct_colours(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").resize((360, 360))
        return len(set(small.getdata()))


def test_every_page_renders_in_chromium(browser, tmp_path_factory):
    from selenium.webdriver.common.by import By

    root = tmp_path_factory.mktemp("browser-runs")
    build_run(root / "curated", name="curated")
    build_run(root / "raw", name="raw", seed=1)
    with running_app([root], free_port(), ARTIFACTS / "app.log") as url, chromium_driver(*browser) as driver:
        shots = capture_pages(driver, url, ARTIFACTS, query="run=curated")
        compared = tuple(p for p in PAGES if p.slug in ("saturation", "learning"))
        shots.update({f"compare-{k}": v for k, v in capture_pages(
            driver, url, ARTIFACTS, prefix="compare-", query="run=curated&compare=raw", pages=compared).items()})
        legend = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .legendtext"))
        assert "lora · raw" in legend and "lora · curated" in legend

        # A click on the Audit page stores a label in the run directory.
        driver.get(f"{url}/audit?run=curated")
        wait_rendered(driver, next(p for p in PAGES if p.slug == "audit"))
        next(b for b in driver.find_elements(By.CSS_SELECTOR, "button") if b.text.strip().endswith("Wrong")).click()
        labels_file = root / "curated" / "audit" / "labels.jsonl"
        deadline = time.time() + 30
        while not labels_file.exists() and time.time() < deadline:
            time.sleep(0.25)
        labels = list(read_labels(labels_file).values())
        assert [label.verdict for label in labels] == ["wrong"]
        wait_rendered(driver, next(p for p in PAGES if p.slug == "audit"))
        assert not page_problems(driver)

        # An unknown run in the URL (an old bookmark) falls back to the first run.
        driver.get(f"{url}/samples?run=nonexistent")
        wait_rendered(driver, next(p for p in PAGES if p.slug == "samples"), timeout=60)
        assert not page_problems(driver)

    assert set(shots) == {"runs", "curation", "audit", "saturation", "learning", "samples",
                          "compare-saturation", "compare-learning"}
    for name, path in shots.items():
        assert path.stat().st_size > 20_000, f"{name}: screenshot suspiciously small"
        assert distinct_colours(path) > 40, f"{name}: screenshot looks blank"
